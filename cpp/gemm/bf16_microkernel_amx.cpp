// The AMX-BF16 micro-tile: 32×32 of C as 2×2 accumulator tiles (16 rows × 16 fp32 each), fed per
// 32-deep K step by two A tiles (16 rows × 32 bf16 of the row panel) and two B tiles (16 pair
// rows × 16 columns of the VNNI-2 panel). That is all 8 tile registers: 4 accumulators, 2 A, 2 B.
// Each tdpbf16ps is 16×16×32 multiply-adds; each loaded tile feeds two of them, which halves the
// loads per product against a 1×1 arrangement and keeps the tile loads (1 KiB each) within
// what L1/L2 deliver while the four products run.
#include <immintrin.h>

#include <cstdint>

#include "common/amx_tiles.h"
#include "gemm/bf16_kernels.h"

#if !defined(__AMX_BF16__) || !defined(__AMX_TILE__)
#error "bf16_microkernel_amx.cpp needs -mamx-tile -mamx-bf16 (FG_EXTENSION_FLAGS_bf16_microkernel_amx)"
#endif

namespace fusegrad {
namespace isa_avx512_ext {
namespace {

constexpr int kTileRows = 16, kTileBytes = 64;
// Tile registers: C00 C01 C10 C11, A0 A1, B0 B1. Macros, not constants: the tile intrinsics paste
// their register number into the instruction text.
#define kC00 0
#define kC01 1
#define kC10 2
#define kC11 3
#define kA0 4
#define kA1 5
#define kB0 6
#define kB1 7

}  // namespace

void bf16_amx_configure() {
  AmxTileConfig cfg;
  for (int i = 0; i < 8; ++i) cfg.set(i, kTileRows, kTileBytes);
  load_tile_config(cfg);
}

void bf16_amx_release() {
  _mm_sfence();  // the streaming stores of C are visible before the thread reports done
  _tile_release();
}

void bf16_microkernel_amx(const Bf16Tile& t) {
  // A full tile without bias or activation goes straight between C and the tile registers;
  // edges and epilogues pass through a buffer in L1 and the common store.
  const bool direct = t.m == kBf16MRAmx && t.n == kBf16NR && !t.bias && t.act == Activation::none;
  const int64_t c_stride = t.ldc * 4;
  if (direct && t.load_c) {
    _tile_loadd(kC00, t.c, c_stride);
    _tile_loadd(kC01, t.c + 16, c_stride);
    _tile_loadd(kC10, t.c + 16 * t.ldc, c_stride);
    _tile_loadd(kC11, t.c + 16 * t.ldc + 16, c_stride);
  } else {
    _tile_zero(kC00);
    _tile_zero(kC01);
    _tile_zero(kC10);
    _tile_zero(kC11);
  }
  const uint16_t* a = t.a;
  const uint16_t* b = t.b;
  constexpr int kATile = kTileRows * kAmxK;  // elements of one A tile
  for (int64_t p = 0; p < t.k; p += kAmxK) {
    _tile_loadd(kA0, a, kTileBytes);
    _tile_loadd(kB0, b, 2 * kTileBytes);
    _tile_loadd(kB1, b + 32, 2 * kTileBytes);
    _tile_dpbf16ps(kC00, kA0, kB0);
    _tile_dpbf16ps(kC01, kA0, kB1);
    _tile_loadd(kA1, a + kATile, kTileBytes);
    _tile_dpbf16ps(kC10, kA1, kB0);
    _tile_dpbf16ps(kC11, kA1, kB1);
    a += 2 * kATile;
    b += kAmxK * kBf16NR;  // 16 pair rows of 32 columns
  }
  if (direct && (t.load_c || !t.stream_c)) {
    _tile_stored(kC00, t.c, c_stride);
    _tile_stored(kC01, t.c + 16, c_stride);
    _tile_stored(kC10, t.c + 16 * t.ldc, c_stride);
    _tile_stored(kC11, t.c + 16 * t.ldc + 16, c_stride);
    return;
  }
  alignas(64) float block[kBf16MRAmx * kBf16NR];
  constexpr int64_t kBlockStride = kBf16NR * 4;
  _tile_stored(kC00, block, kBlockStride);
  _tile_stored(kC01, block + 16, kBlockStride);
  _tile_stored(kC10, block + 16 * kBf16NR, kBlockStride);
  _tile_stored(kC11, block + 16 * kBf16NR + 16, kBlockStride);
  if (direct && t.stream_c && (reinterpret_cast<uintptr_t>(t.c) & 63) == 0 && (t.ldc & 15) == 0) {
    // A C tile written once and not read, of a C too large to stay in cache: streaming stores
    // skip reading its lines from memory first (read-for-ownership).
    for (int r = 0; r < kBf16MRAmx; ++r) {
      _mm512_stream_ps(t.c + r * t.ldc, _mm512_load_ps(block + r * kBf16NR));
      _mm512_stream_ps(t.c + r * t.ldc + 16, _mm512_load_ps(block + r * kBf16NR + 16));
    }
    return;
  }
  bf16_store_block(block, kBf16NR, t);
}

#undef kC00
#undef kC01
#undef kC10
#undef kC11
#undef kA0
#undef kA1
#undef kB0
#undef kB1

}  // namespace isa_avx512_ext
}  // namespace fusegrad
