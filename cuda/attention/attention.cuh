// Scaled dot-product attention on the GPU, flash-attention style, and the other per-token kernels
// of a Transformer block (LayerNorm forward/backward, the embedding's scatter-add backward). The
// conventions are the CPU kernels' (cpp/attention/attention.h), so the two devices agree:
//
//   q (B, H, Sq, D), k and v (B, H, Sk, D), out (B, H, Sq, D), lse (B, H, Sq), C-contiguous fp32;
//   s_ij = scale * q_i·k_j + mask_ij (additive; -inf never attends); causal: j > i never attends;
//   a query that attends to nothing gets out = 0, lse = -inf and zero gradients;
//   dropout keeps P_ij iff philox::keep4(seed, b, h, i, j / 4) bit j % 4 (cpp/attention/philox.h,
//   compiled here as __host__ __device__): the same mask as the CPU for the same seed.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "attention/attention_problem.h"  // cpp/attention/: the problem the CPU kernels take too

namespace fusegrad::cuda {

using AttentionArgs = ::fusegrad::AttentionProblem;

// out and lse from q, k, v.
void attention_forward(const AttentionArgs& a, const float* q, const float* k, const float* v, float* out,
                       float* lse, cudaStream_t stream, int device);

// Floats of workspace attention_backward needs (D_i = rowsum(dO ∘ O), one per query).
int64_t attention_backward_workspace(const AttentionArgs& a);

// dq, dk, dv (written, not accumulated) from the forward's inputs, out, lse and grad_out.
void attention_backward(const AttentionArgs& a, const float* q, const float* k, const float* v, const float* out,
                        const float* lse, const float* grad_out, float* dq, float* dk, float* dv, float* workspace,
                        cudaStream_t stream, int device);

// LayerNorm of `rows` rows of n floats: y = (x - mean) * rstd * w + b (w, b nullable), with each
// row's mean and rstd = 1 / sqrt(var + eps) (biased variance) kept for the backward.
void layer_norm_forward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                        int64_t rows, int64_t n, float eps, cudaStream_t stream, int device);
// Floats of workspace layer_norm_backward needs for dw / db (the per-chunk partial sums).
int64_t layer_norm_backward_workspace(int64_t rows, int64_t n);
// dx, and where non-null dw = sum over rows of g * xhat and db = sum of g, summed in a fixed order
// (deterministic); the workspace is needed only for dw / db.
void layer_norm_backward(const float* g, const float* x, const float* mean, const float* rstd, const float* w,
                         float* dx, float* dw, float* db, float* workspace, int64_t rows, int64_t n,
                         cudaStream_t stream, int device);
// dw (vocab, dim) = the rows of g (count, dim) summed by index (idx in [0, vocab), checked by the
// caller), each vocabulary row summed in index order (deterministic, no atomics); the row
// padding_idx (none when negative) gets zeros.
void embedding_backward(const int64_t* idx, int64_t count, const float* g, int64_t dim, float* dw, int64_t vocab,
                        int64_t padding_idx, cudaStream_t stream, int device);

}  // namespace fusegrad::cuda
