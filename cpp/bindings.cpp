// The _cpu module: argument checks and calls, nothing else. Kernels run with the GIL released.
#include <pybind11/numpy.h>

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>

#include "activation/activation.h"
#include "activation/softmax.h"
#include "common/array_check.h"
#include "common/isa.h"
#include "common/probe.h"
#include "common/threads.h"
#include "common/host_memory.h"
#include "pool/pool.h"
#include "conv/conv.h"

namespace fusegrad { void register_optim(pybind11::module_& m); }  // cpp/optim/optim_bind.cpp
#include "gemm/gemm.h"

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

// ---- pooling and softmax: NHWC / row-major arrays must be C-contiguous ----

const float* c_float_input(const py::array& a, const char* name) {
  require_float32(a, name);
  if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(name) + ": must be C-contiguous");
  return static_cast<const float*>(a.data());
}

float* c_float_output(py::array& a, const char* name) {
  float* p = float_output(a, name);
  if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(name) + ": must be C-contiguous");
  return p;
}

void require_shape(const py::array& a, std::initializer_list<int64_t> shape, const char* name) {
  bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
  int d = 0;
  for (int64_t s : shape) ok = ok && a.shape(d++) == s;
  if (!ok) throw py::value_error(std::string(name) + ": shape does not match the other arguments");
}

PoolShape pool_shape(const py::array& x, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph,
                     int64_t pw) {
  if (x.ndim() != 4) throw py::value_error("pooling input must be 4-D NHWC");
  if (kh < 1 || kw < 1 || sh < 1 || sw < 1 || ph < 0 || pw < 0 || 2 * ph > kh || 2 * pw > kw)
    throw py::value_error("pooling: invalid kernel, stride or padding");
  PoolShape s{x.shape(0), x.shape(1), x.shape(2), x.shape(3), 0, 0, kh, kw, sh, sw, ph, pw};
  if (s.h + 2 * ph < kh || s.w + 2 * pw < kw) throw py::value_error("pooling: window larger than the input");
  s.oh = (s.h + 2 * ph - kh) / sh + 1;
  s.ow = (s.w + 2 * pw - kw) / sw + 1;
  if (s.h * s.w > INT32_MAX) throw py::value_error("pooling: H * W must fit int32 indices");
  return s;
}

void max_pool2d_forward(const py::array& x, py::array& y, py::object indices, int64_t kh, int64_t kw,
                        int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
  const PoolShape s = pool_shape(x, kh, kw, sh, sw, ph, pw);
  const float* xp = c_float_input(x, "x");
  float* yp = c_float_output(y, "y");
  require_shape(y, {s.n, s.oh, s.ow, s.c}, "y");
  int32_t* ip = nullptr;
  if (!indices.is_none()) {
    auto ind = indices.cast<py::array>();
    if (!py::isinstance<py::array_t<int32_t>>(ind) || ind.dtype().kind() != 'i' || ind.itemsize() != 4)
      throw py::type_error("indices: expected dtype int32");
    if (!(ind.flags() & py::array::c_style) || !ind.writeable())
      throw py::value_error("indices: must be C-contiguous and writeable");
    require_shape(ind, {s.n, s.oh, s.ow, s.c}, "indices");
    ip = static_cast<int32_t*>(ind.mutable_data());
  }
  py::gil_scoped_release release;
  active_pool_kernels().max_forward(s, xp, yp, ip);
}

