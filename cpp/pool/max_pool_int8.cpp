// Max pooling of quantized (uint8 / int8) NHWC images. The requantization of a quantized
// convolution is monotone, so pooling its quantized output equals quantizing the pooled real
// output: quantized conv → relu → pool networks stay in int8 throughout. Compiled once: the loop
// over a pixel's channels is a run of byte maxima the compiler vectorises at any level.
#include <algorithm>
#include <cstdint>
#include <limits>

#include "common/threads.h"
#include "pool/pool.h"

namespace fusegrad {
namespace {

template <class T>
void max_pool(const PoolShape& s, const T* x, T* y) {
  parallel_for(s.n * s.oh, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / s.oh, oh = r % s.oh;
      const int64_t h0 = std::max<int64_t>(oh * s.sh - s.ph, 0), h1 = std::min(oh * s.sh - s.ph + s.kh, s.h);
      for (int64_t ow = 0; ow < s.ow; ++ow) {
        const int64_t w0 = std::max<int64_t>(ow * s.sw - s.pw, 0), w1 = std::min(ow * s.sw - s.pw + s.kw, s.w);
        T* out = y + ((n * s.oh + oh) * s.ow + ow) * s.c;
        std::fill(out, out + s.c, std::numeric_limits<T>::min());
        for (int64_t ih = h0; ih < h1; ++ih)
          for (int64_t iw = w0; iw < w1; ++iw) {
            const T* in = x + ((n * s.h + ih) * s.w + iw) * s.c;
            for (int64_t c = 0; c < s.c; ++c) out[c] = std::max(out[c], in[c]);
          }
      }
    }
  });
}

}  // namespace

void max_pool2d_int8(const PoolShape& s, const void* x, void* y, bool is_signed) {
  if (is_signed) max_pool(s, static_cast<const int8_t*>(x), static_cast<int8_t*>(y));
  else max_pool(s, static_cast<const uint8_t*>(x), static_cast<uint8_t*>(y));
}

}  // namespace fusegrad
