// Softmax and log-softmax, forward and backward, along any axis: three layouts by the shape of the
// (outer, len, inner) view.
//   inner == 1, len <= 1024: a row per group of lanes, held in registers (softmax_warp_*).
//   inner == 1, len  > 1024: a row per block, block reductions between strided passes (softmax_block_*).
//   inner  > 1:              columns along threadIdx.x, len split over threadIdx.y (softmax_column_*).
// The forward kernels that cannot hold a row in registers gather the max and the sum of exponentials
// in one online pass (softmax_common.cuh), so they read their input twice at most.
#include <algorithm>
#include <mutex>
#include <set>
#include <utility>

#include "common/cuda_check.cuh"
#include "common/launch.cuh"
#include "softmax/softmax.cuh"
#include "softmax/softmax_common.cuh"

namespace fusegrad::cuda {
namespace {

using namespace softmax_detail;

// Long rows up to this many floats (64 KiB) are kept in shared memory between the two passes, so
// they are read from memory once; three such blocks still fit a Hopper SM's 228 KiB.
constexpr int64_t kCacheFloats = 16384;
// Threads of a column block; columns x slices of len are chosen per shape (column_block).
constexpr int kColThreads = 256;

// Short rows: kWidth lanes per row, kPer values per lane in registers (elements lane, lane + kWidth,
// ...), so the row is read once and written once, coalesced, and max and sum are shuffles within
// the group. The loop runs per warp (all 32 lanes together, rows past the end masked), as the
// shuffles need every lane of the warp.
template <int kWidth, int kPer, bool kLog>
__global__ void __launch_bounds__(kRowThreads)
softmax_warp_forward(const float* x, float* y, int64_t rows, int len) {
  constexpr int kRowsPerWarp = 32 / kWidth;
  const int lane = threadIdx.x % kWidth;
  const int64_t warp = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int64_t step = int64_t(gridDim.x) * blockDim.x / 32 * kRowsPerWarp;
  for (int64_t first = warp * kRowsPerWarp; first < rows; first += step) {
    const int64_t r = first + threadIdx.x % 32 / kWidth;
    const bool valid = r < rows;
    float v[kPer];
    float m = kNegInf;
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int i = j * kWidth + lane;
      v[j] = valid && i < len ? x[r * len + i] : kNegInf;
      m = fmaxf(m, v[j]);
    }
    m = group_reduce<kWidth>(m, Max{});
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const float e = expf(v[j] - m);
      if (!kLog) v[j] = e;  // softmax keeps the exponentials, log-softmax the inputs
      s += j * kWidth + lane < len ? e : 0.0f;
    }
    s = group_reduce<kWidth>(s, Sum{});
    if (!valid) continue;
    const float shift = kLog ? logf(s) : 1.0f / s;
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int i = j * kWidth + lane;
      if (i < len) y[r * len + i] = kLog ? (v[j] - m) - shift : v[j] * shift;
    }
  }
}

// Backward of short rows, laid out as softmax_warp_forward: one reduction (sum g y, or sum g).
template <int kWidth, int kPer, bool kLog>
__global__ void __launch_bounds__(kRowThreads)
softmax_warp_backward(const float* g, const float* y, float* dx, int64_t rows, int len) {
  constexpr int kRowsPerWarp = 32 / kWidth;
  const int lane = threadIdx.x % kWidth;
  const int64_t warp = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int64_t step = int64_t(gridDim.x) * blockDim.x / 32 * kRowsPerWarp;
  for (int64_t first = warp * kRowsPerWarp; first < rows; first += step) {
    const int64_t r = first + threadIdx.x % 32 / kWidth;
    const bool valid = r < rows;
    float gv[kPer], yv[kPer];
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int i = j * kWidth + lane;
      const bool in = valid && i < len;
      gv[j] = in ? g[r * len + i] : 0.0f;
      yv[j] = in ? y[r * len + i] : 0.0f;
      s += kLog ? gv[j] : gv[j] * yv[j];
    }
    s = group_reduce<kWidth>(s, Sum{});
    if (!valid) continue;
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int i = j * kWidth + lane;
      if (i < len) dx[r * len + i] = kLog ? gv[j] - expf(yv[j]) * s : yv[j] * (gv[j] - s);
    }
  }
}