void max_pool2d_backward(const py::array& gy, const py::array& indices, py::array& gx, int64_t kh,
                         int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
  const PoolShape s = pool_shape(gx, kh, kw, sh, sw, ph, pw);
  const float* gyp = c_float_input(gy, "grad_out");
  float* gxp = c_float_output(gx, "grad_input");
  require_shape(gy, {s.n, s.oh, s.ow, s.c}, "grad_out");
  if (!py::isinstance<py::array_t<int32_t>>(indices) || indices.dtype().kind() != 'i' || indices.itemsize() != 4)
    throw py::type_error("indices: expected dtype int32");
  if (!(indices.flags() & py::array::c_style)) throw py::value_error("indices: must be C-contiguous");
  require_shape(indices, {s.n, s.oh, s.ow, s.c}, "indices");
  const auto* ip = static_cast<const int32_t*>(indices.data());
  int64_t bad;
  {
    py::gil_scoped_release release;
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
  py::gil_scoped_release release;
  active_pool_kernels().avg_forward(s, xp, yp, count_include_pad);
}

void avg_pool2d_backward(const py::array& gy, py::array& gx, int64_t kh, int64_t kw, int64_t sh,
                         int64_t sw, int64_t ph, int64_t pw, bool count_include_pad) {
  const PoolShape s = pool_shape(gx, kh, kw, sh, sw, ph, pw);
  const float* gyp = c_float_input(gy, "grad_out");
  float* gxp = c_float_output(gx, "grad_input");
  require_shape(gy, {s.n, s.oh, s.ow, s.c}, "grad_out");
  py::gil_scoped_release release;
  active_pool_kernels().avg_backward(s, gyp, gxp, count_include_pad);
}

void global_avg_pool2d_forward(const py::array& x, py::array& y) {
  if (x.ndim() != 4) throw py::value_error("global_avg_pool2d: input must be 4-D NHWC");
  const float* xp = c_float_input(x, "x");
  float* yp = c_float_output(y, "y");
  const int64_t n = x.shape(0), hw = x.shape(1) * x.shape(2), c = x.shape(3);
  require_shape(y, {n, c}, "y");
  py::gil_scoped_release release;
  active_pool_kernels().global_avg_forward(xp, yp, n, hw, c);
}

void global_avg_pool2d_backward(const py::array& gy, py::array& gx) {
  if (gx.ndim() != 4) throw py::value_error("global_avg_pool2d_backward: grad_input must be 4-D NHWC");
  const float* gyp = c_float_input(gy, "grad_out");
  float* gxp = c_float_output(gx, "grad_input");
  const int64_t n = gx.shape(0), hw = gx.shape(1) * gx.shape(2), c = gx.shape(3);
  require_shape(gy, {n, c}, "grad_out");
  py::gil_scoped_release release;
  active_pool_kernels().global_avg_backward(gyp, gxp, n, hw, c);
}

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
  py::gil_scoped_release release;
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
  py::gil_scoped_release release;
  active_softmax_kernels().backward(gp, yp, dp, outer, len, inner, log);
}

double softmax_cross_entropy(const py::array& logits, const py::array& labels, float smoothing,
                             float grad_scale, py::object loss_rows, py::object grad) {
  const float* xp = c_float_input(logits, "logits");
  if (logits.ndim() != 2) throw py::value_error("softmax_cross_entropy: logits must be 2-D");
  const int64_t n = logits.shape(0), c = logits.shape(1);
  if (!py::isinstance<py::array_t<int64_t>>(labels) || labels.dtype().kind() != 'i' || labels.itemsize() != 8)
    throw py::type_error("labels: expected dtype int64");
  if (!(labels.flags() & py::array::c_style) || labels.ndim() != 1 || labels.shape(0) != n)
    throw py::value_error("labels: expected a contiguous (N,) array");
  const auto* lp = static_cast<const int64_t*>(labels.data());
  for (int64_t i = 0; i < n; ++i)
    if (lp[i] < 0 || lp[i] >= c) throw py::value_error("labels: value out of range [0, C)");
  float* lr = nullptr;
  float* gp = nullptr;
  if (!loss_rows.is_none()) {
    auto a = loss_rows.cast<py::array>();
    lr = c_float_output(a, "loss");
    require_shape(a, {n}, "loss");
  }
  if (!grad.is_none()) {
    auto a = grad.cast<py::array>();
    gp = c_float_output(a, "grad");
    require_shape(a, {n, c}, "grad");
  }
  if (n == 0) return 0.0;
  py::gil_scoped_release release;
  return active_softmax_kernels().cross_entropy(xp, lp, n, c, smoothing, grad_scale, lr, gp);
}

