// The AMX-INT8 path: tdpbusd multiplies a 16 × 64-byte tile of A (uint8) by a 16 × 64-byte tile
// of B in VNNI-4 order (16 groups of 4 k's × 16 columns, signed) into a 16 × 16 int32 tile,
// 16384 exact multiply-adds per instruction. Compiled once with -mamx-tile -mamx-int8
// (FG_EXTENSION_SOURCES) and used where cpu_feature_usable(amx_int8) says so, which includes the
// arch_prctl permission for the tile state (cpp/common/isa.cpp).
//
// Register tile 32 × 32: the 8 tile registers hold 2 × 2 accumulator tiles, 2 A tiles and 2 B
// tiles, so each A and B tile loaded is used twice. Every tile is 16 rows × 64 bytes, one
// configuration for the whole kernel, loaded once per thread per call (thread_begin). A panels are
// packed as consecutive 1 KiB tiles (pack_a_tiles), zero past K, so the B rows a last tile reads
// past K (the next panel's, or the weight's slack) are multiplied by zeros.
#include <immintrin.h>

#include <cstdint>

#include "common/amx_tiles.h"
#include "gemm/int8_gemm.h"
#include "gemm/int8_kernels_impl.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace {

constexpr int kMR = 32, kNR = 32;
constexpr int64_t kTileK = 64;  // bytes of depth per A tile row / groups × 4 per B tile
// Blocks:
//   KC 512: a micro-tile's A panel and B block (512 × 32 bytes = 16 KiB each) both fit the 48 KiB
//           L1, so the B block stays there while the row block's A panels stream in from L2 at
//           16 KiB per 32 tdpbusd (512 cycles at the TMUL's rate: 32 B/cycle, half of what L2
//           can deliver). Measured alone on this machine, one core, the kernel over a 256-row
//           A block: KC 256 / 512 / 1024 gave 2.2 / 3.0 / 2.8 TOPS (peak with tiles in L1: 5.9).
//   MC 512: rows of A packed together; the slice of one depth block (512 × 512 bytes = 256 KiB)
//           is what the kernels stream, from L2. Every B block fetched from L3 then serves 16 A
//           panels instead of 8 at MC 256 (at 1024³, one core: 0.88 against 0.80 of oneDNN's
//           time, on a busy machine where single runs vary by ±15%).
//   NC 256: columns of the int32 scratch block of partial sums (512 × 256 × 4 = 512 KiB, in L2).
constexpr int64_t kKC = 512, kMC = 512, kNC = 256;

void thread_begin() {
  AmxTileConfig cfg;
  for (int i = 0; i < 8; ++i) cfg.set(i, 16, 64);
  load_tile_config(cfg);
}

void thread_end() { _tile_release(); }

// Tiles: C[mi][ni] = tile 2·mi + ni (0..3), A[mi] = 4 + mi, B[ni] = 6 + ni. NT: B tiles (1 or 2).
template <int NT>
void tile(const Int8Tile& t) {
  const int64_t ldc = t.ldc * 4;
  int32_t* c = t.c;
  if (t.load_c) {
    _tile_loadd(0, c, ldc);
    if (NT > 1) _tile_loadd(1, c + 16, ldc);
    _tile_loadd(2, c + 16 * t.ldc, ldc);
    if (NT > 1) _tile_loadd(3, c + 16 * t.ldc + 16, ldc);
  } else {
    _tile_zero(0);
    if (NT > 1) _tile_zero(1);
    _tile_zero(2);
    if (NT > 1) _tile_zero(3);
  }
  // A packed: consecutive tiles, 64 bytes a row; in place: rows lda apart, 64 bytes further a step.
  const int64_t lda = t.lda > 0 ? t.lda : kTileK;
  const int64_t step = t.lda > 0 ? kTileK : kMR * kTileK;
  const uint8_t* a = t.a;
  const int8_t* b0 = t.b;
  const int8_t* b1 = t.b + t.b_stride;
  for (int64_t p = 0; p < t.kc; p += kTileK, a += step) {
    _tile_loadd(4, a, lda);
    _tile_loadd(6, b0 + p * 16, 64);
    if (NT > 1) _tile_loadd(7, b1 + p * 16, 64);
    _tile_dpbusd(0, 4, 6);
    if (NT > 1) _tile_dpbusd(1, 4, 7);
    _tile_loadd(5, a + 16 * lda, lda);
    _tile_dpbusd(2, 5, 6);
    if (NT > 1) _tile_dpbusd(3, 5, 7);
  }
  _tile_stored(0, c, ldc);
  if (NT > 1) _tile_stored(1, c + 16, ldc);
  _tile_stored(2, c + 16 * t.ldc, ldc);
  if (NT > 1) _tile_stored(3, c + 16 * t.ldc + 16, ldc);
}

// Rows are always a full 32 (the packed A panel is zero-padded and the scratch block has room),
// so only the column count varies; a tile of 16 columns skips the second B tile.
void microkernel(const Int8Tile& t) {
  if (t.nv >= 2) tile<2>(t);
  else tile<1>(t);
}

}  // namespace

extern const Int8Kernels int8_amx_kernels{
    "amx", kMR, kNR, kTileK, kKC, kMC, kNC, true, pack_a_tiles<kMR>, microkernel, epilogue, thread_begin,
    thread_end};

}  // namespace FG_ISA_NS
}  // namespace fusegrad
