// The GEMM's layout policy, in one place: which operand layouts the kernels read in place, and
// what is copied first. Compiled once (not per ISA level): it only prepares views and calls the
// active level's gemm.
#include <algorithm>
#include <cstring>
#include <vector>

#include "gemm/gemm.h"

namespace fusegrad {
namespace {

// Element stride of dimension d; a dimension of size <= 1 is never stepped along, so its stride
// is reported as 1, which lets packing take its unit-stride paths.
int64_t elem_stride(const ArrayView& x, int d) { return x.shape[d] <= 1 ? 1 : x.strides[d] / 4; }

bool whole_float_strides(const ArrayView& x) {
  for (int d = 0; d < x.ndim; ++d)
    if (x.shape[d] > 1 && (x.strides[d] < 0 || x.strides[d] % 4 != 0)) return false;
  return true;
}

// The kernels read an operand in place when each of its matrices is row- or column-major with
// any leading dimension (a plain array or a transposed view), through whole-float strides.
bool readable_in_place(const ArrayView& x) {
  if (!whole_float_strides(x)) return false;
  const int r = x.ndim - 2, c = x.ndim - 1;
  return x.shape[r] <= 1 || x.shape[c] <= 1 || x.strides[c] == 4 || x.strides[r] == 4;
}

// C writes go along rows with unit column stride.
bool writable_in_place(const ArrayView& x) {
  return whole_float_strides(x) && (x.shape[x.ndim - 1] <= 1 || x.strides[x.ndim - 1] == 4);
}

// Visits every element of x in C order as (byte offset from x.data, flat index).
template <class Fn>
void for_each_element(const ArrayView& x, Fn&& fn) {
  int64_t shape[3] = {1, 1, 1}, strides[3] = {0, 0, 0};
  for (int d = 0; d < x.ndim; ++d) shape[3 - x.ndim + d] = x.shape[d], strides[3 - x.ndim + d] = x.strides[d];
  int64_t flat = 0;
  for (int64_t i = 0; i < shape[0]; ++i)
    for (int64_t j = 0; j < shape[1]; ++j)
      for (int64_t k = 0; k < shape[2]; ++k) fn(i * strides[0] + j * strides[1] + k * strides[2], flat++);
}

// A C-order float32 view of x's shape over `buffer` (resized to fit).
ArrayView c_order_view(const ArrayView& x, std::vector<float>& buffer) {
  buffer.resize(static_cast<size_t>(x.size()));
  ArrayView c = x;
  c.data = buffer.data();
  c.itemsize = 4;
  int64_t step = 4;
  for (int d = x.ndim - 1; d >= 0; --d) c.strides[d] = step, step *= x.shape[d];
  return c;
}

// x gathered into `buffer` in C order, as a view of it.
ArrayView contiguous_copy(const ArrayView& x, std::vector<float>& buffer) {
  const ArrayView c = c_order_view(x, buffer);
  const char* base = static_cast<const char*>(x.data);
  for_each_element(x, [&](int64_t off, int64_t i) { std::memcpy(&buffer[i], base + off, 4); });
  return c;
}

void scatter_into(const std::vector<float>& buffer, const ArrayView& x) {
  char* base = static_cast<char*>(x.data);
  for_each_element(x, [&](int64_t off, int64_t i) { std::memcpy(base + off, &buffer[i], 4); });
}

}  // namespace

void gemm_strided(const ArrayView& a_in, const ArrayView& b_in, const ArrayView& out, const ArrayView* bias_in,
                  Activation act, bool accumulate, GemmPath path) {
  if (out.size() == 0) return;
  std::vector<float> a_copy, b_copy, bias_copy, out_copy;
  const ArrayView a = readable_in_place(a_in) ? a_in : contiguous_copy(a_in, a_copy);
  const ArrayView b = readable_in_place(b_in) ? b_in : contiguous_copy(b_in, b_copy);
  const float* bias = nullptr;
  if (bias_in) {
    const bool unit = bias_in->shape[0] <= 1 || bias_in->strides[0] == 4;
    bias = static_cast<const float*>(unit ? bias_in->data : contiguous_copy(*bias_in, bias_copy).data);
  }
  // A result the kernels cannot write along rows, or that shares memory with an operand, is
  // computed aside (starting from out's values when accumulating) and copied in afterwards.
  const bool aside = !writable_in_place(out) || views_overlap(out, a_in) || views_overlap(out, b_in) ||
                     (bias_in && views_overlap(out, *bias_in));
  ArrayView c = out;
  if (aside) c = accumulate ? contiguous_copy(out, out_copy) : c_order_view(out, out_copy);
  const int ad = a.ndim, bd = b.ndim, cd = c.ndim;
  GemmProblem p;
  p.m = a.shape[ad - 2];
  p.k = a.shape[ad - 1];
  p.n = b.shape[bd - 1];
  p.batch = ad == 3 ? a.shape[0] : bd == 3 ? b.shape[0] : 1;
  p.a = static_cast<const float*>(a.data);
  p.a_rs = elem_stride(a, ad - 2);
  p.a_cs = elem_stride(a, ad - 1);
  p.a_bs = ad == 3 && a.shape[0] > 1 ? a.strides[0] / 4 : 0;
  p.b = static_cast<const float*>(b.data);
  p.b_rs = elem_stride(b, bd - 2);
  p.b_cs = elem_stride(b, bd - 1);
  p.b_bs = bd == 3 && b.shape[0] > 1 ? b.strides[0] / 4 : 0;
  p.c = static_cast<float*>(c.data);
  p.c_rs = elem_stride(c, cd - 2);
  p.c_bs = cd == 3 ? elem_stride(c, 0) : 0;
  p.bias = bias;
  p.act = act;
  p.accumulate = accumulate;
  p.path = path;
  active_gemm_kernels().gemm(p);
  if (aside) scatter_into(out_copy, out);
}

}  // namespace fusegrad
