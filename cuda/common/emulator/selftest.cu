// Self-tests of the host SIMT emulator, driven by tests/emulator/test_emulator.py: correct kernels
// for every emulated feature (checked against references in Python), and broken kernels that the
// emulator must catch. The tensor-core and wgmma ones are in selftest_tensor_cores.cu. Compiled only into fusegrad._cuda_emulated, but every kernel also compiles
// with nvcc (nvcc -arch=sm_90 -c), and the correct ones mean the same on a GPU. The host side uses
// only the CUDA runtime API.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/cuda_check.cuh"
#include "common/emulator/selftest.h"
#include "common/launch.cuh"
#include "common/ptx.cuh"

#ifdef FG_EMULATED
#include <alloca.h>
#endif

namespace py = pybind11;

namespace fusegrad::cuda::selftest {
namespace {

// ================================ correct kernels ================================================

// Per block: the sum of its slice of x, by a tree in shared memory. Without the barrier after the
// store, a thread reads partial[t + stride] before its owner wrote it.
__global__ void block_sum_kernel(const float* x, int n, float* sums, bool barrier_after_store) {
  FG_SHARED(float, partial, [1024]);
  const int t = threadIdx.x;
  const int i = blockIdx.x * blockDim.x + t;
  partial[t] = i < n ? x[i] : 0.0f;
  if (barrier_after_store) __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (t < stride) partial[t] += partial[t + stride];
    __syncthreads();
  }
  if (t == 0) sums[blockIdx.x] = partial[0];
}

template <class T>
__device__ T shuffle_by_mode(int mode, unsigned mask, T v, int arg, int width) {
  switch (mode) {
    case 0: return __shfl_sync(mask, v, arg, width);
    case 1: return __shfl_up_sync(mask, v, static_cast<unsigned>(arg), width);
    case 2: return __shfl_down_sync(mask, v, static_cast<unsigned>(arg), width);
    default: return __shfl_xor_sync(mask, v, arg, width);
  }
}

// Lanes in mask shuffle in[t] by mode with their own args[t]; the others copy in[t].
__global__ void shuffle_kernel(const unsigned long long* in, const int* args, unsigned long long* out, int mode,
                               int width, unsigned mask, bool wide) {
  const int t = threadIdx.x;
  unsigned long long v = in[t];
  if (mask >> (t % 32) & 1u) {
    if (wide) v = shuffle_by_mode<unsigned long long>(mode, mask, v, args[t], width);
    else v = shuffle_by_mode<unsigned>(mode, mask, static_cast<unsigned>(v), args[t], width);
  }
  out[t] = v;
}

// Per thread: ballot, any, all, activemask for the lanes in mask (zeros for the others).
__global__ void vote_kernel(const int* predicate, unsigned mask, unsigned* out) {
  const int t = threadIdx.x;
  unsigned r[4] = {0, 0, 0, 0};
  if (mask >> (t % 32) & 1u) {
    r[0] = __ballot_sync(mask, predicate[t]);
    r[1] = __any_sync(mask, predicate[t]);
    r[2] = __all_sync(mask, predicate[t]);
    r[3] = __activemask();
    __syncwarp(mask);
  }
  for (int k = 0; k < 4; ++k) out[4 * t + k] = r[k];
}

// Per thread: the warp's add, min, max, and, or, xor of in, and match_any / match_all of in % 4.
__global__ void warp_reduce_kernel(const unsigned* in, unsigned* out) {
  const int t = threadIdx.x;
  const unsigned v = in[t];
  int all_equal = 0;
  out[8 * t + 0] = __reduce_add_sync(0xFFFFFFFFu, v);
  out[8 * t + 1] = __reduce_min_sync(0xFFFFFFFFu, v);
  out[8 * t + 2] = __reduce_max_sync(0xFFFFFFFFu, v);
  out[8 * t + 3] = __reduce_and_sync(0xFFFFFFFFu, v);
  out[8 * t + 4] = __reduce_or_sync(0xFFFFFFFFu, v);
  out[8 * t + 5] = __reduce_xor_sync(0xFFFFFFFFu, v);
  out[8 * t + 6] = __match_any_sync(0xFFFFFFFFu, v % 4);
  out[8 * t + 7] = __match_all_sync(0xFFFFFFFFu, v % 4, &all_equal);
}

struct AtomicCounters {
  int i32;
  unsigned u32;
  unsigned long long u64;
  float f32;
  double f64;
  int imax, imin;
  unsigned umax, umin;
  unsigned cas_counter;
  unsigned long long cas64_counter;
  int exchange;
  unsigned inc;
};

// Every thread of every block hits the same counters; exchanged[g] is what thread g's atomicExch
// returned, and histogram sums a per-block shared-memory histogram.
__global__ void atomics_kernel(AtomicCounters* c, int* exchanged, unsigned* histogram) {
  FG_SHARED(unsigned, bins, [16]);
  const int g = blockIdx.x * blockDim.x + threadIdx.x;
  if (threadIdx.x < 16) bins[threadIdx.x] = 0;
  __syncthreads();
  atomicAdd(&c->i32, 1);
  atomicAdd(&c->u32, 2u);
  atomicAdd(&c->u64, 3ull);
  atomicAdd(&c->f32, 1.0f);
  atomicAdd(&c->f64, 0.5);
  atomicMax(&c->imax, g);
  atomicMin(&c->imin, -g);
  atomicMax(&c->umax, static_cast<unsigned>(g));
  atomicMin(&c->umin, static_cast<unsigned>(g) + 5u);
  atomicInc(&c->inc, 1000000u);
  unsigned old = c->cas_counter, seen;
  do {
    seen = old;
    old = atomicCAS(&c->cas_counter, seen, seen + 1);
  } while (old != seen);
  unsigned long long old64 = c->cas64_counter, seen64;
  do {
    seen64 = old64;
    old64 = atomicCAS(&c->cas64_counter, seen64, seen64 + 2);
  } while (old64 != seen64);
  exchanged[g] = atomicExch(&c->exchange, g);
  atomicAdd(&bins[g % 16], 1u);
  __syncthreads();
  if (threadIdx.x < 16) atomicAdd(&histogram[threadIdx.x], bins[threadIdx.x]);
}

// out = 2 * src through a kStages-deep cp.async pipeline: each thread copies one 16-byte chunk of
// each tile (zero-filled past n); every thread then reads chunks other threads copied.
template <int kStages>
__global__ void cp_async_pipeline_kernel(const float* src, long long n, float* out) {
  FG_DYNAMIC_SHARED(float, stage);
  const long long tile = 4LL * blockDim.x;
  const long long tiles = (n + tile - 1) / tile;
  auto issue = [&](long long k) {
    if (k < tiles) {
      const long long first = k * tile + 4LL * threadIdx.x;
      const long long valid = first < n ? (n - first < 4 ? n - first : 4) : 0;
      float* dst = &stage[(k % kStages) * tile + 4 * threadIdx.x];
      ptx::cp_async_cg(dst, valid > 0 ? src + first : src, static_cast<int>(4 * valid));
    }
    ptx::cp_async_commit();
  };
  for (int k = 0; k < kStages - 1; ++k) issue(k);
  for (long long k = 0; k < tiles; ++k) {
    ptx::cp_async_wait<kStages - 2>();
    __syncthreads();
    const auto buffer = stage + (k % kStages) * tile;
    for (long long j = (threadIdx.x * 7 + 3) % blockDim.x; j < tile; j += blockDim.x)
      if (k * tile + j < n) out[k * tile + j] = 2.0f * buffer[j];
    __syncthreads();
    issue(k + kStages - 1);
  }
  ptx::cp_async_wait_all();
}

// out = src (n floats, one tile) through cp.async.ca of kBytes per thread, zero-filling past n.
template <int kBytes>
__global__ void cp_async_size_kernel(const float* src, long long n, float* out) {
  FG_DYNAMIC_SHARED(float, tile);
  constexpr int kFloats = kBytes / 4;
  const long long first = static_cast<long long>(threadIdx.x) * kFloats;
  const long long valid = first < n ? (n - first < kFloats ? n - first : kFloats) : 0;
  ptx::cp_async_ca<kBytes>(&tile[first], valid > 0 ? src + first : src, static_cast<int>(4 * valid));
  ptx::cp_async_wait_all();
  __syncthreads();
  for (long long j = threadIdx.x; j < static_cast<long long>(blockDim.x) * kFloats; j += blockDim.x) out[j] = tile[j];
}

// Two barriers per iteration: the speed benchmark.
__global__ void barrier_benchmark_kernel(float* out, int iterations) {
  FG_SHARED(float, buffer, [1024]);
  float v = static_cast<float>(threadIdx.x);
  for (int i = 0; i < iterations; ++i) {
    buffer[threadIdx.x] = v;
    __syncthreads();
    v += 0.5f * buffer[(threadIdx.x + 1) % blockDim.x];
    __syncthreads();
  }
  out[blockIdx.x * blockDim.x + threadIdx.x] = v;
}

// Per thread: threadIdx, blockIdx, blockDim, gridDim (12 values).
__global__ void coordinates_kernel(unsigned* out) {
  const unsigned block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned thread = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  unsigned* o = out + 12 * (block * blockDim.x * blockDim.y * blockDim.z + thread);
  const unsigned v[12] = {threadIdx.x, threadIdx.y, threadIdx.z, blockIdx.x, blockIdx.y, blockIdx.z,
                          blockDim.x,  blockDim.y,  blockDim.z,  gridDim.x,  gridDim.y,  gridDim.z};
  for (int k = 0; k < 12; ++k) o[k] = v[k];
}

__global__ void barrier_reduce_kernel(const int* predicate, int* out) {
  const int t = threadIdx.x;
  out[3 * t] = __syncthreads_count(predicate[t]);
  out[3 * t + 1] = __syncthreads_and(predicate[t]);
  out[3 * t + 2] = __syncthreads_or(predicate[t]);
}

// The order in which the block's threads pass the point after the first barrier.
__global__ void schedule_order_kernel(unsigned* out) {
  FG_SHARED(unsigned, ticket, [1]);
  if (threadIdx.x == 0) ticket[0] = 0;
  __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = atomicAdd(&ticket[0], 1u);
}

// out = in^T for an n x n matrix, through a padded 32x33 shared tile; block (32, 8).
__global__ void transpose_kernel(const float* in, float* out, int n) {
  FG_SHARED(float, tile, [32][33]);
  const int x = blockIdx.x * 32 + threadIdx.x;
  for (int j = threadIdx.y; j < 32; j += 8) {
    const int y = blockIdx.y * 32 + j;
    if (x < n && y < n) tile[j][threadIdx.x] = in[static_cast<long long>(y) * n + x];
  }
  __syncthreads();
  const int tx = blockIdx.y * 32 + threadIdx.x;
  for (int j = threadIdx.y; j < 32; j += 8) {
    const int ty = blockIdx.x * 32 + j;
    if (tx < n && ty < n) out[static_cast<long long>(ty) * n + tx] = tile[threadIdx.x][j];
  }
}

// Conversions: bf16 and fp16 bits (round to nearest even) and back, and tf32 rounding.
__global__ void convert_kernel(const float* in, int n, unsigned short* bf16_bits, unsigned short* f16_bits,
                               float* bf16_back, float* f16_back, float* tf32) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const __nv_bfloat16 b = __float2bfloat16_rn(in[i]);
    const __half h = __float2half_rn(in[i]);
    bf16_bits[i] = __bfloat16_as_ushort(b);
    f16_bits[i] = __half_as_ushort(h);
    bf16_back[i] = __bfloat162float(b);
    f16_back[i] = __half2float(h);
    tf32[i] = ptx::tf32_round(in[i]);
  }
}

