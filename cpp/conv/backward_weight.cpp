// Backward-weight (backward_weight.h describes it): patch tiles over segments of output rows.
#include "conv/backward_weight.h"

#include <algorithm>
#include <cstring>
#include <tuple>

#include "conv/blocking.h"
#include "conv/geometry.h"
#include "conv/passes.h"
#include "conv/tiles/patch.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace conv {
namespace {

// Row `ih` of image img of x (zeros outside the image) as the tiles read it: pl zero pixels
// before it and zeros after, ld floats in all.
void fill_padded_row(const ConvShape& s, int64_t ld, const float* x, int64_t img, int64_t ih, float* dst) {
  const int64_t left = s.pl * s.c, len = s.w * s.c;
  if (ih < 0 || ih >= s.h) {
    std::memset(dst, 0, static_cast<size_t>(ld) * sizeof(float));
    return;
  }
  std::memset(dst, 0, static_cast<size_t>(left) * sizeof(float));
  std::memcpy(dst + left, x + (img * s.h + ih) * len, static_cast<size_t>(len) * sizeof(float));
  std::memset(dst + left + len, 0, static_cast<size_t>(ld - left - len) * sizeof(float));
}

}  // namespace

PatchPlan::PatchPlan(const ConvShape& s) : k(s.kh * s.kw * s.c), corner(static_cast<size_t>(k)) {
  // Input rows and columns the patches reach, padding included.
  const int64_t padded_h = (s.oh - 1) * s.sh + (s.kh - 1) * s.dh + 1;
  const int64_t padded_w = (s.ow - 1) * s.sw + (s.kw - 1) * s.dw + 1;
  padded = s.pt > 0 || s.pl > 0 || padded_h > s.h || padded_w > s.w;
  row_pixels = padded ? std::max(padded_w, s.pl + s.w) : s.w;
  ld = row_pixels * s.c;
  span = (s.kh - 1) * s.dh + 1;
  for (int64_t kk = 0; kk < k; ++kk) {
    const int64_t ch = kk % s.c, j = (kk / s.c) % s.kw, i = kk / (s.c * s.kw);
    corner[kk] = (i * s.dh * row_pixels + j * s.dw) * s.c + ch;
  }
  const bool wide = kHasWideTile && s.co > kNR;
  tile_rows = wide ? kWideMR : kMR;
  tile_cols = wide ? 2 * kNR : kNR;
  // Each K group's taps land inside the input only for some output rows and columns (all of
  // them but a border, with padding): the group's tiles run over just those, a hull over its
  // taps (the zeros of the copy cover the rest).
  for (int64_t k0 = 0; k0 < k; k0 += tile_rows) {
    const int64_t t0 = k0 / s.c, t1 = (std::min(k, k0 + tile_rows) - 1) / s.c;  // first and last tap
    const int64_t i0 = t0 / s.kw, i1 = t1 / s.kw;
    const int64_t j0 = i0 == i1 ? t0 % s.kw : 0, j1 = i0 == i1 ? t1 % s.kw : s.kw - 1;
    group_rows.push_back(inside_hull(s.oh, s.sh, s.pt, s.dh, s.h, i0, i1));
    group_cols.push_back(inside_hull(s.ow, s.sw, s.pl, s.dw, s.w, j0, j1));
  }
  segment_rows = std::max<int64_t>(1, kPatchSegmentBytes / (4 * (s.ow * s.co + s.sh * ld)));
}

