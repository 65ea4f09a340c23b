// The _cpu module: argument checks and calls, nothing else. Kernels run with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "activation/activation.h"
#include "common/array_check.h"
#include "common/isa.h"
#include "common/probe.h"
#include "common/threads.h"

namespace fusegrad { void register_optim(pybind11::module_& m); }  // cpp/optim/optim_bind.cpp

namespace py = pybind11;
using namespace fusegrad;

namespace {

Activation activation_code(int code) {
  if (code < 0 || code >= kNumActivations) throw py::value_error("unknown activation code");
  return static_cast<Activation>(code);
}

void activation_forward(int code, const py::array& x, py::array& out, float param) {
  const Activation kind = activation_code(code);
  const float* xp = float_input(x, "x");
  float* op = float_output(out, "out");
  require_same_layout(x, out, "activation");
  const int64_t n = x.size();
  py::gil_scoped_release release;
  active_activation_kernels().forward(kind, xp, op, n, param);
}

void activation_backward(int code, const py::array& grad_out, const py::array& saved, py::array& out,
                         float param) {
  const Activation kind = activation_code(code);
  const float* gp = float_input(grad_out, "grad_out");
  const float* sp = float_input(saved, "saved");
  float* op = float_output(out, "out");
  require_same_layout(grad_out, saved, "activation backward");
  require_same_layout(grad_out, out, "activation backward");
  const int64_t n = grad_out.size();
  py::gil_scoped_release release;
  active_activation_kernels().backward(kind, gp, sp, op, n, param);
}

}  // namespace

PYBIND11_MODULE(_cpu, m) {
  m.doc() = "fusegrad CPU kernels";
  m.attr("__version__") = FUSEGRAD_VERSION;

  m.def("isa", [] { return std::string(isa_name(active_isa())); }, "The active ISA level.");
  m.def("best_isa", [] { return std::string(isa_name(best_supported_isa())); });
  m.def("set_isa", [](const std::string& name) { set_active_isa(isa_from_name(name)); },
        py::arg("name"));
  m.def("set_num_threads", [](int n) {
    if (n < 1) throw py::value_error("set_num_threads: n must be >= 1, got " + std::to_string(n));
    set_num_threads(n);
  }, py::arg("n"));
  m.def("get_num_threads", &get_num_threads);

  m.def("activation_forward", &activation_forward, py::arg("kind"), py::arg("x").noconvert(),
        py::arg("out").noconvert(), py::arg("param") = 0.0f);
  m.def("activation_backward", &activation_backward, py::arg("kind"), py::arg("grad_out").noconvert(),
        py::arg("saved").noconvert(), py::arg("out").noconvert(), py::arg("param") = 0.0f);

  register_optim(m);

  m.def("probe_fma_peak", [](int64_t iterations) {
    if (iterations < 0) throw py::value_error("iterations must be >= 0");
    py::gil_scoped_release release;
    return active_probe_kernels().fma_peak(iterations);
  }, py::arg("iterations"));
}
