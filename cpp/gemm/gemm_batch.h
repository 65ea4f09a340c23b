// How the threads go over a batch of GEMMs: shared by the fp32 driver (gemm_driver.cpp) and the
// bf16 fast paths (bf16_driver.cpp). For sources compiled once per ISA level (or extension).
#pragma once
#include <algorithm>
#include <cstdint>

#include "common/threads.h"

#ifndef FG_ISA_NS
#error "gemm_batch.h is for sources compiled once per ISA level"
#endif

namespace fusegrad {
namespace FG_ISA_NS {

// Below this many flops per GEMM one thread does it all: starting the second thread and joining
// it costs a microsecond or two, which a ~100 GFLOP/s core spends on ~0.2 MFLOP. At 64^3
// (0.5 MFLOP) two threads measured 106 GFLOP/s against one thread's ~90.
constexpr double kGemmThreadFlops = 2.0 * 64 * 64 * 64;

// Runs item(i, threads) for every GEMM i of a batch of `batch`, each of `flops`: many small
// products one per thread at a time, each single-threaded; otherwise one after another, each on
// all threads when it is big enough to pay for them.
template <class Item>
void for_each_gemm(int64_t batch, double flops, Item&& item) {
  const int threads = get_num_threads();
  if (batch > 1 && threads > 1 && flops < kGemmThreadFlops && flops * batch >= kGemmThreadFlops) {
    const int64_t grain = std::max<int64_t>(1, static_cast<int64_t>(kGemmThreadFlops / std::max(flops, 1.0)));
    parallel_for(batch, grain, [&](int64_t b0, int64_t b1) {
      for (int64_t i = b0; i < b1; ++i) item(i, 1);
    });
    return;
  }
  const int per_item = flops >= kGemmThreadFlops ? threads : 1;
  for (int64_t i = 0; i < batch; ++i) item(i, per_item);
}

}  // namespace FG_ISA_NS
}  // namespace fusegrad
