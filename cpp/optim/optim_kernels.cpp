// Fused multi-tensor optimizer kernels, compiled once per ISA level.
//
// An optimizer step is pure memory traffic (Adam reads p, g, m, v and writes p, m, v: 28 bytes per
// parameter), so each kernel is a single vectorised pass that touches every byte once, and the
// whole tensor list is one piece of work split evenly between threads by element count: a thread
// may cover the end of one tensor and the start of the next, and a list of 300 small tensors
// still costs one fork-join. Non-temporal stores do not help here: every line written was just
// read, so no read-for-ownership is saved, and measured on the reference machine (30M-parameter
// AdamW, interleaved A/B) streaming the three updated arrays made the step 1.3-1.9x slower.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/elementwise.h"
#include "common/simd.h"
#include "common/threads.h"
#include "optim/optim.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace {

// Below 32K floats (128 KiB per array) per thread, waking a second thread costs more than the
// half of the pass it would take over.
constexpr int64_t kGrainFloats = 1 << 15;
// Thread boundaries fall on multiples of a cache line (in the concatenated list) so two threads
// rarely write the same line.
constexpr int64_t kLineFloats = 16;
// The norm sums each run of this many elements in float vector lanes, then adds the run's total
// into a double: float error stays at the level of ~64 additions per lane, while the
// inner loop keeps float's full vector width.
constexpr int64_t kNormRun = 1024;

// Calls body(thread, tensor, begin, end) for every piece of the concatenation of `count` tensors
// of the given sizes, each thread taking one contiguous range of the concatenation. Returns the
// number of threads used (thread indices are below it).
template <class Body>
int over_tensor_list(const int64_t* sizes, int64_t count, Body body) {
  std::vector<int64_t> prefix(static_cast<size_t>(count) + 1, 0);
  for (int64_t t = 0; t < count; ++t) prefix[t + 1] = prefix[t] + sizes[t];
  const int64_t total = prefix[count];
  if (total == 0) return 0;
  const int threads = static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>(get_num_threads(), total / kGrainFloats)));

  auto run = [&](int th, int nt) {
    auto bound = [&](int k) { return k >= nt ? total : (total * k / nt) / kLineFloats * kLineFloats; };
    int64_t lo = bound(th);
    const int64_t hi = bound(th + 1);
    if (lo >= hi) return;
    int64_t t = std::upper_bound(prefix.begin(), prefix.end(), lo) - prefix.begin() - 1;
    while (lo < hi) {
      const int64_t end = std::min(hi, prefix[t + 1]);
      if (end > lo) body(th, t, lo - prefix[t], end - prefix[t]);
      lo = end;
      ++t;
    }
  };
  if (threads == 1) {
    run(0, 1);
  } else {
#pragma omp parallel num_threads(threads)
    {
      const DenormalsAreZero mode;
      run(omp_get_thread_num(), omp_get_num_threads());
    }
  }
  return threads;
}

// Full vectors, then one masked tail.
template <class Fn>
inline void vector_loop(int64_t begin, int64_t end, Fn fn) {
  int64_t i = begin;
  for (; i + kVecWidth <= end; i += kVecWidth) fn(i, kVecWidth);
  if (i < end) fn(i, static_cast<int>(end - i));
}

inline void store_n(float* p, VecF a, int width) {
  if (width == kVecWidth) store(p, a);
  else store_partial(p, a, width);
}

// --- Adam / AdamW -------------------------------------------------------------------------------
// torch.optim.Adam(W) for one element, in its order of operations:
//   g = maximize ? -g : g;  L2: g += wd * p;  decoupled: p *= 1 - lr * wd
//   m = lerp(m, g, 1 - beta1);  v = v * beta2 + (1 - beta2) * g * g
//   p = p - step_size * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)
template <WeightDecay kDecay>
void adam_range(const AdamScalars& s, float* p, const float* g, float* m, float* v, int64_t begin,
                int64_t end) {
  const VecF sign = set1(s.maximize ? -1.0f : 1.0f), wd = set1(s.weight_decay),
             decay = set1(s.decay_factor), w1 = set1(s.one_minus_beta1), b2 = set1(s.beta2),
             w2 = set1(s.one_minus_beta2), bc2 = set1(s.bias_correction2_sqrt), eps = set1(s.eps),
             neg_step = set1(s.neg_step_size);
  vector_loop(begin, end, [&](int64_t i, int w) {
    VecF gi = load_n(g + i, w) * sign;
    VecF pi = load_n(p + i, w);
    VecF mi = load_n(m + i, w);
    VecF vi = load_n(v + i, w);
    if constexpr (kDecay == WeightDecay::l2) gi = fmadd(wd, pi, gi);
    if constexpr (kDecay == WeightDecay::decoupled) pi = pi * decay;
    mi = fmadd(w1, gi - mi, mi);
    vi = fmadd(w2 * gi, gi, vi * b2);
    const VecF denom = sqrt(vi) / bc2 + eps;
    pi = fmadd(neg_step, mi / denom, pi);
    store_n(p + i, pi, w);
    store_n(m + i, mi, w);
    store_n(v + i, vi, w);
  });
}

