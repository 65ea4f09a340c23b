// Bindings of the CUDA optimizer kernels (registered into _cuda by cuda/module.cu). Arrays arrive as lists of device addresses with their sizes; fusegrad.ops.optim
// has checked dtypes, shapes, devices and hyper-parameters, these checks are the last guard.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "common/bind.cuh"
#include "optim/optim.cuh"
#include "optim/optim_scalars.h"

namespace py = pybind11;

namespace fusegrad {
namespace {

template <class T>
std::vector<T*> pointers(const std::vector<uintptr_t>& addresses, const std::vector<int64_t>& sizes,
                         const char* name) {
  if (addresses.size() != sizes.size())
    throw py::value_error(std::string(name) + ": expected " + std::to_string(sizes.size()) + " addresses, got " +
                          std::to_string(addresses.size()));
  std::vector<T*> out(addresses.size());
  for (size_t i = 0; i < addresses.size(); ++i) {
    if (sizes[i] < 0) throw py::value_error("sizes must be >= 0");
    if (sizes[i] > 0 && addresses[i] == 0)
      throw py::value_error(std::string(name) + "[" + std::to_string(i) + "]: null device pointer");
    out[i] = reinterpret_cast<T*>(addresses[i]);
  }
  return out;
}

void check_step(int64_t step) {
  if (step < 1) throw py::value_error("step must be >= 1, got " + std::to_string(step));
}

}  // namespace

void register_optim_cuda(py::module_& m) {
  m.def("adam_step", [](const std::vector<uintptr_t>& params, const std::vector<uintptr_t>& grads,
                        const std::vector<uintptr_t>& exp_avgs, const std::vector<uintptr_t>& exp_avg_sqs,
                        const std::vector<int64_t>& sizes, int64_t step, double lr, double beta1,
                        double beta2, double eps, double weight_decay, bool decoupled, bool maximize,
                        uintptr_t stream, int device) {
    check_step(step);
    const auto p = pointers<float>(params, sizes, "params");
    const auto g = pointers<const float>(grads, sizes, "grads");
    const auto ma = pointers<float>(exp_avgs, sizes, "exp_avgs");
    const auto va = pointers<float>(exp_avg_sqs, sizes, "exp_avg_sqs");
    const AdamScalars s = make_adam_scalars(step, lr, beta1, beta2, eps, weight_decay, decoupled, maximize);
    py::gil_scoped_release release;
    cuda::adam_step(s, p, g, ma, va, sizes, as_stream(stream), device);
  }, py::arg("params"), py::arg("grads"), py::arg("exp_avgs"), py::arg("exp_avg_sqs"), py::arg("sizes"),
     py::arg("step"), py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"),
     py::arg("weight_decay"), py::arg("decoupled"), py::arg("maximize"), py::arg("stream"), py::arg("device"));

  m.def("sgd_step", [](const std::vector<uintptr_t>& params, const std::vector<uintptr_t>& grads,
                       const std::vector<uintptr_t>& momentum_buffers, const std::vector<int64_t>& sizes,
                       int64_t step, double lr, double momentum, double dampening, bool nesterov,
                       double weight_decay, bool maximize, uintptr_t stream, int device) {
    check_step(step);
    const auto p = pointers<float>(params, sizes, "params");
    const auto g = pointers<const float>(grads, sizes, "grads");
    std::vector<float*> b;
    if (momentum != 0.0) b = pointers<float>(momentum_buffers, sizes, "momentum_buffers");
    const SgdScalars s = make_sgd_scalars(step, lr, momentum, dampening, nesterov, weight_decay, maximize);
    py::gil_scoped_release release;
    cuda::sgd_step(s, p, g, b, sizes, as_stream(stream), device);
  }, py::arg("params"), py::arg("grads"), py::arg("momentum_buffers"), py::arg("sizes"), py::arg("step"),
     py::arg("lr"), py::arg("momentum"), py::arg("dampening"), py::arg("nesterov"),
     py::arg("weight_decay"), py::arg("maximize"), py::arg("stream"), py::arg("device"));

  m.def("norm_workspace_size", [](int64_t count) {
    if (count < 0) throw py::value_error("count must be >= 0");
    return cuda::norm_workspace_size(count);
  }, py::arg("count"), "float64 elements of workspace grad_norm_clip needs for `count` tensors");

  m.def("grad_norm_clip", [](const std::vector<uintptr_t>& grads, const std::vector<int64_t>& sizes,
                             double norm_type, double max_norm, uintptr_t workspace, uintptr_t out,
                             uintptr_t stream, int device) {
    if (!(norm_type > 0.0)) throw py::value_error("norm_type must be > 0");
    if (workspace == 0 || out == 0) throw py::value_error("null workspace or out pointer");
    const auto g = pointers<float>(grads, sizes, "grads");
    py::gil_scoped_release release;
    cuda::grad_norm_clip(g, sizes, norm_type, max_norm, reinterpret_cast<double*>(workspace),
                         reinterpret_cast<float*>(out), as_stream(stream), device);
  }, py::arg("grads"), py::arg("sizes"), py::arg("norm_type"), py::arg("max_norm"), py::arg("workspace"),
     py::arg("out"), py::arg("stream"), py::arg("device"),
     "out[0] = total norm, out[1] = clip coefficient; scales grads by it when max_norm >= 0");
}

}  // namespace fusegrad
