// The emulated forms of common/ptx.cuh: the same functions, each a checked warp collective
// (mma, ldmatrix) or a per-thread queue (cp.async). The trailing source-location arguments are
// filled in by the compiler at each call site.
//
//   mma_*         gather the 32 lanes' A, B and C fragments by the PTX ISA's fragment tables,
//                 compute D = A*B + C from the bf16/fp16 values, or from tf32 values rounded from
//                 the fp32 registers as cvt.rna.tf32.f32 does, summing the exact products in double
//                 and rounding once to fp32, and scatter D by the same table.
//   ldmatrix_*    lane 8m+r names row r of matrix m (16-byte aligned, inside shared memory); lane l
//                 receives row l/4, columns 2(l%4) and 2(l%4)+1 (.trans: that column pair of the
//                 transposed matrix) of each matrix in its registers.
//   wgmma_*       see below.
//   cp_async_*    checks the addresses and queues the copy; cp_async_wait<N> performs all but the
//                 N most recent committed groups. Until then the destination keeps its old bytes,
//                 and an access to it through a checked shared-memory name fails.
#pragma once
#include <cstdint>

#include "common/emulator/sync_intrinsics.h"

namespace fusegrad::cuda::ptx {

void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4], FG_EMU_HERE);
void mma_m16n8k16_f16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4], FG_EMU_HERE);
void mma_m16n8k8_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4], FG_EMU_HERE);
void mma_m16n8k32_u8s8(int (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const int (&c)[4], FG_EMU_HERE);

void ldmatrix_x1(uint32_t (&r)[1], const void* smem_row, FG_EMU_HERE);
void ldmatrix_x2(uint32_t (&r)[2], const void* smem_row, FG_EMU_HERE);
void ldmatrix_x4(uint32_t (&r)[4], const void* smem_row, FG_EMU_HERE);
void ldmatrix_x1_trans(uint32_t (&r)[1], const void* smem_row, FG_EMU_HERE);
void ldmatrix_x2_trans(uint32_t (&r)[2], const void* smem_row, FG_EMU_HERE);
void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem_row, FG_EMU_HERE);

void cp_async_issue(const char* what, void* smem_dst, const void* gmem_src, int bytes, int src_bytes, const char* file,
                    int line);
template <int kBytes>
inline void cp_async_ca(void* smem_dst, const void* gmem_src, int src_bytes = kBytes, FG_EMU_HERE) {
  static_assert(kBytes == 4 || kBytes == 8 || kBytes == 16, "cp.async.ca copies 4, 8 or 16 bytes");
  cp_async_issue("cp.async.ca", smem_dst, gmem_src, kBytes, src_bytes, fg_file, fg_line);
}
inline void cp_async_cg(void* smem_dst, const void* gmem_src, int src_bytes = 16, FG_EMU_HERE) {
  cp_async_issue("cp.async.cg", smem_dst, gmem_src, 16, src_bytes, fg_file, fg_line);
}
void cp_async_commit();
void cp_async_wait_group(int pending_groups);
template <int kPendingGroups>
inline void cp_async_wait() {
  static_assert(kPendingGroups >= 0, "cp.async.wait_group takes a count of groups");
  cp_async_wait_group(kPendingGroups);
}
void cp_async_wait_all();

// fp32 -> tf32 (kept in an fp32 register), rounding to nearest with ties away from zero.
float tf32_round(float x);

// wgmma. A descriptor's start address is the byte offset in the launch's dynamic shared memory,
// so the emulation decodes the same bit fields the GPU does. wgmma_m64nNk16_bf16, wgmma_commit and
// wgmma_wait are collectives of the calling warp, as on the GPU: the issue records the op (its
// descriptors and each lane's accumulators) in the warp's open group, commit closes the group, and
// wait<N> runs every group but the N newest, in order. Running reads A and B as the descriptors lay
// them out (no swizzle) through the shared-memory checks and adds into the accumulators, each warp
// its 16 rows of the warpgroup's 64 (warp index % 4). So an operand refilled before the wait that
// retires its wgmma is read refilled (or, still being copied, is an error), and a block that ends
// with a wgmma not waited for is an error. The proxy fence and wgmma.fence are no-ops.
uint64_t smem_descriptor(const void* p, uint32_t lbo_bytes, uint32_t sbo_bytes, FG_EMU_HERE);
void wgmma_m64n128k16_bf16(float (&d)[64], uint64_t desc_a, uint64_t desc_b, FG_EMU_HERE);
void wgmma_m64n256k16_bf16(float (&d)[128], uint64_t desc_a, uint64_t desc_b, FG_EMU_HERE);
void wgmma_commit(FG_EMU_HERE);
void wgmma_wait_group(int pending_groups, const char* file, int line);
inline void wgmma_fence() {}
template <int kPendingGroups>
inline void wgmma_wait(FG_EMU_HERE) {
  static_assert(kPendingGroups >= 0, "wgmma.wait_group takes a count of groups");
  wgmma_wait_group(kPendingGroups, fg_file, fg_line);
}
template <int kN>
inline void wgmma_fence_operands(float (&)[kN]) {}
inline void fence_proxy_async_shared() {}

}  // namespace fusegrad::cuda::ptx
