// The _cpu module: argument checks and calls, nothing else. Kernels run with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "activation/activation.h"
#include "common/array_check.h"
#include "common/isa.h"
#include "common/probe.h"
#include "common/threads.h"
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

  m.def("probe_fma_peak", [](int64_t iterations) {
    if (iterations < 0) throw py::value_error("iterations must be >= 0");
    py::gil_scoped_release release;
    return active_probe_kernels().fma_peak(iterations);
  }, py::arg("iterations"));
}
