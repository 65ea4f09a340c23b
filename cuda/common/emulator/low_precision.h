// __half and __nv_bfloat16 (and their pairs) for the emulated build: 16-bit storage, arithmetic in
// float, and CUDA's conversion intrinsics. Conversions from float round to nearest even (the _rn
// forms and the constructors), as on the GPU; NaN becomes the canonical NaN CUDA produces (0x7FFF).
#pragma once
#include <cstdint>
#include <cstring>

#include "common/emulator/vector_types.h"

namespace fusegrad::cuda::emulator {

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t float_to_bf16_rn(float f) {
  const uint32_t u = float_bits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FFF;
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}
inline uint16_t float_to_bf16_rz(float f) {
  const uint32_t u = float_bits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FFF;
  return static_cast<uint16_t>(u >> 16);
}
inline float bf16_to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

inline uint16_t float_to_half_rn(float f) {
  uint32_t x = float_bits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  x &= 0x7FFFFFFFu;
  if (x > 0x7F800000u) return 0x7FFF;                          // NaN
  if (x >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // rounds to infinity (>= 65520)
  if (x < 0x38800000u) {                                       // below 2^-14: subnormal or zero
    if (x <= 0x33000000u) return sign;                         // <= 2^-25 rounds to zero (ties to even)
    const uint32_t e = x >> 23, m = (x & 0x7FFFFFu) | 0x800000u;
    const uint32_t shift = 126 - e;                            // from 24-bit significand to units of 2^-24
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return static_cast<uint16_t>(sign | r);
  }
  uint32_t r = (x - 0x38000000u) >> 13;                        // rebias the exponent from 127 to 15
  const uint32_t rem = x & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;      // a carry into the exponent is right
  return static_cast<uint16_t>(sign | r);
}

inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const int e = (h >> 10) & 0x1F;
  uint32_t m = h & 0x3FFu;
  if (e == 0x1F) return bits_float(sign | 0x7F800000u | (m << 13));  // inf, NaN
  if (e != 0) return bits_float(sign | (static_cast<uint32_t>(e + 112) << 23) | (m << 13));
  if (m == 0) return bits_float(sign);
  int exponent = 1;  // a subnormal: normalise its significand
  while (!(m & 0x400u)) {
    m <<= 1;
    --exponent;
  }
  return bits_float(sign | (static_cast<uint32_t>(exponent + 112) << 23) | ((m & 0x3FFu) << 13));
}

}  // namespace fusegrad::cuda::emulator

#define FG_EMU_HALF_TYPE(T, TO_BITS, FROM_BITS)                                                      \
  struct __attribute__((aligned(2))) T {                                                            \
    unsigned short __x;                                                                             \
    T() = default;                                                                                  \
    T(float f) : __x(::fusegrad::cuda::emulator::TO_BITS(f)) {}                                      \
    T(double d) : T(static_cast<float>(d)) {}                                                       \
    T(int i) : T(static_cast<float>(i)) {}                                                          \
    T(unsigned i) : T(static_cast<float>(i)) {}                                                     \
    T(long long i) : T(static_cast<float>(i)) {}                                                    \
    operator float() const { return ::fusegrad::cuda::emulator::FROM_BITS(__x); }                   \
    T& operator+=(T o) { return *this = T(float(*this) + float(o)); }                               \
    T& operator-=(T o) { return *this = T(float(*this) - float(o)); }                               \
    T& operator*=(T o) { return *this = T(float(*this) * float(o)); }                               \
    T& operator/=(T o) { return *this = T(float(*this) / float(o)); }                               \
  };                                                                                                \
  inline T operator+(T a, T b) { return T(float(a) + float(b)); }                                   \
  inline T operator-(T a, T b) { return T(float(a) - float(b)); }                                   \
  inline T operator*(T a, T b) { return T(float(a) * float(b)); }                                   \
  inline T operator/(T a, T b) { return T(float(a) / float(b)); }                                   \
  inline T operator-(T a) { T r = a; r.__x ^= 0x8000u; return r; }                                  \
  inline bool operator==(T a, T b) { return float(a) == float(b); }                                 \
  inline bool operator!=(T a, T b) { return float(a) != float(b); }                                 \
  inline bool operator<(T a, T b) { return float(a) < float(b); }                                   \
  inline bool operator>(T a, T b) { return float(a) > float(b); }                                   \
  inline bool operator<=(T a, T b) { return float(a) <= float(b); }                                 \
  inline bool operator>=(T a, T b) { return float(a) >= float(b); }

FG_EMU_HALF_TYPE(__half, float_to_half_rn, half_to_float)
FG_EMU_HALF_TYPE(__nv_bfloat16, float_to_bf16_rn, bf16_to_float)
#undef FG_EMU_HALF_TYPE

struct __attribute__((aligned(4))) __half2 {
  __half x, y;
};
struct __attribute__((aligned(4))) __nv_bfloat162 {
  __nv_bfloat16 x, y;
};
typedef __half half;
typedef __half2 half2;
typedef __nv_bfloat16 nv_bfloat16;
typedef __nv_bfloat162 nv_bfloat162;

