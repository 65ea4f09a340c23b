// The GEMM microkernel for portable C++ (4×8 scalars). Compiled only into the generic object library
// (FG_ISA_SOURCES_generic), so the driver compiled for this level links this level's kernel.
#include "gemm/microkernel_impl.h"

#if defined(__AVX2__)
#error "microkernel_generic.cpp must be compiled with the generic flags only"
#endif

namespace fusegrad {
namespace FG_ISA_NS {

FG_DEFINE_MICROKERNEL_ENTRY_POINTS

}  // namespace FG_ISA_NS
}  // namespace fusegrad
