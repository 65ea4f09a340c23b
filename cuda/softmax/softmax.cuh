// Softmax, log-softmax and the fused losses on them (softmax cross-entropy, binary cross-entropy
// with logits) on the GPU. The conventions are the CPU kernels' (cpp/softmax/softmax.h): inputs are
// seen as (outer, len, inner) row-major and normalised along len; exponentials are taken of
// x - max(x); a NaN poisons its row; the losses match PyTorch's, label smoothing included.
//
// The losses reduce on the device: the row kernels write one partial sum per block and a one-block
// kernel adds them in block order into the 0-d loss (deterministic: the grid depends only on the
// sizes and the GPU). Nothing is read back to the host.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace fusegrad::cuda {

// y = softmax(x) or log_softmax(x) along len; y may be x.
void softmax_forward(const float* x, float* y, int64_t outer, int64_t len, int64_t inner, bool log,
                     cudaStream_t stream, int device);
// dx from the upstream gradient g and the forward output y: y * (g - sum(g y)) for softmax,
// g - exp(y) sum(g) for log-softmax. dx may be g.
void softmax_backward(const float* g, const float* y, float* dx, int64_t outer, int64_t len, int64_t inner,
                      bool log, cudaStream_t stream, int device);

// Doubles of workspace the losses need (per-block partial sums and, for cross-entropy, the
// per-block first bad row).
int64_t cross_entropy_workspace_size(int64_t n, int64_t c, int device);
int64_t bce_workspace_size(int64_t n, int device);

// Softmax cross-entropy of logits (n, c) against int64 labels (n,), with PyTorch's label smoothing.
// Each row's label is checked in the kernel: a label outside [0, c) makes that row's loss and
// gradient NaN. Outputs, each optional (null): loss_rows (n,) the per-row losses; grad (n, c) =
// grad_scale * d loss_i / d logits; loss (0-d) = sum of row losses / divisor; status (2 int64) =
// the first row with a bad label and that label, or -1 and 0. loss and status need the workspace.
void softmax_cross_entropy(const float* logits, const int64_t* labels, int64_t n, int64_t c, float label_smoothing,
                           float grad_scale, float* loss_rows, float* grad, float* loss, double divisor,
                           double* workspace, int64_t* status, cudaStream_t stream, int device);

// Elementwise max(x, 0) - x t + log(1 + exp(-|x|)) over n values. Optional outputs: loss_elems (n),
// grad (n) = grad_scale * (sigmoid(x) - t), loss (0-d) = sum / divisor (needs the workspace).
void bce_with_logits(const float* x, const float* t, int64_t n, float grad_scale, float* loss_elems, float* grad,
                     float* loss, double divisor, double* workspace, cudaStream_t stream, int device);

}  // namespace fusegrad::cuda
