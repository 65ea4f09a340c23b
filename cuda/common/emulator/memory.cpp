// Guarded device allocations (see memory.h).
#include "common/emulator/memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <new>
#include <stdexcept>

namespace fusegrad::cuda::emulator {
namespace {

constexpr unsigned char kCanary = 0xA5;
constexpr size_t kCanaryChecked = 256;        // slack bytes checked on each side after a launch
constexpr size_t kQuarantineEntries = 512;    // freed mappings kept inaccessible
constexpr size_t kQuarantineBytes = size_t(1) << 32;

struct Allocation {
  uint64_t id;
  char* map;
  size_t map_bytes;
  char* user;
  size_t bytes;
  Placement placement;
  bool live;
};

std::mutex g_mutex;
std::map<uintptr_t, Allocation> g_allocations;  // by mapping start
std::deque<uintptr_t> g_quarantine;             // freed, oldest first
size_t g_quarantine_bytes = 0;
uint64_t g_next_id = 1;

size_t page_size() {
  static const size_t p = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return p;
}

// The allocation whose mapping holds addr; caller holds g_mutex.
const Allocation* lookup(uintptr_t addr) {
  auto it = g_allocations.upper_bound(addr);
  if (it == g_allocations.begin()) return nullptr;
  --it;
  const Allocation& a = it->second;
  return addr < reinterpret_cast<uintptr_t>(a.map) + a.map_bytes ? &a : nullptr;
}

// The slack bytes before and after the user range, inside the accessible pages.
void slack_ranges(const Allocation& a, char** before, size_t* before_bytes, char** after, size_t* after_bytes) {
  const size_t p = page_size();
  char* data_lo = a.map + p;
  char* data_hi = a.map + a.map_bytes - p;
  *before = data_lo;
  *before_bytes = static_cast<size_t>(a.user - data_lo);
  *after = a.user + a.bytes;
  *after_bytes = static_cast<size_t>(data_hi - (a.user + a.bytes));
}

AllocationInfo info_of(const Allocation& a) {
  return {a.id, reinterpret_cast<uintptr_t>(a.user), reinterpret_cast<uintptr_t>(a.map),
          reinterpret_cast<uintptr_t>(a.map) + a.map_bytes, a.bytes, a.placement, a.live};
}

}  // namespace

Placement placement_from_name(const std::string& name) {
  if (name == "start") return Placement::start;
  if (name == "end") return Placement::end;
  if (name == "end_aligned") return Placement::end_aligned;
  throw std::invalid_argument("placement must be 'start', 'end' or 'end_aligned', got '" + name + "'");
}

const char* placement_name(Placement placement) {
  switch (placement) {
    case Placement::start: return "start";
    case Placement::end: return "end";
    default: return "end_aligned";
  }
}

void* allocate(size_t bytes, Placement placement) {
  const size_t p = page_size();
  const size_t data_pages = (bytes + p - 1) / p;
  const size_t map_bytes = (data_pages + 2) * p;
  void* m = mmap(nullptr, map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) throw std::bad_alloc();
  char* map = static_cast<char*>(m);
  mprotect(map, p, PROT_NONE);
  mprotect(map + map_bytes - p, p, PROT_NONE);
  char* data_lo = map + p;
  char* data_hi = map + map_bytes - p;
  char* user = data_lo;
  if (placement == Placement::end) user = data_hi - bytes;
  if (placement == Placement::end_aligned)
    user = reinterpret_cast<char*>(reinterpret_cast<uintptr_t>(data_hi - bytes) & ~uintptr_t(255));
  std::memset(data_lo, kCanary, static_cast<size_t>(user - data_lo));
  std::memset(user, 0xFF, bytes);
  std::memset(user + bytes, kCanary, static_cast<size_t>(data_hi - (user + bytes)));
  std::lock_guard<std::mutex> lock(g_mutex);
  g_allocations[reinterpret_cast<uintptr_t>(map)] = Allocation{g_next_id++, map, map_bytes, user, bytes, placement, true};
  return user;
}

bool release(void* user) {
  std::lock_guard<std::mutex> lock(g_mutex);
  const Allocation* found = lookup(reinterpret_cast<uintptr_t>(user));
  if (found == nullptr || !found->live || found->user != user) return false;
  Allocation& a = g_allocations.at(reinterpret_cast<uintptr_t>(found->map));
  a.live = false;
  madvise(a.map, a.map_bytes, MADV_DONTNEED);
  mprotect(a.map, a.map_bytes, PROT_NONE);
  g_quarantine.push_back(reinterpret_cast<uintptr_t>(a.map));
  g_quarantine_bytes += a.map_bytes;
  while (g_quarantine.size() > kQuarantineEntries || g_quarantine_bytes > kQuarantineBytes) {
    auto it = g_allocations.find(g_quarantine.front());
    g_quarantine.pop_front();
    g_quarantine_bytes -= it->second.map_bytes;
    munmap(it->second.map, it->second.map_bytes);
    g_allocations.erase(it);
  }
  return true;
}

bool find_allocation(uintptr_t addr, AllocationInfo* info) {
  std::lock_guard<std::mutex> lock(g_mutex);
  const Allocation* a = lookup(addr);
  if (a == nullptr) return false;
  *info = info_of(*a);
  return true;
}

bool range_is_valid(const void* p, size_t bytes) {
  const uintptr_t lo = reinterpret_cast<uintptr_t>(p);
  std::lock_guard<std::mutex> lock(g_mutex);
  const Allocation* a = lookup(lo);
  if (a == nullptr) return lookup(lo + (bytes ? bytes - 1 : 0)) == nullptr;
  const uintptr_t user = reinterpret_cast<uintptr_t>(a->user);
  return a->live && lo >= user && lo + bytes <= user + a->bytes;
}

std::string check_canaries() {
  std::string report;
  std::lock_guard<std::mutex> lock(g_mutex);
  for (auto& [start, a] : g_allocations) {
    if (!a.live) continue;
    char *before, *after;
    size_t before_bytes, after_bytes;
    slack_ranges(a, &before, &before_bytes, &after, &after_bytes);
    // Bytes nearest the user range first: that is where an off-by-a-few write lands.
    size_t overrun = 0, underrun = 0;
    for (size_t i = 0; i < std::min(after_bytes, kCanaryChecked); ++i)
      if (static_cast<unsigned char>(after[i]) != kCanary) overrun = i + 1;
    for (size_t i = 0; i < std::min(before_bytes, kCanaryChecked); ++i)
      if (static_cast<unsigned char>(before[before_bytes - 1 - i]) != kCanary) underrun = i + 1;
    if (overrun == 0 && underrun == 0) continue;
    if (!report.empty()) report += "; ";
    if (overrun)
      report += "a write landed up to " + std::to_string(overrun) + " bytes past the end of " + describe_allocation(info_of(a));
    if (underrun)
      report += std::string(overrun ? " and " : "a write landed ") + "up to " + std::to_string(underrun) +
                " bytes before the start of " + describe_allocation(info_of(a));
    std::memset(after, kCanary, after_bytes);
    std::memset(before, kCanary, before_bytes);
  }
  if (!report.empty()) report += " (found in the allocation's slack bytes after the launch; the writing thread is not known)";
  return report;
}

std::string describe_allocation(const AllocationInfo& info) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "allocation #%" PRIu64 " (%zu bytes at 0x%" PRIxPTR ", placement %s%s)", info.id, info.bytes,
                info.user, placement_name(info.placement), info.live ? "" : ", already freed");
  return buf;
}

}  // namespace fusegrad::cuda::emulator
