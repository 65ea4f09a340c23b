// Max and average pooling kernels over NHWC images (pool.cuh has the conventions,
// pool_common.cuh the thread layout they all share; global average pooling is pool_global.cu).
#include <cstdint>
#include <limits>

#include "pool/pool.cuh"
#include "pool/pool_common.cuh"

namespace fusegrad::cuda {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// ---- geometry ------------------------------------------------------------------------------------

// Along one axis, the window's taps start + i * dil (i < k) that lie in [0, n): the first such
// position and one past the last (first >= end when none does); the CPU's rule.
__device__ __forceinline__ void taps_inside(int64_t start, int64_t k, int64_t dil, int64_t n, int64_t& first,
                                            int64_t& end) {
  int64_t unused;
  first = start >= 0 ? start : start + divmod(-start + dil - 1, dil, unused) * dil;
  const int64_t last = start + (k - 1) * dil;
  end = last < n ? last + 1 : start > n - 1 ? first : start + divmod(n - 1 - start, dil, unused) * dil + 1;
}

// Window of output pixel (oh, ow), clipped to the input: rows h0, h0 + dh, ... below h1, columns
// w0, w0 + dw, ... below w1 (with dilation 1, the rectangle [h0, h1) x [w0, w1)).
struct Window {
  int64_t h0, h1, w0, w1;
};

__device__ __forceinline__ Window window_of(const PoolGeometry& g, int64_t oh, int64_t ow) {
  if (g.dh == 1 && g.dw == 1) {
    const int64_t hs = oh * g.sh - g.ph, ws = ow * g.sw - g.pw;
    return {max(hs, int64_t(0)), min(hs + g.kh, g.h), max(ws, int64_t(0)), min(ws + g.kw, g.w)};
  }
  Window win;
  taps_inside(oh * g.sh - g.ph, g.kh, g.dh, g.h, win.h0, win.h1);
  taps_inside(ow * g.sw - g.pw, g.kw, g.dw, g.w, win.w0, win.w1);
  return win;
}

// Output pixel q (flat over n, oh, ow) of a forward kernel's grid-stride walk, with its window.
struct OutputPixel {
  int64_t n, oh, ow;
  Window win;
};

__device__ __forceinline__ OutputPixel output_pixel(const PoolGeometry& g, int64_t q) {
  OutputPixel o;
  o.n = divmod(divmod(q, g.ow, o.ow), g.oh, o.oh);
  o.win = window_of(g, o.oh, o.ow);
  return o;
}

// Taps of a window along one axis: positions first, first + dil, ... below end.
__device__ __forceinline__ int taps_between(int64_t first, int64_t end, int64_t dil) {
  if (end <= first) return 0;
  int64_t unused;
  return static_cast<int>(dil == 1 ? end - first : divmod(end - first + dil - 1, dil, unused));
}

// 1 / PyTorch's divisor of average-pooling window (oh, ow), as the CPU computes it: with
// count_include_pad the window clipped to the padded input, otherwise the real pixels in it.
__device__ __forceinline__ float inv_count(const PoolGeometry& g, int64_t oh, int64_t ow, bool include_pad) {
  const int64_t hs = oh * g.sh - g.ph, ws = ow * g.sw - g.pw;
  const int64_t h0 = include_pad ? hs : max(hs, int64_t(0)), w0 = include_pad ? ws : max(ws, int64_t(0));
  const int64_t h1 = min(hs + g.kh, include_pad ? g.h + g.ph : g.h);
  const int64_t w1 = min(ws + g.kw, include_pad ? g.w + g.pw : g.w);
  return 1.0f / (static_cast<float>(h1 - h0) * static_cast<float>(w1 - w0));
}


// ---- kernels ---------------------------------------------------------------------------------------

// Max pooling: a thread takes one channel vector of an output pixel and walks its window's taps
// in row-major order, keeping per lane the running maximum and where it was. A value takes over
// when it is greater or NaN (the CPU's and PyTorch's rule: ties keep the first, NaN wins); an all
// -inf window points at its first pixel.
template <int kW, bool kIndices>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
max_forward_kernel(const PoolGeometry g, const float* __restrict__ x, float* __restrict__ y,
                   int32_t* __restrict__ indices) {
  const int64_t vectors = g.c / kW, pixels = g.n * g.oh * g.ow;
  for (int64_t q = first_pixel(); q < pixels; q += pixel_stride()) {
    const OutputPixel o = output_pixel(g, q);
    const Window& win = o.win;
    const float* plane = x + o.n * g.h * g.w * g.c;
    for (int64_t v = threadIdx.x; v < vectors; v += blockDim.x) {
      float m[kW];
      int32_t best[kW];
#pragma unroll
      for (int l = 0; l < kW; ++l) m[l] = kNegInf, best[l] = static_cast<int32_t>(win.h0 * g.w + win.w0);
      // The window in row-major order as one flat loop, unrolled so that several loads are in
      // flight per thread even for a 2x2 window.
      const int cols = taps_between(win.w0, win.w1, g.dw), count = taps_between(win.h0, win.h1, g.dh) * cols;
      const int32_t dw = static_cast<int32_t>(g.dw);
      const int32_t next_row = static_cast<int32_t>(g.dh * g.w) - (cols - 1) * dw;
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
        const int32_t step = ++col == cols ? (col = 0, next_row) : dw;
        pos += step, p += int64_t(step) * g.c;
      }
      store_vec<kW>(y + q * g.c + v * kW, m);
      if constexpr (kIndices) store_vec<kW>(indices + q * g.c + v * kW, best);
    }
  }
}

