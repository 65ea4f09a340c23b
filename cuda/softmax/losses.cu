// The fused losses: softmax cross-entropy and binary cross-entropy with logits. Each reads its input
// once and writes the per-row loss and the gradient in the same pass; the mean or sum is reduced on
// the device (one partial per block, then loss_finish_kernel), so nothing waits on the host.
#include <algorithm>
#include <limits>
#include <stdexcept>

#include "common/cuda_check.cuh"
#include "common/launch.cuh"
#include "softmax/softmax.cuh"
#include "softmax/softmax_common.cuh"

namespace fusegrad::cuda {
namespace {

using namespace softmax_detail;

// One block adds the per-block partials (at most SMs x 8 of them): 8 warps, a few adds each.
constexpr int kFinishThreads = 256;
// Elementwise BCE: 8 warps per block, 8 resident blocks fill a Hopper SM.
constexpr int kBceThreads = 256;
constexpr int64_t kNoRow = std::numeric_limits<int64_t>::max();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct XentArgs {
  const float* logits;
  const int64_t* labels;
  int64_t n, c;
  double keep, spread;  // 1 - eps and eps / C (PyTorch's label smoothing)
  bool smoothing;
  // The gradient, as the CPU computes it: fmaf(exp(x - m), grad_scale / s, offset), minus
  // at_label at the label; offset = -grad_scale * spread, at_label = grad_scale * keep.
  float grad_scale, offset, at_label;
  float* loss_rows;
  float* grad;
  double* partial_loss;  // per block: sum of its rows' losses (or null)
  int64_t* partial_bad;  // per block: its first row with a bad label, kNoRow if none (or null)
};

// A row's loss from its max m, sum of exponentials s, label logit and logit sum, in double as the
// CPU computes it (m - x_label is exact there, so large logits lose nothing to cancellation).
__device__ __forceinline__ double row_loss(const XentArgs& a, float m, float s, float x_label, float sum_x) {
  double loss = log(static_cast<double>(s)) + a.keep * (static_cast<double>(m) - x_label);
  if (a.smoothing) loss += a.spread * (static_cast<double>(a.c) * m - sum_x);
  return loss;
}

// The block's loss total and first bad row, into its partials (block_reduce: a fixed order).
__device__ __forceinline__ void write_partials(const XentArgs& a, double total, int64_t bad_row) {
  if (a.partial_loss) total = block_reduce(total, Sum{});
  if (a.partial_bad) bad_row = block_reduce(bad_row, Min{});
  if (threadIdx.x != 0) return;
  if (a.partial_loss) a.partial_loss[blockIdx.x] = total;
  if (a.partial_bad) a.partial_bad[blockIdx.x] = bad_row;
}

// Cross-entropy of short rows (C <= 1024), laid out as softmax_warp_forward: kWidth lanes per row,
// the logits in registers, replaced by their exponentials once the max is known; max, sum (and the
// logit sum for smoothing) are group shuffles. A label outside [0, C) makes the row's loss and
// gradient NaN and is recorded as the row's bad flag.
template <int kWidth, int kPer>
__global__ void __launch_bounds__(kRowThreads) xent_warp_kernel(const XentArgs a) {
  constexpr int kRowsPerWarp = 32 / kWidth;
  const int lane = threadIdx.x % kWidth, c = static_cast<int>(a.c);
  const int64_t warp = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int64_t step = int64_t(gridDim.x) * blockDim.x / 32 * kRowsPerWarp;
  double total = 0.0;
  int64_t bad_row = kNoRow;
  for (int64_t first = warp * kRowsPerWarp; first < a.n; first += step) {
    const int64_t r = first + threadIdx.x % 32 / kWidth;
    const bool valid = r < a.n;
    const int64_t label = valid ? a.labels[r] : 0;
    const bool bad = label < 0 || label >= c;
    const float* x = a.logits + r * c;
    float v[kPer], m = kNegInf, sum_x = 0.0f, s = 0.0f, x_label = 0.0f;
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const bool in = valid && j * kWidth + lane < c;
      v[j] = in ? x[j * kWidth + lane] : kNegInf;
      m = fmaxf(m, v[j]);
      sum_x += in ? v[j] : 0.0f;
      if (j * kWidth + lane == label) x_label = v[j];
    }
    // The label's logit from the lane that loaded it, rather than a load after the reductions
    // that the whole warp would wait for.
    x_label = __shfl_sync(kFullMask, x_label, bad ? 0 : static_cast<int>(label % kWidth), kWidth);
    m = group_reduce<kWidth>(m, Max{});
    if (a.smoothing) sum_x = group_reduce<kWidth>(sum_x, Sum{});
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      v[j] = expf(v[j] - m);
      s += j * kWidth + lane < c ? v[j] : 0.0f;
    }
    s = group_reduce<kWidth>(s, Sum{});
    if (!valid) continue;
    if (lane == 0) {
      const double loss = bad ? kNaN : row_loss(a, m, s, x_label, sum_x);
      if (a.loss_rows) a.loss_rows[r] = static_cast<float>(loss);
      total += loss;
      if (bad) bad_row = min(bad_row, r);
    }
    if (a.grad == nullptr) continue;
    const float scale = a.grad_scale / s;
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int i = j * kWidth + lane;
      if (i < c)
        a.grad[r * c + i] =
            bad ? static_cast<float>(kNaN) : fmaf(v[j], scale, a.offset) - (i == label ? a.at_label : 0.0f);
    }
  }
  write_partials(a, total, bad_row);
}

