// Convolution backward-input as an implicit GEMM: dx (N·H·W × C_in) = gather(g) · wᵀ, on the SIMT
// mainloop (cuda/gemm/simt.cuh). Row (n, y, x) of A holds, for every tap (ky, kx) and output
// channel, the gradient of the output pixel that tap connects to (DgradOperand), or 0 where the
// stride skips it; B is w read per tap as C_out × C_in (DgradWeightOperand). Every input pixel is
// written once, so there is no scatter and no atomics. With stride s, (s_h·s_w − 1)/(s_h·s_w) of
// the taps are zeros the mainloop still multiplies: a per-phase split (as cpp/conv does) would
// skip them; stride 1, the common case, wastes nothing. Groups are the batch items, as in the
// forward.
#include "common/launch.cuh"
#include "conv/conv_launch.cuh"
#include "conv/conv_operands.cuh"

namespace fusegrad::cuda {

void conv_backward_input(const ConvDims& d, const float* g, const float* w, float* dx, ConvTiles tiles,
                         cudaStream_t stream, int device) {
  const int64_t m = d.n * d.h * d.w, n = d.ci, k = d.kh * d.kw * d.co;
  if (m == 0 || n == 0) return;
  DeviceGuard guard(device);
  if (is_depthwise(d)) return depthwise_backward_input(d, g, w, dx, stream, device);
  const ConvIndex c = conv_index(d);
  const DgradOperand a{c, g, d.co % 4 == 0 && aligned16(g)};
  const DgradWeightOperand b{c, w, d.co % 4 == 0 && aligned16(w)};
  const Epilogue ep = grouped_epilogue(dx, m, n, d.groups, nullptr, Activation::none, 0.0f);
  const bool large = conv_large_tiles(tiles, m, n, d.groups, device);
  for (int64_t z0 = 0; z0 < d.groups; z0 += kMaxGridY) {  // one batch item a group
    const int64_t items = d.groups - z0;
    if (large)
      FG_LAUNCH((simt_gemm_kernel<SimtLarge, DgradOperand, DgradWeightOperand>), simt_grid<SimtLarge>(m, n, items),
                SimtLarge::kThreads, 0, stream, a, b, ep, m, n, k, int64_t{0}, z0);
    else
      FG_LAUNCH((simt_gemm_kernel<SimtSmall, DgradOperand, DgradWeightOperand>), simt_grid<SimtSmall>(m, n, items),
                SimtSmall::kThreads, 0, stream, a, b, ep, m, n, k, int64_t{0}, z0);
  }
}

}  // namespace fusegrad::cuda
