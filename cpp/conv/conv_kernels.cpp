// Convolution kernels (see conv.h for the formulation of each pass). Compiled once per ISA level;
// every level uses that level's GEMM micro-tile (kMR × kNR) and packing.
#include <algorithm>
#include <cstring>
#include <optional>
#include <tuple>
#include <utility>
#include <vector>

#include "common/threads.h"
#include "conv/conv.h"
#include "pool/pool.h"
#include "gemm/microkernel_impl.h"
#include "gemm/pack.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace {

constexpr int W = kVecWidth;
constexpr int kNV = kNR / W;

// Run lengths (floats read through one pointer) that get micro-tiles with the run loop unrolled
// at compile time: C_in = 1..4 per tap, and the kernel-row runs of first layers (3x3 or 5x5 over
// 1, 2, 3 or 4 channels). With so few iterations per pointer, a runtime loop's overhead (and the
// missed scheduling across runs) costs as much as the FMAs themselves. Index 0: any length.
using FixedLens = std::integer_sequence<int, 0, 1, 2, 3, 4, 5, 6, 9, 12, 15>;
constexpr int kFixedLens[] = {0, 1, 2, 3, 4, 5, 6, 9, 12, 15};

int fixed_len_index(int64_t len) {
  for (int i = 1; i < int(sizeof(kFixedLens) / sizeof(int)); ++i)
    if (kFixedLens[i] == len) return i;
  return 0;
}

// Same reasoning as the GEMM's kThreadFlops: below ~1.8 MFLOP of work per chunk the second thread
// costs more to wake than it saves.
constexpr double kThreadFlops = 2.0 * 96 * 96 * 96;

// Backward-weight works through the output pixels in segments: every K group × C_out panel of
// gw passes over a whole segment with its block in registers, so the segment's gy rows and the
// input rows under them are read once per group from L2. Half of a core's L2 leaves room for gw
// itself (147 KiB for 3x3x64->64) and the next segment's lines.
constexpr int64_t kPatchSegmentBytes = 512 << 10;

// Conv rows the fused conv + max-pool computes before pooling them: a whole small image (a 26x26x32
// first layer is 86 KiB), or bands of it for large ones, kept within L2 with the packed weights.
// Whole images keep the tiles running on across conv rows (a band of 2 rows of 26 pixels would
// leave 8 of 60 tile rows idle).
constexpr int64_t kPoolBandBytes = 256 << 10;

// Rows of gy summed in float before they are added into the double totals of backward-bias:
// short enough that float rounding stays at the level of a 64-term sum.
constexpr int64_t kBiasBlock = 64;

// Rows of the indirect micro-tile: each row has its own input pointer, and the k loop needs all
// of them in general registers next to the B pointer and the counters. Twelve (the GEMM's MR
// on AVX-512) leave the compiler short of registers: it spilled row pointers and even a B
// vector to the stack, measured 40% slower. Eight rows × NR columns still give 16 independent
// accumulators (enough to hide the FMA latency) and fit the 16 general registers.
constexpr int kConvMR = kMR < 8 ? kMR : 8;

// Runs of a fixed length (first layers: 3 or 9 floats per pointer) unroll the run at compile time,
// so the row pointers are loaded once per run from the pointer table instead of living in
// registers across a runtime loop: there, the GEMM's full MR rows fit without spills, and the
// taller tile spreads the per-tile work (pointer table, bias, stores) over 12 rows instead of 8.
constexpr int kFixedRunMR = kMR;

// The wide tile: 6 rows × two NR panels (AVX-512: 6 × 64, 24 accumulators, 4 B vectors and a
// broadcast = 29 of 32 zmm). Used when C_out (forward) or C_in (backward-input) spans two or
// more panels: the tile then reads its A rows once for 64 columns instead of once per 32, and
// loads 4 B vectors per 24 FMAs instead of 2 per 16. Only AVX-512 has the registers for it.
constexpr bool kHasWideTile = kVecWidth == 16;
constexpr int kWideMR = 6;
constexpr int kMaxV = kHasWideTile ? 2 * kNV : kNV;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Mathematical modulo (the C++ % keeps the sign of the dividend).
int64_t pos_mod(int64_t a, int64_t b) { return ((a % b) + b) % b; }

// Along one axis: whether tap i of output position o lands inside an input of `in` positions.
bool tap_inside(int64_t o, int64_t i, int64_t stride, int64_t pad, int64_t dil, int64_t in) {
  const int64_t at = o * stride - pad + i * dil;
  return at >= 0 && at < in;
}

// ---- the indirect micro-tile ----------------------------------------------------------------

// One MR×NR output tile of an implicit GEMM whose A rows are gathered through pointers:
// for tap t and row r, a[t * R + r] points at `cin` contiguous floats (an input pixel's
// channels, or a zero row for padding). B is a packed panel of (ntaps * cin) × kNR floats.
// Every one of the R rows is computed; rows past `m` read zeros and store to a scratch row,
// so one instantiation per vector count serves every tile.
struct IndirectTile {
  int64_t ntaps = 0, cin = 0;
  const float* const* a = nullptr;
  const float* b = nullptr;
  int64_t b_panel = 0;        // floats from one packed B panel to the next (wide tile)
  float* const* c = nullptr;  // R row pointers
  int64_t c_col = 0;          // column offset of this panel, added to every row pointer
  int m = 0, n = 0;           // live rows (for the activation) and live columns
  const float* bias = nullptr;
  Activation act = Activation::none;
  float act_param = 0.0f;
  // When set, `a` holds just R pointers, one per row (where the row's first tap starts), and tap
  // t of row r starts at a[r] + tap_off[t]: for tiles whose pixels have the same taps inside the
  // image, this replaces the R × ntaps pointer table that otherwise costs a sixth of a first
  // layer's time.
  const int64_t* tap_off = nullptr;
  // When set, tap t reads B from b + tap_b[t] (run r of B starts at r * cin * NR floats): the
  // tile then reads only those taps of B, skipping the ones that fall on padding for all its rows.
  // Unset, the taps read B one after another.
  const int64_t* tap_b = nullptr;
  bool accumulate = false;    // add the product to what the C rows hold (no bias or activation then)
};

template <Activation kind>
void activate_rows(const IndirectTile& t) {
  const VecF pv = set1(t.act_param);
  for (int r = 0; r < t.m; ++r) {
    float* row = t.c[r] + t.c_col;
    int j = 0;
    for (; j + W <= t.n; j += W) store(row + j, activation_forward<kind>(load(row + j), pv));
    if (j < t.n) store_partial(row + j, activation_forward<kind>(load_partial(row + j, t.n - j), pv), t.n - j);
  }
}

template <int R, int V, int kCin>
void indirect_tile(const IndirectTile& t) {
  VecF acc[R][V];
#pragma GCC unroll 64
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) acc[r][v] = set1(0.0f);

  // Start fetching the output rows now: they are written only after the tap loop, and in a large
  // output they have long left the caches (the GEMM microkernel does the same with its C tile).
  // Not for fixed short runs (first layers): their tap loop is too short for the lines to arrive
  // much before the stores, and the prefetches measured 5-10% slower there.
  if constexpr (kCin == 0) {
#pragma GCC unroll 64
    for (int r = 0; r < R; ++r) {
      __builtin_prefetch(t.c[r] + t.c_col, 1);
      __builtin_prefetch(t.c[r] + t.c_col + V * W - 1, 1);
    }
  }
  const float* b = t.b;
  // One step of the run: NR columns of B against one float of each row.
  const auto step = [&](const float* const* rows, int64_t ch) __attribute__((always_inline)) {
    VecF bv[V];
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) bv[v] = load(b + (v / kNV) * t.b_panel + (v % kNV) * W);
#pragma GCC unroll 64
    for (int r = 0; r < R; ++r) {
      const VecF av = set1(rows[r][ch]);
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) acc[r][v] = fmadd(av, bv[v], acc[r][v]);
    }
    b += kNR;
  };
  for (int64_t tap = 0; tap < t.ntaps; ++tap) {
    const float* rows[R];
#pragma GCC unroll 64
    for (int r = 0; r < R; ++r) rows[r] = t.tap_off ? t.a[r] + t.tap_off[tap] : t.a[tap * R + r];
    if (t.tap_b) b = t.b + t.tap_b[tap];
    if constexpr (kCin > 0) {
#pragma GCC unroll 16
      for (int ch = 0; ch < kCin; ++ch) step(rows, ch);
    } else {
      // Not unrolled: an unrolled copy made GCC spill row pointers and B vectors to the stack.
#pragma GCC unroll 1
      for (int64_t ch = 0; ch < t.cin; ++ch) step(rows, ch);
    }
  }

  const int last_w = t.n - (V - 1) * W;
  VecF bias[V];
  if (t.bias) {
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) bias[v] = ukernel::load_w(t.bias + v * W, v == V - 1 ? last_w : W);
  }
#pragma GCC unroll 64
  for (int r = 0; r < R; ++r) {
    float* row = t.c[r] + t.c_col;
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      VecF x = acc[r][v];
      if (t.accumulate) x = x + ukernel::load_w(row + v * W, v == V - 1 ? last_w : W);
      if (t.bias) x = x + bias[v];
      ukernel::store_w(row + v * W, x, v == V - 1 ? last_w : W);
    }
  }
  if (t.act != Activation::none) {
    with_activation(t.act, [&](auto k) {
      if constexpr (decltype(k)::value != Activation::none) activate_rows<decltype(k)::value>(t);
    });
  }
}

using IndirectFn = void (*)(const IndirectTile&);

template <int R, int... Vs, int... Cs>
constexpr auto make_indirect_table(std::integer_sequence<int, Vs...>, std::integer_sequence<int, Cs...>) {
  struct Table { IndirectFn fn[sizeof...(Vs)][sizeof...(Cs)]; } table{};
  auto row = [&](auto v) {
    int i = 0;
    ((table.fn[decltype(v)::value][i++] = &indirect_tile<R, decltype(v)::value + 1, Cs>), ...);
  };
  (row(std::integral_constant<int, Vs>{}), ...);
  return table;
}

