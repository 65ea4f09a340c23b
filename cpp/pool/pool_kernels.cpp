// Pooling kernels, compiled once per ISA level. Layout NHWC: a pixel's C channels are contiguous,
// so each kernel holds a block of channel vectors in registers and walks the window over pixels.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <limits>

#include "common/simd.h"
#include "common/threads.h"
#include "pool/pool.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace {

// Channel vectors kept in registers per output pixel: 4 zmm of maxima + 4 of indices + loads
// stay well inside the register file, and 64 channels cover the CNN layers in one block.
constexpr int kBlockVecs = 4;
constexpr int kBlockFloats = kBlockVecs * kVecWidth;
// Work (input floats touched) per thread before a second thread is worth waking: ~128 KiB,
// a few tens of microseconds, well above the cost of an OpenMP fork.
constexpr int64_t kPoolGrain = 1 << 15;
// Pixels summed in float before global average pooling adds the block into its double totals:
// short enough that float rounding stays at the level of a 256-term sum, long enough that the
// double adds (one per block and channel) are noise next to the loads.
constexpr int64_t kGlobalBlock = 256;

// ---- int32 lanes for the max-pool indices, next to VecF ------------------------------------
#if defined(__AVX512F__)
struct VecI { __m512i v; };
inline VecI set1i(int32_t x) { return {_mm512_set1_epi32(x)}; }
inline VecI select_i(MaskF m, VecI a, VecI b) { return {_mm512_mask_mov_epi32(b.v, m.m, a.v)}; }
inline VecI load_i(const int32_t* p, int n) {
  return {n == kVecWidth ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi32(tail_mask(n), p)};
}
inline void store_i(int32_t* p, VecI a, int n) {
  if (n == kVecWidth) _mm512_storeu_si512(p, a.v);
  else _mm512_mask_storeu_epi32(p, tail_mask(n), a.v);
}
inline MaskF equal_i(VecI a, VecI b) { return {_mm512_cmpeq_epi32_mask(a.v, b.v)}; }
// v replaces the running maximum m where v > m or v is NaN (PyTorch's rule: NaN wins).
inline MaskF takes_over(VecF v, VecF m) {
  return {static_cast<__mmask16>(_mm512_cmp_ps_mask(v.v, m.v, _CMP_GT_OQ) |
                                 _mm512_cmp_ps_mask(v.v, v.v, _CMP_UNORD_Q))};
}
#elif defined(__AVX2__) && defined(__FMA__)
struct VecI { __m256i v; };
inline VecI set1i(int32_t x) { return {_mm256_set1_epi32(x)}; }
inline VecI select_i(MaskF m, VecI a, VecI b) {
  return {_mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(b.v), _mm256_castsi256_ps(a.v), m.m))};
}
inline VecI load_i(const int32_t* p, int n) {
  return {n == kVecWidth ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))
                         : _mm256_maskload_epi32(p, tail_mask(n))};
}
inline void store_i(int32_t* p, VecI a, int n) {
  if (n == kVecWidth) _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), a.v);
  else _mm256_maskstore_epi32(p, tail_mask(n), a.v);
}
inline MaskF equal_i(VecI a, VecI b) { return {_mm256_castsi256_ps(_mm256_cmpeq_epi32(a.v, b.v))}; }
inline MaskF takes_over(VecF v, VecF m) {
  return {_mm256_or_ps(_mm256_cmp_ps(v.v, m.v, _CMP_GT_OQ), _mm256_cmp_ps(v.v, v.v, _CMP_UNORD_Q))};
}
#else
struct VecI { int32_t v; };
inline VecI set1i(int32_t x) { return {x}; }
inline VecI select_i(MaskF m, VecI a, VecI b) { return {m.m ? a.v : b.v}; }
inline VecI load_i(const int32_t* p, int n) { return {n > 0 ? *p : 0}; }
inline void store_i(int32_t* p, VecI a, int n) { if (n > 0) *p = a.v; }
inline MaskF equal_i(VecI a, VecI b) { return {a.v == b.v}; }
inline MaskF takes_over(VecF v, VecF m) { return {v.v > m.v || v.v != v.v}; }
#endif

