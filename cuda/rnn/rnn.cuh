// Recurrent layers (LSTM, GRU) on the GPU: one layer direction over a whole sequence per call,
// forward and backward through time, with the CPU op's API, equations, layouts and saved
// activations (cpp/rnn/rnn.h), so fusegrad.ops.rnn hands either device the same arrays.
//
// How a sequence runs (every step launched from C++, nothing per step in Python):
//   forward (rnn_forward.cu)
//     1. xg = x W_ih^T + b_ih for every step: one GEMM (T·B × I -> T·B × G·H), b_ih in its epilogue;
//     2. per step s: hg = h_s W_hh^T + b_hh (a B × H -> B × G·H GEMM on cuda/gemm), then one fused
//        pointwise kernel: the gate nonlinearities, the c and h update, the lengths mask, and the
//        stores of y, h_{s+1} (c_{s+1}) and the activations backward needs.
//   backward (rnn_backward.cu), the same loop in reverse
//     per step s: one fused pointwise kernel (the gate gradients from the saved activations,
//        written twice: by time into dxg, by step into dhg; the carried dc; dh's direct part),
//        then dh += dhg_s W_hh (a B × G·H -> B × H GEMM that accumulates);
//     after the loop: dx = dxg W_ih, dW_ih = dxg^T x and dW_hh = dhg^T h_prev as three whole-sequence
//        GEMMs (dW_hh over all steps at once), and the bias gradients as column sums.
// The GEMMs are the fp32 SIMT kernels of cuda/gemm (results within float rounding of the CPU's).
//
// The problem, its outputs and their layouts are the CPU's structs (cpp/rnn/rnn_problem.h), with
// device addresses (lengths too: device int32, checked in [0, T] by the caller before the copy).
// Workspace (device float32, allocated by the caller): forward xg (T·B, G·H), the input projection
// in x's row order, and hg (B, G·H); backward dxg and dhg (T·B, G·H each), the gate gradients by
// time in x's row order and by step. dh0 and dc0 carry dh and dc through the backward loop. All
// work is enqueued on `stream`; nothing waits.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "rnn/rnn_problem.h"  // RnnProblem, RnnForwardOut, RnnBackwardIo: the CPU's, with device pointers

namespace fusegrad::cuda {

void rnn_forward(const RnnProblem& p, const RnnForwardOut& out, float* xg, float* hg, cudaStream_t stream,
                 int device);
void rnn_backward(const RnnProblem& p, const RnnBackwardIo& io, float* dxg, float* dhg, cudaStream_t stream,
                  int device);

// What both directions of the time loop share (rnn_forward.cu).
namespace rnn_detail {
// dst[0:n] = src[0:n], or zeros when src is null (enqueued on stream).
void copy_or_zero(float* dst, const float* src, int64_t n, cudaStream_t stream);
// c (=|+=) a · b on cuda/gemm's fp32 kernels; strides as GemmArgs (cuda/gemm/gemm.cuh).
void gemm_f32(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_rs, int64_t a_cs, const float* b,
              int64_t b_rs, int64_t b_cs, float* c, int64_t c_rs, const float* bias, bool accumulate,
              cudaStream_t stream, int device);

// Step s of row b: how many steps the row runs (clamped to [0, T]: the lengths live on the device,
// so the host checked them before the copy and the kernels only keep indices in bounds), and the
// time its step s reads and writes.
__device__ __forceinline__ int64_t row_length(const int32_t* lengths, int64_t b, int64_t steps) {
  if (!lengths) return steps;
  const int64_t len = lengths[b];
  return len < 0 ? 0 : len > steps ? steps : len;
}
__device__ __forceinline__ int64_t time_of(bool reverse, int64_t s, int64_t len) { return reverse ? len - 1 - s : s; }
__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// Threads of the pointwise step kernels: one per (b, j) of a B × H state, j fastest (coalesced).
constexpr int kStepThreads = 256;
}  // namespace rnn_detail

}  // namespace fusegrad::cuda
