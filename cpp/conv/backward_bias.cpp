// Backward-bias: gb = column sums of gy, in float over blocks of kBiasBlock rows and in double
// across blocks and threads.
#include "conv/backward_bias.h"

#include <algorithm>

#include "conv/blocking.h"
#include "conv/geometry.h"
#include "conv/passes.h"
#include "gemm/microkernel_impl.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace conv {
namespace {

// Column sums of rows [r0, r1) of gy for columns [c0, c0 + V*W), the last vector `last_w` wide,
// added into total (doubles). The V column vectors stay in registers over kBiasBlock rows, two
// rows at a time into separate accumulators (each add then waits on the one two rows back, not
// the last): with the sums in memory instead, every row waited on a store-to-load forward and
// the pass ran at a third of the cache's speed.
template <int V>
void bias_columns(const float* gy, int64_t co, int64_t r0, int64_t r1, int64_t c0, int last_w, double* total) {
  for (int64_t b0 = r0; b0 < r1; b0 += kBiasBlock) {
    const int64_t b1 = std::min(r1, b0 + kBiasBlock);
    VecF even[V], odd[V];
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) even[v] = odd[v] = set1(0.0f);
    const float* row = gy + b0 * co + c0;
    int64_t r = b0;
    for (; r + 2 <= b1; r += 2, row += 2 * co) {
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) {
        const int lanes = v == V - 1 ? last_w : W;
        even[v] = even[v] + ukernel::load_w(row + v * W, lanes);
        odd[v] = odd[v] + ukernel::load_w(row + co + v * W, lanes);
      }
    }
    if (r < b1) {
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) even[v] = even[v] + ukernel::load_w(row + v * W, v == V - 1 ? last_w : W);
    }
    float sums[V * W];
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) store(sums + v * W, even[v] + odd[v]);
    for (int i = 0; i < (V - 1) * W + last_w; ++i) total[c0 + i] += sums[i];
  }
}

}  // namespace

void bias_rows(const float* gy, int64_t co, int64_t r0, int64_t r1, double* total) {
  static_assert(kBiasVecs == 8, "kBlock lists one bias_columns per vector count up to kBiasVecs");
  static constexpr void (*kBlock[kBiasVecs])(const float*, int64_t, int64_t, int64_t, int64_t, int, double*) = {
      bias_columns<1>, bias_columns<2>, bias_columns<3>, bias_columns<4>,
      bias_columns<5>, bias_columns<6>, bias_columns<7>, bias_columns<8>};
  for (int64_t c0 = 0; c0 < co; c0 += kBiasVecs * W) {
    const int64_t n = std::min<int64_t>(kBiasVecs * W, co - c0), v = ceil_div(n, W);
    kBlock[v - 1](gy, co, r0, r1, c0, static_cast<int>(n - (v - 1) * W), total);
  }
}

void sum_bias_totals(const std::vector<double>& totals, int nthreads, int64_t co, float* gb) {
  for (int64_t c = 0; c < co; ++c) {
    double sum = 0.0;
    for (int t = 0; t < nthreads; ++t) sum += totals[t * co + c];
    gb[c] = static_cast<float>(sum);
  }
}

void conv_backward_bias(const float* gy, int64_t rows, int64_t co, float* gb) {
  if (co == 0) return;
  const int nthreads = threads_for(double(rows) * double(co) * 64.0);
  std::vector<double> totals(static_cast<size_t>(nthreads * co), 0.0);
  run_on_threads(nthreads, [&](int tid) {
    bias_rows(gy, co, rows * tid / nthreads, rows * (tid + 1) / nthreads, totals.data() + tid * co);
  });
  sum_bias_totals(totals, nthreads, co, gb);
}

}  // namespace conv
}  // namespace FG_ISA_NS
}  // namespace fusegrad
