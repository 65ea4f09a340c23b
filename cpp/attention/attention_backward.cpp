// Attention backward (FlashAttention-2's order), compiled once per ISA level.
//
// dQ, dK and dV rows are each written by one thread with no atomics or reductions, and the result
// does not depend on the thread count (the two schedules are at the bottom). Per head: pack
// K^T and V^T into panels, Delta_i = dO_i·O_i, zero dQ; then for each key block j (its dK_j, dV_j
// rows accumulate in place) and each query block i that may attend to it:
//   S = Q_i K_j^T, P = 2^(S·scale·log2e + mask·log2e - lse_i·log2e)   (P recomputed, never stored)
//   dP = dO_i V_j^T;  with dropout Z (philox.h): Pd = P ⊙ Z, dP ⊙= Z
//   dS = scale · P ⊙ (dP - Delta_i)
//   dV_j += Pd^T dO_i,  dK_j += dS^T Q_i,  dQ_i += dS K_j
// All five products run on the GEMM microkernel with their operands read in place (the
// transposed ones through A strides) or from the per-head panels.
#include <algorithm>
#include <cstring>
#include <vector>

#include "attention/attention_impl.h"
#include "common/threads.h"
#include "gemm/pack.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace attn {
namespace {

struct Workspace {
  PackBuffer kt, vt, s, dp, pd, rows;
};

constexpr int kLd = kBlockKB;  // row stride of the tiles

struct Head {
  const float *q, *k, *v, *o, *go, *kt, *vt;
  float *dq, *dk, *dv;
  const float *delta, *lse2;
  int64_t b, h;
};

constexpr unsigned kKeyGrads = 1, kQueryGrads = 2;

// One (query block, key block) pair of a head: adds its share to dK_j and dV_j (kKeyGrads) and/or
// dQ_i (kQueryGrads).
void block_pair(const AttentionProblem& p, const Head& hd, int64_t i0, int mq, int64_t j0, int nk, float* s,
                float* dpt, float* pd, unsigned what) {
  const int64_t d = p.d;
  const float c2 = p.scale * kLog2e;
  const bool dropout = p.dropout_p > 0.0f;
  const uint32_t thresh = philox::threshold(p.dropout_p);
  const float inv_keep = 1.0f / (1.0f - p.dropout_p);
  scores_gemm(mq, nk, d, hd.q + i0 * d, d, hd.kt + j0 * d, s, kLd);
  scores_gemm(mq, nk, d, hd.go + i0 * d, d, hd.vt + j0 * d, dpt, kLd);
  alignas(64) float z[kBlockKB];
  const VecF sc = set1(p.scale);
  for (int r = 0; r < mq; ++r) {
    const int64_t i = i0 + r;
    float* sr = s + r * kLd;
    float* dr = dpt + r * kLd;
    float* pr = dropout ? pd + r * kLd : sr;
    const int valid = hd.lse2[i] == kNegInf ? 0 : causal_valid(p, i, j0, nk);
    if (valid) {
      const float* mk = mask_row(p, hd.b, hd.h, i);
      scores_to_log2(sr, mk ? mk + j0 : nullptr, valid, c2);
      if (dropout) dropout_factors(p, hd.b, hd.h, i, j0, z, valid, thresh, inv_keep);
      const VecF lv = set1(hd.lse2[i]), dv = set1(hd.delta[i]);
      for (int c = 0; c < valid; c += kVecWidth) {
        const int w = std::min(kVecWidth, valid - c);
        const VecF pv = exp2_nonpositive(load_w(sr + c, w) - lv);
        VecF g = load_w(dr + c, w);
        if (dropout) {
          const VecF zv = load_w(z + c, w);
          store_w(pr + c, pv * zv, w);
          g = g * zv;
        } else {
          store_w(sr + c, pv, w);
        }
        store_w(dr + c, pv * (g - dv) * sc, w);
      }
    }
    if (valid < nk) {
      std::memset(pr + valid, 0, sizeof(float) * (nk - valid));
      std::memset(dr + valid, 0, sizeof(float) * (nk - valid));
    }
  }
  const float* pt = dropout ? pd : s;
  if (what & kKeyGrads) {
    small_gemm(nk, d, mq, pt, 1, kLd, hd.go + i0 * d, d, hd.dv + j0 * d, d, true);   // dV_j += Pd^T dO_i
    small_gemm(nk, d, mq, dpt, 1, kLd, hd.q + i0 * d, d, hd.dk + j0 * d, d, true);   // dK_j += dS^T Q_i
  }
  if (what & kQueryGrads)
    small_gemm(mq, d, nk, dpt, kLd, 1, hd.k + j0 * d, d, hd.dq + i0 * d, d, true);   // dQ_i += dS K_j
}

// Head bh's pointers, its packed K^T and V^T (into kt, vt) and its Delta and base-2 lse rows (into
// rows, 2·Sq floats).
Head prepare_head(const AttentionProblem& p, int64_t bh, const float* q, const float* k, const float* v,
                  const float* out, const float* lse, const float* grad_out, float* dq, float* dk, float* dv,
                  float* kt, float* vt, float* rows) {
  const int64_t d = p.d;
  Head hd;
  hd.b = bh / p.heads;
  hd.h = bh % p.heads;
  hd.q = q + bh * p.sq * d;
  hd.o = out + bh * p.sq * d;
  hd.go = grad_out + bh * p.sq * d;
  hd.k = k + bh * p.sk * d;
  hd.v = v + bh * p.sk * d;
  hd.dq = dq + bh * p.sq * d;
  hd.dk = dk + bh * p.sk * d;
  hd.dv = dv + bh * p.sk * d;
  hd.kt = kt;
  hd.vt = vt;
  if (p.sk > 0) {
    pack_b(hd.k, 1, d, d, p.sk, kt);
    pack_b(hd.v, 1, d, d, p.sk, vt);
  }
  float* delta = rows;
  float* lse2 = rows + p.sq;
  for (int64_t i = 0; i < p.sq; ++i) {
    const float* a = hd.o + i * d;
    const float* g = hd.go + i * d;
    VecF acc = set1(0.0f);
    for (int64_t e = 0; e < d; e += kVecWidth) {
      const int w = static_cast<int>(std::min<int64_t>(kVecWidth, d - e));
      acc = fmadd(load_w(a + e, w), load_w(g + e, w), acc);
    }
    delta[i] = reduce_add(acc);
    const float l = lse[bh * p.sq + i];
    lse2[i] = l == kNegInf ? kNegInf : l * kLog2e;
  }
  hd.delta = delta;
  hd.lse2 = lse2;
  return hd;
}

// Key block j of a head: dK_j and dV_j over every query block that may attend to it.
void key_block(const AttentionProblem& p, const Head& hd, int64_t j0, float* s, float* dpt, float* pd, unsigned what) {
  const int nk = static_cast<int>(std::min<int64_t>(kBlockKB, p.sk - j0));
  const int64_t i_start = p.causal ? j0 / kBlockQ * kBlockQ : 0;
  for (int64_t i0 = i_start; i0 < p.sq; i0 += kBlockQ)
    block_pair(p, hd, i0, static_cast<int>(std::min<int64_t>(kBlockQ, p.sq - i0)), j0, nk, s, dpt, pd, what);
}

}  // namespace

