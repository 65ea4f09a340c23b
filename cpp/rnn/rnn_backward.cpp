// Backward through time of an LSTM or GRU layer over a whole sequence (one direction): see rnn.h.
// Compiled once per ISA level.
//
// The time loop (threads split the batch rows, as in forward) writes each step's gate gradients
// twice: by time, in x's layout (dxg: the gradient of the input projection, for dx, dW_ih, b_ih),
// and by step (dhg: of the recurrent product, for dW_hh and b_hh, and for dh_{t-1} = dhg W_hh on
// the packed W_hh). They differ only in GRU's n gate (r times it for dhg) and in row order.
#include <algorithm>
#include <cstring>

#include "common/vec_math.h"
#include "rnn/rnn_impl.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace {
using namespace rnn_detail;

// dh: the carried gradient of this step's h (in: from the later steps; out: the part that does not
// go through W_hh, which is zero for the LSTM). dc likewise for the cell.
void lstm_cell_backward(const float* gates, const float* c_prev, const float* c, const float* dy, float* dh,
                        float* dc, float* dg_out, int64_t H) {
  const VecF one = set1(1.0f), zero = set1(0.0f);
  for (int64_t j = 0; j < H; j += kVecWidth) {
    const int w = static_cast<int>(std::min<int64_t>(kVecWidth, H - j));
    const VecF i = ld(gates + j, w), f = ld(gates + H + j, w), g = ld(gates + 2 * H + j, w),
               o = ld(gates + 3 * H + j, w);
    const VecF tc = tanh_by_sigmoid(ld(c + j, w));  // as the forward computed it
    const VecF dhv = dy ? ld(dh + j, w) + ld(dy + j, w) : ld(dh + j, w);
    const VecF dcv = fmadd(dhv * o, one - tc * tc, ld(dc + j, w));
    const VecF di = dcv * g * i * (one - i);
    const VecF df = dcv * ld(c_prev + j, w) * f * (one - f);
    const VecF dg = dcv * i * (one - g * g);
    const VecF dout = dhv * tc * o * (one - o);
    st(dc + j, dcv * f, w);
    st(dh + j, zero, w);
    st(dg_out + j, di, w); st(dg_out + H + j, df, w); st(dg_out + 2 * H + j, dg, w); st(dg_out + 3 * H + j, dout, w);
  }
}

void gru_cell_backward(const float* gates, const float* h_prev, const float* dy, float* dh, float* dxg, float* dhg,
                       int64_t H) {
  const VecF one = set1(1.0f);
  for (int64_t j = 0; j < H; j += kVecWidth) {
    const int w = static_cast<int>(std::min<int64_t>(kVecWidth, H - j));
    const VecF r = ld(gates + j, w), z = ld(gates + H + j, w), n = ld(gates + 2 * H + j, w),
               hn = ld(gates + 3 * H + j, w);
    const VecF dhv = dy ? ld(dh + j, w) + ld(dy + j, w) : ld(dh + j, w);
    const VecF dz = dhv * (ld(h_prev + j, w) - n) * z * (one - z);
    const VecF dn = dhv * (one - z) * (one - n * n);
    const VecF dr = dn * hn * r * (one - r);
    st(dh + j, dhv * z, w);
    st(dxg + j, dr, w); st(dxg + H + j, dz, w); st(dxg + 2 * H + j, dn, w);
    st(dhg + j, dr, w); st(dhg + H + j, dz, w); st(dhg + 2 * H + j, dn * r, w);
  }
}

// out[j] = sum over rows of a[row * n + j], columns split between threads.
void column_sums(const float* a, int64_t rows, int64_t n, float* out) {
  constexpr int64_t kChunk = 4 * kVecWidth;
  parallel_for(ceil_div(n, kChunk), 2, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t j0 = c * kChunk, j1 = std::min(n, j0 + kChunk);
      VecF acc[4] = {set1(0.0f), set1(0.0f), set1(0.0f), set1(0.0f)};
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = j0, v = 0; j < j1; j += kVecWidth, ++v)
          acc[v] = acc[v] + ld(a + r * n + j, static_cast<int>(std::min<int64_t>(kVecWidth, j1 - j)));
      for (int64_t j = j0, v = 0; j < j1; j += kVecWidth, ++v)
        st(out + j, acc[v], static_cast<int>(std::min<int64_t>(kVecWidth, j1 - j)));
    }
  });
}

