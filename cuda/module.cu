// The _cuda module: device queries, and each family's kernels registered from its own
// <family>_bind.cu. Arrays arrive as raw device addresses (taken by fusegrad._backend from
// __cuda_array_interface__ or DLPack) with their device and the stream to run on.
#include <pybind11/pybind11.h>

#include <string>

#include "common/cuda_check.cuh"

namespace py = pybind11;

namespace fusegrad {
void register_activation_cuda(py::module_& m);  // cuda/activation/activation_bind.cu
void register_optim_cuda(py::module_& m);       // cuda/optim/optim_bind.cu
void register_pool_cuda(py::module_& m);        // cuda/pool/pool_bind.cu
void register_softmax_cuda(py::module_& m);     // cuda/softmax/softmax_bind.cu
void register_gemm_cuda(py::module_& m);        // cuda/gemm/gemm_bind.cu
void register_conv_cuda(py::module_& m);        // cuda/conv/conv_bind.cu
void register_rnn_cuda(py::module_& m);         // cuda/rnn/rnn_bind.cu
void register_attention_cuda(py::module_& m);   // cuda/attention/attention_bind.cu
}  // namespace fusegrad

// The same file is the emulated build's module (fusegrad._cuda_emulated, FG_EMULATED defined),
// which adds the emulator's own functions.
#ifndef FG_CUDA_MODULE_NAME
#define FG_CUDA_MODULE_NAME _cuda
#endif
#define FG_PYBIND11_MODULE(name, variable) PYBIND11_MODULE(name, variable)
#ifdef FG_EMULATED
namespace fusegrad::cuda::emulator {
void register_emulator(py::module_& m);  // cuda/common/emulator/bind.cpp
}
#endif

using namespace fusegrad;

namespace {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // no driver or no device: report none rather than fail
    return 0;
  }
  return n;
}

}  // namespace

FG_PYBIND11_MODULE(FG_CUDA_MODULE_NAME, m) {
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

  register_activation_cuda(m);
  register_optim_cuda(m);
  register_pool_cuda(m);
  register_softmax_cuda(m);
  register_gemm_cuda(m);
  register_conv_cuda(m);
  register_rnn_cuda(m);
  register_attention_cuda(m);
#ifdef FG_EMULATED
  cuda::emulator::register_emulator(m);
#endif
}
