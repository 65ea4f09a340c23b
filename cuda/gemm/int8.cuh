// The int8 GEMM on the GPU, as the CPU's (cpp/gemm/int8_gemm.h states the arithmetic): uint8
// activations A (M×K rows, lda bytes apart) times int8 weights, summed exactly in int32, then the
// same epilogue: the zero-point correction, and the exact int32 result, a float32 real result
// (scale · sum + bias, relu) or one requantized to uint8/int8 (round half to even, saturated).
//
// The weight is kept as B^T: N rows of K int8 (k contiguous, K bytes apart), with its column sums,
// so a thread's four consecutive k of a column are one 32-bit word for dp4a.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace fusegrad::cuda {

enum class Int8Out : int { s32 = 0, f32 = 1, u8 = 2, s8 = 3 };  // the CPU's codes (cpp/gemm/int8_gemm.h)

struct Int8GemmArgs {
  int64_t m = 0, n = 0, k = 0;
  const uint8_t* a = nullptr;
  int64_t lda = 0;             // bytes
  const int8_t* bt = nullptr;  // N×K, rows K bytes apart
  const int32_t* colsum = nullptr;
  void* out = nullptr;         // M×N row-major, ldo elements per row, of the output type
  int64_t ldo = 0;
  Int8Out out_type = Int8Out::s32;
  int32_t a_zero_point = 0;
  const float* scale = nullptr;  // N: a_scale · b_scale[n] (all but s32)
  const float* bias = nullptr;   // N or null
  bool relu = false;
  float inv_out_scale = 1.0f;    // u8/s8
  int32_t out_zero_point = 0;    // u8/s8
};

// automatic: tensor cores (mma.sync m16n8k32) where K and lda are multiples of 16 and the arrays
// 16-byte aligned, else dp4a; the others force one (tests cover both).
enum class Int8Kernel : int { automatic = 0, mma = 1, dp4a = 2 };

// Enqueues the product on `stream`. Throws std::invalid_argument for sizes the kernel cannot index
// and for a forced tensor-core kernel on operands it cannot read.
void int8_gemm(const Int8GemmArgs& args, Int8Kernel kernel, cudaStream_t stream, int device);

// q[i] = clamp(round_half_even(clamp(x[i] · inv_scale, -512, 512)) + zero_point, 0, 255); NaN gives 0
// (the CPU's quantize_uint8, value for value).
void quantize_uint8(const float* x, int64_t n, float inv_scale, int32_t zero_point, uint8_t* q, cudaStream_t stream,
                    int device);

}  // namespace fusegrad::cuda
