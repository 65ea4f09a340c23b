// 2-D pooling over NHWC images: max, average and global average, forward and backward.
//
// NHWC keeps the channels of one pixel contiguous, so every kernel vectorises over channels and
// walks the pooling window pixel by pixel; no transposes are needed.
//
// Max-pool indices: int32, one per output element, holding the flat position ih * W + iw of the
// chosen input pixel inside its own (H, W) plane (the image and channel are those of the output
// element), as PyTorch's max_pool2d(return_indices=True) does for NCHW. Ties keep the first
// position in row-major window order; a NaN wins and propagates, as in PyTorch.
#pragma once
#include <cstdint>

#include "common/isa.h"

namespace fusegrad {

// Geometry of one pooling call; the output size is PyTorch's floor rule (ceil_mode=False).
struct PoolShape {
  int64_t n, h, w, c;   // input (N, H, W, C)
  int64_t oh, ow;       // output (N, OH, OW, C)
  int64_t kh, kw, sh, sw, ph, pw;
};

struct PoolKernels {
  // y (N, OH, OW, C); indices (same shape) may be null when the caller does not want them.
  void (*max_forward)(const PoolShape& s, const float* x, float* y, int32_t* indices);
  // gx (N, H, W, C) = scatter of gy by indices. Returns how many indices were outside their
  // plane (or, for non-overlapping windows, outside their own window); those are skipped, so a
  // bad index never writes out of bounds, and the caller reports the error.
  int64_t (*max_backward)(const PoolShape& s, const float* gy, const int32_t* indices, float* gx);
  void (*avg_forward)(const PoolShape& s, const float* x, float* y, bool count_include_pad);
  void (*avg_backward)(const PoolShape& s, const float* gy, float* gx, bool count_include_pad);
  // (N, HW, C) -> (N, C) mean over HW, and its backward.
  void (*global_avg_forward)(const float* x, float* y, int64_t n, int64_t hw, int64_t c);
  void (*global_avg_backward)(const float* gy, float* gx, int64_t n, int64_t hw, int64_t c);
};

FG_DECLARE_KERNEL_TABLE(PoolKernels, pool_kernels)

// The geometry of pooling an (N, H, W, C) input with a kh×kw window, stride (sh, sw) and padding
// (ph, pw) on each side: the one place fusegrad computes a pooled size. Throws
// std::invalid_argument, naming the sizes, when the window and padding do not fit the input or
// the sizes cannot be indexed. (pool_geometry.cpp)
PoolShape pool_geometry(int64_t n, int64_t h, int64_t w, int64_t c, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                        int64_t ph, int64_t pw);

// Max pooling of uint8 (is_signed false) or int8 NHWC images, x (N, H, W, C) to y (N, OH, OW, C):
// padding is never the maximum. (max_pool_int8.cpp)
void max_pool2d_int8(const PoolShape& s, const void* x, void* y, bool is_signed);

}  // namespace fusegrad
