// Flash-attention backward, the FlashAttention-2 scheme without atomics: the probabilities are
// recomputed tile by tile from the forward's log-sum-exp (P_ij = exp(s_ij - lse_i)), and
//   D_i  = rowsum(dO_i ∘ O_i)                                   (attention_backward_rowdot)
//   dP_ij = (dO_i · v_j) Z_ij / (1 - p),   dS_ij = P_ij (dP_ij - D_i)
//   dV_j = sum_i P_ij Z_ij / (1 - p) dO_i,  dK_j = scale sum_i dS_ij q_i   (attention_backward_dkdv)
//   dQ_i = scale sum_j dS_ij k_j                                (attention_backward_dq)
// dK/dV and dQ are two kernels, each owning its output rows (a CTA per key block, resp. query
// block), so every gradient is written once, in a fixed order: deterministic, no atomicAdd on dQ
// at the price of computing the scores twice. Both use the forward's layout (attention_forward.cu):
// 4 warps owning kRows rows each, 32 streamed rows of the other side in shared memory, one per lane,
// and per-warp strips of P / dS in shared memory between the dot-product and the accumulation step,
// rows of D padded to a multiple of 4 so both read float4s.
#include <algorithm>
#include <stdexcept>

#include "attention/attention_common.cuh"
#include "common/cuda_check.cuh"

namespace fusegrad::cuda {
namespace {

using namespace attention_detail;

// The backward's two dot products per (warp row r, lane): s[r] += a_r · x and t[r] += b_r · y over
// dp padded columns, a and b being this warp's broadcast rows (from `rows`, dp floats apart) and
// x, y the lane's own rows (at `own`), float4 at a time.
template <int kRows, class S>
__device__ __forceinline__ void dot_pairs(float (&s)[kRows], float (&t)[kRows], S a, S b, int rows, int dp, S x, S y,
                                          int own) {
  for (int c = 0; c < dp; c += 4) {
    const float4 xc = lds4(x, own + c), yc = lds4(y, own + c);
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      s[r] = dot4(lds4(a, rows + r * dp + c), xc, s[r]);
      t[r] = dot4(lds4(b, rows + r * dp + c), yc, t[r]);
    }
  }
}

// D_i = sum_c dO_ic O_ic: a warp per row (grid-stride), the row read coalesced.
__global__ void __launch_bounds__(256) attention_backward_rowdot(const float* go, const float* o, float* dvec,
                                                                 int64_t rows, int d) {
  const int lane = threadIdx.x % 32;
  for (int64_t r = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32; r < rows;
       r += int64_t(gridDim.x) * blockDim.x / 32) {
    float s = 0.0f;
    for (int c = lane; c < d; c += 32) s += go[r * d + c] * o[r * d + c];
    s = warp_sum(s);
    if (lane == 0) dvec[r] = s;
  }
}

// Shared floats of the dQ kernel: Q, dO [br][dp]; K, V [kTile][kv_ld]; dS [br][kTile].
size_t dq_smem(int rows, int64_t d) {
  const int64_t br = int64_t(kWarps) * rows;
  return sizeof(float) * static_cast<size_t>(2 * br * padded(d) + 2 * kTile * kv_ld(d) + br * kTile);
}

// dQ: a CTA per query block; lane L holds key j0 + L of the streamed K/V tile.
template <int kRows, int kDPL>
__global__ void __launch_bounds__(kThreads)
attention_backward_dq(Params p, int64_t q_blocks, const float* lse, const float* dvec, const float* go, float* dq) {
  FG_DYNAMIC_SHARED(float, smem);
  constexpr int br = kWarps * kRows;
  const int d = p.d, dp = padded(d), ldk = kv_ld(d), warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t bh = blockIdx.x / q_blocks, b = bh / p.heads, h = bh % p.heads;
  const int64_t q0 = (blockIdx.x % q_blocks) * br, row0 = q0 + warp * kRows;
  const auto qs = smem, gs = qs + br * dp, ks = gs + br * dp, vs = ks + kTile * ldk;
  const auto dss = vs + kTile * ldk + warp * kRows * kTile;
  load_tile(qs, dp, p.q + (bh * p.sq + q0) * d, p.sq - q0, br, d);
  load_tile(gs, dp, go + (bh * p.sq + q0) * d, p.sq - q0, br, d);
  float lr[kRows], dr[kRows], acc[kRows][kDPL] = {};
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const bool in = row0 + r < p.sq;
    lr[r] = in ? lse[bh * p.sq + row0 + r] : kNegInf;
    dr[r] = in ? dvec[bh * p.sq + row0 + r] : 0.0f;
  }
  const int64_t kend = p.causal ? std::min<int64_t>(p.sk, q0 + br) : p.sk;
  for (int64_t j0 = 0; j0 < kend; j0 += kTile) {
    __syncthreads();
    load_tile(ks, ldk, p.k + (bh * p.sk + j0) * d, p.sk - j0, kTile, d);
    load_tile(vs, ldk, p.v + (bh * p.sk + j0) * d, p.sk - j0, kTile, d);
    __syncthreads();
    float s[kRows] = {}, dp_[kRows] = {};  // s = q_r · k_lane, dp = dO_r · v_lane
    dot_pairs<kRows>(s, dp_, qs, gs, warp * kRows * dp, dp, ks, vs, lane * ldk);
    const uint32_t keep = p.dropout ? keep_bits_query_rows<kRows>(p, b, h, row0, j0, lane) : ~0u;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const float x = s[r] * p.scale + score_bias(p, b, h, row0 + r, j0 + lane);
      const float pr = lr[r] == kNegInf ? 0.0f : expf(x - lr[r]);
      const float dpr = (keep >> r) & 1u ? dp_[r] * p.keep_scale : 0.0f;
      dss[r * kTile + lane] = pr * (dpr - dr[r]);
    }
    __syncwarp();
    const int64_t valid = std::min<int64_t>(kTile, kend - j0);
    for (int t = 0; t < valid; t += 4) accumulate4<kRows, kDPL>(acc, dss, t, ks, ldk, d, lane);  // dQ += dS K
    __syncwarp();
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    if (row0 + r >= p.sq) break;
#pragma unroll
    for (int c = 0; c < kDPL; ++c)
      if (lane + 32 * c < d) dq[(bh * p.sq + row0 + r) * d + lane + 32 * c] = acc[r][c] * p.scale;
  }
}