// Whether index id (ih * W + iw) names a tap of window win.
__device__ __forceinline__ bool names_a_tap(const PoolGeometry& g, const Window& win, int32_t id) {
  if (id < 0) return false;
  int64_t s, off_r = 0, off_s = 0;
  const int64_t r = divmod(id, g.w, s);
  if (r < win.h0 || r >= win.h1 || s < win.w0 || s >= win.w1) return false;
  if (g.dh != 1) divmod(r - win.h0, g.dh, off_r);
  if (g.dw != 1) divmod(s - win.w0, g.dw, off_s);
  return off_r == 0 && off_s == 0;
}

// Max-pool backward's step for one output window (oh, ow) that covers input pixel (ih, iw), its
// elements at o: adds the window's gradient where its index names the pixel (pos = ih * W + iw).
// With kCheck, the window's first pixel also counts the indices that name no tap of the window.
template <int kW, bool kCheck>
__device__ __forceinline__ void take_window(const PoolGeometry& g, const float* __restrict__ gy,
                                            const int32_t* __restrict__ indices, int64_t o, int64_t oh, int64_t ow,
                                            int64_t ih, int64_t iw, int32_t pos, float (&acc)[kW],
                                            unsigned& misplaced) {
  int32_t id[kW];
  float gv[kW];
  load_vec<kW>(indices + o, id);
  load_vec<kW>(gy + o, gv);
#pragma unroll
  for (int l = 0; l < kW; ++l)
    if (id[l] == pos) acc[l] += gv[l];
  if constexpr (kCheck) {
    const Window win = window_of(g, oh, ow);
    if (ih == win.h0 && iw == win.w0)
#pragma unroll
      for (int l = 0; l < kW; ++l) misplaced += !names_a_tap(g, win, id[l]);
  }
}

// Max-pool backward with dilation, as a gather: a thread takes one channel vector of an input pixel
// and walks the taps that can land on it, since the windows that hold it are not a run of outputs
// (the cells below assume they are). Tap (i, j) of output (oh, ow) lands on (ih, iw) when
// oh·sh = ih + ph − i·dh and ow·sw = iw + pw − j·dw; taps from last to first meet the outputs in
// increasing order, the order the CPU's scatter adds in. With `bad`, each window's first pixel
// counts the window's indices that name no tap of it (they contribute nothing).
template <int kW, bool kCheck>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
max_backward_dilated_kernel(const PoolGeometry g, const float* __restrict__ gy, const int32_t* __restrict__ indices,
                            float* __restrict__ gx, unsigned long long* bad) {
  const int64_t vectors = g.c / kW, pixels = g.n * g.h * g.w;
  for (int64_t q = first_pixel(); q < pixels; q += pixel_stride()) {
    int64_t iw, ih;
    const int64_t n = divmod(divmod(q, g.w, iw), g.h, ih);
    const int32_t pos = static_cast<int32_t>(ih * g.w + iw);
    const int64_t out_plane = n * g.oh * g.ow * g.c;
    for (int64_t v = threadIdx.x; v < vectors; v += blockDim.x) {
      float acc[kW] = {};
      unsigned misplaced = 0;
      for (int64_t i = g.kh - 1; i >= 0; --i) {
        int64_t rh, rw;
        const int64_t th = ih + g.ph - i * g.dh, oh = th < 0 ? -1 : divmod(th, g.sh, rh);
        if (oh < 0 || rh != 0 || oh >= g.oh) continue;
        for (int64_t j = g.kw - 1; j >= 0; --j) {
          const int64_t tw = iw + g.pw - j * g.dw, ow = tw < 0 ? -1 : divmod(tw, g.sw, rw);
          if (ow < 0 || rw != 0 || ow >= g.ow) continue;
          take_window<kW, kCheck>(g, gy, indices, out_plane + (oh * g.ow + ow) * g.c + v * kW, oh, ow, ih, iw, pos,
                                  acc, misplaced);
        }
      }
      store_vec<kW>(gx + q * g.c + v * kW, acc);
      if (kCheck && misplaced) atomicAdd(bad, static_cast<unsigned long long>(misplaced));
    }
  }
}

