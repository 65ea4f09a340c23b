// The int8 convolution on AMX without im2col: an implicit GEMM whose A tiles are loaded straight
// from the image. At stride 1 and dilation 1, output pixel (oh, ow) of an image padded to Hp × Wp
// reads tap (kh, kw) at flat pixel q + kh·Wp + kw, where q = oh·Wp + ow. Consecutive q are
// consecutive input pixels, C bytes apart, so the 16 rows of an A tile (16 consecutive q, one tap,
// one chunk of channels) are a single strided tile load: nothing is gathered or packed. The q
// whose ow >= OW (a row's right edge running into the next row) are computed and dropped: Wp / OW
// more products than needed, against a gather that took a quarter of the time at MNIST sizes.
// A padded image is first copied once into a buffer filled with the input zero point; an
// unpadded one is read in place, but for the last image, whose last tile reads past the array.
//
// K is walked tap by tap, in chunks of 64 channels (C % 64 == 0) or 32 (C % 32 == 0), with the A
// and B tiles configured to that width, so a chunk never mixes a tap with its neighbour's bytes.
// The weight is the GEMM's packed weight unchanged: K rows in (kh, kw, c) order, so tap t's chunk
// at channel c0 starts at packed depth t·C + c0. Micro-tile and tile registers as in
// gemm/int8_amx.cpp: 32 rows × 32 columns, 2 × 2 accumulators, 2 A and 2 B tiles.
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "common/amx_tiles.h"
#include "common/threads.h"
#include "conv/int8_conv.h"

#if !defined(__AMX_INT8__) || !defined(__AMX_TILE__)
#error "int8_conv_amx.cpp needs -mamx-tile -mamx-int8 (FG_EXTENSION_FLAGS_int8_conv_amx)"
#endif

namespace fusegrad {
namespace isa_avx512_ext {
namespace {

constexpr int kRows = 32, kCols = 32;  // the micro-tile
// Tiles per work item: 8 × 32 = 256 output positions, so one epilogue call (whose per-column
// setup costs about as much as a tile's worth of stores) serves a whole image of a small CNN layer.
constexpr int64_t kItemTiles = 8;
// Below this many multiply-adds one thread does it all (as in int8_conv.cpp).
constexpr double kThreadMacs = 1 << 20;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Tiles 0-3: int32 accumulators (16 × 64 bytes); 4, 5: A (16 rows × chunk bytes); 6, 7: B (chunk / 4
// groups of 4 depths × 64 bytes).
void configure(int64_t chunk) {
  AmxTileConfig cfg;
  for (int i = 0; i < 4; ++i) cfg.set(i, 16, 64);
  for (int i = 4; i < 6; ++i) cfg.set(i, 16, static_cast<int>(chunk));
  for (int i = 6; i < 8; ++i) cfg.set(i, static_cast<int>(chunk / 4), 64);
  load_tile_config(cfg);
}

// c (32 × 16·NT int32, ldc) = the sum over taps and channel chunks of A · B, A's row r of tap t at
// a + tap_off[t] + r · lda, B the packed panels from b (NT of them, b_stride bytes apart).
template <int NT>
void implicit_tile(const uint8_t* a, int64_t lda, const int64_t* tap_off, int64_t taps, int64_t cin, int64_t chunk,
                   const int8_t* b, int64_t b_stride, int32_t* c, int64_t ldc) {
  _tile_zero(0);
  if (NT > 1) _tile_zero(1);
  _tile_zero(2);
  if (NT > 1) _tile_zero(3);
  const int8_t* b1 = b + b_stride;
  for (int64_t t = 0; t < taps; ++t) {
    const uint8_t* at = a + tap_off[t];
    for (int64_t c0 = 0; c0 < cin; c0 += chunk) {
      const int64_t depth = (t * cin + c0) * 16;  // packed bytes before this chunk in a panel
      _tile_loadd(4, at + c0, lda);
      _tile_loadd(6, b + depth, 64);
      if (NT > 1) _tile_loadd(7, b1 + depth, 64);
      _tile_dpbusd(0, 4, 6);
      if (NT > 1) _tile_dpbusd(1, 4, 7);
      _tile_loadd(5, at + c0 + 16 * lda, lda);
      _tile_dpbusd(2, 5, 6);
      if (NT > 1) _tile_dpbusd(3, 5, 7);
    }
  }
  const int64_t stride = ldc * 4;
  _tile_stored(0, c, stride);
  if (NT > 1) _tile_stored(1, c + 16, stride);
  _tile_stored(2, c + 16 * ldc, stride);
  if (NT > 1) _tile_stored(3, c + 16 * ldc + 16, stride);
}

}  // namespace

bool int8_conv2d_implicit_fits(const ConvShape& s) {
  return s.sh == 1 && s.sw == 1 && s.dh == 1 && s.dw == 1 && s.c % 32 == 0 && s.c > 0 && s.n > 0 && s.oh > 0 &&
         s.ow > 0 && s.co > 0 && s.pt >= 0 && s.pl >= 0;
}

void int8_conv2d_implicit(const Int8ConvProblem& p) {
  const ConvShape& s = p.s;
  // The image as the outputs read it: OH + KH − 1 rows of OW + KW − 1 pixels (the image at
  // (pt, pl), the zero point around it; bottom and right padding follow from OH and OW).
  const int64_t C = s.c, hp = s.oh + s.kh - 1, wp = s.ow + s.kw - 1, image = hp * wp * C;
  const int64_t chunk = C % 64 == 0 ? 64 : 32;
  const int64_t rows = (s.oh - 1) * wp + s.ow;  // flat q of an image up to its last real output
  const int64_t tiles = ceil_div(rows, kRows);
  // The last tile of an image reads up to pixel tiles·32 − 1 + (KH−1)·Wp + KW − 1.
  const int64_t read_pixels = tiles * kRows + (s.kh - 1) * wp + s.kw - 1;
  const int64_t slack = std::max<int64_t>(0, read_pixels - hp * wp) * C;
  // Without padding (and with the image exactly as wide as the outputs read), an image is read
  // where it lies; only the last one, whose last tile reads past the array, is copied.
  const bool in_place = s.pt == 0 && s.pl == 0 && s.w == wp && s.h >= hp;
  const int64_t copies = in_place ? 1 : s.n;
  const int64_t copy_rows = std::max<int64_t>(0, std::min(s.h, hp - s.pt));
  const int64_t copy_cols = std::max<int64_t>(0, std::min(s.w, wp - s.pl));
  const Int8PackedWeight& w = *p.w;
  const int64_t col_tiles = ceil_div(w.panels, 2), ldc = col_tiles * kCols;
  const int64_t out_row = s.co * int8_out_size(p.epilogue.out);
  Int8Epilogue e = p.epilogue;
  e.a_zero_point = p.x_zero_point;
  // A work item is up to kItemTiles tiles of one image; its real outputs are consecutive output
  // rows (only the accumulator rows have gaps), so after compacting them it takes one epilogue call,
  // which prepares its per-column factors once for all of them.
  const int64_t item_tiles = std::min<int64_t>(kItemTiles, tiles), items_per_image = ceil_div(tiles, item_tiles);

  std::vector<int64_t> tap_off;
  for (int64_t kh = 0; kh < s.kh; ++kh)
    for (int64_t kw = 0; kw < s.kw; ++kw) tap_off.push_back((kh * wp + kw) * C);

  const double macs = double(s.n) * double(s.oh * s.ow) * double(s.co) * double(s.kh * s.kw * C);
  const int threads = macs < kThreadMacs ? 1 : static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(
                                                   get_num_threads(), s.n * items_per_image)));
  // Every buffer is allocated here, before the threads start: a bad_alloc is then a MemoryError in
  // the caller, never an exception inside OpenMP.
  std::vector<uint8_t> padded(static_cast<size_t>(copies * image + slack));
  std::vector<std::vector<int32_t>> scratch(threads,
                                            std::vector<int32_t>(static_cast<size_t>(item_tiles * kRows * ldc)));
  const auto image_at = [&](int64_t n) -> const uint8_t* {
    if (!in_place) return padded.data() + n * image;
    return n + 1 < s.n ? p.x + n * s.h * s.w * C : padded.data();
  };

