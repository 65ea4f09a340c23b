// Attention forward, flash-attention style, compiled once per ISA level.
//
// Work items are (head, block of kBlockQ queries), split into contiguous runs over the threads,
// so a thread sees each of its heads' query blocks in turn and packs that head's K^T once. For
// each query block the key blocks stream past: the score tile S = Q K^T (microkernel on the
// packed K^T panels, Q read in place), then, row by row, an online softmax in base 2 (running
// max m and sum l; the output rows already accumulated are rescaled by 2^(m_old - m_new) when
// the max grows), then O += P V (microkernel, P and V read in place). At the end O /= l and
// lse = (m + log2 l) ln 2. Causal key blocks entirely after a query block are skipped.
#include <algorithm>
#include <cstring>

#include "attention/attention_impl.h"
#include "common/threads.h"
#include "gemm/pack.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace attn {
namespace {

struct Workspace {
  PackBuffer kt, s;
};

// One query block [i0, i0 + mq) of head (b, h): writes its out rows and lse.
void query_block(const AttentionProblem& p, int64_t b, int64_t h, int64_t i0, int mq, const float* q,
                 const float* kt, const float* v, float* out, float* lse, float* s) {
  const int64_t d = p.d;
  const float c2 = p.scale * kLog2e;
  const bool dropout = p.dropout_p > 0.0f;
  const uint32_t thresh = philox::threshold(p.dropout_p);
  const float inv_keep = 1.0f / (1.0f - p.dropout_p);
  float m[kBlockQ], l[kBlockQ];
  alignas(64) float z[kBlockK];
  for (int r = 0; r < mq; ++r) m[r] = kNegInf, l[r] = 0.0f;
  float* o = out + i0 * d;
  std::memset(o, 0, sizeof(float) * mq * d);
  const int64_t j_end = p.causal ? std::min(p.sk, i0 + mq) : p.sk;
  for (int64_t j0 = 0; j0 < j_end; j0 += kBlockK) {
    const int nk = static_cast<int>(std::min<int64_t>(kBlockK, j_end - j0));  // causal: no key after the block's last query
    scores_gemm(mq, nk, d, q + i0 * d, d, kt + j0 * d, s, kBlockK);
    for (int r = 0; r < mq; ++r) {
      const int64_t i = i0 + r;
      float* sr = s + r * kBlockK;
      const int valid = causal_valid(p, i, j0, nk);
      const float* mk = mask_row(p, b, h, i);
      const float tile_max = valid ? scores_to_log2(sr, mk ? mk + j0 : nullptr, valid, c2) : kNegInf;
      const float m_new = std::max(m[r], tile_max);
      if (m_new == kNegInf) {  // nothing attended yet: this row of P is 0
        std::memset(sr, 0, sizeof(float) * nk);
        continue;
      }
      const VecF mv = set1(m_new);
      VecF sum = set1(0.0f);
      int c = 0;
      for (; c + kVecWidth <= valid; c += kVecWidth) {
        const VecF e = exp2_nonpositive(load(sr + c) - mv);
        store(sr + c, e);
        sum = sum + e;
      }
      if (c < valid) {
        const int w = valid - c;
        const VecF e = exp2_nonpositive(load_partial(sr + c, w) - mv);
        store_partial(sr + c, e, w);
        sum = sum + select(lanes_below(w), e, set1(0.0f));
      }
      if (valid < nk) std::memset(sr + valid, 0, sizeof(float) * (nk - valid));
      if (m_new != m[r]) {
        const float alpha = m[r] == kNegInf ? 0.0f : exp2_scalar(m[r] - m_new);
        l[r] *= alpha;
        float* orow = o + r * d;
        const VecF av = set1(alpha);
        for (int64_t e = 0; e < d; e += kVecWidth) {
          const int w = static_cast<int>(std::min<int64_t>(kVecWidth, d - e));
          store_w(orow + e, load_w(orow + e, w) * av, w);
        }
        m[r] = m_new;
      }
      l[r] += reduce_add(sum);
      if (dropout) apply_dropout(p, b, h, i, j0, sr, valid, thresh, inv_keep, z);
    }
    small_gemm(mq, d, nk, s, kBlockK, 1, v + j0 * d, d, o, d, true);
  }
  for (int r = 0; r < mq; ++r) {
    float* orow = o + r * d;
    const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
    const VecF iv = set1(inv);
    for (int64_t e = 0; e < d; e += kVecWidth) {
      const int w = static_cast<int>(std::min<int64_t>(kVecWidth, d - e));
      store_w(orow + e, load_w(orow + e, w) * iv, w);
    }
    lse[i0 + r] = l[r] > 0.0f ? (m[r] + std::log2(l[r])) * kLn2 : kNegInf;
  }
}

}  // namespace

void forward(const AttentionProblem& p, const float* q, const float* k, const float* v, float* out, float* lse) {
  const int64_t heads = p.batch * p.heads;
  const int64_t qblocks = (p.sq + kBlockQ - 1) / kBlockQ;
  const int64_t d = p.d;
  const int64_t sk_panels = (p.sk + kNR - 1) / kNR * kNR;
  // One item is a query block; about 2·48·Sk·D FMAs, so a handful already outweigh waking a thread.
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 18) / std::max<int64_t>(1, p.sk * d));
  parallel_for(heads * qblocks, grain, [&](int64_t begin, int64_t end) {
    static thread_local Workspace ws;
    float* kt = ws.kt.get(std::max<int64_t>(sk_panels * d, 1));
    float* s = ws.s.get(int64_t(kBlockQ) * kBlockK);
    int64_t packed = -1;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t bh = item / qblocks, qb = item % qblocks;
      if (bh != packed) {
        if (p.sk > 0) pack_b(k + bh * p.sk * d, 1, d, d, p.sk, kt);
        packed = bh;
      }
      const int64_t i0 = qb * kBlockQ;
      const int mq = static_cast<int>(std::min<int64_t>(kBlockQ, p.sq - i0));
      query_block(p, bh / p.heads, bh % p.heads, i0, mq, q + bh * p.sq * d, kt, v + bh * p.sk * d,
                  out + bh * p.sq * d, lse + bh * p.sq, s);
    }
  });
}

}  // namespace attn
}  // namespace FG_ISA_NS
}  // namespace fusegrad
