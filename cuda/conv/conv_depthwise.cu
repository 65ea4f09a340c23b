// Depthwise convolutions on the GPU (groups = C_in: one input channel a group, m = C_out / C_in
// outputs each). As the implicit GEMM's batch items, each group would fill one column of a 64- or
// 128-wide tile; these kernels instead give each thread one element and walk its KH·KW taps.
// Threads are laid out as the pooling kernels': threadIdx.x over a pixel's channels (a warp's
// loads and stores coalesced along NHWC's channel dimension), threadIdx.y over pixels, whose
// coordinates are split once per pixel with FastDivmod (a 64-bit division per element would cost
// more than its taps' FMAs). Every output is summed by one thread in a fixed order: the results
// do not depend on timing.
#include <algorithm>
#include <stdexcept>
#include <string>

#include "common/cuda_check.cuh"
#include "common/launch.cuh"
#include "conv/conv.cuh"
#include "conv/conv_operands.cuh"
#include "gemm/epilogue.cuh"

namespace fusegrad::cuda {
namespace {

constexpr int kThreads = 256;
// Backward-weight blocks: 32 channels x 8 pixel lanes, the lanes' sums added in shared memory.
constexpr int kChannels = 32, kPixelLanes = 8;
// Output pixels per block of the weight gradient at least, and blocks to aim for (two waves).
constexpr int64_t kMinPixelsPerSplit = 256, kWavesOfBlocks = 2;
constexpr int64_t kMaxGridYZ = 65535;

// The divisors the kernels split pixel indices and channels with.
struct DepthwiseIndex {
  ConvDims d;
  FastDivmod oh, ow, h, w, m;  // m: outputs per input channel
};

// Host: the index helpers, or std::invalid_argument when a pixel count reaches 2^31 (FastDivmod's
// range; conv_index's bound for the GEMM paths too).
DepthwiseIndex depthwise_index(const ConvDims& d) {
  for (const int64_t v : {d.n * d.h * d.w, d.n * d.oh * d.ow, d.groups * d.co})
    if (v >= (int64_t{1} << 31))
      throw std::invalid_argument("conv: " + std::to_string(v) +
                                  " pixels or channels are more than the CUDA kernels index (2^31 - 1)");
  const auto fd = [](int64_t v) { return FastDivmod(v > 0 ? v : 1); };
  return {d, fd(d.oh), fd(d.ow), fd(d.h), fd(d.w), fd(d.co)};
}

__device__ __forceinline__ int64_t first_pixel() { return int64_t(blockIdx.x) * blockDim.y + threadIdx.y; }
__device__ __forceinline__ int64_t pixel_stride() { return int64_t(gridDim.x) * blockDim.y; }

// y[img, oy, ox, c] = act(bias[c] + Σ_taps x[img, iy, ix, c / m] · w[tap, c]).
__global__ void __launch_bounds__(kThreads)
depthwise_forward_kernel(const DepthwiseIndex ix, const float* __restrict__ x, const float* __restrict__ w,
                         const float* __restrict__ bias, float* __restrict__ y, Activation act, float act_param) {
  const ConvDims& d = ix.d;
  const int64_t co = d.groups * d.co, pixels = d.n * d.oh * d.ow;
  for (int64_t q = first_pixel(); q < pixels; q += pixel_stride()) {
    int rest, ox, img, oy;
    ix.ow.divmod(q, rest, ox);
    ix.oh.divmod(rest, img, oy);
    const float* image = x + int64_t(img) * d.h * d.w * d.groups;
    const int64_t iy0 = int64_t(oy) * d.sh - d.pt, ix0 = int64_t(ox) * d.sw - d.pl;
    for (int64_t c = threadIdx.x; c < co; c += blockDim.x) {
      const float* xc = image + ix.m.div(c);
      float acc = bias != nullptr ? bias[c] : 0.0f;
      for (int64_t i = 0; i < d.kh; ++i) {
        const int64_t iy = iy0 + i * d.dh;
        if (iy < 0 || iy >= d.h) continue;
        for (int64_t j = 0; j < d.kw; ++j) {
          const int64_t xx = ix0 + j * d.dw;
          if (xx >= 0 && xx < d.w) acc = fmaf(xc[(iy * d.w + xx) * d.groups], w[(i * d.kw + j) * co + c], acc);
        }
      }
      y[q * co + c] = act == Activation::none ? acc : apply_activation(act, acc, act_param);
    }
  }
}

// dx[img, iy, ix, g] = Σ_taps Σ_r g[img, oy, ox, g·m + r] · w[tap, g·m + r] over the taps whose
// output oy·sh = iy + pt − i·dh (and likewise ox) exists: a gather, no atomics.
__global__ void __launch_bounds__(kThreads)
depthwise_backward_input_kernel(const DepthwiseIndex ix, const float* __restrict__ g, const float* __restrict__ w,
                                float* __restrict__ dx) {
  const ConvDims& d = ix.d;
  const int64_t co = d.groups * d.co, pixels = d.n * d.h * d.w;
  for (int64_t q = first_pixel(); q < pixels; q += pixel_stride()) {
    int rest, px, img, py;
    ix.w.divmod(q, rest, px);
    ix.h.divmod(rest, img, py);
    const float* image = g + int64_t(img) * d.oh * d.ow * co;
    for (int64_t ch = threadIdx.x; ch < d.groups; ch += blockDim.x) {
      float acc = 0.0f;
      for (int64_t i = 0; i < d.kh; ++i) {
        const int64_t ty = py + d.pt - i * d.dh;
        if (ty < 0 || ty % d.sh != 0 || ty / d.sh >= d.oh) continue;
        for (int64_t j = 0; j < d.kw; ++j) {
          const int64_t tx = px + d.pl - j * d.dw;
          if (tx < 0 || tx % d.sw != 0 || tx / d.sw >= d.ow) continue;
          const float* gp = image + (ty / d.sh * d.ow + tx / d.sw) * co + ch * d.co;
          const float* wp = w + (i * d.kw + j) * co + ch * d.co;
          for (int64_t r = 0; r < d.co; ++r) acc = fmaf(gp[r], wp[r], acc);
        }
      }
      dx[q * d.groups + ch] = acc;
    }
  }
}

// Partial weight gradients: block (channel block, tap, split) sums x · g over split blockIdx.z's
// output pixels for 32 channels of one tap, lane y taking every 8th pixel; the 8 lane sums are
// added in shared memory in lane order, into parts[split][tap][c].
__global__ void __launch_bounds__(kChannels * kPixelLanes)
depthwise_backward_weight_kernel(const DepthwiseIndex ix, const float* __restrict__ x, const float* __restrict__ g,
                                 float* __restrict__ parts, int64_t per_split) {
  FG_SHARED(float, lanes, [kPixelLanes][kChannels + 1]);
  const ConvDims& d = ix.d;
  const int64_t co = d.groups * d.co, pixels = d.n * d.oh * d.ow;
  const int64_t c = int64_t(blockIdx.x) * kChannels + threadIdx.x, tap = blockIdx.y;
  const int64_t i = tap / d.kw, j = tap % d.kw;
  const int64_t p0 = int64_t(blockIdx.z) * per_split, p1 = min(pixels, p0 + per_split);
  float acc = 0.0f;
  if (c < co) {
    for (int64_t p = p0 + threadIdx.y; p < p1; p += kPixelLanes) {
      int rest, ox, img, oy;
      ix.ow.divmod(p, rest, ox);
      ix.oh.divmod(rest, img, oy);
      const int64_t iy = int64_t(oy) * d.sh - d.pt + i * d.dh, xx = int64_t(ox) * d.sw - d.pl + j * d.dw;
      if (iy >= 0 && iy < d.h && xx >= 0 && xx < d.w)
        acc = fmaf(x[((img * d.h + iy) * d.w + xx) * d.groups + ix.m.div(c)], g[p * co + c], acc);
    }
  }
  lanes[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y != 0 || c >= co) return;
  float total = 0.0f;
  for (int l = 0; l < kPixelLanes; ++l) total += lanes[l][threadIdx.x];
  parts[(int64_t(blockIdx.z) * d.kh * d.kw + tap) * co + c] = total;
}

// Block (channels, pixels) as the pooling kernels': up to kThreads channels across, the rest of
// the block's threads over pixels; a grid that covers the pixels once or fills the GPU.
void pixel_launch(int64_t pixels, int64_t channels, int device, dim3& grid, dim3& block) {
  const int tx = static_cast<int>(std::clamp<int64_t>(channels, 1, kThreads));
  block = dim3(tx, kThreads / tx);
  grid = dim3(grid_for(pixels, kThreads / tx, device));
}

}  // namespace

void depthwise_forward(const ConvDims& d, const float* x, const float* w, const float* bias, float* y,
                       Activation act, float act_param, cudaStream_t stream, int device) {
  const int64_t pixels = d.n * d.oh * d.ow, co = d.groups * d.co;
  if (pixels * co == 0) return;
  dim3 grid, block;
  pixel_launch(pixels, co, device, grid, block);
  FG_LAUNCH(depthwise_forward_kernel, grid, block, 0, stream, depthwise_index(d), x, w, bias, y, act, act_param);
}

void depthwise_backward_input(const ConvDims& d, const float* g, const float* w, float* dx, cudaStream_t stream,
                              int device) {
  const int64_t pixels = d.n * d.h * d.w;
  if (pixels * d.groups == 0) return;
  dim3 grid, block;
  pixel_launch(pixels, d.groups, device, grid, block);
  FG_LAUNCH(depthwise_backward_input_kernel, grid, block, 0, stream, depthwise_index(d), g, w, dx);
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
  const int64_t blocks = col_blocks * taps;  // per split
  const int64_t wanted = (kWavesOfBlocks * multiprocessor_count(device) + blocks - 1) / blocks;
  int64_t splits = std::clamp<int64_t>(std::min(wanted, pixels / kMinPixelsPerSplit), 1, kMaxGridYZ);
  const int64_t per_split = (pixels + splits - 1) / splits;
  splits = (pixels + per_split - 1) / per_split;
  const DepthwiseIndex index = depthwise_index(d);  // checks the sizes before anything is allocated
  float* parts = dw;
  if (splits > 1) FG_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&parts), sizeof(float) * splits * len, stream));
  FG_LAUNCH(depthwise_backward_weight_kernel,
            dim3(static_cast<unsigned>(col_blocks), static_cast<unsigned>(taps), static_cast<unsigned>(splits)),
            dim3(kChannels, kPixelLanes), 0, stream, index, x, g, parts, per_split);
  if (splits > 1) {
    sum_splits(parts, dw, splits, len, stream, device);
    FG_CUDA_CHECK(cudaFreeAsync(parts, stream));
  }
}

}  // namespace fusegrad::cuda
