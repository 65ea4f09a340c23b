// The BF16 tensor-core GEMM: mma.sync m16n8k16 on operands rounded to bf16 (to nearest even),
// products exact and summed in fp32, so the error is that of bf16 inputs (relative rounding up to
// 2^-9 each; ~3e-3 of ‖A·B‖ on random data).
//
// Two steps, because the operands arrive as fp32 in any of four layouts:
//   1. to_bf16_kernel copies A (as M×K) and B (as N×K) into a workspace as bf16, k contiguous,
//      zero-padded to whole tiles (rows to the tile's BM or BN, k to kBK). This reads each input
//      once and writes half its bytes; the product then reads half the bytes an fp32 operand
//      would, from L2 and shared memory alike, which is what an fp32-fed kernel cannot get past.
//   2. bf16_gemm_kernel: a block computes a kBM×kBN tile of C, walking k in steps of kBK = 32
//      through kStages shared buffers filled by 16-byte cp.async (mma.cuh's multistage_mainloop).
//      Padding makes every copy whole and in bounds; only the epilogue checks edges.
//      Shared rows are 32 bf16 padded to 40 (80 bytes), so the 8 rows of an ldmatrix fall in
//      distinct banks. Each warp owns a (16·kTilesM)×(8·kTilesN) tile: per 16 of k it loads kTilesM
//      A fragments and kTilesN/2 pairs of B fragments with ldmatrix.x4 and issues kTilesM·kTilesN
//      mma. The fragments are the PTX ISA's: A rows (lane % 16), k halves (lane / 16); B as N×K
//      rows, so a non-transposed ldmatrix gives the "col" operand directly.
//
// On Hopper (sm_90a, opt-in: tiles "wgmma" or "wgmma_wide") bf16_wgmma_kernel takes step 2 instead:
// two warpgroups each issue wgmma m64nNk16 on a 128×N block tile, A and B read by the tensor cores straight
// from shared memory, in the no-swizzle K-major layout of 8×8 core matrices (one 16-byte row of
// a core matrix per cp.async, so a warp's copies fill 512 contiguous bytes: no bank conflicts).
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <set>
#include <stdexcept>

#include "common/cuda_check.cuh"
#include "common/launch.cuh"
#include "common/ptx.cuh"
#include "gemm/gemm_launch.cuh"
#include "gemm/mma.cuh"   // multistage_mainloop, mma_store
#include "gemm/simt.cuh"  // tile_of_block, simt_grid, kMaxGridY

