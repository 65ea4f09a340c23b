// The pooling half of the fused convolution + max-pool (ops.conv2d_max_pool2d): the conv output
// (with its bias) is pooled over pool×pool windows with stride pool, and the activation, which
// commutes with max, is applied to the pooled value. One thread per pooled element, channels
// fastest, so a warp reads and writes 128 contiguous bytes per window position. (cuda/pool holds
// the pooling family itself; this is the conv family's own epilogue pass.)
#include "common/cuda_check.cuh"
#include "common/launch.cuh"
#include "conv/conv.cuh"
#include "gemm/epilogue.cuh"

namespace fusegrad::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads)
conv_max_pool_kernel(const float* conv, float* y, int32_t* indices, int64_t n, int64_t oh, int64_t ow, int64_t c,
                     int64_t pool, Activation act, float act_param) {
  const int64_t ph = oh / pool, pw = ow / pool, total = n * ph * pw * c;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < total; i += int64_t(gridDim.x) * kThreads) {
    const int64_t ch = i % c, px = i / c % pw, py = i / c / pw % ph, img = i / c / pw / ph;
    const float* plane = conv + img * oh * ow * c + ch;
    float best = 0.0f;
    int64_t at = -1;
    for (int64_t dy = 0; dy < pool; ++dy)
      for (int64_t dx = 0; dx < pool; ++dx) {
        const int64_t pos = (py * pool + dy) * ow + px * pool + dx;
        const float v = plane[pos * c];
        // the first maximum in row-major order wins; a NaN wins over numbers and stays
        if (at < 0 || (best == best && (v > best || v != v))) best = v, at = pos;
      }
    y[i] = act == Activation::none ? best : apply_activation(act, best, act_param);
    indices[i] = static_cast<int32_t>(at);
  }
}

}  // namespace

void conv_max_pool(const float* conv, float* y, int32_t* indices, int64_t n, int64_t oh, int64_t ow, int64_t c,
                   int64_t pool, Activation act, float act_param, cudaStream_t stream, int device) {
  const int64_t total = n * (oh / pool) * (ow / pool) * c;
  if (total == 0) return;
  DeviceGuard guard(device);
  FG_LAUNCH(conv_max_pool_kernel, grid_for(total, kThreads, device), kThreads, 0, stream, conv, y, indices, n, oh, ow,
            c, pool, act, act_param);
}

}  // namespace fusegrad::cuda
