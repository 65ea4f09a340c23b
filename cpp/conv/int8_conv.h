// Int8 convolution for quantized inference: uint8 NHWC images, int8 HWIO weights packed once as
// the (KH·KW·C_in) × C_out matrix of the int8 GEMM (gemm/int8_gemm.h), its requantizing epilogue.
#pragma once
#include <cstdint>

#include "conv/conv.h"
#include "gemm/int8_gemm.h"

namespace fusegrad {

struct Int8ConvProblem {
  ConvShape s;
  const uint8_t* x = nullptr;       // (N, H, W, C_in), C-contiguous
  uint8_t x_zero_point = 0;         // what padding pixels hold: the quantized real 0
  const Int8PackedWeight* w = nullptr;  // K = KH·KW·C_in rows in (kh, kw, c) order, N = C_out
  void* out = nullptr;              // (N, OH, OW, C_out), C-contiguous, the epilogue's type
  Int8Epilogue epilogue;            // its a_zero_point is x_zero_point
  Int8Path path = Int8Path::automatic;
};

// A 1×1 convolution of stride 1 without padding multiplies the image in place; on AMX, one of
// stride 1 and dilation 1 whose C_in is a multiple of 32 is an implicit GEMM (int8_conv_amx.cpp);
// any other is an im2col of a block of output pixels into a uint8 buffer, then the GEMM.
// (int8_conv.cpp)
void int8_conv2d(const Int8ConvProblem& p);

#if FG_X86
namespace isa_avx512_ext {
// The AMX implicit GEMM: whether it takes this geometry, and the convolution itself (for callers
// that have checked cpu_feature_usable(amx_int8)).
bool int8_conv2d_implicit_fits(const ConvShape& s);
void int8_conv2d_implicit(const Int8ConvProblem& p);
}  // namespace isa_avx512_ext
#endif

}  // namespace fusegrad
