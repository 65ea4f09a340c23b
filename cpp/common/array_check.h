// Checks the bindings make before handing a NumPy array's memory to a kernel. The Python layer
// (fusegrad.ops) has already checked everything with friendlier messages; these are the last
// guard so that nothing reaches a kernel that could make it read or write out of bounds.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

namespace fusegrad {
namespace py = pybind11;

inline void require_float32(const py::array& a, const char* name) {
  if (!py::isinstance<py::array_t<float>>(a) || a.dtype().kind() != 'f' || a.itemsize() != 4)
    throw py::type_error(std::string(name) + ": expected dtype float32, got " +
                         std::string(py::str(a.dtype())));
}

inline bool is_contiguous(const py::array& a) {
  return (a.flags() & (py::array::c_style | py::array::f_style)) != 0;
}

inline const float* float_input(const py::array& a, const char* name) {
  require_float32(a, name);
  if (!is_contiguous(a)) throw py::value_error(std::string(name) + ": must be contiguous");
  return static_cast<const float*>(a.data());
}

inline float* float_output(py::array& a, const char* name) {
  require_float32(a, name);
  if (!is_contiguous(a)) throw py::value_error(std::string(name) + ": must be contiguous");
  if (!a.writeable()) throw py::value_error(std::string(name) + ": is read-only");
  return static_cast<float*>(a.mutable_data());
}

// Elementwise kernels walk memory flat, so every operand must have the same shape and strides.
inline void require_same_layout(const py::array& a, const py::array& b, const char* what) {
  bool same = a.ndim() == b.ndim();
  for (py::ssize_t d = 0; same && d < a.ndim(); ++d)
    same = a.shape(d) == b.shape(d) && (a.shape(d) <= 1 || a.strides(d) == b.strides(d));
  if (!same) throw py::value_error(std::string(what) + ": operands differ in shape or layout");
}

}  // namespace fusegrad
