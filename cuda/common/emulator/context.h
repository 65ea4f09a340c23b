// The emulator's state per OS thread (internal to the runtime): the fibers of the block being run,
// its warps and barrier phase, its shared memory, its cp.async queues, and where a fault jumps to.
#pragma once
#include <pthread.h>

#include <atomic>
#include <csetjmp>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/emulator/fiber.h"
#include "common/emulator/keywords.h"
#include "common/emulator/launch.h"
#include "common/emulator/scheduler.h"

namespace fusegrad::cuda::emulator {

// One launch, shared by the OS threads that run its blocks.
struct LaunchState {
  LaunchRequest request;
  KernelBody body;
  unsigned long long blocks = 0, seed = 0;
  unsigned threads = 0;
  std::atomic<unsigned long long> next{0}, switches{0};
  std::atomic<bool> failed{false};
  std::mutex mutex;
  std::string error;  // the first failure

  void fail(const std::string& message) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!failed.exchange(true)) error = message;
  }
};

enum class FiberState : uint8_t { ready, at_barrier, at_collective, exited };

// A cp.async issued by a thread: performed when a cp.async.wait_group retires its group.
struct PendingCopy {
  char* dst;
  const char* src;
  int bytes, src_bytes;
  const char* file;
  int line;
};

// One emulated CUDA thread.
struct Fiber {
  FiberContext context;
  uint3 tid{0, 0, 0};
  unsigned linear = 0, lane = 0, warp = 0;
  FiberState state = FiberState::ready;
  const char* what = nullptr;  // the barrier or collective it waits at
  const char* file = nullptr;
  int line = 0;
  int barrier_value = 0;
  BarrierReduce reduce = BarrierReduce::none;
  std::vector<PendingCopy> copies;  // in issue order; [performed, size) are pending
  size_t performed = 0;
  std::vector<size_t> group_end;  // committed groups: copies [group_end[g-1], group_end[g])
  size_t groups_done = 0;
};

// A warp collective some lanes have reached and others not yet.
struct WarpOp {
  const char* what;
  const char* file;
  int line;
  unsigned mask, arrived;
  CollectiveFn fn;
};

// A wgmma a warp has issued and not yet completed (ptx.cpp): it runs at the wgmma.wait_group that
// retires its group, reading shared memory then, and writes each lane's accumulators.
struct PendingWgmma {
  int n;                   // N of m64nNk16
  unsigned rows;           // the warp's first row of the 64: 16 * (warp % 4)
  uint64_t desc_a, desc_b;
  float* d[32];            // each lane's accumulators
  const char* file;
  int line;
};

struct Warp {
  unsigned present = 0, exited = 0;
  std::vector<WarpOp> ops;
  LaneSlot lanes[32];
  std::vector<PendingWgmma> wgmma_open;                 // issued since the last commit
  std::vector<std::vector<PendingWgmma>> wgmma_groups;  // committed, oldest first
};

// A static shared array of this OS thread, in its own guarded mapping.
struct SharedRegion {
  char* lo;
  char* hi;
  char* map;
  size_t map_bytes;
  const char* name;
  std::string shape;
};

// Who has a cp.async pending into a 4-byte word of shared memory.
struct PendingWord {
  int count;
  unsigned issuer;
  const char* file;
  int line;
};

struct FaultRecord {
  int signo, code;
  uintptr_t addr;
  bool write;
};

struct ThreadContext {
  ThreadContext();
  ~ThreadContext();

  StackArena arena;
  std::vector<Fiber> fibers;
  FiberContext scheduler;
  Fiber* current = nullptr;

  // The launch and the block being run.
  const LaunchState* launch = nullptr;
  uint3 block_idx{0, 0, 0};
  unsigned long long block_linear = 0;
  unsigned block_threads = 0, phase = 0;
  std::vector<Warp> warps;
  std::vector<uint32_t> ready;  // ring of fibers to resume, capacity block_threads + 1
  size_t ready_head = 0, ready_tail = 0;
  std::vector<uint32_t> order;
  bool failed = false;
  std::string error;
  int barrier_result = 0;

  // Shared memory: this thread's static arrays, and the dynamic region of the current launch.
  std::vector<SharedRegion> static_shared;
  char* dynamic_map = nullptr;
  size_t dynamic_map_bytes = 0;
  char* dynamic_lo = nullptr;
  char* dynamic_hi = nullptr;
  const char* dynamic_name = "dynamic shared memory";
  std::unordered_map<uintptr_t, PendingWord> pending_words;  // key: address / 4

  pthread_t thread;  // the OS thread this context belongs to
  sigjmp_buf fault_jump;
  FaultRecord fault{};
  std::unique_ptr<char[]> signal_stack;

  unsigned long long switches = 0;
};

extern FG_EMU_THREAD_LOCAL ThreadContext* tls_context;

// This OS thread's context, created on first use.
ThreadContext& this_thread_context();

// Runs block `linear` of the current launch on this thread; false if a thread misbehaved (the
// message is in ctx.error).
bool run_block(ThreadContext& ctx, unsigned long long linear);

// Readies ctx for a launch with `threads` threads per block and `smem_bytes` of dynamic shared memory.
void prepare_launch(ThreadContext& ctx, const LaunchState& launch, unsigned threads, size_t smem_bytes);

// Fills the block's shared memory with 0xFF bytes and forgets pending cp.async words.
void reset_shared_memory(ThreadContext& ctx);

// The shared region (static array or dynamic) holding [p, p + bytes), with its name, or false.
bool find_shared_region(const ThreadContext& ctx, const void* p, size_t bytes, const char** name,
                        const char** lo, const char** hi);

// "0-15, 20" for a sorted set of indices.
std::string format_index_set(const std::vector<unsigned>& indices);

// "kernel K (grid (x,y,z), block (x,y,z), N bytes of dynamic shared memory)".
std::string describe_launch(const LaunchRequest& request);

// "block (x,y,z) thread (x,y,z)" of the fiber.
std::string describe_thread(const ThreadContext& ctx, const Fiber& fiber);

// A source location shortened to its path from the repository's cuda/ or tests/ folder.
std::string short_location(const char* file, int line);

}  // namespace fusegrad::cuda::emulator