namespace fusegrad::cuda {
namespace {

constexpr int kBK = 32;       // k per stage: one 64-byte row of bf16 per tile row
constexpr int kLd = kBK + 8;  // shared row length in bf16 (80 bytes)

template <int kWarpsMT, int kWarpsNT, int kTilesMT, int kTilesNT, int kStagesT>
struct Bf16Tile {
  static constexpr int kWarpsM = kWarpsMT, kWarpsN = kWarpsNT, kTilesM = kTilesMT, kTilesN = kTilesNT;
  static constexpr int kStages = kStagesT, kBK = ::fusegrad::cuda::kBK;
  static constexpr bool kWgmma = false;
  static constexpr int kThreads = 32 * kWarpsM * kWarpsN;
  static constexpr int kBM = 16 * kTilesM * kWarpsM, kBN = 8 * kTilesN * kWarpsN;
  static constexpr int kSmemBytes = 2 * kStages * (kBM + kBN) * kLd;
  static_assert(kTilesN % 2 == 0, "B fragments come two n8 tiles per ldmatrix.x4");
  static_assert(kBM * kBK / 8 % kThreads == 0 && kBN * kBK / 8 % kThreads == 0, "whole 16-byte copies per thread");
};
// 128×128, 8 warps of 64×32, 4 stages: 4 × 20 KiB of shared memory, so two blocks share an SM.
using Bf16Large = Bf16Tile<2, 4, 4, 4, 4>;
// 64×64, 4 warps of 32×32: for problems with fewer large tiles than SMs.
using Bf16Small = Bf16Tile<2, 2, 2, 4, 4>;

// The wgmma tiles: 128×kBN as two warpgroups of 64×kBN, 64 of k per stage (four k16 wgmmas).
// 128×128 with 5 stages (160 KiB) or 128×256 with 4 (192 KiB): one block per SM, kStages - 2
// steps of copies in flight. A stage of an operand holds its rows in groups of 8 (core-matrix
// rows), each group's 8 k-groups of 8 bf16 in turn: element (r, k) at
// ((r / 8) * 8 + k / 8) * 64 + (r % 8) * 8 + k % 8, so the core matrices adjacent in k are 128
// bytes apart (the descriptor's leading offset) and those adjacent in rows 1024 (its stride offset).
template <int kBNT, int kStagesT>
struct WgmmaTile {
  static constexpr int kBM = 128, kBN = kBNT, kBK = 64, kStages = kStagesT, kThreads = 256;
  static constexpr bool kWgmma = true;
  static constexpr int kSmemBytes = 2 * kStages * (kBM + kBN) * kBK;
  static constexpr uint32_t kLeadingBytes = 128, kStrideBytes = 1024;
  static_assert(kBN == 128 || kBN == 256, "wgmma tiles are m64n128 or m64n256 per warpgroup");
  static_assert(kStages >= 3, "a stage is refilled two steps after its wgmma was issued");
};
using WgmmaNarrow = WgmmaTile<128, 5>;
using WgmmaWide = WgmmaTile<256, 4>;

// dst (items × lp × kp bf16, k contiguous) = the L×K operand rounded to bf16, element (l, k) of item z
// at src[z·sb + l·sl + k·sk] (sk == 1 or sl == 1), zero outside L×K. A 32×32 tile goes through
// shared memory so the reads run along the source's contiguous dimension and the writes along k.
// Grid: (lp / 32, kp / 32, items of this launch); block 32×8.
__global__ void __launch_bounds__(256) to_bf16_kernel(const float* src, int64_t sl, int64_t sk, int64_t sb, int64_t l_end,
                                                      int64_t k_end, __nv_bfloat16* dst, int64_t lp, int64_t kp,
                                                      int64_t z0) {
  FG_SHARED(float, tile, [32][33]);
  const int64_t z = z0 + blockIdx.z, l0 = int64_t(blockIdx.x) * 32, k0 = int64_t(blockIdx.y) * 32;
  const bool k_contiguous = sk == 1;
  const int x = threadIdx.x;
  for (int i = threadIdx.y; i < 32; i += 8) {
    const int dl = k_contiguous ? i : x, dk = k_contiguous ? x : i;
    const int64_t l = l0 + dl, k = k0 + dk;
    tile[dl][dk] = l < l_end && k < k_end ? src[z * sb + l * sl + k * sk] : 0.0f;
  }
  __syncthreads();
  for (int i = threadIdx.y; i < 32; i += 8) dst[(z * lp + l0 + i) * kp + k0 + x] = __float2bfloat16_rn(tile[i][x]);
}

template <class Tile>
__global__ void __launch_bounds__(Tile::kThreads)
bf16_gemm_kernel(const __nv_bfloat16* a, const __nv_bfloat16* b, const Epilogue ep, const int64_t m, const int64_t n,
                 const int64_t kp, const int64_t a_bs, const int64_t b_bs, const int64_t z0) {
  constexpr int kStages = Tile::kStages, kTM = Tile::kTilesM, kTN = Tile::kTilesN;
  constexpr int kStageA = Tile::kBM * kLd, kStageB = Tile::kBN * kLd;
  FG_DYNAMIC_SHARED(__nv_bfloat16, smem);
  const auto stage_a = [&](int s) { return smem + s * kStageA; };
  const auto stage_b = [&](int s) { return smem + kStages * kStageA + s * kStageB; };
  const int64_t z = z0 + blockIdx.y;
  int64_t tm, tn;
  tile_of_block(blockIdx.x, (m + Tile::kBM - 1) / Tile::kBM, (n + Tile::kBN - 1) / Tile::kBN, tm, tn);
  const __nv_bfloat16* ga = a + z * a_bs + tm * Tile::kBM * kp;
  const __nv_bfloat16* gb = b + z * b_bs + tn * Tile::kBN * kp;
  const int warp = threadIdx.x / 32;
  const int wm = warp / Tile::kWarpsN * 16 * kTM, wn = warp % Tile::kWarpsN * 8 * kTN;

  // One stage: every tile row is four 16-byte copies.
  const auto copy_stage = [&](int buf, int64_t step) {
    const int64_t k0 = step * kBK;
#pragma unroll
    for (int q = threadIdx.x; q < Tile::kBM * 4; q += Tile::kThreads)
      ptx::cp_async_cg(static_cast<__nv_bfloat16*>(stage_a(buf) + q / 4 * kLd + q % 4 * 8),
                       ga + q / 4 * kp + k0 + q % 4 * 8);
#pragma unroll
    for (int q = threadIdx.x; q < Tile::kBN * 4; q += Tile::kThreads)
      ptx::cp_async_cg(static_cast<__nv_bfloat16*>(stage_b(buf) + q / 4 * kLd + q % 4 * 8),
                       gb + q / 4 * kp + k0 + q % 4 * 8);
  };
  float acc[kTM][kTN][4] = {};
  const auto multiply = [&](int buf) {
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 16)
      warp_mma_step<kTM, kTN, kLd, 8>(stage_a(buf), stage_b(buf), wm, wn, kk, acc,
                                      [](float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
                                        ptx::mma_m16n8k16_bf16(d, a, b, d);
                                      });
  };
  multistage_mainloop<kStages>(kp / kBK, copy_stage, multiply);
  mma_store(ep, z, tm * Tile::kBM + wm, tn * Tile::kBN + wn, acc);
}

// Step 2 on Hopper: the block's tile is that of bf16_gemm_kernel, computed by wgmma. Per k step of
// 64 each warpgroup fences its accumulators, issues four wgmma of k16 and commits them, then waits
// only for the group before (wait_group 1), so the tensor cores start on this step while the last
// one finishes. A buffer is therefore refilled two steps after its wgmmas were issued: copies run
// kStages - 2 steps ahead, and the barrier of a step passes only once every warpgroup has seen the
// group of two steps back complete.
template <class T>
__global__ void __launch_bounds__(T::kThreads, 1)
bf16_wgmma_kernel(const __nv_bfloat16* a, const __nv_bfloat16* b, const Epilogue ep, const int64_t m, const int64_t n,
                  const int64_t kp, const int64_t a_bs, const int64_t b_bs, const int64_t z0) {
  constexpr int kStageA = T::kBM * T::kBK, kStageB = T::kBN * T::kBK, kAhead = T::kStages - 2;
  FG_DYNAMIC_SHARED(__nv_bfloat16, smem);
  const auto stage_a = [&](int s) { return smem + s * kStageA; };
  const auto stage_b = [&](int s) { return smem + T::kStages * kStageA + s * kStageB; };
  const int64_t z = z0 + blockIdx.y;
  int64_t tm, tn;
  tile_of_block(blockIdx.x, (m + T::kBM - 1) / T::kBM, (n + T::kBN - 1) / T::kBN, tm, tn);
  const __nv_bfloat16* ga = a + z * a_bs + tm * T::kBM * kp;
  const __nv_bfloat16* gb = b + z * b_bs + tn * T::kBN * kp;
  const int warpgroup = threadIdx.x / 128, warp = threadIdx.x / 32;

  // 16-byte piece q of a stage: row group q / 64, k group q / 8 % 8, row q % 8 of the core matrix.
  const auto copy_operand = [&](auto dst, const __nv_bfloat16* src, int rows, int64_t k0) {
#pragma unroll
    for (int q = threadIdx.x; q < rows * 8; q += T::kThreads)
      ptx::cp_async_cg(static_cast<__nv_bfloat16*>(dst + q * 8), src + (q / 64 * 8 + q % 8) * kp + k0 + q / 8 % 8 * 8);
  };
  const auto copy_stage = [&](int buf, int64_t step) {
    copy_operand(stage_a(buf), ga, T::kBM, step * T::kBK);
    copy_operand(stage_b(buf), gb, T::kBN, step * T::kBK);
  };
  float acc[T::kBN / 2] = {};
  const auto multiply = [&](int buf) {
    ptx::wgmma_fence_operands(acc);
    ptx::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < T::kBK / 16; ++kk) {
      // Core matrix (row group, k group) starts 64 elements further per k group, 512 per row group.
      const uint64_t da = ptx::smem_descriptor(
          static_cast<const __nv_bfloat16*>(stage_a(buf) + (warpgroup * 64 + 2 * kk) * 64), T::kLeadingBytes,
          T::kStrideBytes);
      const uint64_t db = ptx::smem_descriptor(static_cast<const __nv_bfloat16*>(stage_b(buf) + 2 * kk * 64),
                                               T::kLeadingBytes, T::kStrideBytes);
      if constexpr (T::kBN == 128) ptx::wgmma_m64n128k16_bf16(acc, da, db);
      else ptx::wgmma_m64n256k16_bf16(acc, da, db);
    }
    ptx::wgmma_commit();
    ptx::wgmma_wait<1>();
    ptx::wgmma_fence_operands(acc);
  };