inline VecF load_w(const float* p, int w) { return w == kVecWidth ? load(p) : load_partial(p, w); }
inline void store_w(float* p, VecF a, int w) {
  if (w == kVecWidth) store(p, a);
  else store_partial(p, a, w);
}

// Along one axis, the window's taps start + i * dil (i < k) that lie in [0, n): the first such
// position and one past the last (first >= end when none does).
inline void taps_inside(int64_t start, int64_t k, int64_t dil, int64_t n, int64_t& first, int64_t& end) {
  first = start >= 0 ? start : start + (-start + dil - 1) / dil * dil;
  const int64_t last = start + (k - 1) * dil;
  end = last < n ? last + 1 : start > n - 1 ? first : start + (n - 1 - start) / dil * dil + 1;
}

// Window of output pixel (oh, ow), clipped to the input: rows h0, h0 + dh, ... below h1, columns
// w0, w0 + dw, ... below w1 (with dilation 1, the rectangle [h0, h1) x [w0, w1)).
struct Window { int64_t h0, h1, w0, w1; };
inline Window window_of(const PoolShape& s, int64_t oh, int64_t ow) {
  Window win;
  taps_inside(oh * s.sh - s.ph, s.kh, s.dh, s.h, win.h0, win.h1);
  taps_inside(ow * s.sw - s.pw, s.kw, s.dw, s.w, win.w0, win.w1);
  return win;
}

int64_t row_grain(const PoolShape& s) {
  // In double: a window may be 2^32 x 2^32 (its area overflows int64; the work is what the image holds).
  const double work = std::max(1.0, double(s.ow) * double(s.c) * double(s.kh) * double(s.kw));
  return std::max<int64_t>(1, static_cast<int64_t>(double(kPoolGrain) / work));
}

// Calls block(c0, nv, last) for the channel blocks of one pixel: nv vectors starting at channel
// c0, the last one `last` lanes wide. Full blocks get the compile-time count kBlockVecs.
template <class Block>
inline void for_channel_blocks(int64_t c, Block&& block) {
  int64_t c0 = 0;
  for (; c0 + kBlockFloats <= c; c0 += kBlockFloats)
    block(c0, std::integral_constant<int, kBlockVecs>{}, kVecWidth);
  const int64_t rest = c - c0;
  if (rest == 0) return;
  const int nv = static_cast<int>((rest + kVecWidth - 1) / kVecWidth);
  const int last = static_cast<int>(rest - int64_t(nv - 1) * kVecWidth);
  switch (nv) {
    case 1: block(c0, std::integral_constant<int, 1>{}, last); break;
    case 2: block(c0, std::integral_constant<int, 2>{}, last); break;
    case 3: block(c0, std::integral_constant<int, 3>{}, last); break;
    default: block(c0, std::integral_constant<int, 4>{}, last); break;
  }
}

// ---- max pooling -------------------------------------------------------------------------------

template <bool kIndices>
void max_forward_rows(const PoolShape& s, const float* x, float* y, int32_t* ind, int64_t r0,
                      int64_t r1) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / s.oh, oh = r % s.oh;
    const float* plane = x + n * s.h * s.w * s.c;
    for (int64_t ow = 0; ow < s.ow; ++ow) {
      const Window win = window_of(s, oh, ow);
      const int64_t o = (r * s.ow + ow) * s.c;
      for_channel_blocks(s.c, [&](int64_t c0, auto nv_t, int last) {
        constexpr int NV = decltype(nv_t)::value;
        VecF m[NV];
        VecI best[NV];
        // PyTorch starts from the window's first pixel, so an all -inf window points there.
        const VecI first = set1i(static_cast<int32_t>(win.h0 * s.w + win.w0));
        for (int j = 0; j < NV; ++j) { m[j] = set1(neg_inf); best[j] = first; }
        for (int64_t ih = win.h0; ih < win.h1; ih += s.dh) {
          for (int64_t iw = win.w0; iw < win.w1; iw += s.dw) {
            const float* p = plane + (ih * s.w + iw) * s.c + c0;
            const VecI pos = set1i(static_cast<int32_t>(ih * s.w + iw));
            for (int j = 0; j < NV; ++j) {
              const VecF v = load_w(p + j * kVecWidth, j == NV - 1 ? last : kVecWidth);
              const MaskF t = takes_over(v, m[j]);
              m[j] = select(t, v, m[j]);
              if constexpr (kIndices) best[j] = select_i(t, pos, best[j]);
            }
          }
        }
        for (int j = 0; j < NV; ++j) {
          const int w = j == NV - 1 ? last : kVecWidth;
          store_w(y + o + c0 + j * kVecWidth, m[j], w);
          if constexpr (kIndices) store_i(ind + o + c0 + j * kVecWidth, best[j], w);
        }
      });
    }
  }
}

