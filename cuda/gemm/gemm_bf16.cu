// The BF16 tensor-core GEMM: mma_gemm_kernel (mma.cuh) with mma.sync m16n8k16.bf16. A and B
// arrive in fp32; each value is rounded to bf16 (8-bit mantissa, to nearest even) as two k8
// fragments are packed into the mma's registers, products are exact and summed in fp32: the
// error is that of bf16 inputs (relative rounding up to 2^-9 each; ~3e-3 of ‖A·B‖ on random data).
// Shared memory holds fp32, so this kernel moves as many bytes as the TF32 one; its gain is the
// doubled mma rate. (An operand already in bf16 would halve the traffic: not this kernel.)
#include <cstring>

#include <cuda_bf16.h>

#include "common/launch.cuh"
#include "common/ptx.cuh"
#include "gemm/gemm_launch.cuh"
#include "gemm/mma.cuh"

namespace fusegrad::cuda {
namespace {

struct Bf16Mma {
  static constexpr int kK8 = 2;  // two k8 fragments per m16n8k16
  // (lo, hi) rounded to bf16 and packed, lo in the low half.
  __device__ __forceinline__ static uint32_t pack(uint32_t lo, uint32_t hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(__uint_as_float(lo), __uint_as_float(hi));
    uint32_t r;
    memcpy(&r, &v, sizeof r);
    return r;
  }
  // Register pairs hold physical k (t, t+4) of each k8 half (see mma.cuh): a0 rows g, a1 rows g+8,
  // a2/a3 the same from the second k8 fragment.
  __device__ __forceinline__ static void fragment_a(uint32_t (&a)[4], const uint32_t (&f)[2][4]) {
    a[0] = pack(f[0][0], f[0][2]), a[1] = pack(f[0][1], f[0][3]);
    a[2] = pack(f[1][0], f[1][2]), a[3] = pack(f[1][1], f[1][3]);
  }
  __device__ __forceinline__ static void fragment_b(uint32_t (&b)[2], const uint32_t (&f)[2][4], int first) {
    b[0] = pack(f[0][first], f[0][first + 1]), b[1] = pack(f[1][first], f[1][first + 1]);
  }
  __device__ __forceinline__ static void run(float (&acc)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    ptx::mma_m16n8k16_bf16(acc, a, b, acc);
  }
};

template <class Tile, bool kAK, bool kBK>
void launch_bf16(const GemmArgs& g, cudaStream_t stream, int device) {
  const auto a = gemm_operand_a<kAK>(g);
  const auto b = gemm_operand_b<kBK>(g);
  const Epilogue ep = gemm_epilogue(g);
  constexpr int smem = static_cast<int>(mma_smem_bytes<Tile, kAK, kBK>());
  const auto kernel = mma_gemm_kernel<Bf16Mma, Tile, StridedOperand<kAK>, StridedOperand<kBK>>;
  allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem, device);
  for (int64_t z0 = 0; z0 < g.batch; z0 += kMaxGridY)
    FG_LAUNCH((mma_gemm_kernel<Bf16Mma, Tile, StridedOperand<kAK>, StridedOperand<kBK>>),
              simt_grid<Tile>(g.m, g.n, g.batch - z0), Tile::kThreads, smem, stream, a, b, ep, g.m, g.n, g.k, z0);
}

}  // namespace

void gemm_bf16(const GemmArgs& g, bool large, cudaStream_t stream, int device) {
  with_gemm_layouts(g, [&](auto ak, auto bk) {
    if (large) launch_bf16<MmaLarge, decltype(ak)::value, decltype(bk)::value>(g, stream, device);
    else launch_bf16<MmaSmall, decltype(ak)::value, decltype(bk)::value>(g, stream, device);
  });
}

}  // namespace fusegrad::cuda
