// Machine probes for the benchmark suite: how fast can this CPU go at all?
#pragma once
#include <cstdint>

#include "common/isa.h"

namespace fusegrad {

struct ProbeKernels {
  // Runs `iterations` rounds of independent FMA chains on every thread of the current count;
  // returns the floating-point operations done (2 per lane per FMA).
  double (*fma_peak)(int64_t iterations);
};

FG_DECLARE_KERNEL_TABLE(ProbeKernels, probe_kernels)

}  // namespace fusegrad
