// Bindings of the convolution kernels (registered into _cpu by cpp/module.cpp): convert, check,
// release the GIL, call. Every array is C-contiguous float32: NHWC x / gx / y / gy, HWIO w / gw.
// The geometry is conv_geometry's (conv.h). groups > 1 goes through the grouped driver
// (grouped.h), with w (KH, KW, C_in/groups, C_out); groups = 1 calls the table directly.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <array>
#include <string>
#include <tuple>
#include <vector>

#include "common/array_check.h"
#include "conv/conv.h"
#include "conv/int8_conv.h"
#include "gemm/int8_bind.h"
#include "conv/grouped.h"

namespace py = pybind11;

namespace fusegrad {
namespace {

struct Geometry {
  int64_t sh, sw, dh, dw, pt, pb, pl, pr;
};

const float* conv_in(const py::array& a, const char* name) {
  if (a.ndim() != 4) throw py::value_error(std::string(name) + ": must be a C-contiguous 4-D array");
  return c_float_input(a, name);
}

float* conv_out(py::array& a, const char* name) {
  const float* p = conv_in(a, name);
  require_writeable(a, name);
  return const_cast<float*>(p);
}

// The shape of one group of image (N,H,W,C) convolved with weight (KH,KW,C/groups,CO), after
// checking that `out` (N,OH,OW,CO) is what the geometry gives, so no inconsistent size reaches a
// kernel. With groups = 1 it is the whole convolution's.
ConvShape conv_shape(const py::array& img, const py::array& w, std::array<int64_t, 4> out, const Geometry& g,
                     int64_t groups = 1) {
  if (groups < 1 || img.shape(3) % groups != 0 || w.shape(3) % groups != 0)
    throw py::value_error("conv2d: groups must be >= 1 and divide C_in and C_out");
  const ConvShape s = conv_geometry(img.shape(0), img.shape(1), img.shape(2), img.shape(3) / groups, w.shape(0),
                                    w.shape(1), w.shape(3) / groups, g.sh, g.sw, g.dh, g.dw, g.pt, g.pb, g.pl, g.pr);
  if (w.shape(2) != s.c || out[0] != s.n || out[1] != s.oh || out[2] != s.ow || out[3] != s.co * groups)
    throw py::value_error("conv2d: input, weight and output shapes do not fit the geometry");
  return s;
}

ConvShape conv_shape(const py::array& img, const py::array& w, const py::array& out, const Geometry& g,
                     int64_t groups = 1) {
  return conv_shape(img, w, {out.shape(0), out.shape(1), out.shape(2), out.shape(3)}, g, groups);
}

// The optional bias of a forward: null, or C_out contiguous float32 values that do not overlap y;
// `holder` keeps the array alive while the kernel runs.
const float* conv_bias(const py::object& bias, int64_t co, const py::array& y, py::array& holder) {
  if (bias.is_none()) return nullptr;
  holder = bias.cast<py::array>();
  require_float32(holder, "bias");
  if (holder.ndim() != 1 || holder.shape(0) != co || !is_c_contiguous(holder))
    throw py::value_error("bias: must be a contiguous array of C_out elements");
  require_disjoint(y, {&holder}, "conv2d");
  return static_cast<const float*>(holder.data());
}

float* bias_grad(py::array& gb, int64_t co) {
  require_float32(gb, "grad_bias");
  if (gb.ndim() != 1 || gb.shape(0) != co || !is_c_contiguous(gb) || !gb.writeable())
    throw py::value_error("grad_bias: must be a writable contiguous array of C_out elements");
  return static_cast<float*>(gb.mutable_data());
}

void conv2d_forward(const py::array& x, const py::array& w, const py::object& bias, py::array& y, const Geometry& g,
                    int code, int64_t groups) {
  const float* xp = conv_in(x, "x");
  const float* wp = conv_in(w, "w");
  float* yp = conv_out(y, "out");
  const ConvShape s = conv_shape(x, w, y, g, groups);
  py::array bias_arr;
  const float* bp = conv_bias(bias, s.co * groups, y, bias_arr);
  require_disjoint(y, {&x, &w}, "conv2d");
  const Activation act = activation_from_code(code);
  const KernelCall kernel_call;
  if (groups == 1) active_conv_kernels().forward(s, xp, wp, bp, act, yp);
  else grouped_conv_forward(active_conv_kernels(), s, groups, xp, wp, bp, act, yp);
}

// y and indices (N, OH/pool, OW/pool, C_out), OH, OW the convolution's output size.
void conv2d_forward_max_pool(const py::array& x, const py::array& w, const py::object& bias, py::array& y,
                             const py::object& indices, int64_t pool, const Geometry& g, int code,
                             float act_param) {
  const float* xp = conv_in(x, "x");
  const float* wp = conv_in(w, "w");
  float* yp = conv_out(y, "out");
  if (pool < 1) throw py::value_error("conv2d_max_pool2d: pool must be >= 1");
  const ConvShape s = conv_geometry(x.shape(0), x.shape(1), x.shape(2), x.shape(3), w.shape(0), w.shape(1),
                                    w.shape(3), g.sh, g.sw, g.dh, g.dw, g.pt, g.pb, g.pl, g.pr);
  conv_shape(x, w, {s.n, s.oh, s.ow, s.co}, g);
  require_shape(y, {s.n, s.oh / pool, s.ow / pool, s.co}, "conv2d_max_pool2d: out");
  int32_t* ip = nullptr;  // None: the pooled values only
  if (!indices.is_none()) {
    if (!py::isinstance<py::array>(indices))
      throw py::type_error("conv2d_max_pool2d: indices must be an int32 NumPy array or None");
    py::array ind = py::reinterpret_borrow<py::array>(indices);
    require_int32(ind, "indices");
    if (!is_c_contiguous(ind) || !ind.writeable())
      throw py::value_error("conv2d_max_pool2d: indices must be a writable C-contiguous int32 array");
    require_shape(ind, {s.n, s.oh / pool, s.ow / pool, s.co}, "conv2d_max_pool2d: indices");
    ip = static_cast<int32_t*>(ind.mutable_data());
  }
  py::array bias_arr;
  const float* bp = conv_bias(bias, s.co, y, bias_arr);
  require_disjoint(y, {&x, &w}, "conv2d");
  const Activation act = activation_from_code(code);
  const KernelCall kernel_call;
  active_conv_kernels().forward_max_pool(s, xp, wp, bp, act, act_param, pool, yp, ip);
}

void conv2d_backward_input(const py::array& gy, const py::array& w, py::array& gx, const Geometry& g,
                           int64_t groups) {
  const float* gyp = conv_in(gy, "grad_out");
  const float* wp = conv_in(w, "w");
  float* gxp = conv_out(gx, "grad_input");
  const ConvShape s = conv_shape(gx, w, gy, g, groups);
  require_disjoint(gx, {&gy, &w}, "conv2d");
  const KernelCall kernel_call;
  if (groups == 1) active_conv_kernels().backward_input(s, gyp, wp, gxp);
  else grouped_conv_backward(active_conv_kernels(), s, groups, nullptr, gyp, wp, gxp, nullptr, nullptr);
}

void conv2d_backward_weight(const py::array& x, const py::array& gy, py::array& gw, const Geometry& g,
                            int64_t groups) {
  const float* xp = conv_in(x, "x");
  const float* gyp = conv_in(gy, "grad_out");
  float* gwp = conv_out(gw, "grad_weight");
  const ConvShape s = conv_shape(x, gw, gy, g, groups);
  require_disjoint(gw, {&x, &gy}, "conv2d");
  const KernelCall kernel_call;
  if (groups == 1) active_conv_kernels().backward_weight(s, xp, gyp, gwp);
  else grouped_conv_backward(active_conv_kernels(), s, groups, xp, gyp, nullptr, nullptr, gwp, nullptr);
}

void conv2d_backward_bias(const py::array& gy, py::array& gb) {
  const float* gyp = conv_in(gy, "grad_out");
  float* gbp = bias_grad(gb, gy.shape(3));
  require_disjoint(gb, {&gy}, "conv2d");
  const int64_t rows = gy.shape(0) * gy.shape(1) * gy.shape(2), co = gy.shape(3);
  const KernelCall kernel_call;
  active_conv_kernels().backward_bias(gyp, rows, co, gbp);
}

// Any of gx, gw, gb (None where not wanted) from one call.
void conv2d_backward(const py::array& gy, const py::array& x, const py::array& w, const py::object& gx,
                     const py::object& gw, const py::object& gb, const Geometry& g, int64_t groups) {
  const float* gyp = conv_in(gy, "grad_out");
  const float* xp = conv_in(x, "x");
  const float* wp = conv_in(w, "w");
  const ConvShape s = conv_shape(x, w, gy, g, groups);
  std::vector<py::array> outs;
  // An output the caller asked for: disjoint from the inputs and from the outputs before it.
  const auto claim = [&](const py::array& a) {
    require_disjoint(a, {&gy, &x, &w}, "conv2d");
    for (const py::array& other : outs)
      if (views_overlap(view_of(a), view_of(other))) throw py::value_error("conv2d: two outputs overlap");
    outs.push_back(a);
  };
  const auto output = [&](const py::object& o, const py::array& like, const char* name) -> float* {
    if (o.is_none()) return nullptr;
    py::array a = o.cast<py::array>();
    float* p = conv_out(a, name);
    for (py::ssize_t d = 0; d < 4; ++d)
      if (a.shape(d) != like.shape(d)) throw py::value_error(std::string(name) + ": shape differs from its input's");
    claim(a);
    return p;
  };
  float* gxp = output(gx, x, "grad_input");
  float* gwp = output(gw, w, "grad_weight");
  float* gbp = nullptr;
  if (!gb.is_none()) {
    py::array a = gb.cast<py::array>();
    gbp = bias_grad(a, s.co * groups);
    claim(a);
  }
  const KernelCall kernel_call;
  if (groups == 1) active_conv_kernels().backward(s, xp, gyp, wp, gxp, gwp, gbp);
  else grouped_conv_backward(active_conv_kernels(), s, groups, xp, gyp, wp, gxp, gwp, gbp);
}

// The int8 convolution: x uint8 NHWC, w packed from an HWIO (kh, kw, C_in, C_out) weight, out
// (N, OH, OW, C_out) of int32 / float32 / uint8 / int8 (its dtype picks the epilogue).
void int8_conv2d_forward(const py::array& x, const Int8PackedWeight& w, int64_t kh, int64_t kw, py::array& out,
                         const Geometry& g, int32_t x_zero_point, const py::object& scale, const py::object& bias,
                         int activation, float inv_out_scale, int32_t out_zero_point, int path) {
  if (x.dtype().kind() != 'u' || x.itemsize() != 1) throw py::type_error("x: expected dtype uint8");
  if (x.ndim() != 4 || !is_c_contiguous(x)) throw py::value_error("x: must be a C-contiguous 4-D array");
  if (out.ndim() != 4 || !is_c_contiguous(out)) throw py::value_error("out: must be a C-contiguous 4-D array");
  require_writeable(out, "out");
  if (kh < 1 || kw < 1 || kh * kw * x.shape(3) != w.k)
    throw py::value_error("int8 conv2d: the packed weight does not fit the kernel size and C_in");
  const ConvShape s = conv_geometry(x.shape(0), x.shape(1), x.shape(2), x.shape(3), kh, kw, w.n, g.sh, g.sw, g.dh,
                                    g.dw, g.pt, g.pb, g.pl, g.pr);
  if (out.shape(0) != s.n || out.shape(1) != s.oh || out.shape(2) != s.ow || out.shape(3) != s.co)
    throw py::value_error("int8 conv2d: input, weight and output shapes do not fit the geometry");
  require_disjoint(out, {&x}, "quantized_conv2d");
  py::array scale_holder, bias_holder;
  Int8ConvProblem p;
  p.epilogue = int8_epilogue(out, w, x_zero_point, scale, bias, activation, inv_out_scale, out_zero_point, scale_holder,
                             bias_holder);
  if (path < 0 || path > 3) throw py::value_error("path: must be 0, 1, 2 or 3");
  p.s = s;
  p.x = static_cast<const uint8_t*>(x.data());
  p.x_zero_point = static_cast<uint8_t>(x_zero_point);
  p.w = &w;
  p.out = out.mutable_data();
  p.path = static_cast<Int8Path>(path);
  const KernelCall kernel_call;
  int8_conv2d(p);
}

}  // namespace

void register_conv(py::module_& m) {
  py::class_<Geometry>(m, "ConvGeometry", "Stride, dilation and padding of a convolution, as the kernels take them.")
      .def(py::init([](int64_t sh, int64_t sw, int64_t dh, int64_t dw, int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
             return Geometry{sh, sw, dh, dw, pt, pb, pl, pr};
           }), py::arg("sh"), py::arg("sw"), py::arg("dh"), py::arg("dw"), py::arg("pt"), py::arg("pb"), py::arg("pl"),
           py::arg("pr"))
      .def_readonly("sh", &Geometry::sh).def_readonly("sw", &Geometry::sw)
      .def_readonly("dh", &Geometry::dh).def_readonly("dw", &Geometry::dw)
      .def_readonly("pt", &Geometry::pt).def_readonly("pb", &Geometry::pb)
      .def_readonly("pl", &Geometry::pl).def_readonly("pr", &Geometry::pr);
  m.def("conv2d_output_size", [](int64_t h, int64_t w, int64_t kh, int64_t kw, const Geometry& g) {
    const ConvShape s = conv_geometry(1, h, w, 1, kh, kw, 1, g.sh, g.sw, g.dh, g.dw, g.pt, g.pb, g.pl, g.pr);
    return std::make_tuple(s.oh, s.ow);
  }, py::arg("h"), py::arg("w"), py::arg("kh"), py::arg("kw"), py::arg("geometry"),
     "(OH, OW) of convolving an H×W plane with a KH×KW kernel; ValueError when the sizes do not fit.");
  m.def("conv2d_forward", &conv2d_forward, py::arg("x").noconvert(), py::arg("w").noconvert(), py::arg("bias"),
        py::arg("out").noconvert(), py::arg("geometry"), py::arg("activation"), py::arg("groups") = 1);
  m.def("conv2d_forward_max_pool", &conv2d_forward_max_pool, py::arg("x").noconvert(), py::arg("w").noconvert(),
        py::arg("bias"), py::arg("out").noconvert(), py::arg("indices"), py::arg("pool"),
        py::arg("geometry"), py::arg("activation"), py::arg("act_param") = 0.0f);
  m.def("int8_conv2d_forward", &int8_conv2d_forward, py::arg("x").noconvert(), py::arg("w"), py::arg("kh"),
        py::arg("kw"), py::arg("out").noconvert(), py::arg("geometry"), py::arg("x_zero_point"), py::arg("scale"),
        py::arg("bias"), py::arg("activation"), py::arg("inv_out_scale"), py::arg("out_zero_point"), py::arg("path") = 0);
  m.def("conv2d_backward_input", &conv2d_backward_input, py::arg("grad_out").noconvert(), py::arg("w").noconvert(),
        py::arg("grad_input").noconvert(), py::arg("geometry"), py::arg("groups") = 1);
  m.def("conv2d_backward_weight", &conv2d_backward_weight, py::arg("x").noconvert(), py::arg("grad_out").noconvert(),
        py::arg("grad_weight").noconvert(), py::arg("geometry"), py::arg("groups") = 1);
  m.def("conv2d_backward_bias", &conv2d_backward_bias, py::arg("grad_out").noconvert(),
        py::arg("grad_bias").noconvert());
  m.def("conv2d_backward", &conv2d_backward, py::arg("grad_out").noconvert(), py::arg("x").noconvert(),
        py::arg("w").noconvert(), py::arg("grad_input"), py::arg("grad_weight"), py::arg("grad_bias"),
        py::arg("geometry"), py::arg("groups") = 1);
}

}  // namespace fusegrad
