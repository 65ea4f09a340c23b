// The forward convolution's plan and workers, shared by conv_forward (forward.cpp), the fused
// conv + max-pool (forward_max_pool.cpp) and, through conv_forward, backward-input at stride 1.
// The workers build and run one tile per call, so they stay inline here: the tile setup is part
// of the hot loop (a first layer's tile has only 9-27 FMAs per row to hide it behind).
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "conv/blocking.h"
#include "conv/geometry.h"
#include "conv/tiles/indirect.h"
#include "gemm/pack.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace conv {

// What every forward tile shares, prepared once per call: the packed weights, the run offsets of
// each output pixel, and the pixel classes.
struct ForwardPlan {
  const ConvShape& s;
  int64_t k, np;                 // K = KH*KW*C_in; NR-column panels of C_out
  PackBuffer wpack;
  const float* bp = nullptr;     // the packed weights
  RunPlan run_plan;
  std::vector<int64_t> offsets;  // per output pixel of an image and run (run_offsets)
  PixelClasses pixels;
  std::vector<float> zeros;      // a run of zeros, read for runs on the padding
  int rows = 0, panels = 0;      // tile shape

  ForwardPlan(const ConvShape& shape, const float* w);

  double tile_flops() const { return 2.0 * rows * double(std::max<int64_t>(k, 1)) * double(s.co); }
};

// The tile-running part of one thread's forward tiles: its pointer table, output row pointers and
// scratch row, and the loop over C_out panels. The two tile orders below derive from it, each
// with its own cursor: a place carried on from one tile to the next, since a division per tile
// cost a tenth of a first layer's time. Both build a one-class tile in one short loop.
class ForwardWorker {
 public:
  explicit ForwardWorker(const ForwardPlan& p)
      : p_(p), a_(static_cast<size_t>(p.run_plan.runs * p.rows)), scratch_(static_cast<size_t>((p.np + 1) * kNR)) {
    t_.run_len = p.run_plan.len;
    t_.a = a_.data();
    t_.b_panel = p.k * kNR;
    t_.c = crow_;
    if (p.pixels.classes.size() == 1) set_class(0);  // for good: no tile ever has another
  }

 protected:
  // The tile over rows whose a_[r] point at their first inside run, all of class cls.
  void run_class(int32_t cls, int live, const float* bias, Activation act) {
    set_class(cls);
    for (int r = live; r < p_.rows; ++r) a_[r] = a_[live - 1], crow_[r] = scratch_.data();
    run_panels(live, bias, act);
  }

  // The tile reads class cls's runs.
  void set_class(int32_t cls) {
    const PixelClass& pc = p_.pixels.classes[cls];
    t_.ntaps = static_cast<int64_t>(pc.runs.size());
    t_.tap_off = pc.run_off.data();
    t_.tap_b = pc.b_off.empty() ? nullptr : pc.b_off.data();
  }

  void run_panels(int live, const float* bias, Activation act) {
    t_.m = live;
    t_.act = act;
    for (int64_t jp = 0; jp < p_.np; jp += p_.panels) {
      t_.b = p_.bp + jp * p_.k * kNR;
      t_.c_col = jp * kNR;
      t_.n = static_cast<int>(std::min<int64_t>(p_.panels * kNR, p_.s.co - jp * kNR));
      t_.bias = bias ? bias + jp * kNR : nullptr;
      run_indirect(t_, p_.rows);
    }
  }

  const ForwardPlan& p_;
  std::vector<const float*> a_;
  std::vector<float> scratch_;
  float* crow_[kMaxTileRows];
  IndirectTile t_;
};

// Tiles whose pixels are taken in raster order (image, row, column): the fused max-pool's, whose
// bands need whole rows, and conv_forward's where there is one class (no padding), since they run
// on across rows and images with no class ends. A tile of one class skips the padding, others
// read zeros for it.
class RasterWorker : public ForwardWorker {
 public:
  using ForwardWorker::ForwardWorker;

  // Pixels m0 .. m0 + live - 1 in raster order (live <= p.rows) of act(conv + bias), pixel
  // m0 + r stored at dst + r * s.co.
  void tile(const float* x, int64_t m0, int live, float* dst, const float* bias, Activation act) {
    const ConvShape& s = p_.s;
    const int64_t ohw = s.oh * s.ow, hwc = s.h * s.w * s.c;
    if (m0 != next_m_) img_ = m0 / ohw, pix_ = m0 % ohw;
    next_m_ = m0 + live;
    if (p_.pixels.classes.size() > 1) return tile_of_classes(x, live, dst, bias, act);
    // No padding anywhere (first layers, valid convolutions): every tile is of the one class,
    // whose taps the constructor set. A first layer's tile has 9-27 FMAs per row to hide this
    // setup behind: every load and store here showed in its time.
    const int64_t* start = p_.pixels.start.data();
    int64_t img = img_, pix = pix_;
    const float* base = x + img * hwc;
    for (int r = 0; r < live; ++r) {
      a_[r] = base + start[pix];
      crow_[r] = dst + r * s.co;
      if (++pix == ohw) pix = 0, ++img, base += hwc;
    }
    img_ = img, pix_ = pix;
    for (int r = live; r < p_.rows; ++r) a_[r] = a_[live - 1], crow_[r] = scratch_.data();
    run_panels(live, bias, act);
  }

