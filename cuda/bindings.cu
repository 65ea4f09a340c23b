// The _cuda module: argument checks and calls. Arrays arrive as raw device pointers (taken by
// fusegrad._backend from __cuda_array_interface__ or DLPack) with their device and the stream
// to run on; the Python layer has checked shapes, dtypes and devices already.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "activation/activation.cuh"
#include "common/cuda_check.cuh"

namespace fusegrad { void register_optim_cuda(pybind11::module_& m); }  // cuda/optim/optim_bind.cu

namespace py = pybind11;
using namespace fusegrad;

namespace {

template <class T>
T* device_ptr(uintptr_t address, const char* name) {
  if (address == 0) throw py::value_error(std::string(name) + ": null device pointer");
  return reinterpret_cast<T*>(address);
}

cudaStream_t as_stream(uintptr_t handle) { return reinterpret_cast<cudaStream_t>(handle); }

Activation activation_code(int code) {
  if (code < 0 || code >= kNumActivations) throw py::value_error("unknown activation code");
  return static_cast<Activation>(code);
}

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // no driver or no device: report none rather than fail
    return 0;
  }
  return n;
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "fusegrad CUDA kernels";

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const cuda::OutOfMemory& e) {
      PyErr_SetString(PyExc_MemoryError, e.what());
    }
  });

  m.def("device_count", &device_count);
  m.def("device_name", [](int device) {
    cudaDeviceProp prop;
    FG_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    return std::string(prop.name);
  }, py::arg("device"));
  m.def("runtime_version", [] {
    int v = 0;
    FG_CUDA_CHECK(cudaRuntimeGetVersion(&v));
    return v;
  });
  m.def("synchronize", [](int device) {
    cuda::DeviceGuard guard(device);
    py::gil_scoped_release release;
    FG_CUDA_CHECK(cudaDeviceSynchronize());
  }, py::arg("device"));

  register_optim_cuda(m);

  m.def("activation_forward", [](int code, uintptr_t x, uintptr_t out, int64_t n, float param,
                                 uintptr_t stream, int device) {
    const Activation kind = activation_code(code);
    if (n < 0) throw py::value_error("n must be >= 0");
    if (n == 0) return;
    py::gil_scoped_release release;
    cuda::activation_forward(kind, device_ptr<const float>(x, "x"), device_ptr<float>(out, "out"), n,
                             param, as_stream(stream), device);
  }, py::arg("kind"), py::arg("x"), py::arg("out"), py::arg("n"), py::arg("param"),
     py::arg("stream"), py::arg("device"));

  m.def("activation_backward", [](int code, uintptr_t grad_out, uintptr_t saved, uintptr_t out,
                                  int64_t n, float param, uintptr_t stream, int device) {
    const Activation kind = activation_code(code);
    if (n < 0) throw py::value_error("n must be >= 0");
    if (n == 0) return;
    py::gil_scoped_release release;
    cuda::activation_backward(kind, device_ptr<const float>(grad_out, "grad_out"),
                              device_ptr<const float>(saved, "saved"), device_ptr<float>(out, "out"),
                              n, param, as_stream(stream), device);
  }, py::arg("kind"), py::arg("grad_out"), py::arg("saved"), py::arg("out"), py::arg("n"),
     py::arg("param"), py::arg("stream"), py::arg("device"));
}