// Shared floats of the dK/dV kernel: K, V [br][dp]; Q, dO [kTile][kv_ld]; P, dS [br][kTile];
// lse and D of the tile's queries [2][kTile].
size_t dkdv_smem(int rows, int64_t d) {
  const int64_t br = int64_t(kWarps) * rows;
  return sizeof(float) * static_cast<size_t>(2 * br * padded(d) + 2 * kTile * kv_ld(d) + 2 * br * kTile + 2 * kTile);
}

// dK, dV: a CTA per key block (the warp owning keys krow0..), streaming the queries that can see
// them (causal: from the block's first key on) in tiles of 32; lane L holds query i0 + L.
template <int kRows, int kDPL>
__global__ void __launch_bounds__(kThreads)
attention_backward_dkdv(Params p, int64_t k_blocks, const float* lse, const float* dvec, const float* go, float* dk,
                        float* dv) {
  FG_DYNAMIC_SHARED(float, smem);
  constexpr int br = kWarps * kRows;
  const int d = p.d, dp = padded(d), ldq = kv_ld(d), warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t bh = blockIdx.x / k_blocks, b = bh / p.heads, h = bh % p.heads;
  const int64_t key0 = (blockIdx.x % k_blocks) * br, krow0 = key0 + warp * kRows;
  const auto ks = smem, vs = ks + br * dp, qs = vs + br * dp, gs = qs + kTile * ldq;
  const auto ps = gs + kTile * ldq + warp * kRows * kTile, dss = gs + kTile * ldq + (br + warp * kRows) * kTile;
  const auto stats = gs + kTile * ldq + 2 * br * kTile;  // lse [kTile], D [kTile]
  load_tile(ks, dp, p.k + (bh * p.sk + key0) * d, p.sk - key0, br, d);
  load_tile(vs, dp, p.v + (bh * p.sk + key0) * d, p.sk - key0, br, d);
  float gk[kRows][kDPL] = {}, gv[kRows][kDPL] = {};
  for (int64_t i0 = p.causal ? key0 / kTile * kTile : 0; i0 < p.sq; i0 += kTile) {
    __syncthreads();
    load_tile(qs, ldq, p.q + (bh * p.sq + i0) * d, p.sq - i0, kTile, d);
    load_tile(gs, ldq, go + (bh * p.sq + i0) * d, p.sq - i0, kTile, d);
    if (threadIdx.x < kTile) {
      const bool in = i0 + threadIdx.x < p.sq;
      stats[threadIdx.x] = in ? lse[bh * p.sq + i0 + threadIdx.x] : kNegInf;
      stats[kTile + threadIdx.x] = in ? dvec[bh * p.sq + i0 + threadIdx.x] : 0.0f;
    }
    __syncthreads();
    float s[kRows] = {}, dp_[kRows] = {};  // s = k_r · q_lane, dp = v_r · dO_lane
    dot_pairs<kRows>(s, dp_, ks, vs, warp * kRows * dp, dp, qs, gs, lane * ldq);
    const int64_t i = i0 + lane;
    const float li = stats[lane], di = stats[kTile + lane];
    const uint32_t keep = p.dropout ? keep_bits_key_rows<kRows>(p, b, h, i, krow0) : ~0u;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const float x = s[r] * p.scale + score_bias(p, b, h, i, krow0 + r);
      const float pr = li == kNegInf ? 0.0f : expf(x - li);
      const bool kept = (keep >> r) & 1u;
      ps[r * kTile + lane] = kept ? pr * p.keep_scale : 0.0f;
      dss[r * kTile + lane] = pr * ((kept ? dp_[r] * p.keep_scale : 0.0f) - di);
    }
    __syncwarp();
    const int64_t valid = std::min<int64_t>(kTile, p.sq - i0);
    for (int t = 0; t < valid; t += 4) {
      accumulate4<kRows, kDPL>(gv, ps, t, gs, ldq, d, lane);   // dV += P~ dO
      accumulate4<kRows, kDPL>(gk, dss, t, qs, ldq, d, lane);  // dK += dS Q
    }
    __syncwarp();
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int64_t j = krow0 + r;
    if (j >= p.sk) break;
#pragma unroll
    for (int c = 0; c < kDPL; ++c)
      if (lane + 32 * c < d) {
        dk[(bh * p.sk + j) * d + lane + 32 * c] = gk[r][c] * p.scale;
        dv[(bh * p.sk + j) * d + lane + 32 * c] = gv[r][c];
      }
  }
}

}  // namespace

