// Scaled dot-product attention, flash-attention style (the S×S score matrix is never stored):
// the per-ISA kernel table, and the problem description shared with the bindings and CUDA. The
// family also holds the other per-token kernels of a Transformer block: LayerNorm forward and
// backward, and the embedding's deterministic scatter-add backward.
//
// Layout: q (B, H, Sq, D), k and v (B, H, Sk, D), out (B, H, Sq, D), all C-contiguous float32;
// lse (B, H, Sq) is the log-sum-exp of each query's scaled, masked scores (natural log), which
// the backward pass uses to recompute the probabilities instead of storing them.
//
// Scores: s_ij = scale * q_i·k_j + mask_ij (additive, natural-log units: -inf = never attend),
// causal: j > i never attends (PyTorch's is_causal: top-left aligned when Sq != Sk).
// A query that attends to nothing gets out = 0, lse = -inf and zero gradients.
// Dropout (PyTorch's semantics): out = (P ⊙ Z / (1 - p)) V with Z_ij kept iff
// attention_keep(seed, b, h, i, j, p) (philox.h), the same on every device.
#pragma once
#include <cstdint>

#include "attention/attention_problem.h"
#include "common/isa.h"

namespace fusegrad {

struct AttentionKernels {
  // out and lse from q, k, v.
  void (*forward)(const AttentionProblem& p, const float* q, const float* k, const float* v, float* out,
                  float* lse);
  // dq, dk, dv (written, not accumulated) from the forward's inputs, its out and lse, and grad_out.
  void (*backward)(const AttentionProblem& p, const float* q, const float* k, const float* v, const float* out,
                   const float* lse, const float* grad_out, float* dq, float* dk, float* dv);

  // The other per-token kernels of a Transformer block (layer_norm.cpp).
  // LayerNorm of `rows` rows of n floats: y = (x - mean) * rstd * w + b (w, b nullable), and each
  // row's mean and rstd = 1 / sqrt(var + eps) (biased variance), kept for the backward.
  void (*layer_norm_forward)(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                             int64_t rows, int64_t n, float eps);
  // dx, and (where non-null) dw = sum over rows of g * xhat and db = sum of g: deterministic.
  void (*layer_norm_backward)(const float* g, const float* x, const float* mean, const float* rstd, const float* w,
                              float* dx, float* dw, float* db, int64_t rows, int64_t n);
  // dw (vocab, dim) = the sum of g's rows (count, dim) by index (idx in [0, vocab), checked by the
  // caller); the row padding_idx (or none, when negative) gets zeros. Deterministic.
  void (*embedding_backward)(const int64_t* idx, int64_t count, const float* g, int64_t dim, float* dw,
                             int64_t vocab, int64_t padding_idx);
};

FG_DECLARE_KERNEL_TABLE(AttentionKernels, attention_kernels)

}  // namespace fusegrad
