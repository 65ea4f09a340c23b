// Softmax, log-softmax and the fused losses built on them (softmax cross-entropy, binary
// cross-entropy with logits): the per-ISA kernel table.
//
// Softmax kernels see their input as (outer, len, inner) row-major and normalise along len, so
// any axis of a C-contiguous array is served in place: inner == 1 (the last axis) runs over
// contiguous rows, inner > 1 vectorises across inner and strides along len.
#pragma once
#include <cstdint>

#include "common/isa.h"

namespace fusegrad {

struct SoftmaxKernels {
  // y = softmax(x) or log_softmax(x) along len. y may be x (in place).
  void (*forward)(const float* x, float* y, int64_t outer, int64_t len, int64_t inner, bool log);
  // dx from the upstream gradient g and the forward output y: y * (g - sum(g * y)) for softmax,
  // g - exp(y) * sum(g) for log_softmax. dx may alias g.
  void (*backward)(const float* g, const float* y, float* dx, int64_t outer, int64_t len,
                   int64_t inner, bool log);
  // Softmax cross-entropy over rows (n, c) with integer labels in [0, c) (checked by the caller)
  // and PyTorch's label smoothing. Writes the per-row loss to loss_rows if non-null, and
  // grad_scale * d loss_i / d logits to grad (n, c) if non-null; returns the sum of row losses.
  double (*cross_entropy)(const float* logits, const int64_t* labels, int64_t n, int64_t c,
                          float label_smoothing, float grad_scale, float* loss_rows, float* grad);
  // Elementwise max(x, 0) - x t + log(1 + exp(-|x|)) over n values; loss and grad
  // (= grad_scale * (sigmoid(x) - t)) are written where non-null; returns the sum of losses.
  double (*bce_with_logits)(const float* x, const float* t, int64_t n, float grad_scale, float* loss,
                            float* grad);
};

FG_DECLARE_KERNEL_TABLE(SoftmaxKernels, softmax_kernels)

}  // namespace fusegrad
