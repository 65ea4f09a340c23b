// Fiber switching and fiber stacks (see fiber.h).
#include "common/emulator/fiber.h"

#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>

namespace fusegrad::cuda::emulator {

#if FG_EMU_X86_64_SWITCH

// fg_emu_switch(save_sp, load_sp): pushes the callee-saved state of the running context, stores
// its stack pointer in *save_sp, loads load_sp and pops the other context's state.
// fg_emu_fiber_start: where a fresh fiber first "returns" to; calls r13(r12) and never returns.
asm(R"(
  .pushsection .text
  .p2align 4
  .globl fg_emu_switch
  .hidden fg_emu_switch
  .type fg_emu_switch,@function
fg_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size fg_emu_switch, .-fg_emu_switch

  .p2align 4
  .globl fg_emu_fiber_start
  .hidden fg_emu_fiber_start
  .type fg_emu_fiber_start,@function
fg_emu_fiber_start:
  movq %r12, %rdi
  callq *%r13
  ud2
  .size fg_emu_fiber_start, .-fg_emu_fiber_start
  .popsection
)");

extern "C" {
__attribute__((visibility("hidden"))) void fg_emu_switch(void** save_sp, void* load_sp);
__attribute__((visibility("hidden"))) void fg_emu_fiber_start();
}

void switch_fiber(FiberContext& from, FiberContext& to) { fg_emu_switch(&from.sp, to.sp); }

void prepare_fiber(FiberContext& ctx, char* /*lo*/, char* hi, FiberEntry entry, void* arg) {
  // The frame fg_emu_switch pops, lowest address first: r15, r14, r13, r12, rbx, rbp, return
  // address. After the final `ret` the stack pointer is 16-byte aligned, as the call in
  // fg_emu_fiber_start needs.
  const uintptr_t top = reinterpret_cast<uintptr_t>(hi) & ~uintptr_t(15);
  uint64_t* sp = reinterpret_cast<uint64_t*>(top - 72);
  sp[0] = 0;                                     // r15
  sp[1] = 0;                                     // r14
  sp[2] = reinterpret_cast<uint64_t>(entry);     // r13
  sp[3] = reinterpret_cast<uint64_t>(arg);       // r12
  sp[4] = 0;                                     // rbx
  sp[5] = 0;                                     // rbp
  sp[6] = reinterpret_cast<uint64_t>(&fg_emu_fiber_start);
  sp[7] = sp[8] = 0;
  ctx.sp = sp;
}

#else  // ucontext fallback

namespace {
struct StartArgs {
  FiberEntry entry;
  void* arg;
};
void start_trampoline(unsigned hi, unsigned lo) {
  auto* a = reinterpret_cast<StartArgs*>((uintptr_t(hi) << 32) | uintptr_t(lo));
  a->entry(a->arg);
  std::abort();  // entry never returns
}
}  // namespace

void switch_fiber(FiberContext& from, FiberContext& to) { swapcontext(&from.uc, &to.uc); }

void prepare_fiber(FiberContext& ctx, char* lo, char* hi, FiberEntry entry, void* arg) {
  // The start arguments live at the top of the fiber's own stack.
  auto* args = reinterpret_cast<StartArgs*>((reinterpret_cast<uintptr_t>(hi) - sizeof(StartArgs)) & ~uintptr_t(15));
  args->entry = entry;
  args->arg = arg;
  getcontext(&ctx.uc);
  ctx.uc.uc_stack.ss_sp = lo;
  ctx.uc.uc_stack.ss_size = reinterpret_cast<char*>(args) - lo;
  ctx.uc.uc_link = nullptr;
  const uintptr_t p = reinterpret_cast<uintptr_t>(args);
  makecontext(&ctx.uc, reinterpret_cast<void (*)()>(&start_trampoline), 2, unsigned(p >> 32), unsigned(p));
}

#endif

// --- stack arenas --------------------------------------------------------------------------------

namespace {

// Every live arena and the OS thread that owns it, for the fault handler: a fixed array scanned
// without locks. A thread's own slot is written only by that thread (its context is created and
// destroyed on it), so the handler reads it consistently.
constexpr int kMaxArenas = 4096;
struct ArenaSlot {
  std::atomic<pthread_t> thread{};
  std::atomic<void*> owner{nullptr};
  std::atomic<bool> used{false};
};
ArenaSlot g_arenas[kMaxArenas];

size_t page_size() {
  static const size_t p = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return p;
}

// In a child of fork() only the forking thread lives on; the other threads' slots would name
// pthread_t values that the child's new threads may be given again.
void forget_other_threads_after_fork() {
  const pthread_t self = pthread_self();
  for (ArenaSlot& slot : g_arenas) {
    if (!slot.used.load() || pthread_equal(slot.thread.load(), self)) continue;
    slot.thread.store(pthread_t{});
    slot.owner.store(nullptr);
    slot.used.store(false);  // its mapping stays: the dead thread's context still refers to it
  }
}

}  // namespace

size_t fiber_stack_bytes() {
  static const size_t bytes = [] {
    long kib = 128;
    if (const char* env = std::getenv("FG_EMU_STACK_KIB")) kib = std::strtol(env, nullptr, 10);
    kib = std::clamp(kib, 16L, 16L * 1024);
    const size_t p = page_size();
    return (static_cast<size_t>(kib) * 1024 + p - 1) / p * p;
  }();
  return bytes;
}

StackArena::StackArena(size_t stack_bytes, void* owner) {
  guard_ = page_size();
  stride_ = stack_bytes + guard_;
  bytes_ = stride_ * kMaxFibers;
  void* p = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  base_ = static_cast<char*>(p);
  for (int i = 0; i < kMaxFibers; ++i) mprotect(base_ + stride_ * i, guard_, PROT_NONE);
  static const int at_fork = pthread_atfork(nullptr, nullptr, &forget_other_threads_after_fork);
  (void)at_fork;
  for (int s = 0; s < kMaxArenas; ++s) {
    bool expected = false;
    if (g_arenas[s].used.compare_exchange_strong(expected, true)) {
      g_arenas[s].owner.store(owner);
      g_arenas[s].thread.store(pthread_self(), std::memory_order_release);
      slot_ = s;
      return;
    }
  }
  munmap(base_, bytes_);
  throw std::runtime_error("emulator: too many threads running kernels at once (no free stack arena slot)");
}

StackArena::~StackArena() {
  if (slot_ >= 0) {
    g_arenas[slot_].thread.store(pthread_t{});
    g_arenas[slot_].owner.store(nullptr);
    g_arenas[slot_].used.store(false);
  }
  munmap(base_, bytes_);
}

int StackArena::guard_page_of(uintptr_t addr) const {
  const uintptr_t base = reinterpret_cast<uintptr_t>(base_);
  if (addr < base || addr >= base + bytes_) return -1;
  const size_t i = (addr - base) / stride_;
  return (addr - base) % stride_ < guard_ ? static_cast<int>(i) : -1;
}

void* this_thread_arena_owner() {
  const pthread_t self = pthread_self();
  for (int s = 0; s < kMaxArenas; ++s) {
    if (!g_arenas[s].used.load(std::memory_order_acquire)) continue;
    if (pthread_equal(g_arenas[s].thread.load(std::memory_order_acquire), self))
      return g_arenas[s].owner.load(std::memory_order_relaxed);
  }
  return nullptr;
}

}  // namespace fusegrad::cuda::emulator
