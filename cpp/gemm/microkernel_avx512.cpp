// The GEMM microkernel for AVX-512 (12×32: 24 zmm accumulators). Compiled only into the avx512 object library
// (FG_ISA_SOURCES_avx512), so the driver compiled for this level links this level's kernel.
#include "gemm/microkernel_impl.h"

#if !defined(__AVX512F__)
#error "microkernel_avx512.cpp must be compiled with the avx512 flags only"
#endif

namespace fusegrad {
namespace FG_ISA_NS {

FG_DEFINE_MICROKERNEL_ENTRY_POINTS

}  // namespace FG_ISA_NS
}  // namespace fusegrad
