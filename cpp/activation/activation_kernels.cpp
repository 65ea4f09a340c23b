// Elementwise activation kernels, compiled once per ISA level: one memory-bound pass each.
#include "activation/activation_math.h"
#include "common/elementwise.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace {

template <Activation kind>
void forward_kind(const float* x, float* y, int64_t n, float param) {
  const VecF p = set1(param);
  map_to(y, n, [&](int64_t i, int w) { return activation_forward<kind>(load_n(x + i, w), p); });
}

template <Activation kind>
void backward_kind(const float* g, const float* saved, float* dx, int64_t n, float param) {
  const VecF p = set1(param);
  map_to(dx, n, [&](int64_t i, int w) {
    return activation_backward<kind>(load_n(g + i, w), load_n(saved + i, w), p);
  });
}

void forward(Activation kind, const float* x, float* y, int64_t n, float param) {
  with_activation(kind, [&](auto k) { forward_kind<decltype(k)::value>(x, y, n, param); });
}

void backward(Activation kind, const float* g, const float* saved, float* dx, int64_t n, float param) {
  with_activation(kind, [&](auto k) { backward_kind<decltype(k)::value>(g, saved, dx, n, param); });
}

}  // namespace

extern const ActivationKernels activation_kernels{forward, backward};

}  // namespace FG_ISA_NS
}  // namespace fusegrad
