// The attention kernel table of one ISA level (the kernels: attention_forward.cpp and
// attention_backward.cpp).
#include "attention/attention_impl.h"

namespace fusegrad {
namespace FG_ISA_NS {

extern const AttentionKernels attention_kernels = {&attn::forward, &attn::backward};

}  // namespace FG_ISA_NS
}  // namespace fusegrad