double bce_with_logits(const py::array& x, const py::array& t, float grad_scale, py::object loss,
                       py::object grad) {
  const float* xp = c_float_input(x, "logits");
  const float* tp = c_float_input(t, "targets");
  require_same_layout(x, t, "bce_with_logits");
  float* lp = nullptr;
  float* gp = nullptr;
  if (!loss.is_none()) {
    auto a = loss.cast<py::array>();
    lp = c_float_output(a, "loss");
    require_same_layout(x, a, "bce_with_logits");
  }
  if (!grad.is_none()) {
    auto a = grad.cast<py::array>();
    gp = c_float_output(a, "grad");
    require_same_layout(x, a, "bce_with_logits");
  }
  const int64_t n = x.size();
  if (n == 0) return 0.0;
  py::gil_scoped_release release;
  return active_softmax_kernels().bce_with_logits(xp, tp, n, grad_scale, lp, gp);
}

// ---- GEMM ----

// Element strides of dimension d; a dimension of size <= 1 is never stepped along, so its stride
// is reported as 1, which lets packing take its unit-stride paths.
int64_t elem_stride(const py::array& x, py::ssize_t d) {
  return x.shape(d) <= 1 ? 1 : x.strides(d) / 4;
}

// True when the GEMM can read x in place: non-negative whole-float strides, and each matrix
// row- or column-major with any leading dimension (a plain array or a transposed view).
bool gemm_readable(const py::array& x) {
  for (py::ssize_t d = 0; d < x.ndim(); ++d)
    if (x.shape(d) > 1 && (x.strides(d) < 0 || x.strides(d) % 4 != 0)) return false;
  const py::ssize_t r = x.ndim() - 2, c = x.ndim() - 1;
  return x.shape(r) <= 1 || x.shape(c) <= 1 || x.strides(c) == 4 || x.strides(r) == 4;
}

// The bytes [first, last] an array spans (empty arrays span nothing).
bool spans_overlap(const py::array& x, const py::array& y) {
  if (x.size() == 0 || y.size() == 0) return false;
  const auto span = [](const py::array& z, intptr_t& lo, intptr_t& hi) {
    lo = hi = reinterpret_cast<intptr_t>(z.data());
    for (py::ssize_t d = 0; d < z.ndim(); ++d) {
      const intptr_t step = static_cast<intptr_t>(z.strides(d)) * (z.shape(d) - 1);
      (step < 0 ? lo : hi) += step;
    }
    hi += z.itemsize() - 1;
  };
  intptr_t xl, xh, yl, yh;
  span(x, xl, xh);
  span(y, yl, yh);
  return xl <= yh && yl <= xh;
}

// What the caller must do before the GEMM can run in place (bits); 0 means it ran.
constexpr int kGemmCopyA = 1, kGemmCopyB = 2, kGemmOutAside = 4;

