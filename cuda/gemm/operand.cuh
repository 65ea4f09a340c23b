// GEMM operands as the mainloops see them: a K×L matrix (L = M for A, N for B) that a block
// reads in BK×BL tiles, four elements at a time along the dimension that is contiguous in memory.
//
// An operand type provides
//   static constexpr bool kKContig         whether the four run along k (else along l)
//   Row row(l)                             what the loads at l need that depends on l alone,
//                                          worked out once per thread (a thread's l is fixed)
//   float4 load4(row, z, k, k_end)         elements (k..k+3, l) or (k, l..l+3) of batch item z,
//                                          zeros outside [0, k_end) × [0, L)
// and, for the cp.async mainloop (StridedOperand only),
//   void copy4(dst, z, k, l, k_end)        the same four floats into shared memory at dst
// The convolution operands (cuda/conv/conv_operands.cuh) are gathers with the same interface.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "common/ptx.cuh"

namespace fusegrad::cuda {

// Element (k, l) of batch item z at p[z * sb + k * sk + l * sl], where sk == 1 (kKContig) or
// sl == 1. `vec`: p, the other stride and sb are multiples of 4 floats (p 16-byte aligned), so
// every group of four starting at a multiple of 4 along the contiguous dimension is one 16-byte
// load; otherwise (a misaligned view, an odd leading dimension) each element is loaded alone.
template <bool kKContigT>
struct StridedOperand {
  static constexpr bool kKContig = kKContigT;
  const float* p;
  int64_t sk, sl, sb;
  int64_t extent_l;  // L
  bool vec;

  // How many of the four elements from (k, l) along the contiguous dimension exist (0 to 4).
  __device__ __forceinline__ int count(int64_t k, int64_t l, int64_t k_end) const {
    const bool other = kKContig ? l < extent_l : k < k_end;
    const int64_t left = kKContig ? k_end - k : extent_l - l;
    return other ? static_cast<int>(left < 0 ? 0 : left > 4 ? 4 : left) : 0;
  }

  // Per thread: the address of element (0, l), and, along l, how many of l..l+3 exist.
  struct Row {
    const float* base;
    int live;  // k-contiguous: 4 if l < L, else 0; l-contiguous: min(L - l, 4), at least 0
  };
  __device__ __forceinline__ Row row(int64_t l) const {
    const int64_t left = extent_l - l;
    return {p + l * sl, static_cast<int>(left <= 0 ? 0 : kKContig || left > 4 ? 4 : left)};
  }

  __device__ __forceinline__ float4 load4(const Row& row, int64_t z, int64_t k, int64_t k_end) const {
    float4 r = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    const int64_t left_k = k_end - k;
    const int n = kKContig ? (left_k <= 0 ? 0 : left_k >= 4 ? row.live : static_cast<int>(left_k) * (row.live > 0))
                           : (left_k > 0 ? row.live : 0);
    const float* q = row.base + z * sb + k * sk;
    if (vec && n == 4) return *reinterpret_cast<const float4*>(q);
    if (n > 0) r.x = q[0];
    if (n > 1) r.y = q[1];
    if (n > 2) r.z = q[2];
    if (n > 3) r.w = q[3];
    return r;
  }

  // cp.async of the same four floats (16 contiguous, 16-byte aligned bytes of shared memory at
  // dst): one 16-byte copy when `vec`, zero-filling past the edge; else four 4-byte copies.
  // Missing elements copy nothing from p (src_bytes 0) and are zero-filled.
  __device__ __forceinline__ void copy4(float* dst, int64_t z, int64_t k, int64_t l, int64_t k_end) const {
    const int n = count(k, l, k_end);
    const float* q = n > 0 ? p + z * sb + k * sk + l * sl : p;
    if (vec) {
      ptx::cp_async_cg(dst, q, 4 * n);
    } else {
#pragma unroll
      for (int i = 0; i < 4; ++i) ptx::cp_async_ca<4>(dst + i, i < n ? q + i : p, i < n ? 4 : 0);
    }
  }
};

}  // namespace fusegrad::cuda
