// Convolution forward as an implicit GEMM: y (N·OH·OW × C_out) = act(im2col(x) · w + bias), on the
// SIMT mainloop (cuda/gemm/simt.cuh). A is gathered from x by Im2colOperand as each K step is
// loaded (no im2col buffer); B is w read as its (KH·KW·C_in) × C_out row-major matrix
// (WeightOperand); bias and activation are applied by the epilogue as y is stored.
#include "common/launch.cuh"
#include "conv/conv_launch.cuh"
#include "conv/conv_operands.cuh"

namespace fusegrad::cuda {

void conv_forward(const ConvDims& d, const float* x, const float* w, const float* bias, float* y, Activation act,
                  float act_param, ConvTiles tiles, cudaStream_t stream, int device) {
  const int64_t m = d.n * d.oh * d.ow, n = d.co, k = d.kh * d.kw * d.ci;
  if (m == 0 || n == 0) return;
  DeviceGuard guard(device);
  const Im2colOperand a{conv_index(d), x, d.ci % 4 == 0 && conv_aligned16(x)};
  const WeightOperand b{w, static_cast<int>(d.co), d.co % 4 == 0 && conv_aligned16(w)};
  const Epilogue ep = conv_epilogue(y, m, n, bias, act, act_param);
  if (conv_large_tiles(tiles, m, n, 1, device))
    FG_LAUNCH((simt_gemm_kernel<SimtLarge, Im2colOperand, WeightOperand>), simt_grid<SimtLarge>(m, n, 1),
              SimtLarge::kThreads, 0, stream, a, b, ep, m, n, k, int64_t{0}, int64_t{0});
  else
    FG_LAUNCH((simt_gemm_kernel<SimtSmall, Im2colOperand, WeightOperand>), simt_grid<SimtSmall>(m, n, 1),
              SimtSmall::kThreads, 0, stream, a, b, ep, m, n, k, int64_t{0}, int64_t{0});
}

}  // namespace fusegrad::cuda