// Cross-entropy of long rows (C > 1024), a block per row: one pass for the online statistics (max
// and sum of exponentials, with the logit sum for smoothing), which is all the loss needs, and a
// second for the gradient; strided over the block (float4 where rows are 16-byte aligned). Thread 0
// keeps the block's loss total and first bad row.
template <int kW>
__global__ void __launch_bounds__(kBlockThreads) xent_block_kernel(const XentArgs a) {
  const int64_t vectors = a.c / kW;
  double total = 0.0;
  int64_t bad_row = kNoRow;
  for (int64_t r = blockIdx.x; r < a.n; r += gridDim.x) {
    const float* x = a.logits + r * a.c;
    const int64_t label = a.labels[r];
    const bool bad = label < 0 || label >= a.c;
    float m = kNegInf, s = 0.0f, sum_x = 0.0f;
#pragma unroll kUnroll
    for (int64_t i = threadIdx.x; i < vectors; i += blockDim.x) {
      float v[kW];
      load_vec<kW>(x + i * kW, v);
      online_add<kW>(m, s, v);
#pragma unroll
      for (int l = 0; l < kW; ++l) sum_x += v[l];
    }
    block_merge(m, s);
    if (a.smoothing) sum_x = block_reduce(sum_x, Sum{});
    if (threadIdx.x == 0) {
      const double loss = bad ? kNaN : row_loss(a, m, s, x[label], sum_x);
      if (a.loss_rows) a.loss_rows[r] = static_cast<float>(loss);
      total += loss;
      if (bad) bad_row = min(bad_row, r);
    }
    if (a.grad == nullptr) continue;
    const float scale = a.grad_scale / s;
#pragma unroll kUnroll
    for (int64_t i = threadIdx.x; i < vectors; i += blockDim.x) {
      float v[kW];
      load_vec<kW>(x + i * kW, v);
#pragma unroll
      for (int l = 0; l < kW; ++l)
        v[l] = bad ? static_cast<float>(kNaN)
                   : fmaf(expf(v[l] - m), scale, a.offset) - (i * kW + l == label ? a.at_label : 0.0f);
      store_vec<kW>(a.grad + r * a.c + i * kW, v);
    }
  }
  if (threadIdx.x == 0) {  // only thread 0 holds the totals: no reduction needed
    if (a.partial_loss) a.partial_loss[blockIdx.x] = total;
    if (a.partial_bad) a.partial_bad[blockIdx.x] = bad_row;
  }
}

// max(x, 0) - x t + log1p(exp(-|x|)), written without cancellation as the CPU does: x (1 - t) for
// x > 0, -x t otherwise (a NaN x takes the second branch and stays NaN); grad = scale (sigmoid - t).
__device__ __forceinline__ void bce_one(float x, float t, float scale, float& loss, float& grad) {
  const float e = expf(-fabsf(x));
  loss = (x > 0.0f ? x * (1.0f - t) : -(x * t)) + log1pf(e);
  const float r = 1.0f / (1.0f + e);
  grad = ((x >= 0.0f ? r : e * r) - t) * scale;
}

// Elementwise BCE with logits: a grid-stride loop over float4s (then the scalar tail), each thread
// summing its losses in double; the block's sum goes to its partial.
template <int kW>
__global__ void __launch_bounds__(kBceThreads)
bce_kernel(const float* x, const float* t, int64_t n, float scale, float* loss, float* grad, double* partial) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x, start = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  double total = 0.0;
#pragma unroll kUnroll
  for (int64_t v = start; v < n / kW; v += stride) {
    float xv[kW], tv[kW], lv[kW], gv[kW];
    load_vec<kW>(x + v * kW, xv);
    load_vec<kW>(t + v * kW, tv);
#pragma unroll
    for (int l = 0; l < kW; ++l) bce_one(xv[l], tv[l], scale, lv[l], gv[l]), total += lv[l];
    if (loss) store_vec<kW>(loss + v * kW, lv);
    if (grad) store_vec<kW>(grad + v * kW, gv);
  }
  for (int64_t i = n / kW * kW + start; i < n; i += stride) {
    float l, g;
    bce_one(x[i], t[i], scale, l, g);
    total += l;
    if (loss) loss[i] = l;
    if (grad) grad[i] = g;
  }
  if (partial == nullptr) return;
  total = block_reduce(total, Sum{});
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

