// Bindings of the bf16 GEMM (registered into _cpu by cpp/module.cpp): convert, check, release
// the GIL, call. fusegrad.ops.matmul(precision="bf16") has checked everything with its own
// messages; these checks are the last guard before memory reaches a kernel.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "common/array_check.h"
#include "gemm/bf16_gemm.h"

namespace py = pybind11;

namespace fusegrad {
namespace {

// float32, or a 2-byte type taken as bf16 bit patterns (ml_dtypes.bfloat16 arrays arrive as uint16 views).
void require_operand(const py::array& x, const char* name) {
  const char kind = x.dtype().kind();
  const bool f32 = kind == 'f' && x.itemsize() == 4, b16 = kind == 'u' && x.itemsize() == 2;
  if (!f32 && !b16) throw py::type_error(std::string(name) + ": expected float32 or bf16 bits (uint16)");
  if (x.ndim() < 2 || x.ndim() > 3) throw py::value_error(std::string(name) + ": expected a 2-D or 3-D array");
  for (py::ssize_t d = 0; d < x.ndim(); ++d)
    if (x.shape(d) > 1 && x.strides(d) % x.itemsize() != 0)
      throw py::value_error(std::string(name) + ": strides must be whole elements");
}

void gemm_bf16(const py::array& a, const py::array& b, py::array& out, const py::object& bias_obj, int code,
               bool accumulate) {
  require_operand(a, "a");
  require_operand(b, "b");
  require_float32(out, "out");
  require_writeable(out, "out");
  if (code < 0 || code >= kNumActivations) throw py::value_error("gemm_bf16: unknown activation code");
  const py::ssize_t ad = a.ndim(), bd = b.ndim();
  const py::ssize_t m = a.shape(ad - 2), k = a.shape(ad - 1), n = b.shape(bd - 1);
  const bool batched = ad == 3 || bd == 3;
  const py::ssize_t batch = ad == 3 ? a.shape(0) : bd == 3 ? b.shape(0) : 1;
  if (b.shape(bd - 2) != k || (ad == 3 && bd == 3 && a.shape(0) != b.shape(0)))
    throw py::value_error("gemm_bf16: operand shapes do not fit");
  if (batched) require_shape(out, {batch, m, n}, "out");
  else require_shape(out, {m, n}, "out");
  if (!is_c_contiguous(out)) throw py::value_error("out: must be C-contiguous");
  ArrayView bias_view;
  const bool has_bias = !bias_obj.is_none();
  if (has_bias) {
    const auto bias = bias_obj.cast<py::array>();
    c_float_input(bias, "bias");
    require_shape(bias, {n}, "bias");
    bias_view = view_of(bias);
  }
  if (accumulate && (has_bias || code != 0)) throw py::value_error("gemm_bf16: accumulate takes no epilogue");
  const ArrayView av = view_of(a), bv = view_of(b), ov = view_of(out);
  if (views_overlap(ov, av) || views_overlap(ov, bv) || (has_bias && views_overlap(ov, bias_view)))
    throw py::value_error("out: overlaps an input");
  const KernelCall kernel_call;
  gemm_bf16_strided(av, bv, ov, has_bias ? &bias_view : nullptr, static_cast<Activation>(code), accumulate);
}

}  // namespace

void register_gemm_bf16(py::module_& m) {
  m.def("gemm_bf16", &gemm_bf16, py::arg("a"), py::arg("b"), py::arg("out"), py::arg("bias"), py::arg("activation"),
        py::arg("accumulate"),
        "out (=|+=) act(a @ b + bias) with a and b rounded to bf16 (or given as bf16 bits, uint16), fp32 "
        "accumulation; out C-contiguous float32. fusegrad.ops.matmul(precision='bf16') checks the arguments.");
  m.def("gemm_bf16_path", [] { return std::string(bf16_path_name(bf16_gemm_path())); },
        "The path the bf16 GEMM takes now: 'amx_bf16', 'avx512_bf16' or 'generic'.");
}

}  // namespace fusegrad
