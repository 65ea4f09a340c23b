// The block scheduler: runs one block's threads as fibers, releases barriers, completes warp
// collectives, and reports the threads that can never proceed.
//
// A block runs in barrier phases. At the start of each phase the ready threads are queued in an
// order that changes from phase to phase and block to block (forward, reverse, or a seeded
// shuffle), so a kernel that reads shared memory another warp writes without a barrier between
// sees a different, usually wrong, value under some order. Each thread runs until it reaches a
// barrier, a warp collective, or its end. A collective completes when the last lane of its mask
// arrives: that lane computes every lane's result and requeues the others. When the queue is
// empty, either every thread has exited (the block is done), or every live thread waits at the
// same __syncthreads (the next phase starts), or the block can never finish: that is reported.
#include <algorithm>
#include <cstdio>
#include <cstring>

#include "common/emulator/context.h"
#include "common/emulator/error.h"

FG_EMU_THREAD_LOCAL uint3 threadIdx;
FG_EMU_THREAD_LOCAL uint3 blockIdx;
FG_EMU_THREAD_LOCAL dim3 blockDim;
FG_EMU_THREAD_LOCAL dim3 gridDim;

namespace fusegrad::cuda::emulator {

FG_EMU_THREAD_LOCAL ThreadContext* tls_context = nullptr;

namespace {

void enqueue(ThreadContext& ctx, uint32_t fiber) {
  ctx.ready[ctx.ready_tail] = fiber;
  if (++ctx.ready_tail == ctx.ready.size()) ctx.ready_tail = 0;
}

// Resumes the next ready fiber directly (one switch, not two through the scheduler), or the
// scheduler when none is ready. Returns when `self` is resumed.
void suspend(ThreadContext& ctx, Fiber& self) {
  ++ctx.switches;
  if (ctx.ready_head != ctx.ready_tail) {
    Fiber& next = ctx.fibers[ctx.ready[ctx.ready_head]];
    if (++ctx.ready_head == ctx.ready.size()) ctx.ready_head = 0;
    ctx.current = &next;
    threadIdx = next.tid;
    switch_fiber(self.context, next.context);
  } else {
    switch_fiber(self.context, ctx.scheduler);
  }
}

void fiber_main(void* arg) {
  ThreadContext& ctx = *static_cast<ThreadContext*>(arg);
  std::string escaped;  // an exception must not unwind past this frame: nothing above it to catch it
  try {
    ctx.launch->body.invoke(ctx.launch->body.closure);
  } catch (const std::exception& e) {
    escaped = e.what();
  } catch (...) {
    escaped = "(not a std::exception)";
  }
  if (!escaped.empty()) fail("a C++ exception escaped the kernel: " + escaped);
  Fiber& f = *ctx.current;
  f.state = FiberState::exited;
  ctx.warps[f.warp].exited |= 1u << f.lane;
  suspend(ctx, f);
  __builtin_unreachable();
}

uint64_t mix(uint64_t x) {  // splitmix64
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// The phase's thread order: forward, reverse or shuffled, chosen by seed, block and phase.
void build_order(ThreadContext& ctx) {
  const unsigned n = ctx.block_threads;
  const uint64_t seed = ctx.launch->seed;
  const unsigned kind = static_cast<unsigned>((seed + ctx.block_linear + ctx.phase) % 3);
  ctx.order.resize(n);
  for (unsigned i = 0; i < n; ++i) ctx.order[i] = kind == 1 ? n - 1 - i : i;
  if (kind == 2) {
    uint64_t state = mix(seed ^ mix(ctx.block_linear ^ mix(ctx.phase)));
    for (unsigned i = n; i > 1; --i) {
      state = mix(state);
      std::swap(ctx.order[i - 1], ctx.order[state % i]);
    }
  }
}

bool same_site(const char* what_a, const char* file_a, int line_a, const char* what_b, const char* file_b, int line_b) {
  return line_a == line_b && (file_a == file_b || std::strcmp(file_a, file_b) == 0) &&
         (what_a == what_b || std::strcmp(what_a, what_b) == 0);
}

std::string site_of(const Fiber& f) { return std::string(f.what) + " at " + short_location(f.file, f.line); }

std::string hex32(unsigned v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

std::vector<unsigned> lanes_of(unsigned mask) {
  std::vector<unsigned> lanes;
  for (unsigned l = 0; l < 32; ++l)
    if (mask >> l & 1) lanes.push_back(l);
  return lanes;
}

// Where a thread that is not at a collective is: "exited" or "waiting at X".
std::string whereabouts(const Fiber& f) {
  switch (f.state) {
    case FiberState::exited: return "exited without reaching it";
    case FiberState::at_barrier:
    case FiberState::at_collective: return "wait at " + site_of(f);
    default: return "are still runnable";
  }
}

// Every warp collective some lanes wait at that can no longer complete.
std::string describe_collective_deadlock(const ThreadContext& ctx) {
  std::string msg = describe_launch(ctx.launch->request) + ": block (" + std::to_string(ctx.block_idx.x) + "," +
                    std::to_string(ctx.block_idx.y) + "," + std::to_string(ctx.block_idx.z) + "): ";
  bool first = true;
  for (size_t w = 0; w < ctx.warps.size(); ++w) {
    for (const WarpOp& op : ctx.warps[w].ops) {
      if (!first) msg += "; ";
      first = false;
      msg += std::string(op.what) + " at " + short_location(op.file, op.line) + " (mask " + hex32(op.mask) +
             ") in warp " + std::to_string(w) + " never completed: lanes " + format_index_set(lanes_of(op.arrived)) +
             " reached it";
      // Group the missing lanes by where they are.
      std::vector<std::pair<std::string, std::vector<unsigned>>> groups;
      for (unsigned l : lanes_of(op.mask & ~op.arrived)) {
        const std::string where = whereabouts(ctx.fibers[w * 32 + l]);
        auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return g.first == where; });
        if (it == groups.end()) groups.push_back({where, {l}});
        else it->second.push_back(l);
      }
      for (const auto& g : groups) msg += "; lanes " + format_index_set(g.second) + " " + g.first;
    }
  }
  return msg;
}

// Threads waiting at different barriers, or some waiting while others exited.
std::string describe_barrier_mismatch(const ThreadContext& ctx) {
  std::vector<std::pair<std::string, std::vector<unsigned>>> groups;
  for (unsigned i = 0; i < ctx.block_threads; ++i) {
    const Fiber& f = ctx.fibers[i];
    const std::string where = f.state == FiberState::exited ? "exited without reaching a barrier the others wait at"
                                                            : "wait at " + site_of(f);
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return g.first == where; });
    if (it == groups.end()) groups.push_back({where, {i}});
    else it->second.push_back(i);
  }
  std::string msg = describe_launch(ctx.launch->request) + ": block (" + std::to_string(ctx.block_idx.x) + "," +
                    std::to_string(ctx.block_idx.y) + "," + std::to_string(ctx.block_idx.z) +
                    "): barrier mismatch (a __syncthreads must be reached by every thread of the block at the same place): ";
  for (size_t g = 0; g < groups.size(); ++g)
    msg += (g ? "; threads " : "threads ") + format_index_set(groups[g].second) + " " + groups[g].first;
  return msg;
}

}  // namespace

