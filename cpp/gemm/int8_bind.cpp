// Bindings of the int8 GEMM (registered into _cpu by cpp/module.cpp through register_gemm):
// convert, check, release the GIL, call. fusegrad.ops.quantized_matmul checks every argument
// first; these checks only keep a kernel from ever reading or writing out of bounds.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "common/array_check.h"
#include "gemm/int8_bind.h"
#include "gemm/int8_gemm.h"

namespace py = pybind11;

namespace fusegrad {
namespace {

void require_dtype(const py::array& a, char kind, int size, const char* name, const char* expected) {
  if (a.dtype().kind() != kind || a.itemsize() != size)
    throw py::type_error(std::string(name) + ": expected dtype " + expected + ", got " + std::string(py::str(a.dtype())));
}

Int8PackedWeight pack_weight(const py::array& b) {
  require_dtype(b, 'i', 1, "b", "int8");
  if (b.ndim() != 2) throw py::value_error("b: must be a 2-D (K, N) array");
  const int64_t k = b.shape(0), n = b.shape(1);
  if (k > kInt8MaxK) throw py::value_error("b: K is beyond what an int32 sum holds exactly");
  const auto* data = static_cast<const int8_t*>(b.data());
  const int64_t rs = b.strides(0), cs = b.strides(1);
  const KernelCall kernel_call;
  return int8_pack_weight(data, k, n, rs, cs);
}

Int8Path path_from_code(int code) {
  if (code < 0 || code > 3) throw py::value_error("path: must be 0 (automatic), 1 (generic), 2 (vnni) or 3 (amx)");
  return static_cast<Int8Path>(code);
}

void int8_gemm_call(const py::array& a, const Int8PackedWeight& w, py::array& out, int32_t a_zero_point,
                    const py::object& scale, const py::object& bias, int activation, float inv_out_scale,
                    int32_t out_zero_point, int path) {
  require_dtype(a, 'u', 1, "a", "uint8");
  if (a.ndim() != 2 || a.shape(1) != w.k) throw py::value_error("a: must be (M, K) with K the weight's");
  const int64_t m = a.shape(0);
  if (m > 1 && a.strides(0) < w.k) throw py::value_error("a: rows must not overlap");
  if (w.k > 1 && a.strides(1) != 1) throw py::value_error("a: rows must be contiguous");
  if (out.ndim() != 2 || out.shape(0) != m || out.shape(1) != w.n) throw py::value_error("out: must be (M, N)");
  require_writeable(out, "out");
  const int64_t size = out.itemsize();
  if ((w.n > 1 && out.strides(1) != size) || (m > 1 && (out.strides(0) % size || out.strides(0) < w.n * size)))
    throw py::value_error("out: rows must be contiguous and not overlap");
  require_disjoint(out, {&a}, "quantized_matmul");
  py::array scale_holder, bias_holder;
  Int8GemmProblem p;
  p.epilogue = int8_epilogue(out, w, a_zero_point, scale, bias, activation, inv_out_scale, out_zero_point, scale_holder,
                             bias_holder);
  p.m = m;
  p.a = static_cast<const uint8_t*>(a.data());
  p.lda = m > 1 ? a.strides(0) : w.k;
  p.b = &w;
  p.out = out.mutable_data();
  p.ldo = m > 1 ? out.strides(0) / size : w.n;
  p.path = path_from_code(path);
  const KernelCall kernel_call;
  int8_gemm(p);
}

void quantize_uint8_call(const py::array& x, py::array& q, float inv_scale, int32_t zero_point) {
  const float* xp = c_float_input(x, "x");
  require_dtype(q, 'u', 1, "out", "uint8");
  if (!is_c_contiguous(q) || q.size() != x.size()) throw py::value_error("out: must be C-contiguous, x's size");
  require_writeable(q, "out");
  if (!(zero_point >= 0 && zero_point <= 255)) throw py::value_error("zero_point: must be in [0, 255]");
  const KernelCall kernel_call;
  quantize_uint8(xp, x.size(), inv_scale, zero_point, static_cast<uint8_t*>(q.mutable_data()));
}

}  // namespace

void register_int8_gemm(py::module_& m) {
  py::class_<Int8PackedWeight>(m, "Int8PackedWeight", "An int8 (K, N) weight packed for the int8 GEMM.")
      .def_readonly("k", &Int8PackedWeight::k)
      .def_readonly("n", &Int8PackedWeight::n)
      .def("column_sums", [](const Int8PackedWeight& w) {
        py::array_t<int32_t> s(w.n);
        std::copy(w.colsum.get(), w.colsum.get() + w.n, s.mutable_data());
        return s;
      }, "The int32 sum of each column of B (the zero-point correction's factor).");
  m.def("quantize_uint8", &quantize_uint8_call, py::arg("x").noconvert(), py::arg("out").noconvert(),
        py::arg("inv_scale"), py::arg("zero_point"), "out = clamp(round_half_even(x * inv_scale) + zero_point).");
  m.def("int8_max_k", [] { return kInt8MaxK; }, "The deepest K whose int32 sums are exact.");
  m.def("int8_pack_weight", &pack_weight, py::arg("b"), "Packs an int8 (K, N) array (any strides).");
  m.def("int8_gemm", &int8_gemm_call, py::arg("a"), py::arg("w"), py::arg("out"), py::arg("a_zero_point"),
        py::arg("scale"), py::arg("bias"), py::arg("activation"), py::arg("inv_out_scale"), py::arg("out_zero_point"),
        py::arg("path") = 0,
        "out = epilogue(a @ w) for uint8 a (M, K); out's dtype (int32, float32, uint8, int8) picks the epilogue "
        "(cpp/gemm/int8_gemm.h). path: 0 automatic, 1 generic, 2 vnni, 3 amx.");
  m.def("int8_gemm_path", [](int path) {
    const Int8Path p = path_from_code(path);
    if (!int8_path_usable(p)) return py::object(py::none());
    const Int8Kernels& k = int8_kernels_for(p);
    py::dict d;
    d["name"] = k.name; d["mr"] = k.mr; d["nr"] = k.nr; d["kc"] = k.kc; d["mc"] = k.mc; d["nc"] = k.nc;
    return py::object(d);
  }, py::arg("path") = 0, "The int8 path a call with this path code runs and its blocks, or None when the CPU "
                          "cannot run that path now.");
}

}  // namespace fusegrad
