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

// One row of one step. xg: the input projection (+ b_ih), hg: h W_hh^T (+ b_hh), both G·H wide.
void lstm_cell(const float* xg, const float* hg, const float* c_prev, float* gates, float* c_out, float* h_out,
               float* y, int64_t H) {
  const VecF one = set1(1.0f);
  for (int64_t j = 0; j < H; j += kVecWidth) {
    const int w = static_cast<int>(std::min<int64_t>(kVecWidth, H - j));
    const VecF i = sigmoid(ld(xg + j, w) + ld(hg + j, w));
    const VecF f = sigmoid(ld(xg + H + j, w) + ld(hg + H + j, w));
    const VecF g = tanh(ld(xg + 2 * H + j, w) + ld(hg + 2 * H + j, w));
    const VecF o = one / (one + exp(-(ld(xg + 3 * H + j, w) + ld(hg + 3 * H + j, w))));
    const VecF c = fmadd(f, ld(c_prev + j, w), i * g);
    const VecF h = o * tanh(c);
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
    const VecF n = tanh(fmadd(r, hn, ld(xg + 2 * H + j, w)));
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

void forward(const RnnProblem& p, const RnnForwardOut& o) {
  const int64_t T = p.steps, B = p.batch, I = p.input, H = p.hidden, GH = rnn_gates(p.cell) * H;
  const bool lstm = p.cell == RnnCell::lstm;
  if (B <= 0 || H <= 0) return;
  static thread_local PackBuffer xg_buf, w_buf, hg_buf;
  float* xg = xg_buf.get(std::max<int64_t>(1, T * B * GH));
  float* wpack = w_buf.get(ceil_div(GH, kNR) * kNR * H);
  float* hg = hg_buf.get(B * GH);
  if (T > 0) {  // the input projection of every step: one GEMM, b_ih in its epilogue
    GemmProblem g;
    g.m = T * B; g.n = GH; g.k = I;
    g.a = p.x; g.a_rs = I; g.a_cs = 1;
    g.b = p.w_ih; g.b_rs = 1; g.b_cs = I;  // W_ih^T
    g.c = xg; g.c_rs = GH;
    g.bias = p.b_ih;
    gemm_kernels.gemm(g);
  }
  run_team(sequence_threads(p), [&](int tid, int nt) {
    pack_share(p.w_hh, 1, H, H, GH, wpack, tid, nt);  // W_hh^T, packed once for every step
    const int64_t r0 = B * tid / nt, r1 = B * (tid + 1) / nt, rows = r1 - r0;
    copy_or_zero(o.hs + r0 * H, o.h0 ? o.h0 + r0 * H : nullptr, rows * H);
    if (lstm) copy_or_zero(o.cs + r0 * H, o.c0 ? o.c0 + r0 * H : nullptr, rows * H);
    for (int64_t b = r0; b < r1; ++b)  // y is zero past a row's length
      for (int64_t t = row_length(p, b); t < T; ++t) std::memset(o.y + t * o.y_ts + b * o.y_bs, 0, H * sizeof(float));
    barrier(nt);
    for (int64_t s = 0; s < T; ++s) {
      const float* h_prev = o.hs + s * B * H;
      float* h_next = o.hs + (s + 1) * B * H;
      packed_gemm(h_prev + r0 * H, H, rows, wpack, H, GH, hg + r0 * GH, GH, p.b_hh, false);
      for (int64_t b = r0; b < r1; ++b) {
        const int64_t len = row_length(p, b);
        if (s >= len) {  // finished: the state carries over unchanged
          std::memcpy(h_next + b * H, h_prev + b * H, H * sizeof(float));
          if (lstm) std::memcpy(o.cs + ((s + 1) * B + b) * H, o.cs + (s * B + b) * H, H * sizeof(float));
          continue;
        }
        const int64_t t = time_of(p, s, len);
        const float* xrow = xg + (t * p.x_ts + b * p.x_bs) * GH;
        float* gates = o.gates + (s * B + b) * 4 * H;
        float* y = o.y + t * o.y_ts + b * o.y_bs;
        if (lstm)
          lstm_cell(xrow, hg + b * GH, o.cs + (s * B + b) * H, gates, o.cs + ((s + 1) * B + b) * H, h_next + b * H,
                    y, H);
        else
          gru_cell(xrow, hg + b * GH, h_prev + b * H, gates, h_next + b * H, y, H);
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
