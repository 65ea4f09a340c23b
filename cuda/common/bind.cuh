// What every CUDA family's bindings share: device addresses and streams arriving from Python as
// integers, turned into typed pointers with a check that they are not null.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "common/cuda_check.cuh"

namespace fusegrad {

template <class T>
T* device_ptr(uintptr_t address, const char* name) {
  if (address == 0) throw pybind11::value_error(std::string(name) + ": null device pointer");
  return reinterpret_cast<T*>(address);
}

inline cudaStream_t as_stream(uintptr_t handle) { return reinterpret_cast<cudaStream_t>(handle); }

}  // namespace fusegrad
