// Vector access shared by the CUDA families: whether a pointer allows 16-byte accesses, and loads
// and stores of kW consecutive floats or int32s into a register array (kW = 4: one float4 / int4
// access; kW = 1: a scalar), so one kernel body serves the vectorised and the scalar case.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace fusegrad::cuda {

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <int kW>
__device__ __forceinline__ void load_vec(const float* p, float (&r)[kW]) {
  if constexpr (kW == 4) {
    const float4 a = *reinterpret_cast<const float4*>(p);
    r[0] = a.x, r[1] = a.y, r[2] = a.z, r[3] = a.w;
  } else {
    r[0] = *p;
  }
}

template <int kW>
__device__ __forceinline__ void store_vec(float* p, const float (&r)[kW]) {
  if constexpr (kW == 4) *reinterpret_cast<float4*>(p) = make_float4(r[0], r[1], r[2], r[3]);
  else *p = r[0];
}

template <int kW>
__device__ __forceinline__ void load_ivec(const int32_t* p, int32_t (&r)[kW]) {
  if constexpr (kW == 4) {
    const int4 a = *reinterpret_cast<const int4*>(p);
    r[0] = a.x, r[1] = a.y, r[2] = a.z, r[3] = a.w;
  } else {
    r[0] = *p;
  }
}

template <int kW>
__device__ __forceinline__ void store_ivec(int32_t* p, const int32_t (&r)[kW]) {
  if constexpr (kW == 4) *reinterpret_cast<int4*>(p) = make_int4(r[0], r[1], r[2], r[3]);
  else *p = r[0];
}

}  // namespace fusegrad::cuda
