// Forward of an LSTM or GRU layer direction over a whole sequence on the GPU: see rnn.cuh for the
// plan. Per step: the recurrent GEMM (cuda/gemm) writes hg = h_s W_hh^T + b_hh, then one pointwise
// kernel adds the step's input projection and does everything else for that step.
#include <stdexcept>

#include "common/cuda_check.cuh"
#include "common/launch.cuh"
#include "gemm/gemm.cuh"
#include "rnn/rnn.cuh"

namespace fusegrad::cuda {
namespace rnn_detail {

void copy_or_zero(float* dst, const float* src, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  if (src) FG_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToDevice, stream));
  else FG_CUDA_CHECK(cudaMemsetAsync(dst, 0, n * sizeof(float), stream));
}

void gemm_f32(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_rs, int64_t a_cs, const float* b,
              int64_t b_rs, int64_t b_cs, float* c, int64_t c_rs, const float* bias, bool accumulate,
              cudaStream_t stream, int device) {
  GemmArgs g;
  g.m = m, g.n = n, g.k = k;
  g.a = a, g.a_rs = a_rs, g.a_cs = a_cs;
  g.b = b, g.b_rs = b_rs, g.b_cs = b_cs;
  g.c = c, g.c_rs = c_rs;
  g.bias = bias;
  g.accumulate = accumulate;
  gemm(g, GemmPrecision::fp32, GemmTiles::automatic, stream, device);
}

}  // namespace rnn_detail

namespace {
using namespace rnn_detail;

// What a forward step kernel reads and writes (layouts in cpp/rnn/rnn_problem.h).
struct StepForward {
  int64_t steps, batch, hidden, x_ts, x_bs, y_ts, y_bs;
  bool reverse;
  const int32_t* lengths;
  const float* xg;  // (T * B rows in x's order, G H): x W_ih^T + b_ih
  const float* hg;  // (B, G H): h_s W_hh^T + b_hh of this step
  float* gates;     // (T, B, 4H)
  float* hs;        // (T + 1, B, H)
  float* cs;        // LSTM: (T + 1, B, H); GRU: null
  float* y;
};

// The LSTM cell at (b, j) of step s, time t: i, f, o = sigmoid, g = tanh of xg + hg;
// c' = f c + i g; h' = o tanh(c'). Saves i f g o.
struct Lstm {
  __device__ static void step(const StepForward& a, int64_t s, int64_t t, int64_t b, int64_t j, int64_t e) {
    const int64_t H = a.hidden, n = a.batch * H;
    const float* xr = a.xg + (t * a.x_ts + b * a.x_bs) * 4 * H + j;
    const float* hr = a.hg + b * 4 * H + j;
    const float i = sigmoid(xr[0] + hr[0]), f = sigmoid(xr[H] + hr[H]);
    const float g = tanhf(xr[2 * H] + hr[2 * H]), o = sigmoid(xr[3 * H] + hr[3 * H]);
    const float c = f * a.cs[s * n + e] + i * g, h = o * tanhf(c);
    float* saved = a.gates + (s * a.batch + b) * 4 * H + j;
    saved[0] = i, saved[H] = f, saved[2 * H] = g, saved[3 * H] = o;
    a.cs[(s + 1) * n + e] = c;
    a.hs[(s + 1) * n + e] = h;
    a.y[t * a.y_ts + b * a.y_bs + j] = h;
  }
};

// The GRU cell at (b, j) of step s, time t: r, z = sigmoid(xg + hg), n = tanh(xg_n + r hg_n)
// (b_hn is in hg_n, inside the reset product as PyTorch has it), h' = (1 - z) n + z h. Saves r z n
// and hg_n.
struct Gru {
  __device__ static void step(const StepForward& a, int64_t s, int64_t t, int64_t b, int64_t j, int64_t e) {
    const int64_t H = a.hidden, n = a.batch * H;
    const float* xr = a.xg + (t * a.x_ts + b * a.x_bs) * 3 * H + j;
    const float* hr = a.hg + b * 3 * H + j;
    const float r = sigmoid(xr[0] + hr[0]), z = sigmoid(xr[H] + hr[H]), hn = hr[2 * H];
    const float nn = tanhf(xr[2 * H] + r * hn), h = nn + z * (a.hs[s * n + e] - nn);
    float* saved = a.gates + (s * a.batch + b) * 4 * H + j;
    saved[0] = r, saved[H] = z, saved[2 * H] = nn, saved[3 * H] = hn;
    a.hs[(s + 1) * n + e] = h;
    a.y[t * a.y_ts + b * a.y_bs + j] = h;
  }
};

// Step s of the sequence after its recurrent GEMM: a thread per (b, j), grid-stride, j fastest so
// every row access is coalesced. A row past its length carries h (and c) over unchanged and zeroes
// y at time s (over the steps s >= len that covers exactly the padding times [len, T)).
template <class Cell>
__global__ void __launch_bounds__(kStepThreads) forward_step(StepForward a, int64_t s) {
  const int64_t H = a.hidden, n = a.batch * H, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += stride) {
    const int64_t b = e / H, j = e - b * H, len = row_length(a.lengths, b, a.steps);
    if (s < len) {
      Cell::step(a, s, time_of(a.reverse, s, len), b, j, e);
      continue;
    }
    a.hs[(s + 1) * n + e] = a.hs[s * n + e];
    if (a.cs) a.cs[(s + 1) * n + e] = a.cs[s * n + e];
    a.y[s * a.y_ts + b * a.y_bs + j] = 0.0f;
  }
}

}  // namespace

void rnn_forward(const RnnProblem& p, const RnnForwardOut& o, float* xg, float* hg, cudaStream_t stream,
                 int device) {
  const int64_t T = p.steps, B = p.batch, I = p.input, H = p.hidden, GH = rnn_gates(p.cell) * H;
  const bool lstm = p.cell == RnnCell::lstm;
  if (B <= 0 || H <= 0) return;
  if (T < 0 || I < 0) throw std::invalid_argument("rnn_forward: negative size");
  DeviceGuard guard(device);
  copy_or_zero(o.hs, o.h0, B * H, stream);
  if (lstm) copy_or_zero(o.cs, o.c0, B * H, stream);
  // The input projection of every step: one GEMM, b_ih in its epilogue (W_ih^T read in place).
  if (T > 0) gemm_f32(T * B, GH, I, p.x, I, 1, p.w_ih, 1, I, xg, GH, p.b_ih, false, stream, device);
  const StepForward a{T, B, H, p.x_ts, p.x_bs, o.y_ts, o.y_bs, p.reverse, p.lengths, xg, hg, o.gates, o.hs,
                      lstm ? o.cs : nullptr, o.y};
  const unsigned grid = grid_for(B * H, kStepThreads, device);
  for (int64_t s = 0; s < T; ++s) {
    // hg = h_s W_hh^T + b_hh, then the step's gates, cell and outputs.
    gemm_f32(B, GH, H, o.hs + s * B * H, H, 1, p.w_hh, 1, H, hg, GH, p.b_hh, false, stream, device);
    if (lstm) FG_LAUNCH(forward_step<Lstm>, grid, kStepThreads, 0, stream, a, s);
    else FG_LAUNCH(forward_step<Gru>, grid, kStepThreads, 0, stream, a, s);
  }
  copy_or_zero(o.h_n, o.hs + T * B * H, B * H, stream);
  if (lstm) copy_or_zero(o.c_n, o.cs + T * B * H, B * H, stream);
}

}  // namespace fusegrad::cuda
