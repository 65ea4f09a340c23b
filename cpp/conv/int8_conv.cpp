// The int8 convolution: a GEMM over output pixels (rows) × C_out (columns) with depth
// KH·KW·C_in. Rows are gathered (im2col) block by block into a uint8 buffer that stays in cache
// while the GEMM packs it, padding taps filled with the input zero point so they stand for a real
// 0. Compiled once: the gather is memcpy/memset of whole channel runs, and the GEMM picks its
// own path.
#include <algorithm>
#include <cstring>
#include <vector>

#include "common/threads.h"
#include "conv/int8_conv.h"

namespace fusegrad {
namespace {

// Bytes of gathered rows per block: 1 MiB, half the L2 of the AMX machines, so the GEMM packs
// them from L2 right after the gather wrote them (and the buffer stays small for any input).
constexpr int64_t kGatherBytes = 1 << 20;
// At least this many rows per block, so the GEMM still has row blocks for both threads and its
// B panels are reused over many rows even for very deep K.
constexpr int64_t kMinGatherRows = 256;

void gather_rows(const Int8ConvProblem& p, int64_t row0, int64_t rows, uint8_t* dst, int64_t k) {
  const ConvShape& s = p.s;
  parallel_for(rows, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t row = row0 + r;
      const int64_t ow = row % s.ow, oh = (row / s.ow) % s.oh, n = row / (s.ow * s.oh);
      uint8_t* d = dst + r * k;
      for (int64_t kh = 0; kh < s.kh; ++kh) {
        const int64_t ih = oh * s.sh - s.pt + kh * s.dh;
        for (int64_t kw = 0; kw < s.kw; ++kw, d += s.c) {
          const int64_t iw = ow * s.sw - s.pl + kw * s.dw;
          if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) std::memset(d, p.x_zero_point, s.c);
          else std::memcpy(d, p.x + ((n * s.h + ih) * s.w + iw) * s.c, s.c);
        }
      }
    }
  });
}

}  // namespace

void int8_conv2d(const Int8ConvProblem& p) {
  const ConvShape& s = p.s;
  const int64_t rows = s.n * s.oh * s.ow, k = s.kh * s.kw * s.c;
  const int64_t out_row = s.co * int8_out_size(p.epilogue.out);
  Int8GemmProblem g;
  g.b = p.w;
  g.ldo = s.co;
  g.epilogue = p.epilogue;
  g.epilogue.a_zero_point = p.x_zero_point;
  g.path = p.path;
  const bool in_place = s.kh == 1 && s.kw == 1 && s.sh == 1 && s.sw == 1 && s.pt == 0 && s.pl == 0 &&
                        s.oh == s.h && s.ow == s.w;
  if (in_place) {
    g.m = rows;
    g.a = p.x;
    g.lda = s.c;
    g.out = p.out;
    int8_gemm(g);
    return;
  }
  const int64_t block = std::min(rows, std::max(kMinGatherRows, kGatherBytes / std::max<int64_t>(k, 1)));
  std::vector<uint8_t> buffer(static_cast<size_t>(block * k));
  for (int64_t r = 0; r < rows; r += block) {
    g.m = std::min(block, rows - r);
    gather_rows(p, r, g.m, buffer.data(), k);
    g.a = buffer.data();
    g.lda = k;
    g.out = static_cast<char*>(p.out) + r * out_row;
    int8_gemm(g);
  }
}

}  // namespace fusegrad
