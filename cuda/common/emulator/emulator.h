// The host SIMT emulator: force-included (g++ -include) into every CUDA source compiled as C++
// for fusegrad._cuda_emulated, where FG_EMULATED is defined. See README.md beside this file.
//
// Rules for kernel authors, so that one .cu file builds with nvcc and is checked here:
//  1. Launch kernels only with FG_LAUNCH(kernel, grid, block, smem_bytes, stream, args...) from
//     common/launch.cuh (put a kernel name that contains commas in parentheses).
//  2. Declare shared memory only with FG_SHARED(T, name, [dims]) and FG_DYNAMIC_SHARED(T, name)
//     from common/launch.cuh; a plain __shared__ does not compile here. Index them (tile[i][j],
//     smem[i]) and view them as another type with shared_as<U>(name): every such access is bounds-
//     checked. A raw pointer taken from them is only checked against running off the end.
//  3. Use tensor-core, ldmatrix and cp.async instructions only through common/ptx.cuh; no inline
//     asm.
//  4. Device functions defined in headers must be inline, __forceinline__ or templates.
//  5. Every thread of a block must reach each __syncthreads at the same place, and every lane of
//     a warp collective's mask (__shfl*_sync, votes, __syncwarp, mma, ldmatrix) the same call;
//     anything else is reported as an error, not left to hang.
#pragma once
#ifndef FG_EMULATED
#define FG_EMULATED 1
#endif

#include "common/emulator/atomics.h"
#include "common/emulator/device_math.h"
#include "common/emulator/keywords.h"
#include "common/emulator/sync_intrinsics.h"