void PatchWorker::add_rows(const float* x, const float* gy, int64_t r0, int64_t r1, float* dst) {
  const ConvShape& s = s_;
  const PatchPlan& p = plan_;
  row_off_.resize(static_cast<size_t>(r1 - r0));
  used_.resize(static_cast<size_t>(r1 - r0));
  const float* base = x;
  if (!p.padded) {
    // Image row y of image img starts at (img * H + y * stride) input rows (no division per row:
    // a first layer calls this once per image, and two divisions per row showed in its time).
    for (int64_t r = r0, img = r0 / s.oh, y = r0 % s.oh; r < r1; ++r) {
      row_off_[r - r0] = (img * s.h + y * s.sh) * p.ld;
      if (++y == s.oh) y = 0, ++img;
    }
  } else {
    // Each image's piece of the segment gets the padded input rows under its output rows.
    int64_t copy_rows = 0;  // rows of copy_ filled so far
    for (int64_t r = r0; r < r1;) {
      const int64_t img = r / s.oh, y0 = r % s.oh, y1 = std::min(s.oh, y0 + r1 - r);
      const int64_t first = y0 * s.sh, input_rows = (y1 - 1) * s.sh + p.span - first;
      if (copy_.size() < static_cast<size_t>((copy_rows + input_rows) * p.ld))
        copy_.resize(static_cast<size_t>((copy_rows + input_rows) * p.ld));
      for (int64_t b = 0; b < input_rows; ++b)
        fill_padded_row(s, p.ld, x, img, first + b - s.pt, copy_.data() + (copy_rows + b) * p.ld);
      for (int64_t y = y0; y < y1; ++y) row_off_[r - r0 + y - y0] = (copy_rows + y * s.sh - first) * p.ld;
      copy_rows += input_rows;
      r += y1 - y0;
    }
    base = copy_.data();
  }
  static const auto narrow =
      make_patch_table(std::make_integer_sequence<int, kMR>{}, std::make_integer_sequence<int, kNV>{});
  static const auto wide =
      make_patch_table(std::make_integer_sequence<int, kWideMR>{}, std::make_integer_sequence<int, kMaxV>{});
  const float* k_rows[kMaxTileRows];
  PatchTile t;
  t.k_rows = k_rows;
  t.row_off = row_off_.data();
  t.ow = s.ow;
  t.pixel_step = s.sw * s.c;
  t.ldg = s.co;
  t.ldc = s.co;
  for (int64_t k0 = 0, g = 0; k0 < p.k; k0 += p.tile_rows, ++g) {
    const int m = static_cast<int>(std::min<int64_t>(p.tile_rows, p.k - k0));
    for (int r = 0; r < m; ++r) k_rows[r] = base + p.corner[k0 + r];
    const auto [y0, y1] = p.group_rows[g];
    std::tie(t.x0, t.x1) = p.group_cols[g];
    if (y0 == 0 && y1 == s.oh && t.x0 == 0 && t.x1 == s.ow) {
      t.used = nullptr, t.nused = r1 - r0;
    } else {
      t.used = used_.data(), t.nused = 0;
      for (int64_t r = r0, y = r0 % s.oh; r < r1; ++r, y = y + 1 == s.oh ? 0 : y + 1)
        if (y >= y0 && y < y1) used_[t.nused++] = r - r0;
    }
    for (int64_t j0 = 0; j0 < s.co; j0 += p.tile_cols) {
      t.n = static_cast<int>(std::min<int64_t>(p.tile_cols, s.co - j0));
      t.gy = gy + r0 * s.ow * s.co + j0;
      t.c = dst + k0 * s.co + j0;
      const int v = (t.n + W - 1) / W;
      if (p.tile_rows == kWideMR && kHasWideTile) wide.fn[m - 1][v - 1](t);
      else narrow.fn[m - 1][v - 1](t);
    }
  }
}

void add_partials(float* gw, const std::vector<float>& partials, int nthreads, int64_t size) {
  if (nthreads <= 1) return;
  parallel_for(size, 4096, [&](int64_t i0, int64_t i1) {
    for (int t = 1; t < nthreads; ++t) {
      const float* src = partials.data() + (t - 1) * size;
      for (int64_t i = i0; i < i1; ++i) gw[i] += src[i];
    }
  });
}

void conv_backward_weight(const ConvShape& s, const float* x, const float* gy, float* gw) {
  const int64_t size = s.kh * s.kw * s.c * s.co, rows = s.n * s.oh;
  if (size == 0) return;
  std::memset(gw, 0, static_cast<size_t>(size) * sizeof(float));
  if (rows * s.ow == 0) return;
  const PatchPlan plan(s);
  const int nthreads = std::min<int64_t>(threads_for(2.0 * double(rows * s.ow) * double(size)), rows);
  std::vector<float> partials(static_cast<size_t>((nthreads - 1) * size), 0.0f);
  run_on_threads(nthreads, [&](int tid) {
    float* dst = tid == 0 ? gw : partials.data() + (tid - 1) * size;
    PatchWorker worker(s, plan);
    const int64_t end = rows * (tid + 1) / nthreads;
    for (int64_t r = rows * tid / nthreads; r < end; r += plan.segment_rows)
      worker.add_rows(x, gy, r, std::min(end, r + plan.segment_rows), dst);
  });
  add_partials(gw, partials, nthreads, size);
}

}  // namespace conv
}  // namespace FG_ISA_NS
}  // namespace fusegrad
