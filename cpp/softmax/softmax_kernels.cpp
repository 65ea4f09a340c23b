// Softmax family kernels, compiled once per ISA level.
//
// Every row is normalised in three short passes (max; exp and sum; scale). A row of a few
// thousand floats stays in L1 between passes, so memory sees one read of the input and one write
// of the output: the fused cross-entropy reads the logits once and writes the gradient once.
// Stability: exponentials are taken of x - max(x), never of x.
#include <algorithm>
#include <cmath>
#include <limits>

#include "softmax/softmax.h"
#include "common/threads.h"
#include "common/vec_math.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace {

// Floats of input per thread before a second thread pays for waking it (~256 KiB).
constexpr int64_t kSoftmaxGrain = 1 << 16;
// Lanes are summed in float over at most this many elements before being added to a double, so
// the loss sums of long inputs keep double accuracy.
constexpr int64_t kFlushElements = 1 << 12;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
alignas(64) const float kOnes[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};

inline MaskF lanes_below(int w) { return load_partial(kOnes, w) > set1(0.5f); }
inline VecF load_w(const float* p, int w) { return w == kVecWidth ? load(p) : load_partial(p, w); }
inline void store_w(float* p, VecF a, int w) {
  if (w == kVecWidth) store(p, a);
  else store_partial(p, a, w);
}

// exp() that lets NaN through (vec_math's exp clamps its argument, which would turn a NaN into a
// number): a NaN logit must poison its row, as in PyTorch.
inline VecF exp_keep_nan(VecF d) { return select(d >= d, exp(d), d); }

inline float reduce_max(VecF a) {
  alignas(64) float lanes[kVecWidth];
  store(lanes, a);
  float m = lanes[0];
  for (int i = 1; i < kVecWidth; ++i) m = lanes[i] > m ? lanes[i] : m;
  return m;
}

// Max of a contiguous row. NaNs are skipped here and surface in the exp pass instead.
inline float row_max(const float* x, int64_t len) {
  VecF m0 = set1(kNegInf), m1 = m0;
  int64_t i = 0;
  for (; i + 2 * kVecWidth <= len; i += 2 * kVecWidth) {
    m0 = max(load(x + i), m0);
    m1 = max(load(x + i + kVecWidth), m1);
  }
  for (; i + kVecWidth <= len; i += kVecWidth) m0 = max(load(x + i), m0);
  if (i < len) {
    const int w = static_cast<int>(len - i);
    m1 = max(select(lanes_below(w), load_partial(x + i, w), set1(kNegInf)), m1);
  }
  return reduce_max(max(m0, m1));
}

// Sum of a contiguous row.
inline float row_sum(const float* x, int64_t len) {
  VecF s0 = set1(0.0f), s1 = s0;
  int64_t i = 0;
  for (; i + 2 * kVecWidth <= len; i += 2 * kVecWidth) {
    s0 = s0 + load(x + i);
    s1 = s1 + load(x + i + kVecWidth);
  }
  for (; i + kVecWidth <= len; i += kVecWidth) s0 = s0 + load(x + i);
  if (i < len) s1 = s1 + load_partial(x + i, static_cast<int>(len - i));
  return reduce_add(s0 + s1);
}

// Sum of exp(x - mx) over a row, storing the exponentials to e when kStore.
template <bool kStore>
inline float row_exp_sum(const float* x, float* e, int64_t len, float mx) {
  const VecF m = set1(mx);
  VecF s0 = set1(0.0f), s1 = s0;
  int64_t i = 0;
  for (; i + 2 * kVecWidth <= len; i += 2 * kVecWidth) {
    const VecF a = exp_keep_nan(load(x + i) - m), b = exp_keep_nan(load(x + i + kVecWidth) - m);
    if constexpr (kStore) { store(e + i, a); store(e + i + kVecWidth, b); }
    s0 = s0 + a;
    s1 = s1 + b;
  }
  for (; i + kVecWidth <= len; i += kVecWidth) {
    const VecF a = exp_keep_nan(load(x + i) - m);
    if constexpr (kStore) store(e + i, a);
    s0 = s0 + a;
  }
  if (i < len) {
    const int w = static_cast<int>(len - i);
    const VecF a = select(lanes_below(w), exp_keep_nan(load_partial(x + i, w) - m), set1(0.0f));
    if constexpr (kStore) store_partial(e + i, a, w);
    s1 = s1 + a;
  }
  return reduce_add(s0 + s1);
}

