// Backward through time of an LSTM or GRU layer direction on the GPU: see rnn.cuh for the plan.
// Per step (s from T - 1 down to 0): one pointwise kernel turns the carried dh (and dc) and dy
// into the step's gate gradients, then dh += dhg_s W_hh (cuda/gemm, accumulating). The gate
// gradients are kept for the whole sequence, so the weight gradients are three GEMMs at the end.
//
// Each step's gate gradients are written twice: by time in x's row order (dxg: the gradient of
// the input projection, for dx, dW_ih and b_ih) and by step (dhg: of the recurrent product, for
// dW_hh, b_hh and dh_{s-1}). They differ only in GRU's n gate (times r in dhg) and in row order.
#include "common/cuda_check.cuh"
#include "common/launch.cuh"
#include "rnn/rnn.cuh"

namespace fusegrad::cuda {
namespace {
using namespace rnn_detail;

// What a backward step kernel reads and writes (layouts in cpp/rnn/rnn_problem.h).
struct StepBackward {
  int64_t steps, batch, hidden, x_ts, x_bs, dy_ts, dy_bs;
  bool reverse;
  const int32_t* lengths;
  const float* gates;  // (T, B, 4H) saved by forward
  const float* hs;     // (T + 1, B, H)
  const float* cs;     // LSTM: (T + 1, B, H)
  const float* dy;     // or null
  float* dh;           // (B, H) carried: in, the gradient of h_{s+1}; out, its part not through W_hh
  float* dc;           // LSTM: (B, H) carried
  float* dxg;          // (T * B rows in x's order, G H)
  float* dhg;          // (T, B, G H)
};

// The LSTM cell's backward at (b, j) of step s, time t, from the saved i f g o and c (dh includes dy):
//   dc_t = dh o (1 - tanh^2 c) + dc;  di = dc_t g i (1 - i), df = dc_t c_prev f (1 - f),
//   dg = dc_t i (1 - g^2), do = dh tanh(c) o (1 - o);  carried: dc = dc_t f, dh = 0 (+ the GEMM).
struct Lstm {
  static constexpr int kGates = 4;
  __device__ static void step(const StepBackward& a, int64_t s, int64_t t, int64_t b, int64_t j, int64_t e,
                              float dh) {
    const int64_t H = a.hidden, n = a.batch * H;
    const float* g4 = a.gates + (s * a.batch + b) * 4 * H + j;
    const float i = g4[0], f = g4[H], g = g4[2 * H], o = g4[3 * H];
    const float tc = tanhf(a.cs[(s + 1) * n + e]);
    const float dc = dh * o * (1.0f - tc * tc) + a.dc[e];
    const float di = dc * g * i * (1.0f - i), df = dc * a.cs[s * n + e] * f * (1.0f - f);
    const float dg = dc * i * (1.0f - g * g), d_o = dh * tc * o * (1.0f - o);
    a.dc[e] = dc * f;
    a.dh[e] = 0.0f;
    float* dx_row = a.dxg + (t * a.x_ts + b * a.x_bs) * 4 * H + j;
    float* dh_row = a.dhg + (s * a.batch + b) * 4 * H + j;
    dx_row[0] = dh_row[0] = di;
    dx_row[H] = dh_row[H] = df;
    dx_row[2 * H] = dh_row[2 * H] = dg;
    dx_row[3 * H] = dh_row[3 * H] = d_o;
  }
};

// The GRU cell's backward at (b, j) of step s, time t, from the saved r z n and hn = W_hn h + b_hn:
//   dz = dh (h_prev - n) z (1 - z), dn = dh (1 - z)(1 - n^2), dr = dn hn r (1 - r);
//   dhg's n gate is dn r (the gradient of hn); carried: dh = dh z (+ the GEMM).
struct Gru {
  static constexpr int kGates = 3;
  __device__ static void step(const StepBackward& a, int64_t s, int64_t t, int64_t b, int64_t j, int64_t e,
                              float dh) {
    const int64_t H = a.hidden, n = a.batch * H;
    const float* g4 = a.gates + (s * a.batch + b) * 4 * H + j;
    const float r = g4[0], z = g4[H], nn = g4[2 * H], hn = g4[3 * H];
    const float dz = dh * (a.hs[s * n + e] - nn) * z * (1.0f - z);
    const float dn = dh * (1.0f - z) * (1.0f - nn * nn), dr = dn * hn * r * (1.0f - r);
    a.dh[e] = dh * z;
    float* dx_row = a.dxg + (t * a.x_ts + b * a.x_bs) * 3 * H + j;
    float* dh_row = a.dhg + (s * a.batch + b) * 3 * H + j;
    dx_row[0] = dh_row[0] = dr;
    dx_row[H] = dh_row[H] = dz;
    dx_row[2 * H] = dn, dh_row[2 * H] = dn * r;
  }
};

// Step s of the backward, before its dh GEMM: a thread per (b, j), grid-stride, j fastest. A row
// past its length: its state passed through step s unchanged, so does the gradient (dh, dc
// untouched); no gate gradient at this step (dhg row s) nor at the padding time t = s (dxg row),
// which over the steps s >= len zeroes exactly the padding times [len, T).
template <class Cell>
__global__ void __launch_bounds__(kStepThreads) backward_step(StepBackward a, int64_t s) {
  constexpr int G = Cell::kGates;
  const int64_t H = a.hidden, n = a.batch * H, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += stride) {
    const int64_t b = e / H, j = e - b * H, len = row_length(a.lengths, b, a.steps);
    if (s < len) {
      const int64_t t = time_of(a.reverse, s, len);
      Cell::step(a, s, t, b, j, e, a.dh[e] + (a.dy ? a.dy[t * a.dy_ts + b * a.dy_bs + j] : 0.0f));
      continue;
    }
    float* dx_row = a.dxg + (s * a.x_ts + b * a.x_bs) * G * H + j;
    float* dh_row = a.dhg + (s * a.batch + b) * G * H + j;
    for (int k = 0; k < G; ++k) dx_row[k * H] = 0.0f, dh_row[k * H] = 0.0f;
  }
}

// out[j] = sum over rows of a[r * cols + j]: the bias gradients. A block of 32 × 8 threads takes
// 32 columns (each row segment one coalesced read); its 8 thread rows split the rows, and thread
// row 0 adds their partial sums in a fixed order (deterministic, no atomics).
constexpr int kSumRows = 8;
__global__ void __launch_bounds__(32 * kSumRows) column_sums(const float* a, int64_t rows, int64_t cols, float* out) {
  FG_SHARED(float, partial, [kSumRows][32]);
  const int64_t j = int64_t(blockIdx.x) * 32 + threadIdx.x;
  float acc = 0.0f;
  if (j < cols)
    for (int64_t r = threadIdx.y; r < rows; r += kSumRows) acc += a[r * cols + j];
  partial[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && j < cols) {
    float sum = 0.0f;
    for (int k = 0; k < kSumRows; ++k) sum += partial[k][threadIdx.x];
    out[j] = sum;
  }
}

void launch_column_sums(const float* a, int64_t rows, int64_t cols, float* out, cudaStream_t stream) {
  const unsigned grid = static_cast<unsigned>((cols + 31) / 32);
  FG_LAUNCH(column_sums, grid, dim3(32, kSumRows), 0, stream, a, rows, cols, out);
}

}  // namespace

