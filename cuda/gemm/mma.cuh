// The fp32-fed tensor-core GEMM mainloop (mma.sync, ldmatrix, a multi-stage cp.async pipeline) of
// the TF32 kernel (gemm_tf32.cu); a policy `Mma` says how a warp turns fp32 fragments into one mma
// (tf32: m16n8k8 on cvt.rna-rounded values; a bf16 policy would pack m16n8k16 pairs the same way,
// but gemm_bf16.cu converts its operands first instead, to halve the bytes it moves).
// C = act(A·B + bias) or C += A·B with fp32 accumulators.
//
// Layout:
//   block   a kBM×kBN tile of C, walking K in steps of kBK = 32 through kStages shared buffers
//           filled by cp.async: while the warps multiply step s, the copies of steps s+1 ..
//           s+kStages-1 are in flight (CUTLASS's sm80 "multistage" schedule: wait for the oldest
//           group, barrier, refill the buffer everyone has just finished with, multiply).
//   shared  each operand keeps the layout it has in global memory, so every copy is a straight
//           16-byte cp.async (or four 4-byte ones for misaligned views): a k-contiguous operand
//           as [l][kBK + 4] (rows 144 bytes apart: the 8 rows of an ldmatrix land in 32
//           different banks), an l-contiguous one as [k][kBL + 8] (lanes (g, t) reading element
//           (t, g) hit bank 8t + g: all different). Inputs stay fp32 in shared memory; the
//           rounding to tf32 happens in registers (which keeps A·B exact for the emulator's and
//           the GPU's mma alike).
//   warp    a (16·kTilesM)×(8·kTilesN) tile: kTilesM×kTilesN mma tiles, fed per 8 k by ldmatrix.x4
//           (k-contiguous operands: an 8×4-float block of fp32 rows is exactly a tf32 A or B
//           fragment) or by scalar shared loads (l-contiguous operands, no .trans for 32-bit data).
// A policy `Mma` provides kK8 (k8 fragments per mma), fragment_a/fragment_b (the mma's A and B
// registers from fp32 fragments, rounded to its input type) and run (one mma on the accumulators).
// A 16-bit m16n8k16 policy would build its fragments from two k8 fragments: in register pair
// (lo, hi) a lane holds physical k = (t, t+4) where the PTX table has logical k = (2t, 2t+1); A and
// B use the same permutation of k, so the sum over k is unchanged.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "common/launch.cuh"
#include "common/ptx.cuh"
#include "gemm/epilogue.cuh"
#include "gemm/operand.cuh"
#include "gemm/simt.cuh"  // tile_of_block, kMaxGridY

