#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "activation/activation.h"  // the Activation codes, shared with the CPU side

namespace fusegrad::cuda {

void activation_forward(Activation kind, const float* x, float* y, int64_t n, float param,
                        cudaStream_t stream, int device);
void activation_backward(Activation kind, const float* grad_out, const float* saved, float* dx,
                         int64_t n, float param, cudaStream_t stream, int device);

}  // namespace fusegrad::cuda