// rows: as tile_shape chose them for t.n columns and runs of t.cin floats.
void run_indirect(const IndirectTile& t, int rows) {
  static const auto narrow = make_indirect_table<kConvMR>(std::make_integer_sequence<int, kNV>{}, FixedLens{});
  static const auto tall = make_indirect_table<kFixedRunMR>(std::make_integer_sequence<int, kNV>{}, FixedLens{});
  static const auto wide = make_indirect_table<kWideMR>(std::make_integer_sequence<int, kMaxV>{}, FixedLens{});
  const int v = (t.n + W - 1) / W;
  const int cv = fixed_len_index(t.cin);
  if (rows == kWideMR && kHasWideTile) wide.fn[v - 1][cv](t);
  else if (rows == kFixedRunMR && cv > 0) tall.fn[v - 1][cv](t);
  else narrow.fn[v - 1][cv](t);
}

// Rows per tile and NR panels per tile for an indirect GEMM with n output columns, reading its
// A rows in runs of run_len floats.
void tile_shape(int64_t n, int64_t run_len, int& rows, int& panels) {
  const bool wide = kHasWideTile && n > kNR;
  rows = wide ? kWideMR : fixed_len_index(run_len) > 0 ? kFixedRunMR : kConvMR;
  panels = wide ? 2 : 1;
}

constexpr int kMaxTileRows = std::max(kConvMR, std::max(kFixedRunMR, kWideMR));

// First layers: C_in up to this gets the direct forms of backward-input and backward-weight.
constexpr int kDirectMaxCin = 4;

// ---- geometry helpers -----------------------------------------------------------------------

// How the K = KH*KW*C_in depth of a pixel's patch is read: as `runs` pieces of `len` contiguous
// floats, each through one pointer. Normally one run per tap (C_in floats). When every
// horizontal tap of every output pixel lands inside the image (dilation_w 1, no left/right
// padding), the KW taps of a kernel row are KW*C_in consecutive floats of the input and also
// consecutive in K (HWIO), so they merge into one run: KW times fewer pointers to build and,
// for C_in = 1..4, runs long enough to keep the micro-tile busy.
struct RunPlan {
  int64_t runs, len;
  bool merged;
};

RunPlan plan_runs(const ConvShape& s) {
  const bool merge = s.dw == 1 && s.kw > 1 && s.pl == 0 && (s.ow - 1) * s.sw + s.kw <= s.w;
  return merge ? RunPlan{s.kh, s.kw * s.c, true} : RunPlan{s.kh * s.kw, s.c, false};
}

// For every output position (oh, ow) and run: the offset of its first float within one image,
// or -1 where the run falls on padding. Shared by all images.
std::vector<int64_t> run_offsets(const ConvShape& s, const RunPlan& plan) {
  // The offset splits into a row part and a column part, each computed once per (position, tap):
  // per pixel and run this is then an add, not two range checks and a multiply (which made the
  // table a fixed cost of 10 us per call on a 26x26 output).
  const int64_t jn = plan.merged ? 1 : s.kw;
  std::vector<int64_t> row(static_cast<size_t>(s.oh * s.kh)), col(static_cast<size_t>(s.ow * jn));
  for (int64_t y = 0; y < s.oh; ++y)
    for (int64_t i = 0; i < s.kh; ++i) {
      const int64_t ih = y * s.sh - s.pt + i * s.dh;
      row[y * s.kh + i] = ih >= 0 && ih < s.h ? ih * s.w * s.c : -1;
    }
  for (int64_t x = 0; x < s.ow; ++x)
    for (int64_t j = 0; j < jn; ++j) {
      const int64_t iw = x * s.sw - s.pl + j * s.dw;
      col[x * jn + j] = iw >= 0 && iw < s.w ? iw * s.c : -1;
    }
  std::vector<int64_t> off(static_cast<size_t>(s.oh * s.ow * plan.runs));
  int64_t* o = off.data();
  for (int64_t y = 0; y < s.oh; ++y)
    for (int64_t x = 0; x < s.ow; ++x)
      for (int64_t i = 0; i < s.kh; ++i) {
        const int64_t r = row[y * s.kh + i];
        for (int64_t j = 0; j < jn; ++j) {
          const int64_t c = col[x * jn + j];
          *o++ = r >= 0 && c >= 0 ? r + c : -1;
        }
      }
  return off;
}

int threads_for(double flops) {
  const int most = get_num_threads();
  return static_cast<int>(std::max<double>(1.0, std::min<double>(most, flops / kThreadFlops)));
}

// dst[0:n] += src[0:n].
void add_into(float* dst, const float* src, int64_t n) {
  if (n < W) {
    // First layers' runs (3 or 9 floats): a masked load and a masked store per run cost more
    // than these scalar adds (Zen 4 runs masked stores several times slower than plain ones).
    for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
    return;
  }
  int64_t i = 0;
  for (; i + W <= n; i += W) store(dst + i, load(dst + i) + load(src + i));
  if (i < n) store_partial(dst + i, load_partial(dst + i, int(n - i)) + load_partial(src + i, int(n - i)), int(n - i));
}

// ---- forward --------------------------------------------------------------------------------

// The pixels of one image whose patches have the same runs inside the image: the interior, each
// border strip, each corner. A tile whose pixels share a class reads just those runs, through one
// pointer per row: no FMA is spent on padding (8% of the FMAs of a 16x16 layer with padding 1,
// 28% of a 13x13 backward-input taken as a forward of an 11x11 gy), and no pointer table is built.
struct PixelClass {
  std::vector<int64_t> runs;     // the runs inside the image, ascending
  std::vector<int64_t> run_off;  // per listed run: floats from the first listed run's start
  std::vector<int64_t> b_off;    // per listed run: where its rows start in a B panel (empty: all runs)
  std::vector<int64_t> pixels;   // raster order within an image
  std::vector<int64_t> start;    // per pixel: where its first inside run starts, within its image
};

// For each output position along one axis: which set of kernel taps along that axis lands inside
// the input, as an id (positions with the same set share it; `count` ids in all).
std::vector<int32_t> axis_sets(int64_t out, int64_t k, int64_t stride, int64_t dil, int64_t pad, int64_t in,
                               int32_t& count) {
  std::vector<std::vector<bool>> sets;
  std::vector<int32_t> id(static_cast<size_t>(out));
  for (int64_t o = 0; o < out; ++o) {
    std::vector<bool> inside(static_cast<size_t>(k));
    for (int64_t i = 0; i < k; ++i) inside[i] = tap_inside(o, i, stride, pad, dil, in);
    const auto found = std::find(sets.begin(), sets.end(), inside);
    id[o] = static_cast<int32_t>(found - sets.begin());
    if (found == sets.end()) sets.push_back(std::move(inside));
  }
  count = static_cast<int32_t>(sets.size());
  return id;
}

// What every forward tile shares, prepared once per call: the packed weights, the run offsets of
// each output pixel, and the pixel classes.
struct ForwardPlan {
  const ConvShape& s;
  int64_t k, np;
  PackBuffer wpack;
  const float* bp = nullptr;
  RunPlan plan;
  std::vector<int64_t> off;
  std::vector<PixelClass> classes;
  std::vector<int32_t> class_of;  // per pixel of an image
  std::vector<int64_t> start;     // per pixel of an image: where its first inside run starts
  std::vector<float> zeros;
  int rows = 0, panels = 0;  // tile shape

  ForwardPlan(const ConvShape& shape, const float* w) : s(shape), k(s.kh * s.kw * s.c), np(ceil_div(s.co, kNR)) {
    float* packed = wpack.get(std::max<int64_t>(np * k * kNR, 1));
    if (k > 0) pack_b(w, s.co, 1, k, s.co, packed);
    bp = packed;
    plan = plan_runs(s);
    off = run_offsets(s, plan);
    zeros.assign(static_cast<size_t>(std::max<int64_t>(plan.len, 1)), 0.0f);
    // A pixel's inside runs are set by which kernel rows land inside the image at its output row
    // and which kernel columns at its column, so the class is that pair. A run's offset from the
    // pixel's first inside run depends only on the two taps: one list of offsets serves a class.
    const int64_t ohw = s.oh * s.ow;
    int32_t row_sets = 0, col_sets = 0;
    const std::vector<int32_t> row_set = axis_sets(s.oh, s.kh, s.sh, s.dh, s.pt, s.h, row_sets);
    const std::vector<int32_t> col_set = axis_sets(s.ow, s.kw, s.sw, s.dw, s.pl, s.w, col_sets);
    std::vector<int32_t> class_of_pair(static_cast<size_t>(row_sets * col_sets), -1);
    class_of.resize(static_cast<size_t>(ohw));
    for (int64_t y = 0; y < s.oh; ++y)
      for (int64_t x = 0; x < s.ow; ++x) {
        const int64_t pix = y * s.ow + x;
        int32_t& id = class_of_pair[row_set[y] * col_sets + col_set[x]];
        if (id < 0) {
          id = static_cast<int32_t>(classes.size());
          PixelClass& c = classes.emplace_back();
          const int64_t* o = off.data() + pix * plan.runs;
          for (int64_t tp = 0; tp < plan.runs; ++tp)
            if (o[tp] >= 0) c.runs.push_back(tp);
          for (int64_t tp : c.runs) c.run_off.push_back(o[tp] - o[c.runs[0]]);
          if (static_cast<int64_t>(c.runs.size()) < plan.runs)
            for (int64_t tp : c.runs) c.b_off.push_back(tp * plan.len * kNR);
        }
        class_of[pix] = id;
        classes[id].pixels.push_back(pix);
      }
    start.resize(static_cast<size_t>(ohw));
    for (int64_t pix = 0; pix < ohw; ++pix) {
      PixelClass& c = classes[class_of[pix]];
      start[pix] = c.runs.empty() ? 0 : off[pix * plan.runs + c.runs[0]];
      c.start.push_back(start[pix]);
    }
    tile_shape(s.co, plan.len, rows, panels);
  }

  double tile_flops() const { return 2.0 * rows * double(std::max<int64_t>(k, 1)) * double(s.co); }
};