  const int64_t steps = kp / T::kBK;
  for (int s = 0; s < kAhead; ++s) {
    if (s < steps) copy_stage(s, s);
    ptx::cp_async_commit();
  }
  for (int64_t s = 0; s < steps; ++s) {
    ptx::cp_async_wait<kAhead - 1>();  // this step's copies; the newer ones may still fly
    ptx::fence_proxy_async_shared();   // landed by ordinary copies, read by the tensor cores
    __syncthreads();
    const int64_t next = s + kAhead;   // into the buffer of step s - 2, whose wgmmas are done
    if (next < steps) copy_stage(static_cast<int>(next % T::kStages), next);
    ptx::cp_async_commit();
    multiply(static_cast<int>(s % T::kStages));
  }
  ptx::wgmma_wait<0>();
  ptx::wgmma_fence_operands(acc);
  ptx::cp_async_wait_all();
  // Warp w of a warpgroup holds its rows 16w .. 16w + 15 as kBN / 8 m16n8 accumulator tiles.
  mma_store(ep, z, tm * T::kBM + warpgroup * 64 + warp % 4 * 16, tn * T::kBN,
            reinterpret_cast<const float(&)[1][T::kBN / 8][4]>(acc));
}

int64_t round_up(int64_t v, int64_t to) { return (v + to - 1) / to * to; }

