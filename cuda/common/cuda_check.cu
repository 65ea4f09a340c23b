#include <algorithm>
#include <mutex>
#include <string>
#include <vector>

#include "common/cuda_check.cuh"

namespace fusegrad::cuda {

void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line) {
  cudaGetLastError();  // clear a sticky-free error so the next call starts clean
  std::string msg = std::string("CUDA error: ") + cudaGetErrorString(err) + " (" +
                    cudaGetErrorName(err) + ") in " + what + " at " + file + ":" +
                    std::to_string(line);
  if (err == cudaErrorMemoryAllocation) throw OutOfMemory(msg);
  throw std::runtime_error(msg);
}

void check_launch(const char* kernel, const char* file, int line) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw_cuda_error(err, (std::string("launch of ") + kernel).c_str(), file, line);
}

DeviceGuard::DeviceGuard(int device) {
  FG_CUDA_CHECK(cudaGetDevice(&previous_));
  if (previous_ != device) FG_CUDA_CHECK(cudaSetDevice(device));
}

DeviceGuard::~DeviceGuard() {
  int now = -1;
  if (cudaGetDevice(&now) == cudaSuccess && now != previous_) cudaSetDevice(previous_);
}

int multiprocessor_count(int device) {
  static std::mutex mutex;
  static std::vector<int> counts;
  std::lock_guard<std::mutex> lock(mutex);
  if (device >= static_cast<int>(counts.size())) counts.resize(device + 1, 0);
  if (counts[device] == 0)
    FG_CUDA_CHECK(cudaDeviceGetAttribute(&counts[device], cudaDevAttrMultiProcessorCount, device));
  return counts[device];
}

}  // namespace fusegrad::cuda
