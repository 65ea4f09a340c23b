// The attention kernel table of one ISA level (the kernels: attention_forward.cpp and
// attention_backward.cpp, layer_norm.cpp).
#include "attention/attention_impl.h"

namespace fusegrad {
namespace FG_ISA_NS {

extern const AttentionKernels attention_kernels = {&attn::forward, &attn::backward, &attn::layer_norm_forward,
                                                   &attn::layer_norm_backward, &attn::embedding_backward};

}  // namespace FG_ISA_NS
}  // namespace fusegrad
