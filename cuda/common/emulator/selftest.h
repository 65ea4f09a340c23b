// What the emulator's self-test files share (selftest.cu, selftest_tensor_cores.cu): device
// arrays for their host entry points, and the registration of the tensor-core self-tests.
#pragma once
#include <pybind11/pybind11.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <vector>

#include "common/cuda_check.cuh"

namespace fusegrad::cuda::selftest {

// Device memory for n values of T, optionally initialised from a host vector; freed on scope exit.
template <class T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t n) : n_(n) { FG_CUDA_CHECK(cudaMalloc(&p_, std::max<size_t>(n, 1) * sizeof(T))); }
  explicit DeviceArray(const std::vector<T>& v) : DeviceArray(v.size()) {
    if (n_) FG_CUDA_CHECK(cudaMemcpy(p_, v.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  ~DeviceArray() { cudaFree(p_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  T* get() const { return p_; }
  void zero() { FG_CUDA_CHECK(cudaMemset(p_, 0, n_ * sizeof(T))); }
  std::vector<T> read() const {
    std::vector<T> v(n_);
    if (n_) FG_CUDA_CHECK(cudaMemcpy(v.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return v;
  }

 private:
  T* p_ = nullptr;
  size_t n_;
};

// selftest_mma, selftest_ldmatrix, selftest_ldmatrix_mma, selftest_ldmatrix_mma_int8, selftest_wgmma.
void register_tensor_core_selftests(pybind11::module_& m);

}  // namespace fusegrad::cuda::selftest