// The device's stream-ordered pool keeps what it has mapped: by default it returns its memory to
// the system at every synchronisation, and a training loop that synchronises each step would map
// its GEMM workspaces anew each time. Set once per device.
void keep_pool_memory(int device) {
  static std::mutex mutex;
  static std::set<int> done;
  std::lock_guard<std::mutex> lock(mutex);
  if (!done.insert(device).second) return;
  cudaMemPool_t pool;
  FG_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
  uint64_t keep = UINT64_MAX;
  FG_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
}

// The workspace of one product, freed in stream order when the launches are queued (or failed).
struct StreamBuffer {
  void* p = nullptr;
  cudaStream_t stream;
  StreamBuffer(size_t bytes, cudaStream_t s) : stream(s) { FG_CUDA_CHECK(cudaMallocAsync(&p, bytes, stream)); }
  ~StreamBuffer() { cudaFreeAsync(p, stream); }
  StreamBuffer(const StreamBuffer&) = delete;
  StreamBuffer& operator=(const StreamBuffer&) = delete;
};

// items copies of an L×K operand (element (l, k) of item z at src[z·sb + l·sl + k·sk]) into dst.
void to_bf16(const float* src, int64_t sl, int64_t sk, int64_t sb, int64_t l_end, int64_t k_end, int64_t items,
             __nv_bfloat16* dst, int64_t lp, int64_t kp, cudaStream_t stream) {
  if (lp / 32 >= (int64_t{1} << 31) || kp / 32 > kMaxGridY)
    throw std::invalid_argument("gemm: operand too large for the bf16 conversion's grid");
  for (int64_t z0 = 0; z0 < items; z0 += kMaxGridY) {
    const dim3 grid(static_cast<unsigned>(lp / 32), static_cast<unsigned>(kp / 32),
                    static_cast<unsigned>(std::min(items - z0, kMaxGridY)));
    FG_LAUNCH(to_bf16_kernel, grid, dim3(32, 8), 0, stream, src, sl, sk, sb, l_end, k_end, dst, lp, kp, z0);
  }
}

