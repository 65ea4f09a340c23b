// Pooling geometry, compiled once: the output size by PyTorch's floor rule (ceil_mode=False).
#include <cstdint>
#include <stdexcept>
#include <string>

#include "pool/pool.h"

namespace fusegrad {
namespace {

std::string pair(int64_t a, int64_t b) { return "(" + std::to_string(a) + ", " + std::to_string(b) + ")"; }

}  // namespace

PoolShape pool_geometry(int64_t n, int64_t h, int64_t w, int64_t c, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                        int64_t ph, int64_t pw) {
  if (n < 0 || h < 0 || w < 0 || c < 0) throw std::invalid_argument("input sizes must be >= 0");
  if (kh < 1 || kw < 1) throw std::invalid_argument("kernel_size must be >= 1, got " + pair(kh, kw));
  if (sh < 1 || sw < 1) throw std::invalid_argument("stride must be >= 1, got " + pair(sh, sw));
  if (ph < 0 || pw < 0) throw std::invalid_argument("padding must be >= 0, got " + pair(ph, pw));
  if (2 * ph > kh || 2 * pw > kw)
    throw std::invalid_argument("padding " + pair(ph, pw) + " must be at most half of kernel_size " + pair(kh, kw));
  if (h + 2 * ph < kh || w + 2 * pw < kw)
    throw std::invalid_argument("pool window " + pair(kh, kw) + " is larger than the padded input " +
                                pair(h + 2 * ph, w + 2 * pw));
  if (h * w > INT32_MAX)
    throw std::invalid_argument("H * W = " + std::to_string(h * w) + " does not fit the int32 indices");
  PoolShape s{n, h, w, c, 0, 0, kh, kw, sh, sw, ph, pw};
  s.oh = (h + 2 * ph - kh) / sh + 1;
  s.ow = (w + 2 * pw - kw) / sw + 1;
  return s;
}

}  // namespace fusegrad
