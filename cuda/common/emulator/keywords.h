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

// Per-OS-thread variables that kernels read on every access use the initial-exec TLS model: a
// plain %fs-relative load, where the general model costs a __tls_get_addr call in a dlopen'ed
// module (which halved the emulator's speed). The module then needs ~300 bytes of the loader's
// static TLS reserve; where none is left ("cannot allocate memory in static TLS block"), build
// with -DFG_EMU_TLS_MODEL='"global-dynamic"'.
#ifndef FG_EMU_TLS_MODEL
#define FG_EMU_TLS_MODEL "initial-exec"
#endif
#define FG_EMU_THREAD_LOCAL __thread __attribute__((visibility("hidden"), tls_model(FG_EMU_TLS_MODEL)))

extern FG_EMU_THREAD_LOCAL uint3 threadIdx;
extern FG_EMU_THREAD_LOCAL uint3 blockIdx;
extern FG_EMU_THREAD_LOCAL dim3 blockDim;
extern FG_EMU_THREAD_LOCAL dim3 gridDim;

constexpr int warpSize = 32;