// out[...] (=|+=) act(a @ b + bias). Shapes: a (M, K) or (B, M, K); b (K, N) or (B, K, N); out
// (M, N) or (B, M, N). fusegrad.ops.matmul has checked shapes and dtypes; this re-checks what
// memory safety needs, and instead of running returns the kGemm* bits when an operand's layout
// cannot be read in place or out overlaps an input, so the caller copies just those.
int gemm(const py::array& a, const py::array& b, py::array& out, const py::object& bias, int code,
         bool accumulate, int path = 0) {
  if (path < 0 || path > 2) throw py::value_error("gemm: path must be 0 (automatic), 1 (packed) or 2 (in place)");
  require_float32(a, "a");
  require_float32(b, "b");
  require_float32(out, "out");
  if (!out.writeable()) throw py::value_error("out: is read-only");
  const auto nd_ok = [](const py::array& x) { return x.ndim() == 2 || x.ndim() == 3; };
  if (!nd_ok(a) || !nd_ok(b) || !nd_ok(out)) throw py::value_error("gemm: operands must be 2-D or 3-D");
  const int ad = static_cast<int>(a.ndim()), bd = static_cast<int>(b.ndim());
  GemmProblem p;
  p.m = a.shape(ad - 2);
  p.k = a.shape(ad - 1);
  p.n = b.shape(bd - 1);
  p.batch = ad == 3 ? a.shape(0) : bd == 3 ? b.shape(0) : 1;
  if (b.shape(bd - 2) != p.k || (ad == 3 && bd == 3 && a.shape(0) != b.shape(0)))
    throw py::value_error("gemm: a and b do not fit");
  const bool out_batched = out.ndim() == 3;
  if (out_batched != (ad == 3 || bd == 3) || (out_batched && out.shape(0) != p.batch) ||
      out.shape(out.ndim() - 2) != p.m || out.shape(out.ndim() - 1) != p.n)
    throw py::value_error("gemm: out has the wrong shape");
  py::array bias_arr;
  if (!bias.is_none()) {
    bias_arr = bias.cast<py::array>();
    p.bias = float_input(bias_arr, "bias");
    if (bias_arr.ndim() != 1 || bias_arr.shape(0) != p.n) throw py::value_error("bias: must have N elements");
  }
  p.act = activation_code(code);
  if (accumulate && (p.bias || p.act != Activation::none))
    throw py::value_error("gemm: accumulate takes no bias or activation");

  int status = 0;
  if (!gemm_readable(a)) status |= kGemmCopyA;
  if (!gemm_readable(b)) status |= kGemmCopyB;
  bool out_ok = true;
  for (py::ssize_t d = 0; d < out.ndim(); ++d)
    if (out.shape(d) > 1 && (out.strides(d) < 0 || out.strides(d) % 4 != 0)) out_ok = false;
  if (p.n > 1 && out.strides(out.ndim() - 1) != 4) out_ok = false;
  if (spans_overlap(out, a) || spans_overlap(out, b) || (p.bias && spans_overlap(out, bias_arr)))
    out_ok = false;
  if (!out_ok) status |= kGemmOutAside;
  if (status) return status;

  p.a = static_cast<const float*>(a.data());
  p.a_rs = elem_stride(a, ad - 2);
  p.a_cs = elem_stride(a, ad - 1);
  p.a_bs = ad == 3 && a.shape(0) > 1 ? a.strides(0) / 4 : 0;
  p.b = static_cast<const float*>(b.data());
  p.b_rs = elem_stride(b, bd - 2);
  p.b_cs = elem_stride(b, bd - 1);
  p.b_bs = bd == 3 && b.shape(0) > 1 ? b.strides(0) / 4 : 0;
  p.c = static_cast<float*>(out.mutable_data());
  p.c_rs = elem_stride(out, out.ndim() - 2);
  p.c_bs = out_batched ? elem_stride(out, 0) : 0;
  p.accumulate = accumulate;
  p.path = static_cast<GemmPath>(path);
  py::gil_scoped_release release;
  active_gemm_kernels().gemm(p);
  return 0;
}

bool is_float32_array(const py::handle& h) {
  return py::isinstance<py::array>(h) && py::isinstance<py::array_t<float>>(h);
}

// The fast path of fusegrad.ops.matmul for the common call: 2-D float32 NumPy operands with
// valid shapes. Returns the result, or None for anything else (other ranks or dtypes, shapes
// that do not fit, an unknown activation (code < 0), odd layouts, out overlapping an input);
// the Python layer then takes its general path, which checks every argument and raises the
// documented errors, so nothing unchecked ever runs. At MLP sizes the product takes a couple
// of microseconds, so the checks of the general path would cost as much as the kernel.
py::object gemm_2d(const py::handle& a_h, const py::handle& b_h, const py::handle& out_h,
                   const py::handle& bias_h, int code, bool accumulate) {
  if (code < 0 || code >= kNumActivations || !is_float32_array(a_h) || !is_float32_array(b_h))
    return py::none();
  const auto a = py::reinterpret_borrow<py::array>(a_h);
  const auto b = py::reinterpret_borrow<py::array>(b_h);
  if (a.ndim() != 2 || b.ndim() != 2 || a.shape(1) != b.shape(0)) return py::none();
  const py::ssize_t m = a.shape(0), n = b.shape(1);
  py::object bias = py::none();
  if (!bias_h.is_none()) {
    if (accumulate || !is_float32_array(bias_h)) return py::none();
    const auto bias_arr = py::reinterpret_borrow<py::array>(bias_h);
    if (bias_arr.ndim() != 1 || bias_arr.shape(0) != n || !is_contiguous(bias_arr)) return py::none();
    bias = bias_arr;
  }
  if (accumulate && (out_h.is_none() || code != 0)) return py::none();
  py::array out;
  if (out_h.is_none()) {
    out = py::array_t<float>({m, n});
  } else {
    if (!is_float32_array(out_h)) return py::none();
    out = py::reinterpret_borrow<py::array>(out_h);
    if (out.ndim() != 2 || out.shape(0) != m || out.shape(1) != n || !out.writeable()) return py::none();
  }
  if (out.size() == 0) return std::move(out);
  if (gemm(a, b, out, bias, code, accumulate) != 0) return py::none();
  return std::move(out);
}

