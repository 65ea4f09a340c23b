#include "common/probe.h"
#include "common/simd.h"
#include "common/threads.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace {

// Ten independent accumulator chains: two FMA pipes times a four-cycle latency need eight in
// flight; ten leaves slack and still fits the 16 registers of AVX2.
constexpr int kChains = 10;

double fma_peak(int64_t iterations) {
  double total = 0.0;
#pragma omp parallel num_threads(get_num_threads()) reduction(+ : total)
  {
    VecF acc[kChains];
    for (int c = 0; c < kChains; ++c) acc[c] = set1(0.001f * (c + 1));
    const VecF a = set1(0.999999f), b = set1(1e-7f);
    // Floating-point FMA chains cannot be folded by the compiler (no -ffast-math), and the sum
    // below is consumed, so the loop runs as written with the chains in registers.
    for (int64_t it = 0; it < iterations; ++it) {
      for (int c = 0; c < kChains; ++c) acc[c] = fmadd(acc[c], a, b);
    }
    VecF sum = acc[0];
    for (int c = 1; c < kChains; ++c) sum = sum + acc[c];
    volatile float sink = reduce_add(sum);
    (void)sink;
    total += 2.0 * kVecWidth * kChains * static_cast<double>(iterations);
  }
  return total;
}

}  // namespace

extern const ProbeKernels probe_kernels{fma_peak};

}  // namespace FG_ISA_NS
}  // namespace fusegrad
