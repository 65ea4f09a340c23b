// Depthwise convolution: groups = C_in, so every group reads one input channel and writes
// m = C_out / C_in output channels (m = 1 for MobileNet's layers). A group's implicit GEMM would
// be a KH·KW-deep product one or m columns wide, all packing and no FMA, so these kernels skip
// the GEMM: per output pixel, each tap is one multiply-add along the channel vector, which NHWC
// keeps contiguous (the compiler vectorises it for each ISA level). Compiled once per ISA level.
#pragma once
#include <cstdint>

#include "common/isa.h"
#include "conv/conv.h"

namespace fusegrad {

// s is one group's geometry (s.c = 1, s.co = m); `groups` = C_in. x (N, H, W, C_in), w (KH, KW, 1,
// C_in·m), y and gy (N, OH, OW, C_in·m). Output channel g·m + q reads input channel g.
struct DepthwiseKernels {
  // y = conv(x, w) + bias (bias may be null); no activation.
  void (*forward)(const ConvShape& s, int64_t groups, const float* x, const float* w, const float* bias, float* y);
  // gx (N, H, W, C_in) is overwritten.
  void (*backward_input)(const ConvShape& s, int64_t groups, const float* gy, const float* w, float* gx);
  // gw (KH, KW, 1, C_in·m) is overwritten.
  void (*backward_weight)(const ConvShape& s, int64_t groups, const float* x, const float* gy, float* gw);
};

FG_DECLARE_KERNEL_TABLE(DepthwiseKernels, depthwise_kernels)

}  // namespace fusegrad
