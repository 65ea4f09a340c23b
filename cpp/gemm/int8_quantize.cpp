// Quantization of float32 activations to uint8: q = clamp(round_half_even(x / scale) + zero_point,
// 0, 255), the step in front of the first int8 layer of a quantized model. A pass over memory: 4
// bytes read and 1 written per value, so it runs near copy speed with SSE2 (the x86-64 baseline;
// this file is compiled once), 16 values a step, on every thread.
#include <algorithm>
#include <cmath>
#include <cstdint>

#if FG_X86
#include <emmintrin.h>
#endif

#include "common/threads.h"
#include "gemm/int8_gemm.h"

namespace fusegrad {
namespace {

// Values per thread chunk: 256 KiB of input, large enough that waking a thread pays.
constexpr int64_t kChunk = 1 << 16;
// x / scale is clamped into [kLow, kHigh] before it becomes an int32, so that huge values and
// infinities saturate instead of wrapping (the conversion of an out-of-range float gives INT_MIN);
// any value outside [-256, 511] maps to 0 or 255 whatever the zero point.
constexpr float kLow = -512.0f, kHigh = 512.0f;

uint8_t quantize_one(float x, float inv_scale, int32_t zero_point) {
  const float scaled = x * inv_scale;
  const float v = std::isnan(scaled) ? kLow : std::min(std::max(scaled, kLow), kHigh);  // as the vector path
  const int32_t q = static_cast<int32_t>(std::nearbyint(v)) + zero_point;
  return static_cast<uint8_t>(std::min(std::max(q, 0), 255));
}

}  // namespace

void quantize_uint8(const float* x, int64_t n, float inv_scale, int32_t zero_point, uint8_t* q) {
  parallel_for(n, kChunk, [&](int64_t begin, int64_t end) {
    int64_t i = begin;
#if FG_X86
    const __m128 inv = _mm_set1_ps(inv_scale), lo = _mm_set1_ps(kLow), hi = _mm_set1_ps(kHigh);
    const __m128i zp = _mm_set1_epi32(zero_point);
    // maxps returns its second operand when either is NaN, so max(v, lo) turns NaN into kLow -> 0.
    auto lane = [&](const float* p) {
      const __m128 v = _mm_min_ps(_mm_max_ps(_mm_mul_ps(_mm_loadu_ps(p), inv), lo), hi);
      return _mm_add_epi32(_mm_cvtps_epi32(v), zp);  // rounds half to even (the default MXCSR mode)
    };
    for (; i + 16 <= end; i += 16) {
      const __m128i a = _mm_packs_epi32(lane(x + i), lane(x + i + 4));
      const __m128i b = _mm_packs_epi32(lane(x + i + 8), lane(x + i + 12));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i), _mm_packus_epi16(a, b));
    }
#endif
    for (; i < end; ++i) q[i] = quantize_one(x[i], inv_scale, zero_point);
  });
}

}  // namespace fusegrad