__global__ void copy_kernel(const float* src, float* dst, long long n, long long offset) {
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) dst[i] = src[i + offset];
}

__global__ void fill_kernel(float* dst, long long count) {
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < count) dst[i] = 1.0f;
}

__global__ void trivial_kernel(int* out) {
  if (threadIdx.x == 0 && blockIdx.x == 0) out[0] = 1;
}

// ================================ broken kernels =================================================
// Each is wrong in one way; the emulator must report it (some would pass silently on a GPU).

// Thread 31 of 32 writes tile[32].
__global__ void static_shared_off_by_one_kernel(float* out) {
  FG_SHARED(float, tile, [32]);
  tile[threadIdx.x + 1] = static_cast<float>(threadIdx.x);
  __syncthreads();
  out[threadIdx.x] = tile[threadIdx.x];
}

// Indexes the dynamic shared memory (blockDim.x floats) at threadIdx.x + offset, by name or
// through a raw pointer.
__global__ void dynamic_shared_kernel(float* out, int offset, bool raw_pointer) {
  FG_DYNAMIC_SHARED(float, smem);
  float* raw = smem;
  const int i = static_cast<int>(threadIdx.x) + offset;
  if (raw_pointer) raw[i] = 1.0f;
  else smem[i] = 1.0f;
  __syncthreads();
  out[threadIdx.x] = smem[threadIdx.x];
}

