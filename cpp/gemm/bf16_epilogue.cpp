// The epilogue of the bf16 micro-tiles: (C +) product (+ bias), then the activation, while the
// tile is still in L1. The activation is a second pass over the stored tile (at most 32×32 floats),
// the fp32 microkernel's, so the kernels are instantiated per tile shape only.
#include "common/simd.h"
#include "gemm/bf16_kernels.h"
#include "gemm/microkernel_impl.h"  // the fp32 kernel's activation pass over a stored tile

namespace fusegrad {
namespace isa_avx512_ext {

void bf16_activate(const Bf16Tile& t) {
  with_activation(t.act, [&](auto k) {
    if constexpr (decltype(k)::value != Activation::none)
      ukernel::activate_tile<decltype(k)::value>(t.c, t.ldc, t.m, t.n, t.act_param);
  });
}

void bf16_store_block(const float* x, int64_t ld, const Bf16Tile& t) {
  for (int r = 0; r < t.m; ++r) {
    const float* src = x + r * ld;
    float* row = t.c + r * t.ldc;
    for (int j = 0; j < t.n; j += kVecWidth) {
      const int w = t.n - j < kVecWidth ? t.n - j : kVecWidth;
      VecF v = load_partial(src + j, w);
      if (t.load_c) v = v + load_partial(row + j, w);
      if (t.bias) v = v + load_partial(t.bias + j, w);
      store_partial(row + j, v, w);
    }
  }
  if (t.act != Activation::none) bf16_activate(t);
}

}  // namespace isa_avx512_ext
}  // namespace fusegrad
