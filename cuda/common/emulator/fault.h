// Faults inside emulated kernels: a SIGSEGV (or SIGBUS, SIGFPE, SIGILL) raised while a fiber runs
// is turned into an error naming the kernel, block, thread, address and allocation, and the launch
// throws EmulatorError; the process carries on.
//
// The handler runs on a per-thread alternate signal stack (a fiber that overflowed its stack has
// none left). It decides "inside a kernel" from the faulting thread's own fiber stack arena (found
// by thread, not by address): if a fiber of that thread is running and the faulting stack pointer
// lies in the arena, or the faulting address in one of its guard pages, it records the fault in
// the thread's context and siglongjmps back to the launch on the OS thread's own stack (grid.cpp).
// Any other fault is passed to the handler that was installed before (Python's faulthandler, say)
// or, if there was none, gets the default action, so it crashes exactly as it would have without
// the emulator. FG_EMU_FAULT_LOG=1 logs each signal the handler sees, and its decision, to stderr.
#pragma once
#include <string>

namespace fusegrad::cuda::emulator {

struct ThreadContext;

// Installs the handler for SIGSEGV, SIGBUS, SIGFPE and SIGILL unless it is already installed;
// called before every launch, so a handler installed later (faulthandler.enable()) is chained.
void install_fault_handler();

// Gives the calling thread an alternate signal stack owned by ctx.
void install_signal_stack(ThreadContext& ctx);
// Reinstalls it before a launch if the thread has none any more (code run on the thread between
// launches disabled it): a fiber that overflows its stack can only be caught on one.
void ensure_signal_stack(ThreadContext& ctx);
void remove_signal_stack(ThreadContext& ctx);

// What ctx.fault means: the access, the thread, and the allocation or shared array it missed.
std::string describe_fault(const ThreadContext& ctx);

}  // namespace fusegrad::cuda::emulator
