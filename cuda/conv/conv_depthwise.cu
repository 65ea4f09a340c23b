// Depthwise convolutions on the GPU (groups = C_in: one input channel a group, m = C_out / C_in
// outputs each). As the implicit GEMM's batch items, each group would fill one column of a 64- or
// 128-wide tile; these kernels instead give each thread one element and walk its KH·KW taps.
// Consecutive threads take consecutive channels, so a warp's loads and stores are coalesced along
// NHWC's channel dimension. Every output is summed by one thread in a fixed order: the results do
// not depend on timing.
#include <algorithm>
#include <stdexcept>

#include "common/cuda_check.cuh"
#include "common/launch.cuh"
#include "conv/conv.cuh"
#include "gemm/epilogue.cuh"

namespace fusegrad::cuda {
namespace {

constexpr int kThreads = 256;
// Backward-weight blocks: 32 channels x 8 pixel lanes, the lanes' sums added in shared memory.
constexpr int kChannels = 32, kPixelLanes = 8;
// Output pixels per block of the weight gradient at least, and blocks to aim for (two waves).
constexpr int64_t kMinPixelsPerSplit = 256, kWavesOfBlocks = 2;
constexpr int64_t kMaxGridYZ = 65535;

__device__ __forceinline__ int64_t first_element() { return int64_t(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ __forceinline__ int64_t element_stride() { return int64_t(gridDim.x) * blockDim.x; }

// y[img, oy, ox, c] = act(bias[c] + Σ_taps x[img, iy, ix, c / m] · w[tap, c]).
__global__ void __launch_bounds__(kThreads)
depthwise_forward_kernel(const ConvDims d, const float* __restrict__ x, const float* __restrict__ w,
                         const float* __restrict__ bias, float* __restrict__ y, Activation act, float act_param) {
  const int64_t co = d.groups * d.co, total = d.n * d.oh * d.ow * co;
  for (int64_t e = first_element(); e < total; e += element_stride()) {
    const int64_t c = e % co, q = e / co, ox = q % d.ow, oy = q / d.ow % d.oh, img = q / (d.ow * d.oh);
    const float* image = x + img * d.h * d.w * d.groups + c / d.co;
    float acc = bias != nullptr ? bias[c] : 0.0f;
    for (int64_t i = 0; i < d.kh; ++i) {
      const int64_t iy = oy * d.sh - d.pt + i * d.dh;
      if (iy < 0 || iy >= d.h) continue;
      for (int64_t j = 0; j < d.kw; ++j) {
        const int64_t ix = ox * d.sw - d.pl + j * d.dw;
        if (ix >= 0 && ix < d.w) acc = fmaf(image[(iy * d.w + ix) * d.groups], w[(i * d.kw + j) * co + c], acc);
      }
    }
    y[e] = act == Activation::none ? acc : apply_activation(act, acc, act_param);
  }
}

// dx[img, iy, ix, g] = Σ_taps Σ_q g[img, oy, ox, g·m + q] · w[tap, g·m + q] over the taps whose
// output oy·sh = iy + pt − i·dh (and likewise ox) exists: a gather, no atomics.
__global__ void __launch_bounds__(kThreads)
depthwise_backward_input_kernel(const ConvDims d, const float* __restrict__ g, const float* __restrict__ w,
                                float* __restrict__ dx) {
  const int64_t co = d.groups * d.co, total = d.n * d.h * d.w * d.groups;
  for (int64_t e = first_element(); e < total; e += element_stride()) {
    const int64_t ch = e % d.groups, q = e / d.groups, ix = q % d.w, iy = q / d.w % d.h, img = q / (d.w * d.h);
    const float* image = g + img * d.oh * d.ow * co + ch * d.co;
    float acc = 0.0f;
    for (int64_t i = 0; i < d.kh; ++i) {
      const int64_t ty = iy + d.pt - i * d.dh;
      if (ty < 0 || ty % d.sh != 0 || ty / d.sh >= d.oh) continue;
      for (int64_t j = 0; j < d.kw; ++j) {
        const int64_t tx = ix + d.pl - j * d.dw;
        if (tx < 0 || tx % d.sw != 0 || tx / d.sw >= d.ow) continue;
        const float* gp = image + (ty / d.sh * d.ow + tx / d.sw) * co;
        const float* wp = w + (i * d.kw + j) * co + ch * d.co;
        for (int64_t r = 0; r < d.co; ++r) acc = fmaf(gp[r], wp[r], acc);
      }
    }
    dx[e] = acc;
  }
}

// Partial weight gradients: block (channel block, tap, split) sums x · g over split blockIdx.z's
// output pixels for 32 channels of one tap, lane y taking every 8th pixel; the 8 lane sums are
// added in shared memory in lane order, into parts[split][tap][c].
__global__ void __launch_bounds__(kChannels * kPixelLanes)
depthwise_backward_weight_kernel(const ConvDims d, const float* __restrict__ x, const float* __restrict__ g,
                                 float* __restrict__ parts, int64_t per_split) {
  FG_SHARED(float, lanes, [kPixelLanes][kChannels + 1]);
  const int64_t co = d.groups * d.co, pixels = d.n * d.oh * d.ow;
  const int64_t c = int64_t(blockIdx.x) * kChannels + threadIdx.x, tap = blockIdx.y;
  const int64_t i = tap / d.kw, j = tap % d.kw;
  const int64_t p0 = int64_t(blockIdx.z) * per_split, p1 = min(pixels, p0 + per_split);
  float acc = 0.0f;
  if (c < co) {
    for (int64_t p = p0 + threadIdx.y; p < p1; p += kPixelLanes) {
      const int64_t ox = p % d.ow, oy = p / d.ow % d.oh, img = p / (d.ow * d.oh);
      const int64_t iy = oy * d.sh - d.pt + i * d.dh, ix = ox * d.sw - d.pl + j * d.dw;
      if (iy >= 0 && iy < d.h && ix >= 0 && ix < d.w)
        acc = fmaf(x[((img * d.h + iy) * d.w + ix) * d.groups + c / d.co], g[p * co + c], acc);
    }
  }
  lanes[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y != 0 || c >= co) return;
  float total = 0.0f;
  for (int l = 0; l < kPixelLanes; ++l) total += lanes[l][threadIdx.x];
  parts[(int64_t(blockIdx.z) * d.kh * d.kw + tap) * co + c] = total;
}

}  // namespace

void depthwise_forward(const ConvDims& d, const float* x, const float* w, const float* bias, float* y,
                       Activation act, float act_param, cudaStream_t stream, int device) {
  const int64_t total = d.n * d.oh * d.ow * d.groups * d.co;
  if (total == 0) return;
  FG_LAUNCH(depthwise_forward_kernel, grid_for(total, kThreads, device), kThreads, 0, stream, d, x, w, bias, y, act,
            act_param);
}

void depthwise_backward_input(const ConvDims& d, const float* g, const float* w, float* dx, cudaStream_t stream,
                              int device) {
  const int64_t total = d.n * d.h * d.w * d.groups;
  if (total == 0) return;
  FG_LAUNCH(depthwise_backward_input_kernel, grid_for(total, kThreads, device), kThreads, 0, stream, d, g, w, dx);
}

void depthwise_backward_weight(const ConvDims& d, const float* x, const float* g, float* dw, cudaStream_t stream,
                               int device) {
  const int64_t co = d.groups * d.co, taps = d.kh * d.kw, pixels = d.n * d.oh * d.ow, len = taps * co;
  if (len == 0) return;
  if (pixels == 0) {
    FG_CUDA_CHECK(cudaMemsetAsync(dw, 0, sizeof(float) * len, stream));
    return;
  }
  if (taps > kMaxGridYZ) throw std::invalid_argument("conv: depthwise kernels of more than 65535 taps");
  const int64_t col_blocks = (co + kChannels - 1) / kChannels;
  const int64_t wanted = (kWavesOfBlocks * multiprocessor_count(device) + col_blocks * taps - 1) / (col_blocks * taps);
  int64_t splits = std::clamp<int64_t>(std::min(wanted, pixels / kMinPixelsPerSplit), 1, kMaxGridYZ);
  const int64_t per_split = (pixels + splits - 1) / splits;
  splits = (pixels + per_split - 1) / per_split;
  float* parts = dw;
  if (splits > 1) FG_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&parts), sizeof(float) * splits * len, stream));
  FG_LAUNCH(depthwise_backward_weight_kernel,
            dim3(static_cast<unsigned>(col_blocks), static_cast<unsigned>(taps), static_cast<unsigned>(splits)),
            dim3(kChannels, kPixelLanes), 0, stream, d, x, g, parts, per_split);
  if (splits > 1) {
    sum_splits(parts, dw, splits, len, stream, device);
    FG_CUDA_CHECK(cudaFreeAsync(parts, stream));
  }
}

}  // namespace fusegrad::cuda
