// Grouped convolution (PyTorch's groups=G) on the ungrouped kernels of the active ISA. Group g
// reads input channels [g·C_in/G, (g+1)·C_in/G) and writes output channels [g·C_out/G, ...); its
// weights are columns [g·C_out/G, ...) of the HWIO weight (KH, KW, C_in/G, C_out).
//
// Channels-last arrays interleave the groups within every pixel, while the kernels read each
// pixel's channels as one contiguous run. So the driver regroups once per call: one pass turns x,
// gy and w into group-major copies (G, ..., C/G), every group runs as an ordinary convolution on
// its slice, and one pass interleaves the results back. Each array is read and written once per
// call whatever G is. Depthwise convolutions (C_in/G = 1) run on their own kernels instead
// (depthwise.h). groups = 1 never comes here: the bindings call the table directly.
#pragma once
#include <cstdint>

#include "conv/conv.h"

namespace fusegrad {

// s is one group's geometry: s.c = C_in/G, s.co = C_out/G; x (N, H, W, G·s.c), w (KH, KW, s.c,
// G·s.co), bias (G·s.co) or null, y (N, OH, OW, G·s.co).
void grouped_conv_forward(const ConvKernels& k, const ConvShape& s, int64_t groups, const float* x, const float* w,
                          const float* bias, Activation act, float* y);

// Any of gx (N, H, W, G·s.c), gw (KH, KW, s.c, G·s.co), gb (G·s.co), null where not wanted; x is
// needed only for gw.
void grouped_conv_backward(const ConvKernels& k, const ConvShape& s, int64_t groups, const float* x,
                           const float* gy, const float* w, float* gx, float* gw, float* gb);

}  // namespace fusegrad
