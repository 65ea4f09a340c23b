// The per-token kernels of a Transformer block besides attention: LayerNorm forward and backward,
// and the embedding's scatter-add backward (llm.c's layout for the first two).
//   layer_norm_forward:  a warp per row (grid-stride): mean, then the variance about it (two
//     passes, not E[x^2] - mean^2, which cancels badly), then y; the row stays in L1 between passes.
//   layer_norm_backward: dx by a warp per row (the two row sums of the chain rule by shuffles);
//     dw, db by a column kernel: a CTA per 32 columns and chunk of rows, its 8 thread rows each
//     summing a fixed strided set of the chunk's rows, then the chunks' partials added in chunk
//     order by a second kernel, so the sums do not depend on timing (and no atomics).
//   embedding_backward: a CTA per run of kVocabRows vocabulary rows, reading every index (through
//     shared memory, 256 at a time) and adding the matching gradient rows into its own rows in
//     index order: deterministic without sorting or atomics, and a frequent token (padding, [CLS])
//     only serialises the one CTA that owns it.
#include <algorithm>

#include "attention/attention.cuh"
#include "common/cuda_check.cuh"
#include "common/launch.cuh"

namespace fusegrad::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kColumns = 32, kSlices = 8;  // the dw/db kernel's block: 32 columns x 8 row slices
constexpr int kVocabRows = 64;             // vocabulary rows per CTA of the embedding backward
// dw/db: rows are split into at most kMaxChunks chunks of at least kChunkRows, one CTA row each.
constexpr int64_t kChunkRows = 128, kMaxChunks = 128;

int64_t chunks_of(int64_t rows) {
  return std::max<int64_t>(1, std::min<int64_t>(kMaxChunks, (rows + kChunkRows - 1) / kChunkRows));
}

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

__global__ void __launch_bounds__(kThreads)
layer_norm_forward_kernel(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                          int64_t rows, int64_t n, float eps) {
  const int lane = threadIdx.x % 32;
  for (int64_t r = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32; r < rows;
       r += int64_t(gridDim.x) * blockDim.x / 32) {
    const float* xr = x + r * n;
    float s = 0.0f;
    for (int64_t c = lane; c < n; c += 32) s += xr[c];
    const float mu = warp_sum(s) / static_cast<float>(n);
    float v = 0.0f;
    for (int64_t c = lane; c < n; c += 32) v += (xr[c] - mu) * (xr[c] - mu);
    const float rs = rsqrtf(warp_sum(v) / static_cast<float>(n) + eps);
    for (int64_t c = lane; c < n; c += 32) {
      const float xh = (xr[c] - mu) * rs;
      y[r * n + c] = xh * (w ? w[c] : 1.0f) + (b ? b[c] : 0.0f);
    }
    if (lane == 0) mean[r] = mu, rstd[r] = rs;
  }
}

// dx = rstd (g w - mean(g w) - xhat mean(g w xhat)).
__global__ void __launch_bounds__(kThreads)
layer_norm_backward_dx(const float* g, const float* x, const float* mean, const float* rstd, const float* w, float* dx,
                       int64_t rows, int64_t n) {
  const int lane = threadIdx.x % 32;
  for (int64_t r = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32; r < rows;
       r += int64_t(gridDim.x) * blockDim.x / 32) {
    const float mu = mean[r], rs = rstd[r];
    float a = 0.0f, ax = 0.0f;
    for (int64_t c = lane; c < n; c += 32) {
      const float gw = g[r * n + c] * (w ? w[c] : 1.0f);
      a += gw;
      ax += gw * (x[r * n + c] - mu) * rs;
    }
    a = warp_sum(a) / static_cast<float>(n);
    ax = warp_sum(ax) / static_cast<float>(n);
    for (int64_t c = lane; c < n; c += 32) {
      const float gw = g[r * n + c] * (w ? w[c] : 1.0f);
      dx[r * n + c] = rs * (gw - a - (x[r * n + c] - mu) * rs * ax);
    }
  }
}

// Partial dw = sum g xhat and db = sum g over chunk blockIdx.y of the rows (rows [y per, (y+1) per))
// and columns blockIdx.x * 32 + threadIdx.x; the 8 thread rows take fixed strided rows and their
// partials are added in order. part holds [2][chunks][n].
__global__ void __launch_bounds__(kColumns * kSlices)
layer_norm_backward_params(const float* g, const float* x, const float* mean, const float* rstd, float* part,
                           int64_t rows, int64_t n, int64_t per) {
  FG_SHARED(float, slice, [2][kSlices][kColumns]);
  const int64_t c = int64_t(blockIdx.x) * kColumns + threadIdx.x;
  const int64_t r0 = int64_t(blockIdx.y) * per, r1 = std::min<int64_t>(rows, r0 + per);
  float sw = 0.0f, sb = 0.0f;
  if (c < n)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kSlices) {
      const float gv = g[r * n + c];
      sw += gv * (x[r * n + c] - mean[r]) * rstd[r];
      sb += gv;
    }
  slice[0][threadIdx.y][threadIdx.x] = sw;
  slice[1][threadIdx.y][threadIdx.x] = sb;
  __syncthreads();
  if (threadIdx.y == 0 && c < n) {
    sw = slice[0][0][threadIdx.x], sb = slice[1][0][threadIdx.x];
    for (int k = 1; k < kSlices; ++k) sw += slice[0][k][threadIdx.x], sb += slice[1][k][threadIdx.x];
    part[int64_t(blockIdx.y) * n + c] = sw;
    part[(int64_t(gridDim.y) + blockIdx.y) * n + c] = sb;
  }
}

