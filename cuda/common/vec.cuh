// Vector access shared by the CUDA families: whether a pointer allows 16-byte accesses, and loads
// and stores of kW consecutive floats or int32s into a register array (kW = 4: one float4 / int4
// access; kW = 1: a scalar), so one kernel body serves the vectorised and the scalar case.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace fusegrad::cuda {

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// The 16-byte vector type of a 4-byte element type.
template <class T> struct Vec4;
template <> struct Vec4<float> { using type = float4; };
template <> struct Vec4<int32_t> { using type = int4; };

template <int kW, class T>
__device__ __forceinline__ void load_vec(const T* p, T (&r)[kW]) {
  if constexpr (kW == 4) {
    const typename Vec4<T>::type a = *reinterpret_cast<const typename Vec4<T>::type*>(p);
    r[0] = a.x, r[1] = a.y, r[2] = a.z, r[3] = a.w;
  } else {
    r[0] = *p;
  }
}

template <int kW, class T>
__device__ __forceinline__ void store_vec(T* p, const T (&r)[kW]) {
  if constexpr (kW == 4) {
    typename Vec4<T>::type a;
    a.x = r[0], a.y = r[1], a.z = r[2], a.w = r[3];
    *reinterpret_cast<typename Vec4<T>::type*>(p) = a;
  } else {
    *p = r[0];
  }
}

}  // namespace fusegrad::cuda
