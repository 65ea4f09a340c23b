// Pooling geometry, compiled once: the output size by PyTorch's floor or ceil rule.
#include <cstdint>
#include <stdexcept>
#include <string>

#include "pool/pool.h"
#include "pool/pool_size.h"

namespace fusegrad {
namespace {

std::string pair(int64_t a, int64_t b) { return "(" + std::to_string(a) + ", " + std::to_string(b) + ")"; }

}  // namespace

PoolShape pool_geometry(int64_t n, int64_t h, int64_t w, int64_t c, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                        int64_t ph, int64_t pw, int64_t dh, int64_t dw, bool ceil_mode) {
  if (n < 0 || h < 0 || w < 0 || c < 0) throw std::invalid_argument("input sizes must be >= 0");
  if (kh < 1 || kw < 1) throw std::invalid_argument("kernel_size must be >= 1, got " + pair(kh, kw));
  if (sh < 1 || sw < 1) throw std::invalid_argument("stride must be >= 1, got " + pair(sh, sw));
  if (dh < 1 || dw < 1) throw std::invalid_argument("dilation must be >= 1, got " + pair(dh, dw));
  if (ph < 0 || pw < 0) throw std::invalid_argument("padding must be >= 0, got " + pair(ph, pw));
  if (2 * ph > kh || 2 * pw > kw)
    throw std::invalid_argument("padding " + pair(ph, pw) + " must be at most half of kernel_size " + pair(kh, kw));
  // The dilated window's extent; below 2^61, so the padded sizes and the output formula stay in int64.
  int64_t eh, ew;
  if (__builtin_mul_overflow(dh, kh - 1, &eh) || __builtin_mul_overflow(dw, kw - 1, &ew) || eh >= (int64_t(1) << 61) ||
      ew >= (int64_t(1) << 61))
    throw std::invalid_argument("kernel_size " + pair(kh, kw) + " with dilation " + pair(dh, dw) + " is too large");
  eh += 1, ew += 1;
  if (h + 2 * ph < eh || w + 2 * pw < ew)
    throw std::invalid_argument("pool window " + pair(kh, kw) + (dh * dw > 1 ? " dilated to " + pair(eh, ew) : "") +
                                " is larger than the padded input " + pair(h + 2 * ph, w + 2 * pw));
  if (h * w > INT32_MAX)
    throw std::invalid_argument("H * W = " + std::to_string(h * w) + " does not fit the int32 indices");
  PoolShape s{n, h, w, c, 0, 0, kh, kw, sh, sw, ph, pw, dh, dw};
  s.oh = pooled_size(h, kh, sh, ph, dh, ceil_mode);
  s.ow = pooled_size(w, kw, sw, pw, dw, ceil_mode);
  return s;
}

}  // namespace fusegrad
