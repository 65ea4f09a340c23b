// Elementwise activations: the kinds, and the per-ISA kernel table.
//
// The same Activation codes are used by the GEMM and convolution epilogues, which apply the
// forward formula from activation_math.h to their accumulators before storing C.
#pragma once
#include <cstdint>
#include <type_traits>

#include "common/isa.h"

namespace fusegrad {

enum class Activation : int {
  none = 0,
  relu = 1,
  leaky_relu = 2,  // param: negative slope
  sigmoid = 3,
  tanh = 4,
  silu = 5,
  gelu = 6,        // exact, x * Phi(x)
  gelu_tanh = 7,   // the tanh approximation
};
constexpr int kNumActivations = 8;

// Calls fn(std::integral_constant<Activation, kind>{}) so that kernels can be instantiated per
// kind from a runtime code: `with_activation(kind, [&](auto k) { run<decltype(k)::value>(); })`.
template <class Fn>
void with_activation(Activation kind, Fn&& fn) {
  using A = Activation;
  switch (kind) {
    case A::none: fn(std::integral_constant<A, A::none>{}); break;
    case A::relu: fn(std::integral_constant<A, A::relu>{}); break;
    case A::leaky_relu: fn(std::integral_constant<A, A::leaky_relu>{}); break;
    case A::sigmoid: fn(std::integral_constant<A, A::sigmoid>{}); break;
    case A::tanh: fn(std::integral_constant<A, A::tanh>{}); break;
    case A::silu: fn(std::integral_constant<A, A::silu>{}); break;
    case A::gelu: fn(std::integral_constant<A, A::gelu>{}); break;
    case A::gelu_tanh: fn(std::integral_constant<A, A::gelu_tanh>{}); break;
  }
}

struct ActivationKernels {
  // y = f(x) over n contiguous floats; param is the leaky_relu slope (ignored otherwise).
  void (*forward)(Activation kind, const float* x, float* y, int64_t n, float param);
  // dx = grad_out * f'(.) where `saved` is x, or the forward output y for sigmoid and tanh.
  void (*backward)(Activation kind, const float* grad_out, const float* saved, float* dx, int64_t n,
                   float param);
};

FG_DECLARE_KERNEL_TABLE(ActivationKernels, activation_kernels)

}  // namespace fusegrad