// 64 threads. 0: a barrier only threads < 16 reach; 1: two different barriers in if/else;
// 2: threads >= 48 return before the barrier; 3: a barrier in a loop whose trip count varies.
__global__ void divergent_barrier_kernel(int variant, float* out) {
  const int t = threadIdx.x;
  if (variant == 0) {
    if (t < 16) __syncthreads();
  } else if (variant == 1) {
    if (t < 32) __syncthreads();
    else __syncthreads();
  } else if (variant == 2) {
    if (t >= 48) return;
    __syncthreads();
  } else {
    for (int i = 0; i < 1 + t % 2; ++i) __syncthreads();
  }
  out[t] = 1.0f;
}

// One warp. 0: only lanes < 16 reach a full-mask shuffle; 1: the two halves reach different
// shuffles; 2: a mask that leaves out half of the lanes calling it.
__global__ void divergent_shuffle_kernel(int variant, float* out) {
  const int lane = threadIdx.x % 32;
  float v = static_cast<float>(lane);
  if (variant == 0) {
    if (lane < 16) v = __shfl_sync(0xFFFFFFFFu, v, 0);
  } else if (variant == 1) {
    if (lane < 16) v = __shfl_sync(0xFFFFFFFFu, v, 0);
    else v = __shfl_sync(0xFFFFFFFFu, v, 1);
  } else {
    v = __shfl_sync(0x0000FFFFu, v, 0);
  }
  out[threadIdx.x] = v;
}

