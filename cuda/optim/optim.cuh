// Fused multi-tensor optimizer steps and gradient-norm clipping on the GPU.
//
// A list of any length costs one launch per `kMaxTensorsPerLaunch` tensors (see optim.cu). Sizes
// of zero are allowed (their pointers are ignored). Everything is enqueued on `stream`; nothing
// here synchronises with the host.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "optim/optim.h"  // AdamScalars, SgdScalars, NormKind: shared with the CPU side

namespace fusegrad::cuda {

void adam_step(const AdamScalars& s, const std::vector<float*>& params,
               const std::vector<const float*>& grads, const std::vector<float*>& exp_avgs,
               const std::vector<float*>& exp_avg_sqs, const std::vector<int64_t>& sizes,
               cudaStream_t stream, int device);

// momentum_buffers is empty when s.momentum == 0.
void sgd_step(const SgdScalars& s, const std::vector<float*>& params,
              const std::vector<const float*>& grads, const std::vector<float*>& momentum_buffers,
              const std::vector<int64_t>& sizes, cudaStream_t stream, int device);

// Doubles of workspace grad_norm_clip needs for a list of `count` tensors.
int64_t norm_workspace_size(int64_t count);

// out[0] = total p-norm of the list (float32), out[1] = min(max_norm / (norm + 1e-6), 1) (NaN
// stays NaN); when max_norm >= 0 the gradients are then scaled by out[1] on the device.
void grad_norm_clip(const std::vector<float*>& grads, const std::vector<int64_t>& sizes, double p,
                    double max_norm, double* workspace, float* out, cudaStream_t stream, int device);

}  // namespace fusegrad::cuda