void run_gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_rs, int64_t a_cs, const float* b,
              int64_t b_rs, int64_t b_cs, float* c) {
  GemmProblem g;
  g.m = m; g.n = n; g.k = k;
  g.a = a; g.a_rs = a_rs; g.a_cs = a_cs;
  g.b = b; g.b_rs = b_rs; g.b_cs = b_cs;
  g.c = c; g.c_rs = n;
  gemm_kernels.gemm(g);
}

// Whether step s of batch row b reads x's row (s, b) in x's own row order (a time-major x run
// forwards): then the by-step gradient rows are dx's rows as they stand.
bool steps_are_x_rows(const RnnProblem& p) {
  return !p.reverse && (p.steps <= 1 || p.x_ts == p.batch) && (p.batch <= 1 || p.x_bs == 1);
}

// The LSTM's gate gradients are the same numbers for the input projection and the recurrent
// product, so one by-step array (dhg) serves both, and the weight and bias gradients are one GEMM:
// [dW_ih | dW_hh | db] = dhg^T [x_s | h_{s-1} | 1], where row (s, b) of the right operand is the
// x row that step s of row b read (zeros past the row's length), the state the step started
// from, and a one, whose column sums dhg into the bias gradient. dhg is packed once rather than
// twice, and N is I + H + 1: for an LSTM on 28 input features a separate dW_ih would be a 28-wide
// GEMM over all of dhg. dx = dhg W_ih by step, written in place when steps are x's rows, else
// scattered to them.
void lstm_weight_and_input_gradients(const RnnProblem& p, const RnnBackwardIo& io, const float* dhg) {
  const int64_t T = p.steps, B = p.batch, I = p.input, H = p.hidden, GH = 4 * H, TB = T * B;
  const int64_t N = I + H + 1;  // [x_s | h_{s-1} | 1]: the last column sums dhg into the bias gradient
  static thread_local PackBuffer xh_buf, dw_buf, dx_buf;
  float* xh = xh_buf.get(std::max<int64_t>(1, TB * N));
  float* dw = dw_buf.get(GH * N);
  parallel_for(TB, 256, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t s = r / B, b = r % B, len = row_length(p, b);
      float* row = xh + r * N;
      if (s < len) std::memcpy(row, p.x + (time_of(p, s, len) * p.x_ts + b * p.x_bs) * I, I * sizeof(float));
      else std::memset(row, 0, I * sizeof(float));
      std::memcpy(row + I, io.hs + r * H, H * sizeof(float));
      row[I + H] = 1.0f;
    }
  });
  run_gemm(GH, N, TB, dhg, 1, GH, xh, N, 1, dw);
  for (int64_t g = 0; g < GH; ++g) {
    std::memcpy(io.dw_ih + g * I, dw + g * N, I * sizeof(float));
    std::memcpy(io.dw_hh + g * H, dw + g * N + I, H * sizeof(float));
    if (io.db_ih) io.db_ih[g] = dw[g * N + I + H];
    if (io.db_hh) io.db_hh[g] = dw[g * N + I + H];
  }
  if (!io.dx) return;
  if (steps_are_x_rows(p)) {  // rows past a row's length have zero gate gradients: zero dx rows
    run_gemm(TB, I, GH, dhg, GH, 1, p.w_ih, I, 1, io.dx);
    return;
  }
  float* dx_steps = dx_buf.get(std::max<int64_t>(1, TB * I));
  run_gemm(TB, I, GH, dhg, GH, 1, p.w_ih, I, 1, dx_steps);
  parallel_for(B, 8, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t len = row_length(p, b);
      for (int64_t t = 0; t < T; ++t) {  // time_of maps time to step as it maps step to time
        float* row = io.dx + (t * p.x_ts + b * p.x_bs) * I;
        if (t < len) std::memcpy(row, dx_steps + (time_of(p, t, len) * B + b) * I, I * sizeof(float));
        else std::memset(row, 0, I * sizeof(float));
      }
    }
  });
}

}  // namespace

