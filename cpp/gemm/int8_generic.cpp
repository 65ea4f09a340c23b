// The portable int8 path: plain C++ on the same packed layouts, compiled once per ISA level like
// every other kernel (the compiler vectorises what it can). It runs wherever neither VNNI nor AMX
// is usable, and is the reference the faster paths are tested against.
#include <cstdint>

#include "gemm/int8_gemm.h"
#include "gemm/int8_kernels_impl.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace {

// 4 rows × one 16-column panel: 64 int32 sums, few enough for the compiler to keep in registers
// (or vector registers where the level has them), with one B group (64 bytes) reused 4 times.
constexpr int kMR = 4, kNR = 16;
// Blocks: depth 256 keeps a B panel block (256 × 16 bytes = 4 KiB) in L1 while every A
// micro-panel of the block passes; 128 rows of A (128 × K bytes) in L2; 256 columns of scratch.
constexpr int64_t kKC = 256, kMC = 128, kNC = 256;

void microkernel(const Int8Tile& t) {
  const int64_t groups = t.kc / kInt8KGroup;
  for (int v = 0; v < t.nv; ++v) {
    int32_t acc[kMR][kNR] = {};
    const int8_t* b = t.b + v * t.b_stride;
    const uint8_t* a = t.a;
    for (int64_t g = 0; g < groups; ++g, a += kMR * 4, b += kNR * 4) {
      for (int r = 0; r < kMR; ++r) {
        const int32_t a0 = a[r * 4], a1 = a[r * 4 + 1], a2 = a[r * 4 + 2], a3 = a[r * 4 + 3];
        for (int j = 0; j < kNR; ++j)
          acc[r][j] += a0 * b[j * 4] + a1 * b[j * 4 + 1] + a2 * b[j * 4 + 2] + a3 * b[j * 4 + 3];
      }
    }
    for (int r = 0; r < kMR; ++r) {
      int32_t* c = t.c + r * t.ldc + v * kNR;
      for (int j = 0; j < kNR; ++j) c[j] = t.load_c ? c[j] + acc[r][j] : acc[r][j];
    }
  }
}

}  // namespace

extern const Int8Kernels int8_generic_kernels{
    "generic", kMR, kNR, kInt8KGroup, kKC, kMC, kNC, false, pack_a_interleaved<kMR>, microkernel, epilogue,
    nullptr, nullptr};

}  // namespace FG_ISA_NS
}  // namespace fusegrad
