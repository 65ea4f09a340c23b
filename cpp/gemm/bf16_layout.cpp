// Entry of the bf16 GEMM (bf16_gemm.h): views to a problem, the choice of path, and the generic
// path. Compiled once with the baseline flags: it only prepares calls, and its generic path
// rounds the operands here and then runs the active level's fp32 GEMM.
#include <stdexcept>
#include <vector>

#include "common/isa.h"
#include "common/threads.h"
#include "gemm/bf16_gemm.h"
#include "gemm/gemm.h"

namespace fusegrad {
namespace {

int64_t elem_stride(const ArrayView& x, int d) {
  if (x.shape[d] <= 1) return 1;
  if (x.strides[d] % x.itemsize != 0)
    throw std::invalid_argument("gemm_bf16: an operand's strides are not whole elements");
  return x.strides[d] / x.itemsize;
}

Bf16Operand operand(const ArrayView& x) {
  if (x.itemsize != 2 && x.itemsize != 4) throw std::invalid_argument("gemm_bf16: operands must be float32 or bf16");
  Bf16Operand o;
  o.data = x.data;
  o.bf16 = x.itemsize == 2;
  o.rs = elem_stride(x, x.ndim - 2);
  o.cs = elem_stride(x, x.ndim - 1);
  o.bs = x.ndim == 3 && x.shape[0] > 1 ? elem_stride(x, 0) : 0;
  return o;
}

// A bf16 value as the fast paths' instructions read it: subnormals count as zero.
float bf16_value(uint16_t h) { return (h & 0x7f80u) == 0 ? float_from_bf16(h & 0x8000u) : float_from_bf16(h); }

// The operand's matrices (rows × cols each; one when it is shared across the batch) rounded to
// bf16 and held in fp32, row-major and one after another in `buffer`.
const float* rounded_copy(const Bf16Operand& x, int64_t batch, int64_t rows, int64_t cols, std::vector<float>& buffer) {
  const int64_t items = x.bs == 0 ? 1 : batch;
  buffer.resize(static_cast<size_t>(items * rows * cols));
  parallel_for(items * rows, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t t = r / rows, i = r % rows;
      float* dst = buffer.data() + r * cols;
      if (x.bf16) {
        const uint16_t* src = static_cast<const uint16_t*>(x.data) + t * x.bs + i * x.rs;
        for (int64_t j = 0; j < cols; ++j) dst[j] = bf16_value(src[j * x.cs]);
      } else {
        const float* src = static_cast<const float*>(x.data) + t * x.bs + i * x.rs;
        for (int64_t j = 0; j < cols; ++j) dst[j] = float_from_bf16(bf16_from_float(src[j * x.cs]));
      }
    }
  });
  return buffer.data();
}

void gemm_bf16_generic(const Bf16GemmProblem& p) {
  std::vector<float> a_copy, b_copy;
  GemmProblem g;
  g.batch = p.batch;
  g.m = p.m;
  g.n = p.n;
  g.k = p.k;
  g.a = rounded_copy(p.a, p.batch, p.m, p.k, a_copy);
  g.a_rs = p.k;
  g.a_cs = 1;
  g.a_bs = p.a.bs == 0 ? 0 : p.m * p.k;
  g.b = rounded_copy(p.b, p.batch, p.k, p.n, b_copy);
  g.b_rs = p.n;
  g.b_cs = 1;
  g.b_bs = p.b.bs == 0 ? 0 : p.k * p.n;
  g.c = p.c;
  g.c_rs = p.c_rs;
  g.c_bs = p.c_bs;
  g.bias = p.bias;
  g.act = p.act;
  g.act_param = p.act_param;
  g.accumulate = p.accumulate;
  active_gemm_kernels().gemm(g);
}

}  // namespace

Bf16Path bf16_gemm_path() {
  if (cpu_feature_usable(CpuFeature::amx_bf16)) return Bf16Path::amx;
  if (cpu_feature_usable(CpuFeature::avx512_bf16)) return Bf16Path::avx512_bf16;
  return Bf16Path::generic;
}

const char* bf16_path_name(Bf16Path path) {
  switch (path) {
    case Bf16Path::amx: return "amx_bf16";
    case Bf16Path::avx512_bf16: return "avx512_bf16";
    default: return "generic";
  }
}

void gemm_bf16_strided(const ArrayView& a, const ArrayView& b, const ArrayView& out, const ArrayView* bias,
                       Activation act, bool accumulate) {
  if (out.size() == 0) return;
  Bf16GemmProblem p;
  const int ad = a.ndim, bd = b.ndim, cd = out.ndim;
  p.m = a.shape[ad - 2];
  p.k = a.shape[ad - 1];
  p.n = b.shape[bd - 1];
  p.batch = ad == 3 ? a.shape[0] : bd == 3 ? b.shape[0] : 1;
  p.a = operand(a);
  p.b = operand(b);
  p.c = static_cast<float*>(out.data);
  p.c_rs = out.shape[cd - 2] <= 1 ? p.n : out.strides[cd - 2] / 4;
  p.c_bs = cd == 3 ? out.strides[0] / 4 : 0;
  p.bias = bias ? static_cast<const float*>(bias->data) : nullptr;
  p.act = act;
  p.accumulate = accumulate;
  const Bf16Path path = p.k == 0 ? Bf16Path::generic : bf16_gemm_path();  // K = 0: the epilogue alone
#if FG_X86
  if (path == Bf16Path::amx) return isa_avx512_ext::gemm_bf16_amx(p);
  if (path == Bf16Path::avx512_bf16) return isa_avx512_ext::gemm_bf16_avx512(p);
#endif
  gemm_bf16_generic(p);
}

}  // namespace fusegrad
