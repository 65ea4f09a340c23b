// 2-D convolution on the GPU: NHWC x, HWIO w, NHWC y, fp32, as implicit GEMMs on the SIMT GEMM
// mainloop (cuda/gemm/simt.cuh) with gathering operands (conv_operands.cuh):
//   forward          y[(n,oy,ox), co]  = act(Σ_(ky,kx,ci) x[n, oy·sh−pt+ky·dh, ox·sw−pl+kx·dw, ci] w[ky,kx,ci,co] + b)
//                    M = N·OH·OW, N = C_out, K = KH·KW·C_in       (conv_forward.cu)
//   backward-input   dx[(n,y,x), ci]   = Σ_(ky,kx,co) g[n, (y+pt−ky·dh)/sh, (x+pl−kx·dw)/sw, co] w[ky,kx,ci,co]
//                    over the taps where the division is exact and in range
//                    M = N·H·W, N = C_in, K = KH·KW·C_out        (conv_backward_input.cu)
//   backward-weight  dw[(ky,kx,ci), co] = Σ_(n,oy,ox) x[n, oy·sh−pt+ky·dh, ox·sw−pl+kx·dw, ci] g[n,oy,ox,co]
//                    M = KH·KW·C_in, N = C_out, K = N·OH·OW: split-K, partial sums added by one
//                    deterministic pass                           (conv_backward_weight.cu)
//   backward-bias    db[co] = Σ_rows g[row, co]                    (conv_reduce.cu)
//   max-pool         the fused conv + max-pool's pooling of the conv output (conv_max_pool.cu)
// All arrays are C-contiguous; everything is enqueued on `stream`.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "activation/activation.h"

namespace fusegrad::cuda {

// With groups G (PyTorch's groups=), ci and co are one group's channels: x has G·ci channels, y
// G·co, w is (KH, KW, ci, G·co), and group g reads channels [g·ci, (g+1)·ci) of x and writes
// [g·co, (g+1)·co) of y. Forward and backward-input run the groups as the GEMM's batch items
// (one launch); backward-weight runs them one after another (its batch items are K splits).
// Depthwise shapes (one input channel a group) run on direct kernels instead (below).
struct ConvDims {
  int64_t n = 0, h = 0, w = 0, ci = 0;  // x
  int64_t kh = 0, kw = 0, co = 0;       // w (KH, KW, C_in, C_out)
  int64_t oh = 0, ow = 0;               // y
  int64_t sh = 1, sw = 1, dh = 1, dw = 1, pt = 0, pl = 0;
  int64_t groups = 1;
};

// Tile choice for the implicit GEMMs: by size, or forced (tests cover both).
enum class ConvTiles : int { automatic = 0, large = 1, small = 2 };

void conv_forward(const ConvDims& d, const float* x, const float* w, const float* bias, float* y, Activation act,
                  float act_param, ConvTiles tiles, cudaStream_t stream, int device);
void conv_backward_input(const ConvDims& d, const float* g, const float* w, float* dx, ConvTiles tiles,
                         cudaStream_t stream, int device);
// splits: how many K ranges the reduction over N·OH·OW is cut into (0: by size).
void conv_backward_weight(const ConvDims& d, const float* x, const float* g, float* dw, ConvTiles tiles,
                          int64_t splits, cudaStream_t stream, int device);
// db[c] = Σ_r g[r·cols + c] for r < rows.
void conv_backward_bias(const float* g, float* db, int64_t rows, int64_t cols, cudaStream_t stream, int device);
// y = act(max over pool×pool windows, stride pool, of conv (N, OH, OW, C)) with max_pool2d's
// indices (oy·OW + ox of the first maximum in row-major window order; NaN wins); act is none,
// relu or leaky_relu (slope act_param), which commute with max.
void conv_max_pool(const float* conv, float* y, int32_t* indices, int64_t n, int64_t oh, int64_t ow, int64_t c,
                   int64_t pool, Activation act, float act_param, cudaStream_t stream, int device);

// Depthwise convolutions (groups > 1, d.ci = 1): direct kernels, one thread an element, that the
// three passes above hand such shapes to (conv_depthwise.cu).
void depthwise_forward(const ConvDims& d, const float* x, const float* w, const float* bias, float* y,
                       Activation act, float act_param, cudaStream_t stream, int device);
void depthwise_backward_input(const ConvDims& d, const float* g, const float* w, float* dx, cudaStream_t stream,
                              int device);
void depthwise_backward_weight(const ConvDims& d, const float* x, const float* g, float* dw, cudaStream_t stream,
                               int device);
inline bool is_depthwise(const ConvDims& d) { return d.groups > 1 && d.ci == 1; }

// out[i] = Σ_s parts[s·len + i] for s < splits: the split-K sums, in a fixed order.
// The patches of a uint8 NHWC image as (N·OH·OW) × (KH·KW·C) rows for the int8 GEMM, padding
// filled with zero_point (conv_int8.cu; groups 1).
void int8_im2col(const ConvDims& d, const uint8_t* x, uint8_t* cols, uint8_t zero_point, cudaStream_t stream,
                 int device);
void sum_splits(const float* parts, float* out, int64_t splits, int64_t len, cudaStream_t stream, int device);
// out (rows, groups·width) = parts (groups, rows, width) interleaved: the per-group weight
// gradients into one HWIO array.
void merge_groups(const float* parts, float* out, int64_t groups, int64_t rows, int64_t width, cudaStream_t stream,
                  int device);

}  // namespace fusegrad::cuda
