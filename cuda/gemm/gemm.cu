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
      if (tiles == GemmTiles::wgmma || tiles == GemmTiles::wgmma_wide)
        throw std::invalid_argument("gemm: tiles 'wgmma' are for precision 'bf16'");
      const bool large = tiles == GemmTiles::automatic ? use_large_tiles<SimtLarge>(g.m, g.n, g.batch, sms)
                                                       : tiles == GemmTiles::large;
      gemm_simt(g, large, stream);
      return;
    }
    case GemmPrecision::tf32:
    case GemmPrecision::bf16: {
      const bool large = tiles == GemmTiles::automatic ? use_large_tiles<MmaLarge>(g.m, g.n, g.batch, sms)
                                                       : tiles == GemmTiles::large;
      if (precision == GemmPrecision::tf32) {
        if (tiles == GemmTiles::wgmma || tiles == GemmTiles::wgmma_wide)
          throw std::invalid_argument("gemm: tiles 'wgmma' are for precision 'bf16'");
        gemm_tf32(g, large, stream, device);
      } else {
        gemm_bf16(g, tiles, large, stream, device);
      }
      return;
    }
  }
  throw std::invalid_argument("gemm: unknown precision");
}

void require_wgmma(int device) {
#if defined(FG_EMULATED) || defined(FG_SM90A_BUILT)
  int major = 0, minor = 0;
  FG_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  FG_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  if (major != 9 || minor != 0)
    throw std::invalid_argument("gemm: the wgmma kernel runs on compute capability 9.0 (Hopper) only, this device is " +
                                std::to_string(major) + "." + std::to_string(minor));
#else
  (void)device;
  throw std::invalid_argument("gemm: the wgmma kernel needs the CUDA module built with sm_90a code "
                              "(FUSEGRAD_CUDA_ARCHS containing 90a)");
#endif
}

}  // namespace fusegrad::cuda