namespace fusegrad::cuda {

template <int kWarpsMT, int kWarpsNT, int kTilesMT, int kTilesNT, int kStagesT>
struct MmaTile {
  static constexpr int kWarpsM = kWarpsMT, kWarpsN = kWarpsNT, kTilesM = kTilesMT, kTilesN = kTilesNT;
  static constexpr int kStages = kStagesT;
  static constexpr int kThreads = 32 * kWarpsM * kWarpsN;
  static constexpr int kBK = 32;  // four k8 mma steps per barrier; rows of 8 16-byte copies
  static constexpr int kBM = 16 * kTilesM * kWarpsM, kBN = 8 * kTilesN * kWarpsN;
  static_assert(kTilesN % 2 == 0, "B fragments are loaded two n8 tiles per ldmatrix.x4");
};
// 128×128×32, 8 warps of 64×32, 3 stages: 64 accumulators a thread; per 8 k a warp issues 6
// ldmatrix.x4 for 16 mma. 3 × 32 KiB (+ padding) of shared memory, so two blocks fit an H100/H200
// SM; 3 stages are what CUTLASS's sm80 tf32 kernels use at this tile to cover global latency.
using MmaLarge = MmaTile<2, 4, 4, 4, 3>;
// 64×64×32, 4 warps of 32×32, 3 stages: for problems with fewer large tiles than SMs.
using MmaSmall = MmaTile<2, 2, 2, 4, 3>;

// Floats of one stage of an operand in shared memory, and its row length.
template <bool kKContig, int kBK, int kBL>
struct MmaStage {
  static constexpr int kLd = kKContig ? kBK + 4 : kBL + 8;
  static constexpr int kFloats = (kKContig ? kBL : kBK) * kLd;
};

template <class Tile, bool kAK, bool kBK_>
constexpr size_t mma_smem_bytes() {
  return sizeof(float) * Tile::kStages *
         (MmaStage<kAK, Tile::kBK, Tile::kBM>::kFloats + MmaStage<kBK_, Tile::kBK, Tile::kBN>::kFloats);
}

// Issues this thread's cp.asyncs of one BK×BL stage of an operand.
template <class Op, int kBK, int kBL, int kThreads, class Span>
__device__ __forceinline__ void mma_copy_stage(const Op& op, Span s, int64_t z, int64_t k0, int64_t l0, int64_t k_end) {
  using Stage = MmaStage<Op::kKContig, kBK, kBL>;
  constexpr int kGroups = kBK * kBL / 4 / kThreads;
  static_assert(kGroups * 4 * kThreads == kBK * kBL, "stage must split into whole 16-byte groups per thread");
#pragma unroll
  for (int g = 0; g < kGroups; ++g) {
    const int q = static_cast<int>(threadIdx.x) + g * kThreads;
    const int outer = Op::kKContig ? q / (kBK / 4) : q / (kBL / 4);  // l or k
    const int inner = Op::kKContig ? 4 * (q % (kBK / 4)) : 4 * (q % (kBL / 4));
    float* dst = s + outer * Stage::kLd + inner;
    if constexpr (Op::kKContig) op.copy4(dst, z, k0 + inner, l0 + outer, k_end);
    else op.copy4(dst, z, k0 + outer, l0 + inner, k_end);
  }
}

// The fp32 bits of an 8(k)-deep fragment, as m16n8k8.tf32 wants it:
//   A (rows l0..l0+15): r[0] (g, t), r[1] (g+8, t), r[2] (g, t+4), r[3] (g+8, t+4)
//   B (two n8 tiles l0.., l0+8..): r[0] (k t, n g), r[1] (t+4, g), r[2] (t, 8+g), r[3] (t+4, 8+g)
template <bool kKContig, int kLd, bool kIsA, class Span>
__device__ __forceinline__ void mma_fragment(uint32_t (&r)[4], Span s, int l0, int k0) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  if constexpr (kKContig) {  // ldmatrix.x4: lane l names row l % 8 of matrix l / 8
    const int mat = lane / 8;
    const int row = l0 + lane % 8 + 8 * (kIsA ? mat % 2 : mat / 2);
    const int col = k0 + 4 * (kIsA ? mat / 2 : mat % 2);
    ptx::ldmatrix_x4(r, static_cast<const float*>(s + row * kLd + col));
  } else {  // r[i] at (k0 + t + dk[i], l0 + g + dl[i])
    constexpr int dk[4] = {0, kIsA ? 0 : 4, kIsA ? 4 : 0, 4}, dl[4] = {0, kIsA ? 8 : 0, kIsA ? 0 : 8, 8};
#pragma unroll
    for (int i = 0; i < 4; ++i) r[i] = __float_as_uint(s[(k0 + t + dk[i]) * kLd + l0 + g + dl[i]]);
  }
}

// The multistage schedule (CUTLASS's sm80 "multistage"): the first kStages - 1 steps in flight,
// then per step wait for its copies, barrier (everyone's have landed, and everyone is done with the
// step before), refill the buffer that step used, multiply. copy(buf, step) issues a step's
// cp.asyncs into shared buffer buf; multiply(buf) consumes one. An empty group past the end keeps
// the wait count uniform; none is left in flight at the end.
// kAsyncReads: the buffers are read by wgmma (the async proxy), so each thread fences its landed
// copies to that proxy before the barrier.
template <int kStages, bool kAsyncReads = false, class Copy, class Multiply>
__device__ __forceinline__ void multistage_mainloop(int64_t steps, Copy&& copy, Multiply&& multiply) {
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < steps) copy(s, int64_t{s});
    ptx::cp_async_commit();
  }
  for (int64_t s = 0; s < steps; ++s) {
    ptx::cp_async_wait<kStages - 2>();
    if constexpr (kAsyncReads) ptx::fence_proxy_async_shared();
    __syncthreads();
    const int64_t next = s + kStages - 1;
    if (next < steps) copy(static_cast<int>(next % kStages), next);
    ptx::cp_async_commit();
    multiply(static_cast<int>(s % kStages));
  }
  ptx::cp_async_wait_all();
}

// One 32-byte step of k for a warp's kTM × kTN m16n8 tiles of a 16-bit (k16) or 8-bit (k32) mma,
// from k-contiguous shared rows of kLd elements, the step starting at element kk (kHalf elements are
// 16 bytes): A fragments by ldmatrix.x4 (rows lane % 16, k halves lane / 16), B fragments two n8
// tiles per ldmatrix.x4 (B as N×K rows, so the non-transposed load gives the "col" operand), then
// kTM·kTN mma(acc, a, b). The same bytes serve gemm_bf16.cu and gemm_int8.cu.
template <int kTM, int kTN, int kLd, int kHalf, class SpanA, class SpanB, class Acc, class Mma>
__device__ __forceinline__ void warp_mma_step(SpanA sa, SpanB sb, int wm, int wn, int kk, Acc (&acc)[kTM][kTN][4],
                                              Mma mma) {
  static_assert(kTN % 2 == 0, "B fragments come two n8 tiles per ldmatrix.x4");
  const int lane = threadIdx.x % 32;
  uint32_t fa[kTM][4], fb[kTN / 2][4];
#pragma unroll
  for (int i = 0; i < kTM; ++i) ptx::ldmatrix_x4(fa[i], &sa[(wm + 16 * i + lane % 16) * kLd + kk + lane / 16 * kHalf]);
#pragma unroll
  for (int j = 0; j < kTN / 2; ++j)
    ptx::ldmatrix_x4(fb[j], &sb[(wn + 16 * j + lane % 8 + lane / 16 * 8) * kLd + kk + lane / 8 % 2 * kHalf]);
#pragma unroll
  for (int i = 0; i < kTM; ++i)
#pragma unroll
    for (int j = 0; j < kTN; ++j) {
      const uint32_t bj[2] = {fb[j / 2][2 * (j % 2)], fb[j / 2][2 * (j % 2) + 1]};
      mma(acc[i][j], fa[i], bj);
    }
}