// One block: the loss (sum of the partials, added in a fixed order, / divisor) and the status
// (first bad row and its label, or -1 and 0).
__global__ void __launch_bounds__(kFinishThreads)
loss_finish_kernel(const double* partial_loss, const int64_t* partial_bad, int64_t count, double divisor,
                   float* loss, const int64_t* labels, int64_t* status) {
  double total = 0.0;
  int64_t bad = kNoRow;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) {
    if (partial_loss) total += partial_loss[i];
    if (partial_bad) bad = min(bad, partial_bad[i]);
  }
  total = block_reduce(total, Sum{});
  bad = block_reduce(bad, Min{});
  if (threadIdx.x != 0) return;
  if (loss) *loss = static_cast<float>(total / divisor);
  if (status) {
    status[0] = bad == kNoRow ? -1 : bad;
    status[1] = bad == kNoRow ? 0 : labels[bad];
  }
}

unsigned xent_grid(int64_t n, int64_t c, int device) {
  if (c > kWarpRowMax) return grid_for(n, 1, device);
  unsigned grid = 0;
  with_row_config(c, [&](auto width, auto) { grid = grid_for(n, kRowThreads / decltype(width)::value, device); });
  return grid;
}

unsigned bce_grid(int64_t n, bool vec, int device) { return grid_for(vec ? (n + 3) / 4 : n, kBceThreads, device); }

}  // namespace

int64_t cross_entropy_workspace_size(int64_t n, int64_t c, int device) {
  if (n == 0) return 0;
  DeviceGuard guard(device);
  return 2 * static_cast<int64_t>(xent_grid(n, c, device));
}

int64_t bce_workspace_size(int64_t n, int device) {
  if (n == 0) return 0;
  DeviceGuard guard(device);
  return std::max(bce_grid(n, true, device), bce_grid(n, false, device));
}

void softmax_cross_entropy(const float* logits, const int64_t* labels, int64_t n, int64_t c, float label_smoothing,
                           float grad_scale, float* loss_rows, float* grad, float* loss, double divisor,
                           double* workspace, int64_t* status, cudaStream_t stream, int device) {
  if (n == 0) return;
  DeviceGuard guard(device);
  const unsigned grid = xent_grid(n, c, device);
  if ((loss || status) && workspace == nullptr) throw std::invalid_argument("softmax_cross_entropy: no workspace");
  const double keep = 1.0 - static_cast<double>(label_smoothing);
  const double spread = static_cast<double>(label_smoothing) / static_cast<double>(c);
  XentArgs a{logits, labels, n, c, keep, spread, label_smoothing != 0.0f, grad_scale,
             static_cast<float>(-grad_scale * spread), static_cast<float>(grad_scale * keep), loss_rows, grad,
             loss ? workspace : nullptr, status ? reinterpret_cast<int64_t*>(workspace + grid) : nullptr};
  if (c <= kWarpRowMax) {
    with_row_config(c, [&](auto width, auto per) {
      FG_LAUNCH((xent_warp_kernel<decltype(width)::value, decltype(per)::value>), grid, kRowThreads, 0, stream, a);
    });
  } else if (c % 4 == 0 && aligned16(logits) && (grad == nullptr || aligned16(grad))) {
    FG_LAUNCH(xent_block_kernel<4>, grid, kBlockThreads, 0, stream, a);
  } else {
    FG_LAUNCH(xent_block_kernel<1>, grid, kBlockThreads, 0, stream, a);
  }
  if (loss || status)
    FG_LAUNCH(loss_finish_kernel, 1, kFinishThreads, 0, stream, a.partial_loss, a.partial_bad, int64_t(grid), divisor,
              loss, labels, status);
}

void bce_with_logits(const float* x, const float* t, int64_t n, float grad_scale, float* loss_elems, float* grad,
                     float* loss, double divisor, double* workspace, cudaStream_t stream, int device) {
  if (n == 0) return;
  DeviceGuard guard(device);
  if (loss && workspace == nullptr) throw std::invalid_argument("bce_with_logits: no workspace");
  const bool vec = aligned16(x) && aligned16(t) && (!loss_elems || aligned16(loss_elems)) && (!grad || aligned16(grad));
  const unsigned grid = bce_grid(n, vec, device);
  double* partial = loss ? workspace : nullptr;
  if (vec) FG_LAUNCH(bce_kernel<4>, grid, kBceThreads, 0, stream, x, t, n, grad_scale, loss_elems, grad, partial);
  else FG_LAUNCH(bce_kernel<1>, grid, kBceThreads, 0, stream, x, t, n, grad_scale, loss_elems, grad, partial);
  if (loss)
    FG_LAUNCH(loss_finish_kernel, 1, kFinishThreads, 0, stream, partial, static_cast<const int64_t*>(nullptr),
              int64_t(grid), divisor, loss, static_cast<const int64_t*>(nullptr), static_cast<int64_t*>(nullptr));
}

}  // namespace fusegrad::cuda