// ---- backward without dilation: a thread per output pixel and its input cell ------------------------

// A thread takes one channel vector of an output pixel, as in the forward, and writes every input
// pixel of its cell: the stride x stride pixels from its window's first row and column, clipped to
// the input, and on the last output row (column) every row (column) to the input's end. The cells
// partition the input, so gx is written once, without atomics. A pixel sums the gradients of the
// windows that hold it, in output order (the order the CPU's scatter adds in): they lie among its
// cell's window and the span - 1 before it on each axis (span = ceil(k / s): 1 where the windows
// tile the input, 2 for 3x3 stride 2). A thread per input pixel would run s² times the threads,
// each redoing the index arithmetic that finds its windows.
struct Span {
  int64_t h, w;
};

inline Span window_span(const PoolGeometry& g) { return {(g.kh + g.sh - 1) / g.sh, (g.kw + g.sw - 1) / g.sw}; }

__device__ __forceinline__ Window cell_of(const PoolGeometry& g, int64_t oh, int64_t ow) {
  const int64_t hs = oh * g.sh - g.ph, ws = ow * g.sw - g.pw;
  return {max(hs, int64_t(0)), oh == g.oh - 1 ? g.h : min(hs + g.sh, g.h), max(ws, int64_t(0)),
          ow == g.ow - 1 ? g.w : min(ws + g.sw, g.w)};
}

// Calls take(a, b, o) for the windows (a, b) that hold input pixel (ih, iw) of the cell of (oh, ow),
// in output order; o: the window's flat output pixel in its image.
template <class Take>
__device__ __forceinline__ void windows_holding(const PoolGeometry& g, Span span, int64_t oh, int64_t ow, int64_t ih,
                                                int64_t iw, Take&& take) {
#pragma unroll 1
  for (int64_t a = max(oh - span.h + 1, int64_t(0)); a <= oh; ++a) {
    const int64_t hs = a * g.sh - g.ph;
    if (ih < hs || ih >= hs + g.kh) continue;
#pragma unroll 1
    for (int64_t b = max(ow - span.w + 1, int64_t(0)); b <= ow; ++b) {
      const int64_t ws = b * g.sw - g.pw;
      if (iw >= ws && iw < ws + g.kw) take(a, b, a * g.ow + b);
    }
  }
}

// The walk both backward kernels share: for each channel vector v of the thread's output pixels,
// before the cell is written on_output(q, o, v), then for each pixel (ih, iw) of the cell the sum
// add(acc, offset, a, b, ih, iw) over the windows (a, b) that hold it (offset: the window's
// element v in gy and the indices), stored to gx.
template <int kW, class OnOutput, class Add>
__device__ __forceinline__ void write_cells(const PoolGeometry& g, Span span, float* __restrict__ gx,
                                            OnOutput&& on_output, Add&& add) {
  const int64_t vectors = g.c / kW, pixels = g.n * g.oh * g.ow;
  for (int64_t q = first_pixel(); q < pixels; q += pixel_stride()) {
    const OutputPixel o = output_pixel(g, q);
    const Window cell = cell_of(g, o.oh, o.ow);
    const int64_t image = o.n * g.oh * g.ow;
    float* plane = gx + o.n * g.h * g.w * g.c;
    for (int64_t v = threadIdx.x; v < vectors; v += blockDim.x) {
      on_output(q, o, v);
#pragma unroll 1
      for (int64_t ih = cell.h0; ih < cell.h1; ++ih)
#pragma unroll 1
        for (int64_t iw = cell.w0; iw < cell.w1; ++iw) {
          float acc[kW] = {};
          windows_holding(g, span, o.oh, o.ow, ih, iw, [&](int64_t a, int64_t b, int64_t w) {
            add(acc, (image + w) * g.c + v * kW, a, b, ih, iw);
          });
          store_vec<kW>(plane + (ih * g.w + iw) * g.c + v * kW, acc);
        }
    }
  }
}

