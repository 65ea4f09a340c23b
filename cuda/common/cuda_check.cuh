// CUDA error handling shared by every family: a failed call or launch becomes a C++ exception
// that the bindings turn into RuntimeError (or MemoryError when the device is out of memory),
// carrying CUDA's own message.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace fusegrad::cuda {

struct OutOfMemory : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line);

inline void check(cudaError_t err, const char* what, const char* file, int line) {
  if (err != cudaSuccess) throw_cuda_error(err, what, file, line);
}

// After a kernel launch (FG_LAUNCH calls it): throws if the launch was rejected, naming the kernel.
void check_launch(const char* kernel, const char* file, int line);

// Makes `device` current for the scope and restores the caller's device after it.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

int multiprocessor_count(int device);  // cached per device

// Blocks for a grid-stride loop over `work` items: enough to fill every SM several times over,
// no more (extra blocks only add scheduling work).
inline unsigned grid_for(int64_t work, int threads_per_block, int device) {
  const int64_t wanted = (work + threads_per_block - 1) / threads_per_block;
  const int64_t cap = int64_t(multiprocessor_count(device)) * 8;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(wanted, cap)));
}

}  // namespace fusegrad::cuda

#define FG_CUDA_CHECK(expr) ::fusegrad::cuda::check((expr), #expr, __FILE__, __LINE__)
// After a kernel launch: reports bad launch configurations at once (asynchronous faults surface
// at the next synchronising call, as with every CUDA library).
#define FG_CUDA_CHECK_LAUNCH() ::fusegrad::cuda::check(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)
