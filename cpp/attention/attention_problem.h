// The attention problem both devices take (cpp/attention/attention.h for the CPU kernels,
// cuda/attention/attention.cuh for the CUDA ones): sizes, scale, causal, the broadcast additive
// mask, dropout. Plain data, no CPU-only includes, so nvcc compiles it too.
#pragma once
#include <cstdint>

namespace fusegrad {

struct AttentionProblem {
  int64_t batch = 0, heads = 0, sq = 0, sk = 0, d = 0;
  float scale = 1.0f;
  bool causal = false;
  // Additive mask element (b, h, i, j) at mask[b * mask_sb + h * mask_sh + i * mask_si + j]; a
  // stride of 0 broadcasts that axis. Null: no mask.
  const float* mask = nullptr;
  int64_t mask_sb = 0, mask_sh = 0, mask_si = 0;
  float dropout_p = 0.0f;  // in [0, 1)
  uint64_t seed = 0;
};

}  // namespace fusegrad
