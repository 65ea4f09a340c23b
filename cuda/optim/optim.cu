// Fused multi-tensor optimizer steps and gradient-norm clipping on the GPU.
//
// Multi-tensor apply. A launch receives, by value in its kernel arguments, a TensorTable: the
// addresses of up to kCap tensors (kDepth arrays per tensor: p, g, m, v for Adam), their sizes, and
// the prefix sum of their chunk counts (a chunk is kChunk consecutive elements of one tensor).
// Block b takes chunks b, b + gridDim.x, ... of the launch; it finds the tensor owning chunk c by
// a binary search of the prefix (a handful of uniform constant-bank loads, nothing next to the
// 16 KiB x kDepth a chunk moves). The grid is sized to fill the GPU once (occupancy x SMs), so a
// launch covers any number of chunks: 100M parameters in 10 tensors are one launch, and 300
// tensors of 10k elements are one launch of 300 chunks instead of 300 launches. Lists longer than
// one table take several launches. The step-dependent scalars travel in the launch arguments too,
// so a step never waits on the device, and nothing reads back from it.
//
// Tables of more than 4 KiB of arguments rely on CUDA 12.1+'s 32,764-byte kernel-parameter limit
// (Volta and newer; we build for sm_80 and sm_90). Short lists use a small table so that an
// ordinary model's launch copies no more argument bytes than it needs.
#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <utility>

#include "common/cuda_check.cuh"
#include "common/launch.cuh"
#include "optim/optim.cuh"
#include "optim/optim_scalars.h"

