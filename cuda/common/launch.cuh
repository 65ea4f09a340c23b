// What every kernel file uses to launch kernels and declare shared memory, so that the same source
// builds with nvcc for _cuda and as C++ for the emulator's _cuda_emulated (emulator/README.md).
//
//   FG_LAUNCH(kernel, grid, block, smem_bytes, stream, args...)
//       nvcc: kernel<<<grid, block, smem_bytes, stream>>>(args...), then a launch check whose error
//       names the kernel. Emulator: runs the whole grid on the host, checked, and records the launch
//       (kernel as written here, grid, block, smem_bytes). A kernel name with commas goes in
//       parentheses: FG_LAUNCH((kernel<A, B>), grid, ...).
//   FG_SHARED(T, name, [dims])   a static __shared__ T name[dims] (16-byte aligned)
//   FG_DYNAMIC_SHARED(T, name)   `name` points at the launch's dynamic shared memory, as T
//   shared_as<U>(name)           the same shared bytes viewed as U (e.g. float4); checked in the
//                                emulator, a reinterpret_cast under nvcc
// Index shared memory through these names (tile[i][j], smem[i], (smem + k)[i]) so the emulator can
// check every access.
#pragma once
#include <cuda_runtime.h>

#include <utility>

#include "common/cuda_check.cuh"

#ifdef FG_EMULATED
#include "common/emulator/launch.h"
#include "common/emulator/shared_memory.h"
#else

namespace fusegrad::cuda {

template <class... Params, class... Args>
void launch_kernel(const char* /*kernel_name*/, const char* /*file*/, int /*line*/, void (*kernel)(Params...), dim3 grid,
                   dim3 block, size_t smem_bytes, cudaStream_t stream, Args&&... args) {
  static_assert(sizeof...(Params) == sizeof...(Args), "FG_LAUNCH: wrong number of kernel arguments");
  kernel<<<grid, block, smem_bytes, stream>>>(std::forward<Args>(args)...);
}

template <class U, class T>
__device__ __forceinline__ U* shared_as(T* p) {
  return reinterpret_cast<U*>(p);
}

}  // namespace fusegrad::cuda

#define FG_SHARED(T, name, dims) __shared__ __align__(16) T name dims
#define FG_DYNAMIC_SHARED(T, name)                                             \
  extern __shared__ __align__(16) unsigned char fg_dynamic_shared_memory_[]; \
  T* const name = reinterpret_cast<T*>(fg_dynamic_shared_memory_)

#endif

#define FG_LAUNCH(kernel, grid, block, smem_bytes, stream, ...)                                           \
  do {                                                                                                     \
    ::fusegrad::cuda::launch_kernel(#kernel, __FILE__, __LINE__, kernel, grid, block, smem_bytes, stream, \
                                    ##__VA_ARGS__);                                                        \
    ::fusegrad::cuda::check_launch(#kernel, __FILE__, __LINE__);                                           \
  } while (0)