// One thread's forward tiles: its pointer table and scratch row. Tiles take their pixels either
//   - in raster order (image, row, column), for the fused max-pool, whose bands need whole rows;
//     a tile of one class skips the padding, others read zeros for it;
//   - or from one class, over every image: conv_forward's tiles, which then all skip the padding.
// Both carry their place on from one tile to the next (a division per tile was a tenth of a first
// layer's time), and build a one-class tile in one short loop: a first layer's tile has only
// 9-27 FMAs per row to hide its setup behind.
class ForwardWorker {
 public:
  explicit ForwardWorker(const ForwardPlan& p)
      : p_(p), a_(static_cast<size_t>(p.plan.runs * p.rows)), scratch_(static_cast<size_t>((p.np + 1) * kNR)) {
    t_.cin = p.plan.len;
    t_.a = a_.data();
    t_.b_panel = p.k * kNR;
    t_.c = crow_;
    if (p.classes.size() == 1) set_class(0);  // for good: no tile ever has another
  }

  // Pixels m0 .. m0 + live - 1 in raster order (live <= p.rows) of act(conv + bias), pixel
  // m0 + r stored at dst + r * s.co.
  void tile(const float* x, int64_t m0, int live, float* dst, const float* bias, Activation act) {
    const ConvShape& s = p_.s;
    const int64_t ohw = s.oh * s.ow, hwc = s.h * s.w * s.c;
    if (m0 != next_m_) img_ = m0 / ohw, pix_ = m0 % ohw;
    next_m_ = m0 + live, next_i_ = -1;
    if (p_.classes.size() > 1) return tile_of_classes(x, live, dst, bias, act);
    // No padding anywhere (first layers, valid convolutions): every tile is of the one class,
    // whose taps the constructor set. A first layer's tile has 9-27 FMAs per row to hide this
    // setup behind: every load and store here showed in its time.
    const int64_t* start = p_.start.data();
    int64_t img = img_, pix = pix_;
    const float* base = x + img * hwc;
    for (int r = 0; r < live; ++r) {
      a_[r] = base + start[pix];
      crow_[r] = dst + r * s.co;
      if (++pix == ohw) pix = 0, ++img, base += hwc;
    }
    img_ = img, pix_ = pix;
    for (int r = live; r < p_.rows; ++r) a_[r] = a_[live - 1], crow_[r] = scratch_.data();
    run_panels(live, bias, act);
  }

  // tile() where the plan has several classes: a tile of one class skips the padding.
  __attribute__((noinline)) void tile_of_classes(const float* x, int live, float* dst, const float* bias,
                                                 Activation act) {
    const ConvShape& s = p_.s;
    const int64_t ohw = s.oh * s.ow, hwc = s.h * s.w * s.c;
    const int64_t* start = p_.start.data();
    const int32_t* class_of = p_.class_of.data();
    const int32_t cls = class_of[pix_];
    bool one_class = true;
    int64_t img = img_, pix = pix_;
    const float* base = x + img * hwc;
    for (int r = 0; r < live; ++r) {
      one_class &= class_of[pix] == cls;
      a_[r] = base + start[pix];
      crow_[r] = dst + r * s.co;
      img_of_[r] = img, pix_of_[r] = pix;
      if (++pix == ohw) pix = 0, ++img, base += hwc;
    }
    img_ = img, pix_ = pix;
    if (one_class) run_class(cls, live, bias, act);
    else run_table(x, live, bias, act);
  }

  // Pixels i0 .. i0 + live - 1 of class cls, counted over its pixels in every image (image
  // i / size, pixel pixels[i % size]), each stored at its place in y (N, OH, OW, C_out).
  void tile_in_class(const float* x, int32_t cls, int64_t i0, int live, float* y, const float* bias, Activation act) {
    const ConvShape& s = p_.s;
    const PixelClass& pc = p_.classes[cls];
    const int64_t ohw = s.oh * s.ow, hwc = s.h * s.w * s.c, size = static_cast<int64_t>(pc.pixels.size());
    if (cls != cls_ || i0 != next_i_) cls_ = cls, img_ = i0 / size, pix_ = i0 % size;
    next_i_ = i0 + live, next_m_ = -1;
    const int64_t *pixels = pc.pixels.data(), *start = pc.start.data();
    int64_t img = img_, q = pix_;
    const float* xb = x + img * hwc;
    float* yb = y + img * ohw * s.co;
    for (int r = 0; r < live; ++r) {
      a_[r] = xb + start[q];
      crow_[r] = yb + pixels[q] * s.co;
      if (++q == size) q = 0, ++img, xb += hwc, yb += ohw * s.co;
    }
    img_ = img, pix_ = q;
    run_class(cls, live, bias, act);
  }

 private:
  // The tile over rows whose a_[r] point at their first inside run, all of class cls.
  void run_class(int32_t cls, int live, const float* bias, Activation act) {
    set_class(cls);
    for (int r = live; r < p_.rows; ++r) a_[r] = a_[live - 1], crow_[r] = scratch_.data();
    run_panels(live, bias, act);
  }

  // The tile reads class cls's runs.
  void set_class(int32_t cls) {
    const PixelClass& pc = p_.classes[cls];
    t_.ntaps = static_cast<int64_t>(pc.runs.size());
    t_.tap_off = pc.run_off.data();
    t_.tap_b = pc.b_off.empty() ? nullptr : pc.b_off.data();
  }

  // The tile over pixels (img_of_[r], pix_of_[r]) of several classes: a pointer per row and run,
  // with runs on the padding reading zeros.
  void run_table(const float* x, int live, const float* bias, Activation act) {
    const ConvShape& s = p_.s;
    const int R = p_.rows;
    const int64_t hwc = s.h * s.w * s.c, runs = p_.plan.runs;
    t_.ntaps = runs;
    t_.tap_off = nullptr;
    t_.tap_b = nullptr;
    for (int r = 0; r < live; ++r) {
      const int64_t* o = p_.off.data() + pix_of_[r] * runs;
      const float* base = x + img_of_[r] * hwc;
      for (int64_t tp = 0; tp < runs; ++tp) a_[tp * R + r] = o[tp] >= 0 ? base + o[tp] : p_.zeros.data();
    }
    // Idle rows read zeros and store to scratch.
    for (int r = live; r < R; ++r) {
      for (int64_t tp = 0; tp < runs; ++tp) a_[tp * R + r] = p_.zeros.data();
      crow_[r] = scratch_.data();
    }
    run_panels(live, bias, act);
  }

  void run_panels(int live, const float* bias, Activation act) {
    t_.m = live;
    t_.act = act;
    for (int64_t jp = 0; jp < p_.np; jp += p_.panels) {
      t_.b = p_.bp + jp * p_.k * kNR;
      t_.c_col = jp * kNR;
      t_.n = static_cast<int>(std::min<int64_t>(p_.panels * kNR, p_.s.co - jp * kNR));
      t_.bias = bias ? bias + jp * kNR : nullptr;
      run_indirect(t_, p_.rows);
    }
  }

  const ForwardPlan& p_;
  std::vector<const float*> a_;
  std::vector<float> scratch_;
  float* crow_[kMaxTileRows];
  int64_t img_of_[kMaxTileRows], pix_of_[kMaxTileRows];
  IndirectTile t_;
  // The pixel after the last tile: its m (raster order) or class and index in it, and its image
  // and place (raster order: the pixel in the image; in a class: the index in its pixels).
  int64_t next_m_ = -1, next_i_ = -1, img_ = 0, pix_ = 0;
  int32_t cls_ = -1;
};

void conv_forward(const ConvShape& s, const float* x, const float* w, const float* bias, Activation act,
                  float* y) {
  const int64_t m_total = s.n * s.oh * s.ow;
  if (m_total == 0 || s.co == 0) return;
  const ForwardPlan plan(s, w);
  const int R = plan.rows;
  const int64_t grain = std::max<int64_t>(1, static_cast<int64_t>(kThreadFlops / plan.tile_flops()));
  if (plan.classes.size() == 1) {
    // No padding: raster order, whose tiles run on across rows and images with no class ends.
    parallel_for(ceil_div(m_total, R), grain, [&](int64_t g0, int64_t g1) {
      ForwardWorker worker(plan);
      for (int64_t g = g0; g < g1; ++g)
        worker.tile(x, g * R, static_cast<int>(std::min<int64_t>(R, m_total - g * R)), y + g * R * s.co, bias, act);
    });
    return;
  }
  // Tiles never mix classes: each class ends in its own partial tile.
  std::vector<int64_t> first_tile(plan.classes.size() + 1, 0);
  for (size_t c = 0; c < plan.classes.size(); ++c)
    first_tile[c + 1] = first_tile[c] + ceil_div(s.n * static_cast<int64_t>(plan.classes[c].pixels.size()), R);
  parallel_for(first_tile.back(), grain, [&](int64_t g0, int64_t g1) {
    ForwardWorker worker(plan);
    int32_t c = 0;
    for (int64_t g = g0; g < g1; ++g) {
      while (first_tile[c + 1] <= g) ++c;
      const int64_t i0 = (g - first_tile[c]) * R, count = s.n * static_cast<int64_t>(plan.classes[c].pixels.size());
      worker.tile_in_class(x, c, i0, static_cast<int>(std::min<int64_t>(R, count - i0)), y, bias, act);
    }
  });
}

