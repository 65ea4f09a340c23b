// 2-D pooling over NHWC images on the GPU: max (with int32 indices and dilation), average and
// global average, forward and backward. The conventions are the CPU kernels' (cpp/pool/pool.h):
// the output size is PyTorch's floor or ceil rule, an index is the flat position ih * W + iw of
// the chosen pixel in its own (H, W) plane, ties keep the first pixel in row-major window order, a
// NaN wins and propagates.
//
// Backward passes gather from the input side: each input pixel sums the gradients of the output
// windows that hold it, in output order. No atomics, so the result is deterministic and equal to
// the CPU's scatter, which adds in the same order. Where no two windows share a pixel (kernel <=
// stride), each output pixel instead writes the input cell it alone covers (pool.cu).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace fusegrad::cuda {

// Geometry of one pooling call: input (n, h, w, c), output (n, oh, ow, c), window kh x kw with
// taps (dh, dw) apart, stride (sh, sw), padding (ph, pw) on each side. oh and ow come from the one
// geometry function (pool_geometry, through fusegrad._cpu.pool2d_output_size); the bindings
// check them again (cpp/pool/pool_size.h). Average pooling has dh = dw = 1.
struct PoolGeometry {
  int64_t n, h, w, c, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw;
};

// y (n, oh, ow, c); indices (same shape) may be null.
void max_pool2d_forward(const PoolGeometry& g, const float* x, float* y, int32_t* indices, cudaStream_t stream,
                        int device);
// gx (n, h, w, c) from gy and the forward's indices. An index that names no pixel of its own window
// contributes nothing; if `bad` is not null, the number of such indices is added to *bad.
void max_pool2d_backward(const PoolGeometry& g, const float* gy, const int32_t* indices, float* gx,
                         unsigned long long* bad, cudaStream_t stream, int device);
// Max pooling of a quantized uint8 (or, is_signed, int8) image into y; no indices, no dilation.
void max_pool2d_int8_forward(const PoolGeometry& g, const uint8_t* x, uint8_t* y, bool is_signed, cudaStream_t stream,
                             int device);
void avg_pool2d_forward(const PoolGeometry& g, const float* x, float* y, bool count_include_pad,
                        cudaStream_t stream, int device);
void avg_pool2d_backward(const PoolGeometry& g, const float* gy, float* gx, bool count_include_pad,
                         cudaStream_t stream, int device);

// (n, hw, c) -> (n, c) mean over hw. Small batches split hw over several blocks, which write
// partial sums into `workspace` (global_avg_pool2d_workspace_size doubles; may be null when that
// is 0) before a second kernel adds them in a fixed order.
int64_t global_avg_pool2d_workspace_size(int64_t n, int64_t hw, int64_t c, int device);
void global_avg_pool2d_forward(const float* x, float* y, double* workspace, int64_t n, int64_t hw, int64_t c,
                               cudaStream_t stream, int device);
void global_avg_pool2d_backward(const float* gy, float* gx, int64_t n, int64_t hw, int64_t c,
                                cudaStream_t stream, int device);

}  // namespace fusegrad::cuda
