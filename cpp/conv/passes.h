// The six passes of the exported table (conv.h's ConvKernels), each defined in its own file
// (conv_kernels.cpp has the map), and called across files only once per call.
#pragma once
#include <cstdint>

#include "activation/activation.h"
#include "conv/conv.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace conv {

void conv_forward(const ConvShape& s, const float* x, const float* w, const float* bias, Activation act, float* y);
void conv_forward_max_pool(const ConvShape& s, const float* x, const float* w, const float* bias, Activation act,
                           float act_param, int64_t pool, float* y, int32_t* indices);
void conv_backward_input(const ConvShape& s, const float* gy, const float* w, float* gx);
void conv_backward_weight(const ConvShape& s, const float* x, const float* gy, float* gw);
void conv_backward_bias(const float* gy, int64_t rows, int64_t co, float* gb);
void conv_backward(const ConvShape& s, const float* x, const float* gy, const float* w, float* gx, float* gw,
                   float* gb);

}  // namespace conv
}  // namespace FG_ISA_NS
}  // namespace fusegrad
