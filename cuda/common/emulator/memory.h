// Emulated device memory: every allocation is its own mapping between two PROT_NONE guard pages,
// so a kernel access past either end faults, and the fault handler names the allocation.
//
// Placement within the pages:
//   end          the last byte touches the trailing guard: any overrun faults (the start is only
//                as aligned as the size makes it)
//   start        the first byte follows the leading guard, page-aligned: any underrun faults, and
//                vector paths stay aligned
//   end_aligned  as close to the trailing guard as 256-byte alignment of the start allows (what
//                cudaMalloc returns): an overrun faults once it passes the few slack bytes
// Slack bytes beside an allocation are filled with a canary that is checked after every launch,
// which catches writes into them (the writer is not known then). New memory is filled with 0xFF
// bytes (NaN floats), as device memory holds garbage until written. Freed allocations stay
// inaccessible for a while, so a use after free faults and is named as such.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace fusegrad::cuda::emulator {

enum class Placement { start, end, end_aligned };
Placement placement_from_name(const std::string& name);  // throws std::invalid_argument
const char* placement_name(Placement placement);

void* allocate(size_t bytes, Placement placement);  // throws std::bad_alloc
bool release(void* user);                           // false if user is not a live allocation's start

struct AllocationInfo {
  uint64_t id;
  uintptr_t user, map_lo, map_hi;  // [map_lo, map_hi): the mapping with its guard pages
  size_t bytes;
  Placement placement;
  bool live;
};
// The allocation whose mapping (guards included) holds addr, live or recently freed.
bool find_allocation(uintptr_t addr, AllocationInfo* info);

// Whether [p, p + bytes) may be copied: true unless p lies in an allocation's mapping and the
// range leaves the allocation.
bool range_is_valid(const void* p, size_t bytes);

// Describes the allocations whose canaries were overwritten (empty if none); restores them.
std::string check_canaries();

// "allocation #7 (1024 bytes at 0x..., placement end)".
std::string describe_allocation(const AllocationInfo& info);

}  // namespace fusegrad::cuda::emulator
