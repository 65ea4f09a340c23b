// CUDA's keywords and built-in variables, as plain C++.
//
// Qualifiers become nothing (__device__, __global__, ...) or `inline` (__forceinline__), so a
// device function defined in a header must be inline, __forceinline__ or a template, as it would
// be in any C++ header. __shared__ is made an error: shared memory is declared with FG_SHARED /
// FG_DYNAMIC_SHARED (common/launch.cuh) so that every access to it can be checked.
//
// threadIdx, blockIdx, blockDim and gridDim are per-OS-thread variables that the block scheduler
// sets before it resumes each fiber (scheduler.cpp), so they always read the running fiber's
// coordinates.
#pragma once
#include "common/emulator/vector_types.h"

#define __global__
#define __device__
#define __host__
#define __constant__
#define __managed__
#define __device_builtin__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __grid_constant__
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ FG_EMULATOR_ERROR_declare_shared_memory_with_FG_SHARED_or_FG_DYNAMIC_SHARED
// __restrict__ is a g++ keyword already. __noinline__ is left undefined: libstdc++ spells the GNU
// attribute that way, so the macro would break it.

#define FG_EMU_BUILTIN extern __thread __attribute__((visibility("hidden")))
FG_EMU_BUILTIN uint3 threadIdx;
FG_EMU_BUILTIN uint3 blockIdx;
FG_EMU_BUILTIN dim3 blockDim;
FG_EMU_BUILTIN dim3 gridDim;
#undef FG_EMU_BUILTIN

constexpr int warpSize = 32;
