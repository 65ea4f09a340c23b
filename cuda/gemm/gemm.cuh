// Single-precision GEMM on the GPU: C = act(A·B + bias) or C += A·B, plain or batched, with A
// and B row- or column-major with any leading dimension (transposed views are read in place).
//
// Kernels (one file each, on the mainloops of simt.cuh and mma.cuh):
//   gemm_simt.cu   fp32 FMA, SimtLarge (128×128) or SimtSmall (64×64) tiles
//   gemm_tf32.cu   tensor cores, mma.sync m16n8k8 on inputs rounded to tf32 (cvt.rna), fp32 sums;
//                  MmaLarge (128×128×32) or MmaSmall (64×64×32) tiles, a 3-stage cp.async pipeline
//   gemm_bf16.cu   tensor cores, mma.sync m16n8k16 on operands first copied to bf16 (a stream-ordered
//                  workspace), fp32 sums; 128×128 or 64×64 tiles, a 4-stage pipeline on bf16; or, on
//                  Hopper when asked for (tiles wgmma, wgmma_wide), wgmma on 128×128 or 128×256 tiles
// gemm.cu picks the kernel of the precision asked for, and the tile size by whether the large
// tiles fill the GPU's SMs.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "activation/activation.h"

namespace fusegrad::cuda {

enum class GemmPrecision : int { fp32 = 0, tf32 = 1, bf16 = 2 };
// automatic: by size; large/small force one tile configuration (tests cover each); wgmma,
// wgmma_wide: the bf16 wgmma kernel (sm_90a) on 128×128 or 128×256 tiles, opt-in until a GPU run has
// verified and timed it.
enum class GemmTiles : int { automatic = 0, large = 1, small = 2, wgmma = 3, wgmma_wide = 4 };

// Strides in elements. A is m×k: element (i, p) at a[i * a_rs + p * a_cs], with a_rs == 1 or
// a_cs == 1; B is k×n: (p, j) at b[p * b_rs + j * b_cs], b_rs == 1 or b_cs == 1; C is m×n with
// unit column stride: (i, j) at c[i * c_rs + j]. Batch item z adds z * (a_bs, b_bs, c_bs); a
// batch stride of 0 shares that operand across the batch. A and B may be null when k == 0.
struct GemmArgs {
  int64_t batch = 1, m = 0, n = 0, k = 0;
  const float* a = nullptr;
  int64_t a_rs = 0, a_cs = 0, a_bs = 0;
  const float* b = nullptr;
  int64_t b_rs = 0, b_cs = 0, b_bs = 0;
  float* c = nullptr;
  int64_t c_rs = 0, c_bs = 0;
  const float* bias = nullptr;  // n floats, or null
  Activation act = Activation::none;
  float act_param = 0.0f;
  bool accumulate = false;      // C += A·B (bias null, act none)
};

// Enqueues the product on `stream` of `device`. Throws std::invalid_argument for strides none of
// the kernels reads (neither stride of A or B unit) and a CUDA error as cuda_check.cuh does.
void gemm(const GemmArgs& args, GemmPrecision precision, GemmTiles tiles, cudaStream_t stream, int device);

// The kernels behind gemm() (arguments already checked); `large` picks the tile configuration.
void gemm_simt(const GemmArgs& args, bool large, cudaStream_t stream);
void gemm_tf32(const GemmArgs& args, bool large, cudaStream_t stream, int device);
void gemm_bf16(const GemmArgs& args, GemmTiles tiles, bool large, cudaStream_t stream, int device);

// Throws std::invalid_argument unless `device` can run the wgmma kernel: compute capability 9.0
// and this module built with sm_90a code (FUSEGRAD_CUDA_ARCHS containing 90a), or the emulator.
void require_wgmma(int device);

}  // namespace fusegrad::cuda
