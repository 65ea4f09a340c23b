// Bindings of the optimizer kernels (registered into _cpu by cpp/module.cpp).
//
// The tensor lists are checked here, in one C++ loop, because a model has hundreds of parameters
// and a Python loop of checks over four lists of them would cost as much as the update itself.
// fusegrad.ops.optim has already checked list lengths and hyper-parameters. A list element that
// is not a contiguous NumPy array laid out like its parameter makes the call return False without
// touching anything, and the Python layer then brings the lists to that form itself; wrong dtypes,
// shapes, read-only or overlapping arrays raise TypeError/ValueError, all before any kernel runs.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <string>
#include <vector>

#include "common/array_check.h"
#include "optim/optim.h"
#include "optim/optim_scalars.h"

namespace py = pybind11;

namespace fusegrad {
namespace {

struct ArgList {
  const char* name;
  py::list items;
  bool written;
};

// Raw pointers and sizes of the lists, all checked; empty `ptrs` means "not in the fast form".
struct Checked {
  std::vector<std::vector<float*>> ptrs;  // one vector per list
  std::vector<int64_t> sizes;
};

std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t d = 0; d < a.ndim(); ++d) s += std::to_string(a.shape(d)) + (a.ndim() == 1 || d + 1 < a.ndim() ? "," : "");
  return s + ")";
}

bool same_shape(const py::array& a, const py::array& b) {
  if (a.ndim() != b.ndim()) return false;
  for (py::ssize_t d = 0; d < a.ndim(); ++d)
    if (a.shape(d) != b.shape(d)) return false;
  return true;
}

bool same_layout(const py::array& a, const py::array& b) {
  if (a.ndim() != b.ndim()) return false;
  if (a.size() == 0) return same_shape(a, b);  // nothing is read or written: any strides will do
  for (py::ssize_t d = 0; d < a.ndim(); ++d)
    if (a.shape(d) != b.shape(d) || (a.shape(d) > 1 && a.strides(d) != b.strides(d))) return false;
  return true;
}


// Written arrays must not share memory with any other array of the call (two gradients may).
void check_no_overlap(const std::vector<ArgList>& lists, const Checked& c) {
  struct Span { uintptr_t begin, end; size_t list, index; };
  std::vector<Span> spans;
  for (size_t l = 0; l < lists.size(); ++l)
    for (size_t i = 0; i < c.sizes.size(); ++i)
      if (c.sizes[i] > 0) {
        const auto b = reinterpret_cast<uintptr_t>(c.ptrs[l][i]);
        spans.push_back({b, b + static_cast<uintptr_t>(c.sizes[i]) * 4, l, i});
      }
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.begin < b.begin; });
  // Sweep keeping, among the spans seen so far, the one reaching furthest, and the furthest
  // reaching written one: a new span overlapping either is a conflict unless both are read-only.
  const Span* reach = nullptr;
  const Span* reach_written = nullptr;
  for (const Span& s : spans) {
    const Span* other = nullptr;
    if (reach_written && s.begin < reach_written->end) other = reach_written;
    else if (lists[s.list].written && reach && s.begin < reach->end) other = reach;
    if (other)
      throw py::value_error(std::string(lists[other->list].name) + "[" + std::to_string(other->index) +
                            "] and " + lists[s.list].name + "[" + std::to_string(s.index) +
                            "] overlap in memory; updated arrays must not share memory");
    if (!reach || s.end > reach->end) reach = &s;
    if (lists[s.list].written && (!reach_written || s.end > reach_written->end)) reach_written = &s;
  }
}

Checked check_lists(const std::vector<ArgList>& lists) {
  Checked c;
  const size_t n = py::len(lists[0].items);
  for (const auto& l : lists)
    if (py::len(l.items) != n)
      throw py::value_error(std::string("tensor lists differ in length: ") + lists[0].name + " has " +
                            std::to_string(n) + ", " + l.name + " has " + std::to_string(py::len(l.items)));
  c.ptrs.assign(lists.size(), std::vector<float*>(n, nullptr));
  c.sizes.assign(n, 0);
  std::vector<py::array> first(n);
  for (size_t l = 0; l < lists.size(); ++l) {
    for (size_t i = 0; i < n; ++i) {
      py::handle h = lists[l].items[i];
      // numpy.ndarray itself: subclasses (the emulated device's arrays) take the Python path.
      if (Py_TYPE(h.ptr()) != py::detail::npy_api::get().PyArray_Type_) return {};
      py::array a = py::reinterpret_borrow<py::array>(h);
      const std::string name = std::string(lists[l].name) + "[" + std::to_string(i) + "]";
      require_float32(a, name.c_str());
      if (l == 0) {
        if (!is_contiguous(a)) return {};
        first[i] = a;
        c.sizes[i] = a.size();
      } else {
        if (!same_shape(a, first[i]))
          throw py::value_error(name + ": shape " + shape_str(a) + " differs from " + lists[0].name +
                                "[" + std::to_string(i) + "] " + shape_str(first[i]));
        if (!same_layout(a, first[i]) || !is_contiguous(a)) return {};
      }
      if (lists[l].written && !a.writeable()) throw py::value_error(name + ": is read-only");
      c.ptrs[l][i] = static_cast<float*>(const_cast<void*>(a.data()));
    }
  }
  check_no_overlap(lists, c);
  return c;
}

