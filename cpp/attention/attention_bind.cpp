// Bindings of the attention kernels (registered into _cpu by cpp/module.cpp): convert, check,
// release the GIL, call. q, k, v, out, grad_out and the gradients are C-contiguous float32
// (B, H, S, D); the mask is float32, 4-D, each axis of size 1 (broadcast) or full, keys unit-strided.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <string>

#include "attention/attention.h"
#include "common/array_check.h"

namespace py = pybind11;

namespace fusegrad {
namespace {

AttentionProblem problem_of(const py::array& q, const py::array& k, const py::array& v, const py::object& mask,
                            float scale, bool causal, float dropout_p, uint64_t seed) {
  if (q.ndim() != 4 || k.ndim() != 4 || v.ndim() != 4) throw py::value_error("attention: q, k, v must be 4-D");
  AttentionProblem p;
  p.batch = q.shape(0), p.heads = q.shape(1), p.sq = q.shape(2), p.d = q.shape(3);
  p.sk = k.shape(2);
  require_shape(k, {p.batch, p.heads, p.sk, p.d}, "k");
  require_shape(v, {p.batch, p.heads, p.sk, p.d}, "v");
  if (!(dropout_p >= 0.0f && dropout_p < 1.0f)) throw py::value_error("attention: dropout_p must be in [0, 1)");
  p.scale = scale, p.causal = causal, p.dropout_p = dropout_p, p.seed = seed;
  if (!mask.is_none()) {
    auto m = mask.cast<py::array>();
    require_float32(m, "mask");
    if (m.ndim() != 4) throw py::value_error("mask: must be 4-D here");
    const int64_t full[4] = {p.batch, p.heads, p.sq, p.sk};
    int64_t strides[4];
    for (int a = 0; a < 4; ++a) {
      if (m.shape(a) != full[a] && m.shape(a) != 1) throw py::value_error("mask: shape does not broadcast");
      if (m.shape(a) > 1 && (m.strides(a) < 0 || m.strides(a) % 4 != 0))
        throw py::value_error("mask: strides must be non-negative multiples of 4 bytes");
      strides[a] = m.shape(a) == 1 ? 0 : m.strides(a) / 4;
    }
    if (m.shape(3) != p.sk || (p.sk > 1 && strides[3] != 1)) throw py::value_error("mask: keys must be unit-strided");
    p.mask = static_cast<const float*>(m.data());
    p.mask_sb = strides[0], p.mask_sh = strides[1], p.mask_si = strides[2];
  }
  return p;
}

void attention_forward(const py::array& q, const py::array& k, const py::array& v, const py::object& mask,
                       float scale, bool causal, float dropout_p, uint64_t seed, py::array& out, py::array& lse) {
  const float* qp = c_float_input(q, "q");
  const float* kp = c_float_input(k, "k");
  const float* vp = c_float_input(v, "v");
  float* op = c_float_output(out, "out");
  float* lp = c_float_output(lse, "lse");
  const AttentionProblem p = problem_of(q, k, v, mask, scale, causal, dropout_p, seed);
  require_shape(out, {p.batch, p.heads, p.sq, p.d}, "out");
  require_shape(lse, {p.batch, p.heads, p.sq}, "lse");
  require_disjoint(out, {&q, &k, &v}, "attention");
  if (q.size() == 0 || p.d == 0) return;
  const KernelCall kernel_call;
  active_attention_kernels().forward(p, qp, kp, vp, op, lp);
}

void attention_backward(const py::array& q, const py::array& k, const py::array& v, const py::object& mask,
                        float scale, bool causal, float dropout_p, uint64_t seed, const py::array& out,
                        const py::array& lse, const py::array& grad_out, py::array& dq, py::array& dk, py::array& dv) {
  const float* qp = c_float_input(q, "q");
  const float* kp = c_float_input(k, "k");
  const float* vp = c_float_input(v, "v");
  const float* op = c_float_input(out, "out");
  const float* lp = c_float_input(lse, "lse");
  const float* gp = c_float_input(grad_out, "grad_out");
  float* dqp = c_float_output(dq, "dq");
  float* dkp = c_float_output(dk, "dk");
  float* dvp = c_float_output(dv, "dv");
  const AttentionProblem p = problem_of(q, k, v, mask, scale, causal, dropout_p, seed);
  require_shape(out, {p.batch, p.heads, p.sq, p.d}, "out");
  require_shape(grad_out, {p.batch, p.heads, p.sq, p.d}, "grad_out");
  require_shape(lse, {p.batch, p.heads, p.sq}, "lse");
  require_shape(dq, {p.batch, p.heads, p.sq, p.d}, "dq");
  require_shape(dk, {p.batch, p.heads, p.sk, p.d}, "dk");
  require_shape(dv, {p.batch, p.heads, p.sk, p.d}, "dv");
  for (const py::array* g : {&dq, &dk, &dv}) require_disjoint(*g, {&q, &k, &v, &out, &lse, &grad_out}, "attention_backward");
  require_disjoint(dq, {&dk, &dv}, "attention_backward");
  require_disjoint(dk, {&dv}, "attention_backward");
  if (p.batch * p.heads == 0 || p.d == 0) return;
  const KernelCall kernel_call;
  active_attention_kernels().backward(p, qp, kp, vp, op, lp, gp, dqp, dkp, dvp);
}

// Rows of n floats: the array's size / n (n = its last dimension).
int64_t rows_of(const py::array& x) { return x.ndim() == 0 || x.shape(x.ndim() - 1) == 0 ? 0 : x.size() / x.shape(x.ndim() - 1); }

const float* optional_vector(const py::object& o, int64_t n, const char* name) {
  if (o.is_none()) return nullptr;
  auto a = o.cast<py::array>();
  const float* p = c_float_input(a, name);
  require_shape(a, {n}, name);
  return p;
}

float* optional_vector_out(const py::object& o, int64_t n, const char* name) {
  if (o.is_none()) return nullptr;
  auto a = o.cast<py::array>();
  float* p = c_float_output(a, name);
  require_shape(a, {n}, name);
  return p;
}

void layer_norm_forward(const py::array& x, const py::object& w, const py::object& b, float eps, py::array& y,
                        py::array& mean, py::array& rstd) {
  const float* xp = c_float_input(x, "x");
  float* yp = c_float_output(y, "out");
  require_same_layout(x, y, "layer_norm");
  if (x.ndim() < 1) throw py::value_error("layer_norm: x must have at least one dimension");
  const int64_t n = x.shape(x.ndim() - 1), rows = rows_of(x);
  const float* wp = optional_vector(w, n, "weight");
  const float* bp = optional_vector(b, n, "bias");
  float* mp = optional_vector_out(mean, rows, "mean");
  float* rp = optional_vector_out(rstd, rows, "rstd");
  require_disjoint(y, {&x}, "layer_norm");
  if (rows == 0) return;
  const KernelCall kernel_call;
  active_attention_kernels().layer_norm_forward(xp, wp, bp, yp, mp, rp, rows, n, eps);
}

void layer_norm_backward(const py::array& g, const py::array& x, const py::array& mean, const py::array& rstd,
                         const py::object& w, py::array& dx, const py::object& dw, const py::object& db) {
  const float* gp = c_float_input(g, "grad_out");
  const float* xp = c_float_input(x, "x");
  float* dxp = c_float_output(dx, "dx");
  require_same_layout(x, g, "layer_norm_backward");
  require_same_layout(x, dx, "layer_norm_backward");
  if (x.ndim() < 1) throw py::value_error("layer_norm_backward: x must have at least one dimension");
  const int64_t n = x.shape(x.ndim() - 1), rows = rows_of(x);
  const float* mp = optional_vector(mean, rows, "mean");
  const float* rp = optional_vector(rstd, rows, "rstd");
  if (!mp || !rp) throw py::value_error("layer_norm_backward: mean and rstd are required");
  const float* wp = optional_vector(w, n, "weight");
  float* dwp = optional_vector_out(dw, n, "dw");
  float* dbp = optional_vector_out(db, n, "db");
  require_disjoint(dx, {&x, &g}, "layer_norm_backward");
  if (rows == 0) {
    if (dwp) std::fill(dwp, dwp + n, 0.0f);
    if (dbp) std::fill(dbp, dbp + n, 0.0f);
    return;
  }
  const KernelCall kernel_call;
  active_attention_kernels().layer_norm_backward(gp, xp, mp, rp, wp, dxp, dwp, dbp, rows, n);
}

void embedding_backward(const py::array& idx, const py::array& g, int64_t padding_idx, py::array& dw) {
  if (idx.dtype().kind() != 'i' || idx.itemsize() != 8 || !is_c_contiguous(idx))
    throw py::type_error("indices: expected a C-contiguous int64 array");
  const float* gp = c_float_input(g, "grad_out");
  float* wp = c_float_output(dw, "out");
  if (dw.ndim() != 2) throw py::value_error("embedding_backward: out must be 2-D");
  const int64_t vocab = dw.shape(0), dim = dw.shape(1), count = idx.size();
  require_shape(g, {count, dim}, "grad_out");
  const auto* ip = static_cast<const int64_t*>(idx.data());
  for (int64_t i = 0; i < count; ++i)
    if (ip[i] < 0 || ip[i] >= vocab) throw py::value_error("indices: value out of range [0, num_embeddings)");
  const KernelCall kernel_call;
  active_attention_kernels().embedding_backward(ip, count, gp, dim, wp, vocab, padding_idx);
}

}  // namespace

void register_attention(py::module_& m) {
  m.def("attention_forward", &attention_forward, py::arg("q").noconvert(), py::arg("k").noconvert(),
        py::arg("v").noconvert(), py::arg("mask"), py::arg("scale"), py::arg("causal"), py::arg("dropout_p"),
        py::arg("seed"), py::arg("out").noconvert(), py::arg("lse").noconvert());
  m.def("attention_backward", &attention_backward, py::arg("q").noconvert(), py::arg("k").noconvert(),
        py::arg("v").noconvert(), py::arg("mask"), py::arg("scale"), py::arg("causal"), py::arg("dropout_p"),
        py::arg("seed"), py::arg("out").noconvert(), py::arg("lse").noconvert(), py::arg("grad_out").noconvert(),
        py::arg("dq").noconvert(), py::arg("dk").noconvert(), py::arg("dv").noconvert());
  m.def("layer_norm_forward", &layer_norm_forward, py::arg("x").noconvert(), py::arg("weight"), py::arg("bias"),
        py::arg("eps"), py::arg("out").noconvert(), py::arg("mean"), py::arg("rstd"));
  m.def("layer_norm_backward", &layer_norm_backward, py::arg("grad_out").noconvert(), py::arg("x").noconvert(),
        py::arg("mean"), py::arg("rstd"), py::arg("weight"), py::arg("dx").noconvert(), py::arg("dw"),
        py::arg("db"));
  m.def("embedding_backward", &embedding_backward, py::arg("indices").noconvert(), py::arg("grad_out").noconvert(),
        py::arg("padding_idx"), py::arg("out").noconvert());
}

}  // namespace fusegrad