// Reads the tile its own cp.async is still filling (no cp.async.wait_group before the read).
__global__ void cp_async_read_before_wait_kernel(const float* src, float* out) {
  FG_SHARED(float, tile, [128]);
  ptx::cp_async_cg(&tile[4 * threadIdx.x], src + 4 * threadIdx.x);
  ptx::cp_async_commit();
  out[threadIdx.x] = tile[4 * threadIdx.x];
  ptx::cp_async_wait_all();
}

// A thread's local array far larger than its stack, touched from the top down.
// A wgmma whose operand is refilled by cp.async before the wait that retires it (variant 0), or
// never waited for at all (variant 1).
__global__ void wgmma_misuse_kernel(int variant, const float* src) {
  FG_DYNAMIC_SHARED(uint16_t, smem);
  for (int i = threadIdx.x; i < 64 * 16 + 128 * 16; i += 128) smem[i] = 0;
  ptx::fence_proxy_async_shared();
  __syncthreads();
  float acc[64] = {};
  const uint64_t da = ptx::smem_descriptor(static_cast<const uint16_t*>(smem + 0), 128, 256);
  const uint64_t db = ptx::smem_descriptor(static_cast<const uint16_t*>(smem + 64 * 16), 128, 256);
  ptx::wgmma_fence();
  ptx::wgmma_m64n128k16_bf16(acc, da, db);
  ptx::wgmma_commit();
  if (variant == 0) {
    ptx::cp_async_cg(static_cast<uint16_t*>(smem + 8 * threadIdx.x), src + 4 * threadIdx.x);
    ptx::cp_async_commit();
    ptx::wgmma_wait<0>();
    ptx::cp_async_wait_all();
  }
}

__global__ void stack_overflow_kernel(float* out, int pages) {
  volatile float big[120 * 1024];  // 480 KiB: under the GPU's 512 KiB local-memory limit
  for (int p = pages - 1; p >= 0; --p) big[p * 1024] = static_cast<float>(p);
  out[threadIdx.x] = big[0];
}

