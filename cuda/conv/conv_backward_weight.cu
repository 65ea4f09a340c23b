// Convolution backward-weight as an implicit GEMM: dw ((KH·KW·C_in) × C_out) = gather(x)ᵀ · g, on
// the SIMT mainloop (cuda/gemm/simt.cuh). A is x gathered per tap (WgradOperand), B is g read as
// its (N·OH·OW) × C_out row-major matrix. The result is small and the reduction long (N·OH·OW),
// so K is split: split s sums its own K range into its own copy of dw in a workspace, and one
// pass (sum_splits) adds the copies in a fixed order, so the result does not depend on timing
// (atomics would). Groups run one after another, each on its channels of x and g (ConvDims).
#include <algorithm>

#include "common/launch.cuh"
#include "conv/conv_launch.cuh"
#include "conv/conv_operands.cuh"
#include "gemm/operand.cuh"

namespace fusegrad::cuda {
namespace {

// K per split at least: 64 mainloop steps, so a block's start-up and its share of the summing
// pass (one read of an m×n partial) stay small beside its work.
constexpr int64_t kMinSplitDepth = 512;
// Blocks to aim for: two waves of the GPU's SMs.
constexpr int64_t kWavesOfBlocks = 2;

template <class Tile>
void launch_wgrad(const ConvDims& d, const float* x, const float* g, float* dw, int64_t splits, cudaStream_t stream,
                  int device) {
  const int64_t m = d.kh * d.kw * d.ci, n = d.co, k = d.n * d.oh * d.ow;
  const WgradOperand a{conv_index(d), x, d.ci % 4 == 0 && aligned16(x)};
  const StridedOperand<false> b{g, d.co * d.groups, 1, 0, d.co, d.co % 4 == 0 && aligned16(g)};
  if (splits <= 0) {
    const int64_t tiles = ((m + Tile::kBM - 1) / Tile::kBM) * ((n + Tile::kBN - 1) / Tile::kBN);
    const int64_t wanted = (kWavesOfBlocks * multiprocessor_count(device) + tiles - 1) / tiles;
    splits = std::min(wanted, std::max<int64_t>(1, k / kMinSplitDepth));
  }
  splits = std::clamp<int64_t>(splits, 1, std::min(kMaxGridY, (k + Tile::kBK - 1) / Tile::kBK));
  const int64_t chunk = ((k + splits - 1) / splits + Tile::kBK - 1) / Tile::kBK * Tile::kBK;
  splits = (k + chunk - 1) / chunk;
  float* target = dw;
  if (splits > 1) FG_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&target), sizeof(float) * splits * m * n, stream));
  const Epilogue ep = conv_epilogue(target, m, n, nullptr, Activation::none, 0.0f);
  FG_LAUNCH((simt_gemm_kernel<Tile, WgradOperand, StridedOperand<false>>), simt_grid<Tile>(m, n, splits),
            Tile::kThreads, 0, stream, a, b, ep, m, n, k, splits > 1 ? chunk : int64_t{0}, int64_t{0});
  if (splits > 1) {
    sum_splits(target, dw, splits, m * n, stream, device);
    FG_CUDA_CHECK(cudaFreeAsync(target, stream));
  }
}

}  // namespace

void conv_backward_weight(const ConvDims& d, const float* x, const float* g, float* dw, ConvTiles tiles,
                          int64_t splits, cudaStream_t stream, int device) {
  const int64_t m = d.kh * d.kw * d.ci, n = d.co, k = d.n * d.oh * d.ow;
  if (m == 0 || n == 0) return;
  DeviceGuard guard(device);
  if (is_depthwise(d)) return depthwise_backward_weight(d, x, g, dw, stream, device);
  if (k == 0) {  // no output pixels: the gradient is zero
    FG_CUDA_CHECK(cudaMemsetAsync(dw, 0, sizeof(float) * m * n * d.groups, stream));
    return;
  }
  const bool large = conv_large_tiles(tiles, m, n, 1, device);
  const auto launch = [&](const float* xg, const float* gg, float* out) {
    if (large) launch_wgrad<SimtLarge>(d, xg, gg, out, splits, stream, device);
    else launch_wgrad<SimtSmall>(d, xg, gg, out, splits, stream, device);
  };
  if (d.groups == 1) return launch(x, g, dw);
  // Group by group (the batch items are K splits), each into its own block of a workspace,
  // then interleaved into dw's columns.
  float* parts = nullptr;
  FG_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&parts), sizeof(float) * d.groups * m * n, stream));
  for (int64_t grp = 0; grp < d.groups; ++grp) launch(x + grp * d.ci, g + grp * d.co, parts + grp * m * n);
  merge_groups(parts, dw, d.groups, m, n, stream, device);
  FG_CUDA_CHECK(cudaFreeAsync(parts, stream));
}

}  // namespace fusegrad::cuda