// Forward followed by max pooling over non-overlapping pool×pool windows (stride = window, no
// padding, PyTorch's floor rule): y (N, OH/pool, OW/pool, C_out) and indices as max_pool2d gives
// them (positions in the conv output's OH×OW plane). The conv output never goes to memory: each
// band of `pool` conv rows is computed into a per-thread buffer (a few KiB, still in L1/L2 when
// it is pooled), which on a first layer saves writing and re-reading the largest tensor of the
// network. The bias is added in the tiles (so the pooled values and their ties are exactly those
// of max_pool2d on the conv output); the activation is applied to the pooled values: the caller
// guarantees it is non-decreasing, so it commutes with max.
void conv_forward_max_pool(const ConvShape& s, const float* x, const float* w, const float* bias, Activation act,
                           float act_param, int64_t pool, float* y, int32_t* indices) {
  const int64_t ph = s.oh / pool, pw = s.ow / pool;
  if (s.n * ph * pw == 0 || s.co == 0) return;
  const ForwardPlan plan(s, w);
  const int R = plan.rows;
  // Pooled rows per band: as many as keep the band's conv rows within kPoolBandBytes.
  const int64_t row_bytes = pool * s.ow * s.co * int64_t(sizeof(float));
  const int64_t band_rows = std::clamp<int64_t>(kPoolBandBytes / row_bytes, 1, ph);
  const int64_t bands_per_image = ceil_div(ph, band_rows), bands = s.n * bands_per_image;
  const int64_t max_band = band_rows * pool * s.ow;  // conv pixels in a full band
  const double band_flops = plan.tile_flops() * double(ceil_div(max_band, R));
  const int64_t grain = std::max<int64_t>(1, static_cast<int64_t>(kThreadFlops / band_flops));
  parallel_for(bands, grain, [&](int64_t b0, int64_t b1) {
    ForwardWorker worker(plan);
    // The band's conv rows, with room for the whole-vector stores of a partial last tile.
    std::vector<float> rows(static_cast<size_t>((ceil_div(max_band, R) * R + 1) * s.co));
    for (int64_t bd = b0; bd < b1; ++bd) {
      const int64_t img = bd / bands_per_image, py0 = (bd % bands_per_image) * band_rows;
      const int64_t npy = std::min(band_rows, ph - py0), band = npy * pool * s.ow;
      const int64_t m_band = img * s.oh * s.ow + py0 * pool * s.ow;
      for (int64_t m = 0; m < band; m += R)
        worker.tile(x, m_band + m, static_cast<int>(std::min<int64_t>(R, band - m)), rows.data() + m * s.co,
                    bias, Activation::none);
      const PoolShape window{1, npy * pool, s.ow, s.co, npy, pw, pool, pool, pool, pool, 0, 0};
      float* yb = y + (img * ph + py0) * pw * s.co;
      int32_t* ib = indices + (img * ph + py0) * pw * s.co;
      pool_kernels.max_forward(window, rows.data(), yb, ib);
      // The band's indices count from its first conv row; in the conv output's plane that row
      // is py0 * pool.
      const int32_t shift = static_cast<int32_t>(py0 * pool * s.ow);
      if (shift != 0)
        for (int64_t i = 0; i < npy * pw * s.co; ++i) ib[i] += shift;
      if (act != Activation::none) {
        with_activation(act, [&](auto kind) {
          if constexpr (decltype(kind)::value != Activation::none)
            ukernel::activate_tile<decltype(kind)::value>(yb, s.co, static_cast<int>(npy * pw), static_cast<int>(s.co),
                                                          act_param);
        });
      }
    }
  });
}

// ---- backward-input -------------------------------------------------------------------------

// Gather form, for stride 1 and C_in <= kDirectMaxCin (first layers): every gx pixel sums its
// taps' dot products over C_out, gx[p, ci] = Σ_tap Σ_co gy[p - tap, co] · w[tap, ci, co], with C_out
// along the vector lanes. A tile of R consecutive pixels keeps R*C_in accumulators, and one
// transposing reduction (sum_lanes) turns each W of them into W consecutive output floats (a
// pixel's channels are consecutive, and so are a row's pixels). The scatter form spends 16 FMA
// lanes on K = 9 for C_in = 1 and then adds each patch into gx with read-modify-writes; here no
// lane is idle for C_out a multiple of W, and each gx float is written once.
//
// gy is read from a copy of a band of its rows, zero-bordered, split into planes of W channels:
//   - a pixel's taps that fall outside gy read zeros, so border pixels need no tests;
//   - a tile's R pixels are R vectors W floats apart, read at fixed displacements from one
//     pointer (with C_out floats between pixels, GCC kept R pointers and spilled them);
//   - the last plane's lanes past C_out are zeros, so no load needs a mask;
//   - the tiles run on across the copy's rows, the KW-1 border columns between two rows
//     included: their outputs are dropped, and no row is left with a tail of smaller tiles.
struct GatherTile {
  const float* g;        // the copy's first plane at the tile's first pixel
  const int64_t* off;    // per (tap, plane) step: floats from there to the first vector it reads
  int64_t steps;         // taps × planes
  const float* w;        // per step, C_in vectors of W weights (packed, zero past C_out)
  float* out;            // R × C_in floats
};

template <int R, int kCin>
void gather_tile(const GatherTile& t) {
  constexpr int kAcc = R * kCin, kSlots = (kAcc + W - 1) / W * W;
  VecF acc[kSlots];  // the slots past kAcc stay zero: they pad the last reduction block
#pragma GCC unroll 64
  for (int i = 0; i < kSlots; ++i) acc[i] = set1(0.0f);
  const float* w = t.w;
  for (int64_t step = 0; step < t.steps; ++step, w += kCin * W) {
    const float* g = t.g + t.off[step];
    VecF wv[kCin];
#pragma GCC unroll 4
    for (int ci = 0; ci < kCin; ++ci) wv[ci] = load(w + ci * W);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      VecF gv = load(g + r * W);
#if defined(__x86_64__)
      // One load per vector: left alone, GCC folds it into each of the C_in FMAs, tripling the loads.
      if constexpr (kCin > 1) asm("" : "+v"(gv.v));
#endif
#pragma GCC unroll 4
      for (int ci = 0; ci < kCin; ++ci) acc[r * kCin + ci] = fmadd(gv, wv[ci], acc[r * kCin + ci]);
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < kAcc; i += W) ukernel::store_w(t.out + i, sum_lanes(acc + i), std::min(W, kAcc - i));
}

// Accumulators of a gather tile: 24 of the 32 zmm registers (the rest hold C_in weight vectors and
// a gy vector), 12 of AVX2's 16. R is the largest power of two with R * C_in within that.
constexpr int kGatherAcc = kVecWidth >= 16 ? 24 : 12;

constexpr int gather_rows(int cin) {
  int r = 1;
  while (2 * r * cin <= kGatherAcc) r *= 2;
  return r;
}

using GatherFn = void (*)(const GatherTile&);

template <int... Cs>
constexpr auto make_gather_table(std::integer_sequence<int, Cs...>) {
  struct Table { GatherFn fn[sizeof...(Cs)]; } table{{&gather_tile<gather_rows(Cs + 1), Cs + 1>...}};
  return table;
}

// Bytes of the band copy: with the band's outputs it stays in a core's L2.
constexpr int64_t kGatherBandBytes = 256 << 10;

// What every gather unit (a band of one image's gx rows) shares, prepared once per call.
struct GatherPlan {
  GatherFn tile;
  int rows;                         // pixels per tile
  int64_t ext_h, ext_w, top, left;  // copy row b, column q hold gy pixel (ih0 + top + b, left + q)
  int64_t wb, planes, band, bands, plane;
  int64_t q0, q1;                   // the copy's columns that gy fills
  std::vector<int64_t> off;         // per (tap, plane) step, as GatherTile::off
  std::vector<float> wpack;         // per step, C_in vectors of W weights

  GatherPlan(const ConvShape& s, const float* w) {
    static const auto table = make_gather_table(std::make_integer_sequence<int, kDirectMaxCin>{});
    tile = table.fn[s.c - 1];
    rows = gather_rows(static_cast<int>(s.c));
    // The pixel that the last tap (KH-1, KW-1) of gx pixel (ih0, 0) reads is the copy's corner.
    ext_h = (s.kh - 1) * s.dh;
    ext_w = (s.kw - 1) * s.dw;
    top = s.pt - ext_h;
    left = s.pl - ext_w;
    wb = s.w + ext_w;
    planes = ceil_div(s.co, W);
    band = std::clamp<int64_t>(kGatherBandBytes / (4 * wb * planes * W) - ext_h, 1, s.h);
    bands = ceil_div(s.h, band);
    plane = ((band + ext_h) * wb + rows) * W;  // `rows` zero pixels of slack at the end
    q0 = std::max<int64_t>(0, -left);
    q1 = std::min(wb, s.ow - left);
    off.resize(static_cast<size_t>(s.kh * s.kw * planes));
    wpack.assign(off.size() * s.c * W, 0.0f);
    for (int64_t i = 0; i < s.kh; ++i)
      for (int64_t j = 0; j < s.kw; ++j)
        for (int64_t p = 0; p < planes; ++p) {
          const int64_t step = (i * s.kw + j) * planes + p;
          off[step] = p * plane + ((ext_h - i * s.dh) * wb + ext_w - j * s.dw) * W;
          for (int64_t ci = 0; ci < s.c; ++ci)
            for (int64_t l = 0; l < W && p * W + l < s.co; ++l)
              wpack[(step * s.c + ci) * W + l] = w[((i * s.kw + j) * s.c + ci) * s.co + p * W + l];
        }
  }
};

// One thread's gather units: its band copy and output rows.
class GatherWorker {
 public:
  // The copy is 64-byte aligned, as every plane and pixel in it then is: a tile's loads never
  // straddle two cache lines (with malloc's 16-byte alignment they all did, at 60% of the speed).
  GatherWorker(const ConvShape& s, const GatherPlan& plan)
      : s_(s), plan_(plan), copy_(copy_buffer_.get(plan.planes * plan.plane)),
        out_(static_cast<size_t>((plan.band * plan.wb + plan.rows) * s.c)) {
    std::memset(copy_, 0, static_cast<size_t>(plan.planes * plan.plane) * sizeof(float));
  }