// Long rows, a block per row (grid-stride over rows): one pass for the online statistics (max and
// sum of exponentials together, block_merge'd), one for the output, strided over the block (float4
// where rows are 16-byte aligned). With kCache the first pass also copies the row into shared
// memory and the second reads it there, so the row leaves memory once; longer rows are read twice
// (the second time partly from L2).
template <int kW, bool kCache, bool kLog>
__global__ void __launch_bounds__(kBlockThreads)
softmax_block_forward(const float* x, float* y, int64_t rows, int64_t len) {
  FG_DYNAMIC_SHARED(float, cache);
  const int64_t vectors = len / kW;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * len;
    float* yr = y + r * len;
    float m = kNegInf, s = 0.0f;
#pragma unroll kUnroll
    for (int64_t i = threadIdx.x; i < vectors; i += blockDim.x) {
      float a[kW];
      load_vec<kW>(xr + i * kW, a);
      if constexpr (kCache) store_shared<kW>(cache, i, a);
      online_add<kW>(m, s, a);
    }
    block_merge(m, s);  // its barrier also orders the cache's writes before the reads below
    const float shift = kLog ? logf(s) : 1.0f / s;
#pragma unroll kUnroll
    for (int64_t i = threadIdx.x; i < vectors; i += blockDim.x) {
      float a[kW];
      if constexpr (kCache) load_shared<kW>(cache, i, a);
      else load_vec<kW>(xr + i * kW, a);
#pragma unroll
      for (int l = 0; l < kW; ++l) a[l] = kLog ? (a[l] - m) - shift : expf(a[l] - m) * shift;
      store_vec<kW>(yr + i * kW, a);
    }
    if constexpr (kCache) __syncthreads();  // the next row's first pass overwrites the cache
  }
}

// Backward of long rows, a block per row: the reduction pass, then the output pass (g and y are
// read twice; the second time mostly from L2).
template <int kW, bool kLog>
__global__ void __launch_bounds__(kBlockThreads)
softmax_block_backward(const float* g, const float* y, float* dx, int64_t rows, int64_t len) {
  const int64_t vectors = len / kW;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t base = r * len;
    float s = 0.0f;
#pragma unroll kUnroll
    for (int64_t i = threadIdx.x; i < vectors; i += blockDim.x) {
      float a[kW], b[kW];
      load_vec<kW>(g + base + i * kW, a);
      load_vec<kW>(y + base + i * kW, b);
#pragma unroll
      for (int l = 0; l < kW; ++l) s += kLog ? a[l] : a[l] * b[l];
    }
    s = block_reduce(s, Sum{});
#pragma unroll kUnroll
    for (int64_t i = threadIdx.x; i < vectors; i += blockDim.x) {
      float a[kW], b[kW];
      load_vec<kW>(g + base + i * kW, a);
      load_vec<kW>(y + base + i * kW, b);
#pragma unroll
      for (int l = 0; l < kW; ++l) a[l] = kLog ? a[l] - expf(b[l]) * s : b[l] * (a[l] - s);
      store_vec<kW>(dx + base + i * kW, a);
    }
  }
}

// The ty partial values of each column of a column block, combined in slice order by every thread
// of the column. part holds blockDim.x * blockDim.y values.
template <class Op, class Part>
__device__ __forceinline__ float column_reduce(float v, Op op, Part& part) {
  part[threadIdx.y * blockDim.x + threadIdx.x] = v;
  __syncthreads();
  float r = part[threadIdx.x];
  for (unsigned k = 1; k < blockDim.y; ++k) r = op(r, part[k * blockDim.x + threadIdx.x]);
  __syncthreads();
  return r;
}

