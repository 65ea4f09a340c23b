// The pieces of the bf16 GEMM's fast paths (bf16_gemm.h): packing, the two microkernels and what
// the driver needs to know of each. Only for the files compiled in FG_EXTENSION_SOURCES.
#pragma once
#include <cstdint>

#include "gemm/bf16_gemm.h"

#if !FG_X86
#error "bf16_kernels.h is for the x86 extension sources"
#endif

namespace fusegrad {
namespace isa_avx512_ext {

constexpr int kBf16NR = 32;        // B panel width: two zmm of dword pairs, or two 16-column AMX B tiles
constexpr int kBf16MRAvx512 = 12;  // 12×32: 24 zmm accumulators + 2 B + 1 broadcast (as the fp32 kernel)
constexpr int kBf16MRAmx = 32;     // two 16-row A tiles against two B tiles: 4 accumulator tiles
constexpr int kAmxK = 32;          // K per tile step: 16 rows of 64 bytes = 32 bf16 of A per row

// Packs rows [0, m) x depth [0, k) of operand x (pointers already at its first element) into
// ceil(m / 12) pair panels (bf16_gemm.h), depth zero-padded to kp (even), rows past m zero.
void bf16_pack_a_pairs(const Bf16Operand& x, const void* base, int64_t m, int64_t k, int64_t kp, uint16_t* dst);
// The same into ceil(m / 32) tile panels of 32 × kp (kp a multiple of 32; bf16_gemm.h).
void bf16_pack_a_tiles(const Bf16Operand& x, const void* base, int64_t m, int64_t k, int64_t kp, uint16_t* dst);
// Depth [0, k) x columns [0, n) of B into ceil(n / 32) VNNI-2 panels of kp × 32.
void bf16_pack_b(const Bf16Operand& x, const void* base, int64_t k, int64_t n, int64_t kp, uint16_t* dst);

// One micro-tile: C[0:m, 0:n] (+)= A panel · B panel over `k` depth (a multiple of the path's K
// step; the panels already point at the first K of the block). Epilogue as the fp32 MicroTile's:
// load_c adds what C holds, bias and act only on the last K block.
struct Bf16Tile {
  int64_t k = 0;
  const uint16_t* a = nullptr;
  const uint16_t* b = nullptr;
  float* c = nullptr;
  int64_t ldc = 0;
  int m = 0, n = 0;
  bool load_c = false;
  const float* bias = nullptr;
  Activation act = Activation::none;
  float act_param = 0.0f;
  bool stream_c = false;  // C is too large to stay in cache: the AMX kernel may store around it
};

void bf16_microkernel_avx512(const Bf16Tile& t);

// AMX keeps its tile configuration per thread: configure before a thread's first tile kernel,
// release after its last (the OS then need not save 8 KiB of tile data at each context switch).
void bf16_amx_configure();
void bf16_amx_release();
void bf16_microkernel_amx(const Bf16Tile& t);

// Stores an m×n fp32 block (row stride ld) into C with the epilogue: C = (C +) x (+ bias), then
// act. For the AMX tiles, which land in memory before the epilogue. (bf16_epilogue.cpp)
void bf16_store_block(const float* x, int64_t ld, const Bf16Tile& t);
// The activation alone, over the tile already stored in C.
void bf16_activate(const Bf16Tile& t);

}  // namespace isa_avx512_ext
}  // namespace fusegrad