  // gx rows of band `band` of image img. next_img/next_band: the unit this thread runs next (or
  // next_img < 0), whose gy rows the tiles prefetch into L2 as they go: the copy then finds them
  // there instead of stalling on every line (a third of the pass when measured without).
  void run(const float* gy, float* gx, int64_t img, int64_t band, int64_t next_img, int64_t next_band) {
    const GatherPlan& p = plan_;
    const int64_t ih0 = band * p.band, nb = std::min(s_.h, ih0 + p.band) - ih0, co = s_.co;
    for (int64_t b = 0; b < nb + p.ext_h; ++b) {
      const int64_t oh = ih0 + p.top + b;
      if (oh < 0 || oh >= s_.oh || p.q0 >= p.q1) {
        for (int64_t pl = 0; pl < p.planes; ++pl)
          std::memset(copy_ + pl * p.plane + b * p.wb * W, 0, static_cast<size_t>(p.wb * W) * sizeof(float));
        continue;
      }
      const float* src = gy + ((img * s_.oh + oh) * s_.ow + p.left) * co;
      for (int64_t pl = 0; pl < p.planes; ++pl) {
        float* dst = copy_ + pl * p.plane + b * p.wb * W;
        if (co - pl * W >= W) {
          for (int64_t q = p.q0; q < p.q1; ++q) store(dst + q * W, load(src + q * co + pl * W));
        } else {
          const int n = static_cast<int>(co - pl * W);
          for (int64_t q = p.q0; q < p.q1; ++q) store(dst + q * W, load_partial(src + q * co + pl * W, n));
        }
      }
    }
    // Tiles over positions b * wb + q of the band's gx rows, up to the last real pixel.
    const int64_t end = (nb - 1) * p.wb + s_.w;
    const char* pf = nullptr;
    int64_t pf_lines = 0, pf_per_tile = 0;
    if (next_img >= 0) {
      const int64_t first = next_band * p.band + p.top;
      const int64_t lo = std::clamp<int64_t>(first, 0, s_.oh), hi = std::clamp<int64_t>(first + p.band + p.ext_h, 0, s_.oh);
      pf = reinterpret_cast<const char*>(gy + (next_img * s_.oh + lo) * s_.ow * co);
      pf_lines = (hi - lo) * s_.ow * co * 4 / 64;
      pf_per_tile = ceil_div(pf_lines, ceil_div(end, p.rows));
    }
    GatherTile t;
    t.off = p.off.data();
    t.steps = static_cast<int64_t>(p.off.size());
    t.w = p.wpack.data();
    for (int64_t pos = 0; pos < end; pos += p.rows) {
      for (int64_t l = 0; l < pf_per_tile && pf_lines > 0; ++l, --pf_lines, pf += 64) __builtin_prefetch(pf, 0, 2);
      t.g = copy_ + pos * W;
      t.out = out_.data() + pos * s_.c;
      p.tile(t);
    }
    for (int64_t b = 0; b < nb; ++b)
      std::memcpy(gx + ((img * s_.h + ih0 + b) * s_.w) * s_.c, out_.data() + b * p.wb * s_.c,
                  static_cast<size_t>(s_.w * s_.c) * sizeof(float));
  }

 private:
  const ConvShape& s_;
  const GatherPlan& plan_;
  PackBuffer copy_buffer_;
  float* copy_;
  std::vector<float> out_;
};

void backward_input_gather(const ConvShape& s, const float* gy, const float* w, float* gx) {
  const GatherPlan plan(s, w);
  const double unit_flops = 2.0 * double(plan.band * s.w) * double(s.kh * s.kw * s.c * s.co);
  const int64_t grain = std::max<int64_t>(1, static_cast<int64_t>(kThreadFlops / unit_flops));
  parallel_for(s.n * plan.bands, grain, [&](int64_t u0, int64_t u1) {
    GatherWorker worker(s, plan);
    for (int64_t u = u0; u < u1; ++u) {
      const bool last = u + 1 == u1;
      worker.run(gy, gx, u / plan.bands, u % plan.bands, last ? -1 : (u + 1) / plan.bands, (u + 1) % plan.bands);
    }
  });
}


// Scatter form, for small C_in: patch gradients P (pixels × K) = gy · wᵀ in row tiles, each added
// into gx tap by tap right away: from the registers when runs are whole panels long, else from
// a tile buffer still in L1. Threads take whole images, so no two threads ever add into the same
// gx pixel; within a thread the rows of a tile add in order, so overlapping patches are summed.
void backward_input_scatter(const ConvShape& s, const float* gy, const float* w, float* gx) {
  const int64_t k = s.kh * s.kw * s.c, ohw = s.oh * s.ow, hwc = s.h * s.w * s.c;
  const int64_t np = ceil_div(k, kNR), ldp = np * kNR;
  PackBuffer wpack;
  float* bp = wpack.get(std::max<int64_t>(np * s.co * kNR, 1));
  // B = wᵀ (C_out × K): element (co, kk) at w[kk * C_out + co], a column-major view.
  if (s.co > 0) pack_b(w, 1, s.co, s.co, k, bp);
  const RunPlan plan = plan_runs(s);
  const std::vector<int64_t> off = run_offsets(s, plan);
  const double image_flops = 2.0 * double(ohw) * double(k) * double(std::max<int64_t>(s.co, 1));
  const int64_t grain = std::max<int64_t>(1, static_cast<int64_t>(kThreadFlops / std::max(image_flops, 1.0)));

  if (plan.len % kNR == 0) {
    // Every NR-column panel of P lies inside one run, so a row's panel is NR consecutive floats
    // of gx: the indirect tile adds it there straight from its registers (per-row C pointers),
    // with no tile buffer and no second pass.
    parallel_for(s.n, grain, [&](int64_t n0, int64_t n1) {
      const std::vector<float> zeros(static_cast<size_t>(s.co), 0.0f);
      std::vector<float> scratch(static_cast<size_t>(kNR));
      const float* a[kConvMR];
      float* crow[kConvMR];
      const int64_t* orow[kConvMR];
      float* gxrow[kConvMR];
      IndirectTile t;
      t.ntaps = 1;
      t.cin = s.co;
      t.a = a;
      t.c = crow;
      t.accumulate = true;
      int64_t img = n0, pix = 0;  // of the tile's next row
      for (int64_t m0 = n0 * ohw; m0 < n1 * ohw; m0 += kConvMR) {
        const int live = static_cast<int>(std::min<int64_t>(kConvMR, n1 * ohw - m0));
        for (int r = 0; r < kConvMR; ++r) {
          if (r < live) {
            if (pix == 0) std::memset(gx + img * hwc, 0, static_cast<size_t>(hwc) * sizeof(float));
            a[r] = gy + (m0 + r) * s.co;
            orow[r] = off.data() + pix * plan.runs;
            gxrow[r] = gx + img * hwc;
            if (++pix == ohw) pix = 0, ++img;
          } else {
            a[r] = zeros.data();
            orow[r] = nullptr;
          }
        }
        t.m = live;
        for (int64_t jp = 0; jp < np; ++jp) {
          const int64_t run = jp * kNR / plan.len, col = jp * kNR - run * plan.len;
          for (int r = 0; r < kConvMR; ++r)
            crow[r] = orow[r] && orow[r][run] >= 0 ? gxrow[r] + orow[r][run] + col : scratch.data();
          t.b = bp + jp * s.co * kNR;
          t.n = kNR;
          run_indirect(t, kConvMR);
        }
      }
    });
    return;
  }

  parallel_for(s.n, grain, [&](int64_t n0, int64_t n1) {
    PackBuffer tile_buffer;
    float* p = tile_buffer.get(kMR * ldp);
    // The thread's images are one run of gy rows: tiles run on across image boundaries, so only
    // the thread's last tile is partial (per image, 13x13 pixels would leave 7 of 12 rows idle
    // in every 15th tile). Each image's gx is zeroed just before its first row adds into it.
    const int64_t m_begin = n0 * ohw, m_end = n1 * ohw;
    int64_t img = n0, pix = 0;  // of the next row to add in
    std::memset(gx + n0 * hwc, 0, static_cast<size_t>(hwc) * sizeof(float));
    for (int64_t m0 = m_begin; m0 < m_end; m0 += kMR) {
      const int live = static_cast<int>(std::min<int64_t>(kMR, m_end - m0));
      MicroTile t;
      t.k = s.co;
      t.a = gy + m0 * s.co;
      t.ldb = kNR;
      t.b_padded = true;
      t.ldc = ldp;
      t.m = live;
      for (int64_t jp = 0; jp < np; ++jp) {
        t.b = bp + jp * s.co * kNR;
        t.c = p + jp * kNR;
        // Whole vectors: the tile buffer has room for them, the zero padding of B makes the extra
        // columns zeros, and a masked store per row (Zen 4: several times slower) is avoided.
        t.n = static_cast<int>(std::min<int64_t>(kNR, ceil_div(k - jp * kNR, W) * W));
        microkernel_strided_a(t, s.co, 1);
      }
      for (int r = 0; r < live; ++r) {
        float* gxi = gx + img * hwc;
        const int64_t* o = off.data() + pix * plan.runs;
        const float* pr = p + r * ldp;
        for (int64_t run = 0; run < plan.runs; ++run)
          if (o[run] >= 0) add_into(gxi + o[run], pr + run * plan.len, plan.len);
        if (++pix == ohw && ++img < n1) {
          pix = 0;
          std::memset(gx + img * hwc, 0, static_cast<size_t>(hwc) * sizeof(float));
        }
      }
    }
  });
}


