// Shared memory storage and its checks (see shared_memory.h).
#include "common/emulator/shared_memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <new>

#include "common/emulator/context.h"

namespace fusegrad::cuda::emulator {

FG_EMU_THREAD_LOCAL int tls_pending_copies = 0;

namespace {

size_t page_size() {
  static const size_t p = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return p;
}

std::string hex(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);
  return buf;
}

const SharedRegion* static_region_of(const ThreadContext& ctx, const void* p) {
  const char* c = static_cast<const char*>(p);
  for (const SharedRegion& r : ctx.static_shared)
    if (c >= r.lo && c < r.hi) return &r;
  return nullptr;
}

}  // namespace

void* allocate_static_shared(size_t bytes, const char* name, const std::string& shape) {
  ThreadContext& ctx = this_thread_context();
  const size_t p = page_size();
  const size_t data_pages = (bytes + p - 1) / p;
  const size_t map_bytes = (data_pages + 1) * p;
  void* m = mmap(nullptr, map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) throw std::bad_alloc();
  char* map = static_cast<char*>(m);
  char* guard = map + data_pages * p;
  mprotect(guard, p, PROT_NONE);
  char* lo = reinterpret_cast<char*>(reinterpret_cast<uintptr_t>(guard - bytes) & ~uintptr_t(15));
  std::memset(lo, 0xFF, bytes);
  ctx.static_shared.push_back(SharedRegion{lo, lo + bytes, map, map_bytes, name, shape});
  return lo;
}

void release_static_shared(void* data) {
  ThreadContext* ctx = tls_context;
  if (ctx == nullptr) return;
  auto& regions = ctx->static_shared;
  auto it = std::find_if(regions.begin(), regions.end(), [&](const SharedRegion& r) { return r.lo == data; });
  if (it == regions.end()) return;
  munmap(it->map, it->map_bytes);
  regions.erase(it);
}

void reset_shared_memory(ThreadContext& ctx) {
  for (const SharedRegion& r : ctx.static_shared) std::memset(r.lo, 0xFF, static_cast<size_t>(r.hi - r.lo));
  std::memset(ctx.dynamic_lo, 0xFF, static_cast<size_t>(ctx.dynamic_hi - ctx.dynamic_lo));
  ctx.pending_words.clear();
  tls_pending_copies = 0;
}

bool find_shared_region(const ThreadContext& ctx, const void* p, size_t bytes, const char** name, const char** lo,
                        const char** hi) {
  const char* c = static_cast<const char*>(p);
  if (const SharedRegion* r = static_region_of(ctx, p)) {
    *name = r->name;
    *lo = r->lo;
    *hi = r->hi;
    return c + bytes <= r->hi;
  }
  if (c >= ctx.dynamic_lo && c < ctx.dynamic_hi) {
    *name = ctx.dynamic_name;
    *lo = ctx.dynamic_lo;
    *hi = ctx.dynamic_hi;
    return c + bytes <= ctx.dynamic_hi;
  }
  return false;
}

DynamicShared dynamic_shared_region(const char* name) {
  ThreadContext& ctx = *tls_context;
  ctx.dynamic_name = name;
  return {ctx.dynamic_lo, ctx.dynamic_hi};
}

void shared_index_error(const void* array, long long index, long long extent, int dimension) {
  const ThreadContext& ctx = *tls_context;
  std::string what = "static shared array";
  if (const SharedRegion* r = static_region_of(ctx, array)) what += " '" + std::string(r->name) + "' " + r->shape;
  fail(what + ": index " + std::to_string(index) + " is out of range [0, " + std::to_string(extent) +
       ") in dimension " + std::to_string(dimension));
}

void span_index_error(const void* lo, const void* hi, intptr_t at, size_t element_bytes) {
  const ThreadContext& ctx = *tls_context;
  const char* name = "shared memory";
  if (lo == ctx.dynamic_lo) name = ctx.dynamic_name;
  else if (const SharedRegion* r = static_region_of(ctx, lo)) name = r->name;
  const intptr_t offset = at - reinterpret_cast<intptr_t>(lo);
  const intptr_t size = static_cast<const char*>(hi) - static_cast<const char*>(lo);
  std::string msg = std::string("'") + name + "' (" + std::to_string(size) + " bytes of " +
                    (lo == ctx.dynamic_lo ? "dynamic" : "static") + " shared memory): access of " +
                    std::to_string(element_bytes) + " bytes at byte offset " + std::to_string(offset);
  if (offset % static_cast<intptr_t>(element_bytes) == 0)
    msg += " (element " + std::to_string(offset / static_cast<intptr_t>(element_bytes)) + " of " +
           std::to_string(size / static_cast<intptr_t>(element_bytes)) + ")";
  fail(msg + " is out of range");
}

void misaligned_view_error(const void* p, size_t alignment) {
  fail("shared_as: address " + hex(p) + " is not aligned to the " + std::to_string(alignment) +
       " bytes the new element type needs");
}

void check_no_pending_copy(const void* p, size_t bytes) {
  const ThreadContext& ctx = *tls_context;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  for (uintptr_t word = a / 4; word <= (a + (bytes ? bytes - 1 : 0)) / 4; ++word) {
    auto it = ctx.pending_words.find(word);
    if (it == ctx.pending_words.end()) continue;
    const char *name = "shared memory", *lo = nullptr, *hi = nullptr;
    find_shared_region(ctx, p, bytes, &name, &lo, &hi);
    const Fiber& issuer = ctx.fibers[it->second.issuer];
    fail("reads or writes '" + std::string(name) + "' at byte offset " +
         std::to_string(lo ? static_cast<const char*>(p) - lo : 0) + " while a cp.async into it, issued by thread (" +
         std::to_string(issuer.tid.x) + "," + std::to_string(issuer.tid.y) + "," + std::to_string(issuer.tid.z) +
         ") at " + short_location(it->second.file, it->second.line) +
         ", is still pending (not yet completed by a cp.async.wait_group / wait_all followed by a barrier)");
  }
}

}  // namespace fusegrad::cuda::emulator
