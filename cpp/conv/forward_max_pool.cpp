// Forward fused with max-pooling: the conv output is pooled band by band while still in cache.
#include <algorithm>
#include <vector>

#include "conv/forward.h"
#include "conv/passes.h"
#include "pool/pool.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace conv {

// Forward followed by max pooling over non-overlapping pool×pool windows (stride = window, no
// padding, PyTorch's floor rule): y (N, OH/pool, OW/pool, C_out) and indices as max_pool2d gives
// them (positions in the conv output's OH×OW plane), or no indices when null (inference: finding
// and writing them is about half the cost of the pooling). The conv output never goes to memory: each
// band of conv rows (kPoolBandBytes, whole pooled rows) is computed into a per-thread buffer still
// in L2 when it is pooled, which on a first layer saves writing and re-reading the largest tensor
// of the network. The bias is added in the tiles (so the pooled values and their ties are exactly those
// of max_pool2d on the conv output); the activation is applied to the pooled values: the caller
// guarantees it is non-decreasing, so it commutes with max.
void conv_forward_max_pool(const ConvShape& s, const float* x, const float* w, const float* bias, Activation act,
                           float act_param, int64_t pool, float* y, int32_t* indices) {
  const int64_t pooled_h = s.oh / pool, pooled_w = s.ow / pool;  // the pooled output's rows and columns
  if (s.n * pooled_h * pooled_w == 0 || s.co == 0) return;
  const ForwardPlan plan(s, w);
  const int R = plan.rows;
  // Pooled rows per band: as many as keep the band's conv rows within kPoolBandBytes.
  const int64_t conv_row_bytes = pool * s.ow * s.co * int64_t(sizeof(float));
  const int64_t band_pooled_rows = std::clamp<int64_t>(kPoolBandBytes / conv_row_bytes, 1, pooled_h);
  const int64_t bands_per_image = ceil_div(pooled_h, band_pooled_rows), bands = s.n * bands_per_image;
  const int64_t max_band_pixels = band_pooled_rows * pool * s.ow;  // conv pixels in a full band
  const double band_flops = plan.tile_flops() * double(ceil_div(max_band_pixels, R));
  const int64_t grain = std::max<int64_t>(1, static_cast<int64_t>(kThreadFlops / band_flops));
  parallel_for(bands, grain, [&](int64_t b0, int64_t b1) {
    RasterWorker worker(plan);
    // The band's conv output, with room for the whole-vector stores of a partial last tile.
    std::vector<float> band_out(static_cast<size_t>((ceil_div(max_band_pixels, R) * R + 1) * s.co));
    for (int64_t bd = b0; bd < b1; ++bd) {
      // The band's pooled rows: npy of them from py0; its conv rows: npy * pool from py0 * pool.
      const int64_t img = bd / bands_per_image, py0 = (bd % bands_per_image) * band_pooled_rows;
      const int64_t npy = std::min(band_pooled_rows, pooled_h - py0), band_pixels = npy * pool * s.ow;
      const int64_t m_band = img * s.oh * s.ow + py0 * pool * s.ow;
      for (int64_t m = 0; m < band_pixels; m += R)
        worker.tile(x, m_band + m, static_cast<int>(std::min<int64_t>(R, band_pixels - m)), band_out.data() + m * s.co,
                    bias, Activation::none);
      const PoolShape window{1, npy * pool, s.ow, s.co, npy, pooled_w, pool, pool, pool, pool, 0, 0, 1, 1};
      float* yb = y + (img * pooled_h + py0) * pooled_w * s.co;
      int32_t* ib = indices ? indices + (img * pooled_h + py0) * pooled_w * s.co : nullptr;
      pool_kernels.max_forward(window, band_out.data(), yb, ib);
      // The band's indices count from its first conv row; in the conv output's plane that row
      // is py0 * pool.
      const int32_t shift = static_cast<int32_t>(py0 * pool * s.ow);
      if (ib && shift != 0)
        for (int64_t i = 0; i < npy * pooled_w * s.co; ++i) ib[i] += shift;
      if (act != Activation::none) {
        with_activation(act, [&](auto kind) {
          if constexpr (decltype(kind)::value != Activation::none)
            ukernel::activate_tile<decltype(kind)::value>(yb, s.co, static_cast<int>(npy * pooled_w),
                                                          static_cast<int>(s.co), act_param);
        });
      }
    }
  });
}

}  // namespace conv
}  // namespace FG_ISA_NS
}  // namespace fusegrad
