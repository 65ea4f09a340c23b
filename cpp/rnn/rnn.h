// Recurrent layers (LSTM, GRU) over a whole sequence in one call: forward and backward through time.
//
// Equations and gate order are PyTorch's, so its state_dicts load unchanged:
//   LSTM  (i, f, g, o):  gates = x W_ih^T + b_ih + h W_hh^T + b_hh
//                        i, f, o = sigmoid, g = tanh;  c' = f c + i g;  h' = o tanh(c')
//   GRU   (r, z, n):     r = sigmoid(x_r + h_r), z = sigmoid(x_z + h_z)      (both with their biases)
//                        n = tanh(x_n + b_in + r (W_hn h + b_hn));  h' = (1 - z) n + z h
//
// How a sequence runs (rnn_forward.cpp, rnn_backward.cpp):
//   1. the input projection of every step as one GEMM (T·B × I -> T·B × G·H, b_ih in its epilogue),
//      or, for an LSTM whose [W_ih | W_hh] is small (rnn_forward.cpp, stacked_input), inside each
//      step's GEMM over [x_t | h] (K = I + H);
//   2. W_hh (or [W_ih | W_hh]) packed once into the GEMM's B micro-panels;
//   3. the time loop in C++. The batch rows are split between the threads once for the whole
//      sequence: row b of h_t depends only on row b of h_{t-1}, so the threads never wait for each
//      other. Per step a thread runs the microkernel over its rows (the recurrent GEMM, b_hh in its
//      epilogue) and then the cell on those rows while they are in cache (gates, c and h).
//   Backward runs the same loop in reverse (dh_{t-1} = dgates_t W_hh on the packed W_hh), then
//   the whole-sequence GEMMs: for the LSTM, whose input and recurrent gate gradients are equal,
//   [dW_ih | dW_hh | db] as one GEMM over [x | h_{t-1} | 1] and dx as another; for the GRU, dx,
//   dW_ih and dW_hh as three and the bias gradients as column sums.
//
// Layouts, the problem and its outputs: rnn_problem.h (shared with the CUDA kernels, cuda/rnn/).
#pragma once
#include <cstdint>

#include "common/isa.h"
#include "rnn/rnn_problem.h"

namespace fusegrad {

struct RnnKernels {
  void (*forward)(const RnnProblem& p, const RnnForwardOut& out);
  void (*backward)(const RnnProblem& p, const RnnBackwardIo& io);
};

FG_DECLARE_KERNEL_TABLE(RnnKernels, rnn_kernels)

}  // namespace fusegrad
