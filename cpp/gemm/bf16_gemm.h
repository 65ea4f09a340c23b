// bf16 GEMM on the CPU: C = act(A·B + bias) or C += A·B with A and B rounded to bfloat16 (or given
// as bfloat16), exact products summed in fp32, fp32 C.
//
// Three paths, picked per call from what cpu_feature_usable() allows (common/isa.h):
//   amx          AMX-BF16 tiles (tdpbf16ps), 2×2 accumulator tiles of 16×16 fp32  (bf16_microkernel_amx.cpp)
//   avx512_bf16  vdpbf16ps on zmm registers, K in pairs, a 12×32 register tile    (bf16_microkernel_avx512.cpp)
//   generic      A and B rounded to bf16 values held in fp32, then the active level's fp32 GEMM:
//                the same numbers up to the order of the fp32 sums              (bf16_layout.cpp)
// The two fast paths share the BLIS-shaped driver (bf16_driver.cpp) and the packing (bf16_pack.cpp),
// which is where fp32 operands are rounded to bf16 (round to nearest even), so a product never
// reads fp32 data in its inner loop and no bf16 copy of an operand outlives the call.
//
// Packed layouts (element = one bf16, stored as its uint16 bit pattern):
//   B panel   kBf16NR = 32 columns, K padded with zeros to the driver's K step, in VNNI-2 order:
//             pair row q holds (B[2q][j], B[2q+1][j]) for j = 0..31, 128 bytes; element (p, j) at
//             panel[(p / 2) * 64 + 2 * j + p % 2]. One pair row is two zmm of 16 dword pairs for
//             vdpbf16ps, and the 16 pair rows of a 32-deep K step are two 16×64-byte AMX B tiles
//             (columns 0..15 at offset 0, 16..31 at offset 64, row stride 128 bytes).
//   A, avx512 path  MR = 12 rows per panel, element (r, p) at panel[(p / 2) * 24 + 2 * r + p % 2]:
//             each pair step is the 12 dwords the kernel broadcasts.
//   A, amx path     32 rows per panel, K padded to 32, each 32-deep K step stored as its two
//             16-row A tiles of 16 × 64 bytes, one after the other: element (r, p) at
//             panel[(p / 32) * 1024 + (r / 16) * 512 + (r % 16) * 32 + p % 32]. Every tile load then
//             reads 1 KiB of consecutive lines (a row-major panel would put the 16 rows of a tile
//             a power-of-two stride apart, into the same L1 set, for K a multiple of 2048).
#pragma once
#include <cstdint>
#include <cstring>

#include "activation/activation.h"
#include "common/array_view.h"

namespace fusegrad {

enum class Bf16Path : int { generic = 0, avx512_bf16 = 1, amx = 2 };

// The fastest path usable now (cpu_feature_usable: CPU, OS, active ISA level, switches).
Bf16Path bf16_gemm_path();
const char* bf16_path_name(Bf16Path path);

// An operand: fp32 (rounded when packed) or bf16 bit patterns; element (i, j) of batch item t at
// data + t * bs + i * rs + j * cs, in elements (any signs).
struct Bf16Operand {
  const void* data = nullptr;
  bool bf16 = false;
  int64_t rs = 0, cs = 0, bs = 0;
};

struct Bf16GemmProblem {
  int64_t batch = 1, m = 0, n = 0, k = 0;
  Bf16Operand a, b;      // a is m×k, b is k×n
  float* c = nullptr;    // m×n, unit column stride
  int64_t c_rs = 0, c_bs = 0;
  const float* bias = nullptr;  // n floats or null
  Activation act = Activation::none;
  float act_param = 0.0f;
  bool accumulate = false;      // C += A·B (then no bias or activation)
};

// out (=|+=) act(a @ b + bias) with a, b float32 or bf16 (itemsize 2) views whose byte strides
// are whole elements; out float32 with unit column stride, not overlapping a, b or bias; bias
// float32 (n,) contiguous or null. Shapes as gemm_strided's (checked by the caller). Runs
// bf16_gemm_path(). (bf16_layout.cpp)
void gemm_bf16_strided(const ArrayView& a, const ArrayView& b, const ArrayView& out, const ArrayView* bias,
                       Activation act, bool accumulate);

// fp32 -> bf16, round to nearest even, as vcvtneps2bf16 does it: NaN stays a (quiet) NaN and a
// subnormal input becomes a zero of its sign (the instruction treats them as zero, and so do
// vdpbf16ps and tdpbf16ps), so every path sees the same bf16 values.
inline uint16_t bf16_from_float(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) == 0) return static_cast<uint16_t>((u >> 16) & 0x8000u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline float float_from_bf16(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

#if FG_X86
// The fast paths, compiled once with the avx512 flags and their extensions (CMakeLists.txt,
// FG_EXTENSION_SOURCES). Call them only where cpu_feature_usable() allows.
namespace isa_avx512_ext {
void gemm_bf16_avx512(const Bf16GemmProblem& p);
void gemm_bf16_amx(const Bf16GemmProblem& p);
}  // namespace isa_avx512_ext
#endif

}  // namespace fusegrad
