// Bindings of the activation kernels (registered into _cpu by cpp/module.cpp): convert, check,
// release the GIL, call; and the activation table, which fusegrad.ops.activation reads.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "activation/activation.h"
#include "common/array_check.h"

namespace py = pybind11;

namespace fusegrad {
namespace {

void activation_forward(int code, const py::array& x, py::array& out, float param) {
  const Activation kind = activation_from_code(code);
  const float* xp = float_input(x, "x");
  float* op = float_output(out, "out");
  require_same_layout(x, out, "activation");
  const int64_t n = x.size();
  const KernelCall kernel_call;
  active_activation_kernels().forward(kind, xp, op, n, param);
}

void activation_backward(int code, const py::array& grad_out, const py::array& saved, py::array& out,
                         float param) {
  const Activation kind = activation_from_code(code);
  const float* gp = float_input(grad_out, "grad_out");
  const float* sp = float_input(saved, "saved");
  float* op = float_output(out, "out");
  require_same_layout(grad_out, saved, "activation backward");
  require_same_layout(grad_out, out, "activation backward");
  const int64_t n = grad_out.size();
  const KernelCall kernel_call;
  active_activation_kernels().backward(kind, gp, sp, op, n, param);
}

py::list activation_table() {
  py::list rows;
  for (const ActivationInfo& a : kActivationInfo) {
    py::dict row;
    row["name"] = a.name;
    row["code"] = a.code;
    row["takes_param"] = a.takes_param;
    row["backward_from_output"] = a.backward_from_output;
    row["derivative_from_output"] = a.derivative_from_output;
    row["commutes_with_max"] = a.commutes_with_max;
    rows.append(row);
  }
  return rows;
}

}  // namespace

void register_activation(py::module_& m) {
  m.def("activation_table", &activation_table,
        "The activations (cpp/activation/activation.h: FG_ACTIVATIONS): name, code and properties.");
  m.def("activation_forward", &activation_forward, py::arg("kind"), py::arg("x").noconvert(),
        py::arg("out").noconvert(), py::arg("param") = 0.0f);
  m.def("activation_backward", &activation_backward, py::arg("kind"), py::arg("grad_out").noconvert(),
        py::arg("saved").noconvert(), py::arg("out").noconvert(), py::arg("param") = 0.0f);
}

}  // namespace fusegrad
