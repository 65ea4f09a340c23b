// Creation and destruction of the per-OS-thread emulator state (see context.h).
#include "common/emulator/context.h"

#include <sys/mman.h>
#include <unistd.h>

#include <new>

#include "common/emulator/fault.h"
#include <cuda_runtime.h>

namespace fusegrad::cuda::emulator {

ThreadContext::ThreadContext() : arena(fiber_stack_bytes(), this), thread(pthread_self()) {
  // The dynamic shared memory of every launch run by this thread: the largest a block may have,
  // followed by a guard page; a launch uses its last smem_bytes (see prepare_launch).
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  dynamic_map_bytes = (kSharedPerBlockOptin + page - 1) / page * page;
  void* m = mmap(nullptr, dynamic_map_bytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) throw std::bad_alloc();
  dynamic_map = static_cast<char*>(m);
  mprotect(dynamic_map + dynamic_map_bytes, page, PROT_NONE);
  dynamic_lo = dynamic_hi = dynamic_map + dynamic_map_bytes;
}

ThreadContext::~ThreadContext() {
  remove_signal_stack(*this);
  for (const SharedRegion& r : static_shared) munmap(r.map, r.map_bytes);
  munmap(dynamic_map, dynamic_map_bytes + static_cast<size_t>(sysconf(_SC_PAGESIZE)));
  if (tls_context == this) tls_context = nullptr;
}

ThreadContext& this_thread_context() {
  if (tls_context != nullptr) return *tls_context;
  static thread_local std::unique_ptr<ThreadContext> owner;
  owner = std::make_unique<ThreadContext>();
  tls_context = owner.get();
  install_signal_stack(*tls_context);
  return *tls_context;
}

}  // namespace fusegrad::cuda::emulator
