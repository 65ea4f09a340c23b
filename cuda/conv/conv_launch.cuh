// What the convolution kernel files share on the host: the tile choice and the launch of the
// SIMT implicit-GEMM mainloop on a pair of operands.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "common/cuda_check.cuh"
#include "common/vec.cuh"
#include "conv/conv.cuh"
#include "gemm/epilogue.cuh"
#include "gemm/simt.cuh"

namespace fusegrad::cuda {

// Large tiles when they give every SM a block (items: batch items or K splits), else small.
inline bool conv_large_tiles(ConvTiles tiles, int64_t m, int64_t n, int64_t items, int device) {
  if (tiles != ConvTiles::automatic) return tiles == ConvTiles::large;
  return use_large_tiles<SimtLarge>(m, n, items, multiprocessor_count(device));
}

// An m×n result with unit column stride and row stride n (contiguous), `items` of them n·m apart.
inline Epilogue conv_epilogue(float* c, int64_t m, int64_t n, const float* bias, Activation act, float act_param) {
  Epilogue e;
  e.c = c, e.c_rs = n, e.c_bs = m * n, e.bias = bias, e.act = act, e.act_param = act_param;
  e.vec = store_width(c, n, m * n), e.rows = m, e.cols = n;
  return e;
}

// Batch item z's m×n block of an m×(groups·n) result: columns z·n on, and their bias.
inline Epilogue grouped_epilogue(float* c, int64_t m, int64_t n, int64_t groups, const float* bias, Activation act,
                                 float act_param) {
  Epilogue e = conv_epilogue(c, m, n, bias, act, act_param);
  e.c_rs = n * groups, e.c_bs = n, e.bias_bs = n;
  e.vec = store_width(c, e.c_rs, e.c_bs);
  return e;
}

}  // namespace fusegrad::cuda