// --- what kernels call ---------------------------------------------------------------------------

int lane_id() { return static_cast<int>(tls_context->current->lane); }

LaneSlot& my_lane_slot() {
  const Fiber& f = *tls_context->current;
  return tls_context->warps[f.warp].lanes[f.lane];
}

unsigned active_lanes() {
  const Fiber& f = *tls_context->current;
  const Warp& w = tls_context->warps[f.warp];
  return w.present & ~w.exited;
}

void warp_collective(const char* what, unsigned mask, CollectiveFn fn, const char* file, int line) {
  ThreadContext& ctx = *tls_context;
  Fiber& f = *ctx.current;
  Warp& w = ctx.warps[f.warp];
  const unsigned me = 1u << f.lane;
  if (mask == kWholeWarp) {
    if (w.present != 0xFFFFFFFFu)
      fail(std::string(what) + " at " + short_location(file, line) + " needs all 32 lanes of a warp, but this warp has " +
           std::to_string(__builtin_popcount(w.present)) + " (the block size is not a multiple of 32)");
    mask = 0xFFFFFFFFu;
  }
  if (!(mask & me))
    fail(std::string(what) + " at " + short_location(file, line) + ": lane " + std::to_string(f.lane) +
         " calls it with mask " + hex32(mask) + ", which does not include the lane itself");
  if (mask & ~w.present)
    fail(std::string(what) + " at " + short_location(file, line) + ": mask " + hex32(mask) +
         " names lanes past the end of the block (this warp has lanes " + hex32(w.present) + ")");
  size_t k = 0;
  while (k < w.ops.size() && !(w.ops[k].mask & mask)) ++k;
  if (k < w.ops.size()) {
    const WarpOp& op = w.ops[k];
    if (op.mask != mask || !same_site(op.what, op.file, op.line, what, file, line))
      fail("warp divergence at a collective: lane " + std::to_string(f.lane) + " reached " + what + " at " +
           short_location(file, line) + " with mask " + hex32(mask) + " while lanes " +
           format_index_set(lanes_of(op.arrived)) + " of its warp wait at " + op.what + " at " +
           short_location(op.file, op.line) + " with mask " + hex32(op.mask));
  } else {
    w.ops.push_back(WarpOp{what, file, line, mask, 0, fn});
  }
  WarpOp& op = w.ops[k];
  op.arrived |= me;
  if (op.arrived == op.mask) {
    const CollectiveFn complete = op.fn;
    w.ops.erase(w.ops.begin() + static_cast<ptrdiff_t>(k));
    complete(w.lanes, mask);
    for (unsigned others = mask & ~me; others; others &= others - 1) {
      Fiber& o = ctx.fibers[f.warp * 32 + static_cast<unsigned>(__builtin_ctz(others))];
      o.state = FiberState::ready;
      enqueue(ctx, o.linear);
    }
    return;
  }
  f.state = FiberState::at_collective;
  f.what = what;
  f.file = file;
  f.line = line;
  suspend(ctx, f);
}