template <WeightDecay kDecay>
void adam_list(const AdamScalars& s, float* const* p, const float* const* g, float* const* m,
               float* const* v, const int64_t* sizes, int64_t count) {
  over_tensor_list(sizes, count, [&](int, int64_t t, int64_t b, int64_t e) {
    adam_range<kDecay>(s, p[t], g[t], m[t], v[t], b, e);
  });
}

void adam(const AdamScalars& s, float* const* p, const float* const* g, float* const* m,
          float* const* v, const int64_t* sizes, int64_t count) {
  switch (s.decay) {
    case WeightDecay::none: adam_list<WeightDecay::none>(s, p, g, m, v, sizes, count); break;
    case WeightDecay::l2: adam_list<WeightDecay::l2>(s, p, g, m, v, sizes, count); break;
    case WeightDecay::decoupled: adam_list<WeightDecay::decoupled>(s, p, g, m, v, sizes, count); break;
  }
}

// --- SGD ----------------------------------------------------------------------------------------
// torch.optim.SGD for one element:
//   d = maximize ? -g : g;  d += wd * p (wd != 0)
//   momentum: buf = first step ? d : buf * momentum + (1 - dampening) * d
//             d = nesterov ? d + momentum * buf : buf
//   p = p - lr * d
enum class Momentum { none, first, running };

template <bool kDecay, Momentum kMomentum, bool kNesterov>
void sgd_range(const SgdScalars& s, float* p, const float* g, float* buf, int64_t begin, int64_t end) {
  const VecF sign = set1(s.maximize ? -1.0f : 1.0f), wd = set1(s.weight_decay),
             mom = set1(s.momentum), damp = set1(s.one_minus_dampening), neg_lr = set1(s.neg_lr);
  vector_loop(begin, end, [&](int64_t i, int w) {
    VecF d = load_n(g + i, w) * sign;
    VecF pi = load_n(p + i, w);
    if constexpr (kDecay) d = fmadd(wd, pi, d);
    if constexpr (kMomentum != Momentum::none) {
      VecF b = d;
      if constexpr (kMomentum == Momentum::running) b = fmadd(damp, d, load_n(buf + i, w) * mom);
      store_n(buf + i, b, w);
      d = kNesterov ? fmadd(mom, b, d) : b;
    }
    store_n(p + i, fmadd(neg_lr, d, pi), w);
  });
}

template <bool kDecay, Momentum kMomentum, bool kNesterov>
void sgd_list(const SgdScalars& s, float* const* p, const float* const* g, float* const* buf,
              const int64_t* sizes, int64_t count) {
  over_tensor_list(sizes, count, [&](int, int64_t t, int64_t b, int64_t e) {
    sgd_range<kDecay, kMomentum, kNesterov>(s, p[t], g[t], buf ? buf[t] : nullptr, b, e);
  });
}

template <bool kDecay, Momentum kMomentum>
void sgd_nesterov(const SgdScalars& s, float* const* p, const float* const* g, float* const* buf,
                  const int64_t* sizes, int64_t count) {
  if (s.nesterov) sgd_list<kDecay, kMomentum, true>(s, p, g, buf, sizes, count);
  else sgd_list<kDecay, kMomentum, false>(s, p, g, buf, sizes, count);
}

