// The fp32 SIMT GEMM mainloop, shared by the GEMM (gemm_simt.cu) and the convolutions as implicit
// GEMMs (cuda/conv/): C[z] (=|+=) act(A[z]·B[z] + bias) where A and B are operands of
// operand.cuh (strided matrices or convolution gathers) and the epilogue is epilogue.cuh's.
//
// Layout, from the outside in (the classic register-blocked SGEMM, as in CUTLASS's SIMT path):
//   block   a kBM×kBN tile of C; walks K in steps of kBK = 8, staging A as As[k][m] and B as
//           Bs[k][n] in shared memory, double-buffered: the next step's global loads are issued
//           into registers before this step's FMAs and stored to the other buffer after them,
//           so their latency hides behind the math and one barrier per step suffices.
//   warp    a (16·kSubM)×(32·kSubN) tile: its lanes form a 4×8 grid, and each lane owns kSubM×kSubN
//           4×4 sub-tiles spaced 16 rows and 32 columns apart, so that per k a lane reads its A
//           values as kSubM float4s and its B values as kSubN float4s, the eight (four) lanes of
//           a row of the warp reading 128 (64) contiguous bytes: no bank conflicts, and 4·kSubM +
//           4·kSubN shared loads for 16·kSubM·kSubN FMAs.
//   thread  a (4·kSubM)×(4·kSubN) register tile of accumulators.
// Shared rows are padded by kPad = 4 floats: a k-contiguous operand is written transposed (four
// scalar stores per 16-byte load), and with the pad those stores from one warp hit 32 different
// banks; 4 keeps every row 16-byte aligned for the float4 reads.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/launch.cuh"
#include "gemm/epilogue.cuh"

namespace fusegrad::cuda {

template <int kWarpsMT, int kWarpsNT, int kSubMT, int kSubNT, int kMinBlocksT>
struct SimtTile {
  static constexpr int kWarpsM = kWarpsMT, kWarpsN = kWarpsNT, kSubM = kSubMT, kSubN = kSubNT;
  static constexpr int kThreads = 32 * kWarpsM * kWarpsN;
  static constexpr int kMinBlocks = kMinBlocksT;  // blocks per SM the registers must allow
  static constexpr int kBK = 8;  // one float4 group per thread per operand and step (see below)
  static constexpr int kPad = 4;
  static constexpr int kWM = 16 * kSubM, kWN = 32 * kSubN;  // warp tile
  static constexpr int kBM = kWM * kWarpsM, kBN = kWN * kWarpsN;
};
// 128×128 tiles, 256 threads, 8×8 accumulators a thread: 16 FMAs per shared load. Each step
// moves 128×8 floats of A and of B: one float4 a thread. Registers capped at 128 (two blocks, 16
// warps, per SM) so that one block's barrier wait is covered by the other's FMAs.
using SimtLarge = SimtTile<4, 2, 2, 2, 2>;
// 64×64 tiles, 128 threads, 8×4 accumulators: four times the blocks of SimtLarge, for problems
// whose large tiles would not fill the GPU's SMs once. Again one float4 a thread per operand;
// four blocks per SM (again 128 registers at most).
using SimtSmall = SimtTile<2, 2, 2, 1, 4>;

// Which tile of C block `id` computes: tiles are visited in column strips kGroupM tiles tall, so
// that blocks running at the same time share rows of A and columns of B in L2 (Triton's order and
// its default of 8: a wave of 132-264 blocks then covers about 8 × 30 tiles, reading 8 row panels
// of A and 30 column panels of B instead of 1 and 250). 32-bit arithmetic: a grid has fewer than
// 2^31 blocks (and so tiles).
constexpr int64_t kGroupM = 8;
__device__ __forceinline__ void tile_of_block(uint32_t id, int64_t tiles_m, int64_t tiles_n, int64_t& tm, int64_t& tn) {
  const uint32_t per_group = static_cast<uint32_t>(kGroupM * tiles_n);
  const uint32_t first_m = id / per_group * kGroupM, in_group = id % per_group;
  const uint32_t group_m = static_cast<uint32_t>(tiles_m - first_m < kGroupM ? tiles_m - first_m : kGroupM);
  tm = first_m + in_group % group_m;
  tn = in_group / group_m;
}

// A BK×BL tile of an operand, kGroups float4 groups a thread: loaded from global memory into
// registers, then stored to shared memory as S[k][l] (transposing a k-contiguous operand). A
// thread's groups keep their l from step to step, so what the operand derives from l alone (a
// pixel's coordinates, a row's address) is worked out once, in `rows`.
template <class Op, int kBK, int kBL, int kThreads>
struct SimtTileLoad {
  static constexpr int kGroups = kBK * kBL / 4 / kThreads;
  static_assert(kGroups * 4 * kThreads == kBK * kBL, "tile must split into whole float4 groups per thread");
  float4 r[kGroups];
  typename Op::Row rows[kGroups];

