// The grouped-convolution driver (grouped.h): regroup, run each group on the ungrouped kernels,
// interleave back; depthwise convolutions (one input channel a group) go to their own kernels
// (depthwise.h) instead. Compiled once: it only moves data and calls the active ISA's tables.
#include "conv/grouped.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "activation/activation.h"
#include "common/threads.h"
#include "conv/depthwise.h"

namespace fusegrad {
namespace {

// Rows per parallel chunk of a regrouping pass: enough copying (~64 KiB) to pay for a thread.
constexpr int64_t kRowsGrain = 4096;
// Rows a regrouping pass copies for every group before moving on: a block of whole rows (32 KiB
// at 128 channels) stays in cache while each group takes its channels, so the interleaved side
// is read from memory once, not once per group (a thread's whole chunk for each group made a
// 32-group layer's forward 3x slower than its 32 convolutions run one by one).
constexpr int64_t kRowsBlock = 64;

// copy(g, r) for every group g and row r < rows: threads split the rows, and each takes its rows
// kRowsBlock at a time, every group in turn.
template <class Copy>
void by_row_blocks(int64_t rows, int64_t groups, int64_t width, Copy&& copy) {
  parallel_for(rows, std::max<int64_t>(1, kRowsGrain / std::max<int64_t>(width, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t b0 = r0; b0 < r1; b0 += kRowsBlock) {
      const int64_t b1 = std::min(r1, b0 + kRowsBlock);
      for (int64_t g = 0; g < groups; ++g)
        for (int64_t r = b0; r < b1; ++r) copy(g, r);
    }
  });
}

// src (rows, G·width) → dst (G, rows, width): each group's channels of every row, contiguous.
void split_groups(const float* src, int64_t rows, int64_t groups, int64_t width, float* dst) {
  by_row_blocks(rows, groups, width, [&](int64_t g, int64_t r) {
    std::memcpy(dst + (g * rows + r) * width, src + (r * groups + g) * width, sizeof(float) * width);
  });
}

// The inverse: src (G, rows, width) → dst (rows, G·width).
void merge_groups(const float* src, int64_t rows, int64_t groups, int64_t width, float* dst) {
  by_row_blocks(rows, groups, width, [&](int64_t g, int64_t r) {
    std::memcpy(dst + (r * groups + g) * width, src + (g * rows + r) * width, sizeof(float) * width);
  });
}

// A buffer holding `n` floats (at least one, so data() is never null).
std::vector<float> buffer(int64_t n) { return std::vector<float>(static_cast<size_t>(std::max<int64_t>(n, 1))); }

}  // namespace

void grouped_conv_forward(const ConvKernels& k, const ConvShape& s, int64_t groups, const float* x, const float* w,
                          const float* bias, Activation act, float* y) {
  if (s.c == 1) {
    active_depthwise_kernels().forward(s, groups, x, w, bias, y);
    const int64_t size = s.n * s.oh * s.ow * groups * s.co;
    if (act != Activation::none) active_activation_kernels().forward(act, y, y, size, 0.0f);
    return;
  }
  const int64_t pixels = s.n * s.h * s.w, out_pixels = s.n * s.oh * s.ow, depth = s.kh * s.kw * s.c;
  std::vector<float> xs = buffer(groups * pixels * s.c), ws = buffer(groups * depth * s.co),
                     ys = buffer(groups * out_pixels * s.co);
  split_groups(x, pixels, groups, s.c, xs.data());
  split_groups(w, depth, groups, s.co, ws.data());
  for (int64_t g = 0; g < groups; ++g)
    k.forward(s, xs.data() + g * pixels * s.c, ws.data() + g * depth * s.co, bias ? bias + g * s.co : nullptr, act,
              ys.data() + g * out_pixels * s.co);
  merge_groups(ys.data(), out_pixels, groups, s.co, y);
}

void grouped_conv_backward(const ConvKernels& k, const ConvShape& s, int64_t groups, const float* x,
                           const float* gy, const float* w, float* gx, float* gw, float* gb) {
  const int64_t pixels = s.n * s.h * s.w, out_pixels = s.n * s.oh * s.ow, depth = s.kh * s.kw * s.c;
  // The bias gradient does not see the groups: column sums of gy.
  if (gb) k.backward_bias(gy, out_pixels, groups * s.co, gb);
  if (s.c == 1) {
    if (gx) active_depthwise_kernels().backward_input(s, groups, gy, w, gx);
    if (gw) active_depthwise_kernels().backward_weight(s, groups, x, gy, gw);
    return;
  }
  if (!gx && !gw) return;
  std::vector<float> gys = buffer(groups * out_pixels * s.co), ws, xs, gxs, gws;
  split_groups(gy, out_pixels, groups, s.co, gys.data());
  if (gx) {
    ws = buffer(groups * depth * s.co), gxs = buffer(groups * pixels * s.c);
    split_groups(w, depth, groups, s.co, ws.data());
  }
  if (gw) {
    xs = buffer(groups * pixels * s.c), gws = buffer(groups * depth * s.co);
    split_groups(x, pixels, groups, s.c, xs.data());
  }
  for (int64_t g = 0; g < groups; ++g)
    k.backward(s, gw ? xs.data() + g * pixels * s.c : nullptr, gys.data() + g * out_pixels * s.co,
               gx ? ws.data() + g * depth * s.co : nullptr, gx ? gxs.data() + g * pixels * s.c : nullptr,
               gw ? gws.data() + g * depth * s.co : nullptr, nullptr);
  if (gx) merge_groups(gxs.data(), pixels, groups, s.c, gx);
  if (gw) merge_groups(gws.data(), depth, groups, s.co, gw);
}

}  // namespace fusegrad