// --- fp16 --------------------------------------------------------------------------------------
inline __half __float2half(float f) { return __half(f); }
inline __half __float2half_rn(float f) { return __half(f); }
inline float __half2float(__half h) { return float(h); }
inline __half2 __float2half2_rn(float f) { return {__half(f), __half(f)}; }
inline __half2 __floats2half2_rn(float lo, float hi) { return {__half(lo), __half(hi)}; }
inline __half2 __float22half2_rn(float2 v) { return {__half(v.x), __half(v.y)}; }
inline float2 __half22float2(__half2 v) { return {float(v.x), float(v.y)}; }
inline __half2 __halves2half2(__half lo, __half hi) { return {lo, hi}; }
inline __half __low2half(__half2 v) { return v.x; }
inline __half __high2half(__half2 v) { return v.y; }
inline float __low2float(__half2 v) { return float(v.x); }
inline float __high2float(__half2 v) { return float(v.y); }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline short __half_as_short(__half h) { return static_cast<short>(h.__x); }
inline __half __ushort_as_half(unsigned short u) { __half h; h.__x = u; return h; }
inline __half __hadd(__half a, __half b) { return a + b; }
inline __half __hsub(__half a, __half b) { return a - b; }
inline __half __hmul(__half a, __half b) { return a * b; }
inline __half __hdiv(__half a, __half b) { return a / b; }
inline __half __hneg(__half a) { return -a; }
inline __half __hfma(__half a, __half b, __half c) { return __half(float(a) * float(b) + float(c)); }
inline __half __hmax(__half a, __half b) { return float(a) < float(b) ? b : a; }
inline __half __hmin(__half a, __half b) { return float(b) < float(a) ? b : a; }
inline __half2 __hadd2(__half2 a, __half2 b) { return {a.x + b.x, a.y + b.y}; }
inline __half2 __hmul2(__half2 a, __half2 b) { return {a.x * b.x, a.y * b.y}; }
inline __half2 __hfma2(__half2 a, __half2 b, __half2 c) { return {__hfma(a.x, b.x, c.x), __hfma(a.y, b.y, c.y)}; }

// --- bf16 --------------------------------------------------------------------------------------
inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(f); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
inline __nv_bfloat16 __float2bfloat16_rz(float f) {
  __nv_bfloat16 h;
  h.__x = ::fusegrad::cuda::emulator::float_to_bf16_rz(f);
  return h;
}
inline float __bfloat162float(__nv_bfloat16 h) { return float(h); }
inline __nv_bfloat162 __float2bfloat162_rn(float f) { return {__nv_bfloat16(f), __nv_bfloat16(f)}; }
inline __nv_bfloat162 __floats2bfloat162_rn(float lo, float hi) { return {__nv_bfloat16(lo), __nv_bfloat16(hi)}; }
inline __nv_bfloat162 __float22bfloat162_rn(float2 v) { return {__nv_bfloat16(v.x), __nv_bfloat16(v.y)}; }
inline float2 __bfloat1622float2(__nv_bfloat162 v) { return {float(v.x), float(v.y)}; }
inline __nv_bfloat162 __halves2bfloat162(__nv_bfloat16 lo, __nv_bfloat16 hi) { return {lo, hi}; }
inline __nv_bfloat16 __low2bfloat16(__nv_bfloat162 v) { return v.x; }
inline __nv_bfloat16 __high2bfloat16(__nv_bfloat162 v) { return v.y; }
inline float __low2float(__nv_bfloat162 v) { return float(v.x); }
inline float __high2float(__nv_bfloat162 v) { return float(v.y); }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
inline short __bfloat16_as_short(__nv_bfloat16 h) { return static_cast<short>(h.__x); }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { __nv_bfloat16 h; h.__x = u; return h; }
inline __nv_bfloat16 __hadd(__nv_bfloat16 a, __nv_bfloat16 b) { return a + b; }
inline __nv_bfloat16 __hsub(__nv_bfloat16 a, __nv_bfloat16 b) { return a - b; }
inline __nv_bfloat16 __hmul(__nv_bfloat16 a, __nv_bfloat16 b) { return a * b; }
inline __nv_bfloat16 __hneg(__nv_bfloat16 a) { return -a; }
inline __nv_bfloat16 __hfma(__nv_bfloat16 a, __nv_bfloat16 b, __nv_bfloat16 c) {
  return __nv_bfloat16(float(a) * float(b) + float(c));
}
inline __nv_bfloat16 __hmax(__nv_bfloat16 a, __nv_bfloat16 b) { return float(a) < float(b) ? b : a; }
inline __nv_bfloat16 __hmin(__nv_bfloat16 a, __nv_bfloat16 b) { return float(b) < float(a) ? b : a; }
inline __nv_bfloat162 __hadd2(__nv_bfloat162 a, __nv_bfloat162 b) { return {a.x + b.x, a.y + b.y}; }
inline __nv_bfloat162 __hmul2(__nv_bfloat162 a, __nv_bfloat162 b) { return {a.x * b.x, a.y * b.y}; }
inline __nv_bfloat162 __hfma2(__nv_bfloat162 a, __nv_bfloat162 b, __nv_bfloat162 c) {
  return {__hfma(a.x, b.x, c.x), __hfma(a.y, b.y, c.y)};
}