int block_barrier(const char* what, BarrierReduce reduce, int value, const char* file, int line) {
  ThreadContext& ctx = *tls_context;
  Fiber& f = *ctx.current;
  f.state = FiberState::at_barrier;
  f.what = what;
  f.file = file;
  f.line = line;
  f.barrier_value = value;
  f.reduce = reduce;
  suspend(ctx, f);
  return ctx.barrier_result;
}

[[noreturn]] void fail(const std::string& message) {
  ThreadContext* ctx = tls_context;
  if (ctx == nullptr || ctx->current == nullptr) throw EmulatorError(message);
  ctx->failed = true;
  ctx->error = describe_current_thread() + ": " + message;
  ++ctx->switches;
  switch_fiber(ctx->current->context, ctx->scheduler);
  __builtin_unreachable();
}

std::string describe_current_thread() {
  const ThreadContext& ctx = *tls_context;
  return describe_launch(ctx.launch->request) + ": " + describe_thread(ctx, *ctx.current);
}

// --- running a block -----------------------------------------------------------------------------

void prepare_launch(ThreadContext& ctx, const LaunchState& launch, unsigned threads, size_t smem_bytes) {
  ctx.launch = &launch;
  ctx.block_threads = threads;
  blockDim = launch.request.block;
  gridDim = launch.request.grid;
  if (ctx.fibers.size() < threads) ctx.fibers.resize(threads);
  const dim3 b = launch.request.block;
  for (unsigned i = 0; i < threads; ++i) {
    Fiber& f = ctx.fibers[i];
    f.tid = uint3{i % b.x, (i / b.x) % b.y, i / (b.x * b.y)};
    f.linear = i;
    f.lane = i % 32;
    f.warp = i / 32;
  }
  ctx.warps.resize((threads + 31) / 32);
  for (size_t w = 0; w < ctx.warps.size(); ++w) {
    const unsigned lanes = std::min(32u, threads - static_cast<unsigned>(w) * 32);
    ctx.warps[w].present = lanes == 32 ? 0xFFFFFFFFu : (1u << lanes) - 1;
  }
  ctx.ready.assign(threads + 1, 0);
  ctx.dynamic_lo = ctx.dynamic_map + ctx.dynamic_map_bytes - ((smem_bytes + 15) & ~size_t(15));
  ctx.dynamic_hi = ctx.dynamic_lo + smem_bytes;
  ctx.dynamic_name = "dynamic shared memory";
}

