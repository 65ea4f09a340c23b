// The AVX-512 VNNI path: vpdpbusd multiplies 4 unsigned bytes of A by 4 signed bytes of B per
// int32 lane and adds the four products to the lane, exactly (no saturation, unlike vpmaddubsw).
// Compiled once with -mavx512vnni (FG_EXTENSION_SOURCES) and used where cpu_feature_usable says so.
//
// Register tile 6 × 64: 6 rows × 4 zmm = 24 accumulators + 4 B vectors + 1 broadcast A = 29 of 32
// zmm. A k group (4 deep) is 24 vpdpbusd against 4 vector loads and 6 broadcasts, so the load
// ports keep up with the two vector pipes; 24 independent chains cover vpdpbusd's 5-cycle latency.
#include <immintrin.h>

#include <cstdint>
#include <utility>

#include "gemm/int8_gemm.h"
#include "gemm/int8_kernels_impl.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace {

constexpr int kMR = 6, kNV = 4, kNR = kNV * 16;
// Blocks:
//   KC 256: the B block of a micro-tile (256 × 64 bytes = 16 KiB) stays in the 48 KiB L1 while
//           the A micro-panels of the row block stream past it (each 6 × 256 = 1.5 KiB).
//   MC 192: rows of A packed together (192 × K bytes, 768 KiB at K = 4096) stay in the 2 MiB L2
//           while the column blocks are swept; a multiple of MR.
//   NC 256: columns of the int32 scratch block (192 × 256 × 4 = 192 KiB, in L2) the epilogue
//           reads back right after the last depth block.
constexpr int64_t kKC = 256, kMC = 192, kNC = 256;

template <int NV>
void tile(const Int8Tile& t) {
  __m512i acc[kMR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < kMR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      acc[r][v] = t.load_c ? _mm512_loadu_si512(t.c + r * t.ldc + v * 16) : _mm512_setzero_si512();
  const int64_t groups = t.kc / kInt8KGroup;
  const uint8_t* a = t.a;
  const int8_t* b = t.b;
  const int64_t bs = t.b_stride;
#pragma GCC unroll 2
  for (int64_t g = 0; g < groups; ++g) {
    __m512i bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = _mm512_load_si512(b + v * bs);
#pragma GCC unroll 8
    for (int r = 0; r < kMR; ++r) {
      int32_t four;
      __builtin_memcpy(&four, a + r * 4, 4);
      const __m512i av = _mm512_set1_epi32(four);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], av, bv[v]);
    }
    a += kMR * 4;
    b += 64;
  }
#pragma GCC unroll 8
  for (int r = 0; r < kMR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) _mm512_storeu_si512(t.c + r * t.ldc + v * 16, acc[r][v]);
}

void microkernel(const Int8Tile& t) {
  switch (t.nv) {
    case 1: return tile<1>(t);
    case 2: return tile<2>(t);
    case 3: return tile<3>(t);
    default: return tile<4>(t);
  }
}

}  // namespace

extern const Int8Kernels int8_vnni_kernels{
    "vnni", kMR, kNR, kInt8KGroup, kKC, kMC, kNC, false, pack_a_interleaved<kMR>, microkernel, epilogue,
    nullptr, nullptr};

}  // namespace FG_ISA_NS
}  // namespace fusegrad
