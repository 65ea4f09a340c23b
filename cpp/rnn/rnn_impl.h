// Pieces shared by the forward and backward sequence kernels (compiled once per ISA level): the
// per-step GEMM on a packed operand, the split of the batch rows between threads, and loads and
// stores of a row's partial last vector.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>

#include "common/simd.h"
#include "common/threads.h"
#include "gemm/gemm.h"
#include "gemm/microkernel.h"
#include "gemm/pack.h"
#include "rnn/rnn.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace rnn_detail {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// C[0:rows, 0:n] (row stride ldc) (= or +=) A[0:rows, 0:k] (row stride lda, read in place) times
// B packed by pack_b into ceil(n / NR) panels of k × NR floats, plus bias[0:n] if given. The
// panels are the outer loop, so a panel is read from L2 once and reused by every row tile.
inline void packed_gemm(const float* a, int64_t lda, int64_t rows, const float* bpack, int64_t k, int64_t n,
                        float* c, int64_t ldc, const float* bias, bool accumulate) {
  if (rows <= 0) return;
  static thread_local PackBuffer a_buf;
  float* apack = a_buf.get(ceil_div(rows, kMR) * kMR * k);
  pack_a(a, lda, 1, rows, k, apack);
  MicroTile t;
  t.k = k;
  t.ldb = kNR;
  t.b_padded = true;
  t.ldc = ldc;
  t.load_c = accumulate;
  for (int64_t j = 0; j < n; j += kNR) {
    t.n = static_cast<int>(std::min<int64_t>(kNR, n - j));
    t.b = bpack + j * k;
    t.bias = bias ? bias + j : nullptr;
    for (int64_t i = 0; i < rows; i += kMR) {
      t.m = static_cast<int>(std::min<int64_t>(kMR, rows - i));
      t.a = apack + i * k;
      t.c = c + i * ldc + j;
      microkernel(t);
    }
  }
}

// Packs B (k × n, element (p, j) at b[p * rs + j * cs]) for packed_gemm; this worker's share of the
// panels. The caller puts a barrier after it.
inline void pack_share(const float* b, int64_t rs, int64_t cs, int64_t k, int64_t n, float* dst, int tid, int nt) {
  const int64_t np = ceil_div(n, kNR);
  const int64_t p0 = np * tid / nt, p1 = np * (tid + 1) / nt;
  if (p1 > p0) pack_b(b + p0 * kNR * cs, rs, cs, k, std::min(n, p1 * kNR) - p0 * kNR, dst + p0 * kNR * k);
}

// Threads for a sequence: one below ~0.25 MFLOP per step (waking a thread costs more) or when
// there are too few batch rows for each thread to get a few.
inline int sequence_threads(const RnnProblem& p) {
  const double step_flops = 2.0 * double(p.batch) * double(p.hidden) * double(rnn_gates(p.cell) * p.hidden);
  if (step_flops < 2.5e5) return 1;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(get_num_threads(), p.batch / 4)));
}

// Runs body(tid, nt) on `threads` OpenMP threads (nt: the team OpenMP actually gave).
template <class Body>
void run_team(int threads, Body&& body) {
  if (threads <= 1) {
    body(0, 1);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const DenormalsAreZero mode;
    body(omp_get_thread_num(), omp_get_num_threads());
  }
}

inline void barrier(int nt) {
  if (nt > 1) {
#pragma omp barrier
  }
}

// The steps of row b and the time of its step s.
inline int64_t row_length(const RnnProblem& p, int64_t b) {
  return p.lengths ? std::min<int64_t>(std::max<int32_t>(p.lengths[b], 0), p.steps) : p.steps;
}
inline int64_t time_of(const RnnProblem& p, int64_t s, int64_t len) { return p.reverse ? len - 1 - s : s; }

inline VecF ld(const float* p, int w) { return w == kVecWidth ? load(p) : load_partial(p, w); }
inline void st(float* p, VecF v, int w) {
  if (w == kVecWidth) store(p, v); else store_partial(p, v, w);
}

}  // namespace rnn_detail
}  // namespace FG_ISA_NS
}  // namespace fusegrad