int64_t attention_backward_workspace(const AttentionArgs& a) { return a.batch * a.heads * a.sq; }

void attention_backward(const AttentionArgs& a, const float* q, const float* k, const float* v, const float* out,
                        const float* lse, const float* grad_out, float* dq, float* dk, float* dv, float* workspace,
                        cudaStream_t stream, int device) {
  const int64_t bh = a.batch * a.heads;
  if (bh == 0 || (a.sq == 0 && a.sk == 0)) return;
  if (a.d < 1 || a.d > kMaxD) throw std::invalid_argument("attention_backward: CUDA kernels take 1 <= D <= 256");
  DeviceGuard guard(device);
  const Params p = make_params(a, q, k, v);
  if (a.sq > 0)
    FG_LAUNCH(attention_backward_rowdot, dim3(grid_for(bh * a.sq, 8, device)), dim3(256), 0, stream, grad_out, out,
              workspace, bh * a.sq, static_cast<int>(a.d));
  with_columns(a.d, [&](auto dpl) {
    constexpr int kDPL = decltype(dpl)::value, kRows = rows_per_warp<kDPL>(), br = kWarps * kRows;
    if (a.sq > 0) {
      const int64_t q_blocks = (a.sq + br - 1) / br;
      allow_smem(reinterpret_cast<const void*>(&attention_backward_dq<kRows, kDPL>), dq_smem(kRows, 32 * kDPL),
                 device);
      FG_LAUNCH((attention_backward_dq<kRows, kDPL>), dim3(static_cast<unsigned>(q_blocks * bh)), dim3(kThreads),
                dq_smem(kRows, a.d), stream, p, q_blocks, lse, workspace, grad_out, dq);
    }
    if (a.sk > 0) {
      const int64_t k_blocks = (a.sk + br - 1) / br;
      allow_smem(reinterpret_cast<const void*>(&attention_backward_dkdv<kRows, kDPL>), dkdv_smem(kRows, 32 * kDPL),
                 device);
      FG_LAUNCH((attention_backward_dkdv<kRows, kDPL>), dim3(static_cast<unsigned>(k_blocks * bh)), dim3(kThreads),
                dkdv_smem(kRows, a.d), stream, p, k_blocks, lse, workspace, grad_out, dk, dv);
    }
  });
}

}  // namespace fusegrad::cuda
