// CUDA's atomics as real host atomics: blocks run concurrently on different OS threads, so an
// atomicAdd from two blocks races exactly as on a GPU. Returns the old value, as CUDA does.
// The _block and _system scopes are the same operation here. Fences are full fences.
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace fusegrad::cuda::emulator {

// Read-modify-write through a compare-and-swap on the value's bits (floats, min/max, inc/dec).
template <class T, class Op>
inline T atomic_update(T* p, Op op) {
  using Bits = std::conditional_t<sizeof(T) == 8, unsigned long long, std::conditional_t<sizeof(T) == 4, unsigned, unsigned short>>;
  static_assert(sizeof(T) == sizeof(Bits));
  Bits* bp = reinterpret_cast<Bits*>(p);
  Bits expected = __atomic_load_n(bp, __ATOMIC_RELAXED);
  for (;;) {
    T old;
    std::memcpy(&old, &expected, sizeof(T));
    const T now = op(old);
    Bits desired;
    std::memcpy(&desired, &now, sizeof(T));
    if (__atomic_compare_exchange_n(bp, &expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) return old;
  }
}

}  // namespace fusegrad::cuda::emulator

#define FG_EMU_ATOMIC_INTEGER(T)                                                                        \
  inline T atomicAdd(T* p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }                 \
  inline T atomicSub(T* p, T v) { return __atomic_fetch_sub(p, v, __ATOMIC_SEQ_CST); }                 \
  inline T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }               \
  inline T atomicAnd(T* p, T v) { return __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); }                 \
  inline T atomicOr(T* p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }                   \
  inline T atomicXor(T* p, T v) { return __atomic_fetch_xor(p, v, __ATOMIC_SEQ_CST); }                 \
  inline T atomicMin(T* p, T v) {                                                                       \
    return ::fusegrad::cuda::emulator::atomic_update(p, [v](T o) { return v < o ? v : o; });           \
  }                                                                                                     \
  inline T atomicMax(T* p, T v) {                                                                       \
    return ::fusegrad::cuda::emulator::atomic_update(p, [v](T o) { return o < v ? v : o; });           \
  }                                                                                                     \
  inline T atomicCAS(T* p, T compare, T v) {                                                            \
    __atomic_compare_exchange_n(p, &compare, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);            \
    return compare;                                                                                     \
  }                                                                                                     \
  inline T atomicAdd_block(T* p, T v) { return atomicAdd(p, v); }                                       \
  inline T atomicAdd_system(T* p, T v) { return atomicAdd(p, v); }                                      \
  inline T atomicCAS_block(T* p, T c, T v) { return atomicCAS(p, c, v); }                               \
  inline T atomicExch_block(T* p, T v) { return atomicExch(p, v); }                                     \
  inline T atomicMax_block(T* p, T v) { return atomicMax(p, v); }                                       \
  inline T atomicMin_block(T* p, T v) { return atomicMin(p, v); }

FG_EMU_ATOMIC_INTEGER(int)
FG_EMU_ATOMIC_INTEGER(unsigned)
FG_EMU_ATOMIC_INTEGER(long long)
FG_EMU_ATOMIC_INTEGER(unsigned long long)
#undef FG_EMU_ATOMIC_INTEGER

inline float atomicAdd(float* p, float v) {
  return ::fusegrad::cuda::emulator::atomic_update(p, [v](float o) { return o + v; });
}
inline double atomicAdd(double* p, double v) {
  return ::fusegrad::cuda::emulator::atomic_update(p, [v](double o) { return o + v; });
}
inline float atomicAdd_block(float* p, float v) { return atomicAdd(p, v); }
inline double atomicAdd_block(double* p, double v) { return atomicAdd(p, v); }
inline float atomicExch(float* p, float v) {
  return ::fusegrad::cuda::emulator::atomic_update(p, [v](float) { return v; });
}
inline unsigned short atomicCAS(unsigned short* p, unsigned short compare, unsigned short v) {
  __atomic_compare_exchange_n(p, &compare, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return compare;
}
// old >= limit ? 0 : old + 1, and old == 0 || old > limit ? limit : old - 1.
inline unsigned atomicInc(unsigned* p, unsigned limit) {
  return ::fusegrad::cuda::emulator::atomic_update(p, [limit](unsigned o) { return o >= limit ? 0u : o + 1; });
}
inline unsigned atomicDec(unsigned* p, unsigned limit) {
  return ::fusegrad::cuda::emulator::atomic_update(p, [limit](unsigned o) { return (o == 0 || o > limit) ? limit : o - 1; });
}

inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_system() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
