// Forward and backward formulas of each activation on one vector, for the elementwise kernels
// and for GEMM/convolution epilogues. Compile-time `kind` so the loops carry no branch.
#pragma once
#include "activation/activation.h"
#include "common/vec_math.h"

namespace fusegrad {
namespace FG_ISA_NS {

template <Activation kind>
inline VecF activation_forward(VecF x, VecF param) {
  if constexpr (kind == Activation::none) {
    return x;
  } else if constexpr (kind == Activation::relu) {
    return max(set1(0.0f), x);  // operand order keeps NaN
  } else if constexpr (kind == Activation::leaky_relu) {
    return select(x > set1(0.0f), x, x * param);
  } else if constexpr (kind == Activation::sigmoid) {
    return sigmoid(x);
  } else if constexpr (kind == Activation::tanh) {
    return tanh(x);
  } else if constexpr (kind == Activation::silu) {
    return x * sigmoid(x);
  } else if constexpr (kind == Activation::gelu) {
    return x * normal_cdf(x);
  } else {  // gelu_tanh: x * (1 + tanh(u)) / 2 = x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3)
    const VecF two_u = x * fmadd(set1(2.0f * 0.7978845608028654f * 0.044715f), x * x,
                                 set1(2.0f * 0.7978845608028654f));
    return x * sigmoid(two_u);
  }
}

// grad_out * f'(.); `saved` is the forward input x, except for sigmoid and tanh where it is the
// forward output y (their derivatives are cheapest from y, and y is what autograd keeps).
template <Activation kind>
inline VecF activation_backward(VecF grad_out, VecF saved, VecF param) {
  const VecF one = set1(1.0f);
  if constexpr (kind == Activation::none) {
    return grad_out;
  } else if constexpr (kind == Activation::relu) {
    // zero where x <= 0 (an ordered compare), so a NaN input passes its gradient as in PyTorch
    return select(set1(0.0f) >= saved, set1(0.0f), grad_out);
  } else if constexpr (kind == Activation::leaky_relu) {
    return select(saved > set1(0.0f), grad_out, grad_out * param);
  } else if constexpr (kind == Activation::sigmoid) {
    return grad_out * saved * (one - saved);
  } else if constexpr (kind == Activation::tanh) {
    return grad_out * (one - saved * saved);
  } else if constexpr (kind == Activation::silu) {
    const VecF s = sigmoid(saved);
    return grad_out * s * fmadd(saved, one - s, one);
  } else if constexpr (kind == Activation::gelu) {
    return grad_out * fmadd(saved, normal_pdf(saved), normal_cdf(saved));
  } else {  // gelu_tanh: s + 2 x s (1 - s) du/dx with s = sigmoid(2u)
    const VecF k = set1(0.7978845608028654f), c = set1(0.044715f);
    const VecF x2 = saved * saved;
    const VecF s = sigmoid(set1(2.0f) * k * saved * fmadd(c, x2, one));
    const VecF du = k * fmadd(set1(3.0f) * c, x2, one);
    return grad_out * fmadd(set1(2.0f) * saved * s * (one - s), du, s);
  }
}

}  // namespace FG_ISA_NS
}  // namespace fusegrad