// Where each thread's stack is: the address of a local variable.
__global__ void stack_address_kernel(unsigned long long* out) {
  volatile char here = 0;
  out[threadIdx.x] = reinterpret_cast<unsigned long long>(&here) + here;
}

#ifdef FG_EMULATED
// A frame far larger than the stack, sized at run time so that it moves the stack pointer down to
// `target`, then touched from the top down a page at a time: the first touch below the thread's
// own stack hits its guard page while the stack pointer is at `target` (on a GPU, alloca'd local
// memory is not a stack, so this kernel is the emulator's only).
__global__ void stack_overflow_to_kernel(unsigned long long target, float* out) {
  volatile char top = 0;
  const size_t bytes = reinterpret_cast<uintptr_t>(&top) - target;
  volatile char* big = static_cast<volatile char*>(alloca(bytes));
  for (size_t end = bytes; end >= 4096; end -= 4096) big[end - 4096] = 1;
  out[threadIdx.x] = big[0] + top;
}
#endif

__global__ void divide_kernel(const int* numerator, const int* denominator, int* out) {
  out[threadIdx.x] = numerator[threadIdx.x] / denominator[threadIdx.x];
}

// ================================ host entry points ==============================================

std::vector<float> block_sum(const std::vector<float>& x, int threads, bool barrier_after_store) {
  const int n = static_cast<int>(x.size());
  const int blocks = std::max(1, (n + threads - 1) / threads);
  py::gil_scoped_release release;
  DeviceArray<float> dx(x), sums(static_cast<size_t>(blocks));
  FG_LAUNCH(block_sum_kernel, blocks, threads, 0, nullptr, dx.get(), n, sums.get(), barrier_after_store);
  return sums.read();
}

std::vector<unsigned long long> shuffle(const std::string& mode, const std::vector<unsigned long long>& values,
                                        const std::vector<int>& args, int width, unsigned mask, bool wide) {
  const int m = mode == "idx" ? 0 : mode == "up" ? 1 : mode == "down" ? 2 : mode == "xor" ? 3 : -1;
  if (m < 0) throw py::value_error("mode must be idx, up, down or xor");
  if (values.size() != args.size() || values.empty() || values.size() % 32 != 0)
    throw py::value_error("values and args: the same length, a multiple of 32");
  py::gil_scoped_release release;
  DeviceArray<unsigned long long> in(values), out(values.size());
  DeviceArray<int> a(args);
  FG_LAUNCH(shuffle_kernel, 1, static_cast<unsigned>(values.size()), 0, nullptr, in.get(), a.get(), out.get(), m,
            width, mask, wide);
  return out.read();
}

std::vector<unsigned> vote(const std::vector<int>& predicate, unsigned mask) {
  py::gil_scoped_release release;
  DeviceArray<int> p(predicate);
  DeviceArray<unsigned> out(4 * predicate.size());
  FG_LAUNCH(vote_kernel, 1, static_cast<unsigned>(predicate.size()), 0, nullptr, p.get(), mask, out.get());
  return out.read();
}

std::vector<unsigned> warp_reduce(const std::vector<unsigned>& values) {
  py::gil_scoped_release release;
  DeviceArray<unsigned> in(values), out(8 * values.size());
  FG_LAUNCH(warp_reduce_kernel, 1, static_cast<unsigned>(values.size()), 0, nullptr, in.get(), out.get());
  return out.read();
}