void rnn_backward_sequence(const RnnProblem& p, const RnnBackwardIo& io) {
  const int64_t T = p.steps, B = p.batch, I = p.input, H = p.hidden, GH = rnn_gates(p.cell) * H;
  const bool lstm = p.cell == RnnCell::lstm;
  if (H <= 0) return;
  static thread_local PackBuffer dxg_buf, dhg_buf, w_buf, carry_buf;
  float* dxg = lstm ? nullptr : dxg_buf.get(std::max<int64_t>(1, T * B * GH));  // the GRU's, by time
  float* dhg = dhg_buf.get(std::max<int64_t>(1, T * B * GH));
  float* wpack = w_buf.get(ceil_div(H, kNR) * kNR * GH);
  float* dh = carry_buf.get(std::max<int64_t>(1, 2 * B * H));
  float* dc = dh + B * H;
  if (B > 0) {
    run_team(sequence_threads(p), [&](int tid, int nt) {
      pack_share(p.w_hh, H, 1, GH, H, wpack, tid, nt);  // W_hh (G H × H) for dh_{t-1} = dgates W_hh
      const int64_t r0 = B * tid / nt, r1 = B * (tid + 1) / nt, rows = r1 - r0;
      for (int64_t b = r0; b < r1; ++b) {
        if (io.dh_n) std::memcpy(dh + b * H, io.dh_n + b * H, H * sizeof(float));
        else std::memset(dh + b * H, 0, H * sizeof(float));
        if (lstm && io.dc_n) std::memcpy(dc + b * H, io.dc_n + b * H, H * sizeof(float));
        else std::memset(dc + b * H, 0, H * sizeof(float));
        if (dxg)
          for (int64_t t = row_length(p, b); t < T; ++t)  // no gradient past a row's length
            std::memset(dxg + (t * p.x_ts + b * p.x_bs) * GH, 0, GH * sizeof(float));
      }
      barrier(nt);
      for (int64_t s = T - 1; s >= 0; --s) {
        for (int64_t b = r0; b < r1; ++b) {
          const int64_t len = row_length(p, b);
          float* dhg_row = dhg + (s * B + b) * GH;
          if (s >= len) {  // the state passed through this step unchanged: so does its gradient
            std::memset(dhg_row, 0, GH * sizeof(float));
            continue;
          }
          const int64_t t = time_of(p, s, len);
          const float* dy = io.dy ? io.dy + t * io.dy_ts + b * io.dy_bs : nullptr;
          const float* gates = io.gates + (s * B + b) * 4 * H;
          if (lstm)
            lstm_cell_backward(gates, io.cs + (s * B + b) * H, io.cs + ((s + 1) * B + b) * H, dy, dh + b * H,
                               dc + b * H, dhg_row, H);
          else
            gru_cell_backward(gates, io.hs + (s * B + b) * H, dy, dh + b * H, dxg + (t * p.x_ts + b * p.x_bs) * GH,
                              dhg_row, H);
        }
        packed_gemm(dhg + (s * B + r0) * GH, GH, rows, wpack, GH, H, dh + r0 * H, H, nullptr, true);
      }
      std::memcpy(io.dh0 + r0 * H, dh + r0 * H, rows * H * sizeof(float));
      if (lstm) std::memcpy(io.dc0 + r0 * H, dc + r0 * H, rows * H * sizeof(float));
    });
  }
  const int64_t TB = T * B;
  if (lstm) {
    lstm_weight_and_input_gradients(p, io, dhg);
    return;
  }
  if (io.dx) run_gemm(TB, I, GH, dxg, GH, 1, p.w_ih, I, 1, io.dx);    // dx = dxg W_ih
  run_gemm(GH, I, TB, dxg, 1, GH, p.x, I, 1, io.dw_ih);                // dW_ih = dxg^T x
  run_gemm(GH, H, TB, dhg, 1, GH, io.hs, H, 1, io.dw_hh);              // dW_hh = dhg^T h_prev
  if (io.db_ih) column_sums(dxg, TB, GH, io.db_ih);
  if (io.db_hh) column_sums(dhg, TB, GH, io.db_hh);
}

}  // namespace FG_ISA_NS
}  // namespace fusegrad