  std::atomic<int64_t> next_copy{0}, next_item{0};
  run_on_threads(threads, [&](int tid) {
    // The copies, an image at a time: zero point on the border, the image's rows inside.
    for (int64_t i; (i = next_copy.fetch_add(1, std::memory_order_relaxed)) < copies;) {
      const int64_t n = in_place ? s.n - 1 : i;
      uint8_t* dst = padded.data() + i * image;
      if (!in_place) std::memset(dst, p.x_zero_point, static_cast<size_t>(image));
      for (int64_t ih = 0; ih < copy_rows; ++ih)
        std::memcpy(dst + ((ih + s.pt) * wp + s.pl) * C, p.x + (n * s.h + ih) * s.w * C,
                    static_cast<size_t>(copy_cols * C));
    }
    if (tid == 0 && slack > 0) std::memset(padded.data() + copies * image, p.x_zero_point, static_cast<size_t>(slack));
    if (threads > 1) {
#pragma omp barrier
    }
    configure(chunk);
    int32_t* acc = scratch[tid].data();
    for (int64_t item; (item = next_item.fetch_add(1, std::memory_order_relaxed)) < s.n * items_per_image;) {
      const int64_t n = item / items_per_image, t0 = (item % items_per_image) * item_tiles;
      const int64_t t1 = std::min(tiles, t0 + item_tiles);
      for (int64_t t = t0; t < t1; ++t) {
        const uint8_t* a = image_at(n) + t * kRows * C;
        int32_t* c = acc + (t - t0) * kRows * ldc;
        for (int64_t jt = 0; jt < col_tiles; ++jt) {
          const int8_t* b = w.panel(2 * jt);
          if (2 * jt + 1 < w.panels)
            implicit_tile<2>(a, C, tap_off.data(), s.kh * s.kw, C, chunk, b, w.panel_bytes(), c + jt * kCols, ldc);
          else
            implicit_tile<1>(a, C, tap_off.data(), s.kh * s.kw, C, chunk, b, w.panel_bytes(), c + jt * kCols, ldc);
        }
      }
      // Keep the accumulator rows of real outputs (ow < OW, q < rows), in order.
      const int64_t q0 = t0 * kRows, q1 = std::min(rows, t1 * kRows);
      int64_t kept = 0, first = -1;
      for (int64_t q = q0; q < q1; ++q) {
        if (q % wp >= s.ow) continue;
        if (first < 0) first = (q / wp) * s.ow + q % wp;
        if (kept != q - q0)
          std::memcpy(acc + kept * ldc, acc + (q - q0) * ldc, static_cast<size_t>(ldc) * sizeof(int32_t));
        ++kept;
      }
      if (kept > 0) {
        char* out = static_cast<char*>(p.out) + (n * s.oh * s.ow + first) * out_row;
        int8_amx_kernels.epilogue(acc, ldc, kept, s.co, out, s.co, e, 0);
      }
    }
    _tile_release();
  });
}

}  // namespace isa_avx512_ext
}  // namespace fusegrad
