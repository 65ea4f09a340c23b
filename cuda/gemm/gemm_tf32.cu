// The TF32 tensor-core GEMM: mma_gemm_kernel (mma.cuh) with mma.sync m16n8k8.tf32. Each fp32
// input is rounded to tf32 (10-bit mantissa, cvt.rna: to nearest, ties away) once per fragment,
// in registers; products are exact and summed in fp32, so the error is that of tf32 inputs
// (relative rounding up to 2^-12 each; ~3e-4 of ‖A·B‖ on random data).
#include "common/launch.cuh"
#include "common/ptx.cuh"
#include "gemm/gemm_launch.cuh"
#include "gemm/mma.cuh"

namespace fusegrad::cuda {
namespace {

struct Tf32Mma {
  static constexpr int kK8 = 1;  // one k8 fragment per mma
  __device__ __forceinline__ static uint32_t round(uint32_t bits) {
    return __float_as_uint(ptx::tf32_round(__uint_as_float(bits)));
  }
  __device__ __forceinline__ static void fragment_a(uint32_t (&a)[4], const uint32_t (&f)[1][4]) {
#pragma unroll
    for (int i = 0; i < 4; ++i) a[i] = round(f[0][i]);
  }
  __device__ __forceinline__ static void fragment_b(uint32_t (&b)[2], const uint32_t (&f)[1][4], int first) {
    b[0] = round(f[0][first]), b[1] = round(f[0][first + 1]);
  }
  __device__ __forceinline__ static void run(float (&acc)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    ptx::mma_m16n8k8_tf32(acc, a, b, acc);
  }
};

template <class Tile, bool kAK, bool kBK>
void launch_tf32(const GemmArgs& g, cudaStream_t stream, int device) {
  const auto a = gemm_operand_a<kAK>(g);
  const auto b = gemm_operand_b<kBK>(g);
  const Epilogue ep = gemm_epilogue(g);
  constexpr int smem = static_cast<int>(mma_smem_bytes<Tile, kAK, kBK>());
  const auto kernel = mma_gemm_kernel<Tf32Mma, Tile, StridedOperand<kAK>, StridedOperand<kBK>>;
  allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem, device);
  for (int64_t z0 = 0; z0 < g.batch; z0 += kMaxGridY)
    FG_LAUNCH((mma_gemm_kernel<Tf32Mma, Tile, StridedOperand<kAK>, StridedOperand<kBK>>),
              simt_grid<Tile>(g.m, g.n, g.batch - z0), Tile::kThreads, smem, stream, a, b, ep, g.m, g.n, g.k, z0);
}

}  // namespace

void gemm_tf32(const GemmArgs& g, bool large, cudaStream_t stream, int device) {
  with_gemm_layouts(g, [&](auto ak, auto bk) {
    if (large) launch_tf32<MmaLarge, decltype(ak)::value, decltype(bk)::value>(g, stream, device);
    else launch_tf32<MmaSmall, decltype(ak)::value, decltype(bk)::value>(g, stream, device);
  });
}

}  // namespace fusegrad::cuda
