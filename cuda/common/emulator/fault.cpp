// The fault handler for emulated kernels (see fault.h).
#include "common/emulator/fault.h"

#include <pthread.h>
#include <signal.h>
#include <sys/auxv.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "common/emulator/context.h"
#include "common/emulator/memory.h"

namespace fusegrad::cuda::emulator {
namespace {

constexpr int kSignals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL};

// Room for the kernel's signal frame (all of the CPU's extended state: with AMX tiles in use about
// 12 KiB) and for the handlers, ours and the ones it passes faults on to.
size_t signal_stack_bytes() {
  static const size_t bytes = std::max<size_t>(64 * 1024, 4 * getauxval(AT_MINSIGSTKSZ));
  return bytes;
}
struct sigaction g_previous[NSIG];
std::atomic<bool> g_log{false};  // FG_EMU_FAULT_LOG=1: each signal the handler sees, and what it decided, on stderr

// Async-signal-safe logging: only write(2) and hand-made hex.
void log_hex(char*& out, const char* label, uintptr_t v) {
  while (*label) *out++ = *label++;
  *out++ = '0';
  *out++ = 'x';
  char digits[16];
  int n = 0;
  do digits[n++] = "0123456789abcdef"[v & 15]; while ((v >>= 4) != 0);
  while (n > 0) *out++ = digits[--n];
}

void log_signal(int sig, uintptr_t sp, uintptr_t addr, const void* ctx, const char* decision) {
  if (!g_log.load(std::memory_order_relaxed)) return;
  char buf[512];
  char* out = buf;
  log_hex(out, "fg-emu-fault: sig=", static_cast<uintptr_t>(sig));
  log_hex(out, " sp=", sp);
  log_hex(out, " addr=", addr);
  log_hex(out, " context=", reinterpret_cast<uintptr_t>(ctx));
  log_hex(out, " self=", reinterpret_cast<uintptr_t>(pthread_self()));
  const char* d = " -> ";
  while (*d) *out++ = *d++;
  while (*decision && out < buf + sizeof buf - 2) *out++ = *decision++;
  *out++ = '\n';
  ssize_t ignored = write(2, buf, static_cast<size_t>(out - buf));
  (void)ignored;
}

uintptr_t stack_pointer(const void* uc) {
  const auto* u = static_cast<const ucontext_t*>(uc);
#if defined(__x86_64__)
  return static_cast<uintptr_t>(u->uc_mcontext.gregs[REG_RSP]);
#elif defined(__aarch64__)
  return static_cast<uintptr_t>(u->uc_mcontext.sp);
#else
  (void)u;
  return 0;
#endif
}

bool is_write(const void* uc) {
#if defined(__x86_64__)
  return (static_cast<const ucontext_t*>(uc)->uc_mcontext.gregs[REG_ERR] & 2) != 0;  // page-fault error code
#else
  (void)uc;
  return false;
#endif
}

void pass_on(int sig, siginfo_t* info, void* uc) {
  const struct sigaction& prev = g_previous[sig];
  if ((prev.sa_flags & SA_SIGINFO) && prev.sa_sigaction != nullptr) {
    prev.sa_sigaction(sig, info, uc);
    return;
  }
  if (!(prev.sa_flags & SA_SIGINFO) && prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN) {
    prev.sa_handler(sig);
    return;
  }
  // No handler before ours: restore the default action; returning re-executes the faulting
  // instruction, which now ends the process as it would have.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(sig, &dfl, nullptr);
}

void on_signal(int sig, siginfo_t* info, void* uc) {
  // A kernel fault is a fault of this OS thread while one of its fibers runs, with the stack
  // pointer in this thread's fiber stacks or (a frame too big for the stack, whose first touch
  // hits a guard page) the faulting address in one of their guard pages. Only this thread's own
  // arena counts: such a frame can move the stack pointer far below its stack, into the arena of
  // another thread mapped just below, whose context is not running anything and must not decide.
  auto* ctx = static_cast<ThreadContext*>(this_thread_arena_owner());
  const uintptr_t sp = stack_pointer(uc);
  const uintptr_t addr = reinterpret_cast<uintptr_t>(info->si_addr);
  const bool memory = sig == SIGSEGV || sig == SIGBUS;
  const char* why = nullptr;
  if (ctx == nullptr) why = "passed on: this thread runs no kernels";
  else if (ctx->current == nullptr) why = "passed on: no fiber of this thread is running";
  else if (!ctx->arena.contains(sp) && !(memory && ctx->arena.guard_page_of(addr) >= 0))
    why = "passed on: neither the stack pointer nor a guard page of this thread's fiber stacks";
  if (why != nullptr) {
    log_signal(sig, sp, addr, ctx, why);
    pass_on(sig, info, uc);
    return;
  }
  log_signal(sig, sp, addr, ctx, "kernel fault: back to the launch");
  ctx->fault = FaultRecord{sig, info->si_code, addr, is_write(uc)};
  siglongjmp(ctx->fault_jump, 1);
}

std::string hex(uintptr_t a) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%" PRIxPTR, a);
  return buf;
}

}  // namespace

