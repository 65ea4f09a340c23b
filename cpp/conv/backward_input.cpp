// Backward-input: which of the four forms (backward_input.h) runs a call, and the call itself.
#include <algorithm>
#include <cstring>

#include "conv/backward_input.h"
#include "conv/blocking.h"
#include "conv/geometry.h"
#include "conv/passes.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace conv {
namespace {

// Useful fraction of the FMAs each backward-input form would run; true where the scatter form's
// is the larger. The phase form computes every (input pixel, phase tap) pair, including those
// whose output pixel lies outside gy (a border that is large for small images: 44% useful for
// 6x6 -> 4x4), and fills C_in of each NR-wide panel. Run as a forward (stride 1), it skips the
// border, but only pays off when the interior is large enough (kInteriorForForward). The scatter
// form wastes only the padding of K = KH*KW*C_in to whole panels, but adds its patch gradients
// into gx afterwards (kScatterOverhead) and splits threads by images only.
bool use_scatter_backward_input(const ConvShape& s) {
  // Along one axis: (input position, tap) pairs with the output inside, pairs the phase form
  // computes, and input positions with every tap inside.
  const auto axis = [](int64_t in, int64_t out, int64_t k, int64_t stride, int64_t dil, int64_t pad,
                       double& valid_pairs, double& computed_pairs, double& interior) {
    valid_pairs = computed_pairs = interior = 0;
    for (int64_t i = 0; i < k; ++i)
      for (int64_t o = 0; o < out; ++o) valid_pairs += tap_inside(o, i, stride, pad, dil, in);
    for (int64_t phase = 0; phase < std::min(stride, in); ++phase) {
      int64_t taps = 0;
      for (int64_t i = 0; i < k; ++i) taps += pos_mod(phase + pad - i * dil, stride) == 0;
      computed_pairs += double(ceil_div(in - phase, stride)) * double(taps);
    }
    for (int64_t x = 0; x < in; ++x) {
      bool all = true;
      for (int64_t i = 0; i < k; ++i) all &= x + pad - i * dil >= 0 && x + pad - i * dil < out * stride;
      interior += all;
    }
  };
  double valid_pairs_h, computed_pairs_h, interior_rows, valid_pairs_w, computed_pairs_w, interior_cols;
  axis(s.h, s.oh, s.kh, s.sh, s.dh, s.pt, valid_pairs_h, computed_pairs_h, interior_rows);
  axis(s.w, s.ow, s.kw, s.sw, s.dw, s.pl, valid_pairs_w, computed_pairs_w, interior_cols);
  const bool forward =
      backward_input_is_forward(s) && interior_rows * interior_cols >= kInteriorForForward * double(s.h * s.w);
  const double computed_pairs = computed_pairs_h * computed_pairs_w;
  const double border = forward || computed_pairs == 0 ? 1.0 : valid_pairs_h * valid_pairs_w / computed_pairs;
  const double phase = border * double(s.c) / double(ceil_div(s.c, kNR) * kNR);
  const int64_t k = s.kh * s.kw * s.c;
  const double threads = get_num_threads();
  const double scatter = kScatterOverhead * double(k) / double(ceil_div(k, kNR) * kNR) *
                         std::min(1.0, double(s.n) / threads);
  return scatter > phase;
}

}  // namespace

void conv_backward_input(const ConvShape& s, const float* gy, const float* w, float* gx) {
  if (s.n == 0 || s.h == 0 || s.w == 0 || s.c == 0) return;
  if (s.oh * s.ow == 0 || s.co == 0) {
    std::memset(gx, 0, static_cast<size_t>(s.n * s.h * s.w * s.c) * sizeof(float));
    return;
  }
  if (s.c <= kDirectMaxCin && s.sh == 1 && s.sw == 1) backward_input_gather(s, gy, w, gx);
  else if (use_scatter_backward_input(s)) backward_input_scatter(s, gy, w, gx);
  else if (backward_input_is_forward(s)) backward_input_forward(s, gy, w, gx);
  else backward_input_phases(s, gy, w, gx);
}

}  // namespace conv
}  // namespace FG_ISA_NS
}  // namespace fusegrad