// Phase form: input pixels with ih ≡ ph (mod sh), iw ≡ pw (mod sw) receive gradient only from the
// taps (i, j) with (ph + pt - i*dh) ≡ 0 (mod sh) and (pw + pl - j*dw) ≡ 0 (mod sw), each from the
// single output pixel oh = (ih + pt - i*dh) / sh, ow likewise. One indirect GEMM per phase:
// rows = that phase's input pixels, K = its taps × C_out, B = those taps of w transposed.
void backward_input_phases(const ConvShape& s, const float* gy, const float* w, float* gx) {
  const int64_t taps = s.kh * s.kw, ohw = s.oh * s.ow, np = ceil_div(s.c, kNR);
  // wt[tap][co][ci] = w[tap][ci][co]: each tap's K×N block of the transposed convolution.
  std::vector<float> wt(static_cast<size_t>(taps * s.co * s.c));
  for (int64_t tp = 0; tp < taps; ++tp)
    for (int64_t ci = 0; ci < s.c; ++ci)
      for (int64_t co = 0; co < s.co; ++co)
        wt[(tp * s.co + co) * s.c + ci] = w[(tp * s.c + ci) * s.co + co];
  const std::vector<float> zeros(static_cast<size_t>(std::max<int64_t>(s.co, 1)), 0.0f);
  PackBuffer wpack;
  std::vector<float> gathered;
  std::vector<int64_t> off;

  for (int64_t ph = 0; ph < s.sh; ++ph) {
    for (int64_t pw = 0; pw < s.sw; ++pw) {
      const int64_t hh = s.h > ph ? ceil_div(s.h - ph, s.sh) : 0;
      const int64_t ww = s.w > pw ? ceil_div(s.w - pw, s.sw) : 0;
      if (hh == 0 || ww == 0) continue;
      std::vector<std::pair<int64_t, int64_t>> valid;  // (i, j)
      for (int64_t i = 0; i < s.kh; ++i)
        for (int64_t j = 0; j < s.kw; ++j)
          if (pos_mod(ph + s.pt - i * s.dh, s.sh) == 0 && pos_mod(pw + s.pl - j * s.dw, s.sw) == 0)
            valid.emplace_back(i, j);
      const int64_t nt = static_cast<int64_t>(valid.size()), k = nt * s.co;
      float* bp = wpack.get(std::max<int64_t>(np * k * kNR, 1));
      if (k > 0) {
        gathered.resize(static_cast<size_t>(k * s.c));
        for (int64_t v = 0; v < nt; ++v) {
          const int64_t tp = valid[v].first * s.kw + valid[v].second;
          std::memcpy(gathered.data() + v * s.co * s.c, wt.data() + tp * s.co * s.c,
                      static_cast<size_t>(s.co * s.c) * sizeof(float));
        }
        pack_b(gathered.data(), s.c, 1, k, s.c, bp);
      }
      // For each pixel of the phase (row-major in hh × ww) and valid tap: the gy pixel's offset
      // within one image, or -1 where that output pixel lies outside gy.
      off.assign(static_cast<size_t>(hh * ww * std::max<int64_t>(nt, 1)), -1);
      for (int64_t a = 0; a < hh; ++a)
        for (int64_t b = 0; b < ww; ++b)
          for (int64_t v = 0; v < nt; ++v) {
            const int64_t ih = ph + a * s.sh, iw = pw + b * s.sw;
            const int64_t yn = ih + s.pt - valid[v].first * s.dh, xn = iw + s.pl - valid[v].second * s.dw;
            if (yn < 0 || xn < 0) continue;
            const int64_t oy = yn / s.sh, ox = xn / s.sw;
            if (oy < s.oh && ox < s.ow) off[(a * ww + b) * nt + v] = (oy * s.ow + ox) * s.co;
          }

      int R, PS;
      tile_shape(s.c, s.co, R, PS);
      const int64_t per_image = hh * ww, m_total = s.n * per_image, groups = ceil_div(m_total, R);
      const double group_flops = 2.0 * R * double(std::max<int64_t>(k, 1)) * double(s.c);
      const int64_t grain = std::max<int64_t>(1, static_cast<int64_t>(kThreadFlops / group_flops));
      parallel_for(groups, grain, [&](int64_t g0, int64_t g1) {
        std::vector<const float*> a(static_cast<size_t>(std::max<int64_t>(nt, 1) * R));
        std::vector<float> scratch(static_cast<size_t>((np + 1) * kNR));
        float* crow[kMaxTileRows];
        IndirectTile t;
        t.ntaps = nt;
        t.cin = s.co;
        t.a = a.data();
        t.b_panel = k * kNR;
        t.c = crow;
        for (int64_t g = g0; g < g1; ++g) {
          const int64_t m0 = g * R;
          const int live = static_cast<int>(std::min<int64_t>(R, m_total - m0));
          int64_t img = m0 / per_image, q = m0 % per_image;
          for (int r = 0; r < R; ++r) {
            if (r < live) {
              const float* base = gy + img * ohw * s.co;
              const int64_t* o = off.data() + q * nt;
              for (int64_t v = 0; v < nt; ++v) a[v * R + r] = o[v] >= 0 ? base + o[v] : zeros.data();
              const int64_t ih = ph + (q / ww) * s.sh, iw = pw + (q % ww) * s.sw;
              crow[r] = gx + ((img * s.h + ih) * s.w + iw) * s.c;
              if (++q == per_image) q = 0, ++img;
            } else {
              for (int64_t v = 0; v < nt; ++v) a[v * R + r] = zeros.data();
              crow[r] = scratch.data();
            }
          }
          t.m = live;
          for (int64_t jp = 0; jp < np; jp += PS) {
            t.b = bp + jp * k * kNR;
            t.c_col = jp * kNR;
            t.n = static_cast<int>(std::min<int64_t>(PS * kNR, s.c - jp * kNR));
            run_indirect(t, R);
          }
        }
      });
    }
  }
}

// At stride 1, gx is the forward convolution of gy with the kernel flipped and its two channel
// axes swapped (w'[i][j][co][ci] = w[KH-1-i][KW-1-j][ci][co]) and padding (K-1)*d - p before
// each axis: it runs on the forward's tiles, whose pixel classes skip every tap that falls
// outside gy. Needs that padding to be >= 0 (p within the kernel's reach).
bool backward_input_is_forward(const ConvShape& s) {
  return s.sh == 1 && s.sw == 1 && s.pt <= (s.kh - 1) * s.dh && s.pl <= (s.kw - 1) * s.dw;
}

void backward_input_forward(const ConvShape& s, const float* gy, const float* w, float* gx) {
  const ConvShape t{s.n, s.oh, s.ow, s.co, s.h, s.w, s.c, s.kh, s.kw, 1, 1, s.dh, s.dw,
                    (s.kh - 1) * s.dh - s.pt, (s.kw - 1) * s.dw - s.pl};
  std::vector<float> flipped(static_cast<size_t>(s.kh * s.kw * s.c * s.co));
  for (int64_t i = 0; i < s.kh; ++i)
    for (int64_t j = 0; j < s.kw; ++j) {
      const float* src = w + ((s.kh - 1 - i) * s.kw + (s.kw - 1 - j)) * s.c * s.co;
      float* dst = flipped.data() + (i * s.kw + j) * s.co * s.c;
      for (int64_t ci = 0; ci < s.c; ++ci)
        for (int64_t co = 0; co < s.co; ++co) dst[co * s.c + ci] = src[ci * s.co + co];
    }
  conv_forward(t, gy, flipped.data(), nullptr, Activation::none, gx);
}

// Useful fraction of the FMAs each backward-input form would run. The phase form computes every
// (input pixel, phase tap) pair, including those whose output pixel lies outside gy (a border
// that is large for small images: 44% useful for 6x6 -> 4x4), and fills C_in of each NR-wide
// panel. Run as a forward (stride 1), it skips the border, but each border class then has only a
// few pixels per image: its tiles take rows from several images and few taps. That is counted as
// no gain unless the interior (pixels with every tap inside gy) is at least kInteriorForForward of
// gx: at 11% (6x6 -> 4x4) the forward ran 25% slower than the scatter form, at 48% (13x13 ->
// 11x11) 6% faster. The scatter form wastes only the padding of K = KH*KW*C_in to whole panels,
// but adds its patch gradients into gx afterwards (counted as a tenth of its time: one vector add
// per C_in floats against 2*C_out flops each) and splits threads by images only.
constexpr double kScatterOverhead = 0.9;
constexpr double kInteriorForForward = 0.4;

bool use_scatter_backward_input(const ConvShape& s) {
  // Along one axis: (input position, tap) pairs with the output inside, pairs the phase form
  // computes, and input positions with every tap inside.
  const auto axis = [](int64_t in, int64_t out, int64_t k, int64_t st, int64_t d, int64_t p, double& valid,
                       double& computed, double& interior) {
    valid = computed = interior = 0;
    for (int64_t i = 0; i < k; ++i)
      for (int64_t o = 0; o < out; ++o) valid += tap_inside(o, i, st, p, d, in);
    for (int64_t ph = 0; ph < std::min(st, in); ++ph) {
      int64_t taps = 0;
      for (int64_t i = 0; i < k; ++i) taps += pos_mod(ph + p - i * d, st) == 0;
      computed += double(ceil_div(in - ph, st)) * double(taps);
    }
    for (int64_t x = 0; x < in; ++x) {
      bool all = true;
      for (int64_t i = 0; i < k; ++i) all &= x + p - i * d >= 0 && x + p - i * d < out * st;
      interior += all;
    }
  };
  double vh, ch, ih, vw, cw, iw;
  axis(s.h, s.oh, s.kh, s.sh, s.dh, s.pt, vh, ch, ih);
  axis(s.w, s.ow, s.kw, s.sw, s.dw, s.pl, vw, cw, iw);
  const bool forward = backward_input_is_forward(s) && ih * iw >= kInteriorForForward * double(s.h * s.w);
  const double border = forward || ch * cw == 0 ? 1.0 : vh * vw / (ch * cw);
  const double phase = border * double(s.c) / double(ceil_div(s.c, kNR) * kNR);
  const int64_t k = s.kh * s.kw * s.c;
  const double threads = get_num_threads();
  const double scatter = kScatterOverhead * double(k) / double(ceil_div(k, kNR) * kNR) *
                         std::min(1.0, double(s.n) / threads);
  return scatter > phase;
}

void conv_backward_input(const ConvShape& s, const float* gy, const float* w, float* gx) {
  if (s.n == 0 || s.h == 0 || s.w == 0 || s.c == 0) return;
  if (s.oh * s.ow == 0 || s.co == 0) {
    std::memset(gx, 0, static_cast<size_t>(s.n * s.h * s.w * s.c) * sizeof(float));
    return;
  }
  if (s.c <= kDirectMaxCin && s.sh == 1 && s.sw == 1) backward_input_gather(s, gy, w, gx);
  else if (use_scatter_backward_input(s)) backward_input_scatter(s, gy, w, gx);
  else if (backward_input_is_forward(s)) backward_input_forward(s, gy, w, gx);
  else backward_input_phases(s, gy, w, gx);
}

// ---- backward-bias --------------------------------------------------------------------------