// Two schedules with the same arithmetic in the same order (so the same bits):
//  * heads >= threads: a thread owns whole heads and makes one pass per head, key blocks outer.
//  * fewer heads than threads (one long sequence): the heads are prepared once, then the key
//    blocks of every head are shared out for dK, dV, and the query blocks for dQ, which sums its
//    key blocks in the same ascending order; the scores and dP are recomputed in the second pass.
void backward(const AttentionProblem& p, const float* q, const float* k, const float* v, const float* out,
              const float* lse, const float* grad_out, float* dq, float* dk, float* dv) {
  const int64_t heads = p.batch * p.heads;
  const int64_t d = p.d;
  const int64_t sk_panels = (p.sk + kNR - 1) / kNR * kNR;
  const int64_t kpanel = std::max<int64_t>(sk_panels * d, 1), nrows = std::max<int64_t>(2 * p.sq, 1);
  std::memset(dq, 0, sizeof(float) * heads * p.sq * d);
  std::memset(dk, 0, sizeof(float) * heads * p.sk * d);
  std::memset(dv, 0, sizeof(float) * heads * p.sk * d);
  if (p.sk == 0 || p.sq == 0) return;
  const auto tiles = [](Workspace& ws, float** s, float** dpt, float** pd) {
    *s = ws.s.get(int64_t(kBlockQ) * kLd);
    *dpt = ws.dp.get(int64_t(kBlockQ) * kLd);
    *pd = ws.pd.get(int64_t(kBlockQ) * kLd);
  };
  const int64_t kblocks = (p.sk + kBlockKB - 1) / kBlockKB, qblocks = (p.sq + kBlockQ - 1) / kBlockQ;
  if (heads >= get_num_threads() || (kblocks < 2 && qblocks < 2)) {
    parallel_for(heads, 1, [&](int64_t begin, int64_t end) {
      static thread_local Workspace ws;
      float *s, *dpt, *pd;
      tiles(ws, &s, &dpt, &pd);
      float* kt = ws.kt.get(kpanel);
      float* vt = ws.vt.get(kpanel);
      float* rows = ws.rows.get(nrows);
      for (int64_t bh = begin; bh < end; ++bh) {
        const Head hd = prepare_head(p, bh, q, k, v, out, lse, grad_out, dq, dk, dv, kt, vt, rows);
        for (int64_t j0 = 0; j0 < p.sk; j0 += kBlockKB) key_block(p, hd, j0, s, dpt, pd, kKeyGrads | kQueryGrads);
      }
    });
    return;
  }
  std::vector<float> packs(static_cast<size_t>(heads * 2 * kpanel)), rows(static_cast<size_t>(heads * nrows));
  std::vector<Head> hds(static_cast<size_t>(heads));
  parallel_for(heads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t bh = begin; bh < end; ++bh)
      hds[bh] = prepare_head(p, bh, q, k, v, out, lse, grad_out, dq, dk, dv, packs.data() + 2 * bh * kpanel,
                             packs.data() + (2 * bh + 1) * kpanel, rows.data() + bh * nrows);
  });
  parallel_for(heads * kblocks, 1, [&](int64_t begin, int64_t end) {
    static thread_local Workspace ws;
    float *s, *dpt, *pd;
    tiles(ws, &s, &dpt, &pd);
    for (int64_t item = begin; item < end; ++item)
      key_block(p, hds[item / kblocks], item % kblocks * kBlockKB, s, dpt, pd, kKeyGrads);
  });
  parallel_for(heads * qblocks, 1, [&](int64_t begin, int64_t end) {
    static thread_local Workspace ws;
    float *s, *dpt, *pd;
    tiles(ws, &s, &dpt, &pd);
    for (int64_t item = begin; item < end; ++item) {
      const Head& hd = hds[item / qblocks];
      const int64_t i0 = item % qblocks * kBlockQ;
      const int mq = static_cast<int>(std::min<int64_t>(kBlockQ, p.sq - i0));
      const int64_t j_end = p.causal ? std::min(p.sk, i0 + mq) : p.sk;
      for (int64_t j0 = 0; j0 < j_end; j0 += kBlockKB)
        block_pair(p, hd, i0, mq, j0, static_cast<int>(std::min<int64_t>(kBlockKB, p.sk - j0)), s, dpt, pd,
                   kQueryGrads);
    }
  });
}

}  // namespace attn
}  // namespace FG_ISA_NS
}  // namespace fusegrad