// Max pooling's: a window adds its gradient to the pixel its index names. With kCheck, each window
// counts its indices that name no pixel of it into `bad`; like every index that names no pixel,
// they contribute nothing.
template <int kW, bool kCheck>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
max_backward_kernel(const PoolGeometry g, const Span span, const float* __restrict__ gy,
                    const int32_t* __restrict__ indices, float* __restrict__ gx, unsigned long long* bad) {
  const auto check = [&](int64_t q, const OutputPixel& o, int64_t v) {
    if constexpr (kCheck) {
      int32_t id[kW];
      load_vec<kW>(indices + q * g.c + v * kW, id);
      unsigned misplaced = 0;
#pragma unroll
      for (int l = 0; l < kW; ++l) misplaced += !names_a_tap(g, o.win, id[l]);
      if (misplaced) atomicAdd(bad, static_cast<unsigned long long>(misplaced));
    }
  };
  write_cells<kW>(g, span, gx, check, [&](float (&acc)[kW], int64_t at, int64_t a, int64_t b, int64_t ih, int64_t iw) {
    unsigned unused = 0;
    take_window<kW, false>(g, gy, indices, at, a, b, ih, iw, static_cast<int32_t>(ih * g.w + iw), acc, unused);
  });
}

// Average pooling's: a window adds its gradient times its divisor (fmaf, as the CPU's accumulation).
template <int kW>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
avg_backward_kernel(const PoolGeometry g, const Span span, const float* __restrict__ gy, float* __restrict__ gx,
                    bool include_pad) {
  const auto nothing = [](int64_t, const OutputPixel&, int64_t) {};
  write_cells<kW>(g, span, gx, nothing, [&](float (&acc)[kW], int64_t at, int64_t a, int64_t b, int64_t, int64_t) {
    const float scale = inv_count(g, a, b, include_pad);
    float gv[kW];
    load_vec<kW>(gy + at, gv);
#pragma unroll
    for (int l = 0; l < kW; ++l) acc[l] = fmaf(gv[l], scale, acc[l]);
  });
}

