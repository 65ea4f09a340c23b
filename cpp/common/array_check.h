// Checks the bindings make before handing a NumPy array's memory to a kernel. The Python layer
// (fusegrad.ops) has already checked everything with friendlier messages; these are the last
// guard so that nothing reaches a kernel that could make it read or write out of bounds.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <initializer_list>
#include <string>

#include "common/array_view.h"
#include "common/threads.h"

namespace fusegrad {
namespace py = pybind11;

inline void require_float32(const py::array& a, const char* name) {
  if (!py::isinstance<py::array_t<float>>(a) || a.dtype().kind() != 'f' || a.itemsize() != 4)
    throw py::type_error(std::string(name) + ": expected dtype float32, got " +
                         std::string(py::str(a.dtype())));
}

inline void require_int32(const py::array& a, const char* name) {
  if (a.dtype().kind() != 'i' || a.itemsize() != 4)
    throw py::type_error(std::string(name) + ": expected dtype int32");
}

inline bool is_contiguous(const py::array& a) {
  return (a.flags() & (py::array::c_style | py::array::f_style)) != 0;
}

inline bool is_c_contiguous(const py::array& a) { return (a.flags() & py::array::c_style) != 0; }

inline void require_writeable(const py::array& a, const char* name) {
  if (!a.writeable()) throw py::value_error(std::string(name) + ": is read-only");
}

// Float32, C- or Fortran-contiguous (flat elementwise kernels).
inline const float* float_input(const py::array& a, const char* name) {
  require_float32(a, name);
  if (!is_contiguous(a)) throw py::value_error(std::string(name) + ": must be contiguous");
  return static_cast<const float*>(a.data());
}

inline float* float_output(py::array& a, const char* name) {
  const float* p = float_input(a, name);
  require_writeable(a, name);
  return const_cast<float*>(p);
}

// Float32 and C-contiguous (row-major and NHWC kernels).
inline const float* c_float_input(const py::array& a, const char* name) {
  require_float32(a, name);
  if (!is_c_contiguous(a)) throw py::value_error(std::string(name) + ": must be C-contiguous");
  return static_cast<const float*>(a.data());
}

inline float* c_float_output(py::array& a, const char* name) {
  const float* p = c_float_input(a, name);
  require_writeable(a, name);
  return const_cast<float*>(p);
}

inline void require_shape(const py::array& a, std::initializer_list<int64_t> shape, const char* name) {
  bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
  int d = 0;
  for (int64_t s : shape) ok = ok && d < a.ndim() && a.shape(d++) == s;
  if (!ok) throw py::value_error(std::string(name) + ": shape does not match the other arguments");
}

// Elementwise kernels walk memory flat, so every operand must have the same shape and strides.
// (Empty arrays need only the same shape: no element is read or written through their strides.)
inline void require_same_layout(const py::array& a, const py::array& b, const char* what) {
  bool same = a.ndim() == b.ndim();
  const bool empty = a.size() == 0;
  for (py::ssize_t d = 0; same && d < a.ndim(); ++d)
    same = a.shape(d) == b.shape(d) && (empty || a.shape(d) <= 1 || a.strides(d) == b.strides(d));
  if (!same) throw py::value_error(std::string(what) + ": operands differ in shape or layout");
}

// The array's shape and byte strides as a kernel-side view (up to kMaxViewDims dimensions).
inline ArrayView view_of(const py::array& a) {
  if (a.ndim() > kMaxViewDims) throw py::value_error("arrays of more than 4 dimensions are not supported here");
  ArrayView v;
  v.data = const_cast<void*>(a.data());
  v.ndim = static_cast<int>(a.ndim());
  for (int d = 0; d < v.ndim; ++d) v.shape[d] = a.shape(d), v.strides[d] = a.strides(d);
  v.itemsize = a.itemsize();
  return v;
}

inline void require_disjoint(const py::array& out, std::initializer_list<const py::array*> inputs, const char* what) {
  for (const py::array* x : inputs)
    if (views_overlap(view_of(out), view_of(*x))) throw py::value_error(std::string(what) + ": the output overlaps an input");
}

// What every binding holds while a kernel runs: the GIL released, and the calling thread in the
// kernels' floating-point mode (subnormals flushed: see DenormalsAreZero), both undone after.
class KernelCall {
  py::gil_scoped_release release_;
  DenormalsAreZero mode_;
};

}  // namespace fusegrad
