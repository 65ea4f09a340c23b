// Pooling kernels over NHWC images (pool.cuh has the conventions).
//
// One thread layout serves every kernel: threadIdx.x runs over the channel vectors of a pixel
// (float4 where C % 4 == 0 and every array is 16-byte aligned, single floats otherwise) and
// threadIdx.y over pixels. A warp then reads whole channel runs of neighbouring pixels: 16-byte
// loads, coalesced for any C, and every thread busy even when C is 1 or 3. Blocks walk the pixels
// in a grid-stride loop sized to fill the GPU once.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <stdexcept>

#include "common/cuda_check.cuh"
#include "common/launch.cuh"
#include "pool/pool.cuh"

namespace fusegrad::cuda {
namespace {

// 8 warps: 8 resident blocks fill a Hopper SM (2048 threads), and up to 256 channel vectors of one
// pixel fit in a block row.
constexpr int kThreads = 256;
// At least 4 resident blocks (1024 threads, half the SM) to keep enough loads in flight: caps the
// kernels at 64 registers.
constexpr int kMinBlocks = 4;
// Window positions a thread's loop takes per step: enough independent loads in flight to cover
// memory latency at that occupancy (a 2x2 window is one step).
constexpr int kUnroll = 4;
// Global average pooling splits a plane over several blocks only down to this many pixels per
// block: fewer, and the second pass over the partial sums costs more than the parallelism wins.
constexpr int64_t kSplitPixels = 256;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// ---- vectors of kW floats or ints (kW = 4: one 16-byte access) ---------------------------------

template <int kW>
__device__ __forceinline__ void load_vec(const float* p, float (&r)[kW]) {
  if constexpr (kW == 4) {
    const float4 a = *reinterpret_cast<const float4*>(p);
    r[0] = a.x, r[1] = a.y, r[2] = a.z, r[3] = a.w;
  } else {
    r[0] = *p;
  }
}

template <int kW>
__device__ __forceinline__ void store_vec(float* p, const float (&r)[kW]) {
  if constexpr (kW == 4) *reinterpret_cast<float4*>(p) = make_float4(r[0], r[1], r[2], r[3]);
  else *p = r[0];
}

template <int kW>
__device__ __forceinline__ void load_ivec(const int32_t* p, int32_t (&r)[kW]) {
  if constexpr (kW == 4) {
    const int4 a = *reinterpret_cast<const int4*>(p);
    r[0] = a.x, r[1] = a.y, r[2] = a.z, r[3] = a.w;
  } else {
    r[0] = *p;
  }
}

template <int kW>
__device__ __forceinline__ void store_ivec(int32_t* p, const int32_t (&r)[kW]) {
  if constexpr (kW == 4) *reinterpret_cast<int4*>(p) = make_int4(r[0], r[1], r[2], r[3]);
  else *p = r[0];
}

// ---- geometry ------------------------------------------------------------------------------------

// q / d, with q % d in rem: in 32 bits when both fit (a 64-bit division costs several 32-bit ones,
// and these run once per pixel).
__device__ __forceinline__ int64_t divmod(int64_t q, int64_t d, int64_t& rem) {
  if (((q | d) >> 31) == 0) {
    const uint32_t a = static_cast<uint32_t>(q), b = static_cast<uint32_t>(d), quot = a / b;
    rem = a - quot * b;
    return quot;
  }
  const int64_t quot = q / d;
  rem = q - quot * d;
  return quot;
}

// Window of output pixel (oh, ow), clipped to the input: rows [h0, h1), columns [w0, w1).
struct Window {
  int64_t h0, h1, w0, w1;
};

__device__ __forceinline__ Window window_of(const PoolGeometry& g, int64_t oh, int64_t ow) {
  const int64_t hs = oh * g.sh - g.ph, ws = ow * g.sw - g.pw;
  return {max(hs, int64_t(0)), min(hs + g.kh, g.h), max(ws, int64_t(0)), min(ws + g.kw, g.w)};
}

// The outputs [o0, o1] along one axis whose windows cover input position i.
__device__ __forceinline__ void covering(int64_t i, int64_t k, int64_t s, int64_t p, int64_t count, int64_t& o0,
                                         int64_t& o1) {
  int64_t unused;
  const int64_t padded = i + p;
  o0 = padded < k ? 0 : divmod(padded - k, s, unused) + 1;
  o1 = min(divmod(padded, s, unused), count - 1);
}

// PyTorch's divisor, as the CPU computes it: with count_include_pad the window clipped to the
// padded input, otherwise the real pixels in it.
__device__ __forceinline__ float inv_count(const PoolGeometry& g, int64_t oh, int64_t ow, const Window& win,
                                           bool include_pad) {
  if (include_pad) {
    const int64_t hs = oh * g.sh - g.ph, ws = ow * g.sw - g.pw;
    const int64_t hn = min(hs + g.kh, g.h + g.ph) - hs, wn = min(ws + g.kw, g.w + g.pw) - ws;
    return 1.0f / (static_cast<float>(hn) * static_cast<float>(wn));
  }
  return 1.0f / static_cast<float>((win.h1 - win.h0) * (win.w1 - win.w0));
}

__device__ __forceinline__ int64_t first_pixel() { return int64_t(blockIdx.x) * blockDim.y + threadIdx.y; }
__device__ __forceinline__ int64_t pixel_stride() { return int64_t(gridDim.x) * blockDim.y; }

// ---- kernels ---------------------------------------------------------------------------------------

// Max pooling: a thread takes one channel vector of an output pixel and walks its window in
// row-major order, keeping per lane the running maximum and where it was. A value takes over when
// it is greater or NaN (the CPU's and PyTorch's rule: ties keep the first, NaN wins); an all -inf
// window points at its first pixel.
template <int kW, bool kIndices>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
max_forward_kernel(const PoolGeometry g, const float* __restrict__ x, float* __restrict__ y,
                   int32_t* __restrict__ indices) {
  const int64_t vectors = g.c / kW, pixels = g.n * g.oh * g.ow;
  for (int64_t q = first_pixel(); q < pixels; q += pixel_stride()) {
    int64_t ow, oh;
    const int64_t n = divmod(divmod(q, g.ow, ow), g.oh, oh);
    const Window win = window_of(g, oh, ow);
    const float* plane = x + n * g.h * g.w * g.c;
    for (int64_t v = threadIdx.x; v < vectors; v += blockDim.x) {
      float m[kW];
      int32_t best[kW];
#pragma unroll
      for (int l = 0; l < kW; ++l) m[l] = kNegInf, best[l] = static_cast<int32_t>(win.h0 * g.w + win.w0);
      // The window in row-major order as one flat loop, unrolled so that several loads are in
      // flight per thread even for a 2x2 window.
      const int cols = static_cast<int>(win.w1 - win.w0), count = static_cast<int>(win.h1 - win.h0) * cols;
      const int32_t next_row = static_cast<int32_t>(g.w) - cols + 1;
      int32_t pos = best[0];
      const float* p = plane + int64_t(pos) * g.c + v * kW;
      int col = 0;
#pragma unroll kUnroll
      for (int t = 0; t < count; ++t) {
        float a[kW];
        load_vec<kW>(p, a);
#pragma unroll
        for (int l = 0; l < kW; ++l)
          if (a[l] > m[l] || a[l] != a[l]) m[l] = a[l], best[l] = pos;
        const int32_t step = ++col == cols ? (col = 0, next_row) : 1;
        pos += step, p += int64_t(step) * g.c;
      }
      store_vec<kW>(y + q * g.c + v * kW, m);
      if constexpr (kIndices) store_ivec<kW>(indices + q * g.c + v * kW, best);
    }
  }
}

// Max-pool backward as a gather: a thread takes one channel vector of an input pixel and adds the
// gradients of the windows that cover it whose index names it, in output order (the CPU's scatter
// adds in that order too). No atomics on gx, so no zero-fill pass and a deterministic result.
// With `bad`, each window's first pixel also checks that the window's indices lie inside it and
// counts those that do not (they match no pixel, so they contribute nothing).
template <int kW, bool kCheck>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
max_backward_kernel(const PoolGeometry g, const float* __restrict__ gy, const int32_t* __restrict__ indices,
                    float* __restrict__ gx, unsigned long long* bad) {
  const int64_t vectors = g.c / kW, pixels = g.n * g.h * g.w;
  for (int64_t q = first_pixel(); q < pixels; q += pixel_stride()) {
    int64_t iw, ih, oh0, oh1, ow0, ow1;
    const int64_t n = divmod(divmod(q, g.w, iw), g.h, ih);
    covering(ih, g.kh, g.sh, g.ph, g.oh, oh0, oh1);
    covering(iw, g.kw, g.sw, g.pw, g.ow, ow0, ow1);
    const int32_t pos = static_cast<int32_t>(ih * g.w + iw);
    const int64_t out_plane = n * g.oh * g.ow * g.c;
    for (int64_t v = threadIdx.x; v < vectors; v += blockDim.x) {
      float acc[kW] = {};
      unsigned misplaced = 0;
      // The covering windows in output order as one flat loop (unrolled: several loads in flight).
      const int cols = static_cast<int>(ow1 - ow0 + 1), count = max(static_cast<int>(oh1 - oh0 + 1), 0) * max(cols, 0);
      int64_t oh = oh0, ow = ow0, o = out_plane + (oh0 * g.ow + ow0) * g.c + v * kW;
#pragma unroll kUnroll
      for (int t = 0; t < count; ++t) {
        int32_t id[kW];
        float gv[kW];
        load_ivec<kW>(indices + o, id);
        load_vec<kW>(gy + o, gv);
#pragma unroll
        for (int l = 0; l < kW; ++l)
          if (id[l] == pos) acc[l] += gv[l];
        if constexpr (kCheck) {
          const Window win = window_of(g, oh, ow);
          if (ih == win.h0 && iw == win.w0) {
#pragma unroll
            for (int l = 0; l < kW; ++l) {
              const int64_t r = id[l] / g.w, s = id[l] % g.w;
              misplaced += id[l] < 0 || r < win.h0 || r >= win.h1 || s < win.w0 || s >= win.w1;
            }
          }
        }
        const bool wrap = ++ow > ow1;
        oh += wrap, ow = wrap ? ow0 : ow, o += (wrap ? g.ow - cols + 1 : 1) * g.c;
      }
      store_vec<kW>(gx + q * g.c + v * kW, acc);
      if (kCheck && misplaced) atomicAdd(bad, static_cast<unsigned long long>(misplaced));
    }
  }
}

// Average pooling: as max_forward_kernel, summing the window in row-major order (the CPU's order)
// and scaling once by the divisor.
template <int kW>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
avg_forward_kernel(const PoolGeometry g, const float* __restrict__ x, float* __restrict__ y, bool include_pad) {
  const int64_t vectors = g.c / kW, pixels = g.n * g.oh * g.ow;
  for (int64_t q = first_pixel(); q < pixels; q += pixel_stride()) {
    int64_t ow, oh;
    const int64_t n = divmod(divmod(q, g.ow, ow), g.oh, oh);
    const Window win = window_of(g, oh, ow);
    const float scale = inv_count(g, oh, ow, win, include_pad);
    const float* plane = x + n * g.h * g.w * g.c;
    for (int64_t v = threadIdx.x; v < vectors; v += blockDim.x) {
      float acc[kW] = {};
      const int cols = static_cast<int>(win.w1 - win.w0), count = static_cast<int>(win.h1 - win.h0) * cols;
      const float* p = plane + (win.h0 * g.w + win.w0) * g.c + v * kW;
      int col = 0;
#pragma unroll kUnroll
      for (int t = 0; t < count; ++t) {
        float a[kW];
        load_vec<kW>(p, a);
#pragma unroll
        for (int l = 0; l < kW; ++l) acc[l] += a[l];
        p += (++col == cols ? (col = 0, g.w - cols + 1) : 1) * g.c;
      }
#pragma unroll
      for (int l = 0; l < kW; ++l) acc[l] *= scale;
      store_vec<kW>(y + q * g.c + v * kW, acc);
    }
  }
}

// Average-pool backward as a gather: an input pixel's gradient is the sum, in output order, of
// gy * divisor over the windows that cover it (fmaf, as the CPU's accumulation).
template <int kW>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
avg_backward_kernel(const PoolGeometry g, const float* __restrict__ gy, float* __restrict__ gx, bool include_pad) {
  const int64_t vectors = g.c / kW, pixels = g.n * g.h * g.w;
  for (int64_t q = first_pixel(); q < pixels; q += pixel_stride()) {
    int64_t iw, ih, oh0, oh1, ow0, ow1;
    const int64_t n = divmod(divmod(q, g.w, iw), g.h, ih);
    covering(ih, g.kh, g.sh, g.ph, g.oh, oh0, oh1);
    covering(iw, g.kw, g.sw, g.pw, g.ow, ow0, ow1);
    const int64_t out_plane = n * g.oh * g.ow * g.c;
    for (int64_t v = threadIdx.x; v < vectors; v += blockDim.x) {
      float acc[kW] = {};
      const int cols = static_cast<int>(ow1 - ow0 + 1), count = max(static_cast<int>(oh1 - oh0 + 1), 0) * max(cols, 0);
      int64_t oh = oh0, ow = ow0, o = out_plane + (oh0 * g.ow + ow0) * g.c + v * kW;
#pragma unroll kUnroll
      for (int t = 0; t < count; ++t) {
        const float scale = inv_count(g, oh, ow, window_of(g, oh, ow), include_pad);
        float gv[kW];
        load_vec<kW>(gy + o, gv);
#pragma unroll
        for (int l = 0; l < kW; ++l) acc[l] = fmaf(gv[l], scale, acc[l]);
        const bool wrap = ++ow > ow1;
        oh += wrap, ow = wrap ? ow0 : ow, o += (wrap ? g.ow - cols + 1 : 1) * g.c;
      }
      store_vec<kW>(gx + q * g.c + v * kW, acc);
    }
  }
}

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

// ---- launching -------------------------------------------------------------------------------------

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Whether the float4 kernels apply: C a multiple of 4 and every array 16-byte aligned.
bool vectorised(int64_t c, std::initializer_list<const void*> arrays) {
  if (c % 4 != 0) return false;
  for (const void* p : arrays)
    if (p != nullptr && !aligned16(p)) return false;
  return true;
}

// Block (channel vectors, pixels) and a grid that covers `pixels` once or fills the GPU.
struct PixelLaunch {
  dim3 grid, block;
};

PixelLaunch pixel_launch(int64_t pixels, int64_t vectors, int device) {
  const int tx = static_cast<int>(std::min<int64_t>(vectors, kThreads));
  const int ty = kThreads / tx;
  return {dim3(grid_for(pixels, ty, device)), dim3(tx, ty)};
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

void max_pool2d_forward(const PoolGeometry& g, const float* x, float* y, int32_t* indices, cudaStream_t stream,
                        int device) {
  DeviceGuard guard(device);
  const bool vec = vectorised(g.c, {x, y, indices});
  const PixelLaunch l = pixel_launch(g.n * g.oh * g.ow, vec ? g.c / 4 : g.c, device);
  if (vec && indices) FG_LAUNCH((max_forward_kernel<4, true>), l.grid, l.block, 0, stream, g, x, y, indices);
  else if (vec) FG_LAUNCH((max_forward_kernel<4, false>), l.grid, l.block, 0, stream, g, x, y, indices);
  else if (indices) FG_LAUNCH((max_forward_kernel<1, true>), l.grid, l.block, 0, stream, g, x, y, indices);
  else FG_LAUNCH((max_forward_kernel<1, false>), l.grid, l.block, 0, stream, g, x, y, indices);
}

void max_pool2d_backward(const PoolGeometry& g, const float* gy, const int32_t* indices, float* gx,
                         unsigned long long* bad, cudaStream_t stream, int device) {
  DeviceGuard guard(device);
  const bool vec = vectorised(g.c, {gy, indices, gx});
  const PixelLaunch l = pixel_launch(g.n * g.h * g.w, vec ? g.c / 4 : g.c, device);
  if (vec && bad) FG_LAUNCH((max_backward_kernel<4, true>), l.grid, l.block, 0, stream, g, gy, indices, gx, bad);
  else if (vec) FG_LAUNCH((max_backward_kernel<4, false>), l.grid, l.block, 0, stream, g, gy, indices, gx, bad);
  else if (bad) FG_LAUNCH((max_backward_kernel<1, true>), l.grid, l.block, 0, stream, g, gy, indices, gx, bad);
  else FG_LAUNCH((max_backward_kernel<1, false>), l.grid, l.block, 0, stream, g, gy, indices, gx, bad);
}

void avg_pool2d_forward(const PoolGeometry& g, const float* x, float* y, bool count_include_pad,
                        cudaStream_t stream, int device) {
  DeviceGuard guard(device);
  const bool vec = vectorised(g.c, {x, y});
  const PixelLaunch l = pixel_launch(g.n * g.oh * g.ow, vec ? g.c / 4 : g.c, device);
  if (vec) FG_LAUNCH(avg_forward_kernel<4>, l.grid, l.block, 0, stream, g, x, y, count_include_pad);
  else FG_LAUNCH(avg_forward_kernel<1>, l.grid, l.block, 0, stream, g, x, y, count_include_pad);
}

void avg_pool2d_backward(const PoolGeometry& g, const float* gy, float* gx, bool count_include_pad,
                         cudaStream_t stream, int device) {
  DeviceGuard guard(device);
  const bool vec = vectorised(g.c, {gy, gx});
  const PixelLaunch l = pixel_launch(g.n * g.h * g.w, vec ? g.c / 4 : g.c, device);
  if (vec) FG_LAUNCH(avg_backward_kernel<4>, l.grid, l.block, 0, stream, g, gy, gx, count_include_pad);
  else FG_LAUNCH(avg_backward_kernel<1>, l.grid, l.block, 0, stream, g, gy, gx, count_include_pad);
}

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
