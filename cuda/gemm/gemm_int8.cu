// The int8 GEMM (int8.cuh), on tensor cores or on dp4a, and the quantization in front of it.
//
// Tensor cores (int8_mma_kernel): mma.sync m16n8k32 multiplies uint8 A by int8 B directly, so the
// sums are the true ones. The block tile and pipeline are the bf16 kernel's (gemm_bf16.cu) in
// bytes: 128×128, 8 warps of 64×32, 64 bytes of k per stage through 4 cp.async stages, shared rows
// of 64 bytes padded to 80 so the 8 rows of an ldmatrix fall in distinct banks; ldmatrix.x4 gives
// the A fragment (4 bytes of k a register) and, on B^T's k-contiguous rows, the B fragments. It
// needs 16-byte aligned rows (K and lda multiples of 16); other problems take dp4a.
//
// dp4a multiplies four signed bytes by four signed bytes. The activations are unsigned, so the
// kernel multiplies a − 128 (the byte with its top bit flipped: exact, in [−128, 127]) and adds
// 128 · colsum[n] back, folded with the zero point into one correction: the true sum minus
// zp · colsum is acc + (128 − zp) · colsum[n], in wrapping 32-bit arithmetic like the CPU's.
//
// Layout: a block computes a 64×64 tile of C with 256 threads, each 4×4 outputs (rows ty + 16i,
// columns tx + 16j: a warp's threads read consecutive columns of B and share rows of A, so shared
// loads are conflict-free or broadcast). K advances 32 bytes (8 words) a step through shared
// memory: A as [word][row], B as [word][column]. Bytes past K or past the last row/column load as
// zero (their products vanish); words whose 4 bytes are in range and 4-byte aligned load whole.
#include <algorithm>
#include <stdexcept>
#include <string>

#include "common/cuda_check.cuh"
#include "common/launch.cuh"
#include "common/ptx.cuh"
#include "gemm/gemm_launch.cuh"  // allow_dynamic_smem
#include "gemm/int8.cuh"
#include "gemm/mma.cuh"   // multistage_mainloop
#include "gemm/simt.cuh"  // tile_of_block

