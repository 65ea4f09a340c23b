// One recurrent layer direction over a whole sequence: the problem, what forward writes and what
// backward reads and writes. Plain structs shared by the CPU kernels (cpp/rnn/rnn.h) and the CUDA
// kernels (cuda/rnn/rnn.cuh), whose pointers are then device addresses; equations in rnn.h.
//
// Layouts. Time index t, batch row b. x is a C-contiguous (T, B, I) or (B, T, I) array: its row of
// (t, b) is t * x_ts + b * x_bs (so (B, 1) or (1, T)); dx has x's layout. y and dy are any strided
// (t, b, unit) views with unit stride 1 (e.g. one direction's half of a bidirectional output).
// With lengths, row b runs steps [0, lengths[b]); a reverse layer runs them from t = lengths[b] - 1
// down to 0; y is zero past a row's length and h_n/c_n are the states after its last step.
// Saved for backward, indexed by step s (not time): gates (T, B, 4H): LSTM i f g o after their
// nonlinearities, GRU r z n and W_hn h + b_hn; hs (T+1, B, H): h0 then the state after each step;
// cs likewise for the LSTM's cell.
#pragma once
#include <cstdint>

namespace fusegrad {

enum class RnnCell : int { lstm = 0, gru = 1 };

inline int rnn_gates(RnnCell cell) { return cell == RnnCell::lstm ? 4 : 3; }

struct RnnProblem {
  RnnCell cell = RnnCell::lstm;
  int64_t steps = 0, batch = 0, input = 0, hidden = 0;  // T, B, I, H
  bool reverse = false;
  int64_t x_ts = 0, x_bs = 0;         // row of (t, b) in x and dx, in rows of `input` floats
  const int32_t* lengths = nullptr;   // (B,) in [0, T], or null: every row runs T steps
  const float* x = nullptr;           // (T * B rows, I)
  const float* w_ih = nullptr;        // (G H, I)
  const float* w_hh = nullptr;        // (G H, H)
  const float* b_ih = nullptr;        // (G H,) or null
  const float* b_hh = nullptr;        // (G H,) or null
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
  float* dh0 = nullptr;         // (B, H)
  float* dc0 = nullptr;         // LSTM: (B, H)
};

}  // namespace fusegrad