template <bool kDecay>
void sgd_momentum(const SgdScalars& s, float* const* p, const float* const* g, float* const* buf,
                  const int64_t* sizes, int64_t count) {
  if (s.momentum == 0.0f) sgd_list<kDecay, Momentum::none, false>(s, p, g, buf, sizes, count);
  else if (s.first_step) sgd_nesterov<kDecay, Momentum::first>(s, p, g, buf, sizes, count);
  else sgd_nesterov<kDecay, Momentum::running>(s, p, g, buf, sizes, count);
}

void sgd(const SgdScalars& s, float* const* p, const float* const* g, float* const* buf,
         const int64_t* sizes, int64_t count) {
  if (s.weight_decay != 0.0f) sgd_momentum<true>(s, p, g, buf, sizes, count);
  else sgd_momentum<false>(s, p, g, buf, sizes, count);
}

// --- gradient norm and scaling ------------------------------------------------------------------

// sum |g|^p (or max |g|, with a NaN count so that max never hides a NaN) over [begin, end).
template <NormKind kKind>
double norm_range(const float* g, int64_t begin, int64_t end, double p) {
  if constexpr (kKind == NormKind::general) {
    double acc = 0.0;
    for (int64_t i = begin; i < end; ++i) acc += std::pow(std::fabs(static_cast<double>(g[i])), p);
    return acc;
  } else {
    const VecF zero = set1(0.0f), one = set1(1.0f);
    double total = 0.0;
    VecF vmax = zero, nans = zero;
    for (int64_t run = begin; run < end; run += kNormRun) {
      VecF acc = zero;
      vector_loop(run, std::min(end, run + kNormRun), [&](int64_t i, int w) {
        const VecF x = load_n(g + i, w);  // masked lanes load 0, which adds nothing
        if constexpr (kKind == NormKind::two) acc = fmadd(x, x, acc);
        else if constexpr (kKind == NormKind::one) acc = acc + abs(x);
        else {
          vmax = max(vmax, abs(x));
          nans = nans + select(x >= x, zero, one);
        }
      });
      if constexpr (kKind != NormKind::inf) total += reduce_add(acc);
    }
    if constexpr (kKind == NormKind::inf) {
      float lanes[kVecWidth];
      store(lanes, vmax);
      float m = 0.0f;
      for (float l : lanes) m = std::max(m, l);
      return reduce_add(nans) > 0.0f ? std::numeric_limits<double>::quiet_NaN() : double(m);
    }
    return total;
  }
}

template <NormKind kKind>
double norm_list(double p, const float* const* g, const int64_t* sizes, int64_t count) {
  std::vector<double> partial(static_cast<size_t>(std::max(1, get_num_threads())), 0.0);
  const int used = over_tensor_list(sizes, count, [&](int th, int64_t t, int64_t b, int64_t e) {
    const double r = norm_range<kKind>(g[t], b, e, p);
    double& acc = partial[th];
    if constexpr (kKind == NormKind::inf) acc = (std::isnan(acc) || std::isnan(r)) ? r + acc : std::max(acc, r);
    else acc += r;
  });
  double result = 0.0;
  for (int th = 0; th < used; ++th) {  // fixed order: the same thread count gives the same bits
    if constexpr (kKind == NormKind::inf)
      result = (std::isnan(result) || std::isnan(partial[th])) ? result + partial[th]
                                                               : std::max(result, partial[th]);
    else result += partial[th];
  }
  return result;
}

double norm_power(NormKind kind, double p, const float* const* g, const int64_t* sizes, int64_t count) {
  switch (kind) {
    case NormKind::two: return norm_list<NormKind::two>(p, g, sizes, count);
    case NormKind::one: return norm_list<NormKind::one>(p, g, sizes, count);
    case NormKind::inf: return norm_list<NormKind::inf>(p, g, sizes, count);
    case NormKind::general: break;
  }
  return norm_list<NormKind::general>(p, g, sizes, count);
}

void scale(float coef, float* const* g, const int64_t* sizes, int64_t count) {
  const VecF c = set1(coef);
  over_tensor_list(sizes, count, [&](int, int64_t t, int64_t b, int64_t e) {
    float* x = g[t];
    vector_loop(b, e, [&](int64_t i, int w) { store_n(x + i, load_n(x + i, w) * c, w); });
  });
}

}  // namespace

extern const OptimKernels optim_kernels{adam, sgd, norm_power, scale};

}  // namespace FG_ISA_NS
}  // namespace fusegrad
