// The four forms of backward-input, each in its own file; conv_backward_input
// (backward_input.cpp) picks one per call.
#pragma once

#include "conv/conv.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace conv {

// Stride 1, C_in <= kDirectMaxCin: each gx pixel gathers its taps (backward_input_gather.cpp).
void backward_input_gather(const ConvShape& s, const float* gy, const float* w, float* gx);
// Small C_in: patch gradients gy · wᵀ added into gx tap by tap (backward_input_scatter.cpp).
void backward_input_scatter(const ConvShape& s, const float* gy, const float* w, float* gx);
// Any stride: one indirect GEMM per stride phase of gx (backward_input_phases.cpp).
void backward_input_phases(const ConvShape& s, const float* gy, const float* w, float* gx);
// Stride 1: a forward convolution of gy with the flipped kernel (backward_input_forward.cpp),
// possible where backward_input_is_forward(s).
bool backward_input_is_forward(const ConvShape& s);
void backward_input_forward(const ConvShape& s, const float* gy, const float* w, float* gx);

}  // namespace conv
}  // namespace FG_ISA_NS
}  // namespace fusegrad