void install_fault_handler() {
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  static const bool log = [] {
    const char* env = std::getenv("FG_EMU_FAULT_LOG");
    return env != nullptr && *env != '\0' && std::strcmp(env, "0") != 0;
  }();
  g_log.store(log, std::memory_order_relaxed);
  for (int sig : kSignals) {
    struct sigaction current {};
    sigaction(sig, nullptr, &current);
    if ((current.sa_flags & SA_SIGINFO) && current.sa_sigaction == &on_signal) continue;
    struct sigaction sa {};
    sa.sa_sigaction = &on_signal;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, &g_previous[sig]);
  }
}

void install_signal_stack(ThreadContext& ctx) {
  if (!ctx.signal_stack) ctx.signal_stack.reset(new char[signal_stack_bytes()]);
  stack_t ss{};
  ss.ss_sp = ctx.signal_stack.get();
  ss.ss_size = signal_stack_bytes();
  sigaltstack(&ss, nullptr);
}

void ensure_signal_stack(ThreadContext& ctx) {
  stack_t current{};
  if (sigaltstack(nullptr, &current) == 0 && (current.ss_flags & SS_DISABLE)) install_signal_stack(ctx);
}

void remove_signal_stack(ThreadContext& ctx) {
  stack_t current{};
  if (sigaltstack(nullptr, &current) == 0 && current.ss_sp == ctx.signal_stack.get()) {
    stack_t off{};
    off.ss_flags = SS_DISABLE;
    sigaltstack(&off, nullptr);
  }
  ctx.signal_stack.reset();
}

std::string describe_fault(const ThreadContext& ctx) {
  const FaultRecord& f = ctx.fault;
  std::string who = describe_launch(ctx.launch->request) + ": " + describe_thread(ctx, *ctx.current) + ": ";
  switch (f.signo) {
    case SIGFPE: return who + "arithmetic fault (integer division by zero or overflow)";
    case SIGILL: return who + "illegal instruction (__trap(), or unreachable code was reached)";
    case SIGBUS: return who + "bus error at address " + hex(f.addr);
    default: break;
  }
  if (f.code == SI_KERNEL || (f.addr == 0 && f.code != SEGV_MAPERR))
    return who + "general-protection fault: a misaligned vector access (a float4 or int4 at an address that is "
                 "not 16-byte aligned, say) or a non-canonical address";
  const std::string access = std::string(f.write ? "write to" : "read of") + " address " + hex(f.addr);
  AllocationInfo a{};
  if (find_allocation(f.addr, &a)) {
    const long long offset = static_cast<long long>(f.addr) - static_cast<long long>(a.user);
    std::string where;
    if (!a.live) where = "inside " + describe_allocation(a) + " (use after free)";
    else if (offset < 0) where = std::to_string(-offset) + " bytes before the start of " + describe_allocation(a);
    else if (static_cast<size_t>(offset) >= a.bytes)
      where = "byte offset " + std::to_string(offset) + ", past the end of " + describe_allocation(a);
    else where = "inside " + describe_allocation(a);
    return who + access + ": " + where;
  }
  const int stack = ctx.arena.guard_page_of(f.addr);
  if (stack >= 0)
    return who + "stack overflow of thread " + std::to_string(stack) + " (fiber stacks are " +
           std::to_string(fiber_stack_bytes() / 1024) + " KiB; set FG_EMU_STACK_KIB to raise it)";
  for (const SharedRegion& r : ctx.static_shared)
    if (f.addr >= reinterpret_cast<uintptr_t>(r.hi) && f.addr < reinterpret_cast<uintptr_t>(r.map + r.map_bytes))
      return who + access + ": " + std::to_string(f.addr - reinterpret_cast<uintptr_t>(r.lo)) +
             " bytes from the start of static shared array '" + r.name + "' " + r.shape + " (" +
             std::to_string(r.hi - r.lo) + " bytes), past its end";
  if (f.addr >= reinterpret_cast<uintptr_t>(ctx.dynamic_hi) &&
      f.addr < reinterpret_cast<uintptr_t>(ctx.dynamic_map + ctx.dynamic_map_bytes + static_cast<size_t>(sysconf(_SC_PAGESIZE))))
    return who + access + ": byte offset " + std::to_string(f.addr - reinterpret_cast<uintptr_t>(ctx.dynamic_lo)) +
           " of the dynamic shared memory (" + std::to_string(ctx.dynamic_hi - ctx.dynamic_lo) + " bytes), past its end";
  return who + access + ", which is not inside any emulator allocation (a null or wild pointer, a host pointer, or "
                        "memory freed long ago)";
}

}  // namespace fusegrad::cuda::emulator