// Strided axis (inner > 1): a block takes blockDim.x consecutive columns of one outer index
// (neighbouring threads read neighbouring floats: coalesced) and splits len over threadIdx.y, so a
// few columns with a long axis still spread over many threads. Each thread gathers the online
// statistics of its slice, the slices' pairs are merged in slice order through shared memory, and
// a second pass writes the output: two reads of the input, not three.
template <bool kLog>
__global__ void __launch_bounds__(kColThreads)
softmax_column_forward(const float* x, float* y, int64_t outer, int64_t len, int64_t inner) {
  FG_SHARED(float, part_m, [kColThreads]);
  FG_SHARED(float, part_s, [kColThreads]);
  const int64_t col_blocks = (inner + blockDim.x - 1) / blockDim.x;
  const unsigned t = threadIdx.y * blockDim.x + threadIdx.x;
  for (int64_t b = blockIdx.x; b < outer * col_blocks; b += gridDim.x) {
    const int64_t o = b / col_blocks, j = (b % col_blocks) * blockDim.x + threadIdx.x;
    const bool valid = j < inner;
    const int64_t base = o * len * inner + j;
    float m = kNegInf, s = 0.0f;
    if (valid)
#pragma unroll kUnroll
      for (int64_t k = threadIdx.y; k < len; k += blockDim.y) online_add<1>(m, s, {x[base + k * inner]});
    part_m[t] = m, part_s[t] = s;
    __syncthreads();
    m = part_m[threadIdx.x], s = part_s[threadIdx.x];
    for (unsigned k = 1; k < blockDim.y; ++k) online_merge(m, s, part_m[k * blockDim.x + threadIdx.x],
                                                           part_s[k * blockDim.x + threadIdx.x]);
    __syncthreads();  // the next column block rewrites the partials
    const float shift = kLog ? logf(s) : 1.0f / s;
    if (valid)
#pragma unroll kUnroll
      for (int64_t k = threadIdx.y; k < len; k += blockDim.y) {
        const float a = x[base + k * inner];
        y[base + k * inner] = kLog ? (a - m) - shift : expf(a - m) * shift;
      }
  }
}

// Backward along a strided axis, laid out as softmax_column_forward: one reduction, one output pass.
template <bool kLog>
__global__ void __launch_bounds__(kColThreads)
softmax_column_backward(const float* g, const float* y, float* dx, int64_t outer, int64_t len, int64_t inner) {
  FG_SHARED(float, part, [kColThreads]);
  const int64_t col_blocks = (inner + blockDim.x - 1) / blockDim.x;
  for (int64_t b = blockIdx.x; b < outer * col_blocks; b += gridDim.x) {
    const int64_t o = b / col_blocks, j = (b % col_blocks) * blockDim.x + threadIdx.x;
    const bool valid = j < inner;
    const int64_t base = o * len * inner + j;
    float s = 0.0f;
    if (valid)
#pragma unroll kUnroll
      for (int64_t k = threadIdx.y; k < len; k += blockDim.y) {
        const int64_t at = base + k * inner;
        s += kLog ? g[at] : g[at] * y[at];
      }
    s = column_reduce(s, Sum{}, part);
    if (valid)
#pragma unroll kUnroll
      for (int64_t k = threadIdx.y; k < len; k += blockDim.y) {
        const int64_t at = base + k * inner;
        dx[at] = kLog ? g[at] - expf(y[at]) * s : y[at] * (g[at] - s);
      }
  }
}

// ---- launching -------------------------------------------------------------------------------------

int64_t pow2_at_least(int64_t v) {
  int64_t p = 1;
  while (p < v) p *= 2;
  return p;
}

// Columns (x, up to 32, a power of two) by slices of len (y) for the strided axis.
dim3 column_block(int64_t len, int64_t inner) {
  const int tx = static_cast<int>(std::min<int64_t>(32, pow2_at_least(inner)));
  const int ty = static_cast<int>(std::min<int64_t>(kColThreads / tx, pow2_at_least(len)));
  return dim3(tx, ty);
}

unsigned column_grid(int64_t outer, int64_t inner, dim3 block, int device) {
  return grid_for(outer * ((inner + block.x - 1) / block.x), 1, device);
}

// Lets a cached long-row kernel use kCacheFloats of dynamic shared memory (more than the default
// 48 KiB): set once per kernel and device.
void allow_cache(const void* kernel) {
  static std::mutex mutex;
  static std::set<std::pair<const void*, int>> done;
  int device = 0;
  FG_CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(mutex);
  if (done.count({kernel, device})) return;
  FG_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(kCacheFloats * sizeof(float))));
  done.insert({kernel, device});
}