py::dict atomics(int blocks, int threads) {
  const int total = blocks * threads;
  AtomicCounters c{};
  std::vector<int> exchanged;
  std::vector<unsigned> histogram;
  {
    py::gil_scoped_release release;
    AtomicCounters init{};
    init.imax = -1;
    init.imin = 1;
    init.umax = 0;
    init.umin = 0xFFFFFFFFu;
    init.exchange = -1;
    DeviceArray<AtomicCounters> dc(std::vector<AtomicCounters>{init});
    DeviceArray<int> dex(static_cast<size_t>(total));
    DeviceArray<unsigned> dh(16);
    dh.zero();
    FG_LAUNCH(atomics_kernel, blocks, threads, 0, nullptr, dc.get(), dex.get(), dh.get());
    c = dc.read()[0];
    exchanged = dex.read();
    histogram = dh.read();
  }
  py::dict d;
  d["i32"] = c.i32;
  d["u32"] = c.u32;
  d["u64"] = c.u64;
  d["f32"] = c.f32;
  d["f64"] = c.f64;
  d["imax"] = c.imax;
  d["imin"] = c.imin;
  d["umax"] = c.umax;
  d["umin"] = c.umin;
  d["cas"] = c.cas_counter;
  d["cas64"] = c.cas64_counter;
  d["exchange"] = c.exchange;
  d["inc"] = c.inc;
  d["exchanged"] = exchanged;
  d["histogram"] = histogram;
  return d;
}

std::vector<float> cp_async_pipeline(const std::vector<float>& src, int stages, int threads) {
  const long long n = static_cast<long long>(src.size());
  const size_t smem = static_cast<size_t>(stages) * 4 * threads * sizeof(float);
  py::gil_scoped_release release;
  DeviceArray<float> ds(src), out(src.size());
  switch (stages) {
    case 2: FG_LAUNCH(cp_async_pipeline_kernel<2>, 1, threads, smem, nullptr, ds.get(), n, out.get()); break;
    case 3: FG_LAUNCH(cp_async_pipeline_kernel<3>, 1, threads, smem, nullptr, ds.get(), n, out.get()); break;
    case 4: FG_LAUNCH(cp_async_pipeline_kernel<4>, 1, threads, smem, nullptr, ds.get(), n, out.get()); break;
    default: throw std::invalid_argument("stages must be 2, 3 or 4");
  }
  return out.read();
}

std::vector<float> cp_async_size(const std::vector<float>& src, int bytes, int threads) {
  const long long n = static_cast<long long>(src.size());
  const size_t tile = static_cast<size_t>(threads) * bytes / 4;
  py::gil_scoped_release release;
  DeviceArray<float> ds(src), out(tile);
  const size_t smem = tile * sizeof(float);
  switch (bytes) {
    case 4: FG_LAUNCH(cp_async_size_kernel<4>, 1, threads, smem, nullptr, ds.get(), n, out.get()); break;
    case 8: FG_LAUNCH(cp_async_size_kernel<8>, 1, threads, smem, nullptr, ds.get(), n, out.get()); break;
    case 16: FG_LAUNCH(cp_async_size_kernel<16>, 1, threads, smem, nullptr, ds.get(), n, out.get()); break;
    default: throw std::invalid_argument("bytes must be 4, 8 or 16");
  }
  return out.read();
}

std::vector<float> barrier_benchmark(int blocks, int threads, int iterations) {
  py::gil_scoped_release release;
  DeviceArray<float> out(static_cast<size_t>(blocks) * threads);
  FG_LAUNCH(barrier_benchmark_kernel, blocks, threads, 0, nullptr, out.get(), iterations);
  return out.read();
}

std::vector<unsigned> coordinates(std::vector<unsigned> grid, std::vector<unsigned> block) {
  if (grid.size() != 3 || block.size() != 3) throw py::value_error("grid and block: 3 values each");
  const size_t n = size_t(grid[0]) * grid[1] * grid[2] * block[0] * block[1] * block[2];
  py::gil_scoped_release release;
  DeviceArray<unsigned> out(12 * n);
  FG_LAUNCH(coordinates_kernel, dim3(grid[0], grid[1], grid[2]), dim3(block[0], block[1], block[2]), 0, nullptr,
            out.get());
  return out.read();
}

std::vector<int> barrier_reduce(const std::vector<int>& predicate) {
  py::gil_scoped_release release;
  DeviceArray<int> p(predicate), out(3 * predicate.size());
  FG_LAUNCH(barrier_reduce_kernel, 1, static_cast<unsigned>(predicate.size()), 0, nullptr, p.get(), out.get());
  return out.read();
}

std::vector<unsigned> schedule_order(int blocks, int threads) {
  py::gil_scoped_release release;
  DeviceArray<unsigned> out(static_cast<size_t>(blocks) * threads);
  FG_LAUNCH(schedule_order_kernel, blocks, threads, 0, nullptr, out.get());
  return out.read();
}

