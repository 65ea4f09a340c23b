// LayerNorm over the last n floats of each row, forward and backward, and the embedding's
// scatter-add backward: the per-token kernels of a Transformer beside attention. Compiled once per
// ISA level.
//
// LayerNorm forward: per row, mean, then the variance of the centred row (two passes over a row
// that stays in L1, no cancellation), rstd = 1/sqrt(var + eps), y = (x - mean) rstd w + b; mean
// and rstd are kept for the backward: dx = rstd (gw - mean(gw) - xhat mean(gw xhat)), gw = g w.
// The weight and bias gradients sum over rows in fixed chunks of kChunkRows, each chunk's partial
// summed in order and the partials added in order, so they do not depend on the thread count.
//
// Embedding backward: a counting sort of the indices (CSR: for each row of the table, the
// positions that read it, in increasing order), then each table row sums its positions' gradient
// rows in that order: deterministic, parallel over table rows, no atomics.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "attention/attention_impl.h"
#include "common/threads.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace attn {
namespace {

constexpr int64_t kChunkRows = 64;

inline float row_sum(const float* x, int64_t n) {
  VecF s0 = set1(0.0f), s1 = s0;
  int64_t c = 0;
  for (; c + 2 * kVecWidth <= n; c += 2 * kVecWidth) {
    s0 = s0 + load(x + c);
    s1 = s1 + load(x + c + kVecWidth);
  }
  for (; c < n; c += kVecWidth) s0 = s0 + load_w(x + c, static_cast<int>(std::min<int64_t>(kVecWidth, n - c)));
  return reduce_add(s0 + s1);
}

inline float centred_square_sum(const float* x, int64_t n, float mean) {
  const VecF m = set1(mean);
  VecF s = set1(0.0f);
  for (int64_t c = 0; c < n; c += kVecWidth) {
    const int w = static_cast<int>(std::min<int64_t>(kVecWidth, n - c));
    const VecF d = select(lanes_below(w), load_w(x + c, w) - m, set1(0.0f));
    s = fmadd(d, d, s);
  }
  return reduce_add(s);
}

}  // namespace

void layer_norm_forward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                        int64_t rows, int64_t n, float eps) {
  parallel_for(rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(n, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * n;
      float* yr = y + r * n;
      const float mu = row_sum(xr, n) / static_cast<float>(n);
      const float rs = 1.0f / std::sqrt(centred_square_sum(xr, n, mu) / static_cast<float>(n) + eps);
      mean[r] = mu;
      rstd[r] = rs;
      const VecF mv = set1(mu), rv = set1(rs);
      for (int64_t c = 0; c < n; c += kVecWidth) {
        const int wd = static_cast<int>(std::min<int64_t>(kVecWidth, n - c));
        VecF v = (load_w(xr + c, wd) - mv) * rv;
        if (w) v = v * load_w(w + c, wd);
        if (b) v = v + load_w(b + c, wd);
        store_w(yr + c, v, wd);
      }
    }
  });
}

void layer_norm_backward(const float* g, const float* x, const float* mean, const float* rstd, const float* w,
                         float* dx, float* dw, float* db, int64_t rows, int64_t n) {
  const int64_t chunks = (rows + kChunkRows - 1) / kChunkRows;
  const bool params = dw != nullptr || db != nullptr;
  std::vector<float> partial(params ? static_cast<size_t>(2 * chunks * n) : 0);
  parallel_for(chunks, 1, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      float* pw = params ? partial.data() + 2 * k * n : nullptr;
      float* pb = params ? pw + n : nullptr;
      if (params) std::memset(pw, 0, sizeof(float) * 2 * n);
      for (int64_t r = k * kChunkRows; r < std::min(rows, (k + 1) * kChunkRows); ++r) {
        const float* gr = g + r * n;
        const float* xr = x + r * n;
        const VecF mv = set1(mean[r]), rv = set1(rstd[r]);
        VecF sa = set1(0.0f), sc = set1(0.0f);
        for (int64_t c = 0; c < n; c += kVecWidth) {
          const int wd = static_cast<int>(std::min<int64_t>(kVecWidth, n - c));
          const VecF xh = (load_w(xr + c, wd) - mv) * rv;
          const VecF gv = load_w(gr + c, wd);
          const VecF gw = w ? gv * load_w(w + c, wd) : gv;
          sa = sa + gw;
          sc = fmadd(gw, xh, sc);
          if (params) {
            store_w(pw + c, fmadd(gv, xh, load_w(pw + c, wd)), wd);
            store_w(pb + c, load_w(pb + c, wd) + gv, wd);
          }
        }
        const float inv_n = 1.0f / static_cast<float>(n);
        const VecF a = set1(reduce_add(sa) * inv_n), cc = set1(reduce_add(sc) * inv_n);
        float* dr = dx + r * n;
        for (int64_t c = 0; c < n; c += kVecWidth) {
          const int wd = static_cast<int>(std::min<int64_t>(kVecWidth, n - c));
          const VecF xh = (load_w(xr + c, wd) - mv) * rv;
          const VecF gv = load_w(gr + c, wd);
          const VecF gw = w ? gv * load_w(w + c, wd) : gv;
          store_w(dr + c, rv * (gw - a - xh * cc), wd);
        }
      }
    }
  });
  if (!params) return;
  parallel_for(n, 256, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      float sw = 0.0f, sb = 0.0f;
      for (int64_t k = 0; k < chunks; ++k) {
        sw += partial[2 * k * n + c];
        sb += partial[2 * k * n + n + c];
      }
      if (dw) dw[c] = sw;
      if (db) db[c] = sb;
    }
  });
}

void embedding_backward(const int64_t* idx, int64_t count, const float* g, int64_t dim, float* dw, int64_t vocab,
                        int64_t padding_idx) {
  std::vector<int64_t> start(static_cast<size_t>(vocab + 1), 0), order(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) ++start[idx[i] + 1];
  for (int64_t v = 0; v < vocab; ++v) start[v + 1] += start[v];
  std::vector<int64_t> fill(start.begin(), start.end() - 1);
  for (int64_t i = 0; i < count; ++i) order[fill[idx[i]]++] = i;
  parallel_for(vocab, std::max<int64_t>(1, 4096 / std::max<int64_t>(dim, 1)), [&](int64_t v0, int64_t v1) {
    for (int64_t v = v0; v < v1; ++v) {
      float* row = dw + v * dim;
      std::memset(row, 0, sizeof(float) * dim);
      if (v == padding_idx) continue;
      for (int64_t p = start[v]; p < start[v + 1]; ++p) {
        const float* gr = g + order[p] * dim;
        for (int64_t c = 0; c < dim; c += kVecWidth) {
          const int wd = static_cast<int>(std::min<int64_t>(kVecWidth, dim - c));
          store_w(row + c, load_w(row + c, wd) + load_w(gr + c, wd), wd);
        }
      }
    }
  });
}

}  // namespace attn
}  // namespace FG_ISA_NS
}  // namespace fusegrad
