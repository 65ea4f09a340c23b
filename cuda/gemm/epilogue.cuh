// What every GEMM-shaped kernel (cuda/gemm, cuda/conv) does with its accumulators: add the bias,
// apply the activation, add into C when accumulating, and store, with 16- or 8-byte stores where
// C's alignment allows and element stores on the edges.
//
// The activation is a run-time code rather than a template parameter: it is uniform across the
// grid, so the switch is one well-predicted branch per stored element, against the K-long
// mainloop that produced it; eight instantiations of every kernel would cost more (compile time,
// binary size) than they save. none and relu are inline; the others one call per element.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "activation/activation.h"  // the Activation codes, shared with the CPU side

// The transcendental activations are called, not inlined: inlined into each of a kernel's 64
// stored accumulators they made ptxas take 20x longer per kernel and cost 20-30 registers, for an
// epilogue that runs once per K-long mainloop. (The emulator's C++ has no __noinline__.)
#ifdef FG_EMULATED
#define FG_EPILOGUE_NOINLINE inline __attribute__((noinline))
#else
#define FG_EPILOGUE_NOINLINE inline __noinline__
#endif

namespace fusegrad::cuda {

__device__ __forceinline__ float epilogue_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// The forward formulas of cuda/activation/activation.cu (forward_one), which are the CPU's
// (cpp/activation/activation_math.h). That file keeps them in an anonymous namespace, so they
// are repeated here; moving them into activation.cuh would leave one copy.
__device__ FG_EPILOGUE_NOINLINE float apply_activation(Activation kind, float x, float p) {
  switch (kind) {
    case Activation::relu: return x > 0.0f || x != x ? x : 0.0f;  // keeps NaN
    case Activation::leaky_relu: return x > 0.0f ? x : x * p;
    case Activation::sigmoid: return epilogue_sigmoid(x);
    case Activation::tanh: return tanhf(x);
    case Activation::silu: return x * epilogue_sigmoid(x);
    case Activation::gelu: return x * (0.5f * erfcf(-x * 0.70710678118654752f));
    case Activation::gelu_tanh:
      return x * epilogue_sigmoid(2.0f * 0.7978845608028654f * (x + 0.044715f * x * x * x));
    default: return x;
  }
}

// C (=|+=) act(acc + bias) for one output matrix per batch item (or split): element (r, c) of
// item z at c[z * c_bs + r * c_rs + c] (unit column stride), its bias at bias[z * bias_bs + c]
// (bias_bs: a grouped convolution's groups each have their own columns of one bias).
struct Epilogue {
  float* c = nullptr;
  int64_t c_rs = 0, c_bs = 0, bias_bs = 0;
  const float* bias = nullptr;  // one float per column, or null
  Activation act = Activation::none;
  float act_param = 0.0f;
  bool accumulate = false;  // C += acc (bias and act are then none)
  int vec = 1;              // widest store C's alignment allows everywhere: 4, 2 or 1 floats
  int64_t rows = 0, cols = 0;

  __device__ __forceinline__ float finish(float v, const float* b, int64_t col) const {
    if (b != nullptr) v += b[col];
    if (act == Activation::none) return v;
    if (act == Activation::relu) return v > 0.0f || v != v ? v : 0.0f;
    return apply_activation(act, v, act_param);
  }

  // Stores kRun accumulators for columns [col, col + kRun) of `row` (col a multiple of kRun).
  template <int kRun>
  __device__ __forceinline__ void store(int64_t z, int64_t row, int64_t col, const float* v) const {
    if (row >= rows || col >= cols) return;
    float* p = c + z * c_bs + row * c_rs + col;
    const float* b = bias != nullptr ? bias + z * bias_bs : nullptr;
    if (vec >= kRun && col + kRun <= cols) {
      if constexpr (kRun == 4) {
        float4 o = make_float4(finish(v[0], b, col), finish(v[1], b, col + 1), finish(v[2], b, col + 2),
                               finish(v[3], b, col + 3));
        if (accumulate) {
          const float4 old = *reinterpret_cast<const float4*>(p);
          o.x += old.x, o.y += old.y, o.z += old.z, o.w += old.w;
        }
        *reinterpret_cast<float4*>(p) = o;
        return;
      } else if constexpr (kRun == 2) {
        float2 o = make_float2(finish(v[0], b, col), finish(v[1], b, col + 1));
        if (accumulate) {
          const float2 old = *reinterpret_cast<const float2*>(p);
          o.x += old.x, o.y += old.y;
        }
        *reinterpret_cast<float2*>(p) = o;
        return;
      }
    }
#pragma unroll
    for (int j = 0; j < kRun; ++j)
      if (col + j < cols) p[j] = finish(v[j], b, col + j) + (accumulate ? p[j] : 0.0f);
  }
};

// The widest vector (4, 2 or 1 floats) that every run of a row of C starting at a multiple of
// that width can be stored with.
inline int store_width(const float* c, int64_t c_rs, int64_t c_bs) {
  const auto fits = [&](int w) {
    return reinterpret_cast<uintptr_t>(c) % (4 * w) == 0 && c_rs % w == 0 && c_bs % w == 0;
  };
  return fits(4) ? 4 : fits(2) ? 2 : 1;
}

}  // namespace fusegrad::cuda
