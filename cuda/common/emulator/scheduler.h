// What emulated kernel code calls into: block barriers, warp collectives and in-kernel errors.
// The CUDA-named intrinsics (sync_intrinsics.h, ptx.h) are thin wrappers over these.
//
// A block's threads are fibers on one OS thread. A thread runs until it reaches a barrier, a warp
// collective or its end, then switches to the next ready thread of the block, or to the block
// scheduler (scheduler.cpp) when none is ready. Every call names its source location (file, line): all threads of a block must
// reach a __syncthreads at the same location, and all lanes of a collective's mask the same
// collective at the same location, or the launch fails with an error naming both sides.
#pragma once
#include <cstdint>
#include <string>

namespace fusegrad::cuda::emulator {

// Per lane: the values a warp collective exchanges. Each lane writes its inputs, then the last
// lane of the mask to arrive computes every lane's outputs.
struct LaneSlot {
  uint32_t in[10];
  uint32_t out[4];
  const void* address;
  int arg;
  int width;
};

// Computes the outputs of every lane in `mask` from their inputs (`lanes` is the warp's 32 slots).
using CollectiveFn = void (*)(LaneSlot* lanes, unsigned mask);

// A collective of the whole warp (mma.sync, ldmatrix): every lane, and the warp must be full.
constexpr unsigned kWholeWarp = 0;

int lane_id();
LaneSlot& my_lane_slot();

// Waits until every lane in mask has reached this collective, then returns with my_lane_slot().out
// filled in. Fails the launch if the lanes reach different collectives or exit without it.
void warp_collective(const char* what, unsigned mask, CollectiveFn fn, const char* file, int line);

// Lanes of the caller's warp that have not exited.
unsigned active_lanes();

// The whole block waits here; returns the block-wide reduction of `value` that `reduce` asks for.
enum class BarrierReduce { none, count, all, any };
int block_barrier(const char* what, BarrierReduce reduce, int value, const char* file, int line);

// Fails the launch with `message`, prefixed by the kernel, block and thread. Never returns.
[[noreturn]] void fail(const std::string& message);

// "kernel K (grid, block): block (x,y,z) thread (x,y,z)" for the running thread.
std::string describe_current_thread();

}  // namespace fusegrad::cuda::emulator