namespace fusegrad::cuda {
namespace {

constexpr int kTile = 64, kWords = 8, kThreads = 256;

// The 4 bytes p[0..3] of a row (those at or past `valid` are 0) as one word, each XOR flip
// (0x80 for activations: a − 128 as a signed byte; 0 for weights).
__device__ __forceinline__ int load_word(const uint8_t* p, int valid, bool aligned, uint32_t flip) {
  if (valid >= 4 && aligned) return static_cast<int>(*reinterpret_cast<const uint32_t*>(p) ^ flip);
  uint32_t w = 0;
#pragma unroll
  for (int i = 0; i < 4; ++i)
    if (i < valid) w |= (static_cast<uint32_t>(p[i]) ^ (flip & 0xFFu)) << (8 * i);
  return static_cast<int>(w);
}

__device__ __forceinline__ float relu_if(float v, bool relu) { return relu && !(v > 0.0f) ? 0.0f : v; }

// The epilogue of one output: the CPU's (cpp/gemm/int8_kernels_impl.h), value for value up to the
// fused multiply-add. acc sums (a − a_shift) · b: a_shift 128 for dp4a, 0 for the tensor cores.
__device__ __forceinline__ void store_out(const Int8GemmArgs& g, int64_t row, int64_t col, int32_t acc,
                                          int32_t a_shift) {
  const int32_t c = static_cast<int32_t>(static_cast<uint32_t>(acc) + static_cast<uint32_t>(a_shift - g.a_zero_point) *
                                                                          static_cast<uint32_t>(g.colsum[col]));
  const int64_t at = row * g.ldo + col;
  if (g.out_type == Int8Out::s32) {
    static_cast<int32_t*>(g.out)[at] = g.relu ? max(c, 0) : c;
    return;
  }
  const float bias = g.bias ? g.bias[col] : 0.0f;
  if (g.out_type == Int8Out::f32) {
    static_cast<float*>(g.out)[at] = relu_if(fmaf(static_cast<float>(c), g.scale[col], bias), g.relu);
    return;
  }
  // Requantized: scale and bias divided by out_scale first, as the CPU prepares its columns.
  float v = relu_if(fmaf(static_cast<float>(c), g.scale[col] * g.inv_out_scale, bias * g.inv_out_scale), g.relu);
  const bool u8 = g.out_type == Int8Out::u8;
  const float lo = (u8 ? 0.0f : -128.0f) - static_cast<float>(g.out_zero_point);
  const float hi = (u8 ? 255.0f : 127.0f) - static_cast<float>(g.out_zero_point);
  v = fminf(fmaxf(v, lo), hi);
  const int q = __float2int_rn(v) + g.out_zero_point;
  if (u8) static_cast<uint8_t*>(g.out)[at] = static_cast<uint8_t>(q);
  else static_cast<int8_t*>(g.out)[at] = static_cast<int8_t>(q);
}

__global__ void __launch_bounds__(kThreads) int8_gemm_kernel(const Int8GemmArgs g) {
  FG_SHARED(int, as, [kWords][kTile]);
  FG_SHARED(int, bs, [kWords][kTile]);
  int64_t tm, tn;
  tile_of_block(blockIdx.x, (g.m + kTile - 1) / kTile, (g.n + kTile - 1) / kTile, tm, tn);
  const int64_t m0 = tm * kTile, n0 = tn * kTile;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const bool a_aligned = g.lda % 4 == 0 && reinterpret_cast<uintptr_t>(g.a) % 4 == 0;
  const bool b_aligned = g.k % 4 == 0 && reinterpret_cast<uintptr_t>(g.bt) % 4 == 0;
  int acc[4][4] = {};
  for (int64_t k0 = 0; k0 < g.k; k0 += 4 * kWords) {
    // 64 rows × 8 words of each operand: two words of each per thread.
#pragma unroll
    for (int e = threadIdx.x; e < kTile * kWords; e += kThreads) {
      const int r = e / kWords, w = e % kWords;
      const int64_t kk = k0 + 4 * w;
      const int valid = static_cast<int>(min(g.k - kk, int64_t{4}));
      const int64_t row = m0 + r, col = n0 + r;
      as[w][r] = row < g.m && valid > 0 ? load_word(g.a + row * g.lda + kk, valid, a_aligned, 0x80808080u) : 0;
      bs[w][r] = col < g.n && valid > 0 ? load_word(reinterpret_cast<const uint8_t*>(g.bt) + col * g.k + kk, valid,
                                                   b_aligned, 0u)
                                        : 0;
    }
    __syncthreads();
#pragma unroll
    for (int w = 0; w < kWords; ++w) {
      int av[4], bv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) av[i] = as[w][ty + 16 * i], bv[i] = bs[w][tx + 16 * i];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = __dp4a(av[i], bv[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t row = m0 + ty + 16 * i, col = n0 + tx + 16 * j;
      if (row < g.m && col < g.n) store_out(g, row, col, acc[i][j], 128);
    }
}

// The tensor-core tile (see the top of the file).
constexpr int kMmaWarpsM = 2, kMmaWarpsN = 4, kMmaTM = 4, kMmaTN = 4, kMmaStages = 4;
constexpr int kMmaThreads = 32 * kMmaWarpsM * kMmaWarpsN;
constexpr int kMmaBM = 16 * kMmaTM * kMmaWarpsM, kMmaBN = 8 * kMmaTN * kMmaWarpsN;  // 128 × 128
constexpr int kMmaBK = 64, kMmaLd = kMmaBK + 16;                                     // bytes
constexpr int kMmaSmemBytes = kMmaStages * (kMmaBM + kMmaBN) * kMmaLd;

__global__ void __launch_bounds__(kMmaThreads) int8_mma_kernel(const Int8GemmArgs g) {
  constexpr int kStageA = kMmaBM * kMmaLd, kStageB = kMmaBN * kMmaLd;
  FG_DYNAMIC_SHARED(uint8_t, smem);
  const auto stage_a = [&](int s) { return smem + s * kStageA; };
  const auto stage_b = [&](int s) { return smem + kMmaStages * kStageA + s * kStageB; };
  int64_t tm, tn;
  tile_of_block(blockIdx.x, (g.m + kMmaBM - 1) / kMmaBM, (g.n + kMmaBN - 1) / kMmaBN, tm, tn);
  const int64_t m0 = tm * kMmaBM, n0 = tn * kMmaBN;
  const uint8_t* bt = reinterpret_cast<const uint8_t*>(g.bt);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm = warp / kMmaWarpsN * 16 * kMmaTM, wn = warp % kMmaWarpsN * 8 * kMmaTN;

  // A stage: every tile row is four 16-byte copies; rows past M and k past K copy nothing (zeros).
  const auto copy_stage = [&](int buf, int64_t step) {
    const int64_t k0 = step * kMmaBK;
#pragma unroll
    for (int q = threadIdx.x; q < kMmaBM * 4; q += kMmaThreads) {
      const int64_t row = m0 + q / 4, k = k0 + q % 4 * 16;
      const bool in = row < g.m && k < g.k;
      ptx::cp_async_cg(static_cast<uint8_t*>(stage_a(buf) + q / 4 * kMmaLd + q % 4 * 16), in ? g.a + row * g.lda + k : g.a,
                       in ? 16 : 0);
    }
#pragma unroll
    for (int q = threadIdx.x; q < kMmaBN * 4; q += kMmaThreads) {
      const int64_t col = n0 + q / 4, k = k0 + q % 4 * 16;
      const bool in = col < g.n && k < g.k;
      ptx::cp_async_cg(static_cast<uint8_t*>(stage_b(buf) + q / 4 * kMmaLd + q % 4 * 16), in ? bt + col * g.k + k : bt,
                       in ? 16 : 0);
    }
  };
  int acc[kMmaTM][kMmaTN][4] = {};
  const auto multiply = [&](int buf) {
#pragma unroll
    for (int kk = 0; kk < kMmaBK; kk += 32)
      warp_mma_step<kMmaTM, kMmaTN, kMmaLd, 16>(stage_a(buf), stage_b(buf), wm, wn, kk, acc,
                                               [](int (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
                                                 ptx::mma_m16n8k32_u8s8(d, a, b, d);
                                               });
  };
  multistage_mainloop<kMmaStages>((g.k + kMmaBK - 1) / kMmaBK, copy_stage, multiply);
  const int gr = lane / 4, t = lane % 4;
#pragma unroll
  for (int i = 0; i < kMmaTM; ++i)
#pragma unroll
    for (int j = 0; j < kMmaTN; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t row = m0 + wm + 16 * i + gr + 8 * (e / 2), col = n0 + wn + 8 * j + 2 * t + e % 2;
        if (row < g.m && col < g.n) store_out(g, row, col, acc[i][j][e], 0);
      }
}

constexpr float kQuantLow = -512.0f, kQuantHigh = 512.0f;  // the CPU's clamp before rounding

__global__ void __launch_bounds__(256) quantize_uint8_kernel(const float* x, int64_t n, float inv_scale,
                                                             int32_t zero_point, uint8_t* q) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float v = fminf(fmaxf(x[i] * inv_scale, kQuantLow), kQuantHigh);  // fmaxf drops a NaN: kQuantLow
    q[i] = static_cast<uint8_t>(min(max(__float2int_rn(v) + zero_point, 0), 255));
  }
}

}  // namespace

bool tensor_cores_fit(const Int8GemmArgs& g) {
  return g.k > 0 && g.k % 16 == 0 && g.lda % 16 == 0 && reinterpret_cast<uintptr_t>(g.a) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(g.bt) % 16 == 0;
}

void int8_gemm(const Int8GemmArgs& g, Int8Kernel kernel, cudaStream_t stream, int device) {
  if (g.m <= 0 || g.n <= 0) return;
  if (kernel == Int8Kernel::automatic) kernel = tensor_cores_fit(g) ? Int8Kernel::mma : Int8Kernel::dp4a;
  if (kernel == Int8Kernel::mma && !tensor_cores_fit(g))
    throw std::invalid_argument("quantized_matmul: the tensor-core kernel needs K and the row stride of A multiples "
                                "of 16 and 16-byte aligned arrays");
  const int64_t tile = kernel == Int8Kernel::mma ? kMmaBM : kTile;
  const int64_t tiles = ((g.m + tile - 1) / tile) * ((g.n + tile - 1) / tile);
  if (tiles >= (int64_t{1} << 31))
    throw std::invalid_argument("quantized_matmul: " + std::to_string(g.m) + " x " + std::to_string(g.n) +
                                " is more tiles than one grid holds");
  DeviceGuard guard(device);
  if (kernel == Int8Kernel::mma) {
    allow_dynamic_smem(reinterpret_cast<const void*>(int8_mma_kernel), kMmaSmemBytes, device);
    FG_LAUNCH(int8_mma_kernel, static_cast<unsigned>(tiles), kMmaThreads, kMmaSmemBytes, stream, g);
  } else {
    FG_LAUNCH(int8_gemm_kernel, static_cast<unsigned>(tiles), kThreads, 0, stream, g);
  }
}

void quantize_uint8(const float* x, int64_t n, float inv_scale, int32_t zero_point, uint8_t* q, cudaStream_t stream,
                    int device) {
  if (n <= 0) return;
  DeviceGuard guard(device);
  FG_LAUNCH(quantize_uint8_kernel, grid_for(n, 256, device), 256, 0, stream, x, n, inv_scale, zero_point, q);
}

}  // namespace fusegrad::cuda