std::vector<float> transpose(const std::vector<float>& in, int n) {
  py::gil_scoped_release release;
  DeviceArray<float> din(in), out(in.size());
  const unsigned tiles = static_cast<unsigned>((n + 31) / 32);
  FG_LAUNCH(transpose_kernel, dim3(tiles, tiles), dim3(32, 8), 0, nullptr, din.get(), out.get(), n);
  return out.read();
}

py::dict convert(const std::vector<float>& in) {
  const int n = static_cast<int>(in.size());
  std::vector<unsigned short> bf, f16;
  std::vector<float> bf_back, f16_back, tf32;
  {
    py::gil_scoped_release release;
    DeviceArray<float> din(in), db(in.size()), dh(in.size()), dt(in.size());
    DeviceArray<unsigned short> dbf(in.size()), df16(in.size());
    FG_LAUNCH(convert_kernel, 4, 64, 0, nullptr, din.get(), n, dbf.get(), df16.get(), db.get(), dh.get(), dt.get());
    bf = dbf.read();
    f16 = df16.read();
    bf_back = db.read();
    f16_back = dh.read();
    tf32 = dt.read();
  }
  py::dict d;
  d["bf16_bits"] = bf;
  d["f16_bits"] = f16;
  d["bf16"] = bf_back;
  d["f16"] = f16_back;
  d["tf32"] = tf32;
  return d;
}

void copy(uintptr_t src, uintptr_t dst, long long n, long long offset, int threads) {
  py::gil_scoped_release release;
  const unsigned blocks = static_cast<unsigned>(std::max<long long>(1, (n + threads - 1) / threads));
  FG_LAUNCH(copy_kernel, blocks, threads, 0, nullptr, reinterpret_cast<const float*>(src), reinterpret_cast<float*>(dst),
            n, offset);
}

void fill(uintptr_t dst, long long count, int threads) {
  py::gil_scoped_release release;
  const unsigned blocks = static_cast<unsigned>(std::max<long long>(1, (count + threads - 1) / threads));
  FG_LAUNCH(fill_kernel, blocks, threads, 0, nullptr, reinterpret_cast<float*>(dst), count);
}

void launch(std::vector<unsigned> grid, std::vector<unsigned> block, size_t smem, int max_dynamic_smem) {
  if (grid.size() != 3 || block.size() != 3) throw py::value_error("grid and block: 3 values each");
  py::gil_scoped_release release;
  if (max_dynamic_smem >= 0)
    FG_CUDA_CHECK(cudaFuncSetAttribute(trivial_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, max_dynamic_smem));
  DeviceArray<int> out(1);
  FG_LAUNCH(trivial_kernel, dim3(grid[0], grid[1], grid[2]), dim3(block[0], block[1], block[2]), smem, nullptr,
            out.get());
}

unsigned long long stack_address() {
  py::gil_scoped_release release;
  DeviceArray<unsigned long long> out(1);
  FG_LAUNCH(stack_address_kernel, 1, 1, 0, nullptr, out.get());
  return out.read()[0];
}

#ifdef FG_EMULATED
void stack_overflow_to(unsigned long long target) {
  py::gil_scoped_release release;
  DeviceArray<float> out(1);
  FG_LAUNCH(stack_overflow_to_kernel, 1, 1, 0, nullptr, target, out.get());
}
#endif

