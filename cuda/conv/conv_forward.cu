// Convolution forward as an implicit GEMM: y (N·OH·OW × C_out) = act(im2col(x) · w + bias), on the
// SIMT mainloop (cuda/gemm/simt.cuh). A is gathered from x by Im2colOperand as each K step is
// loaded (no im2col buffer); B is w read as its (KH·KW·C_in) × C_out row-major matrix
// (WeightOperand); bias and activation are applied by the epilogue as y is stored. Groups are
// the batch items: item z reads group z's channels and writes its columns of y.
#include "common/launch.cuh"
#include "conv/conv_launch.cuh"
#include "conv/conv_operands.cuh"

namespace fusegrad::cuda {

void conv_forward(const ConvDims& d, const float* x, const float* w, const float* bias, float* y, Activation act,
                  float act_param, ConvTiles tiles, cudaStream_t stream, int device) {
  const int64_t m = d.n * d.oh * d.ow, n = d.co, k = d.kh * d.kw * d.ci;
  if (m == 0 || n == 0) return;
  DeviceGuard guard(device);
  if (is_depthwise(d)) return depthwise_forward(d, x, w, bias, y, act, act_param, stream, device);
  const Im2colOperand a{conv_index(d), x, d.ci % 4 == 0 && aligned16(x)};
  const WeightOperand b{w, static_cast<int>(d.co), static_cast<int>(d.co * d.groups),
                        d.co % 4 == 0 && aligned16(w)};
  const Epilogue ep = grouped_epilogue(y, m, n, d.groups, bias, act, act_param);
  const bool large = conv_large_tiles(tiles, m, n, d.groups, device);
  for (int64_t z0 = 0; z0 < d.groups; z0 += kMaxGridY) {  // one batch item a group
    const int64_t items = d.groups - z0;
    if (large)
      FG_LAUNCH((simt_gemm_kernel<SimtLarge, Im2colOperand, WeightOperand>), simt_grid<SimtLarge>(m, n, items),
                SimtLarge::kThreads, 0, stream, a, b, ep, m, n, k, int64_t{0}, z0);
    else
      FG_LAUNCH((simt_gemm_kernel<SimtSmall, Im2colOperand, WeightOperand>), simt_grid<SimtSmall>(m, n, items),
                SimtSmall::kThreads, 0, stream, a, b, ep, m, n, k, int64_t{0}, z0);
  }
}

}  // namespace fusegrad::cuda
