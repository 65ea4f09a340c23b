// Packing of GEMM operands into the micro-panel layouts the microkernel reads (gemm.h), and the
// aligned per-thread buffers they live in. Compiled once per ISA level.
#pragma once
#include <cstdint>

#ifndef FG_ISA_NS
#error "pack.h is for sources compiled once per ISA level"
#endif

namespace fusegrad {
namespace FG_ISA_NS {

// See GemmKernels::pack_a / pack_b in gemm.h. Sources may have any strides: the unit-stride
// cases (row- or column-major, i.e. plain arrays and transposed views) take vectorised paths.
void pack_a(const float* a, int64_t rs, int64_t cs, int64_t m, int64_t k, float* dst);
void pack_b(const float* b, int64_t rs, int64_t cs, int64_t k, int64_t n, float* dst);

// A 64-byte aligned buffer that grows and is never shrunk, so the packing buffers of a thread are
// allocated once and reused by every later GEMM (and stay warm in its caches).
class PackBuffer {
 public:
  PackBuffer() = default;
  PackBuffer(const PackBuffer&) = delete;
  PackBuffer& operator=(const PackBuffer&) = delete;
  ~PackBuffer();
  float* get(int64_t floats);  // throws std::bad_alloc

 private:
  float* data_ = nullptr;
  int64_t size_ = 0;
};

}  // namespace FG_ISA_NS
}  // namespace fusegrad