bool adam_step(py::list params, py::list grads, py::list exp_avgs, py::list exp_avg_sqs, int64_t step,
               double lr, double beta1, double beta2, double eps, double weight_decay, bool decoupled,
               bool maximize) {
  if (step < 1) throw py::value_error("step must be >= 1, got " + std::to_string(step));
  const std::vector<ArgList> lists{{"params", params, true}, {"grads", grads, false},
                                   {"exp_avgs", exp_avgs, true}, {"exp_avg_sqs", exp_avg_sqs, true}};
  const Checked c = check_lists(lists);
  if (c.ptrs.empty()) return false;
  const AdamScalars s = make_adam_scalars(step, lr, beta1, beta2, eps, weight_decay, decoupled, maximize);
  const KernelCall kernel_call;
  active_optim_kernels().adam(s, c.ptrs[0].data(), c.ptrs[1].data(), c.ptrs[2].data(), c.ptrs[3].data(),
                              c.sizes.data(), static_cast<int64_t>(c.sizes.size()));
  return true;
}

bool sgd_step(py::list params, py::list grads, py::object momentum_buffers, int64_t step, double lr,
              double momentum, double dampening, bool nesterov, double weight_decay, bool maximize) {
  if (step < 1) throw py::value_error("step must be >= 1, got " + std::to_string(step));
  std::vector<ArgList> lists{{"params", params, true}, {"grads", grads, false}};
  const bool with_buffers = momentum != 0.0;
  if (with_buffers) {
    if (momentum_buffers.is_none()) throw py::value_error("momentum_buffers are required when momentum != 0");
    lists.push_back({"momentum_buffers", momentum_buffers.cast<py::list>(), true});
  }
  const Checked c = check_lists(lists);
  if (c.ptrs.empty()) return false;
  const SgdScalars s = make_sgd_scalars(step, lr, momentum, dampening, nesterov, weight_decay, maximize);
  const KernelCall kernel_call;
  active_optim_kernels().sgd(s, c.ptrs[0].data(), c.ptrs[1].data(),
                             with_buffers ? c.ptrs[2].data() : nullptr, c.sizes.data(),
                             static_cast<int64_t>(c.sizes.size()));
  return true;
}

// The total p-norm of the gradients (None when the list is not in the fast form).
// `writable`: the caller will scale them next (clipping), so read-only arrays are refused now,
// whether or not the scaling turns out to be needed.
py::object grad_norm(py::list grads, double p, bool writable) {
  if (!(p > 0.0)) throw py::value_error("norm_type must be > 0");
  const Checked c = check_lists({{"grads", grads, writable}});
  if (c.ptrs.empty()) return py::none();
  const NormKind kind = norm_kind(p);
  double power_sum;
  {
    const KernelCall kernel_call;
    power_sum = active_optim_kernels().norm_power(kind, p, const_cast<const float* const*>(c.ptrs[0].data()),
                                                  c.sizes.data(), static_cast<int64_t>(c.sizes.size()));
  }
  return py::float_(norm_from_power(kind, p, power_sum));
}

bool scale_grads(py::list grads, float coef) {
  const Checked c = check_lists({{"grads", grads, true}});
  if (c.ptrs.empty()) return false;
  const KernelCall kernel_call;
  active_optim_kernels().scale(coef, c.ptrs[0].data(), c.sizes.data(), static_cast<int64_t>(c.sizes.size()));
  return true;
}

}  // namespace

void register_optim(py::module_& m) {
  m.def("adam_step", &adam_step, py::arg("params"), py::arg("grads"), py::arg("exp_avgs"),
        py::arg("exp_avg_sqs"), py::arg("step"), py::arg("lr"), py::arg("beta1"), py::arg("beta2"),
        py::arg("eps"), py::arg("weight_decay"), py::arg("decoupled"), py::arg("maximize"),
        "Fused Adam/AdamW over lists of contiguous float32 arrays; False if a list needs conversion.");
  m.def("sgd_step", &sgd_step, py::arg("params"), py::arg("grads"), py::arg("momentum_buffers"),
        py::arg("step"), py::arg("lr"), py::arg("momentum"), py::arg("dampening"), py::arg("nesterov"),
        py::arg("weight_decay"), py::arg("maximize"),
        "Fused SGD over lists of contiguous float32 arrays; False if a list needs conversion.");
  m.def("grad_norm", &grad_norm, py::arg("grads"), py::arg("norm_type"), py::arg("writable"),
        "Total p-norm of a list of float32 arrays; None if the list needs conversion.");
  m.def("scale_grads", &scale_grads, py::arg("grads"), py::arg("coef"),
        "Multiplies every array of the list by coef in place; False if the list needs conversion.");
}

}  // namespace fusegrad
