// Fused multi-tensor optimizer steps and gradient-norm clipping: the per-step scalars and the
// per-ISA kernel table.
//
// Every kernel takes a list of `count` tensors as parallel arrays of pointers plus their sizes, and
// walks all of them in one threaded pass: the work is the concatenation of the tensors, split into
// one contiguous range per thread, so a list of hundreds of small tensors costs one fork-join, not
// one per tensor. Everything that depends on the step number only (bias corrections, step size) is
// computed once by the caller and arrives here as plain scalars.
#pragma once
#include <cstdint>

#include "common/isa.h"

namespace fusegrad {

// Adam / AdamW, exactly torch.optim.Adam(W)'s update (see cpp/optim/optim_kernels.cpp). The
// differences 1 - beta and the step-dependent factors are formed once, in double, by the caller.
enum class WeightDecay : int { none = 0, l2 = 1, decoupled = 2 };

struct AdamScalars {
  float beta2;
  float one_minus_beta1, one_minus_beta2;
  float eps;
  float weight_decay;           // for WeightDecay::l2: g += weight_decay * p
  float decay_factor;           // for WeightDecay::decoupled: p *= 1 - lr * weight_decay
  float neg_step_size;          // -lr / (1 - beta1^step)
  float bias_correction2_sqrt;  // sqrt(1 - beta2^step)
  WeightDecay decay;
  bool maximize;
};

// SGD with optional momentum, exactly torch.optim.SGD.
struct SgdScalars {
  float neg_lr;
  float momentum;            // 0: plain SGD, no buffer is touched
  float one_minus_dampening;
  float weight_decay;        // 0: none
  bool nesterov;
  bool maximize;
  bool first_step;           // the buffer takes the (decayed) gradient, as PyTorch's first step does
};

// The norm of a gradient list: p = 2, 1, infinity, or any other p > 0 (slow scalar path).
enum class NormKind : int { two = 0, one = 1, inf = 2, general = 3 };

struct OptimKernels {
  void (*adam)(const AdamScalars& s, float* const* params, const float* const* grads,
               float* const* exp_avgs, float* const* exp_avg_sqs, const int64_t* sizes, int64_t count);
  // momentum_buffers may be null when s.momentum == 0.
  void (*sgd)(const SgdScalars& s, float* const* params, const float* const* grads,
              float* const* momentum_buffers, const int64_t* sizes, int64_t count);
  // sum |g|^p over every element (two/one/general), or max |g| (inf); NaN anywhere gives NaN.
  double (*norm_power)(NormKind kind, double p, const float* const* grads, const int64_t* sizes,
                       int64_t count);
  void (*scale)(float coef, float* const* grads, const int64_t* sizes, int64_t count);
};

FG_DECLARE_KERNEL_TABLE(OptimKernels, optim_kernels)

}  // namespace fusegrad
