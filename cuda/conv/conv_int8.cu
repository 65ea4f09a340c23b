// The int8 convolution's im2col (quantized_conv2d on CUDA arrays): the uint8 image's patches laid
// out as the rows of the A operand of the int8 GEMM (cuda/gemm/gemm_int8.cu), which then multiplies
// them by the packed HWIO weight. Row m = (n, oh, ow) of the output; column (i·KW + j)·C + c holds
// x[n, oh·sh − pt + i·dh, ow·sw − pl + j·dw, c], or the zero point where that lies in the padding
// (the quantized real 0, as the CPU pads). A thread writes 4 consecutive bytes of a row, so the
// writes of a warp are contiguous; the reads are runs of C bytes of one pixel.
#include <cstdint>

#include "common/cuda_check.cuh"
#include "common/launch.cuh"
#include "conv/conv.cuh"

namespace fusegrad::cuda {
namespace {

__global__ void __launch_bounds__(256) int8_im2col_kernel(const ConvDims d, const uint8_t* __restrict__ x,
                                                          uint8_t* __restrict__ cols, uint8_t zero_point) {
  const int64_t k = d.kh * d.kw * d.ci, words = (k + 3) / 4, total = d.n * d.oh * d.ow * words;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t m = e / words, k0 = e % words * 4;
    const int64_t ow = m % d.ow, oh = m / d.ow % d.oh, n = m / (d.ow * d.oh);
    for (int64_t kk = k0; kk < k0 + 4 && kk < k; ++kk) {
      const int64_t c = kk % d.ci, tap = kk / d.ci, j = tap % d.kw, i = tap / d.kw;
      const int64_t ih = oh * d.sh - d.pt + i * d.dh, iw = ow * d.sw - d.pl + j * d.dw;
      const bool inside = ih >= 0 && ih < d.h && iw >= 0 && iw < d.w;
      cols[m * k + kk] = inside ? x[((n * d.h + ih) * d.w + iw) * d.ci + c] : zero_point;
    }
  }
}

}  // namespace

void int8_im2col(const ConvDims& d, const uint8_t* x, uint8_t* cols, uint8_t zero_point, cudaStream_t stream,
                 int device) {
  const int64_t words = d.n * d.oh * d.ow * ((d.kh * d.kw * d.ci + 3) / 4);
  if (words == 0) return;
  DeviceGuard guard(device);
  FG_LAUNCH(int8_im2col_kernel, grid_for(words, 256, device), 256, 0, stream, d, x, cols, zero_point);
}

}  // namespace fusegrad::cuda