// Column sums of rows [r0, r1) of gy for columns [c0, c0 + V*W), the last vector `last_w` wide,
// added into total (doubles). The V column vectors stay in registers over kBiasBlock rows, two
// rows at a time into separate accumulators (each add then waits on the one two rows back, not
// the last): with the sums in memory instead, every row waited on a store-to-load forward and
// the pass ran at a third of the cache's speed.
template <int V>
void bias_columns(const float* gy, int64_t co, int64_t r0, int64_t r1, int64_t c0, int last_w, double* total) {
  for (int64_t b0 = r0; b0 < r1; b0 += kBiasBlock) {
    const int64_t b1 = std::min(r1, b0 + kBiasBlock);
    VecF even[V], odd[V];
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) even[v] = odd[v] = set1(0.0f);
    const float* row = gy + b0 * co + c0;
    int64_t r = b0;
    for (; r + 2 <= b1; r += 2, row += 2 * co) {
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) {
        const int w = v == V - 1 ? last_w : W;
        even[v] = even[v] + ukernel::load_w(row + v * W, w);
        odd[v] = odd[v] + ukernel::load_w(row + co + v * W, w);
      }
    }
    if (r < b1) {
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) even[v] = even[v] + ukernel::load_w(row + v * W, v == V - 1 ? last_w : W);
    }
    float sums[V * W];
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) store(sums + v * W, even[v] + odd[v]);
    for (int i = 0; i < (V - 1) * W + last_w; ++i) total[c0 + i] += sums[i];
  }
}

// Column blocks of this many vectors: 8 of them (16 accumulators) cover C_out up to 128 in one
// pass over the rows on AVX-512, and leave registers for the loads.
constexpr int kBiasVecs = 8;

// total[0:co] += column sums of rows [r0, r1) of gy.
void bias_rows(const float* gy, int64_t co, int64_t r0, int64_t r1, double* total) {
  static constexpr void (*kBlock[kBiasVecs])(const float*, int64_t, int64_t, int64_t, int64_t, int, double*) = {
      bias_columns<1>, bias_columns<2>, bias_columns<3>, bias_columns<4>,
      bias_columns<5>, bias_columns<6>, bias_columns<7>, bias_columns<8>};
  for (int64_t c0 = 0; c0 < co; c0 += kBiasVecs * W) {
    const int64_t n = std::min<int64_t>(kBiasVecs * W, co - c0), v = ceil_div(n, W);
    kBlock[v - 1](gy, co, r0, r1, c0, static_cast<int>(n - (v - 1) * W), total);
  }
}

// gb = the threads' totals (nthreads × co doubles), summed.
void sum_bias_totals(const std::vector<double>& totals, int nthreads, int64_t co, float* gb) {
  for (int64_t c = 0; c < co; ++c) {
    double sum = 0.0;
    for (int t = 0; t < nthreads; ++t) sum += totals[t * co + c];
    gb[c] = static_cast<float>(sum);
  }
}

void conv_backward_bias(const float* gy, int64_t rows, int64_t co, float* gb) {
  if (co == 0) return;
  const int nthreads = threads_for(double(rows) * double(co) * 64.0);
  std::vector<double> totals(static_cast<size_t>(nthreads * co), 0.0);
  run_on_threads(nthreads, [&](int tid) {
    bias_rows(gy, co, rows * tid / nthreads, rows * (tid + 1) / nthreads, totals.data() + tid * co);
  });
  sum_bias_totals(totals, nthreads, co, gb);
}

// ---- backward-weight ------------------------------------------------------------------------

// gw (K × C_out) = Σ over output pixels of patch(pixel)ᵀ · gy(pixel). Element kk of a pixel's
// patch is the input float at a fixed offset (corner[kk]) from the pixel's patch corner, so a
// tile of R K rows × V vectors of C_out broadcasts its R patch values straight from the input:
// one pointer per K row, advanced by the stride, and no im2col copy. That copy cost first layers
// more than the 2*K*C_out FMAs of a pixel, and the others 10-15% of the pass (it wrote K floats
// per pixel, and the tiles then read them a cache line per pixel instead of C_in floats apart).
// The tile keeps its gw block in registers over a whole segment of pixels.

// Backward-weight splits the output rows among threads: thread 0 accumulates into gw itself,
// thread t into partials[(t - 1) * size ...]; this adds the partials into gw.
void add_partials(float* gw, const std::vector<float>& partials, int nthreads, int64_t size) {
  if (nthreads <= 1) return;
  parallel_for(size, 4096, [&](int64_t i0, int64_t i1) {
    for (int t = 1; t < nthreads; ++t) {
      const float* src = partials.data() + (t - 1) * size;
      for (int64_t i = i0; i < i1; ++i) gw[i] += src[i];
    }
  });
}

struct PatchTile {
  const float* const* rows;   // R pointers: each K row's float at patch corner 0
  const int64_t* row_off;     // per output row of the segment: floats from patch corner 0 to its first pixel's
  const int64_t* used;        // the segment's rows that the tile runs over (null: all nused of them,
  int64_t nused, x0, x1;      // whole), and of each the pixels [x0, x1): where some of its taps land inside
  int64_t ow;                 // pixels per output row
  int64_t pixel_step;         // floats from one pixel's patch corner to the next one's
  const float* gy;            // gy at the segment's first pixel, this tile's first column; rows of ldg floats
  int64_t ldg;
  float* c;                   // gw at the tile's first row and column; rows of ldc floats
  int64_t ldc;
  int n;                      // live columns
};

template <int R, int V>
void patch_tile(const PatchTile& t) {
  VecF acc[R][V];
#pragma GCC unroll 64
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) acc[r][v] = set1(0.0f);
  const int last_w = t.n - (V - 1) * W;
  const auto pixels = [&](int64_t off, const float* g, int64_t count) __attribute__((always_inline)) {
    for (int64_t xo = 0; xo < count; ++xo, off += t.pixel_step, g += t.ldg) {
      VecF bv[V];
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) bv[v] = ukernel::load_w(g + v * W, v == V - 1 ? last_w : W);
#pragma GCC unroll 64
      for (int r = 0; r < R; ++r) {
        const VecF av = set1(t.rows[r][off]);
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v) acc[r][v] = fmadd(av, bv[v], acc[r][v]);
      }
    }
  };
  if (!t.used) {
    // Every row, whole: gy runs on from one row to the next (no per-row address arithmetic, which
    // cost 5% on 4-pixel rows).
    for (int64_t y = 0; y < t.nused; ++y) pixels(t.row_off[y], t.gy + y * t.ow * t.ldg, t.ow);
  } else {
    for (int64_t u = 0; u < t.nused; ++u) {
      const int64_t y = t.used[u];
      pixels(t.row_off[y] + t.x0 * t.pixel_step, t.gy + (y * t.ow + t.x0) * t.ldg, t.x1 - t.x0);
    }
  }
#pragma GCC unroll 64
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      float* dst = t.c + r * t.ldc + v * W;
      const int w = v == V - 1 ? last_w : W;
      ukernel::store_w(dst, acc[r][v] + ukernel::load_w(dst, w), w);
    }
}

using PatchFn = void (*)(const PatchTile&);

template <int... Rs, int... Vs>
constexpr auto make_patch_table(std::integer_sequence<int, Rs...>, std::integer_sequence<int, Vs...>) {
  struct Table { PatchFn fn[sizeof...(Rs)][sizeof...(Vs)]; } table{};
  auto row = [&](auto r) { ((table.fn[decltype(r)::value][Vs] = &patch_tile<decltype(r)::value + 1, Vs + 1>), ...); };
  (row(std::integral_constant<int, Rs>{}), ...);
  return table;
}

// What every backward-weight segment shares, prepared once per call. The tiles read the input
// in "padded coordinates": x itself when every tap of every pixel lands inside it, else a copy of
// the rows a segment needs with the padding made of zeros (per thread and segment, so it is in L2
// when the tiles read it; a padded copy of all of x would be 19 MB for a 64x32x32x64 input,
// written to memory and read back).
struct PatchPlan {
  int64_t k;
  bool padded;
  int64_t wp, ld;                 // pixels and floats per input row where the tiles read
  int64_t span;                   // input rows under one output row's patches
  std::vector<int64_t> corner;    // HWIO order: kk = (i * KW + j) * C + ch
  // The tile: 6 K rows × two NR panels (the forward's wide tile: 4 gy vectors and 6 broadcasts
  // per 24 FMAs, against 2 and 12 for the GEMM's 12 × NR) when C_out spans more than one panel.
  int tile_rows;
  int64_t tile_cols;
  int64_t segment_rows;           // output rows per segment (kPatchSegmentBytes)
  std::vector<std::pair<int64_t, int64_t>> group_rows, group_cols;  // per K group: output rows, columns

  // Output positions [lo, hi) along one axis where some of the taps i0..i1 lands inside the input.
  static std::pair<int64_t, int64_t> inside_hull(int64_t out, int64_t stride, int64_t pad, int64_t dil, int64_t in,
                                                 int64_t i0, int64_t i1) {
    int64_t lo = out, hi = 0;
    for (int64_t o = 0; o < out; ++o)
      for (int64_t i = i0; i <= i1; ++i)
        if (tap_inside(o, i, stride, pad, dil, in)) lo = std::min(lo, o), hi = o + 1;
    return {lo, std::max(lo, hi)};
  }

  explicit PatchPlan(const ConvShape& s) : k(s.kh * s.kw * s.c), corner(static_cast<size_t>(k)) {
    const int64_t ph = (s.oh - 1) * s.sh + (s.kh - 1) * s.dh + 1, pw = (s.ow - 1) * s.sw + (s.kw - 1) * s.dw + 1;
    padded = s.pt > 0 || s.pl > 0 || ph > s.h || pw > s.w;
    wp = padded ? std::max(pw, s.pl + s.w) : s.w;
    ld = wp * s.c;
    span = (s.kh - 1) * s.dh + 1;
    for (int64_t kk = 0; kk < k; ++kk) {
      const int64_t ch = kk % s.c, j = (kk / s.c) % s.kw, i = kk / (s.c * s.kw);
      corner[kk] = (i * s.dh * wp + j * s.dw) * s.c + ch;
    }
    const bool wide = kHasWideTile && s.co > kNR;
    tile_rows = wide ? kWideMR : kMR;
    tile_cols = wide ? 2 * kNR : kNR;
    // Each K group's taps land inside the input only for some output rows and columns (all of
    // them but a border, with padding): the group's tiles run over just those, a hull over its
    // taps (the zeros of the copy cover the rest).
    for (int64_t k0 = 0; k0 < k; k0 += tile_rows) {
      const int64_t t0 = k0 / s.c, t1 = (std::min(k, k0 + tile_rows) - 1) / s.c;  // first and last tap
      const int64_t i0 = t0 / s.kw, i1 = t1 / s.kw;
      const int64_t j0 = i0 == i1 ? t0 % s.kw : 0, j1 = i0 == i1 ? t1 % s.kw : s.kw - 1;
      group_rows.push_back(inside_hull(s.oh, s.sh, s.pt, s.dh, s.h, i0, i1));
      group_cols.push_back(inside_hull(s.ow, s.sw, s.pl, s.dw, s.w, j0, j1));
    }
    segment_rows = std::max<int64_t>(1, kPatchSegmentBytes / (4 * (s.ow * s.co + s.sh * ld)));
  }
};

