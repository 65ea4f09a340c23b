// The convolutions' reductions: the bias gradient (column sums of g, N·OH·OW × C_out) and the sum
// of split-K partials (conv_backward_weight.cu). Both are bandwidth-bound and deterministic: each
// output is summed by one thread in a fixed order. Also the interleaving of per-group weight
// gradients, a copy that belongs with the split-K sums it follows.
#include <algorithm>

#include "common/cuda_check.cuh"
#include "common/launch.cuh"
#include "conv/conv.cuh"

namespace fusegrad::cuda {
namespace {

// Bias gradient: a block is 32 columns × kRowLanes row lanes; lane (c, r) sums rows r, r + 8, ...
// of its row slice (consecutive lanes read consecutive columns: 128-byte rows), then the 8 lane
// sums of a column are added in shared memory, in lane order.
constexpr int kColumns = 32, kRowLanes = 8;
// Rows per block at least, and blocks to aim for (two waves of SMs).
constexpr int64_t kMinRowsPerBlock = 256, kWavesOfBlocks = 2;

__global__ void __launch_bounds__(kColumns * kRowLanes)
bias_grad_kernel(const float* g, float* out, int64_t rows, int64_t cols, int64_t rows_per_split) {
  FG_SHARED(float, partial, [kRowLanes][kColumns + 1]);
  const int64_t c = int64_t(blockIdx.x) * kColumns + threadIdx.x;
  const int64_t r0 = int64_t(blockIdx.y) * rows_per_split;
  const int64_t r1 = min(rows, r0 + rows_per_split);
  float s = 0.0f;
  if (c < cols)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kRowLanes) s += g[r * cols + c];
  partial[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    float t = 0.0f;
    for (int i = 0; i < kRowLanes; ++i) t += partial[i][threadIdx.x];
    out[int64_t(blockIdx.y) * cols + c] = t;  // split blockIdx.y's partial (the result when 1 split)
  }
}

constexpr int kSumThreads = 256;

__global__ void __launch_bounds__(kSumThreads)
sum_splits_kernel(const float* parts, float* out, int64_t splits, int64_t len) {
  for (int64_t i = int64_t(blockIdx.x) * kSumThreads + threadIdx.x; i < len; i += int64_t(gridDim.x) * kSumThreads) {
    float s = 0.0f;
    for (int64_t p = 0; p < splits; ++p) s += parts[p * len + i];
    out[i] = s;
  }
}

// One thread an element of out (rows, groups·width), read from its group's (rows, width) block.
__global__ void __launch_bounds__(kSumThreads)
merge_groups_kernel(const float* parts, float* out, int64_t groups, int64_t rows, int64_t width) {
  const int64_t len = groups * rows * width, row_len = groups * width;
  for (int64_t i = int64_t(blockIdx.x) * kSumThreads + threadIdx.x; i < len; i += int64_t(gridDim.x) * kSumThreads) {
    const int64_t r = i / row_len, col = i % row_len, g = col / width;
    out[i] = parts[(g * rows + r) * width + col % width];
  }
}

}  // namespace

void merge_groups(const float* parts, float* out, int64_t groups, int64_t rows, int64_t width, cudaStream_t stream,
                  int device) {
  const int64_t len = groups * rows * width;
  if (len == 0) return;
  FG_LAUNCH(merge_groups_kernel, grid_for(len, kSumThreads, device), kSumThreads, 0, stream, parts, out, groups, rows,
            width);
}

void sum_splits(const float* parts, float* out, int64_t splits, int64_t len, cudaStream_t stream, int device) {
  if (len == 0) return;
  FG_LAUNCH(sum_splits_kernel, grid_for(len, kSumThreads, device), kSumThreads, 0, stream, parts, out, splits, len);
}

void conv_backward_bias(const float* g, float* db, int64_t rows, int64_t cols, cudaStream_t stream, int device) {
  if (cols == 0) return;
  DeviceGuard guard(device);
  if (rows == 0) {
    FG_CUDA_CHECK(cudaMemsetAsync(db, 0, sizeof(float) * cols, stream));
    return;
  }
  const int64_t col_blocks = (cols + kColumns - 1) / kColumns;
  const int64_t wanted = (kWavesOfBlocks * multiprocessor_count(device) + col_blocks - 1) / col_blocks;
  int64_t splits = std::clamp<int64_t>(std::min(wanted, rows / kMinRowsPerBlock), 1, 65535);
  const int64_t per_split = (rows + splits - 1) / splits;
  splits = (rows + per_split - 1) / per_split;
  float* target = db;
  if (splits > 1) FG_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&target), sizeof(float) * splits * cols, stream));
  FG_LAUNCH(bias_grad_kernel, dim3(static_cast<unsigned>(col_blocks), static_cast<unsigned>(splits)),
            dim3(kColumns, kRowLanes), 0, stream, g, target, rows, cols, per_split);
  if (splits > 1) {
    sum_splits(target, db, splits, cols, stream, device);
    FG_CUDA_CHECK(cudaFreeAsync(target, stream));
  }
}

}  // namespace fusegrad::cuda
