// Forward of an LSTM or GRU layer over a whole sequence (one direction): see rnn.h for the plan.
// Compiled once per ISA level.
#include <algorithm>
#include <cstring>

#include "common/vec_math.h"
#include "rnn/rnn_impl.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace {
using namespace rnn_detail;

// One row of one step: the gate pre-activations are xg + hg, or hg alone when the step's GEMM
// also did the input projection (kStacked). xg: the input projection (+ b_ih), hg: h W_hh^T
// (+ b_hh), both G·H wide.
template <bool kStacked>
void lstm_cell(const float* xg, const float* hg, const float* c_prev, float* gates, float* c_out, float* h_out,
               float* y, int64_t H) {
  for (int64_t j = 0; j < H; j += kVecWidth) {
    const int w = static_cast<int>(std::min<int64_t>(kVecWidth, H - j));
    const auto pre = [&](int64_t gate) {
      const VecF h_part = ld(hg + gate * H + j, w);
      return kStacked ? h_part : ld(xg + gate * H + j, w) + h_part;
    };
    const VecF i = sigmoid(pre(0));
    const VecF f = sigmoid(pre(1));
    const VecF g = tanh_by_sigmoid(pre(2));
    const VecF o = sigmoid(pre(3));
    const VecF c = fmadd(f, ld(c_prev + j, w), i * g);
    const VecF h = o * tanh_by_sigmoid(c);
    st(gates + j, i, w);
    st(gates + H + j, f, w);
    st(gates + 2 * H + j, g, w);
    st(gates + 3 * H + j, o, w);
    st(c_out + j, c, w);
    st(h_out + j, h, w);
    st(y + j, h, w);
  }
}

void gru_cell(const float* xg, const float* hg, const float* h_prev, float* gates, float* h_out, float* y, int64_t H) {
  for (int64_t j = 0; j < H; j += kVecWidth) {
    const int w = static_cast<int>(std::min<int64_t>(kVecWidth, H - j));
    const VecF r = sigmoid(ld(xg + j, w) + ld(hg + j, w));
    const VecF z = sigmoid(ld(xg + H + j, w) + ld(hg + H + j, w));
    const VecF hn = ld(hg + 2 * H + j, w);
    const VecF n = tanh_by_sigmoid(fmadd(r, hn, ld(xg + 2 * H + j, w)));
    const VecF h = fmadd(z, ld(h_prev + j, w) - n, n);  // (1 - z) n + z h
    st(gates + j, r, w);
    st(gates + H + j, z, w);
    st(gates + 2 * H + j, n, w);
    st(gates + 3 * H + j, hn, w);
    st(h_out + j, h, w);
    st(y + j, h, w);
  }
}

void copy_or_zero(float* dst, const float* src, int64_t n) {
  if (src) std::memcpy(dst, src, n * sizeof(float)); else std::memset(dst, 0, n * sizeof(float));
}

// The LSTM step's GEMM also does the input projection ([x_t | h] [W_ih | W_hh]^T, K = I + H) when
// the stacked packed weights fit in half of L2 next to the step's rows: the projection's own GEMM
// would write T·B·4H floats that the cells read back from memory (3.6 MiB for an LSTM(128) over 28
// steps of 64 rows), and on few input features its K is too short for the microkernel (28 in an
// MNIST-row LSTM: 180 against 290 GFLOP/s). Above that size W_hh^T alone streams from L2 each step
// and the whole-sequence GEMM wins. Not the GRU: its n gate needs x W_in^T and h W_hn^T apart.
constexpr int64_t kStackedWeightsMaxBytes = 1 << 20;

bool stacked_input(const RnnProblem& p) {
  return p.cell == RnnCell::lstm && (p.input + p.hidden) * 4 * p.hidden * int64_t(sizeof(float)) <=
                                        kStackedWeightsMaxBytes;
}

// [W_ih | W_hh]^T (K = I + H rows, G·H columns) in packed_gemm's panels; this worker's share.
void pack_stacked_share(const RnnProblem& p, float* dst, int tid, int nt) {
  const int64_t I = p.input, H = p.hidden, K = I + H, GH = rnn_gates(p.cell) * H, np = ceil_div(GH, kNR);
  for (int64_t jp = np * tid / nt; jp < np * (tid + 1) / nt; ++jp) {
    const int64_t j0 = jp * kNR, live = std::min<int64_t>(kNR, GH - j0);
    float* panel = dst + jp * kNR * K;
    if (I > 0) pack_b(p.w_ih + j0 * I, 1, I, I, live, panel);
    pack_b(p.w_hh + j0 * H, 1, H, H, live, panel + I * kNR);
  }
}

