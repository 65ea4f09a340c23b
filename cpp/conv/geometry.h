// The geometry of a convolution, worked out once per call before any tile runs: conv's
// counterpart of a GEMM's packing. Which taps of which output pixel land inside the input, where
// each pixel's runs of K start, and which pixels share the same taps (pixel classes), so the tiles
// only add offsets and never test a border.
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

#include "conv/blocking.h"
#include "conv/conv.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace conv {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Mathematical modulo (the C++ % keeps the sign of the dividend).
inline int64_t pos_mod(int64_t a, int64_t b) { return ((a % b) + b) % b; }

// Along one axis: whether tap i of output position o lands inside an input of `in` positions.
inline bool tap_inside(int64_t o, int64_t i, int64_t stride, int64_t pad, int64_t dil, int64_t in) {
  const int64_t at = o * stride - pad + i * dil;
  return at >= 0 && at < in;
}

// How the K = KH*KW*C_in depth of a pixel's patch is read: as `runs` pieces of `len` contiguous
// floats, each through one pointer. Normally one run per tap (C_in floats). When every
// horizontal tap of every output pixel lands inside the image (dilation_w 1, no left/right
// padding), the KW taps of a kernel row are KW*C_in consecutive floats of the input and also
// consecutive in K (HWIO), so they merge into one run: KW times fewer pointers to build and,
// for C_in = 1..4, runs long enough to keep the micro-tile busy.
struct RunPlan {
  int64_t runs, len;
  bool merged;
};

RunPlan plan_runs(const ConvShape& s);

// For every output position (oh, ow) and run: the offset of its first float within one image,
// or -1 where the run falls on padding. Shared by all images.
std::vector<int64_t> run_offsets(const ConvShape& s, const RunPlan& run_plan);

// For each output position along one axis: which set of kernel taps along that axis lands inside
// the input, as an id (positions with the same set share it; `count` ids in all).
std::vector<int32_t> axis_sets(int64_t out, int64_t k, int64_t stride, int64_t dil, int64_t pad, int64_t in,
                               int32_t& count);

// Output positions [lo, hi) along one axis where some of the taps i0..i1 lands inside the input.
std::pair<int64_t, int64_t> inside_hull(int64_t out, int64_t stride, int64_t pad, int64_t dil, int64_t in, int64_t i0,
                                        int64_t i1);

// The pixels of one image whose patches have the same runs inside the image: the interior, each
// border strip, each corner. A tile whose pixels share a class reads just those runs, through one
// pointer per row: no FMA is spent on padding (8% of the FMAs of a 16x16 layer with padding 1,
// 28% of a 13x13 backward-input taken as a forward of an 11x11 gy), and no pointer table is built.
struct PixelClass {
  std::vector<int64_t> runs;     // the runs inside the image, ascending
  std::vector<int64_t> run_off;  // per listed run: floats from the first listed run's start
  std::vector<int64_t> b_off;    // per listed run: where its rows start in a B panel (empty: all runs)
  std::vector<int64_t> pixels;   // raster order within an image
  std::vector<int64_t> start;    // per pixel: where its first inside run starts, within its image
};

// Every output pixel of an image sorted into its class.
struct PixelClasses {
  std::vector<PixelClass> classes;
  std::vector<int32_t> class_of;  // per pixel of an image
  std::vector<int64_t> start;     // per pixel of an image: where its first inside run starts
};

// The classes of s's output pixels, whose runs (run_plan) start at `offsets` (run_offsets).
PixelClasses classify_pixels(const ConvShape& s, const RunPlan& run_plan, const std::vector<int64_t>& offsets);

}  // namespace conv
}  // namespace FG_ISA_NS
}  // namespace fusegrad
