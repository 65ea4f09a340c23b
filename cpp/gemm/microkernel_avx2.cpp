// The GEMM microkernel for AVX2+FMA (6×16: 12 ymm accumulators). Compiled only into the avx2 object library
// (FG_ISA_SOURCES_avx2), so the driver compiled for this level links this level's kernel.
#include "gemm/microkernel_impl.h"

#if !(defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__))
#error "microkernel_avx2.cpp must be compiled with the avx2 flags only"
#endif

namespace fusegrad {
namespace FG_ISA_NS {

FG_DEFINE_MICROKERNEL_ENTRY_POINTS

}  // namespace FG_ISA_NS
}  // namespace fusegrad
