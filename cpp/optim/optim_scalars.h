// The per-step scalars of the optimizer kernels, formed once on the host in double precision (as
// PyTorch forms them in Python floats) and handed to the CPU kernels or, by value inside the
// launch arguments, to the CUDA kernels: nothing here needs a device round trip.
#pragma once
#include <cmath>
#include <cstdint>

#include "optim/optim.h"

namespace fusegrad {

inline AdamScalars make_adam_scalars(int64_t step, double lr, double beta1, double beta2, double eps,
                                     double weight_decay, bool decoupled, bool maximize) {
  AdamScalars s{};
  s.beta2 = static_cast<float>(beta2);
  s.one_minus_beta1 = static_cast<float>(1.0 - beta1);
  s.one_minus_beta2 = static_cast<float>(1.0 - beta2);
  s.eps = static_cast<float>(eps);
  s.weight_decay = static_cast<float>(weight_decay);
  s.decay_factor = static_cast<float>(1.0 - lr * weight_decay);
  const double bias_correction1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  const double bias_correction2 = 1.0 - std::pow(beta2, static_cast<double>(step));
  s.neg_step_size = static_cast<float>(-lr / bias_correction1);
  s.bias_correction2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
  s.decay = weight_decay == 0.0 ? WeightDecay::none
                                : (decoupled ? WeightDecay::decoupled : WeightDecay::l2);
  s.maximize = maximize;
  return s;
}

inline SgdScalars make_sgd_scalars(int64_t step, double lr, double momentum, double dampening,
                                   bool nesterov, double weight_decay, bool maximize) {
  SgdScalars s{};
  s.neg_lr = static_cast<float>(-lr);
  s.momentum = static_cast<float>(momentum);
  s.one_minus_dampening = static_cast<float>(1.0 - dampening);
  s.weight_decay = static_cast<float>(weight_decay);
  s.nesterov = nesterov;
  s.maximize = maximize;
  s.first_step = step == 1;
  return s;
}

// NormKind for a norm order p (> 0, possibly infinite).
inline NormKind norm_kind(double p) {
  if (std::isinf(p)) return NormKind::inf;
  if (p == 2.0) return NormKind::two;
  if (p == 1.0) return NormKind::one;
  return NormKind::general;
}

// The total norm from sum |g|^p (or max |g|).
inline double norm_from_power(NormKind kind, double p, double power_sum) {
  switch (kind) {
    case NormKind::two: return std::sqrt(power_sum);
    case NormKind::one:
    case NormKind::inf: return power_sum;
    case NormKind::general: break;
  }
  return std::pow(power_sum, 1.0 / p);
}

}  // namespace fusegrad