// ---- convolution: NHWC x / gx, HWIO w / gw, NHWC y / gy, all C-contiguous float32 ----
const float* conv_in(const py::array& a, const char* name) {
  require_float32(a, name);
  if (a.ndim() != 4 || !(a.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + ": must be a C-contiguous 4-D array");
  return static_cast<const float*>(a.data());
}

float* conv_out(py::array& a, const char* name) {
  const float* p = conv_in(a, name);
  if (!a.writeable()) throw py::value_error(std::string(name) + ": is read-only");
  return const_cast<float*>(p);
}

// The geometry of image (N,H,W,C), weight (KH,KW,C,CO) and output (N,OH,OW,CO), re-checked so
// that no inconsistent size can make a kernel read or write out of bounds.
ConvShape conv_shape(const py::array& img, const py::array& w, std::array<int64_t, 4> out, int64_t sh, int64_t sw,
                     int64_t dh, int64_t dw, int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  if (sh < 1 || sw < 1 || dh < 1 || dw < 1 || pt < 0 || pb < 0 || pl < 0 || pr < 0)
    throw py::value_error("conv2d: invalid stride, dilation or padding");
  ConvShape s;
  s.n = img.shape(0); s.h = img.shape(1); s.w = img.shape(2); s.c = img.shape(3);
  s.kh = w.shape(0); s.kw = w.shape(1); s.co = w.shape(3);
  s.oh = out[1]; s.ow = out[2];
  s.sh = sh; s.sw = sw; s.dh = dh; s.dw = dw; s.pt = pt; s.pl = pl;
  const int64_t span_h = s.h + pt + pb - (s.kh - 1) * dh - 1, span_w = s.w + pl + pr - (s.kw - 1) * dw - 1;
  if (s.kh < 1 || s.kw < 1 || w.shape(2) != s.c || out[0] != s.n || out[3] != s.co ||
      span_h < 0 || span_w < 0 || s.oh != span_h / sh + 1 || s.ow != span_w / sw + 1)
    throw py::value_error("conv2d: input, weight and output shapes do not fit the geometry");
  return s;
}

ConvShape conv_shape(const py::array& img, const py::array& w, const py::array& out, int64_t sh, int64_t sw,
                     int64_t dh, int64_t dw, int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  return conv_shape(img, w, {out.shape(0), out.shape(1), out.shape(2), out.shape(3)}, sh, sw, dh, dw, pt, pb, pl, pr);
}

void require_disjoint(const py::array& out, std::initializer_list<const py::array*> inputs) {
  for (const py::array* x : inputs)
    if (spans_overlap(out, *x)) throw py::value_error("conv2d: the output overlaps an input");
}

// The optional bias of a conv forward: null, or C_out contiguous float32 values that do not overlap
// y; `holder` keeps the array alive while the kernel runs.
const float* conv_bias(const py::object& bias, int64_t co, const py::array& y, py::array& holder) {
  if (bias.is_none()) return nullptr;
  holder = bias.cast<py::array>();
  require_float32(holder, "bias");
  if (holder.ndim() != 1 || holder.shape(0) != co || !(holder.flags() & py::array::c_style))
    throw py::value_error("bias: must be a contiguous array of C_out elements");
  require_disjoint(y, {&holder});
  return static_cast<const float*>(holder.data());
}

void conv2d_forward(const py::array& x, const py::array& w, const py::object& bias, py::array& y, int64_t sh,
                    int64_t sw, int64_t dh, int64_t dw, int64_t pt, int64_t pb, int64_t pl, int64_t pr, int code) {
  const float* xp = conv_in(x, "x");
  const float* wp = conv_in(w, "w");
  float* yp = conv_out(y, "out");
  const ConvShape s = conv_shape(x, w, y, sh, sw, dh, dw, pt, pb, pl, pr);
  py::array bias_arr;
  const float* bp = conv_bias(bias, s.co, y, bias_arr);
  require_disjoint(y, {&x, &w});
  const Activation act = activation_code(code);
  py::gil_scoped_release release;
  active_conv_kernels().forward(s, xp, wp, bp, act, yp);
}

// conv2d_forward followed by a max pool over pool×pool windows with stride pool: y and indices
// (N, OH/pool, OW/pool, C_out), where OH, OW are the convolution's output size.
void conv2d_forward_max_pool(const py::array& x, const py::array& w, const py::object& bias, py::array& y,
                             py::array& indices, int64_t pool, int64_t sh, int64_t sw, int64_t dh, int64_t dw,
                             int64_t pt, int64_t pb, int64_t pl, int64_t pr, int code, float act_param) {
  const float* xp = conv_in(x, "x");
  const float* wp = conv_in(w, "w");
  float* yp = conv_out(y, "out");
  if (pool < 1) throw py::value_error("conv2d_max_pool2d: pool must be >= 1");
  if (sh < 1 || sw < 1) throw py::value_error("conv2d: invalid stride, dilation or padding");
  // The convolution's own output size; conv_shape re-checks it against the geometry.
  const int64_t oh = (x.shape(1) + pt + pb - (w.shape(0) - 1) * dh - 1) / sh + 1;
  const int64_t ow = (x.shape(2) + pl + pr - (w.shape(1) - 1) * dw - 1) / sw + 1;
  const ConvShape s = conv_shape(x, w, {x.shape(0), oh, ow, w.shape(3)}, sh, sw, dh, dw, pt, pb, pl, pr);
  if (y.shape(0) != s.n || y.shape(1) != s.oh / pool || y.shape(2) != s.ow / pool || y.shape(3) != s.co)
    throw py::value_error("conv2d_max_pool2d: output shape does not fit the geometry");
  if (indices.dtype().kind() != 'i' || indices.itemsize() != 4 || indices.ndim() != 4 ||
      !(indices.flags() & py::array::c_style) || !indices.writeable())
    throw py::value_error("conv2d_max_pool2d: indices must be a writable C-contiguous int32 array");
  for (int d = 0; d < 4; ++d)
    if (indices.shape(d) != y.shape(d)) throw py::value_error("conv2d_max_pool2d: indices shape differs from y");
  py::array bias_arr;
  const float* bp = conv_bias(bias, s.co, y, bias_arr);
  require_disjoint(y, {&x, &w});
  const Activation act = activation_code(code);
  auto* ip = static_cast<int32_t*>(indices.mutable_data());
  py::gil_scoped_release release;
  active_conv_kernels().forward_max_pool(s, xp, wp, bp, act, act_param, pool, yp, ip);
}

void conv2d_backward_input(const py::array& gy, const py::array& w, py::array& gx, int64_t sh, int64_t sw,
                           int64_t dh, int64_t dw, int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  const float* gyp = conv_in(gy, "grad_out");
  const float* wp = conv_in(w, "w");
  float* gxp = conv_out(gx, "grad_input");
  const ConvShape s = conv_shape(gx, w, gy, sh, sw, dh, dw, pt, pb, pl, pr);
  require_disjoint(gx, {&gy, &w});
  py::gil_scoped_release release;
  active_conv_kernels().backward_input(s, gyp, wp, gxp);
}

void conv2d_backward_weight(const py::array& x, const py::array& gy, py::array& gw, int64_t sh, int64_t sw,
                            int64_t dh, int64_t dw, int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  const float* xp = conv_in(x, "x");
  const float* gyp = conv_in(gy, "grad_out");
  float* gwp = conv_out(gw, "grad_weight");
  const ConvShape s = conv_shape(x, gw, gy, sh, sw, dh, dw, pt, pb, pl, pr);
  require_disjoint(gw, {&x, &gy});
  py::gil_scoped_release release;
  active_conv_kernels().backward_weight(s, xp, gyp, gwp);
}

void conv2d_backward_bias(const py::array& gy, py::array& gb) {
  const float* gyp = conv_in(gy, "grad_out");
  require_float32(gb, "grad_bias");
  if (gb.ndim() != 1 || gb.shape(0) != gy.shape(3) || !(gb.flags() & py::array::c_style) || !gb.writeable())
    throw py::value_error("grad_bias: must be a writable contiguous array of C_out elements");
  require_disjoint(gb, {&gy});
  const int64_t rows = gy.shape(0) * gy.shape(1) * gy.shape(2), co = gy.shape(3);
  float* gbp = static_cast<float*>(gb.mutable_data());
  py::gil_scoped_release release;
  active_conv_kernels().backward_bias(gyp, rows, co, gbp);
}

// Any of gx, gw, gb (None where not wanted) from one call: first layers read gy once for all
// of them (cpp/conv: backward_direct).
void conv2d_backward(const py::array& gy, const py::array& x, const py::array& w, const py::object& gx,
                     const py::object& gw, const py::object& gb, int64_t sh, int64_t sw, int64_t dh, int64_t dw,
                     int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  const float* gyp = conv_in(gy, "grad_out");
  const float* xp = conv_in(x, "x");
  const float* wp = conv_in(w, "w");
  const ConvShape s = conv_shape(x, w, gy, sh, sw, dh, dw, pt, pb, pl, pr);
  std::vector<py::array> outs;
  // An output the caller asked for: disjoint from the inputs and from the outputs before it.
  const auto claim = [&](py::array a) {
    require_disjoint(a, {&gy, &x, &w});
    for (const py::array& other : outs)
      if (spans_overlap(a, other)) throw py::value_error("conv2d: two outputs overlap");
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
    require_float32(a, "grad_bias");
    if (a.ndim() != 1 || a.shape(0) != s.co || !(a.flags() & py::array::c_style) || !a.writeable())
      throw py::value_error("grad_bias: must be a writable contiguous array of C_out elements");
    gbp = static_cast<float*>(a.mutable_data());
    claim(a);
  }
  py::gil_scoped_release release;
  active_conv_kernels().backward(s, xp, gyp, wp, gxp, gwp, gbp);
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
  m.def("keep_freed_memory_for_reuse", &keep_freed_memory_for_reuse,
        "Tune the C library's allocator to reuse freed large blocks (see cpp/common/host_memory.h).");

  m.def("activation_forward", &activation_forward, py::arg("kind"), py::arg("x").noconvert(),
        py::arg("out").noconvert(), py::arg("param") = 0.0f);
  m.def("activation_backward", &activation_backward, py::arg("kind"), py::arg("grad_out").noconvert(),
        py::arg("saved").noconvert(), py::arg("out").noconvert(), py::arg("param") = 0.0f);

  register_optim(m);
  m.def("max_pool2d_forward", &max_pool2d_forward, py::arg("x").noconvert(), py::arg("y").noconvert(),
        py::arg("indices"), py::arg("kh"), py::arg("kw"), py::arg("sh"), py::arg("sw"), py::arg("ph"),
        py::arg("pw"));
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

  m.def("softmax_forward", &softmax_forward, py::arg("x").noconvert(), py::arg("out").noconvert(),
        py::arg("axis"), py::arg("log"));
  m.def("softmax_backward", &softmax_backward, py::arg("grad_out").noconvert(), py::arg("y").noconvert(),
        py::arg("out").noconvert(), py::arg("axis"), py::arg("log"));
  m.def("softmax_cross_entropy", &softmax_cross_entropy, py::arg("logits").noconvert(),
        py::arg("labels").noconvert(), py::arg("label_smoothing"), py::arg("grad_scale"),
        py::arg("loss_rows"), py::arg("grad"));
  m.def("bce_with_logits", &bce_with_logits, py::arg("logits").noconvert(), py::arg("targets").noconvert(),
        py::arg("grad_scale"), py::arg("loss"), py::arg("grad"));
  m.def("gemm", &gemm, py::arg("a").noconvert(), py::arg("b").noconvert(), py::arg("out").noconvert(),
        py::arg("bias"), py::arg("activation"), py::arg("accumulate"), py::arg("path") = 0,
        "out (=|+=) act(a @ b + bias); path forces a loop nest (tests). Returns 0, or which operands need a copy first (bits: 1 a, "
        "2 b, 4 out). See fusegrad.ops.matmul.");
  m.def("gemm_2d", &gemm_2d, py::arg("a"), py::arg("b"), py::arg("out"), py::arg("bias"),
        py::arg("activation"), py::arg("accumulate"),
        "Fast path of fusegrad.ops.matmul: the result, or None to take the checked general path.");
  m.def("gemm_config", [] {
    const GemmKernels& g = active_gemm_kernels();
    py::dict d;
    d["mr"] = g.mr; d["nr"] = g.nr; d["mc"] = g.mc; d["kc"] = g.kc; d["nc"] = g.nc;
    return d;
  }, "Micro-tile and cache blocks of the active ISA level's GEMM.");

  m.def("conv2d_forward", &conv2d_forward, py::arg("x").noconvert(), py::arg("w").noconvert(), py::arg("bias"),
        py::arg("out").noconvert(), py::arg("sh"), py::arg("sw"), py::arg("dh"), py::arg("dw"), py::arg("pt"),
        py::arg("pb"), py::arg("pl"), py::arg("pr"), py::arg("activation"));
  m.def("conv2d_forward_max_pool", &conv2d_forward_max_pool, py::arg("x").noconvert(), py::arg("w").noconvert(),
        py::arg("bias"), py::arg("out").noconvert(), py::arg("indices").noconvert(), py::arg("pool"), py::arg("sh"),
        py::arg("sw"), py::arg("dh"), py::arg("dw"), py::arg("pt"), py::arg("pb"), py::arg("pl"), py::arg("pr"),
        py::arg("activation"), py::arg("act_param") = 0.0f);
  m.def("conv2d_backward_input", &conv2d_backward_input, py::arg("grad_out").noconvert(),
        py::arg("w").noconvert(), py::arg("grad_input").noconvert(), py::arg("sh"), py::arg("sw"), py::arg("dh"),
        py::arg("dw"), py::arg("pt"), py::arg("pb"), py::arg("pl"), py::arg("pr"));
  m.def("conv2d_backward_weight", &conv2d_backward_weight, py::arg("x").noconvert(),
        py::arg("grad_out").noconvert(), py::arg("grad_weight").noconvert(), py::arg("sh"), py::arg("sw"),
        py::arg("dh"), py::arg("dw"), py::arg("pt"), py::arg("pb"), py::arg("pl"), py::arg("pr"));
  m.def("conv2d_backward_bias", &conv2d_backward_bias, py::arg("grad_out").noconvert(),
        py::arg("grad_bias").noconvert());
  m.def("conv2d_backward", &conv2d_backward, py::arg("grad_out").noconvert(), py::arg("x").noconvert(),
        py::arg("w").noconvert(), py::arg("grad_input"), py::arg("grad_weight"), py::arg("grad_bias"), py::arg("sh"),
        py::arg("sw"), py::arg("dh"), py::arg("dw"), py::arg("pt"), py::arg("pb"), py::arg("pl"), py::arg("pr"));

  m.def("probe_fma_peak", [](int64_t iterations) {
    if (iterations < 0) throw py::value_error("iterations must be >= 0");
    py::gil_scoped_release release;
    return active_probe_kernels().fma_peak(iterations);
  }, py::arg("iterations"));
}