// The pooling after nearly every CNN convolution: 2×2 windows at stride 2, no padding or dilation,
// every window inside the image. With the window fixed at compile time its four taps unroll and
// no window bounds are computed; the result (ties, NaN) is the general loop's, which starts from
// -inf and lets each tap in row-major order take over: starting from the first tap is the same.
bool is_plain_2x2(const PoolShape& s) {
  return s.kh == 2 && s.kw == 2 && s.sh == 2 && s.sw == 2 && s.ph == 0 && s.pw == 0 && s.dh == 1 && s.dw == 1 &&
         2 * s.oh <= s.h && 2 * s.ow <= s.w;
}

template <bool kIndices>
void max_forward_2x2_rows(const PoolShape& s, const float* x, float* y, int32_t* ind, int64_t r0, int64_t r1) {
  const int64_t right = s.c, below = s.w * s.c;  // offsets of the other three taps
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / s.oh, oh = r % s.oh;
    const float* row = x + (n * s.h + 2 * oh) * s.w * s.c;
    for (int64_t ow = 0; ow < s.ow; ++ow) {
      const float* p = row + 2 * ow * s.c;
      const int32_t pos = static_cast<int32_t>(2 * oh * s.w + 2 * ow);  // the first tap's ih * W + iw
      const int64_t o = (r * s.ow + ow) * s.c;
      for_channel_blocks(s.c, [&](int64_t c0, auto nv_t, int last) {
        constexpr int NV = decltype(nv_t)::value;
        for (int j = 0; j < NV; ++j) {
          const int w = j == NV - 1 ? last : kVecWidth;
          const float* q = p + c0 + j * kVecWidth;
          VecF m = load_w(q, w);
          VecI best = set1i(pos);
          const auto tap = [&](int64_t offset, int32_t tap_pos) {
            const VecF v = load_w(q + offset, w);
            const MaskF t = takes_over(v, m);
            m = select(t, v, m);
            if constexpr (kIndices) best = select_i(t, set1i(tap_pos), best);
          };
          tap(right, pos + 1);
          tap(below, pos + static_cast<int32_t>(s.w));
          tap(below + right, pos + static_cast<int32_t>(s.w) + 1);
          store_w(y + o + c0 + j * kVecWidth, m, w);
          if constexpr (kIndices) store_i(ind + o + c0 + j * kVecWidth, best, w);
        }
      });
    }
  }
}

void max_forward(const PoolShape& s, const float* x, float* y, int32_t* ind) {
  const bool plain_2x2 = is_plain_2x2(s);
  parallel_for(s.n * s.oh, row_grain(s), [&](int64_t r0, int64_t r1) {
    if (plain_2x2 && ind) max_forward_2x2_rows<true>(s, x, y, ind, r0, r1);
    else if (plain_2x2) max_forward_2x2_rows<false>(s, x, y, nullptr, r0, r1);
    else if (ind) max_forward_rows<true>(s, x, y, ind, r0, r1);
    else max_forward_rows<false>(s, x, y, nullptr, r0, r1);
  });
}

// Windows that never overlap (stride >= kernel, no dilation) let each output row own a band of input rows and
// each output column a band of input columns: every input pixel is written exactly once, either
// from its window's gradient or as zero, with no zero-fill pass and no races between rows.
// Bands: output row oh owns input rows [oh*sh - ph, (oh+1)*sh - ph), the first also everything
// above, the last everything below; the same for columns.
inline bool windows_disjoint(const PoolShape& s) { return s.sh >= s.kh && s.sw >= s.kw && s.dh == 1 && s.dw == 1; }

inline void band(int64_t o, int64_t count, int64_t stride, int64_t pad, int64_t size, int64_t* b0,
                 int64_t* b1) {
  *b0 = o == 0 ? 0 : std::clamp<int64_t>(o * stride - pad, 0, size);
  *b1 = o == count - 1 ? size : std::clamp<int64_t>((o + 1) * stride - pad, 0, size);
}