// y[i] = f(i, width) over a contiguous row.
template <class F>
inline void row_map(float* y, int64_t len, F&& f) {
  int64_t i = 0;
  for (; i + kVecWidth <= len; i += kVecWidth) store(y + i, f(i, kVecWidth));
  if (i < len) {
    const int w = static_cast<int>(len - i);
    store_partial(y + i, f(i, w), w);
  }
}

int64_t rows_grain(int64_t len) { return std::max<int64_t>(1, kSoftmaxGrain / std::max<int64_t>(len, 1)); }

// ---- softmax / log_softmax -------------------------------------------------------------------

void forward_rows(const float* x, float* y, int64_t rows, int64_t len, bool log) {
  parallel_for(rows, rows_grain(len), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * len;
      float* yr = y + r * len;
      const float mx = row_max(xr, len);
      if (log) {
        // (x - max) is exact for the large entries; subtracting max + log(sum) in one step would
        // round the log term away for logits in the thousands.
        const VecF m = set1(mx);
        const VecF log_sum = set1(std::log(row_exp_sum<false>(xr, nullptr, len, mx)));
        row_map(yr, len, [&](int64_t i, int w) { return (load_w(xr + i, w) - m) - log_sum; });
      } else {
        const VecF inv = set1(1.0f / row_exp_sum<true>(xr, yr, len, mx));
        row_map(yr, len, [&](int64_t i, int w) { return load_w(yr + i, w) * inv; });
      }
    }
  });
}

// Strided axis (inner > 1): each task takes one outer index and a block of up to kInnerBlock
// contiguous `inner` columns, and keeps the per-column max and sum in small buffers. Reading
// 512-byte row segments keeps the hardware prefetchers busy (one vector per row would stride
// through a new page every row), and len such segments stay in L2 across the three passes.
constexpr int64_t kInnerBlock = 128;
// Rows ahead to prefetch in the first pass over a block (the one that reads from memory): each
// row segment sits on another page, where the hardware prefetchers stop, so without this every
// row would wait a full memory latency.
constexpr int64_t kPrefetchRows = 16;
constexpr int64_t kFloatsPerLine = 16;

// Prefetches the cache lines of a `width`-float row segment at p (for writing if rw).
template <int rw>
inline void prefetch_segment(const float* p, int64_t width) {
  for (int64_t v = 0; v < width; v += kFloatsPerLine) __builtin_prefetch(p + v, rw, 3);
}

template <class Body>
void for_inner_blocks(int64_t outer, int64_t len, int64_t inner, Body&& body) {
  const int64_t blocks = (inner + kInnerBlock - 1) / kInnerBlock;
  const int64_t grain = std::max<int64_t>(1, kSoftmaxGrain / std::max<int64_t>(len * kInnerBlock, 1));
  parallel_for(outer * blocks, grain, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t o = t / blocks, j = (t % blocks) * kInnerBlock;
      body(o * len * inner + j, std::min(kInnerBlock, inner - j));
    }
  });
}

// f(v, w) over the vectors of a block of `width` columns: v the column offset, w its lanes.
template <class F>
inline void for_block_vectors(int64_t width, F&& f) {
  for (int64_t v = 0; v < width; v += kVecWidth) f(v, static_cast<int>(std::min<int64_t>(kVecWidth, width - v)));
}

void forward_strided(const float* x, float* y, int64_t outer, int64_t len, int64_t inner, bool log) {
  for_inner_blocks(outer, len, inner, [&](int64_t base, int64_t width) {
    alignas(64) float mb[kInnerBlock], sb[kInnerBlock];
    for_block_vectors(width, [&](int64_t v, int) { store(mb + v, set1(kNegInf)); store(sb + v, set1(0.0f)); });
    for (int64_t k = 0; k < len; ++k) {
      const float* xr = x + base + k * inner;
      if (k + kPrefetchRows < len) prefetch_segment<0>(xr + kPrefetchRows * inner, width);
      for_block_vectors(width, [&](int64_t v, int w) { store(mb + v, max(load_w(xr + v, w), load(mb + v))); });
    }
    for (int64_t k = 0; k < len; ++k) {
      const float* xr = x + base + k * inner;
      float* yr = y + base + k * inner;
      if (!log && k + kPrefetchRows < len) prefetch_segment<1>(yr + kPrefetchRows * inner, width);
      for_block_vectors(width, [&](int64_t v, int w) {
        const VecF e = exp_keep_nan(load_w(xr + v, w) - load(mb + v));
        if (!log) store_w(yr + v, e, w);
        store(sb + v, load(sb + v) + e);
      });
    }
    if (log) {
      for (int64_t v = 0; v < width; ++v) sb[v] = std::log(sb[v]);
    } else {
      for_block_vectors(width, [&](int64_t v, int) { store(sb + v, set1(1.0f) / load(sb + v)); });
    }
    for (int64_t k = 0; k < len; ++k) {
      const float* xr = x + base + k * inner;
      float* yr = y + base + k * inner;
      for_block_vectors(width, [&](int64_t v, int w) {
        const VecF r = log ? (load_w(xr + v, w) - load(mb + v)) - load(sb + v) : load_w(yr + v, w) * load(sb + v);
        store_w(yr + v, r, w);
      });
    }
  });
}