 private:
  // tile() where the plan has several classes: a tile of one class skips the padding.
  __attribute__((noinline)) void tile_of_classes(const float* x, int live, float* dst, const float* bias,
                                                 Activation act) {
    const ConvShape& s = p_.s;
    const int64_t ohw = s.oh * s.ow, hwc = s.h * s.w * s.c;
    const int64_t* start = p_.pixels.start.data();
    const int32_t* class_of = p_.pixels.class_of.data();
    const int32_t cls = class_of[pix_];
    bool one_class = true;
    int64_t img = img_, pix = pix_;
    const float* base = x + img * hwc;
    for (int r = 0; r < live; ++r) {
      one_class &= class_of[pix] == cls;
      a_[r] = base + start[pix];
      crow_[r] = dst + r * s.co;
      img_of_[r] = img, pix_of_[r] = pix;
      if (++pix == ohw) pix = 0, ++img, base += hwc;
    }
    img_ = img, pix_ = pix;
    if (one_class) run_class(cls, live, bias, act);
    else run_table(x, live, bias, act);
  }

  // The tile over pixels (img_of_[r], pix_of_[r]) of several classes: a pointer per row and run,
  // with runs on the padding reading zeros.
  void run_table(const float* x, int live, const float* bias, Activation act) {
    const ConvShape& s = p_.s;
    const int R = p_.rows;
    const int64_t hwc = s.h * s.w * s.c, runs = p_.run_plan.runs;
    t_.ntaps = runs;
    t_.tap_off = nullptr;
    t_.tap_b = nullptr;
    for (int r = 0; r < live; ++r) {
      const int64_t* o = p_.offsets.data() + pix_of_[r] * runs;
      const float* base = x + img_of_[r] * hwc;
      for (int64_t tp = 0; tp < runs; ++tp) a_[tp * R + r] = o[tp] >= 0 ? base + o[tp] : p_.zeros.data();
    }
    // Idle rows read zeros and store to scratch.
    for (int r = live; r < R; ++r) {
      for (int64_t tp = 0; tp < runs; ++tp) a_[tp * R + r] = p_.zeros.data();
      crow_[r] = scratch_.data();
    }
    run_panels(live, bias, act);
  }

  int64_t img_of_[kMaxTileRows], pix_of_[kMaxTileRows];  // the last tile's pixels, for run_table
  // The cursor: the pixel after the last tile (its m in raster order), its image and its place in
  // the image.
  int64_t next_m_ = -1, img_ = 0, pix_ = 0;
};

// Tiles whose pixels all come from one class, over every image: conv_forward's where there are
// several classes, so every tile skips the padding.
class ClassWorker : public ForwardWorker {
 public:
  using ForwardWorker::ForwardWorker;

  // Pixels i0 .. i0 + live - 1 of class cls, counted over its pixels in every image (image
  // i / size, pixel pixels[i % size]), each stored at its place in y (N, OH, OW, C_out).
  void tile(const float* x, int32_t cls, int64_t i0, int live, float* y, const float* bias, Activation act) {
    const ConvShape& s = p_.s;
    const PixelClass& pc = p_.pixels.classes[cls];
    const int64_t ohw = s.oh * s.ow, hwc = s.h * s.w * s.c, class_size = static_cast<int64_t>(pc.pixels.size());
    if (cls != cls_ || i0 != next_i_) cls_ = cls, img_ = i0 / class_size, index_ = i0 % class_size;
    next_i_ = i0 + live;
    const int64_t *pixels = pc.pixels.data(), *start = pc.start.data();
    int64_t img = img_, index = index_;
    const float* xb = x + img * hwc;
    float* yb = y + img * ohw * s.co;
    for (int r = 0; r < live; ++r) {
      a_[r] = xb + start[index];
      crow_[r] = yb + pixels[index] * s.co;
      if (++index == class_size) index = 0, ++img, xb += hwc, yb += ohw * s.co;
    }
    img_ = img, index_ = index;
    run_class(cls, live, bias, act);
  }

 private:
  // The cursor: the last tile's class, the index after its last pixel (counted over every image),
  // and that pixel's image and index in the class's pixels.
  int32_t cls_ = -1;
  int64_t next_i_ = -1, img_ = 0, index_ = 0;
};

}  // namespace conv
}  // namespace FG_ISA_NS
}  // namespace fusegrad
