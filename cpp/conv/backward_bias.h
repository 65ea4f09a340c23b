// Backward-bias's pieces, shared with the fused first-layer backward (backward.cpp), which sums
// the bias gradient image by image between its other passes.
#pragma once
#include <cstdint>
#include <vector>

namespace fusegrad {
namespace FG_ISA_NS {
namespace conv {

// total[0:co] += column sums of rows [r0, r1) of gy (rows of co floats).
void bias_rows(const float* gy, int64_t co, int64_t r0, int64_t r1, double* total);

// gb = the threads' totals (nthreads × co doubles), summed.
void sum_bias_totals(const std::vector<double>& totals, int nthreads, int64_t co, float* gb);

}  // namespace conv
}  // namespace FG_ISA_NS
}  // namespace fusegrad
