// Running a launch: check its configuration as a GPU would, record it, run its blocks on the
// OpenMP threads (each block entirely on one thread), and turn the first failure into an
// EmulatorError.
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <mutex>

#include "common/emulator/context.h"
#include "common/emulator/error.h"
#include "common/emulator/fault.h"
#include "common/emulator/memory.h"

namespace fusegrad::cuda::emulator {
namespace {

std::mutex g_log_mutex;
std::vector<LaunchRecord> g_log;
std::atomic<unsigned long long> g_seed{0};
std::atomic<unsigned long long> g_launches{0}, g_blocks{0}, g_switches{0};

// The errors an H200 under CUDA 13 returned for the same launches (bench/results/gpu-check-2026-11-29/
// emulator.log): "invalid argument" for a bad block or grid shape as for too much shared memory.
cudaError_t check_configuration(const LaunchRequest& r) {
  const dim3 b = r.block, g = r.grid;
  const unsigned long long threads = 1ull * b.x * b.y * b.z;
  if (threads == 0 || threads > 1024 || b.x > 1024 || b.y > 1024 || b.z > 64) return cudaErrorInvalidValue;
  if (g.x == 0 || g.y == 0 || g.z == 0 || g.x > 0x7FFFFFFFu || g.y > 65535 || g.z > 65535)
    return cudaErrorInvalidValue;
  if (r.smem_bytes > max_dynamic_shared_bytes(r.function)) return cudaErrorInvalidValue;
  return cudaSuccess;
}

// Runs blocks of the launch on this thread until none is left or one fails.
void run_blocks(LaunchState& launch) {
  ThreadContext* ctx_ptr = nullptr;
  try {
    ctx_ptr = &this_thread_context();
    ensure_signal_stack(*ctx_ptr);
    prepare_launch(*ctx_ptr, launch, launch.threads, launch.request.smem_bytes);
  } catch (const std::exception& e) {
    launch.fail(describe_launch(launch.request) + ": " + e.what());
    return;
  }
  ThreadContext& ctx = *ctx_ptr;
  const unsigned long long switches_before = ctx.switches;
  if (sigsetjmp(ctx.fault_jump, 1) != 0) {
    // A fiber faulted; the handler jumped back here. Its block is abandoned.
    launch.fail(describe_fault(ctx));
    ctx.current = nullptr;
  } else {
    try {
      while (!launch.failed.load(std::memory_order_relaxed)) {
        const unsigned long long b = launch.next.fetch_add(1);
        if (b >= launch.blocks) break;
        if (!run_block(ctx, b)) {
          launch.fail(ctx.error);
          break;
        }
      }
    } catch (const std::exception& e) {
      launch.fail(describe_launch(launch.request) + ": " + e.what());
    }
  }
  launch.switches += ctx.switches - switches_before;
  ctx.launch = nullptr;
}

std::string strip_parentheses(std::string name) {
  while (name.size() >= 2 && name.front() == '(' && name.back() == ')') name = name.substr(1, name.size() - 2);
  return name;
}

}  // namespace

void run_grid(const LaunchRequest& request, const KernelBody& body) {
  if (tls_context != nullptr && tls_context->current != nullptr)
    fail("launches from device code (dynamic parallelism) are not emulated");
  const cudaError_t config = check_configuration(request);
  if (config != cudaSuccess) {
    set_last_error(config);
    return;
  }
  install_fault_handler();
  {
    std::lock_guard<std::mutex> lock(g_log_mutex);
    g_log.push_back({strip_parentheses(request.kernel), short_location(request.file, request.line), request.line,
                     request.grid, request.block, request.smem_bytes});
  }
  LaunchState launch;
  launch.request = request;
  launch.body = body;
  launch.blocks = 1ull * request.grid.x * request.grid.y * request.grid.z;
  launch.threads = request.block.x * request.block.y * request.block.z;
  launch.seed = g_seed.load();
  const int teams = static_cast<int>(std::min<unsigned long long>(launch.blocks, static_cast<unsigned long long>(omp_get_max_threads())));
  if (teams <= 1) {
    run_blocks(launch);
  } else {
#pragma omp parallel num_threads(teams)
    run_blocks(launch);
  }
  g_launches += 1;
  g_blocks += launch.blocks;
  g_switches += launch.switches;
  if (!launch.failed) {
    const std::string canaries = check_canaries();
    if (!canaries.empty()) launch.fail(describe_launch(request) + ": " + canaries);
  } else {
    check_canaries();  // restore them; the first failure is the one to report
  }
  if (launch.failed) throw EmulatorError(launch.error);
}

std::string describe_launch(const LaunchRequest& r) {
  char buf[160];
  std::snprintf(buf, sizeof buf, " (grid (%u,%u,%u), block (%u,%u,%u), %zu bytes of dynamic shared memory)", r.grid.x,
                r.grid.y, r.grid.z, r.block.x, r.block.y, r.block.z, r.smem_bytes);
  return "kernel " + strip_parentheses(r.kernel) + buf;
}

std::vector<LaunchRecord> launch_log() {
  std::lock_guard<std::mutex> lock(g_log_mutex);
  return g_log;
}

void clear_launch_log() {
  std::lock_guard<std::mutex> lock(g_log_mutex);
  g_log.clear();
}

void set_schedule_seed(unsigned long long seed) { g_seed = seed; }
unsigned long long schedule_seed() { return g_seed; }

EmulatorStats emulator_stats() { return {g_launches.load(), g_blocks.load(), g_switches.load()}; }

}  // namespace fusegrad::cuda::emulator