bool run_block(ThreadContext& ctx, unsigned long long linear) {
  const dim3 g = ctx.launch->request.grid;
  const unsigned n = ctx.block_threads;
  ctx.block_linear = linear;
  ctx.block_idx = uint3{static_cast<unsigned>(linear % g.x), static_cast<unsigned>(linear / g.x % g.y),
                        static_cast<unsigned>(linear / (static_cast<unsigned long long>(g.x) * g.y))};
  blockIdx = ctx.block_idx;
  ctx.phase = 0;
  ctx.failed = false;
  ctx.error.clear();
  reset_shared_memory(ctx);
  for (unsigned i = 0; i < n; ++i) {
    Fiber& f = ctx.fibers[i];
    f.state = FiberState::ready;
    f.copies.clear();
    f.performed = 0;
    f.group_end.clear();
    f.groups_done = 0;
    prepare_fiber(f.context, ctx.arena.stack_lo(static_cast<int>(i)), ctx.arena.stack_hi(static_cast<int>(i)),
                  &fiber_main, &ctx);
  }
  for (Warp& w : ctx.warps) {
    w.exited = 0;
    w.ops.clear();
    w.wgmma_open.clear();
    w.wgmma_groups.clear();
  }
  for (;;) {
    build_order(ctx);
    ctx.ready_head = ctx.ready_tail = 0;
    for (uint32_t i : ctx.order)
      if (ctx.fibers[i].state == FiberState::ready) enqueue(ctx, i);
    while (ctx.ready_head != ctx.ready_tail) {
      Fiber& f = ctx.fibers[ctx.ready[ctx.ready_head]];
      if (++ctx.ready_head == ctx.ready.size()) ctx.ready_head = 0;
      ctx.current = &f;
      threadIdx = f.tid;
      ++ctx.switches;
      switch_fiber(ctx.scheduler, f.context);  // returns when no fiber is ready, or one failed
      ctx.current = nullptr;
      if (ctx.failed) return false;
    }
    // Nobody can run: the block is done, a barrier is complete, or the block is stuck.
    unsigned exited = 0, at_collective = 0;
    const Fiber* barrier = nullptr;
    bool one_barrier = true;
    for (unsigned i = 0; i < n; ++i) {
      const Fiber& f = ctx.fibers[i];
      if (f.state == FiberState::exited) ++exited;
      else if (f.state == FiberState::at_collective) ++at_collective;
      else if (f.state == FiberState::at_barrier) {
        if (barrier == nullptr) barrier = &f;
        else if (!same_site(barrier->what, barrier->file, barrier->line, f.what, f.file, f.line)) one_barrier = false;
      }
    }
    if (exited == n) {
      for (size_t w = 0; w < ctx.warps.size(); ++w)
        if (!ctx.warps[w].wgmma_open.empty() || !ctx.warps[w].wgmma_groups.empty()) {
          const PendingWgmma& op = ctx.warps[w].wgmma_open.empty() ? ctx.warps[w].wgmma_groups.back().back()
                                                                    : ctx.warps[w].wgmma_open.back();
          ctx.error = "warp " + std::to_string(w) + " of block " + std::to_string(ctx.block_linear) +
                      " ended with the wgmma at " + short_location(op.file, op.line) +
                      " never completed by a wgmma.wait_group";
          return false;
        }
      return true;
    }
    if (at_collective > 0) {
      ctx.error = describe_collective_deadlock(ctx);
      return false;
    }
    if (!one_barrier || exited > 0) {
      ctx.error = describe_barrier_mismatch(ctx);
      return false;
    }
    int count = 0;
    for (unsigned i = 0; i < n; ++i) count += ctx.fibers[i].barrier_value != 0;
    switch (barrier->reduce) {
      case BarrierReduce::count: ctx.barrier_result = count; break;
      case BarrierReduce::all: ctx.barrier_result = count == static_cast<int>(n); break;
      case BarrierReduce::any: ctx.barrier_result = count > 0; break;
      default: ctx.barrier_result = 0;
    }
    for (unsigned i = 0; i < n; ++i) ctx.fibers[i].state = FiberState::ready;
    ++ctx.phase;
  }
}

// --- descriptions --------------------------------------------------------------------------------

std::string format_index_set(const std::vector<unsigned>& indices) {
  std::string s;
  for (size_t i = 0; i < indices.size();) {
    size_t j = i;
    while (j + 1 < indices.size() && indices[j + 1] == indices[j] + 1) ++j;
    if (!s.empty()) s += ", ";
    s += std::to_string(indices[i]);
    if (j > i) s += "-" + std::to_string(indices[j]);
    i = j + 1;
  }
  return s.empty() ? "(none)" : s;
}

std::string describe_thread(const ThreadContext& ctx, const Fiber& f) {
  char buf[128];
  std::snprintf(buf, sizeof buf, "block (%u,%u,%u) thread (%u,%u,%u)", ctx.block_idx.x, ctx.block_idx.y,
                ctx.block_idx.z, f.tid.x, f.tid.y, f.tid.z);
  return buf;
}

std::string short_location(const char* file, int line) {
  std::string f = file ? file : "?";
  for (const char* root : {"/cuda/", "/tests/"}) {
    const size_t at = f.rfind(root);
    if (at != std::string::npos) {
      f = f.substr(at + 1);
      break;
    }
  }
  return f + ":" + std::to_string(line);
}

}  // namespace fusegrad::cuda::emulator