void forward(const float* x, float* y, int64_t outer, int64_t len, int64_t inner, bool log) {
  if (inner == 1) forward_rows(x, y, outer, len, log);
  else forward_strided(x, y, outer, len, inner, log);
}

// Sum of a[i] * b[i] over a contiguous row.
inline float row_dot(const float* a, const float* b, int64_t len) {
  VecF s0 = set1(0.0f), s1 = s0;
  int64_t i = 0;
  for (; i + 2 * kVecWidth <= len; i += 2 * kVecWidth) {
    s0 = fmadd(load(a + i), load(b + i), s0);
    s1 = fmadd(load(a + i + kVecWidth), load(b + i + kVecWidth), s1);
  }
  for (; i + kVecWidth <= len; i += kVecWidth) s0 = fmadd(load(a + i), load(b + i), s0);
  if (i < len) {
    const int w = static_cast<int>(len - i);
    s1 = fmadd(load_partial(a + i, w), load_partial(b + i, w), s1);
  }
  return reduce_add(s0 + s1);
}

void backward(const float* g, const float* y, float* dx, int64_t outer, int64_t len, int64_t inner,
              bool log) {
  if (inner == 1) {
    parallel_for(outer, rows_grain(len), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const float* gr = g + r * len;
        const float* yr = y + r * len;
        float* dr = dx + r * len;
        if (log) {
          const VecF sg = set1(row_sum(gr, len));
          row_map(dr, len, [&](int64_t i, int w) {
            return load_w(gr + i, w) - exp_keep_nan(load_w(yr + i, w)) * sg;
          });
        } else {
          const VecF dot = set1(row_dot(gr, yr, len));
          row_map(dr, len, [&](int64_t i, int w) { return load_w(yr + i, w) * (load_w(gr + i, w) - dot); });
        }
      }
    });
    return;
  }
  for_inner_blocks(outer, len, inner, [&](int64_t base, int64_t width) {
    alignas(64) float sb[kInnerBlock];
    for_block_vectors(width, [&](int64_t v, int) { store(sb + v, set1(0.0f)); });
    for (int64_t k = 0; k < len; ++k) {
      const int64_t at = base + k * inner;
      if (k + kPrefetchRows < len) {
        prefetch_segment<0>(g + at + kPrefetchRows * inner, width);
        prefetch_segment<0>(y + at + kPrefetchRows * inner, width);
      }
      for_block_vectors(width, [&](int64_t v, int w) {
        const VecF gk = load_w(g + at + v, w);
        store(sb + v, log ? load(sb + v) + gk : fmadd(gk, load_w(y + at + v, w), load(sb + v)));
      });
    }
    for (int64_t k = 0; k < len; ++k) {
      const int64_t at = base + k * inner;
      if (k + kPrefetchRows < len) prefetch_segment<1>(dx + at + kPrefetchRows * inner, width);
      for_block_vectors(width, [&](int64_t v, int w) {
        const VecF gk = load_w(g + at + v, w), yk = load_w(y + at + v, w), sk = load(sb + v);
        store_w(dx + at + v, log ? gk - exp_keep_nan(yk) * sk : yk * (gk - sk), w);
      });
    }
  });
}

// ---- fused losses ----------------------------------------------------------------------------

