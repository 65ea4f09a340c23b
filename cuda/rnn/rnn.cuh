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
// Layouts (as the CPU's). Step s, time t, batch row b. x is a C-contiguous (T, B, I) or (B, T, I)
// array: the row of (t, b) is t * x_ts + b * x_bs. y and dy are (t, b, unit) views with unit
// stride 1 and element strides y_ts, y_bs (one direction's half of a bidirectional output, say).
// With lengths (device int32, (B,), each in [0, T]), row b runs steps [0, lengths[b]); a reverse
// layer runs them from t = lengths[b] - 1 down to 0; y is zero past a row's length and h_n, c_n
// are the states after its last step. Saved, by step: gates (T, B, 4H): LSTM i f g o after their
// nonlinearities, GRU r z n and W_hn h + b_hn; hs (T+1, B, H): h0 then each step's state; cs
// likewise for the LSTM's cell.
//
// Workspace (device float32, allocated by the caller): forward xg (T·B·G·H) and hg (B·G·H);
// backward dxg and dhg (T·B·G·H each). All calls are enqueued on `stream`; nothing waits.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace fusegrad::cuda {

enum class RnnCell : int { lstm = 0, gru = 1 };

inline int rnn_gates(RnnCell cell) { return cell == RnnCell::lstm ? 4 : 3; }

struct RnnProblem {
  RnnCell cell = RnnCell::lstm;
  int64_t steps = 0, batch = 0, input = 0, hidden = 0;  // T, B, I, H
  bool reverse = false;
  int64_t x_ts = 0, x_bs = 0;        // row of (t, b) in x, dx and xg/dxg
  const int32_t* lengths = nullptr;  // (B,) on the device, or null: every row runs T steps
  const float* x = nullptr;          // (T * B rows, I)
  const float* w_ih = nullptr;       // (G H, I)
  const float* w_hh = nullptr;       // (G H, H)
  const float* b_ih = nullptr;       // (G H,) or null
  const float* b_hh = nullptr;       // (G H,) or null
};

struct RnnForwardOut {
  const float* h0 = nullptr;  // (B, H) or null (zeros)
  const float* c0 = nullptr;  // LSTM: (B, H) or null (zeros)
  float* y = nullptr;         // element (t, b, j) at y[t * y_ts + b * y_bs + j]
  int64_t y_ts = 0, y_bs = 0;
  float* h_n = nullptr;       // (B, H)
  float* c_n = nullptr;       // LSTM: (B, H)
  float* gates = nullptr;     // (T, B, 4H)
  float* hs = nullptr;        // (T + 1, B, H)
  float* cs = nullptr;        // LSTM: (T + 1, B, H); GRU: null
  float* xg = nullptr;        // workspace (T * B, G H)
  float* hg = nullptr;        // workspace (B, G H)
};

struct RnnBackwardIo {
  const float* gates = nullptr, *hs = nullptr, *cs = nullptr;  // what forward saved
  const float* dy = nullptr;    // like y (dy_ts, dy_bs), or null (no gradient reached y)
  int64_t dy_ts = 0, dy_bs = 0;
  const float* dh_n = nullptr;  // (B, H) or null
  const float* dc_n = nullptr;  // LSTM: (B, H) or null
  float* dx = nullptr;          // x's layout, or null (not wanted)
  float* dw_ih = nullptr;       // (G H, I)
  float* dw_hh = nullptr;       // (G H, H)
  float* db_ih = nullptr;       // (G H,) or null
  float* db_hh = nullptr;       // (G H,) or null
  float* dh0 = nullptr;         // (B, H): also the carried dh of the time loop
  float* dc0 = nullptr;         // LSTM: (B, H): also the carried dc
  float* dxg = nullptr;         // workspace (T * B, G H): gate gradients by time, in x's row order
  float* dhg = nullptr;         // workspace (T * B, G H): by step (GRU's n gate times r)
};

void rnn_forward(const RnnProblem& p, const RnnForwardOut& out, cudaStream_t stream, int device);
void rnn_backward(const RnnProblem& p, const RnnBackwardIo& io, cudaStream_t stream, int device);

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