// Stores a warp's kTM × kTN m16n8 accumulator tiles, the first of them at (row0, col0) of C.
template <int kTM, int kTN>
__device__ __forceinline__ void mma_store(const Epilogue& ep, int64_t z, int64_t row0, int64_t col0,
                                          const float (&acc)[kTM][kTN][4]) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
  for (int i = 0; i < kTM; ++i)
#pragma unroll
    for (int j = 0; j < kTN; ++j) {
      const int64_t row = row0 + 16 * i + g, col = col0 + 8 * j + 2 * t;
      ep.store<2>(z, row, col, &acc[i][j][0]);
      ep.store<2>(z, row + 8, col, &acc[i][j][2]);
    }
}

template <class Mma, class Tile, class OpA, class OpB>
__global__ void __launch_bounds__(Tile::kThreads)
mma_gemm_kernel(const OpA a, const OpB b, const Epilogue ep, const int64_t m, const int64_t n, const int64_t k,
                const int64_t z0) {
  constexpr int kBK = Tile::kBK, kStages = Tile::kStages, kTM = Tile::kTilesM, kTN = Tile::kTilesN;
  using SA = MmaStage<OpA::kKContig, kBK, Tile::kBM>;
  using SB = MmaStage<OpB::kKContig, kBK, Tile::kBN>;
  FG_DYNAMIC_SHARED(float, smem);
  const auto stage_a = [&](int s) { return smem + s * SA::kFloats; };
  const auto stage_b = [&](int s) { return smem + kStages * SA::kFloats + s * SB::kFloats; };
  const int64_t z = z0 + blockIdx.y;
  int64_t tm, tn;
  tile_of_block(blockIdx.x, (m + Tile::kBM - 1) / Tile::kBM, (n + Tile::kBN - 1) / Tile::kBN, tm, tn);
  const int64_t m0 = tm * Tile::kBM, n0 = tn * Tile::kBN;
  const int warp = threadIdx.x / 32;
  const int wm = warp / Tile::kWarpsN * 16 * kTM, wn = warp % Tile::kWarpsN * 8 * kTN;

  const int64_t steps = (k + kBK - 1) / kBK;
  const auto copy = [&](int buf, int64_t step) {
    mma_copy_stage<OpA, kBK, Tile::kBM, Tile::kThreads>(a, stage_a(buf), z, step * kBK, m0, k);
    mma_copy_stage<OpB, kBK, Tile::kBN, Tile::kThreads>(b, stage_b(buf), z, step * kBK, n0, k);
  };
  float acc[kTM][kTN][4] = {};
  const auto multiply = [&](int buf) {
    const auto sa = stage_a(buf);
    const auto sb = stage_b(buf);
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 8 * Mma::kK8) {
      uint32_t fa[kTM][Mma::kK8][4], fb[kTN / 2][Mma::kK8][4], ua[kTM][4], ub[kTN][2];
#pragma unroll
      for (int h = 0; h < Mma::kK8; ++h) {
#pragma unroll
        for (int i = 0; i < kTM; ++i) mma_fragment<OpA::kKContig, SA::kLd, true>(fa[i][h], sa, wm + 16 * i, kk + 8 * h);
#pragma unroll
        for (int j = 0; j < kTN / 2; ++j) mma_fragment<OpB::kKContig, SB::kLd, false>(fb[j][h], sb, wn + 16 * j, kk + 8 * h);
      }
#pragma unroll
      for (int i = 0; i < kTM; ++i) Mma::fragment_a(ua[i], fa[i]);
#pragma unroll
      for (int j = 0; j < kTN; ++j) Mma::fragment_b(ub[j], fb[j / 2], 2 * (j % 2));
#pragma unroll
      for (int i = 0; i < kTM; ++i)
#pragma unroll
        for (int j = 0; j < kTN; ++j) Mma::run(acc[i][j], ua[i], ub[j]);
    }
  };
  multistage_mainloop<kStages>(steps, copy, multiply);
  mma_store(ep, z, m0 + wm, n0 + wn, acc);
}

}  // namespace fusegrad::cuda