  // Group g of this thread: (k, l) of its first element within the tile.
  __device__ __forceinline__ static void place(int g, int& k, int& l) {
    const int q = static_cast<int>(threadIdx.x) + g * kThreads;
    if constexpr (Op::kKContig) l = q / (kBK / 4), k = 4 * (q % (kBK / 4));
    else k = q / (kBL / 4), l = 4 * (q % (kBL / 4));
  }
  __device__ __forceinline__ SimtTileLoad(const Op& op, int64_t l0) {
#pragma unroll
    for (int g = 0; g < kGroups; ++g) {
      int k, l;
      place(g, k, l);
      rows[g] = op.row(l0 + l);
    }
  }
  __device__ __forceinline__ void load(const Op& op, int64_t z, int64_t k0, int64_t k_end) {
#pragma unroll
    for (int g = 0; g < kGroups; ++g) {
      int k, l;
      place(g, k, l);
      r[g] = op.load4(rows[g], z, k0 + k, k_end);
    }
  }
  template <class S>
  __device__ __forceinline__ void store(S s) const {
#pragma unroll
    for (int g = 0; g < kGroups; ++g) {
      int k, l;
      place(g, k, l);
      if constexpr (Op::kKContig) {
        s[k][l] = r[g].x, s[k + 1][l] = r[g].y, s[k + 2][l] = r[g].z, s[k + 3][l] = r[g].w;
      } else {
        shared_as<float4>(s[k])[l / 4] = r[g];
      }
    }
  }
};

// One block computes one tile of C for batch item z = z0 + blockIdx.y. k_split > 0 splits K:
// item z then sums k in [z·k_split, (z+1)·k_split) into its own C (a split-K partial), and the
// operands see z only through that range.
template <class Tile, class OpA, class OpB>
__global__ void __launch_bounds__(Tile::kThreads, Tile::kMinBlocks)
simt_gemm_kernel(const OpA a, const OpB b, const Epilogue ep, const int64_t m, const int64_t n, const int64_t k,
                 const int64_t k_split, const int64_t z0) {
  constexpr int kBK = Tile::kBK, kSubM = Tile::kSubM, kSubN = Tile::kSubN;
  FG_SHARED(float, As, [2][kBK][Tile::kBM + Tile::kPad]);
  FG_SHARED(float, Bs, [2][kBK][Tile::kBN + Tile::kPad]);
  const uint32_t zy = blockIdx.y;  // z = z0 + zy, rebuilt where used: one register, not two
  const int64_t k_begin = k_split > 0 ? (z0 + zy) * k_split : 0;
  const int64_t k_end = k_split > 0 && k_begin + k_split < k ? k_begin + k_split : k;
  const int64_t tiles_m = (m + Tile::kBM - 1) / Tile::kBM, tiles_n = (n + Tile::kBN - 1) / Tile::kBN;
  int64_t tm, tn;
  tile_of_block(blockIdx.x, tiles_m, tiles_n, tm, tn);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row0 = warp / Tile::kWarpsN * Tile::kWM + lane / 8 * 4;  // first of this thread's rows
  const int col0 = warp % Tile::kWarpsN * Tile::kWN + lane % 8 * 4;  // and columns, in the tile

  float acc[4 * kSubM][4 * kSubN] = {};
  {
    SimtTileLoad<OpA, kBK, Tile::kBM, Tile::kThreads> load_a(a, tm * Tile::kBM);
    SimtTileLoad<OpB, kBK, Tile::kBN, Tile::kThreads> load_b(b, tn * Tile::kBN);
    load_a.load(a, z0 + zy, k_begin, k_end);
    load_b.load(b, z0 + zy, k_begin, k_end);
    load_a.store(As[0]);
    load_b.store(Bs[0]);
    __syncthreads();
    int buf = 0;
    for (int64_t k0 = k_begin; k0 < k_end; k0 += kBK, buf ^= 1) {
      const bool more = k0 + kBK < k_end;
      if (more) {  // next step's loads in flight during this step's FMAs
        load_a.load(a, z0 + zy, k0 + kBK, k_end);
        load_b.load(b, z0 + zy, k0 + kBK, k_end);
      }
#pragma unroll
      for (int kk = 0; kk < kBK; ++kk) {
        float av[4 * kSubM], bv[4 * kSubN];
#pragma unroll
        for (int i = 0; i < kSubM; ++i) {
          const float4 v = shared_as<float4>(As[buf][kk])[(row0 + 16 * i) / 4];
          av[4 * i] = v.x, av[4 * i + 1] = v.y, av[4 * i + 2] = v.z, av[4 * i + 3] = v.w;
        }
#pragma unroll
        for (int j = 0; j < kSubN; ++j) {
          const float4 v = shared_as<float4>(Bs[buf][kk])[(col0 + 32 * j) / 4];
          bv[4 * j] = v.x, bv[4 * j + 1] = v.y, bv[4 * j + 2] = v.z, bv[4 * j + 3] = v.w;
        }
#pragma unroll
        for (int i = 0; i < 4 * kSubM; ++i)
#pragma unroll
          for (int j = 0; j < 4 * kSubN; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
      }
      if (more) {
        load_a.store(As[buf ^ 1]);
        load_b.store(Bs[buf ^ 1]);
      }
      __syncthreads();
    }
  }
  // The tile's corner again, rather than two 64-bit values kept alive through the mainloop.
  tile_of_block(blockIdx.x, tiles_m, tiles_n, tm, tn);
#pragma unroll
  for (int i = 0; i < 4 * kSubM; ++i)
#pragma unroll
    for (int j = 0; j < kSubN; ++j)
      ep.store<4>(z0 + zy, tm * Tile::kBM + row0 + 16 * (i / 4) + i % 4, tn * Tile::kBN + col0 + 32 * j, &acc[i][4 * j]);
}

// The grid of simt_gemm_kernel<Tile> for an m×n result and `items` batch items (or splits),
// at most 65535 items per launch (the caller launches again from z0 = 65535, ...).
constexpr int64_t kMaxGridY = 65535;
template <class Tile>
inline dim3 simt_grid(int64_t m, int64_t n, int64_t items) {
  const int64_t tiles = ((m + Tile::kBM - 1) / Tile::kBM) * ((n + Tile::kBN - 1) / Tile::kBN);
  if (tiles >= (int64_t{1} << 31))
    throw std::invalid_argument("gemm: " + std::to_string(m) + " x " + std::to_string(n) +
                                " is more tiles than one grid holds (2^31 - 1)");
  return dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(items < kMaxGridY ? items : kMaxGridY));
}

// Whether the large tiles give at least one block per SM (else the small ones keep more SMs busy).
template <class Large>
inline bool use_large_tiles(int64_t m, int64_t n, int64_t items, int sm_count) {
  return ((m + Large::kBM - 1) / Large::kBM) * ((n + Large::kBN - 1) / Large::kBN) * items >= sm_count;
}

}  // namespace fusegrad::cuda