namespace fusegrad::cuda {
namespace {

constexpr int kThreads = 512;
// Elements per chunk: 16 Ki floats = 64 KiB per array, 8 float4 per thread per array, enough to
// hide the block's start-up and the table search; small enough that 10k-element tensors do not
// leave most of a block idle.
constexpr int64_t kChunk = 16384;
constexpr int kSmallCap = 24;   // fits 4 KiB of arguments even at depth 4
constexpr int kLargeCap = 384;  // 18 KiB at depth 4, under the 32,764-byte limit
// Partial sums the norm kernel writes per launch (its grid never exceeds this).
constexpr int kNormBlocks = 1024;
constexpr float kClipEps = 1e-6f;  // added to the norm before dividing, as clip_grad_norm_

template <int kDepth, int kCap>
struct TensorTable {
  float* ptr[kDepth][kCap];
  int64_t size[kCap];
  int64_t chunk_begin[kCap + 1];  // tensor t owns the launch's chunks [chunk_begin[t], chunk_begin[t+1])
  int count;
};
static_assert(sizeof(TensorTable<4, kSmallCap>) <= 4000, "small table must fit 4 KiB of arguments");
static_assert(sizeof(TensorTable<4, kLargeCap>) <= 32000, "large table must fit the 32 KiB limit");

// The tensor owning chunk c: the last t with chunk_begin[t] <= c.
template <int kDepth, int kCap>
__device__ __forceinline__ int owner_of(const TensorTable<kDepth, kCap>& table, int64_t c) {
  int lo = 0, hi = table.count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (table.chunk_begin[mid] <= c) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// Component l of a float4; with l known after unrolling this is a register, not a memory access.
__device__ __forceinline__ float& lane(float4& v, int l) {
  return l == 0 ? v.x : (l == 1 ? v.y : (l == 2 ? v.z : v.w));
}

// Applies op to every element of every tensor of the table: op(x) updates x[0..kDepth) in place,
// reading the arrays in Op::kRead and writing back those in Op::kWrite (bit d = array d).
// Chunks whose kDepth addresses are all 16-byte aligned move float4s; the rest go element-wise.
template <class Op, int kDepth, int kCap>
__global__ void __launch_bounds__(kThreads)
multi_tensor_kernel(const __grid_constant__ TensorTable<kDepth, kCap> table, const Op op) {
  if (op.skip()) return;
  const int64_t chunks = table.chunk_begin[table.count];
  for (int64_t c = blockIdx.x; c < chunks; c += gridDim.x) {
    const int t = owner_of(table, c);
    const int64_t begin = (c - table.chunk_begin[t]) * kChunk;
    const int64_t n = min(kChunk, table.size[t] - begin);
    float* ptr[kDepth];
    bool aligned = true;
#pragma unroll
    for (int d = 0; d < kDepth; ++d) {
      ptr[d] = table.ptr[d][t] + begin;
      aligned = aligned && reinterpret_cast<uintptr_t>(ptr[d]) % 16 == 0;
    }
    int64_t scalar_from = 0;
    if (aligned) {
      for (int64_t i = threadIdx.x; i < n / 4; i += kThreads) {
        float4 r[kDepth];
#pragma unroll
        for (int d = 0; d < kDepth; ++d)
          if (Op::kRead >> d & 1) r[d] = reinterpret_cast<const float4*>(ptr[d])[i];
#pragma unroll
        for (int l = 0; l < 4; ++l) {
          float x[kDepth];
#pragma unroll
          for (int d = 0; d < kDepth; ++d) x[d] = lane(r[d], l);
          op(x);
#pragma unroll
          for (int d = 0; d < kDepth; ++d) lane(r[d], l) = x[d];
        }
#pragma unroll
        for (int d = 0; d < kDepth; ++d)
          if (Op::kWrite >> d & 1) reinterpret_cast<float4*>(ptr[d])[i] = r[d];
      }
      scalar_from = n / 4 * 4;
    }
    for (int64_t i = scalar_from + threadIdx.x; i < n; i += kThreads) {
      float x[kDepth];
#pragma unroll
      for (int d = 0; d < kDepth; ++d) x[d] = (Op::kRead >> d & 1) ? ptr[d][i] : 0.0f;
      op(x);
#pragma unroll
      for (int d = 0; d < kDepth; ++d)
        if (Op::kWrite >> d & 1) ptr[d][i] = x[d];
    }
  }
}

// x = {p, g, m, v}: torch.optim.Adam(W)'s update, the same order of operations as the CPU kernel.
struct AdamOp {
  static constexpr unsigned kRead = 0b1111, kWrite = 0b1101;
  AdamScalars s;
  __device__ bool skip() const { return false; }
  __device__ __forceinline__ void operator()(float (&x)[4]) const {
    float p = x[0], g = s.maximize ? -x[1] : x[1], m = x[2], v = x[3];
    if (s.decay == WeightDecay::l2) g = fmaf(s.weight_decay, p, g);
    else if (s.decay == WeightDecay::decoupled) p *= s.decay_factor;
    m = fmaf(s.one_minus_beta1, g - m, m);
    v = fmaf(s.one_minus_beta2 * g, g, v * s.beta2);
    const float denom = sqrtf(v) / s.bias_correction2_sqrt + s.eps;
    x[0] = fmaf(s.neg_step_size, m / denom, p);
    x[2] = m;
    x[3] = v;
  }
};

// x = {p, g} or {p, g, buf}: torch.optim.SGD. kDepth 2 is momentum 0 (no buffer at all).
template <int kDepth>
struct SgdOp {
  static constexpr unsigned kRead = kDepth == 3 ? 0b111 : 0b11, kWrite = kDepth == 3 ? 0b101 : 0b01;
  SgdScalars s;
  __device__ bool skip() const { return false; }
  __device__ __forceinline__ void operator()(float (&x)[kDepth]) const {
    float d = s.maximize ? -x[1] : x[1];
    const float p = x[0];
    if (s.weight_decay != 0.0f) d = fmaf(s.weight_decay, p, d);
    if constexpr (kDepth == 3) {
      const float b = s.first_step ? d : fmaf(s.one_minus_dampening, d, x[2] * s.momentum);
      x[2] = b;
      d = s.nesterov ? fmaf(s.momentum, b, d) : b;
    }
    x[0] = fmaf(s.neg_lr, d, p);
  }
};

// x = {g}: g *= coef, the clip coefficient computed on the device (no trip through the host).
struct ScaleOp {
  static constexpr unsigned kRead = 0b1, kWrite = 0b1;
  const float* coef;
  __device__ bool skip() const { return *coef == 1.0f; }  // clamped: multiplying by one changes nothing
  __device__ __forceinline__ void operator()(float (&x)[1]) const { x[0] *= *coef; }
};

// --- norm --------------------------------------------------------------------------------------

template <NormKind kKind>
__device__ __forceinline__ double norm_combine(double acc, double a) {
  if constexpr (kKind == NormKind::inf) return (a > acc || a != a) ? a : acc;  // NaN sticks
  else return acc + a;
}

template <NormKind kKind>
__device__ __forceinline__ double norm_term(float x, double p) {
  const double a = fabs(static_cast<double>(x));
  if constexpr (kKind == NormKind::two) return a * a;
  else if constexpr (kKind == NormKind::general) return pow(a, p);
  else return a;
}

// Sums (or maxes) a value over the block; the result is valid in thread 0.
template <NormKind kKind>
__device__ double block_combine(double v) {
  FG_SHARED(double, warp_values, [kThreads / 32]);
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v = norm_combine<kKind>(v, __shfl_down_sync(0xffffffffu, v, off));
  if (threadIdx.x % 32 == 0) warp_values[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    v = threadIdx.x < kThreads / 32 ? warp_values[threadIdx.x] : 0.0;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v = norm_combine<kKind>(v, __shfl_down_sync(0xffffffffu, v, off));
  }
  return v;
}

// Per block: sum |g|^p (or max |g|) over its chunks, in double, into partial[blockIdx.x].
template <NormKind kKind, int kCap>
__global__ void __launch_bounds__(kThreads)
norm_kernel(const __grid_constant__ TensorTable<1, kCap> table, double p, double* partial) {
  double acc = 0.0;
  const int64_t chunks = table.chunk_begin[table.count];
  for (int64_t c = blockIdx.x; c < chunks; c += gridDim.x) {
    const int t = owner_of(table, c);
    const int64_t begin = (c - table.chunk_begin[t]) * kChunk;
    const int64_t n = min(kChunk, table.size[t] - begin);
    const float* g = table.ptr[0][t] + begin;
    int64_t scalar_from = 0;
    if (reinterpret_cast<uintptr_t>(g) % 16 == 0) {
      for (int64_t i = threadIdx.x; i < n / 4; i += kThreads) {
        const float4 r = reinterpret_cast<const float4*>(g)[i];
        acc = norm_combine<kKind>(acc, norm_term<kKind>(r.x, p));
        acc = norm_combine<kKind>(acc, norm_term<kKind>(r.y, p));
        acc = norm_combine<kKind>(acc, norm_term<kKind>(r.z, p));
        acc = norm_combine<kKind>(acc, norm_term<kKind>(r.w, p));
      }
      scalar_from = n / 4 * 4;
    }
    for (int64_t i = scalar_from + threadIdx.x; i < n; i += kThreads)
      acc = norm_combine<kKind>(acc, norm_term<kKind>(g[i], p));
  }
  acc = block_combine<kKind>(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// One block: combines the partials of every launch into out = {norm, clip coefficient}.
template <NormKind kKind>
__global__ void __launch_bounds__(kThreads)
norm_finish_kernel(const double* partial, int64_t count, double p, float max_norm, float* out) {
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += kThreads) acc = norm_combine<kKind>(acc, partial[i]);
  acc = block_combine<kKind>(acc);
  if (threadIdx.x == 0) {
    double total = acc;
    if constexpr (kKind == NormKind::two) total = sqrt(acc);
    else if constexpr (kKind == NormKind::general) total = pow(acc, 1.0 / p);
    const float norm = static_cast<float>(total);
    const float coef = max_norm / (norm + kClipEps);
    out[0] = norm;
    out[1] = coef != coef ? coef : fminf(coef, 1.0f);
  }
}

// --- launching -----------------------------------------------------------------------------------

// Resident blocks per SM of a kernel at kThreads threads, cached per (kernel, device).
int blocks_per_sm(const void* kernel, int device) {
  static std::mutex mutex;
  static std::map<std::pair<const void*, int>, int> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find({kernel, device});
  if (it != cache.end()) return it->second;
  int n = 0;
  FG_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, kThreads, 0));
  n = std::max(n, 1);
  cache[{kernel, device}] = n;
  return n;
}

// Calls launch(table, chunks) for the non-empty tensors of the lists, kCap (or fewer) at a time.
template <int kDepth, int kCap, class Launch>
void for_each_table(const std::vector<const float*>* lists[kDepth], const std::vector<int64_t>& sizes,
                    const std::vector<int64_t>& nonempty, Launch launch) {
  TensorTable<kDepth, kCap> table;
  for (size_t start = 0; start < nonempty.size(); start += kCap) {
    const int count = static_cast<int>(std::min<size_t>(kCap, nonempty.size() - start));
    table.count = count;
    table.chunk_begin[0] = 0;
    for (int k = 0; k < count; ++k) {
      const int64_t t = nonempty[start + k];
      for (int d = 0; d < kDepth; ++d) table.ptr[d][k] = const_cast<float*>((*lists[d])[t]);
      table.size[k] = sizes[t];
      table.chunk_begin[k + 1] = table.chunk_begin[k] + (sizes[t] + kChunk - 1) / kChunk;
    }
    launch(table, table.chunk_begin[count]);
  }
}

std::vector<int64_t> nonempty_of(const std::vector<int64_t>& sizes) {
  std::vector<int64_t> idx;
  for (size_t t = 0; t < sizes.size(); ++t)
    if (sizes[t] > 0) idx.push_back(static_cast<int64_t>(t));
  return idx;
}

template <class Op, int kDepth, int kCap>
void apply_with_cap(const std::vector<const float*>* lists[kDepth], const std::vector<int64_t>& sizes,
                    const std::vector<int64_t>& nonempty, const Op& op, cudaStream_t stream, int device) {
  const void* kernel = reinterpret_cast<const void*>(&multi_tensor_kernel<Op, kDepth, kCap>);
  const int64_t fill = int64_t(blocks_per_sm(kernel, device)) * multiprocessor_count(device);
  for_each_table<kDepth, kCap>(lists, sizes, nonempty, [&](const TensorTable<kDepth, kCap>& table, int64_t chunks) {
    const unsigned grid = static_cast<unsigned>(std::max<int64_t>(1, std::min(chunks, fill)));
    FG_LAUNCH((multi_tensor_kernel<Op, kDepth, kCap>), grid, kThreads, 0, stream, table, op);
  });
}

template <class Op, int kDepth>
void multi_tensor_apply(const std::vector<const float*>* lists[kDepth], const std::vector<int64_t>& sizes,
                        const Op& op, cudaStream_t stream, int device) {
  const std::vector<int64_t> nonempty = nonempty_of(sizes);
  if (nonempty.empty()) return;
  DeviceGuard guard(device);
  if (nonempty.size() <= static_cast<size_t>(kSmallCap))
    apply_with_cap<Op, kDepth, kSmallCap>(lists, sizes, nonempty, op, stream, device);
  else
    apply_with_cap<Op, kDepth, kLargeCap>(lists, sizes, nonempty, op, stream, device);
}

template <class T>
std::vector<const float*> as_const(const std::vector<T*>& v) {
  return std::vector<const float*>(v.begin(), v.end());
}

template <NormKind kKind, int kCap>
int64_t launch_norm(const std::vector<const float*>* lists[1], const std::vector<int64_t>& sizes,
                    const std::vector<int64_t>& nonempty, double p, double* workspace, cudaStream_t stream,
                    int device) {
  const void* kernel = reinterpret_cast<const void*>(&norm_kernel<kKind, kCap>);
  const int64_t fill = int64_t(blocks_per_sm(kernel, device)) * multiprocessor_count(device);
  int64_t written = 0;
  for_each_table<1, kCap>(lists, sizes, nonempty, [&](const TensorTable<1, kCap>& table, int64_t chunks) {
    const unsigned grid = static_cast<unsigned>(std::max<int64_t>(1, std::min({chunks, fill, int64_t(kNormBlocks)})));
    FG_LAUNCH((norm_kernel<kKind, kCap>), grid, kThreads, 0, stream, table, p, workspace + written);
    written += grid;
  });
  return written;
}

template <NormKind kKind>
void norm_kind_clip(const std::vector<float*>& grads, const std::vector<int64_t>& sizes, double p,
                    double max_norm, double* workspace, float* out, cudaStream_t stream, int device) {
  const std::vector<const float*> g = as_const(grads);
  const std::vector<const float*>* lists[1] = {&g};
  const std::vector<int64_t> nonempty = nonempty_of(sizes);
  DeviceGuard guard(device);
  int64_t partials = 0;
  if (!nonempty.empty()) {
    partials = nonempty.size() <= static_cast<size_t>(kSmallCap)
                   ? launch_norm<kKind, kSmallCap>(lists, sizes, nonempty, p, workspace, stream, device)
                   : launch_norm<kKind, kLargeCap>(lists, sizes, nonempty, p, workspace, stream, device);
  }
  const float max_norm_f = static_cast<float>(max_norm < 0 ? 0.0 : max_norm);
  FG_LAUNCH(norm_finish_kernel<kKind>, 1, kThreads, 0, stream, workspace, partials, p, max_norm_f, out);
  if (max_norm >= 0 && !nonempty.empty()) {
    const std::vector<const float*>* scale_lists[1] = {&g};
    multi_tensor_apply<ScaleOp, 1>(scale_lists, sizes, ScaleOp{out + 1}, stream, device);
  }
}

}  // namespace

void adam_step(const AdamScalars& s, const std::vector<float*>& params,
               const std::vector<const float*>& grads, const std::vector<float*>& exp_avgs,
               const std::vector<float*>& exp_avg_sqs, const std::vector<int64_t>& sizes,
               cudaStream_t stream, int device) {
  const auto p = as_const(params), m = as_const(exp_avgs), v = as_const(exp_avg_sqs);
  const std::vector<const float*>* lists[4] = {&p, &grads, &m, &v};
  multi_tensor_apply<AdamOp, 4>(lists, sizes, AdamOp{s}, stream, device);
}

void sgd_step(const SgdScalars& s, const std::vector<float*>& params,
              const std::vector<const float*>& grads, const std::vector<float*>& momentum_buffers,
              const std::vector<int64_t>& sizes, cudaStream_t stream, int device) {
  const auto p = as_const(params);
  if (s.momentum == 0.0f) {
    const std::vector<const float*>* lists[2] = {&p, &grads};
    multi_tensor_apply<SgdOp<2>, 2>(lists, sizes, SgdOp<2>{s}, stream, device);
  } else {
    const auto b = as_const(momentum_buffers);
    const std::vector<const float*>* lists[3] = {&p, &grads, &b};
    multi_tensor_apply<SgdOp<3>, 3>(lists, sizes, SgdOp<3>{s}, stream, device);
  }
}

int64_t norm_workspace_size(int64_t count) {
  const int64_t launches = count <= kSmallCap ? 1 : (count + kLargeCap - 1) / kLargeCap;
  return std::max<int64_t>(1, launches) * kNormBlocks;
}

void grad_norm_clip(const std::vector<float*>& grads, const std::vector<int64_t>& sizes, double p,
                    double max_norm, double* workspace, float* out, cudaStream_t stream, int device) {
  switch (norm_kind(p)) {
    case NormKind::two: return norm_kind_clip<NormKind::two>(grads, sizes, p, max_norm, workspace, out, stream, device);
    case NormKind::one: return norm_kind_clip<NormKind::one>(grads, sizes, p, max_norm, workspace, out, stream, device);
    case NormKind::inf: return norm_kind_clip<NormKind::inf>(grads, sizes, p, max_norm, workspace, out, stream, device);
    case NormKind::general: break;
  }
  norm_kind_clip<NormKind::general>(grads, sizes, p, max_norm, workspace, out, stream, device);
}

}  // namespace fusegrad::cuda
