// 2-D convolution over NHWC images with HWIO weights: forward (with fused bias and activation),
// backward-input, backward-weight and backward-bias, all as implicit GEMMs on the GEMM family's
// register tile (gemm/microkernel.h) and packing (gemm/pack.h).
//
//   forward          M = N*OH*OW output pixels, N = C_out, K = KH*KW*C_in. The weights are already
//                    a K×C_out row-major matrix (HWIO), packed once per call into NR-column panels.
//                    A is never copied: an "indirect" micro-tile reads, for each of its MR rows and
//                    each kernel tap, C_in floats straight from the input pixel (or from a zero row
//                    where the tap falls on padding), so there is no im2col and no A packing.
//                    C_in <= 4 (first layers) gets micro-tiles with the channel loop unrolled at
//                    compile time: a direct convolution in all but name. Output pixels are grouped
//                    by which taps land inside the input (interior, border strips, corners), and
//                    each tile takes one group's pixels, so no FMA is spent on padding.
//   backward-input   gx = conv(gy, flipped/transposed w). At stride 1 that is run as a forward
//                    convolution of gy (when the interior dominates gx). For stride s the input pixels split into
//                    s_h×s_w phases by (ih mod s_h, iw mod s_w); each phase sees a fixed subset of
//                    the taps, so it is one indirect GEMM over just those taps and no FMA is spent on
//                    the zeros a strided transposed convolution would insert. Small C_in (where the
//                    C_in-wide output would waste most of an NR panel) uses the scatter form: one
//                    GEMM gy · wᵀ into patch gradients, added into gx tap by tap (straight from
//                    the registers when every NR-column panel lies inside one run). First layers
//                    at stride 1 (C_in <= 4) use the gather form: each gx pixel's C_in sums over
//                    its taps and C_out, C_out along the vector lanes, reduced by a transpose.
//   backward-weight  gw (K×C_out) = patchesᵀ · gy, reduced over the M pixels. Patch element kk of a
//                    pixel is the input at a fixed offset from the pixel's patch corner, so a tile of
//                    K rows broadcasts straight from the input (or from a zero-padded copy of the rows
//                    under a segment of pixels): no im2col. Threads split the output rows; each
//                    accumulates its own partial gw, and the partials are summed at the end.
#pragma once
#include <cstdint>

#include "activation/activation.h"
#include "common/isa.h"

namespace fusegrad {

// Geometry of one convolution; the caller has checked every size. Bottom/right padding is
// whatever OH/OW imply (it may differ from top/left: TensorFlow's "same" with an odd total).
struct ConvShape {
  int64_t n, h, w, c;        // input (N, H, W, C_in)
  int64_t oh, ow, co;        // output (N, OH, OW, C_out)
  int64_t kh, kw;            // kernel taps
  int64_t sh, sw, dh, dw;    // stride, dilation (>= 1)
  int64_t pt, pl;            // top and left padding
};

struct ConvKernels {
  // y = act(conv(x, w) + bias); bias (C_out) may be null.
  void (*forward)(const ConvShape& s, const float* x, const float* w, const float* bias, Activation act,
                  float* y);
  // y (N, OH/pool, OW/pool, C_out) = act(max_pool(conv(x, w) + bias)) over non-overlapping
  // pool×pool windows, and indices (same shape; may be null) as the pool family's max_forward gives them. The
  // activation must be non-decreasing (it is applied after the max).
  void (*forward_max_pool)(const ConvShape& s, const float* x, const float* w, const float* bias, Activation act,
                           float act_param, int64_t pool, float* y, int32_t* indices);
  // gx (N, H, W, C_in) from gy (N, OH, OW, C_out); gx is overwritten.
  void (*backward_input)(const ConvShape& s, const float* gy, const float* w, float* gx);
  // gw (KH, KW, C_in, C_out) from x and gy; gw is overwritten.
  void (*backward_weight)(const ConvShape& s, const float* x, const float* gy, float* gw);
  // gb (C_out) = column sums of gy (rows × C_out), summed in double across row blocks.
  void (*backward_bias)(const float* gy, int64_t rows, int64_t co, float* gb);
  // Any of gx, gw, gb (null where not wanted) in one call. First layers (C_in <= 4; stride 1 when
  // gx is wanted) run every pass image by image, so gy is read from memory once, not per pass.
  void (*backward)(const ConvShape& s, const float* x, const float* gy, const float* w, float* gx, float* gw,
                   float* gb);
};

FG_DECLARE_KERNEL_TABLE(ConvKernels, conv_kernels)

// The geometry of convolving an (N, H, W, C_in) input with a (KH, KW, C_in, C_out) kernel, stride
// (sh, sw), dilation (dh, dw) and padding top/bottom/left/right: the one place fusegrad computes a
// convolution's output size, OH = (H + pt + pb - dh * (KH - 1) - 1) / sh + 1 (OW likewise).
// Throws std::invalid_argument naming the sizes when they are out of range, when the dilated
// kernel is larger than the padded input, or when they overflow 64-bit index arithmetic.
// (conv_shape.cpp)
ConvShape conv_geometry(int64_t n, int64_t h, int64_t w, int64_t c, int64_t kh, int64_t kw, int64_t co, int64_t sh,
                        int64_t sw, int64_t dh, int64_t dw, int64_t pt, int64_t pb, int64_t pl, int64_t pr);

}  // namespace fusegrad
