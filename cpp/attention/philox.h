// The dropout mask of attention: Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy
// as 1, 2, 3", SC 2011), a counter-based generator, so any element of the mask is computed on its
// own from (seed, b, h, i, j) and the CPU and CUDA kernels draw the same mask.
//
// Definition (the contract both devices implement):
//   key     = (seed & 0xffffffff, seed >> 32)
//   counter = (j / 4, i, h, b) as four 32-bit words
//   u       = word (j % 4) of philox4x32_10(counter, key)
//   keep    = u >= threshold, threshold = floor(p * 2^32) (p in [0, 1))
// So P(keep) = 1 - p up to 2^-32, and one Philox call serves four neighbouring keys.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define FG_PHILOX_FN __host__ __device__ inline
#else
#define FG_PHILOX_FN inline
#endif

namespace fusegrad {
namespace philox {

constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;

FG_PHILOX_FN void round(uint32_t c[4], uint32_t k0, uint32_t k1) {
  const uint64_t p0 = static_cast<uint64_t>(kMul0) * c[0];
  const uint64_t p1 = static_cast<uint64_t>(kMul1) * c[2];
  const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
  const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
  const uint32_t n0 = hi1 ^ c[1] ^ k0, n2 = hi0 ^ c[3] ^ k1;
  c[0] = n0;
  c[1] = lo1;
  c[2] = n2;
  c[3] = lo0;
}

// Philox4x32 with 10 rounds: c (the counter) is replaced by the four output words.
FG_PHILOX_FN void philox4x32_10(uint32_t c[4], uint64_t seed) {
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int r = 0; r < 10; ++r) {
    round(c, k0, k1);
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
}

FG_PHILOX_FN uint32_t threshold(float p) {
  const double t = static_cast<double>(p) * 4294967296.0;
  return t >= 4294967295.0 ? 0xffffffffu : static_cast<uint32_t>(t);
}

// Keep bits of keys [j4*4, j4*4 + 4) of query i, head (b, h): bit r is key j4*4 + r.
FG_PHILOX_FN unsigned keep4(uint64_t seed, int64_t b, int64_t h, int64_t i, int64_t j4, uint32_t thresh) {
  uint32_t c[4] = {static_cast<uint32_t>(j4), static_cast<uint32_t>(i), static_cast<uint32_t>(h),
                   static_cast<uint32_t>(b)};
  philox4x32_10(c, seed);
  return (c[0] >= thresh ? 1u : 0u) | (c[1] >= thresh ? 2u : 0u) | (c[2] >= thresh ? 4u : 0u) |
         (c[3] >= thresh ? 8u : 0u);
}

}  // namespace philox
}  // namespace fusegrad
