// Flash-attention forward (Dao et al. 2022; the FlashAttention-2 loop order): one CTA takes a block
// of queries of one head and streams that head's keys and values through shared memory in tiles of
// kTile = 32, keeping for each query the running max m, the running sum l of exp(s - m) and the
// unnormalised output o in registers (the online softmax), so the Sq x Sk scores are never stored.
//
// Layout (4 warps, 128 threads): a warp owns kRows queries (16 for D <= 64, so 64 per CTA); within
// a tile, lane L owns key j0 + L, so the scores s[r] = q_r·k_L of its kRows queries are a dot
// product over shared memory (q broadcast, K rows an odd number of float4s apart: no bank conflicts), the
// row max and sum are warp shuffles, and P goes through a per-warp strip of shared memory to the
// P·V step, where lane L owns the output columns L, L + 32, ... (V read row-wise, conflict-free).
// Rows in shared memory are D padded to a multiple of 4, so q·k and the P strip are read as float4.
// Causal CTAs stop at their last query's key. Dropout (philox.h, the CPU's stream) multiplies P by
// Z / (1 - p) after l has been summed, so lse is that of the undropped softmax, as on the CPU.
#include <algorithm>
#include <stdexcept>

#include "attention/attention_common.cuh"
#include "common/cuda_check.cuh"

namespace fusegrad::cuda {
namespace {

using namespace attention_detail;

// Shared memory: Q [br][dp], K [kTile][kv_ld], V [kTile][dp], P [br][kTile] floats.
size_t forward_smem(int rows, int64_t d) {
  const int64_t br = int64_t(kWarps) * rows;
  return sizeof(float) * static_cast<size_t>(br * padded(d) + kTile * kv_ld(d) + kTile * padded(d) + br * kTile);
}

template <int kRows, int kDPL>
__global__ void __launch_bounds__(kThreads)
attention_forward_kernel(Params p, int64_t q_blocks, float* out, float* lse) {
  FG_DYNAMIC_SHARED(float, smem);
  constexpr int br = kWarps * kRows;
  const int d = p.d, dp = padded(d), ldk = kv_ld(d), warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t bh = blockIdx.x / q_blocks, b = bh / p.heads, h = bh % p.heads;
  const int64_t q0 = (blockIdx.x % q_blocks) * br, row0 = q0 + warp * kRows;
  const auto qs = smem, ks = smem + br * dp, vs = ks + kTile * ldk, ps = vs + kTile * dp + warp * kRows * kTile;
  load_tile(qs, dp, p.q + (bh * p.sq + q0) * d, p.sq - q0, br, d);

  float o[kRows][kDPL] = {}, m[kRows], l[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) m[r] = kNegInf, l[r] = 0.0f;
  const int64_t kend = p.causal ? std::min<int64_t>(p.sk, q0 + br) : p.sk;
  for (int64_t j0 = 0; j0 < kend; j0 += kTile) {
    __syncthreads();  // the previous tile's readers are done (and, the first time, Q is loaded)
    load_tile(ks, ldk, p.k + (bh * p.sk + j0) * d, p.sk - j0, kTile, d);
    load_tile(vs, dp, p.v + (bh * p.sk + j0) * d, p.sk - j0, kTile, d);
    __syncthreads();
    float s[kRows] = {};
    for (int c = 0; c < dp; c += 4) {  // s[r] = q_r · k_lane, float4 at a time
      const float4 kc = lds4(ks, lane * ldk + c);
#pragma unroll
      for (int r = 0; r < kRows; ++r) s[r] = dot4(lds4(qs, (warp * kRows + r) * dp + c), kc, s[r]);
    }
    const uint32_t keep = p.dropout ? keep_bits_query_rows<kRows>(p, b, h, row0, j0, lane) : ~0u;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {  // the online softmax update of query row0 + r
      const float x = s[r] * p.scale + score_bias(p, b, h, row0 + r, j0 + lane);
      const float m_new = fmaxf(m[r], warp_max(x));
      const float base = m_new == kNegInf ? 0.0f : m_new;  // nothing attended yet: avoid inf - inf
      const float e = expf(x - base), alpha = expf(m[r] - base);
      l[r] = l[r] * alpha + warp_sum(e);
      m[r] = m_new;
#pragma unroll
      for (int c = 0; c < kDPL; ++c) o[r][c] *= alpha;
      ps[r * kTile + lane] = (keep >> r) & 1u ? e * p.keep_scale : 0.0f;
    }
    __syncwarp();
    const int64_t valid = std::min<int64_t>(kTile, kend - j0);  // P is 0 past it (keys rounded up to 4)
    for (int t = 0; t < valid; t += 4) accumulate4<kRows, kDPL>(o, ps, t, vs, dp, d, lane);  // o += P V
    __syncwarp();  // this warp's P strip is rewritten next tile
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int64_t i = row0 + r;
    if (i >= p.sq) break;
    const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
#pragma unroll
    for (int c = 0; c < kDPL; ++c)
      if (lane + 32 * c < d) out[(bh * p.sq + i) * d + lane + 32 * c] = o[r][c] * inv;
    if (lane == 0) lse[bh * p.sq + i] = l[r] > 0.0f ? m[r] + logf(l[r]) : kNegInf;
  }
}

}  // namespace

void attention_forward(const AttentionArgs& a, const float* q, const float* k, const float* v, float* out,
                       float* lse, cudaStream_t stream, int device) {
  if (a.batch * a.heads * a.sq == 0) return;
  if (a.d < 1 || a.d > kMaxD) throw std::invalid_argument("attention_forward: CUDA kernels take 1 <= D <= 256");
  DeviceGuard guard(device);
  const Params p = make_params(a, q, k, v);
  with_columns(a.d, [&](auto dpl) {
    constexpr int kDPL = decltype(dpl)::value, kRows = rows_per_warp<kDPL>();
    const int64_t q_blocks = (a.sq + kWarps * kRows - 1) / (kWarps * kRows);
    const auto kernel = &attention_forward_kernel<kRows, kDPL>;
    allow_smem(reinterpret_cast<const void*>(kernel), forward_smem(kRows, 32 * kDPL), device);
    FG_LAUNCH((attention_forward_kernel<kRows, kDPL>), dim3(static_cast<unsigned>(q_blocks * a.batch * a.heads)),
              dim3(kThreads), forward_smem(kRows, a.d), stream, p, q_blocks, out, lse);
  });
}

}  // namespace fusegrad::cuda
