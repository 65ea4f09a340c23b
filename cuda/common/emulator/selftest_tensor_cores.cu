// Self-tests of the emulated tensor-core instructions (driven by tests/emulator/test_emulator.py):
// mma.sync from per-lane fragments and from ldmatrix'd rows, ldmatrix itself, and wgmma with operand
// layouts the test chooses. Each kernel means the same on a GPU (gpu_check.sh builds them for
// sm_90a), so the hardware is held to the layouts the emulator reads.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/cuda_check.cuh"
#include "common/emulator/selftest.h"
#include "common/launch.cuh"
#include "common/ptx.cuh"

namespace py = pybind11;

namespace fusegrad::cuda::selftest {
namespace {

// One warp: d = mma(a, b, c) from per-lane fragment registers (lane-major, as a GPU holds them).
__global__ void mma_kernel(int kind, const uint32_t* a, const uint32_t* b, const float* c, float* d) {
  const int l = threadIdx.x;
  const uint32_t ra[4] = {a[4 * l], a[4 * l + 1], a[4 * l + 2], a[4 * l + 3]};
  const uint32_t rb[2] = {b[2 * l], b[2 * l + 1]};
  const float rc[4] = {c[4 * l], c[4 * l + 1], c[4 * l + 2], c[4 * l + 3]};
  float rd[4];
  if (kind == 0) ptx::mma_m16n8k16_bf16(rd, ra, rb, rc);
  else if (kind == 1) ptx::mma_m16n8k16_f16(rd, ra, rb, rc);
  else ptx::mma_m16n8k8_tf32(rd, ra, rb, rc);
  for (int i = 0; i < 4; ++i) d[4 * l + i] = rd[i];
}

// One warp: `count` 8x8 matrices of 16-bit values stored with `row_stride` elements per row in
// shared memory, loaded by ldmatrix; out[4 * lane + i] is the lane's register i.
__global__ void ldmatrix_kernel(int count, bool trans, const uint16_t* matrices, int row_stride, uint32_t* out) {
  FG_DYNAMIC_SHARED(uint16_t, smem);
  const int l = threadIdx.x;
  for (int i = l; i < count * 8 * row_stride; i += 32) {
    const int row = i / row_stride, col = i % row_stride;
    smem[i] = col < 8 ? matrices[row * 8 + col] : static_cast<uint16_t>(0xEEEE);
  }
  __syncwarp();
  const int m = (l / 8) % count, r = l % 8;  // lanes past 8 * count repeat valid rows
  const void* row = &smem[(m * 8 + r) * row_stride];
  uint32_t reg[4] = {0, 0, 0, 0};
  uint32_t r1[1], r2[2], r4[4];
  if (count == 1) {
    if (trans) ptx::ldmatrix_x1_trans(r1, row);
    else ptx::ldmatrix_x1(r1, row);
    reg[0] = r1[0];
  } else if (count == 2) {
    if (trans) ptx::ldmatrix_x2_trans(r2, row);
    else ptx::ldmatrix_x2(r2, row);
    reg[0] = r2[0];
    reg[1] = r2[1];
  } else {
    if (trans) ptx::ldmatrix_x4_trans(r4, row);
    else ptx::ldmatrix_x4(r4, row);
    for (int i = 0; i < 4; ++i) reg[i] = r4[i];
  }
  for (int i = 0; i < 4; ++i) out[4 * l + i] = reg[i];
}

// A warp's m16n8 accumulator fragment r into d (16×8, row-major) by the PTX accumulator layout.
template <class T>
__device__ void store_accumulators(T* d, const T (&r)[4]) {
  const int l = threadIdx.x % 32, g = l / 4, t = l % 4;
  d[g * 8 + 2 * t] = r[0];
  d[g * 8 + 2 * t + 1] = r[1];
  d[(g + 8) * 8 + 2 * t] = r[2];
  d[(g + 8) * 8 + 2 * t + 1] = r[3];
}

// One warp: D (16x8, fp32) = A (16x16, row-major) * B (16x8, row-major), with A loaded by
// ldmatrix.x4 and B by ldmatrix.x2.trans, as a GEMM does; D stored by the accumulator layout.
__global__ void ldmatrix_mma_kernel(int kind, const uint16_t* a, const uint16_t* b, float* d) {
  FG_SHARED(uint16_t, sa, [16][24]);  // rows padded to 48 bytes, still 16-byte aligned
  FG_SHARED(uint16_t, sb, [16][8]);
  const int l = threadIdx.x;
  for (int i = l; i < 256; i += 32) sa[i / 16][i % 16] = a[i];
  for (int i = l; i < 128; i += 32) sb[i / 8][i % 8] = b[i];
  __syncwarp();
  uint32_t ra[4], rb[2];
  ptx::ldmatrix_x4(ra, &sa[l % 16][(l / 16) * 8]);
  ptx::ldmatrix_x2_trans(rb, &sb[l % 16][0]);
  const float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  float r[4];
  if (kind == 0) ptx::mma_m16n8k16_bf16(r, ra, rb, c);
  else ptx::mma_m16n8k16_f16(r, ra, rb, c);
  store_accumulators(d, r);
}

// One warp: D (16x8, int32) = A (16x32 uint8, row-major) · B (32x8 int8), B given as B^T (8 rows of
// 32 k), with A and B loaded by ldmatrix.x4 / .x2 from 16-byte rows as the int8 GEMM loads them.
__global__ void ldmatrix_mma_int8_kernel(const uint8_t* a, const uint8_t* bt, int* d) {
  FG_SHARED(uint8_t, sa, [16][48]);  // rows padded to 48 bytes, 16-byte aligned
  FG_SHARED(uint8_t, sb, [8][48]);
  const int l = threadIdx.x;
  for (int i = l; i < 512; i += 32) sa[i / 32][i % 32] = a[i];
  for (int i = l; i < 256; i += 32) sb[i / 32][i % 32] = bt[i];
  __syncwarp();
  uint32_t ra[4], rb[2];
  ptx::ldmatrix_x4(ra, &sa[l % 16][l / 16 * 16]);
  ptx::ldmatrix_x2(rb, &sb[l % 8][l / 8 % 2 * 16]);
  const int c[4] = {0, 0, 0, 0};
  int r[4];
  ptx::mma_m16n8k32_u8s8(r, ra, rb, c);
  store_accumulators(d, r);
}

// One warpgroup: D (64×N, fp32) = A (64×16, row-major) · B^T for B given as N×16 (K-major), both
// placed in dynamic shared memory as 8×8 core matrices: core matrix (row group g, k group h) at
// byte g * sbo + h * lbo, its row r at + 16 r. One wgmma (fence, commit, wait 0), D stored by the
// accumulator layout. The layout is the test's to choose, so the descriptor fields are checked,
// not only the layout the GEMM uses.
template <int kN>
__global__ void wgmma_kernel(const uint16_t* a, const uint16_t* b, int lbo, int sbo, int b_offset, float* d) {
  FG_DYNAMIC_SHARED(uint16_t, smem);
  const int t = threadIdx.x;
  const auto place = [&](const uint16_t* src, int rows, int base) {
    for (int i = t; i < rows * 16; i += 128) {
      const int r = i / 16, k = i % 16;
      smem[(base + r / 8 * sbo + k / 8 * lbo + r % 8 * 16 + k % 8 * 2) / 2] = src[i];
    }
  };
  place(a, 64, 0);
  place(b, kN, b_offset);
  ptx::fence_proxy_async_shared();
  __syncthreads();
  float acc[kN / 2] = {};
  const uint64_t da = ptx::smem_descriptor(static_cast<const uint16_t*>(smem + 0), lbo, sbo);
  const uint64_t db = ptx::smem_descriptor(static_cast<const uint16_t*>(smem + b_offset / 2), lbo, sbo);
  ptx::wgmma_fence_operands(acc);
  ptx::wgmma_fence();
  if constexpr (kN == 128) ptx::wgmma_m64n128k16_bf16(acc, da, db);
  else ptx::wgmma_m64n256k16_bf16(acc, da, db);
  ptx::wgmma_commit();
  ptx::wgmma_wait<0>();
  ptx::wgmma_fence_operands(acc);
  const int row0 = t / 32 * 16 + t % 32 / 4, col0 = 2 * (t % 4);
  for (int j = 0; j < kN / 8; ++j)
    for (int i = 0; i < 4; ++i) d[(row0 + 8 * (i / 2)) * kN + 8 * j + col0 + i % 2] = acc[4 * j + i];
}

std::vector<float> mma(const std::string& kind, const std::vector<uint32_t>& a, const std::vector<uint32_t>& b,
                       const std::vector<float>& c) {
  const int k = kind == "bf16" ? 0 : kind == "f16" ? 1 : kind == "tf32" ? 2 : -1;
  if (k < 0) throw py::value_error("kind must be bf16, f16 or tf32");
  if (a.size() != 128 || b.size() != 64 || c.size() != 128) throw py::value_error("a: 32x4, b: 32x2, c: 32x4 values");
  py::gil_scoped_release release;
  DeviceArray<uint32_t> da(a), db(b);
  DeviceArray<float> dc(c), dd(128);
  FG_LAUNCH(mma_kernel, 1, 32, 0, nullptr, k, da.get(), db.get(), dc.get(), dd.get());
  return dd.read();
}

std::vector<uint32_t> ldmatrix(int count, bool trans, const std::vector<uint16_t>& matrices, int row_stride) {
  if (count != 1 && count != 2 && count != 4) throw py::value_error("count must be 1, 2 or 4");
  if (static_cast<int>(matrices.size()) != 64 * count || row_stride < 8 || row_stride % 8 != 0)
    throw py::value_error("matrices: 64 values per matrix; row_stride: a multiple of 8");
  py::gil_scoped_release release;
  DeviceArray<uint16_t> dm(matrices);
  DeviceArray<uint32_t> out(128);
  const size_t smem = static_cast<size_t>(count) * 8 * row_stride * sizeof(uint16_t);
  FG_LAUNCH(ldmatrix_kernel, 1, 32, smem, nullptr, count, trans, dm.get(), row_stride, out.get());
  return out.read();
}

std::vector<float> ldmatrix_mma(const std::string& kind, const std::vector<uint16_t>& a, const std::vector<uint16_t>& b) {
  const int k = kind == "bf16" ? 0 : kind == "f16" ? 1 : -1;
  if (k < 0) throw py::value_error("kind must be bf16 or f16");
  if (a.size() != 256 || b.size() != 128) throw py::value_error("a: 16x16, b: 16x8 values");
  py::gil_scoped_release release;
  DeviceArray<uint16_t> da(a), db(b);
  DeviceArray<float> dd(128);
  FG_LAUNCH(ldmatrix_mma_kernel, 1, 32, 0, nullptr, k, da.get(), db.get(), dd.get());
  return dd.read();
}

// D (64×N) of one wgmma of A (64×16) and B (N×16), bf16 bits row-major, placed with the given core
// matrix offsets (bytes: lbo between k groups, sbo between row groups, B from byte b_offset).
std::vector<float> wgmma(int n, const std::vector<uint16_t>& a, const std::vector<uint16_t>& b, int lbo, int sbo,
                         int b_offset) {
#if !defined(FG_EMULATED) && !defined(FG_SM90A_BUILT)
  throw std::runtime_error("wgmma needs this module built for sm_90a (-DFG_SM90A_BUILT)");
#endif
  if ((n != 128 && n != 256) || a.size() != 64 * 16 || b.size() != static_cast<size_t>(n) * 16)
    throw py::value_error("n: 128 or 256; a: 64x16, b: nx16 values");
  const size_t smem = static_cast<size_t>(b_offset) + static_cast<size_t>(n / 8 - 1) * sbo + lbo + 128;
  py::gil_scoped_release release;
  DeviceArray<uint16_t> da(a), db(b);
  DeviceArray<float> dd(static_cast<size_t>(64) * n);
  if (n == 128) {
    FG_CUDA_CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(wgmma_kernel<128>),
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    FG_LAUNCH(wgmma_kernel<128>, 1, 128, smem, nullptr, da.get(), db.get(), lbo, sbo, b_offset, dd.get());
  } else {
    FG_CUDA_CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(wgmma_kernel<256>),
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    FG_LAUNCH(wgmma_kernel<256>, 1, 128, smem, nullptr, da.get(), db.get(), lbo, sbo, b_offset, dd.get());
  }
  return dd.read();
}

std::vector<int> ldmatrix_mma_int8(const std::vector<uint8_t>& a, const std::vector<uint8_t>& bt) {
  if (a.size() != 512 || bt.size() != 256) throw py::value_error("a: 16x32 bytes, bt: 8x32 bytes");
  py::gil_scoped_release release;
  DeviceArray<uint8_t> da(a), db(bt);
  DeviceArray<int> dd(128);
  FG_LAUNCH(ldmatrix_mma_int8_kernel, 1, 32, 0, nullptr, da.get(), db.get(), dd.get());
  return dd.read();
}

}  // namespace

void register_tensor_core_selftests(py::module_& m) {
  m.def("selftest_mma", &mma, py::arg("kind"), py::arg("a"), py::arg("b"), py::arg("c"));
  m.def("selftest_ldmatrix", &ldmatrix, py::arg("count"), py::arg("trans"), py::arg("matrices"), py::arg("row_stride"));
  m.def("selftest_ldmatrix_mma", &ldmatrix_mma, py::arg("kind"), py::arg("a"), py::arg("b"));
  m.def("selftest_ldmatrix_mma_int8", &ldmatrix_mma_int8, py::arg("a"), py::arg("bt"));
  m.def("selftest_wgmma", &wgmma, py::arg("n"), py::arg("a"), py::arg("b"), py::arg("lbo"), py::arg("sbo"),
        py::arg("b_offset"));
}

}  // namespace fusegrad::cuda::selftest