template <class Tile>
void launch_bf16(const GemmArgs& g, cudaStream_t stream, int device) {
  const int64_t mp = round_up(g.m, Tile::kBM), np = round_up(g.n, Tile::kBN), kp = round_up(g.k, Tile::kBK);
  // An operand with batch stride 0 is one matrix shared by every item: converted once.
  const int64_t items_a = g.a_bs == 0 ? 1 : g.batch, items_b = g.b_bs == 0 ? 1 : g.batch;
  const int64_t a_elems = items_a * mp * kp, b_elems = items_b * np * kp;
  keep_pool_memory(device);
  StreamBuffer ws(static_cast<size_t>(std::max<int64_t>(a_elems + b_elems, 1)) * sizeof(__nv_bfloat16), stream);
  auto* a = static_cast<__nv_bfloat16*>(ws.p);
  auto* b = a + a_elems;
  if (kp > 0) {
    to_bf16(g.a, g.a_rs, g.a_cs, g.a_bs, g.m, g.k, items_a, a, mp, kp, stream);  // A as M×K
    to_bf16(g.b, g.b_cs, g.b_rs, g.b_bs, g.n, g.k, items_b, b, np, kp, stream);  // B as N×K
  }
  const Epilogue ep = gemm_epilogue(g);
  const int64_t a_bs = items_a == 1 ? 0 : mp * kp, b_bs = items_b == 1 ? 0 : np * kp;
  if constexpr (Tile::kWgmma) {
    allow_dynamic_smem(reinterpret_cast<const void*>(bf16_wgmma_kernel<Tile>), Tile::kSmemBytes, device);
    for (int64_t z0 = 0; z0 < g.batch; z0 += kMaxGridY)
      FG_LAUNCH((bf16_wgmma_kernel<Tile>), simt_grid<Tile>(g.m, g.n, g.batch - z0), Tile::kThreads, Tile::kSmemBytes,
                stream, a, b, ep, g.m, g.n, kp, a_bs, b_bs, z0);
  } else {
    allow_dynamic_smem(reinterpret_cast<const void*>(bf16_gemm_kernel<Tile>), Tile::kSmemBytes, device);
    for (int64_t z0 = 0; z0 < g.batch; z0 += kMaxGridY)
      FG_LAUNCH((bf16_gemm_kernel<Tile>), simt_grid<Tile>(g.m, g.n, g.batch - z0), Tile::kThreads, Tile::kSmemBytes,
                stream, a, b, ep, g.m, g.n, kp, a_bs, b_bs, z0);
  }
}

}  // namespace

void gemm_bf16(const GemmArgs& g, GemmTiles tiles, bool large, cudaStream_t stream, int device) {
  if (tiles == GemmTiles::wgmma || tiles == GemmTiles::wgmma_wide) {
    require_wgmma(device);
    if (tiles == GemmTiles::wgmma) launch_bf16<WgmmaNarrow>(g, stream, device);
    else launch_bf16<WgmmaWide>(g, stream, device);
  } else if (large) {
    launch_bf16<Bf16Large>(g, stream, device);
  } else {
    launch_bf16<Bf16Small>(g, stream, device);
  }
}

}  // namespace fusegrad::cuda
