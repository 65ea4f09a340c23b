#include "common/host_memory.h"

#include <cstdlib>  // defines __GLIBC__ where the C library is glibc

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace fusegrad {

// glibc refuses mmap thresholds above HEAP_MAX_SIZE / 2, which is 32 MiB on 64-bit systems;
// blocks larger than this are still mapped and unmapped per allocation.
constexpr int kMmapThresholdBytes = 32 << 20;
// Free memory at the top of the heap is returned to the kernel only beyond this much: larger than
// the activations of the models fusegrad is built for, small next to the machines it runs on.
constexpr int kTrimThresholdBytes = 1 << 30;

bool keep_freed_memory_for_reuse() {
#if defined(__GLIBC__)
  return mallopt(M_MMAP_THRESHOLD, kMmapThresholdBytes) == 1 &&
         mallopt(M_TRIM_THRESHOLD, kTrimThresholdBytes) == 1;
#else
  return false;
#endif
}

}  // namespace fusegrad
