// Bindings of the CUDA attention family (registered into _cuda by cuda/module.cu). Arrays arrive as
// device addresses of C-contiguous float32 arrays (int64 for indices); fusegrad.ops.attention has
// checked dtypes, shapes and devices, turned a boolean mask into an additive one and worked out its
// broadcast strides (in elements; 0 broadcasts, the key axis is unit-strided).
#include <pybind11/pybind11.h>

#include <cstdint>

#include "attention/attention.cuh"
#include "common/bind.cuh"

namespace py = pybind11;

namespace fusegrad {
namespace {

cuda::AttentionArgs attention_args(int64_t batch, int64_t heads, int64_t sq, int64_t sk, int64_t d, uintptr_t mask,
                                   py::tuple mask_strides, float scale, bool causal, float dropout_p, uint64_t seed) {
  for (int64_t s : {batch, heads, sq, sk, d})
    if (s < 0) throw py::value_error("attention: sizes must be >= 0");
  if (d > 256) throw py::value_error("attention: the CUDA kernels take head dimensions up to 256");
  if (!(dropout_p >= 0.0f && dropout_p < 1.0f)) throw py::value_error("attention: dropout_p must be in [0, 1)");
  cuda::AttentionArgs a;
  a.batch = batch, a.heads = heads, a.sq = sq, a.sk = sk, a.d = d;
  a.scale = scale, a.causal = causal, a.dropout_p = dropout_p, a.seed = seed;
  a.mask = reinterpret_cast<const float*>(mask);
  if (mask) {
    if (mask_strides.size() != 3) throw py::value_error("attention: mask_strides must be (sb, sh, si)");
    a.mask_sb = mask_strides[0].cast<int64_t>(), a.mask_sh = mask_strides[1].cast<int64_t>();
    a.mask_si = mask_strides[2].cast<int64_t>();
  }
  return a;
}

}  // namespace

void register_attention_cuda(py::module_& m) {
  m.def("attention_forward", [](uintptr_t q, uintptr_t k, uintptr_t v, uintptr_t mask, uintptr_t out, uintptr_t lse,
                                py::tuple mask_strides, int64_t batch, int64_t heads, int64_t sq, int64_t sk, int64_t d,
                                float scale, bool causal, float dropout_p, uint64_t seed, uintptr_t stream,
                                int device) {
    const auto a = attention_args(batch, heads, sq, sk, d, mask, mask_strides, scale, causal, dropout_p, seed);
    if (batch * heads * sq == 0) return;
    const bool keys = sk > 0 && d > 0;
    const float* kp = keys ? device_ptr<const float>(k, "k") : nullptr;
    const float* vp = keys ? device_ptr<const float>(v, "v") : nullptr;
    py::gil_scoped_release release;
    cuda::attention_forward(a, device_ptr<const float>(q, "q"), kp, vp, device_ptr<float>(out, "out"),
                            device_ptr<float>(lse, "lse"), as_stream(stream), device);
  }, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("mask"), py::arg("out"), py::arg("lse"), py::arg("mask_strides"),
     py::arg("batch"), py::arg("heads"), py::arg("sq"), py::arg("sk"), py::arg("d"), py::arg("scale"),
     py::arg("causal"), py::arg("dropout_p"), py::arg("seed"), py::arg("stream"), py::arg("device"),
     "out (B, H, Sq, D) and lse (B, H, Sq); mask 0 for none, else additive float32 with element strides "
     "(sb, sh, si) and unit key stride. Needs 1 <= D <= 256.");

  m.def("attention_backward_workspace", [](int64_t batch, int64_t heads, int64_t sq) {
    cuda::AttentionArgs a;
    a.batch = batch, a.heads = heads, a.sq = sq;
    return cuda::attention_backward_workspace(a);
  }, py::arg("batch"), py::arg("heads"), py::arg("sq"), "float32 elements of workspace attention_backward needs");

  m.def("attention_backward", [](uintptr_t q, uintptr_t k, uintptr_t v, uintptr_t mask, uintptr_t out, uintptr_t lse,
                                 uintptr_t grad_out, uintptr_t dq, uintptr_t dk, uintptr_t dv, uintptr_t workspace,
                                 py::tuple mask_strides, int64_t batch, int64_t heads, int64_t sq, int64_t sk,
                                 int64_t d, float scale, bool causal, float dropout_p, uint64_t seed, uintptr_t stream,
                                 int device) {
    const auto a = attention_args(batch, heads, sq, sk, d, mask, mask_strides, scale, causal, dropout_p, seed);
    if (batch * heads * d == 0 || sq + sk == 0) return;
    const bool queries = sq > 0, keys = sk > 0;
    const auto in = [](bool present, uintptr_t p, const char* name) {
      return present ? device_ptr<const float>(p, name) : nullptr;
    };
    const auto outp = [](bool present, uintptr_t p, const char* name) {
      return present ? device_ptr<float>(p, name) : nullptr;
    };
    const float *qp = in(queries, q, "q"), *op = in(queries, out, "out"), *lp = in(queries, lse, "lse");
    const float *gp = in(queries, grad_out, "grad_out"), *kp = in(keys, k, "k"), *vp = in(keys, v, "v");
    float *dqp = outp(queries, dq, "dq"), *dkp = outp(keys, dk, "dk"), *dvp = outp(keys, dv, "dv");
    float* wp = outp(queries, workspace, "workspace");
    py::gil_scoped_release release;
    cuda::attention_backward(a, qp, kp, vp, op, lp, gp, dqp, dkp, dvp, wp, as_stream(stream), device);
  }, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("mask"), py::arg("out"), py::arg("lse"), py::arg("grad_out"),
     py::arg("dq"), py::arg("dk"), py::arg("dv"), py::arg("workspace"), py::arg("mask_strides"), py::arg("batch"),
     py::arg("heads"), py::arg("sq"), py::arg("sk"), py::arg("d"), py::arg("scale"), py::arg("causal"),
     py::arg("dropout_p"), py::arg("seed"), py::arg("stream"), py::arg("device"),
     "dq, dk, dv (written) from the forward's out and lse; workspace: attention_backward_workspace floats");

  m.def("layer_norm_forward", [](uintptr_t x, uintptr_t w, uintptr_t b, uintptr_t y, uintptr_t mean, uintptr_t rstd,
                                 int64_t rows, int64_t n, float eps, uintptr_t stream, int device) {
    if (rows < 0 || n < 0) throw py::value_error("layer_norm_forward: sizes must be >= 0");
    if (rows == 0) return;
    if (n == 0) throw py::value_error("layer_norm_forward: rows of length 0");
    py::gil_scoped_release release;
    cuda::layer_norm_forward(device_ptr<const float>(x, "x"), reinterpret_cast<const float*>(w),
                             reinterpret_cast<const float*>(b), device_ptr<float>(y, "out"),
                             device_ptr<float>(mean, "mean"), device_ptr<float>(rstd, "rstd"), rows, n, eps,
                             as_stream(stream), device);
  }, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("out"), py::arg("mean"), py::arg("rstd"),
     py::arg("rows"), py::arg("n"), py::arg("eps"), py::arg("stream"), py::arg("device"),
     "weight and bias optional (0)");

  m.def("layer_norm_backward_workspace", [](int64_t rows, int64_t n) {
    if (rows < 0 || n < 0) throw py::value_error("layer_norm_backward_workspace: sizes must be >= 0");
    return cuda::layer_norm_backward_workspace(rows, n);
  }, py::arg("rows"), py::arg("n"), "float32 elements of workspace layer_norm_backward needs for dweight, dbias");

  m.def("layer_norm_backward", [](uintptr_t g, uintptr_t x, uintptr_t mean, uintptr_t rstd, uintptr_t w,
                                  uintptr_t dx, uintptr_t dw, uintptr_t db, uintptr_t workspace, int64_t rows,
                                  int64_t n, uintptr_t stream, int device) {
    if (rows < 0 || n < 0) throw py::value_error("layer_norm_backward: sizes must be >= 0");
    if (n == 0) return;
    const bool any = rows > 0;
    const float* gp = any ? device_ptr<const float>(g, "grad_out") : nullptr;
    const float* xp = any ? device_ptr<const float>(x, "x") : nullptr;
    const float* mp = any ? device_ptr<const float>(mean, "mean") : nullptr;
    const float* rp = any ? device_ptr<const float>(rstd, "rstd") : nullptr;
    float* dxp = any ? device_ptr<float>(dx, "dx") : nullptr;
    float* wp = dw || db ? device_ptr<float>(workspace, "workspace") : nullptr;
    py::gil_scoped_release release;
    cuda::layer_norm_backward(gp, xp, mp, rp, reinterpret_cast<const float*>(w), dxp, reinterpret_cast<float*>(dw),
                              reinterpret_cast<float*>(db), wp, rows, n, as_stream(stream), device);
  }, py::arg("grad_out"), py::arg("x"), py::arg("mean"), py::arg("rstd"), py::arg("weight"), py::arg("dx"),
     py::arg("dweight"), py::arg("dbias"), py::arg("workspace"), py::arg("rows"), py::arg("n"), py::arg("stream"),
     py::arg("device"), "weight, dweight, dbias optional (0); workspace (layer_norm_backward_workspace floats) "
     "needed with dweight or dbias");

  m.def("embedding_backward", [](uintptr_t idx, uintptr_t g, uintptr_t dw, int64_t count, int64_t dim, int64_t vocab,
                                 int64_t padding_idx, uintptr_t stream, int device) {
    if (count < 0 || dim < 0 || vocab < 0) throw py::value_error("embedding_backward: sizes must be >= 0");
    if (vocab * dim == 0) return;
    const bool any = count > 0;
    const int64_t* ip = any ? device_ptr<const int64_t>(idx, "indices") : nullptr;
    const float* gp = any ? device_ptr<const float>(g, "grad_out") : nullptr;
    py::gil_scoped_release release;
    cuda::embedding_backward(ip, count, gp, dim, device_ptr<float>(dw, "out"), vocab, padding_idx, as_stream(stream),
                             device);
  }, py::arg("indices"), py::arg("grad_out"), py::arg("out"), py::arg("count"), py::arg("dim"), py::arg("vocab"),
     py::arg("padding_idx"), py::arg("stream"), py::arg("device"),
     "indices int64 in [0, vocab) (checked by the caller); padding_idx < 0 for none");
}

}  // namespace fusegrad