void rnn_backward(const RnnProblem& p, const RnnBackwardIo& io, float* dxg, float* dhg, cudaStream_t stream,
                  int device) {
  const int64_t T = p.steps, B = p.batch, I = p.input, H = p.hidden, GH = rnn_gates(p.cell) * H, TB = T * B;
  const bool lstm = p.cell == RnnCell::lstm;
  if (H <= 0) return;
  DeviceGuard guard(device);
  if (B > 0) {
    copy_or_zero(io.dh0, io.dh_n, B * H, stream);  // dh0 and dc0 carry the gradients back through time
    if (lstm) copy_or_zero(io.dc0, io.dc_n, B * H, stream);
    const StepBackward a{T, B, H, p.x_ts, p.x_bs, io.dy_ts, io.dy_bs, p.reverse, p.lengths, io.gates, io.hs,
                         io.cs, io.dy, io.dh0, io.dc0, dxg, dhg};
    const unsigned grid = grid_for(B * H, kStepThreads, device);
    for (int64_t s = T - 1; s >= 0; --s) {
      if (lstm) FG_LAUNCH(backward_step<Lstm>, grid, kStepThreads, 0, stream, a, s);
      else FG_LAUNCH(backward_step<Gru>, grid, kStepThreads, 0, stream, a, s);
      // dh_{s-1} += dhg_s W_hh (W_hh is G H × H, row-major).
      gemm_f32(B, H, GH, dhg + s * B * GH, GH, 1, p.w_hh, H, 1, io.dh0, H, nullptr, true, stream, device);
    }
  }
  if (io.dx && TB > 0) gemm_f32(TB, I, GH, dxg, GH, 1, p.w_ih, I, 1, io.dx, I, nullptr, false, stream, device);
  gemm_f32(GH, I, TB, dxg, 1, GH, p.x, I, 1, io.dw_ih, I, nullptr, false, stream, device);    // dxg^T x
  gemm_f32(GH, H, TB, dhg, 1, GH, io.hs, H, 1, io.dw_hh, H, nullptr, false, stream, device);  // dhg^T h_prev
  if (io.db_ih) launch_column_sums(dxg, TB, GH, io.db_ih, stream);
  if (io.db_hh) {
    if (lstm && io.db_ih) copy_or_zero(io.db_hh, io.db_ih, GH, stream);  // the same gradients for the LSTM
    else launch_column_sums(dhg, TB, GH, io.db_hh, stream);
  }
}

}  // namespace fusegrad::cuda
