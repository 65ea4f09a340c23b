// The error an emulated launch throws when a kernel misbehaves (out-of-bounds access, barrier or
// warp-collective mismatch, fault). It reaches Python as fusegrad._cuda_emulated.EmulatorError, a
// RuntimeError.
#pragma once
#include <stdexcept>

namespace fusegrad::cuda {

struct EmulatorError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace fusegrad::cuda
