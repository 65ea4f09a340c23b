// The fp32 SIMT GEMM: simt_gemm_kernel (simt.cuh) on two strided operands, one instantiation per
// layout of A and B and per tile configuration. See simt.cuh for the tiling and why.
#include "common/launch.cuh"
#include "gemm/gemm_launch.cuh"
#include "gemm/simt.cuh"

namespace fusegrad::cuda {
namespace {

template <class Tile, bool kAK, bool kBK>
void launch_simt(const GemmArgs& g, cudaStream_t stream) {
  const auto a = gemm_operand_a<kAK>(g);
  const auto b = gemm_operand_b<kBK>(g);
  const Epilogue ep = gemm_epilogue(g);
  for (int64_t z0 = 0; z0 < g.batch; z0 += kMaxGridY)
    FG_LAUNCH((simt_gemm_kernel<Tile, StridedOperand<kAK>, StridedOperand<kBK>>), simt_grid<Tile>(g.m, g.n, g.batch - z0),
              Tile::kThreads, 0, stream, a, b, ep, g.m, g.n, g.k, int64_t{0}, z0);
}

}  // namespace

void gemm_simt(const GemmArgs& g, bool large, cudaStream_t stream) {
  with_gemm_layouts(g, [&](auto ak, auto bk) {
    if (large) launch_simt<SimtLarge, decltype(ak)::value, decltype(bk)::value>(g, stream);
    else launch_simt<SimtSmall, decltype(ak)::value, decltype(bk)::value>(g, stream);
  });
}

}  // namespace fusegrad::cuda
