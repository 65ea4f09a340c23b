// Elementwise activations: the kinds, and the per-ISA kernel table.
//
// The same Activation codes are used by the GEMM and convolution epilogues, which apply the
// forward formula from activation_math.h to their accumulators before storing C.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "common/isa.h"

namespace fusegrad {

// The one list of activations in fusegrad: the C++ enum, the CUDA kernels and Python's names and
// sets (fusegrad.ops.activation reads this table through _cpu.activation_table()) all come from it.
// Columns: name, code, and what each property lets the other layers do:
//   takes_param             the kernel reads a parameter (leaky_relu's negative slope), which the
//                           GEMM and conv epilogues do not carry: they apply it as a second pass
//   backward_from_output    its backward kernel takes the forward output y rather than the input x
//   derivative_from_output  f'(x) is a function of y = f(x) (leaky_relu: for a positive slope), so a
//                           GEMM or conv may apply it while storing and autograd keep only y
//   commutes_with_max       non-decreasing and exact on ties (leaky_relu: for a positive slope), so
//                           a max-pool may run before it, as the fused conv + max-pool does
#define FG_ACTIVATIONS(X)                                                                     \
  /* name       code takes_param backward_from_output derivative_from_output commutes_with_max */ \
  X(none,       0,   0,          0,                   0,                     1)                   \
  X(relu,       1,   0,          0,                   1,                     1)                   \
  X(leaky_relu, 2,   1,          0,                   1,                     1)                   \
  X(sigmoid,    3,   0,          1,                   1,                     0)                   \
  X(tanh,       4,   0,          1,                   1,                     0)                   \
  X(silu,       5,   0,          0,                   0,                     0)                   \
  X(gelu,       6,   0,          0,                   0,                     0) /* x * Phi(x) */  \
  X(gelu_tanh,  7,   0,          0,                   0,                     0) /* tanh form */

enum class Activation : int {
#define FG_ACTIVATION_ENUM(name, code, ...) name = code,
  FG_ACTIVATIONS(FG_ACTIVATION_ENUM)
#undef FG_ACTIVATION_ENUM
};

#define FG_ACTIVATION_COUNT(...) +1
constexpr int kNumActivations = 0 FG_ACTIVATIONS(FG_ACTIVATION_COUNT);
#undef FG_ACTIVATION_COUNT

struct ActivationInfo {
  const char* name;
  int code;
  bool takes_param, backward_from_output, derivative_from_output, commutes_with_max;
};

constexpr ActivationInfo kActivationInfo[] = {
#define FG_ACTIVATION_INFO(name, code, p, b, d, m) {#name, code, p != 0, b != 0, d != 0, m != 0},
    FG_ACTIVATIONS(FG_ACTIVATION_INFO)
#undef FG_ACTIVATION_INFO
};
static_assert(sizeof(kActivationInfo) / sizeof(kActivationInfo[0]) == kNumActivations);

// The Activation of a code that arrived from Python; std::invalid_argument (ValueError there)
// for a code outside the table.
inline Activation activation_from_code(int code) {
  for (const ActivationInfo& a : kActivationInfo)
    if (a.code == code) return static_cast<Activation>(code);
  throw std::invalid_argument("unknown activation code " + std::to_string(code));
}

// Calls fn(std::integral_constant<Activation, kind>{}) so that kernels can be instantiated per
// kind from a runtime code: `with_activation(kind, [&](auto k) { run<decltype(k)::value>(); })`.
template <class Fn>
void with_activation(Activation kind, Fn&& fn) {
  switch (kind) {
#define FG_ACTIVATION_CASE(name, ...) \
  case Activation::name: fn(std::integral_constant<Activation, Activation::name>{}); break;
    FG_ACTIVATIONS(FG_ACTIVATION_CASE)
#undef FG_ACTIVATION_CASE
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
