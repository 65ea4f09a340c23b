// Global average pooling over NHWC images, forward and backward (pool.cuh has the conventions,
// pool_common.cuh the thread layout).
#include <algorithm>
#include <cstdint>
#include <limits>
#include <stdexcept>

#include "pool/pool.cuh"
#include "pool/pool_common.cuh"

namespace fusegrad::cuda {
namespace {

// Global average pooling splits a plane over several blocks only down to this many pixels per
// block: fewer, and the second pass over the partial sums costs more than the parallelism wins.
constexpr int64_t kSplitPixels = 256;

// Global average pooling. Block (cb, split) sums channel block cb of one image over one split of
// its pixels: threadIdx.x over channel vectors, threadIdx.y over pixels (strided), each thread in
// double; then row 0 of the block adds the other rows in a fixed order. With one split it writes
// the mean; with several it writes partial sums that global_avg_finish_kernel adds in split order.
template <int kW>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
global_avg_forward_kernel(const float* __restrict__ x, float* __restrict__ y, double* __restrict__ partial,
                          int64_t n, int64_t hw, int64_t c, int64_t chunk) {
  FG_SHARED(double, sums, [kThreads * 4]);
  const int64_t vectors = c / kW, blocks_per_image = (vectors + blockDim.x - 1) / blockDim.x;
  int64_t cb;
  const int64_t img = divmod(blockIdx.x, blocks_per_image, cb);
  const int64_t v = cb * blockDim.x + threadIdx.x;
  const int64_t p0 = int64_t(blockIdx.y) * chunk, p1 = min(hw, p0 + chunk);
  double acc[kW] = {};
  if (v < vectors) {
    for (int64_t p = p0 + threadIdx.y; p < p1; p += blockDim.y) {
      float a[kW];
      load_vec<kW>(x + (img * hw + p) * c + v * kW, a);
#pragma unroll
      for (int l = 0; l < kW; ++l) acc[l] += a[l];
    }
  }
  const int t = threadIdx.y * blockDim.x + threadIdx.x;
#pragma unroll
  for (int l = 0; l < kW; ++l) sums[t * kW + l] = acc[l];
  __syncthreads();
  if (threadIdx.y != 0 || v >= vectors) return;
  for (unsigned r = 1; r < blockDim.y; ++r)
#pragma unroll
    for (int l = 0; l < kW; ++l) acc[l] += sums[(r * blockDim.x + threadIdx.x) * kW + l];
  if (partial != nullptr) {
#pragma unroll
    for (int l = 0; l < kW; ++l) partial[(int64_t(blockIdx.y) * n + img) * c + v * kW + l] = acc[l];
    return;
  }
  const double inv = hw > 0 ? double(1.0f / static_cast<float>(hw)) : std::numeric_limits<double>::quiet_NaN();
#pragma unroll
  for (int l = 0; l < kW; ++l) y[img * c + v * kW + l] = static_cast<float>(acc[l] * inv);
}

// y[i] = (sum over splits of partial[s][i]) / hw, splits added in order.
__global__ void __launch_bounds__(kThreads, kMinBlocks)
global_avg_finish_kernel(const double* __restrict__ partial, float* __restrict__ y, int64_t count, int64_t splits,
                         int64_t hw) {
  const double inv = double(1.0f / static_cast<float>(hw));
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x) {
    double total = 0.0;
    for (int64_t s = 0; s < splits; ++s) total += partial[s * count + i];
    y[i] = static_cast<float>(total * inv);
  }
}

// Global-average backward: every pixel of image n gets gy[n] / hw; a pure broadcast write, laid
// out as the pooling kernels (channel vectors x pixels).
template <int kW>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
global_avg_backward_kernel(const float* __restrict__ gy, float* __restrict__ gx, int64_t n, int64_t hw, int64_t c) {
  const int64_t vectors = c / kW, pixels = n * hw;
  const float inv = 1.0f / static_cast<float>(max(hw, int64_t(1)));
  for (int64_t q = first_pixel(); q < pixels; q += pixel_stride()) {
    int64_t unused;
    const int64_t img = divmod(q, hw, unused);
    for (int64_t v = threadIdx.x; v < vectors; v += blockDim.x) {
      float a[kW];
      load_vec<kW>(gy + img * c + v * kW, a);
#pragma unroll
      for (int l = 0; l < kW; ++l) a[l] *= inv;
      store_vec<kW>(gx + q * c + v * kW, a);
    }
  }
}

// Splits of each image's pixels for global average pooling: enough blocks to fill the GPU, each
// split at least kSplitPixels pixels. Counted with float4 channel vectors whatever the path, so
// that the workspace size does not depend on alignment.
int64_t global_splits(int64_t n, int64_t hw, int64_t c, int device) {
  const int64_t vectors = (c + 3) / 4, tx = std::min<int64_t>(vectors, 32);
  const int64_t blocks = n * ((vectors + tx - 1) / tx);
  const int64_t target = int64_t(multiprocessor_count(device)) * 8;
  const int64_t wanted = (target + blocks - 1) / blocks;
  return std::max<int64_t>(1, std::min({wanted, hw / kSplitPixels, int64_t(65535)}));
}

}  // namespace

int64_t global_avg_pool2d_workspace_size(int64_t n, int64_t hw, int64_t c, int device) {
  if (n == 0 || c == 0) return 0;
  DeviceGuard guard(device);
  const int64_t splits = global_splits(n, hw, c, device);
  return splits > 1 ? splits * n * c : 0;
}

void global_avg_pool2d_forward(const float* x, float* y, double* workspace, int64_t n, int64_t hw, int64_t c,
                               cudaStream_t stream, int device) {
  DeviceGuard guard(device);
  const int64_t splits = global_splits(n, hw, c, device);
  const bool vec = vectorised(c, {x, y});
  const int64_t vectors = vec ? c / 4 : c;
  const int tx = static_cast<int>(std::min<int64_t>(vectors, 32));
  const dim3 block(tx, kThreads / tx);
  const dim3 grid(static_cast<unsigned>(n * ((vectors + tx - 1) / tx)), static_cast<unsigned>(splits));
  const int64_t chunk = (hw + splits - 1) / std::max<int64_t>(splits, 1);
  double* partial = splits > 1 ? workspace : nullptr;
  if (splits > 1 && workspace == nullptr) throw std::invalid_argument("global_avg_pool2d: workspace missing");
  if (vec) FG_LAUNCH(global_avg_forward_kernel<4>, grid, block, 0, stream, x, y, partial, n, hw, c, chunk);
  else FG_LAUNCH(global_avg_forward_kernel<1>, grid, block, 0, stream, x, y, partial, n, hw, c, chunk);
  if (splits > 1)
    FG_LAUNCH(global_avg_finish_kernel, grid_for(n * c, kThreads, device), kThreads, 0, stream, partial, y, n * c,
              splits, hw);
}

void global_avg_pool2d_backward(const float* gy, float* gx, int64_t n, int64_t hw, int64_t c, cudaStream_t stream,
                                int device) {
  DeviceGuard guard(device);
  const bool vec = vectorised(c, {gy, gx});
  const PixelLaunch l = pixel_launch(n * hw, vec ? c / 4 : c, device);
  if (vec) FG_LAUNCH(global_avg_backward_kernel<4>, l.grid, l.block, 0, stream, gy, gx, n, hw, c);
  else FG_LAUNCH(global_avg_backward_kernel<1>, l.grid, l.block, 0, stream, gy, gx, n, hw, c);
}

}  // namespace fusegrad::cuda
