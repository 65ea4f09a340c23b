// Conversion of the int8 epilogue's Python arguments, shared by the int8 GEMM and convolution
// bindings: the last guard before a kernel, after fusegrad.ops has checked them with friendlier
// messages.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "activation/activation.h"
#include "common/array_check.h"
#include "gemm/int8_gemm.h"

namespace fusegrad {

// The output type of an int32 / float32 / uint8 / int8 array.
inline Int8Out int8_out_type(const py::array& out) {
  const char kind = out.dtype().kind();
  const auto size = out.itemsize();
  if (kind == 'i' && size == 4) return Int8Out::s32;
  if (kind == 'f' && size == 4) return Int8Out::f32;
  if (kind == 'u' && size == 1) return Int8Out::u8;
  if (kind == 'i' && size == 1) return Int8Out::s8;
  throw py::type_error("out: expected dtype int32, float32, uint8 or int8, got " + std::string(py::str(out.dtype())));
}

// A contiguous float32 vector of n values, or null for None; `holder` keeps it alive.
inline const float* int8_vector(const py::object& x, int64_t n, const char* name, py::array& holder) {
  if (x.is_none()) return nullptr;
  holder = x.cast<py::array>();
  require_float32(holder, name);
  if (holder.ndim() != 1 || holder.shape(0) != n || !is_c_contiguous(holder))
    throw py::value_error(std::string(name) + ": must be a contiguous float32 vector of N values");
  return static_cast<const float*>(holder.data());
}

// The epilogue for `out` (its dtype picks the output type) and a packed weight of n columns;
// activation: a code of the activation table (none or relu).
inline Int8Epilogue int8_epilogue(const py::array& out, const Int8PackedWeight& w, int32_t a_zero_point,
                                  const py::object& scale, const py::object& bias, int activation, float inv_out_scale,
                                  int32_t out_zero_point, py::array& scale_holder, py::array& bias_holder) {
  Int8Epilogue e;
  e.out = int8_out_type(out);
  if (a_zero_point < 0 || a_zero_point > 255) throw py::value_error("a_zero_point: must be in [0, 255]");
  e.a_zero_point = a_zero_point;
  e.colsum = w.colsum.get();
  e.scale = int8_vector(scale, w.n, "scale", scale_holder);
  e.bias = int8_vector(bias, w.n, "bias", bias_holder);
  if ((e.out == Int8Out::s32) != (e.scale == nullptr))
    throw py::value_error("scale: needed exactly when the output is not int32");
  if (e.out == Int8Out::s32 && e.bias) throw py::value_error("bias: an int32 output takes no bias");
  const Activation act = activation_from_code(activation);
  if (act != Activation::none && act != Activation::relu)
    throw py::value_error("activation: the int8 epilogue applies none or relu");
  e.relu = act == Activation::relu;
  e.inv_out_scale = inv_out_scale;
  e.out_zero_point = out_zero_point;
  return e;
}

}  // namespace fusegrad
