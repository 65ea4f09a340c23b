// The exported table of convolution kernels (conv.h), compiled once per ISA level like every
// file here: each copy lives in fusegrad::FG_ISA_NS, its internals in the nested namespace conv.
//
// Where things are, BLIS-style (blocking, packing, micro-tiles, then the loops around them):
//   blocking.h                   every tunable: tile shapes, band and segment sizes, thread grain,
//                                the backward-input cost model
//   geometry.h/.cpp              conv's packing: run plans and offsets, tap sets, pixel classes,
//                                inside hulls, worked out once per call
//   tiles/indirect.h             the indirect tile (forward, backward-input phases and scatter)
//   tiles/gather.h               the gather tile (backward-input, first layers)
//   tiles/patch.h                the patch tile (backward-weight)
//   passes.h                     the six passes of the table, one file each:
//   forward.h/.cpp               forward: plan, raster- and class-order workers, conv_forward
//   forward_max_pool.cpp         forward fused with max-pooling
//   backward_input.h/.cpp        backward-input's forms and the chooser, conv_backward_input
//   backward_input_gather.h/.cpp   gather form (stride 1, C_in <= kDirectMaxCin)
//   backward_input_scatter.cpp     scatter form (small C_in)
//   backward_input_phases.cpp      phase form (any stride)
//   backward_input_forward.cpp     as a forward convolution (stride 1)
//   backward_weight.h/.cpp       backward-weight: patch plan and worker, conv_backward_weight
//   backward_bias.h/.cpp         backward-bias
//   backward.cpp                 all gradients in one call; first layers image by image
//   depthwise.h/.cpp             depthwise convolutions (groups = C_in): direct kernels, a table of
//                                their own
//   grouped.h/.cpp               groups > 1 (compiled once): regroup, run these passes per group
#include "conv/conv.h"
#include "conv/passes.h"

namespace fusegrad {
namespace FG_ISA_NS {

extern const ConvKernels conv_kernels{conv::conv_forward,        conv::conv_forward_max_pool, conv::conv_backward_input,
                                      conv::conv_backward_weight, conv::conv_backward_bias,    conv::conv_backward};

}  // namespace FG_ISA_NS
}  // namespace fusegrad
