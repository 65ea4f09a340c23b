// Bindings of the CUDA GEMM (registered into _cuda by cuda/module.cu). Arrays arrive as device
// addresses with their strides in elements; fusegrad.ops.matmul has checked dtypes, shapes,
// devices and layouts, these checks are the last guard.
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "common/bind.cuh"
#include "gemm/gemm.cuh"
#include "gemm/int8.cuh"

namespace py = pybind11;

namespace fusegrad {
namespace {

cuda::GemmPrecision precision_of(const std::string& name) {
  if (name == "fp32") return cuda::GemmPrecision::fp32;
  if (name == "tf32") return cuda::GemmPrecision::tf32;
  if (name == "bf16") return cuda::GemmPrecision::bf16;
  throw py::value_error("precision must be 'fp32', 'tf32' or 'bf16', got '" + name + "'");
}

cuda::GemmTiles tiles_of(const std::string& name) {
  if (name == "auto") return cuda::GemmTiles::automatic;
  if (name == "large") return cuda::GemmTiles::large;
  if (name == "small") return cuda::GemmTiles::small;
  if (name == "wgmma") return cuda::GemmTiles::wgmma;
  if (name == "wgmma_wide") return cuda::GemmTiles::wgmma_wide;
  throw py::value_error("tiles must be 'auto', 'large', 'small', 'wgmma' or 'wgmma_wide', got '" + name + "'");
}

}  // namespace

void register_gemm_cuda(py::module_& m) {
  m.def("int8_gemm", [](uintptr_t a, int64_t lda, int64_t m_, int64_t k, uintptr_t bt, uintptr_t colsum, int64_t n,
                        uintptr_t out, int64_t ldo, int out_type, int a_zero_point, uintptr_t scale, uintptr_t bias,
                        int activation, float inv_out_scale, int out_zero_point, const std::string& kernel,
                        uintptr_t stream, int device) {
    if (m_ < 0 || n < 0 || k < 0) throw py::value_error("int8_gemm: sizes must be >= 0");
    if (out_type < 0 || out_type > 3) throw py::value_error("int8_gemm: unknown output type");
    cuda::Int8GemmArgs g;
    g.m = m_, g.n = n, g.k = k;
    g.a = k > 0 && m_ > 0 ? device_ptr<const uint8_t>(a, "a") : nullptr;
    g.lda = lda;
    g.bt = k > 0 && n > 0 ? device_ptr<const int8_t>(bt, "b") : nullptr;
    g.colsum = device_ptr<const int32_t>(colsum, "colsum");
    g.out = device_ptr<void>(out, "out");
    g.ldo = ldo;
    g.out_type = static_cast<cuda::Int8Out>(out_type);
    g.a_zero_point = a_zero_point;
    g.scale = scale != 0 ? reinterpret_cast<const float*>(scale) : nullptr;
    g.bias = bias != 0 ? reinterpret_cast<const float*>(bias) : nullptr;
    if (g.out_type != cuda::Int8Out::s32 && g.scale == nullptr) throw py::value_error("int8_gemm: scales needed");
    const Activation act = activation_from_code(activation);
    if (act != Activation::none && act != Activation::relu)
      throw py::value_error("int8_gemm: the activation is none or relu");
    g.relu = act == Activation::relu;
    g.inv_out_scale = inv_out_scale;
    g.out_zero_point = out_zero_point;
    const cuda::Int8Kernel which = kernel == "auto"   ? cuda::Int8Kernel::automatic
                                   : kernel == "mma"  ? cuda::Int8Kernel::mma
                                   : kernel == "dp4a" ? cuda::Int8Kernel::dp4a
                                                      : throw py::value_error("int8_gemm: kernel must be 'auto', 'mma' or 'dp4a'");
    py::gil_scoped_release release;
    cuda::int8_gemm(g, which, as_stream(stream), device);
  }, py::arg("a"), py::arg("lda"), py::arg("m"), py::arg("k"), py::arg("bt"), py::arg("colsum"), py::arg("n"),
     py::arg("out"), py::arg("ldo"), py::arg("out_type"), py::arg("a_zero_point"), py::arg("scale"), py::arg("bias"),
     py::arg("activation"), py::arg("inv_out_scale"), py::arg("out_zero_point"), py::arg("kernel"), py::arg("stream"),
     py::arg("device"),
     "the int8 GEMM on the device (cuda/gemm/int8.cuh); B given as B^T (N×K int8) with its column sums");
  m.def("quantize_uint8", [](uintptr_t x, int64_t n, uintptr_t q, float inv_scale, int zero_point, uintptr_t stream,
                             int device) {
    if (n < 0) throw py::value_error("quantize_uint8: n must be >= 0");
    if (n == 0) return;
    const float* xp = device_ptr<const float>(x, "x");
    uint8_t* qp = device_ptr<uint8_t>(q, "q");
    py::gil_scoped_release release;
    cuda::quantize_uint8(xp, n, inv_scale, zero_point, qp, as_stream(stream), device);
  }, py::arg("x"), py::arg("n"), py::arg("q"), py::arg("inv_scale"), py::arg("zero_point"), py::arg("stream"),
     py::arg("device"), "uint8 quantization of n floats on the device");
  m.def("gemm_wgmma_usable", [](int device) {
    try {
      cuda::require_wgmma(device);
      return true;
    } catch (...) {  // not built for sm_90a, not a Hopper, or no usable device at all
      return false;
    }
  }, py::arg("device"), "whether gemm(..., tiles='wgmma') can run on the device (sm_90a code built, a Hopper)");
  m.def("gemm", [](uintptr_t a, uintptr_t b, uintptr_t c, uintptr_t bias, int64_t batch, int64_t m_, int64_t n,
                   int64_t k, int64_t a_rs, int64_t a_cs, int64_t a_bs, int64_t b_rs, int64_t b_cs, int64_t b_bs,
                   int64_t c_rs, int64_t c_bs, int code, bool accumulate, const std::string& precision,
                   const std::string& tiles, uintptr_t stream, int device) {
    if (batch < 0 || m_ < 0 || n < 0 || k < 0) throw py::value_error("gemm: sizes must be >= 0");
    if (batch == 0 || m_ == 0 || n == 0) return;
    cuda::GemmArgs g;
    g.batch = batch, g.m = m_, g.n = n, g.k = k;
    g.a = k > 0 ? device_ptr<const float>(a, "a") : nullptr;
    g.b = k > 0 ? device_ptr<const float>(b, "b") : nullptr;
    g.c = device_ptr<float>(c, "c");
    g.bias = bias != 0 ? reinterpret_cast<const float*>(bias) : nullptr;
    g.a_rs = a_rs, g.a_cs = a_cs, g.a_bs = a_bs, g.b_rs = b_rs, g.b_cs = b_cs, g.b_bs = b_bs;
    g.c_rs = c_rs, g.c_bs = c_bs;
    g.act = activation_from_code(code);
    g.accumulate = accumulate;
    const auto p = precision_of(precision);
    const auto t = tiles_of(tiles);
    py::gil_scoped_release release;
    cuda::gemm(g, p, t, as_stream(stream), device);
  }, py::arg("a"), py::arg("b"), py::arg("c"), py::arg("bias"), py::arg("batch"), py::arg("m"), py::arg("n"),
     py::arg("k"), py::arg("a_rs"), py::arg("a_cs"), py::arg("a_bs"), py::arg("b_rs"), py::arg("b_cs"),
     py::arg("b_bs"), py::arg("c_rs"), py::arg("c_bs"), py::arg("activation"), py::arg("accumulate"),
     py::arg("precision"), py::arg("tiles"), py::arg("stream"), py::arg("device"),
     "c (=|+=) act(a @ b + bias) on the device; strides in elements (see cuda/gemm/gemm.cuh)");
}

}  // namespace fusegrad
