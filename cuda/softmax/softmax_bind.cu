// Bindings of the CUDA softmax family (registered into _cuda by cuda/module.cu). Arrays arrive as
// device addresses of C-contiguous arrays; fusegrad.ops.softmax has checked dtypes, shapes and
// devices and split the shape around the axis into (outer, len, inner).
#include <pybind11/pybind11.h>

#include <cstdint>

#include "common/bind.cuh"
#include "softmax/softmax.cuh"

namespace py = pybind11;

namespace fusegrad {
namespace {

void check_sizes(std::initializer_list<int64_t> sizes) {
  for (int64_t s : sizes)
    if (s < 0) throw py::value_error("sizes must be >= 0");
}

template <class T>
T* optional_ptr(uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

}  // namespace

void register_softmax_cuda(py::module_& m) {
  m.def("softmax_forward", [](uintptr_t x, uintptr_t y, int64_t outer, int64_t len, int64_t inner, bool log,
                              uintptr_t stream, int device) {
    check_sizes({outer, len, inner});
    if (outer * len * inner == 0) return;
    py::gil_scoped_release release;
    cuda::softmax_forward(device_ptr<const float>(x, "x"), device_ptr<float>(y, "out"), outer, len, inner, log,
                          as_stream(stream), device);
  }, py::arg("x"), py::arg("out"), py::arg("outer"), py::arg("len"), py::arg("inner"), py::arg("log"),
     py::arg("stream"), py::arg("device"));

  m.def("softmax_backward", [](uintptr_t g, uintptr_t y, uintptr_t dx, int64_t outer, int64_t len, int64_t inner,
                               bool log, uintptr_t stream, int device) {
    check_sizes({outer, len, inner});
    if (outer * len * inner == 0) return;
    py::gil_scoped_release release;
    cuda::softmax_backward(device_ptr<const float>(g, "grad_out"), device_ptr<const float>(y, "y"),
                           device_ptr<float>(dx, "out"), outer, len, inner, log, as_stream(stream), device);
  }, py::arg("grad_out"), py::arg("y"), py::arg("out"), py::arg("outer"), py::arg("len"), py::arg("inner"),
     py::arg("log"), py::arg("stream"), py::arg("device"));

  m.def("cross_entropy_workspace_size", [](int64_t n, int64_t c, int device) {
    check_sizes({n, c});
    return cuda::cross_entropy_workspace_size(n, c, device);
  }, py::arg("n"), py::arg("c"), py::arg("device"),
     "float64 elements of workspace softmax_cross_entropy needs for its loss and status");

  m.def("bce_workspace_size", [](int64_t n, int device) {
    check_sizes({n});
    return cuda::bce_workspace_size(n, device);
  }, py::arg("n"), py::arg("device"), "float64 elements of workspace bce_with_logits needs for its loss");

  m.def("softmax_cross_entropy", [](uintptr_t logits, uintptr_t labels, int64_t n, int64_t c, float label_smoothing,
                                    float grad_scale, uintptr_t loss_rows, uintptr_t grad, uintptr_t loss,
                                    double divisor, uintptr_t workspace, uintptr_t status, uintptr_t stream,
                                    int device) {
    check_sizes({n, c});
    if (n == 0) return;
    if ((loss || status) && !workspace) throw py::value_error("softmax_cross_entropy: workspace required");
    const float* lp = c > 0 ? device_ptr<const float>(logits, "logits") : nullptr;
    float* gp = c > 0 ? optional_ptr<float>(grad) : nullptr;
    py::gil_scoped_release release;
    cuda::softmax_cross_entropy(lp, device_ptr<const int64_t>(labels, "labels"), n, c, label_smoothing, grad_scale,
                                optional_ptr<float>(loss_rows), gp, optional_ptr<float>(loss), divisor,
                                optional_ptr<double>(workspace), optional_ptr<int64_t>(status), as_stream(stream),
                                device);
  }, py::arg("logits"), py::arg("labels"), py::arg("n"), py::arg("c"), py::arg("label_smoothing"),
     py::arg("grad_scale"), py::arg("loss_rows"), py::arg("grad"), py::arg("loss"), py::arg("divisor"),
     py::arg("workspace"), py::arg("status"), py::arg("stream"), py::arg("device"),
     "loss_rows, grad, loss and status are optional (0); status: 2 int64, the first bad row and its label");

  m.def("bce_with_logits", [](uintptr_t x, uintptr_t t, int64_t n, float grad_scale, uintptr_t loss_elems,
                              uintptr_t grad, uintptr_t loss, double divisor, uintptr_t workspace, uintptr_t stream,
                              int device) {
    check_sizes({n});
    if (n == 0) return;
    if (loss && !workspace) throw py::value_error("bce_with_logits: workspace required");
    py::gil_scoped_release release;
    cuda::bce_with_logits(device_ptr<const float>(x, "logits"), device_ptr<const float>(t, "targets"), n, grad_scale,
                          optional_ptr<float>(loss_elems), optional_ptr<float>(grad), optional_ptr<float>(loss),
                          divisor, optional_ptr<double>(workspace), as_stream(stream), device);
  }, py::arg("logits"), py::arg("targets"), py::arg("n"), py::arg("grad_scale"), py::arg("loss_elems"),
     py::arg("grad"), py::arg("loss"), py::arg("divisor"), py::arg("workspace"), py::arg("stream"), py::arg("device"),
     "loss_elems, grad and loss are optional (0)");
}

}  // namespace fusegrad
