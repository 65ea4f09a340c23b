// Bindings of the pooling kernels (registered into _cpu by cpp/module.cpp): convert, check,
// release the GIL, call. NHWC arrays must be C-contiguous; the geometry is pool_geometry's.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <tuple>

#include "common/array_check.h"
#include "pool/pool.h"

namespace py = pybind11;

namespace fusegrad {
namespace {

PoolShape pool_shape(const py::array& x, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
  if (x.ndim() != 4) throw py::value_error("pooling input must be 4-D NHWC");
  return pool_geometry(x.shape(0), x.shape(1), x.shape(2), x.shape(3), kh, kw, sh, sw, ph, pw);
}

int32_t* optional_indices(const py::object& indices, const PoolShape& s) {
  if (indices.is_none()) return nullptr;
  auto ind = indices.cast<py::array>();
  require_int32(ind, "indices");
  if (!is_c_contiguous(ind) || !ind.writeable()) throw py::value_error("indices: must be C-contiguous and writeable");
  require_shape(ind, {s.n, s.oh, s.ow, s.c}, "indices");
  return static_cast<int32_t*>(ind.mutable_data());
}

void max_pool2d_forward(const py::array& x, py::array& y, const py::object& indices, int64_t kh, int64_t kw,
                        int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
  const PoolShape s = pool_shape(x, kh, kw, sh, sw, ph, pw);
  const float* xp = c_float_input(x, "x");
  float* yp = c_float_output(y, "y");
  require_shape(y, {s.n, s.oh, s.ow, s.c}, "y");
  int32_t* ip = optional_indices(indices, s);
  const KernelCall kernel_call;
  active_pool_kernels().max_forward(s, xp, yp, ip);
}

void max_pool2d_int8_forward(const py::array& x, py::array& y, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                             int64_t ph, int64_t pw) {
  const PoolShape s = pool_shape(x, kh, kw, sh, sw, ph, pw);
  const char kind = x.dtype().kind();
  if ((kind != 'u' && kind != 'i') || x.itemsize() != 1) throw py::type_error("x: expected dtype uint8 or int8");
  if (!y.dtype().is(x.dtype())) throw py::type_error("y: expected the dtype of x");
  if (!is_c_contiguous(x) || !is_c_contiguous(y) || !y.writeable())
    throw py::value_error("x, y: must be C-contiguous, y writeable");
  require_shape(y, {s.n, s.oh, s.ow, s.c}, "y");
  require_disjoint(y, {&x}, "quantized_max_pool2d");
  const KernelCall kernel_call;
  max_pool2d_int8(s, x.data(), y.mutable_data(), kind == 'i');
}

void max_pool2d_backward(const py::array& gy, const py::array& indices, py::array& gx, int64_t kh, int64_t kw,
                         int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
  const PoolShape s = pool_shape(gx, kh, kw, sh, sw, ph, pw);
  const float* gyp = c_float_input(gy, "grad_out");
  float* gxp = c_float_output(gx, "grad_input");
  require_shape(gy, {s.n, s.oh, s.ow, s.c}, "grad_out");
  require_int32(indices, "indices");
  if (!is_c_contiguous(indices)) throw py::value_error("indices: must be C-contiguous");
  require_shape(indices, {s.n, s.oh, s.ow, s.c}, "indices");
  const auto* ip = static_cast<const int32_t*>(indices.data());
  int64_t bad;
  {
    const KernelCall kernel_call;
    bad = active_pool_kernels().max_backward(s, gyp, ip, gxp);
  }
  if (bad) throw py::value_error("max_pool2d_backward: " + std::to_string(bad) +
                                 " indices do not name a pixel of their pooling window");
}

void avg_pool2d_forward(const py::array& x, py::array& y, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                        int64_t ph, int64_t pw, bool count_include_pad) {
  const PoolShape s = pool_shape(x, kh, kw, sh, sw, ph, pw);
  const float* xp = c_float_input(x, "x");
  float* yp = c_float_output(y, "y");
  require_shape(y, {s.n, s.oh, s.ow, s.c}, "y");
  const KernelCall kernel_call;
  active_pool_kernels().avg_forward(s, xp, yp, count_include_pad);
}

void avg_pool2d_backward(const py::array& gy, py::array& gx, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                         int64_t ph, int64_t pw, bool count_include_pad) {
  const PoolShape s = pool_shape(gx, kh, kw, sh, sw, ph, pw);
  const float* gyp = c_float_input(gy, "grad_out");
  float* gxp = c_float_output(gx, "grad_input");
  require_shape(gy, {s.n, s.oh, s.ow, s.c}, "grad_out");
  const KernelCall kernel_call;
  active_pool_kernels().avg_backward(s, gyp, gxp, count_include_pad);
}

void global_avg_pool2d_forward(const py::array& x, py::array& y) {
  if (x.ndim() != 4) throw py::value_error("global_avg_pool2d: input must be 4-D NHWC");
  const float* xp = c_float_input(x, "x");
  float* yp = c_float_output(y, "y");
  const int64_t n = x.shape(0), hw = x.shape(1) * x.shape(2), c = x.shape(3);
  require_shape(y, {n, c}, "y");
  const KernelCall kernel_call;
  active_pool_kernels().global_avg_forward(xp, yp, n, hw, c);
}

void global_avg_pool2d_backward(const py::array& gy, py::array& gx) {
  if (gx.ndim() != 4) throw py::value_error("global_avg_pool2d_backward: grad_input must be 4-D NHWC");
  const float* gyp = c_float_input(gy, "grad_out");
  float* gxp = c_float_output(gx, "grad_input");
  const int64_t n = gx.shape(0), hw = gx.shape(1) * gx.shape(2), c = gx.shape(3);
  require_shape(gy, {n, c}, "grad_out");
  const KernelCall kernel_call;
  active_pool_kernels().global_avg_backward(gyp, gxp, n, hw, c);
}

}  // namespace

void register_pool(py::module_& m) {
  m.def("pool2d_output_size", [](int64_t h, int64_t w, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph,
                                 int64_t pw) {
    const PoolShape s = pool_geometry(1, h, w, 1, kh, kw, sh, sw, ph, pw);
    return std::make_tuple(s.oh, s.ow);
  }, py::arg("h"), py::arg("w"), py::arg("kh"), py::arg("kw"), py::arg("sh"), py::arg("sw"), py::arg("ph"),
     py::arg("pw"), "(OH, OW) of pooling an H×W plane; ValueError when the window does not fit.");
  m.def("max_pool2d_forward", &max_pool2d_forward, py::arg("x").noconvert(), py::arg("y").noconvert(),
        py::arg("indices"), py::arg("kh"), py::arg("kw"), py::arg("sh"), py::arg("sw"), py::arg("ph"),
        py::arg("pw"));
  m.def("max_pool2d_int8_forward", &max_pool2d_int8_forward, py::arg("x").noconvert(), py::arg("y").noconvert(),
        py::arg("kh"), py::arg("kw"), py::arg("sh"), py::arg("sw"), py::arg("ph"), py::arg("pw"));
  m.def("max_pool2d_backward", &max_pool2d_backward, py::arg("grad_out").noconvert(),
        py::arg("indices").noconvert(), py::arg("grad_input").noconvert(), py::arg("kh"), py::arg("kw"),
        py::arg("sh"), py::arg("sw"), py::arg("ph"), py::arg("pw"));
  m.def("avg_pool2d_forward", &avg_pool2d_forward, py::arg("x").noconvert(), py::arg("y").noconvert(),
        py::arg("kh"), py::arg("kw"), py::arg("sh"), py::arg("sw"), py::arg("ph"), py::arg("pw"),
        py::arg("count_include_pad"));
  m.def("avg_pool2d_backward", &avg_pool2d_backward, py::arg("grad_out").noconvert(),
        py::arg("grad_input").noconvert(), py::arg("kh"), py::arg("kw"), py::arg("sh"), py::arg("sw"),
        py::arg("ph"), py::arg("pw"), py::arg("count_include_pad"));
  m.def("global_avg_pool2d_forward", &global_avg_pool2d_forward, py::arg("x").noconvert(),
        py::arg("y").noconvert());
  m.def("global_avg_pool2d_backward", &global_avg_pool2d_backward, py::arg("grad_out").noconvert(),
        py::arg("grad_input").noconvert());
}

}  // namespace fusegrad
