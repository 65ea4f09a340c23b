// Bindings of the GEMM (registered into _cpu by cpp/module.cpp): convert, check, release the GIL,
// call. The layout policy (what is read in place, what is copied) is gemm_strided's.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "common/array_check.h"
#include "gemm/gemm.h"

namespace py = pybind11;

namespace fusegrad {
namespace {

// A float32 numpy.ndarray itself: subclasses (the emulated CUDA device's arrays among them) are
// left to fusegrad.ops.matmul's dispatch.
bool is_float32_array(const py::handle& h) {
  const auto& api = py::detail::npy_api::get();
  return Py_TYPE(h.ptr()) == api.PyArray_Type_ &&
         py::isinstance<py::array_t<float>>(h) && py::reinterpret_borrow<py::array>(h).itemsize() == 4;
}

// out (=|+=) act(a @ b + bias) on NumPy float32 arrays: a (M, K) or (B, M, K), b (K, N) or
// (B, K, N), bias (N,) or None, out (M, N) / (B, M, N) or None (then allocated). Returns out, or
// None when the arguments are not the CPU kernel's (other types or dtypes, shapes that do not fit,
// an unknown activation code, accumulate without out or with an epilogue, a read-only out):
// fusegrad.ops.matmul then checks them and raises the documented error. One call does both,
// because at MLP sizes the product takes a couple of microseconds and Python-side checks would
// cost as much.
py::object gemm(const py::handle& a_h, const py::handle& b_h, const py::handle& out_h, const py::handle& bias_h,
                int code, bool accumulate, int path) {
  if (code < 0 || code >= kNumActivations || path < 0 || path > 2) return py::none();
  if (!is_float32_array(a_h) || !is_float32_array(b_h)) return py::none();
  const auto a = py::reinterpret_borrow<py::array>(a_h);
  const auto b = py::reinterpret_borrow<py::array>(b_h);
  const py::ssize_t ad = a.ndim(), bd = b.ndim();
  if (ad < 2 || ad > 3 || bd < 2 || bd > 3) return py::none();
  const py::ssize_t m = a.shape(ad - 2), k = a.shape(ad - 1), n = b.shape(bd - 1);
  if (b.shape(bd - 2) != k || (ad == 3 && bd == 3 && a.shape(0) != b.shape(0))) return py::none();
  const bool batched = ad == 3 || bd == 3;
  const py::ssize_t batch = ad == 3 ? a.shape(0) : bd == 3 ? b.shape(0) : 1;
  const Activation act = static_cast<Activation>(code);
  const bool has_bias = !bias_h.is_none();
  ArrayView bias_view;
  if (has_bias) {
    if (!is_float32_array(bias_h)) return py::none();
    const auto bias = py::reinterpret_borrow<py::array>(bias_h);
    if (bias.ndim() != 1 || bias.shape(0) != n) return py::none();
    bias_view = view_of(bias);
  }
  if (accumulate && (out_h.is_none() || has_bias || act != Activation::none)) return py::none();
  py::array out;
  if (out_h.is_none()) {
    out = batched ? py::array_t<float>({batch, m, n}) : py::array_t<float>({m, n});
  } else {
    if (!is_float32_array(out_h)) return py::none();
    out = py::reinterpret_borrow<py::array>(out_h);
    const bool fits = out.ndim() == (batched ? 3 : 2) && (!batched || out.shape(0) == batch) &&
                      out.shape(out.ndim() - 2) == m && out.shape(out.ndim() - 1) == n;
    if (!fits || !out.writeable()) return py::none();
  }
  const ArrayView av = view_of(a), bv = view_of(b), ov = view_of(out);
  {
    const KernelCall kernel_call;
    gemm_strided(av, bv, ov, has_bias ? &bias_view : nullptr, act, accumulate, static_cast<GemmPath>(path));
  }
  return std::move(out);
}

}  // namespace

void register_gemm(py::module_& m) {
  m.def("gemm", &gemm, py::arg("a"), py::arg("b"), py::arg("out"), py::arg("bias"), py::arg("activation"),
        py::arg("accumulate"), py::arg("path") = 0,
        "out (=|+=) act(a @ b + bias); returns out, or None for arguments that are not the CPU kernel's "
        "(fusegrad.ops.matmul checks those). path forces a loop nest (0 automatic, 1 packed, 2 in place).");
  m.def("gemm_config", [] {
    const GemmKernels& g = active_gemm_kernels();
    py::dict d;
    d["mr"] = g.mr; d["nr"] = g.nr; d["mc"] = g.mc; d["kc"] = g.kc; d["nc"] = g.nc;
    return d;
  }, "Micro-tile and cache blocks of the active ISA level's GEMM.");
}

}  // namespace fusegrad
