// Max pooling of quantized (uint8 / int8) NHWC images. The requantization of a quantized
// convolution is monotone, so pooling its quantized output equals quantizing the pooled real
// output: quantized conv → relu → pool networks stay in int8 throughout.
#include <algorithm>
#include <cstdint>

#if FG_X86
#include <emmintrin.h>
#endif

#include "common/threads.h"
#include "pool/pool.h"

namespace fusegrad {
namespace {

// Bytes of channels per step: one SSE2 register, the baseline every x86-64 has (this file is
// compiled once, at the baseline). Signed bytes are compared as unsigned with the sign bit flipped
// (x ^ 0x80 orders int8 as uint8), so one unsigned-max instruction serves both types.
constexpr int64_t kLane = 16;

template <bool kSigned>
void max_pool(const PoolShape& s, const uint8_t* x, uint8_t* y) {
  const uint8_t flip = kSigned ? 0x80 : 0x00;
  parallel_for(s.n * s.oh, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / s.oh, oh = r % s.oh;
      const int64_t h0 = std::max<int64_t>(oh * s.sh - s.ph, 0), h1 = std::min(oh * s.sh - s.ph + s.kh, s.h);
      for (int64_t ow = 0; ow < s.ow; ++ow) {
        const int64_t w0 = std::max<int64_t>(ow * s.sw - s.pw, 0), w1 = std::min(ow * s.sw - s.pw + s.kw, s.w);
        uint8_t* out = y + ((n * s.oh + oh) * s.ow + ow) * s.c;
        int64_t c = 0;
#if FG_X86
        const __m128i flip16 = _mm_set1_epi8(static_cast<char>(flip));
        for (; c + kLane <= s.c; c += kLane) {
          __m128i acc = _mm_setzero_si128();  // the smallest value, in the flipped order
          for (int64_t ih = h0; ih < h1; ++ih)
            for (int64_t iw = w0; iw < w1; ++iw) {
              const uint8_t* in = x + ((n * s.h + ih) * s.w + iw) * s.c + c;
              acc = _mm_max_epu8(acc, _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in)), flip16));
            }
          _mm_storeu_si128(reinterpret_cast<__m128i*>(out + c), _mm_xor_si128(acc, flip16));
        }
#endif
        for (; c < s.c; ++c) {
          uint8_t acc = 0;
          for (int64_t ih = h0; ih < h1; ++ih)
            for (int64_t iw = w0; iw < w1; ++iw)
              acc = std::max<uint8_t>(acc, x[((n * s.h + ih) * s.w + iw) * s.c + c] ^ flip);
          out[c] = acc ^ flip;
        }
      }
    }
  });
}

}  // namespace

void max_pool2d_int8(const PoolShape& s, const void* x, void* y, bool is_signed) {
  if (is_signed) max_pool<true>(s, static_cast<const uint8_t*>(x), static_cast<uint8_t*>(y));
  else max_pool<false>(s, static_cast<const uint8_t*>(x), static_cast<uint8_t*>(y));
}

}  // namespace fusegrad