// Average pooling: as max_forward_kernel, summing the window in row-major order (the CPU's order)
// and scaling once by the divisor.
template <int kW>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
avg_forward_kernel(const PoolGeometry g, const float* __restrict__ x, float* __restrict__ y, bool include_pad) {
  const int64_t vectors = g.c / kW, pixels = g.n * g.oh * g.ow;
  for (int64_t q = first_pixel(); q < pixels; q += pixel_stride()) {
    const OutputPixel o = output_pixel(g, q);
    const int64_t n = o.n, oh = o.oh, ow = o.ow;
    const Window& win = o.win;
    const float scale = inv_count(g, oh, ow, include_pad);
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

// Max pooling of quantized images (quantized_max_pool2d): uint8 or int8, no indices, no dilation.
// Padding never wins: a window's taps start at its first real pixel, and every window holds one
// (padding <= kernel / 2). Four channels a thread as one 32-bit word where C % 4 == 0 and both
// arrays are 4-byte aligned. int8 values are compared as uint8 after flipping their top bit
// (`flip`), which keeps their order; the maximum is flipped back when stored.
__device__ __forceinline__ uint32_t max_bytes(uint32_t a, uint32_t b) {
  uint32_t r = 0;
#pragma unroll
  for (int i = 0; i < 32; i += 8) r |= max((a >> i) & 0xFFu, (b >> i) & 0xFFu) << i;
  return r;
}

template <bool kWord>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
max_forward_int8_kernel(const PoolGeometry g, const uint8_t* __restrict__ x, uint8_t* __restrict__ y, uint32_t flip) {
  const int64_t vectors = kWord ? g.c / 4 : g.c, pixels = g.n * g.oh * g.ow;
  for (int64_t q = first_pixel(); q < pixels; q += pixel_stride()) {
    const OutputPixel o = output_pixel(g, q);
    const Window& win = o.win;
    const uint8_t* plane = x + o.n * g.h * g.w * g.c;
    for (int64_t v = threadIdx.x; v < vectors; v += blockDim.x) {
      uint32_t m = 0;  // the least value in the flipped order
      for (int64_t ih = win.h0; ih < win.h1; ++ih)
        for (int64_t iw = win.w0; iw < win.w1; ++iw) {
          const uint8_t* p = plane + (ih * g.w + iw) * g.c;
          const uint32_t value = (kWord ? reinterpret_cast<const uint32_t*>(p)[v] : uint32_t{p[v]}) ^ flip;
          m = kWord ? max_bytes(m, value) : max(m, value);
        }
      if (kWord) reinterpret_cast<uint32_t*>(y + q * g.c)[v] = m ^ flip;
      else y[q * g.c + v] = static_cast<uint8_t>(m ^ flip);
    }
  }
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
  if (g.dh != 1 || g.dw != 1) {
    const PixelLaunch l = pixel_launch(g.n * g.h * g.w, vec ? g.c / 4 : g.c, device);
    if (vec && bad)
      FG_LAUNCH((max_backward_dilated_kernel<4, true>), l.grid, l.block, 0, stream, g, gy, indices, gx, bad);
    else if (vec)
      FG_LAUNCH((max_backward_dilated_kernel<4, false>), l.grid, l.block, 0, stream, g, gy, indices, gx, bad);
    else if (bad)
      FG_LAUNCH((max_backward_dilated_kernel<1, true>), l.grid, l.block, 0, stream, g, gy, indices, gx, bad);
    else
      FG_LAUNCH((max_backward_dilated_kernel<1, false>), l.grid, l.block, 0, stream, g, gy, indices, gx, bad);
    return;
  }
  const PixelLaunch l = pixel_launch(g.n * g.oh * g.ow, vec ? g.c / 4 : g.c, device);
  const Span span = window_span(g);
  if (vec && bad) FG_LAUNCH((max_backward_kernel<4, true>), l.grid, l.block, 0, stream, g, span, gy, indices, gx, bad);
  else if (vec) FG_LAUNCH((max_backward_kernel<4, false>), l.grid, l.block, 0, stream, g, span, gy, indices, gx, bad);
  else if (bad) FG_LAUNCH((max_backward_kernel<1, true>), l.grid, l.block, 0, stream, g, span, gy, indices, gx, bad);
  else FG_LAUNCH((max_backward_kernel<1, false>), l.grid, l.block, 0, stream, g, span, gy, indices, gx, bad);
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
  const PixelLaunch l = pixel_launch(g.n * g.oh * g.ow, vec ? g.c / 4 : g.c, device);
  const Span span = window_span(g);
  if (vec) FG_LAUNCH(avg_backward_kernel<4>, l.grid, l.block, 0, stream, g, span, gy, gx, count_include_pad);
  else FG_LAUNCH(avg_backward_kernel<1>, l.grid, l.block, 0, stream, g, span, gy, gx, count_include_pad);
}

void max_pool2d_int8_forward(const PoolGeometry& g, const uint8_t* x, uint8_t* y, bool is_signed, cudaStream_t stream,
                             int device) {
  DeviceGuard guard(device);
  const bool word = g.c % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 4 == 0 && reinterpret_cast<uintptr_t>(y) % 4 == 0;
  const PixelLaunch l = pixel_launch(g.n * g.oh * g.ow, word ? g.c / 4 : g.c, device);
  if (word) FG_LAUNCH(max_forward_int8_kernel<true>, l.grid, l.block, 0, stream, g, x, y, is_signed ? 0x80808080u : 0u);
  else FG_LAUNCH(max_forward_int8_kernel<false>, l.grid, l.block, 0, stream, g, x, y, is_signed ? 0x80u : 0u);
}

}  // namespace fusegrad::cuda
