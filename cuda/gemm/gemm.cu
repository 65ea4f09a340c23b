// gemm(): checks the strides, picks the kernel of the precision asked for and its tile size.
#include <stdexcept>
#include <string>

#include "common/cuda_check.cuh"
#include "gemm/gemm.cuh"
#include "gemm/mma.cuh"
#include "gemm/simt.cuh"

namespace fusegrad::cuda {

void gemm(const GemmArgs& g, GemmPrecision precision, GemmTiles tiles, cudaStream_t stream, int device) {
  if (g.batch < 0 || g.m < 0 || g.n < 0 || g.k < 0) throw std::invalid_argument("gemm: negative size");
  if (g.batch == 0 || g.m == 0 || g.n == 0) return;
  if (g.a_rs != 1 && g.a_cs != 1)
    throw std::invalid_argument("gemm: A must have a unit row or column stride, got strides (" +
                                std::to_string(g.a_rs) + ", " + std::to_string(g.a_cs) + ")");
  if (g.b_rs != 1 && g.b_cs != 1)
    throw std::invalid_argument("gemm: B must have a unit row or column stride, got strides (" +
                                std::to_string(g.b_rs) + ", " + std::to_string(g.b_cs) + ")");
  if (g.accumulate && (g.bias != nullptr || g.act != Activation::none))
    throw std::invalid_argument("gemm: accumulate takes no bias or activation");
  DeviceGuard guard(device);
  const int sms = multiprocessor_count(device);
  switch (precision) {
    case GemmPrecision::fp32: {
      const bool large = tiles == GemmTiles::automatic ? use_large_tiles<SimtLarge>(g.m, g.n, g.batch, sms)
                                                       : tiles == GemmTiles::large;
      gemm_simt(g, large, stream);
      return;
    }
    case GemmPrecision::tf32:
    case GemmPrecision::bf16: {
      const bool large = tiles == GemmTiles::automatic ? use_large_tiles<MmaLarge>(g.m, g.n, g.batch, sms)
                                                       : tiles == GemmTiles::large;
      if (precision == GemmPrecision::tf32) gemm_tf32(g, large, stream, device);
      else gemm_bf16(g, large, stream, device);
      return;
    }
  }
  throw std::invalid_argument("gemm: unknown precision");
}

}  // namespace fusegrad::cuda