double cross_entropy(const float* logits, const int64_t* labels, int64_t n, int64_t c,
                     float smoothing, float grad_scale, float* loss_rows, float* grad) {
  // loss_i = lse - (1 - eps) x_label - eps/C sum_j x_j   (PyTorch's label smoothing), and
  // d loss_i / d x_j = softmax_j - (1 - eps) [j == label] - eps/C.
  const double keep = 1.0 - static_cast<double>(smoothing);
  const double spread = static_cast<double>(smoothing) / static_cast<double>(c);
  double sum = 0.0;
  parallel_for(n, rows_grain(c), [&](int64_t r0, int64_t r1) {
    double total = 0.0;
    for (int64_t r = r0; r < r1; ++r) {
      const float* x = logits + r * c;
      const int64_t label = labels[r];
      const float mx = row_max(x, c);
      const float s = grad ? row_exp_sum<true>(x, grad + r * c, c, mx) : row_exp_sum<false>(x, nullptr, c, mx);
      // (mx - x_label) is exact in double, so large logits lose no precision to cancellation.
      double loss = std::log(static_cast<double>(s)) + keep * (static_cast<double>(mx) - x[label]);
      if (smoothing != 0.0f) loss += spread * (static_cast<double>(c) * mx - row_sum(x, c));
      if (loss_rows) loss_rows[r] = static_cast<float>(loss);
      total += loss;
      if (grad) {
        float* gr = grad + r * c;
        const VecF a = set1(grad_scale / s);
        const VecF b = set1(static_cast<float>(-grad_scale * spread));
        row_map(gr, c, [&](int64_t i, int w) { return fmadd(load_w(gr + i, w), a, b); });
        gr[label] -= static_cast<float>(grad_scale * keep);
      }
    }
#pragma omp atomic
    sum += total;
  });
  return sum;
}

// log(1 + z) for z in [0, 1] as 2 atanh(z / (2 + z)): the series in s^2 <= 1/9 converges to
// float precision by its 8th term, with full relative accuracy for tiny z (where 1 + z would
// round away z).
inline VecF log1p_unit(VecF z) {
  const VecF s = z / (set1(2.0f) + z);
  const VecF s2 = s * s;
  VecF p = set1(1.0f / 15.0f);
  p = fmadd(p, s2, set1(1.0f / 13.0f));
  p = fmadd(p, s2, set1(1.0f / 11.0f));
  p = fmadd(p, s2, set1(1.0f / 9.0f));
  p = fmadd(p, s2, set1(1.0f / 7.0f));
  p = fmadd(p, s2, set1(1.0f / 5.0f));
  p = fmadd(p, s2, set1(1.0f / 3.0f));
  p = fmadd(p, s2, set1(1.0f));
  return set1(2.0f) * s * p;
}

double bce_with_logits(const float* x, const float* t, int64_t n, float grad_scale, float* loss,
                       float* grad) {
  double sum = 0.0;
  const VecF zero = set1(0.0f), one = set1(1.0f), scale = set1(grad_scale);
  const int64_t lines = (n + kFlushElements - 1) / kFlushElements;
  parallel_for(lines, std::max<int64_t>(1, kSoftmaxGrain / kFlushElements), [&](int64_t l0, int64_t l1) {
    double total = 0.0;
    for (int64_t l = l0; l < l1; ++l) {
      const int64_t end = std::min(n, (l + 1) * kFlushElements);
      VecF acc = zero;
      for (int64_t i = l * kFlushElements; i < end; i += kVecWidth) {
        const int w = static_cast<int>(std::min<int64_t>(kVecWidth, end - i));
        const VecF xv = load_w(x + i, w), tv = load_w(t + i, w);
        const VecF e = exp_keep_nan(-abs(xv));  // in (0, 1]: no overflow for either sign
        // max(x, 0) - x t, written without its cancellation: x (1 - t) for x > 0 (1 - t is exact
        // for t near 1, where it matters), -x t otherwise; a NaN x takes the second branch.
        const VecF l_v = select(xv > zero, xv * (one - tv), -(xv * tv)) + log1p_unit(e);
        if (loss) store_w(loss + i, l_v, w);
        acc = acc + (w == kVecWidth ? l_v : select(lanes_below(w), l_v, zero));
        if (grad) {
          const VecF r = one / (one + e);
          const VecF sig = select(xv >= zero, r, e * r);
          store_w(grad + i, (sig - tv) * scale, w);
        }
      }
      total += reduce_add(acc);
    }
#pragma omp atomic
    sum += total;
  });
  return sum;
}

}  // namespace

extern const SoftmaxKernels softmax_kernels{forward, backward, cross_entropy, bce_with_logits};

}  // namespace FG_ISA_NS
}  // namespace fusegrad