void forward(const RnnProblem& p, const RnnForwardOut& o) {
  const int64_t T = p.steps, B = p.batch, I = p.input, H = p.hidden, GH = rnn_gates(p.cell) * H;
  const bool lstm = p.cell == RnnCell::lstm, stacked = stacked_input(p);
  if (B <= 0 || H <= 0) return;
  const int64_t K = stacked ? I + H : H;  // the per-step GEMM's K
  static thread_local PackBuffer xg_buf, w_buf, hg_buf, bias_buf;
  float* xg = stacked ? nullptr : xg_buf.get(std::max<int64_t>(1, T * B * GH));
  float* wpack = w_buf.get(ceil_div(GH, kNR) * kNR * K);
  float* hg = hg_buf.get(B * GH);
  const float* step_bias = p.b_hh;
  if (stacked && p.b_ih) {  // both biases in the step's epilogue
    float* sum = bias_buf.get(GH);
    for (int64_t j = 0; j < GH; ++j) sum[j] = p.b_ih[j] + (p.b_hh ? p.b_hh[j] : 0.0f);
    step_bias = sum;
  }
  if (!stacked && T > 0) {  // the input projection of every step: one GEMM, b_ih in its epilogue
    GemmProblem g;
    g.m = T * B; g.n = GH; g.k = I;
    g.a = p.x; g.a_rs = I; g.a_cs = 1;
    g.b = p.w_ih; g.b_rs = 1; g.b_cs = I;  // W_ih^T
    g.c = xg; g.c_rs = GH;
    g.bias = p.b_ih;
    gemm_kernels.gemm(g);
  }
  run_team(sequence_threads(p), [&](int tid, int nt) {
    if (stacked) pack_stacked_share(p, wpack, tid, nt);
    else pack_share(p.w_hh, 1, H, H, GH, wpack, tid, nt);  // W_hh^T, packed once for every step
    const int64_t r0 = B * tid / nt, r1 = B * (tid + 1) / nt, rows = r1 - r0;
    static thread_local PackBuffer xh_buf;  // a stacked step's [x_t | h] rows
    float* xh = stacked ? xh_buf.get(std::max<int64_t>(1, rows * K)) : nullptr;
    copy_or_zero(o.hs + r0 * H, o.h0 ? o.h0 + r0 * H : nullptr, rows * H);
    if (lstm) copy_or_zero(o.cs + r0 * H, o.c0 ? o.c0 + r0 * H : nullptr, rows * H);
    for (int64_t b = r0; b < r1; ++b)  // y is zero past a row's length
      for (int64_t t = row_length(p, b); t < T; ++t) std::memset(o.y + t * o.y_ts + b * o.y_bs, 0, H * sizeof(float));
    barrier(nt);
    for (int64_t s = 0; s < T; ++s) {
      const float* h_prev = o.hs + s * B * H;
      float* h_next = o.hs + (s + 1) * B * H;
      if (stacked) {
        for (int64_t b = r0; b < r1; ++b) {  // a finished row's product is never used: any x row will do
          const int64_t len = row_length(p, b), t = s < len ? time_of(p, s, len) : 0;
          float* row = xh + (b - r0) * K;
          if (I > 0) std::memcpy(row, p.x + (t * p.x_ts + b * p.x_bs) * I, I * sizeof(float));
          std::memcpy(row + I, h_prev + b * H, H * sizeof(float));
        }
        packed_gemm(xh, K, rows, wpack, K, GH, hg + r0 * GH, GH, step_bias, false);
      } else {
        packed_gemm(h_prev + r0 * H, H, rows, wpack, H, GH, hg + r0 * GH, GH, p.b_hh, false);
      }
      for (int64_t b = r0; b < r1; ++b) {
        const int64_t len = row_length(p, b);
        if (s >= len) {  // finished: the state carries over unchanged
          std::memcpy(h_next + b * H, h_prev + b * H, H * sizeof(float));
          if (lstm) std::memcpy(o.cs + ((s + 1) * B + b) * H, o.cs + (s * B + b) * H, H * sizeof(float));
          continue;
        }
        const int64_t t = time_of(p, s, len);
        float* gates = o.gates + (s * B + b) * 4 * H;
        float* y = o.y + t * o.y_ts + b * o.y_bs;
        const float* xrow = stacked ? nullptr : xg + (t * p.x_ts + b * p.x_bs) * GH;
        if (!lstm) {
          gru_cell(xrow, hg + b * GH, h_prev + b * H, gates, h_next + b * H, y, H);
          continue;
        }
        const float* c_prev = o.cs + (s * B + b) * H;
        float* c_next = o.cs + ((s + 1) * B + b) * H;
        if (stacked) lstm_cell<true>(xrow, hg + b * GH, c_prev, gates, c_next, h_next + b * H, y, H);
        else lstm_cell<false>(xrow, hg + b * GH, c_prev, gates, c_next, h_next + b * H, y, H);
      }
    }
    std::memcpy(o.h_n + r0 * H, o.hs + (T * B + r0) * H, rows * H * sizeof(float));
    if (lstm) std::memcpy(o.c_n + r0 * H, o.cs + (T * B + r0) * H, rows * H * sizeof(float));
  });
}

}  // namespace

void rnn_backward_sequence(const RnnProblem& p, const RnnBackwardIo& io);  // rnn_backward.cpp

extern const RnnKernels rnn_kernels{forward, rnn_backward_sequence};

}  // namespace FG_ISA_NS
}  // namespace fusegrad
