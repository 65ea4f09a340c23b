// Fibers: the emulated CUDA threads of one block, each a user-space context with its own stack,
// switched cooperatively on one OS thread.
//
// On x86-64 a switch is a few instructions (fiber.cpp): it pushes the six callee-saved registers
// on the running stack, swaps stack pointers and pops the other side's; no system call (ucontext's
// swapcontext makes a sigprocmask call on every switch). The floating-point control state (MXCSR,
// x87 control word) is shared by all fibers of a thread: kernels never change it. Other
// architectures, or -DFG_EMU_UCONTEXT, use ucontext instead.
//
// Stacks come from a StackArena: one reserved address range per OS thread, holding up to
// kMaxFibers stacks, each with a PROT_NONE guard page below it so that an overflow faults
// instead of corrupting the neighbour. Each arena is registered with the OS thread that created
// it, so the fault handler finds the faulting thread's own arena (and context) without a
// thread-local lookup, and only then looks at the stack pointer and the faulting address (see
// fault.cpp). Another thread's arena says nothing about this thread's fault: a fiber whose frame
// is larger than its stack moves its stack pointer out of its own arena, possibly into one mapped
// just below it.
#pragma once
#include <cstddef>
#include <cstdint>

#if defined(__x86_64__) && !defined(FG_EMU_UCONTEXT)
#define FG_EMU_X86_64_SWITCH 1
#else
#include <ucontext.h>
#endif

namespace fusegrad::cuda::emulator {

constexpr int kMaxFibers = 1024;  // threads per block on every CUDA device

using FiberEntry = void (*)(void* arg);

// A suspended context: where to resume it.
struct FiberContext {
#if FG_EMU_X86_64_SWITCH
  void* sp = nullptr;
#else
  ucontext_t uc;
#endif
};

// Suspends the running context into `from` and resumes `to`.
void switch_fiber(FiberContext& from, FiberContext& to);

// Makes `ctx` start entry(arg) on the stack [lo, hi) when first switched to. entry must never
// return: it switches away for the last time instead.
void prepare_fiber(FiberContext& ctx, char* lo, char* hi, FiberEntry entry, void* arg);

// kMaxFibers stacks of stack_bytes each, reserved at once and committed by the OS page by page
// as they are touched. Registered as the arena of the constructing OS thread, with `owner`: what
// the fault handler is given when that thread faults.
class StackArena {
 public:
  StackArena(size_t stack_bytes, void* owner);
  ~StackArena();
  StackArena(const StackArena&) = delete;
  StackArena& operator=(const StackArena&) = delete;

  char* stack_lo(int i) const { return base_ + stride_ * i + guard_; }
  char* stack_hi(int i) const { return base_ + stride_ * (i + 1); }
  // Whether addr lies in the guard page below stack i (a stack overflow of fiber i).
  int guard_page_of(uintptr_t addr) const;
  // Whether addr lies in the arena (its stacks or their guard pages).
  bool contains(uintptr_t addr) const {
    const uintptr_t base = reinterpret_cast<uintptr_t>(base_);
    return addr >= base && addr - base < bytes_;
  }

 private:
  char* base_ = nullptr;
  size_t stride_ = 0, guard_ = 0, bytes_ = 0;
  int slot_ = -1;  // index in the global arena registry
};

// The owner of the arena the calling OS thread created, or null if it has none (async-signal-safe:
// a scan of a fixed array).
void* this_thread_arena_owner();

// Bytes of each fiber stack: FG_EMU_STACK_KIB (default 128).
size_t fiber_stack_bytes();

}  // namespace fusegrad::cuda::emulator
