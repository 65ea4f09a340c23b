// What the GEMM kernel files share on the host: GemmArgs turned into the mainloops' operands and
// epilogue, the dispatch over the four layouts of A and B, and the shared-memory opt-in.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <mutex>
#include <set>
#include <type_traits>
#include <utility>

#include "common/cuda_check.cuh"
#include "common/vec.cuh"
#include "gemm/epilogue.cuh"
#include "gemm/gemm.cuh"
#include "gemm/operand.cuh"

namespace fusegrad::cuda {

// A as a K×M operand: k-contiguous when A is row-major (a_cs == 1).
template <bool kAK>
StridedOperand<kAK> gemm_operand_a(const GemmArgs& g) {
  const int64_t other = kAK ? g.a_rs : g.a_cs;
  return {g.a, g.a_cs, g.a_rs, g.a_bs, g.m, aligned16(g.a) && other % 4 == 0 && g.a_bs % 4 == 0};
}
// B as a K×N operand: k-contiguous when B is column-major (b_rs == 1).
template <bool kBK>
StridedOperand<kBK> gemm_operand_b(const GemmArgs& g) {
  const int64_t other = kBK ? g.b_cs : g.b_rs;
  return {g.b, g.b_rs, g.b_cs, g.b_bs, g.n, aligned16(g.b) && other % 4 == 0 && g.b_bs % 4 == 0};
}

inline Epilogue gemm_epilogue(const GemmArgs& g) {
  Epilogue e;
  e.c = g.c, e.c_rs = g.c_rs, e.c_bs = g.c_bs, e.bias = g.bias, e.act = g.act, e.act_param = g.act_param;
  e.accumulate = g.accumulate, e.vec = store_width(g.c, g.c_rs, g.c_bs), e.rows = g.m, e.cols = g.n;
  return e;
}

// fn(std::bool_constant<A k-contiguous>, std::bool_constant<B k-contiguous>): row-major A and
// row-major B are the preferred readings when a stride is unit both ways (a single row/column).
template <class Fn>
void with_gemm_layouts(const GemmArgs& g, Fn&& fn) {
  const bool ak = g.a_cs == 1, bk = g.b_cs != 1;
  if (ak && bk) fn(std::true_type{}, std::true_type{});
  else if (ak) fn(std::true_type{}, std::false_type{});
  else if (bk) fn(std::false_type{}, std::true_type{});
  else fn(std::false_type{}, std::false_type{});
}

// Raises a kernel's dynamic shared memory limit to `bytes` on `device`, once per kernel and device
// (kernels over the default 48 KiB must opt in before their first launch).
inline void allow_dynamic_smem(const void* kernel, int bytes, int device) {
  static std::mutex mutex;
  static std::set<std::pair<const void*, int>> done;
  std::lock_guard<std::mutex> lock(mutex);
  if (done.count({kernel, device})) return;
  FG_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  done.insert({kernel, device});
}

}  // namespace fusegrad::cuda