// pixel(gp, out_offset, ih, iw) writes the C gradient values of an input pixel inside the window
// of the output element at out_offset; pixels outside every window are zeroed here.
// row_done() runs after each output row.
template <class Pixel, class RowDone>
void disjoint_backward_rows(const PoolShape& s, float* gx, int64_t r0, int64_t r1, Pixel&& pixel,
                            RowDone&& row_done) {
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / s.oh, oh = r % s.oh;
    int64_t hb0, hb1;
    band(oh, s.oh, s.sh, s.ph, s.h, &hb0, &hb1);
    const int64_t hs = oh * s.sh - s.ph;
    for (int64_t ih = hb0; ih < hb1; ++ih) {
      float* grow = gx + (n * s.h + ih) * s.w * s.c;
      if (ih < hs || ih >= hs + s.kh) {
        std::memset(grow, 0, sizeof(float) * s.w * s.c);
        continue;
      }
      for (int64_t ow = 0; ow < s.ow; ++ow) {
        int64_t wb0, wb1;
        band(ow, s.ow, s.sw, s.pw, s.w, &wb0, &wb1);
        const int64_t ws = ow * s.sw - s.pw;
        const int64_t o = (r * s.ow + ow) * s.c;
        for (int64_t iw = wb0; iw < wb1; ++iw) {
          float* gp = grow + iw * s.c;
          if (iw < ws || iw >= ws + s.kw) std::memset(gp, 0, sizeof(float) * s.c);
          else pixel(gp, o, ih, iw);
        }
      }
    }
    row_done();
  }
}

// Tasks of the overlapping-window backward passes: one image and one block of channels each, so
// that scattered accumulations from different tasks never touch the same element.
constexpr int64_t kScatterChannels = 64;

template <class Task>
void for_image_channel_blocks(const PoolShape& s, Task&& task) {
  const int64_t blocks = (s.c + kScatterChannels - 1) / kScatterChannels;
  const int64_t grain = std::max<int64_t>(1, kPoolGrain / std::max<int64_t>(1, s.h * s.w * kScatterChannels));
  parallel_for(s.n * blocks, grain, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / blocks, c0 = (t % blocks) * kScatterChannels;
      const int64_t c1 = std::min(s.c, c0 + kScatterChannels);
      task(n, c0, c1);
    }
  });
}

int64_t max_backward(const PoolShape& s, const float* gy, const int32_t* ind, float* gx) {
  const int64_t plane = s.h * s.w;
  std::atomic<int64_t> bad_total{0};
  if (windows_disjoint(s)) {
    // Each input pixel inside a window takes its output's gradient where the index names it. An
    // index naming a pixel outside its window matches nothing: the hit count reveals it.
    static const float kOnes[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    parallel_for(s.n * s.oh, row_grain(s), [&](int64_t r0, int64_t r1) {
      VecF hits = set1(0.0f);  // per lane at most ow*c/width hits a row: exact in float
      int64_t hit_total = 0;
      disjoint_backward_rows(
          s, gx, r0, r1,
          [&](float* gp, int64_t o, int64_t ih, int64_t iw) {
            const VecI pos = set1i(static_cast<int32_t>(ih * s.w + iw));
            int64_t c = 0;
            for (; c + kVecWidth <= s.c; c += kVecWidth) {
              const MaskF hit = equal_i(load_i(ind + o + c, kVecWidth), pos);
              store(gp + c, select(hit, load(gy + o + c), set1(0.0f)));
              hits = hits + select(hit, set1(1.0f), set1(0.0f));
            }
            if (c < s.c) {
              const int w = static_cast<int>(s.c - c);
              const MaskF hit = equal_i(load_i(ind + o + c, w), pos);
              store_partial(gp + c, select(hit, load_partial(gy + o + c, w), set1(0.0f)), w);
              hits = hits + select(hit, load_partial(kOnes, w), set1(0.0f));
            }
          },
          [&] {
            hit_total += static_cast<int64_t>(reduce_add(hits));
            hits = set1(0.0f);
          });
      bad_total += (r1 - r0) * s.ow * s.c - hit_total;
    });
    return bad_total.load();
  }
  for_image_channel_blocks(s, [&](int64_t n, int64_t c0, int64_t c1) {
    float* gplane = gx + n * plane * s.c;
    for (int64_t p = 0; p < plane; ++p) std::memset(gplane + p * s.c + c0, 0, sizeof(float) * (c1 - c0));
    int64_t bad = 0;
    for (int64_t q = n * s.oh * s.ow; q < (n + 1) * s.oh * s.ow; ++q) {
      const float* g = gy + q * s.c;
      const int32_t* id = ind + q * s.c;
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t i = id[c];
        if (i < 0 || i >= plane) { ++bad; continue; }
        gplane[i * s.c + c] += g[c];
      }
    }
    bad_total += bad;
  });
  return bad_total.load();
}

