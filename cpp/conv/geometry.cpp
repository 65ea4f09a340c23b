// The geometry of a convolution (geometry.h): run offsets, tap sets and pixel classes.
#include "conv/geometry.h"

#include <algorithm>

namespace fusegrad {
namespace FG_ISA_NS {
namespace conv {

RunPlan plan_runs(const ConvShape& s) {
  const bool merge = s.dw == 1 && s.kw > 1 && s.pl == 0 && (s.ow - 1) * s.sw + s.kw <= s.w;
  return merge ? RunPlan{s.kh, s.kw * s.c, true} : RunPlan{s.kh * s.kw, s.c, false};
}

std::vector<int64_t> run_offsets(const ConvShape& s, const RunPlan& run_plan) {
  // The offset splits into a row part and a column part, each computed once per (position, tap):
  // per pixel and run this is then an add. Two range checks and a multiply per pixel and run cost
  // 10 us per call on a 26x26 output.
  const int64_t col_taps = run_plan.merged ? 1 : s.kw;
  std::vector<int64_t> row_part(static_cast<size_t>(s.oh * s.kh)), col_part(static_cast<size_t>(s.ow * col_taps));
  for (int64_t y = 0; y < s.oh; ++y)
    for (int64_t i = 0; i < s.kh; ++i) {
      const int64_t ih = y * s.sh - s.pt + i * s.dh;
      row_part[y * s.kh + i] = ih >= 0 && ih < s.h ? ih * s.w * s.c : -1;
    }
  for (int64_t x = 0; x < s.ow; ++x)
    for (int64_t j = 0; j < col_taps; ++j) {
      const int64_t iw = x * s.sw - s.pl + j * s.dw;
      col_part[x * col_taps + j] = iw >= 0 && iw < s.w ? iw * s.c : -1;
    }
  std::vector<int64_t> off(static_cast<size_t>(s.oh * s.ow * run_plan.runs));
  int64_t* o = off.data();
  for (int64_t y = 0; y < s.oh; ++y)
    for (int64_t x = 0; x < s.ow; ++x)
      for (int64_t i = 0; i < s.kh; ++i) {
        const int64_t row = row_part[y * s.kh + i];
        for (int64_t j = 0; j < col_taps; ++j) {
          const int64_t col = col_part[x * col_taps + j];
          *o++ = row >= 0 && col >= 0 ? row + col : -1;
        }
      }
  return off;
}

std::vector<int32_t> axis_sets(int64_t out, int64_t k, int64_t stride, int64_t dil, int64_t pad, int64_t in,
                               int32_t& count) {
  std::vector<std::vector<bool>> sets;
  std::vector<int32_t> id(static_cast<size_t>(out));
  for (int64_t o = 0; o < out; ++o) {
    std::vector<bool> inside(static_cast<size_t>(k));
    for (int64_t i = 0; i < k; ++i) inside[i] = tap_inside(o, i, stride, pad, dil, in);
    const auto found = std::find(sets.begin(), sets.end(), inside);
    id[o] = static_cast<int32_t>(found - sets.begin());
    if (found == sets.end()) sets.push_back(std::move(inside));
  }
  count = static_cast<int32_t>(sets.size());
  return id;
}

std::pair<int64_t, int64_t> inside_hull(int64_t out, int64_t stride, int64_t pad, int64_t dil, int64_t in, int64_t i0,
                                        int64_t i1) {
  int64_t lo = out, hi = 0;
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = i0; i <= i1; ++i)
      if (tap_inside(o, i, stride, pad, dil, in)) lo = std::min(lo, o), hi = o + 1;
  return {lo, std::max(lo, hi)};
}

PixelClasses classify_pixels(const ConvShape& s, const RunPlan& run_plan, const std::vector<int64_t>& offsets) {
  PixelClasses px;
  // A pixel's inside runs are set by which kernel rows land inside the image at its output row
  // and which kernel columns at its column, so the class is that pair. A run's offset from the
  // pixel's first inside run depends only on the two taps: one list of offsets serves a class.
  const int64_t ohw = s.oh * s.ow;
  int32_t row_sets = 0, col_sets = 0;
  const std::vector<int32_t> row_set = axis_sets(s.oh, s.kh, s.sh, s.dh, s.pt, s.h, row_sets);
  const std::vector<int32_t> col_set = axis_sets(s.ow, s.kw, s.sw, s.dw, s.pl, s.w, col_sets);
  std::vector<int32_t> class_of_pair(static_cast<size_t>(row_sets * col_sets), -1);
  px.class_of.resize(static_cast<size_t>(ohw));
  for (int64_t y = 0; y < s.oh; ++y)
    for (int64_t x = 0; x < s.ow; ++x) {
      const int64_t pix = y * s.ow + x;
      int32_t& id = class_of_pair[row_set[y] * col_sets + col_set[x]];
      if (id < 0) {
        id = static_cast<int32_t>(px.classes.size());
        PixelClass& pc = px.classes.emplace_back();
        const int64_t* o = offsets.data() + pix * run_plan.runs;
        for (int64_t tp = 0; tp < run_plan.runs; ++tp)
          if (o[tp] >= 0) pc.runs.push_back(tp);
        for (int64_t tp : pc.runs) pc.run_off.push_back(o[tp] - o[pc.runs[0]]);
        if (static_cast<int64_t>(pc.runs.size()) < run_plan.runs)
          for (int64_t tp : pc.runs) pc.b_off.push_back(tp * run_plan.len * kNR);
      }
      px.class_of[pix] = id;
      px.classes[id].pixels.push_back(pix);
    }
  px.start.resize(static_cast<size_t>(ohw));
  for (int64_t pix = 0; pix < ohw; ++pix) {
    PixelClass& pc = px.classes[px.class_of[pix]];
    px.start[pix] = pc.runs.empty() ? 0 : offsets[pix * run_plan.runs + pc.runs[0]];
    pc.start.push_back(px.start[pix]);
  }
  return px;
}

}  // namespace conv
}  // namespace FG_ISA_NS
}  // namespace fusegrad
