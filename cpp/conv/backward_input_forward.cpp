// Backward-input at stride 1, run as a forward convolution of gy.
#include <vector>

#include "conv/backward_input.h"
#include "conv/passes.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace conv {

// At stride 1, gx is the forward convolution of gy with the kernel flipped and its two channel
// axes swapped (w'[i][j][co][ci] = w[KH-1-i][KW-1-j][ci][co]) and padding (K-1)*d - p before
// each axis: it runs on the forward's tiles, whose pixel classes skip every tap that falls
// outside gy. Needs that padding to be >= 0 (p within the kernel's reach).
bool backward_input_is_forward(const ConvShape& s) {
  return s.sh == 1 && s.sw == 1 && s.pt <= (s.kh - 1) * s.dh && s.pl <= (s.kw - 1) * s.dw;
}

void backward_input_forward(const ConvShape& s, const float* gy, const float* w, float* gx) {
  const ConvShape as_forward{s.n, s.oh, s.ow, s.co, s.h, s.w, s.c, s.kh, s.kw, 1, 1, s.dh, s.dw,
                             (s.kh - 1) * s.dh - s.pt, (s.kw - 1) * s.dw - s.pl};
  std::vector<float> flipped(static_cast<size_t>(s.kh * s.kw * s.c * s.co));
  for (int64_t i = 0; i < s.kh; ++i)
    for (int64_t j = 0; j < s.kw; ++j) {
      const float* src = w + ((s.kh - 1 - i) * s.kw + (s.kw - 1 - j)) * s.c * s.co;
      float* dst = flipped.data() + (i * s.kw + j) * s.co * s.c;
      for (int64_t ci = 0; ci < s.c; ++ci)
        for (int64_t co = 0; co < s.co; ++co) dst[co * s.c + ci] = src[ci * s.co + co];
    }
  conv_forward(as_forward, gy, flipped.data(), nullptr, Activation::none, gx);
}

}  // namespace conv
}  // namespace FG_ISA_NS
}  // namespace fusegrad
