// Bindings of softmax, log-softmax and the fused losses (registered into _cpu by cpp/module.cpp):
// convert, check, release the GIL, call. Arrays must be C-contiguous float32.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "common/array_check.h"
#include "softmax/softmax.h"

namespace py = pybind11;

namespace fusegrad {
namespace {

// (outer, len, inner) of a C-contiguous array around `axis`.
void axis_split(const py::array& a, int axis, int64_t* outer, int64_t* len, int64_t* inner) {
  if (axis < 0 || axis >= a.ndim()) throw py::value_error("softmax: axis out of range");
  *outer = 1;
  *inner = 1;
  for (int d = 0; d < axis; ++d) *outer *= a.shape(d);
  for (int d = axis + 1; d < a.ndim(); ++d) *inner *= a.shape(d);
  *len = a.shape(axis);
}

void softmax_forward(const py::array& x, py::array& y, int axis, bool log) {
  const float* xp = c_float_input(x, "x");
  float* yp = c_float_output(y, "out");
  require_same_layout(x, y, "softmax");
  int64_t outer, len, inner;
  axis_split(x, axis, &outer, &len, &inner);
  if (x.size() == 0) return;
  const KernelCall kernel_call;
  active_softmax_kernels().forward(xp, yp, outer, len, inner, log);
}

void softmax_backward(const py::array& g, const py::array& y, py::array& dx, int axis, bool log) {
  const float* gp = c_float_input(g, "grad_out");
  const float* yp = c_float_input(y, "y");
  float* dp = c_float_output(dx, "out");
  require_same_layout(g, y, "softmax backward");
  require_same_layout(g, dx, "softmax backward");
  int64_t outer, len, inner;
  axis_split(g, axis, &outer, &len, &inner);
  if (g.size() == 0) return;
  const KernelCall kernel_call;
  active_softmax_kernels().backward(gp, yp, dp, outer, len, inner, log);
}

// An optional (None or array) output of the given shape.
float* optional_output(const py::object& o, std::initializer_list<int64_t> shape, const char* name) {
  if (o.is_none()) return nullptr;
  auto a = o.cast<py::array>();
  float* p = c_float_output(a, name);
  require_shape(a, shape, name);
  return p;
}

double softmax_cross_entropy(const py::array& logits, const py::array& labels, float smoothing, float grad_scale,
                             const py::object& loss_rows, const py::object& grad) {
  const float* xp = c_float_input(logits, "logits");
  if (logits.ndim() != 2) throw py::value_error("softmax_cross_entropy: logits must be 2-D");
  const int64_t n = logits.shape(0), c = logits.shape(1);
  if (labels.dtype().kind() != 'i' || labels.itemsize() != 8) throw py::type_error("labels: expected dtype int64");
  if (!is_c_contiguous(labels) || labels.ndim() != 1 || labels.shape(0) != n)
    throw py::value_error("labels: expected a contiguous (N,) array");
  const auto* lp = static_cast<const int64_t*>(labels.data());
  for (int64_t i = 0; i < n; ++i)
    if (lp[i] < 0 || lp[i] >= c) throw py::value_error("labels: value out of range [0, C)");
  float* lr = optional_output(loss_rows, {n}, "loss");
  float* gp = optional_output(grad, {n, c}, "grad");
  if (n == 0) return 0.0;
  const KernelCall kernel_call;
  return active_softmax_kernels().cross_entropy(xp, lp, n, c, smoothing, grad_scale, lr, gp);
}

// An optional output laid out like x.
float* optional_like(const py::object& o, const py::array& x, const char* name) {
  if (o.is_none()) return nullptr;
  auto a = o.cast<py::array>();
  float* p = c_float_output(a, name);
  require_same_layout(x, a, "bce_with_logits");
  return p;
}

double bce_with_logits(const py::array& x, const py::array& t, float grad_scale, const py::object& loss,
                       const py::object& grad) {
  const float* xp = c_float_input(x, "logits");
  const float* tp = c_float_input(t, "targets");
  require_same_layout(x, t, "bce_with_logits");
  float* lp = optional_like(loss, x, "loss");
  float* gp = optional_like(grad, x, "grad");
  const int64_t n = x.size();
  if (n == 0) return 0.0;
  const KernelCall kernel_call;
  return active_softmax_kernels().bce_with_logits(xp, tp, n, grad_scale, lp, gp);
}

}  // namespace

void register_softmax(py::module_& m) {
  m.def("softmax_forward", &softmax_forward, py::arg("x").noconvert(), py::arg("out").noconvert(),
        py::arg("axis"), py::arg("log"));
  m.def("softmax_backward", &softmax_backward, py::arg("grad_out").noconvert(), py::arg("y").noconvert(),
        py::arg("out").noconvert(), py::arg("axis"), py::arg("log"));
  m.def("softmax_cross_entropy", &softmax_cross_entropy, py::arg("logits").noconvert(),
        py::arg("labels").noconvert(), py::arg("label_smoothing"), py::arg("grad_scale"),
        py::arg("loss_rows"), py::arg("grad"));
  m.def("bce_with_logits", &bce_with_logits, py::arg("logits").noconvert(), py::arg("targets").noconvert(),
        py::arg("grad_scale"), py::arg("loss"), py::arg("grad"));
}

}  // namespace fusegrad
