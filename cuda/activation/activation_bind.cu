// Bindings of the CUDA activation kernels (registered into _cuda by cuda/module.cu). Arrays arrive
// as device addresses; fusegrad.ops.activation has checked dtypes, shapes and devices.
#include <pybind11/pybind11.h>

#include "activation/activation.cuh"
#include "common/bind.cuh"

namespace py = pybind11;

namespace fusegrad {

void register_activation_cuda(py::module_& m) {
  m.def("activation_forward", [](int code, uintptr_t x, uintptr_t out, int64_t n, float param,
                                 uintptr_t stream, int device) {
    const Activation kind = activation_from_code(code);
    if (n < 0) throw py::value_error("n must be >= 0");
    if (n == 0) return;
    py::gil_scoped_release release;
    cuda::activation_forward(kind, device_ptr<const float>(x, "x"), device_ptr<float>(out, "out"), n,
                             param, as_stream(stream), device);
  }, py::arg("kind"), py::arg("x"), py::arg("out"), py::arg("n"), py::arg("param"),
     py::arg("stream"), py::arg("device"));

  m.def("activation_backward", [](int code, uintptr_t grad_out, uintptr_t saved, uintptr_t out,
                                  int64_t n, float param, uintptr_t stream, int device) {
    const Activation kind = activation_from_code(code);
    if (n < 0) throw py::value_error("n must be >= 0");
    if (n == 0) return;
    py::gil_scoped_release release;
    cuda::activation_backward(kind, device_ptr<const float>(grad_out, "grad_out"),
                              device_ptr<const float>(saved, "saved"), device_ptr<float>(out, "out"),
                              n, param, as_stream(stream), device);
  }, py::arg("kind"), py::arg("grad_out"), py::arg("saved"), py::arg("out"), py::arg("n"),
     py::arg("param"), py::arg("stream"), py::arg("device"));
}

}  // namespace fusegrad
