// The emulator's side of FG_LAUNCH (common/launch.cuh): the kernel's arguments are converted to
// its parameter types once, as a <<<...>>> launch copies them, and every emulated thread calls the
// kernel on them. run_grid checks the configuration as a GPU would (an invalid one sets
// cudaGetLastError and runs nothing), records the launch, runs every block, and throws
// EmulatorError if a thread misbehaved.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace fusegrad::cuda::emulator {

struct KernelBody {
  void (*invoke)(const void* closure);
  const void* closure;
};

struct LaunchRequest {
  const char* kernel;  // as written at the launch site
  const char* file;
  int line;
  const void* function;
  dim3 grid, block;
  size_t smem_bytes;
  cudaStream_t stream;
};

void run_grid(const LaunchRequest& request, const KernelBody& body);

// The launch log: every launch that ran, in order.
struct LaunchRecord {
  std::string kernel, file;
  int line;
  dim3 grid, block;
  size_t smem_bytes;
};
std::vector<LaunchRecord> launch_log();
void clear_launch_log();

// The seed of the per-phase thread orders (default 0); the same seed repeats the same schedule.
void set_schedule_seed(unsigned long long seed);
unsigned long long schedule_seed();

// Totals since the module was loaded.
struct EmulatorStats {
  unsigned long long launches, blocks, fiber_switches;
};
EmulatorStats emulator_stats();

}  // namespace fusegrad::cuda::emulator

namespace fusegrad::cuda {

template <class... Params, class... Args>
void launch_kernel(const char* kernel_name, const char* file, int line, void (*kernel)(Params...), dim3 grid,
                   dim3 block, size_t smem_bytes, cudaStream_t stream, Args&&... args) {
  static_assert(sizeof...(Params) == sizeof...(Args), "FG_LAUNCH: wrong number of kernel arguments");
  using Parameters = std::tuple<std::decay_t<Params>...>;
  struct Closure {
    void (*kernel)(Params...);
    Parameters parameters;
  };
  const Closure closure{kernel, Parameters(std::forward<Args>(args)...)};
  const emulator::KernelBody body{
      [](const void* c) {
        const Closure& cl = *static_cast<const Closure*>(c);
        std::apply(cl.kernel, cl.parameters);
      },
      &closure};
  emulator::run_grid({kernel_name, file, line, reinterpret_cast<const void*>(kernel), grid, block, smem_bytes, stream},
                     body);
}

}  // namespace fusegrad::cuda