template <bool kLog>
void forward_rows(const float* x, float* y, int64_t rows, int64_t len, cudaStream_t stream, int device) {
  if (len <= kWarpRowMax) {
    with_row_config(len, [&](auto width, auto per) {
      constexpr int kWidth = decltype(width)::value, kPer = decltype(per)::value;
      const unsigned grid = grid_for(rows, kRowThreads / kWidth, device);
      FG_LAUNCH((softmax_warp_forward<kWidth, kPer, kLog>), grid, kRowThreads, 0, stream, x, y, rows,
                static_cast<int>(len));
    });
    return;
  }
  const unsigned grid = grid_for(rows, 1, device);
  const bool vec = len % 4 == 0 && aligned16(x) && aligned16(y);
  const size_t cache = static_cast<size_t>(len) * sizeof(float);
  if (len <= kCacheFloats) {
    if (vec) {
      allow_cache(reinterpret_cast<const void*>(&softmax_block_forward<4, true, kLog>));
      FG_LAUNCH((softmax_block_forward<4, true, kLog>), grid, kBlockThreads, cache, stream, x, y, rows, len);
    } else {
      allow_cache(reinterpret_cast<const void*>(&softmax_block_forward<1, true, kLog>));
      FG_LAUNCH((softmax_block_forward<1, true, kLog>), grid, kBlockThreads, cache, stream, x, y, rows, len);
    }
  } else if (vec) {
    FG_LAUNCH((softmax_block_forward<4, false, kLog>), grid, kBlockThreads, 0, stream, x, y, rows, len);
  } else {
    FG_LAUNCH((softmax_block_forward<1, false, kLog>), grid, kBlockThreads, 0, stream, x, y, rows, len);
  }
}

template <bool kLog>
void backward_rows(const float* g, const float* y, float* dx, int64_t rows, int64_t len, cudaStream_t stream,
                   int device) {
  if (len <= kWarpRowMax) {
    with_row_config(len, [&](auto width, auto per) {
      constexpr int kWidth = decltype(width)::value, kPer = decltype(per)::value;
      const unsigned grid = grid_for(rows, kRowThreads / kWidth, device);
      FG_LAUNCH((softmax_warp_backward<kWidth, kPer, kLog>), grid, kRowThreads, 0, stream, g, y, dx, rows,
                static_cast<int>(len));
    });
    return;
  }
  const unsigned grid = grid_for(rows, 1, device);
  if (len % 4 == 0 && aligned16(g) && aligned16(y) && aligned16(dx))
    FG_LAUNCH((softmax_block_backward<4, kLog>), grid, kBlockThreads, 0, stream, g, y, dx, rows, len);
  else
    FG_LAUNCH((softmax_block_backward<1, kLog>), grid, kBlockThreads, 0, stream, g, y, dx, rows, len);
}

}  // namespace

void softmax_forward(const float* x, float* y, int64_t outer, int64_t len, int64_t inner, bool log,
                     cudaStream_t stream, int device) {
  if (outer == 0 || len == 0 || inner == 0) return;
  DeviceGuard guard(device);
  if (inner == 1) {
    if (log) forward_rows<true>(x, y, outer, len, stream, device);
    else forward_rows<false>(x, y, outer, len, stream, device);
    return;
  }
  const dim3 block = column_block(len, inner);
  const unsigned grid = column_grid(outer, inner, block, device);
  if (log) FG_LAUNCH(softmax_column_forward<true>, grid, block, 0, stream, x, y, outer, len, inner);
  else FG_LAUNCH(softmax_column_forward<false>, grid, block, 0, stream, x, y, outer, len, inner);
}

void softmax_backward(const float* g, const float* y, float* dx, int64_t outer, int64_t len, int64_t inner,
                      bool log, cudaStream_t stream, int device) {
  if (outer == 0 || len == 0 || inner == 0) return;
  DeviceGuard guard(device);
  if (inner == 1) {
    if (log) backward_rows<true>(g, y, dx, outer, len, stream, device);
    else backward_rows<false>(g, y, dx, outer, len, stream, device);
    return;
  }
  const dim3 block = column_block(len, inner);
  const unsigned grid = column_grid(outer, inner, block, device);
  if (log) FG_LAUNCH(softmax_column_backward<true>, grid, block, 0, stream, g, y, dx, outer, len, inner);
  else FG_LAUNCH(softmax_column_backward<false>, grid, block, 0, stream, g, y, dx, outer, len, inner);
}

}  // namespace fusegrad::cuda