// dw, db (either may be null) = the chunks' partials added in chunk order, a thread per column.
__global__ void __launch_bounds__(kThreads)
layer_norm_backward_sum(const float* part, float* dw, float* db, int64_t chunks, int64_t n) {
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < n; c += int64_t(gridDim.x) * blockDim.x) {
    float sw = 0.0f, sb = 0.0f;
    for (int64_t k = 0; k < chunks; ++k) sw += part[k * n + c], sb += part[(chunks + k) * n + c];
    if (dw) dw[c] = sw;
    if (db) db[c] = sb;
  }
}

__global__ void __launch_bounds__(kThreads)
embedding_backward_kernel(const int64_t* idx, int64_t count, const float* g, int64_t dim, float* dw, int64_t vocab,
                          int64_t padding_idx) {
  FG_SHARED(int64_t, chunk, [kThreads]);
  const int64_t v0 = int64_t(blockIdx.x) * kVocabRows, v1 = std::min<int64_t>(vocab, v0 + kVocabRows);
  for (int64_t t = threadIdx.x; t < (v1 - v0) * dim; t += blockDim.x) dw[v0 * dim + t] = 0.0f;
  for (int64_t k0 = 0; k0 < count; k0 += kThreads) {
    __syncthreads();  // the zeros are written (first chunk) / the previous chunk is used
    if (k0 + threadIdx.x < count) chunk[threadIdx.x] = idx[k0 + threadIdx.x];
    __syncthreads();
    const int n = static_cast<int>(std::min<int64_t>(kThreads, count - k0));
    for (int k = 0; k < n; ++k) {
      const int64_t v = chunk[k];  // the same for the whole CTA: the branch is uniform
      if (v < v0 || v >= v1 || v == padding_idx) continue;
      for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) dw[v * dim + c] += g[(k0 + k) * dim + c];
    }
  }
}

}  // namespace

void layer_norm_forward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                        int64_t rows, int64_t n, float eps, cudaStream_t stream, int device) {
  if (rows == 0) return;
  DeviceGuard guard(device);
  FG_LAUNCH(layer_norm_forward_kernel, dim3(grid_for(rows, kThreads / 32, device)), dim3(kThreads), 0, stream, x, w,
            b, y, mean, rstd, rows, n, eps);
}

int64_t layer_norm_backward_workspace(int64_t rows, int64_t n) { return 2 * chunks_of(rows) * n; }

void layer_norm_backward(const float* g, const float* x, const float* mean, const float* rstd, const float* w,
                         float* dx, float* dw, float* db, float* workspace, int64_t rows, int64_t n,
                         cudaStream_t stream, int device) {
  if (n == 0) return;
  DeviceGuard guard(device);
  if (rows > 0)
    FG_LAUNCH(layer_norm_backward_dx, dim3(grid_for(rows, kThreads / 32, device)), dim3(kThreads), 0, stream, g, x,
              mean, rstd, w, dx, rows, n);
  if (!dw && !db) return;
  const int64_t chunks = chunks_of(rows), per = (rows + chunks - 1) / chunks;
  FG_LAUNCH(layer_norm_backward_params,
            dim3(static_cast<unsigned>((n + kColumns - 1) / kColumns), static_cast<unsigned>(chunks)),
            dim3(kColumns, kSlices), 0, stream, g, x, mean, rstd, workspace, rows, n, per);
  FG_LAUNCH(layer_norm_backward_sum, dim3(grid_for(n, kThreads, device)), dim3(kThreads), 0, stream, workspace, dw, db,
            chunks, n);
}

void embedding_backward(const int64_t* idx, int64_t count, const float* g, int64_t dim, float* dw, int64_t vocab,
                        int64_t padding_idx, cudaStream_t stream, int device) {
  if (vocab == 0 || dim == 0) return;
  DeviceGuard guard(device);
  FG_LAUNCH(embedding_backward_kernel, dim3(static_cast<unsigned>((vocab + kVocabRows - 1) / kVocabRows)),
            dim3(kThreads), 0, stream, idx, count, g, dim, dw, vocab, padding_idx);
}

}  // namespace fusegrad::cuda