// ---- average pooling ---------------------------------------------------------------------------

// PyTorch's divisor: with count_include_pad the window clipped to the padded input (kh * kw
// except for ceil mode's last windows, which may hang past it), otherwise the number of real
// pixels in it. Average pooling has no dilation.
inline float inv_count(const PoolShape& s, int64_t oh, int64_t ow, const Window& win, bool include_pad) {
  if (include_pad) {
    const int64_t hs = oh * s.sh - s.ph, ws = ow * s.sw - s.pw;
    const int64_t hn = std::min(hs + s.kh, s.h + s.ph) - hs, wn = std::min(ws + s.kw, s.w + s.pw) - ws;
    return 1.0f / (static_cast<float>(hn) * static_cast<float>(wn));  // hn * wn may not fit int64
  }
  return 1.0f / static_cast<float>((win.h1 - win.h0) * (win.w1 - win.w0));
}

void avg_forward(const PoolShape& s, const float* x, float* y, bool include_pad) {
  parallel_for(s.n * s.oh, row_grain(s), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / s.oh, oh = r % s.oh;
      const float* plane = x + n * s.h * s.w * s.c;
      for (int64_t ow = 0; ow < s.ow; ++ow) {
        const Window win = window_of(s, oh, ow);
        const VecF scale = set1(inv_count(s, oh, ow, win, include_pad));
        const int64_t o = (r * s.ow + ow) * s.c;
        for_channel_blocks(s.c, [&](int64_t c0, auto nv_t, int last) {
          constexpr int NV = decltype(nv_t)::value;
          VecF acc[NV];
          for (int j = 0; j < NV; ++j) acc[j] = set1(0.0f);
          for (int64_t ih = win.h0; ih < win.h1; ++ih)
            for (int64_t iw = win.w0; iw < win.w1; ++iw) {
              const float* p = plane + (ih * s.w + iw) * s.c + c0;
              for (int j = 0; j < NV; ++j)
                acc[j] = acc[j] + load_w(p + j * kVecWidth, j == NV - 1 ? last : kVecWidth);
            }
          for (int j = 0; j < NV; ++j)
            store_w(y + o + c0 + j * kVecWidth, acc[j] * scale, j == NV - 1 ? last : kVecWidth);
        });
      }
    }
  });
}

void avg_backward(const PoolShape& s, const float* gy, float* gx, bool include_pad) {
  if (windows_disjoint(s)) {
    parallel_for(s.n * s.oh, row_grain(s), [&](int64_t r0, int64_t r1) {
      disjoint_backward_rows(s, gx, r0, r1, [&](float* gp, int64_t o, int64_t, int64_t) {
        const int64_t q = o / s.c;
        const int64_t oh = (q / s.ow) % s.oh, ow = q % s.ow;
        const VecF scale = set1(inv_count(s, oh, ow, window_of(s, oh, ow), include_pad));
        int64_t c = 0;
        for (; c + kVecWidth <= s.c; c += kVecWidth) store(gp + c, load(gy + o + c) * scale);
        if (c < s.c) {
          const int w = static_cast<int>(s.c - c);
          store_partial(gp + c, load_partial(gy + o + c, w) * scale, w);
        }
      }, [] {});
    });
    return;
  }
  const int64_t plane = s.h * s.w;
  for_image_channel_blocks(s, [&](int64_t n, int64_t c0, int64_t c1) {
    float* gplane = gx + n * plane * s.c;
    for (int64_t p = 0; p < plane; ++p) std::memset(gplane + p * s.c + c0, 0, sizeof(float) * (c1 - c0));
    for (int64_t oh = 0; oh < s.oh; ++oh)
      for (int64_t ow = 0; ow < s.ow; ++ow) {
        const Window win = window_of(s, oh, ow);
        const VecF scale = set1(inv_count(s, oh, ow, win, include_pad));
        const float* g = gy + ((n * s.oh + oh) * s.ow + ow) * s.c;
        for (int64_t ih = win.h0; ih < win.h1; ++ih)
          for (int64_t iw = win.w0; iw < win.w1; ++iw) {
            float* gp = gplane + (ih * s.w + iw) * s.c;
            int64_t c = c0;
            for (; c + kVecWidth <= c1; c += kVecWidth) store(gp + c, fmadd(load(g + c), scale, load(gp + c)));
            if (c < c1) {
              const int w = static_cast<int>(c1 - c);
              store_partial(gp + c, fmadd(load_partial(g + c, w), scale, load_partial(gp + c, w)), w);
            }
          }
      }
  });
}