// One thread's backward-weight segments: its padded copy and row offsets.
class PatchWorker {
 public:
  PatchWorker(const ConvShape& s, const PatchPlan& plan) : s_(s), plan_(plan) {}

  // dst (K × C_out) += patchesᵀ · gy over output rows [r0, r1) of the N*OH rows (row r is row
  // r % OH of image r / OH); a segment, as the tiles read its gy and input rows from L2.
  void add_rows(const float* x, const float* gy, int64_t r0, int64_t r1, float* dst) {
    const ConvShape& s = s_;
    const PatchPlan& p = plan_;
    row_off_.resize(static_cast<size_t>(r1 - r0));
    used_.resize(static_cast<size_t>(r1 - r0));
    const float* base = x;
    if (!p.padded) {
      // Image row y of image img starts at (img * H + y * stride) input rows (no division per row:
      // a first layer calls this once per image, and two divisions per row showed in its time).
      for (int64_t r = r0, img = r0 / s.oh, y = r0 % s.oh; r < r1; ++r) {
        row_off_[r - r0] = (img * s.h + y * s.sh) * p.ld;
        if (++y == s.oh) y = 0, ++img;
      }
    } else {
      // Each image's piece of the segment gets the padded input rows under its output rows.
      int64_t used = 0;
      for (int64_t r = r0; r < r1;) {
        const int64_t img = r / s.oh, y0 = r % s.oh, y1 = std::min(s.oh, y0 + r1 - r);
        const int64_t first = y0 * s.sh, rows = (y1 - 1) * s.sh + p.span - first;
        if (copy_.size() < static_cast<size_t>((used + rows) * p.ld)) copy_.resize(static_cast<size_t>((used + rows) * p.ld));
        for (int64_t b = 0; b < rows; ++b) fill_row(x, img, first + b - s.pt, copy_.data() + (used + b) * p.ld);
        for (int64_t y = y0; y < y1; ++y) row_off_[r - r0 + y - y0] = (used + y * s.sh - first) * p.ld;
        used += rows;
        r += y1 - y0;
      }
      base = copy_.data();
    }
    static const auto narrow = make_patch_table(std::make_integer_sequence<int, kMR>{}, std::make_integer_sequence<int, kNV>{});
    static const auto wide = make_patch_table(std::make_integer_sequence<int, kWideMR>{}, std::make_integer_sequence<int, kMaxV>{});
    const float* rows[kMaxTileRows];
    PatchTile t;
    t.rows = rows;
    t.row_off = row_off_.data();
    t.ow = s.ow;
    t.pixel_step = s.sw * s.c;
    t.ldg = s.co;
    t.ldc = s.co;
    for (int64_t k0 = 0, g = 0; k0 < p.k; k0 += p.tile_rows, ++g) {
      const int m = static_cast<int>(std::min<int64_t>(p.tile_rows, p.k - k0));
      for (int r = 0; r < m; ++r) rows[r] = base + p.corner[k0 + r];
      const auto [y0, y1] = p.group_rows[g];
      std::tie(t.x0, t.x1) = p.group_cols[g];
      if (y0 == 0 && y1 == s.oh && t.x0 == 0 && t.x1 == s.ow) {
        t.used = nullptr, t.nused = r1 - r0;
      } else {
        t.used = used_.data(), t.nused = 0;
        for (int64_t r = r0, y = r0 % s.oh; r < r1; ++r, y = y + 1 == s.oh ? 0 : y + 1)
          if (y >= y0 && y < y1) used_[t.nused++] = r - r0;
      }
      for (int64_t j0 = 0; j0 < s.co; j0 += p.tile_cols) {
        t.n = static_cast<int>(std::min<int64_t>(p.tile_cols, s.co - j0));
        t.gy = gy + r0 * s.ow * s.co + j0;
        t.c = dst + k0 * s.co + j0;
        const int v = (t.n + W - 1) / W;
        if (p.tile_rows == kWideMR && kHasWideTile) wide.fn[m - 1][v - 1](t);
        else narrow.fn[m - 1][v - 1](t);
      }
    }
  }

 private:
  // Row `ih` of image img (zeros outside the image), with pl zero pixels before it and zeros after.
  void fill_row(const float* x, int64_t img, int64_t ih, float* dst) const {
    const ConvShape& s = s_;
    const int64_t ld = plan_.ld, left = s.pl * s.c, len = s.w * s.c;
    if (ih < 0 || ih >= s.h) {
      std::memset(dst, 0, static_cast<size_t>(ld) * sizeof(float));
      return;
    }
    std::memset(dst, 0, static_cast<size_t>(left) * sizeof(float));
    std::memcpy(dst + left, x + (img * s.h + ih) * len, static_cast<size_t>(len) * sizeof(float));
    std::memset(dst + left + len, 0, static_cast<size_t>(ld - left - len) * sizeof(float));
  }

  const ConvShape& s_;
  const PatchPlan& plan_;
  std::vector<float> copy_;
  std::vector<int64_t> row_off_, used_;
};

// First layers with the weight gradient wanted (and the input's and bias's, when given): each
// thread takes whole images and runs every pass over one image before the next. The image's gy
// (86 KiB for a 26x26x32 output) then comes in from memory once, and the passes after the first
// find it in L2; as separate calls, each pass streams all of gy (11 MB at batch 128) in from L3
// or DRAM again, which in a training step cost as much as their FMAs. gx needs stride 1 (the
// gather form). gw arrives zeroed.
void backward_direct(const ConvShape& s, const float* x, const float* gy, const float* w, float* gx, float* gw,
                     float* gb) {
  const int64_t size = s.kh * s.kw * s.c * s.co, ohw = s.oh * s.ow;
  const PatchPlan patches(s);
  std::optional<GatherPlan> gather;
  if (gx) gather.emplace(s, w);
  const double flops = 2.0 * double(s.n * ohw) * double(size) * (gx ? 2 : 1);
  const int nthreads = std::min<int64_t>(threads_for(flops), s.n);
  std::vector<float> partials(static_cast<size_t>((nthreads - 1) * size), 0.0f);
  std::vector<double> bias_totals(gb ? static_cast<size_t>(nthreads * s.co) : 0, 0.0);
  run_on_threads(nthreads, [&](int tid) {
    float* dst = tid == 0 ? gw : partials.data() + (tid - 1) * size;
    std::optional<GatherWorker> worker;
    if (gx) worker.emplace(s, *gather);
    PatchWorker patch_worker(s, patches);
    const int64_t img0 = s.n * tid / nthreads, img1 = s.n * (tid + 1) / nthreads;
    for (int64_t img = img0; img < img1; ++img) {
      if (gx) {
        for (int64_t band = 0; band < gather->bands; ++band) {
          const bool last = band + 1 == gather->bands;
          const int64_t next_img = last ? (img + 1 < img1 ? img + 1 : -1) : img;
          worker->run(gy, gx, img, band, next_img, last ? 0 : band + 1);
        }
      }
      for (int64_t r = img * s.oh; r < (img + 1) * s.oh; r += patches.segment_rows)
        patch_worker.add_rows(x, gy, r, std::min((img + 1) * s.oh, r + patches.segment_rows), dst);
      if (gb) bias_rows(gy, s.co, img * ohw, (img + 1) * ohw, bias_totals.data() + tid * s.co);
    }
  });
  add_partials(gw, partials, nthreads, size);
  if (gb) sum_bias_totals(bias_totals, nthreads, s.co, gb);
}

void conv_backward_weight(const ConvShape& s, const float* x, const float* gy, float* gw) {
  const int64_t size = s.kh * s.kw * s.c * s.co, rows = s.n * s.oh;
  if (size == 0) return;
  std::memset(gw, 0, static_cast<size_t>(size) * sizeof(float));
  if (rows * s.ow == 0) return;
  const PatchPlan plan(s);
  const int nthreads = std::min<int64_t>(threads_for(2.0 * double(rows * s.ow) * double(size)), rows);
  std::vector<float> partials(static_cast<size_t>((nthreads - 1) * size), 0.0f);
  run_on_threads(nthreads, [&](int tid) {
    float* dst = tid == 0 ? gw : partials.data() + (tid - 1) * size;
    PatchWorker worker(s, plan);
    const int64_t end = rows * (tid + 1) / nthreads;
    for (int64_t r = rows * tid / nthreads; r < end; r += plan.segment_rows)
      worker.add_rows(x, gy, r, std::min(end, r + plan.segment_rows), dst);
  });
  add_partials(gw, partials, nthreads, size);
}

// All three gradients, each skipped where its pointer is null.
void conv_backward(const ConvShape& s, const float* x, const float* gy, const float* w, float* gx, float* gw,
                   float* gb) {
  const bool direct = gw && s.c > 0 && s.c <= kDirectMaxCin && (!gx || (s.sh == 1 && s.sw == 1)) && s.n * s.oh * s.ow > 0 &&
                      s.co > 0;
  if (direct) {
    std::memset(gw, 0, static_cast<size_t>(s.kh * s.kw * s.c * s.co) * sizeof(float));
    return backward_direct(s, x, gy, w, gx, gw, gb);
  }
  if (gx) conv_backward_input(s, gy, w, gx);
  if (gw) conv_backward_weight(s, x, gy, gw);
  if (gb) conv_backward_bias(gy, s.n * s.oh * s.ow, s.co, gb);
}

}  // namespace

extern const ConvKernels conv_kernels{conv_forward, conv_forward_max_pool, conv_backward_input, conv_backward_weight,
                                      conv_backward_bias, conv_backward};

}  // namespace FG_ISA_NS
}  // namespace fusegrad