// The broken kernels, by name.
void broken(const std::string& name, int variant) {
  py::gil_scoped_release release;
  DeviceArray<float> out(1024), src(1024);
  FG_CUDA_CHECK(cudaMemset(src.get(), 0, 1024 * sizeof(float)));
  if (name == "static_shared_off_by_one") {
    FG_LAUNCH(static_shared_off_by_one_kernel, 1, 32, 0, nullptr, out.get());
  } else if (name == "dynamic_shared_out_of_range" || name == "dynamic_shared_raw_overrun") {
    FG_LAUNCH(dynamic_shared_kernel, 1, 128, 128 * sizeof(float), nullptr, out.get(), variant,
              name == "dynamic_shared_raw_overrun");
  } else if (name == "divergent_barrier") {
    FG_LAUNCH(divergent_barrier_kernel, 1, 64, 0, nullptr, variant, out.get());
  } else if (name == "divergent_shuffle") {
    FG_LAUNCH(divergent_shuffle_kernel, 1, 32, 0, nullptr, variant, out.get());
  } else if (name == "cp_async_read_before_wait") {
    FG_LAUNCH(cp_async_read_before_wait_kernel, 1, 32, 0, nullptr, src.get(), out.get());
  } else if (name == "wgmma_misuse") {
    FG_LAUNCH(wgmma_misuse_kernel, 1, 128, (64 + 128) * 16 * 2, nullptr, variant, src.get());
  } else if (name == "null_read") {
    FG_LAUNCH(copy_kernel, 1, 32, 0, nullptr, static_cast<const float*>(nullptr), out.get(), 32LL, 0LL);
  } else if (name == "stack_overflow") {
    FG_LAUNCH(stack_overflow_kernel, 1, 32, 0, nullptr, out.get(), variant);
  } else if (name == "divide_by_zero") {
    DeviceArray<int> num(std::vector<int>(32, 7)), den(std::vector<int>(32, 0)), res(32);
    FG_LAUNCH(divide_kernel, 1, 32, 0, nullptr, num.get(), den.get(), res.get());
  } else {
    throw std::invalid_argument("no broken kernel named " + name);
  }
}

}  // namespace
}  // namespace fusegrad::cuda::selftest

namespace fusegrad::cuda::emulator {

void register_emulator_selftests(py::module_& m) {
  namespace st = fusegrad::cuda::selftest;
  m.def("selftest_block_sum", &st::block_sum, py::arg("x"), py::arg("threads"), py::arg("barrier_after_store"));
  m.def("selftest_shuffle", &st::shuffle, py::arg("mode"), py::arg("values"), py::arg("args"), py::arg("width"),
        py::arg("mask"), py::arg("wide"));
  m.def("selftest_vote", &st::vote, py::arg("predicate"), py::arg("mask"));
  m.def("selftest_warp_reduce", &st::warp_reduce, py::arg("values"));
  m.def("selftest_atomics", &st::atomics, py::arg("blocks"), py::arg("threads"));
  st::register_tensor_core_selftests(m);
  m.def("selftest_cp_async_pipeline", &st::cp_async_pipeline, py::arg("src"), py::arg("stages"), py::arg("threads"));
  m.def("selftest_cp_async_size", &st::cp_async_size, py::arg("src"), py::arg("bytes"), py::arg("threads"));
  m.def("selftest_barrier_benchmark", &st::barrier_benchmark, py::arg("blocks"), py::arg("threads"), py::arg("iterations"));
  m.def("selftest_coordinates", &st::coordinates, py::arg("grid"), py::arg("block"));
  m.def("selftest_barrier_reduce", &st::barrier_reduce, py::arg("predicate"));
  m.def("selftest_schedule_order", &st::schedule_order, py::arg("blocks"), py::arg("threads"));
  m.def("selftest_transpose", &st::transpose, py::arg("x"), py::arg("n"));
  m.def("selftest_convert", &st::convert, py::arg("x"));
  m.def("selftest_copy", &st::copy, py::arg("src"), py::arg("dst"), py::arg("n"), py::arg("offset"), py::arg("threads") = 128);
  m.def("selftest_fill", &st::fill, py::arg("dst"), py::arg("count"), py::arg("threads") = 128);
  m.def("selftest_launch", &st::launch, py::arg("grid"), py::arg("block"), py::arg("smem") = 0,
        py::arg("max_dynamic_smem") = -1);
  m.def("selftest_broken", &st::broken, py::arg("name"), py::arg("variant") = 0);
  m.def("selftest_stack_address", &st::stack_address,
        "The address of a local variable of a 1-thread kernel launched from the calling OS thread");
#ifdef FG_EMULATED
  m.def("selftest_stack_overflow_to", &st::stack_overflow_to, py::arg("target"),
        "Runs a 1-thread kernel on the calling OS thread whose frame moves its stack pointer down to "
        "`target`, then overflows its stack");
#endif
}

}  // namespace fusegrad::cuda::emulator