// ---- global average pooling ----------------------------------------------------------------------

void global_avg_forward(const float* x, float* y, int64_t n, int64_t hw, int64_t c) {
  const float inv = hw > 0 ? 1.0f / static_cast<float>(hw) : std::numeric_limits<float>::quiet_NaN();
  const int64_t blocks = (c + kBlockFloats - 1) / kBlockFloats;
  const int64_t grain = std::max<int64_t>(1, kPoolGrain / std::max<int64_t>(1, hw * kBlockFloats));
  parallel_for(n * blocks, grain, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i = t / blocks, c0 = (t % blocks) * kBlockFloats;
      const float* img = x + i * hw * c;
      // Reuse the pixel-block walker on a one-block channel range.
      const int64_t width = std::min<int64_t>(kBlockFloats, c - c0);
      for_channel_blocks(width, [&](int64_t, auto nv_t, int last) {
        constexpr int NV = decltype(nv_t)::value;
        // Float sums over blocks of kGlobalBlock pixels, added up in double: a single running
        // float sum over a 2048x2048 plane lost three digits against PyTorch's.
        double total[NV * kVecWidth] = {};
        for (int64_t p0 = 0; p0 < hw; p0 += kGlobalBlock) {
          VecF acc[NV];
          for (int j = 0; j < NV; ++j) acc[j] = set1(0.0f);
          for (int64_t p = p0; p < std::min(hw, p0 + kGlobalBlock); ++p)
            for (int j = 0; j < NV; ++j)
              acc[j] = acc[j] + load_w(img + p * c + c0 + j * kVecWidth, j == NV - 1 ? last : kVecWidth);
          alignas(64) float block[NV * kVecWidth];
          for (int j = 0; j < NV; ++j) store(block + j * kVecWidth, acc[j]);
          for (int l = 0; l < NV * kVecWidth; ++l) total[l] += block[l];
        }
        alignas(64) float mean[NV * kVecWidth];
        for (int l = 0; l < NV * kVecWidth; ++l) mean[l] = static_cast<float>(total[l] * double(inv));
        for (int j = 0; j < NV; ++j)
          store_w(y + i * c + c0 + j * kVecWidth, load(mean + j * kVecWidth), j == NV - 1 ? last : kVecWidth);
      });
    }
  });
}

void global_avg_backward(const float* gy, float* gx, int64_t n, int64_t hw, int64_t c) {
  const VecF inv = set1(1.0f / static_cast<float>(std::max<int64_t>(hw, 1)));
  const int64_t grain = std::max<int64_t>(1, kPoolGrain / std::max<int64_t>(1, c));
  parallel_for(n * hw, grain, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const float* g = gy + (p / std::max<int64_t>(hw, 1)) * c;
      float* o = gx + p * c;
      int64_t k = 0;
      for (; k + kVecWidth <= c; k += kVecWidth) store(o + k, load(g + k) * inv);
      if (k < c) {
        const int w = static_cast<int>(c - k);
        store_partial(o + k, load_partial(g + k, w) * inv, w);
      }
    }
  });
}

}  // namespace

extern const PoolKernels pool_kernels{max_forward, max_backward, avg_forward, avg_backward,
                                      global_avg_forward, global_avg_backward};

}  // namespace FG_ISA_NS
}  // namespace fusegrad
