// Convolution geometry, compiled once: the output size and the range checks every pass relies on.
#include <cstdint>
#include <stdexcept>
#include <string>

#include "conv/conv.h"

namespace fusegrad {
namespace {

std::string pair(int64_t a, int64_t b) { return "(" + std::to_string(a) + ", " + std::to_string(b) + ")"; }

// a + b, a * b; false when the result does not fit int64.
bool add(int64_t a, int64_t b, int64_t& r) { return !__builtin_add_overflow(a, b, &r); }
bool mul(int64_t a, int64_t b, int64_t& r) { return !__builtin_mul_overflow(a, b, &r); }

// Positions per axis of the padded input: 2^31, far past any image (a 46k x 46k x 1 float32 image
// is already 8 GiB).
constexpr int64_t kMaxExtent = int64_t(1) << 31;

}  // namespace

ConvShape conv_geometry(int64_t n, int64_t h, int64_t w, int64_t c, int64_t kh, int64_t kw, int64_t co, int64_t sh,
                        int64_t sw, int64_t dh, int64_t dw, int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  if (n < 0 || h < 0 || w < 0 || c < 0 || co < 0) throw std::invalid_argument("sizes must be >= 0");
  if (kh < 1 || kw < 1) throw std::invalid_argument("the kernel must have at least one tap in each direction");
  if (sh < 1 || sw < 1) throw std::invalid_argument("stride must be >= 1, got " + pair(sh, sw));
  if (dh < 1 || dw < 1) throw std::invalid_argument("dilation must be >= 1, got " + pair(dh, dw));
  if (pt < 0 || pb < 0 || pl < 0 || pr < 0) throw std::invalid_argument("padding must be >= 0");
  // The dilated kernel's extent and the padded input's, each along one axis.
  int64_t ext_h, ext_w, padded_h, padded_w;
  const bool fits = mul(kh - 1, dh, ext_h) && add(ext_h, 1, ext_h) && mul(kw - 1, dw, ext_w) && add(ext_w, 1, ext_w) &&
                    add(h, pt, padded_h) && add(padded_h, pb, padded_h) && add(w, pl, padded_w) &&
                    add(padded_w, pr, padded_w);
  if (!fits)
    throw std::invalid_argument("kernel " + pair(kh, kw) + ", dilation " + pair(dh, dw) + " and padding " +
                                pair(pt, pb) + ", " + pair(pl, pr) + " overflow 64-bit sizes");
  if (ext_h > padded_h || ext_w > padded_w)
    throw std::invalid_argument("kernel " + pair(kh, kw) + " with dilation " + pair(dh, dw) + " spans " +
                                pair(ext_h, ext_w) + ", larger than the padded input " + pair(padded_h, padded_w));
  // The kernels index padded rows and build per-call tables over output positions and taps with
  // 64-bit arithmetic on these sizes; beyond these bounds those buffers could not exist, so the
  // call is refused here rather than failing to allocate (or overflowing) inside a kernel.
  if (padded_h > kMaxExtent || padded_w > kMaxExtent)
    throw std::invalid_argument("the padded input " + pair(padded_h, padded_w) + " (input " + pair(h, w) +
                                ", padding " + pair(pt, pb) + ", " + pair(pl, pr) + ") is larger than the " +
                                std::to_string(kMaxExtent) + " positions per axis the kernels index");
  ConvShape s;
  s.n = n, s.h = h, s.w = w, s.c = c, s.co = co, s.kh = kh, s.kw = kw;
  s.sh = sh, s.sw = sw, s.dh = dh, s.dw = dw, s.pt = pt, s.pl = pl;
  s.oh = (padded_h - ext_h) / sh + 1;
  s.ow = (padded_w - ext_w) / sw + 1;
  return s;
}

}  // namespace fusegrad
