// The data exchange of the warp intrinsics (sync_intrinsics.h): run by the last lane to arrive,
// for every lane of the mask.
#include <string>

#include "common/emulator/context.h"
#include "common/emulator/sync_intrinsics.h"

namespace fusegrad::cuda::emulator {

// PTX shfl.sync: c = ((32 - width) << 8) | clamp, clamp 0 for .up and 31 otherwise.
void shuffle_exchange(LaneSlot* lanes, unsigned mask) {
  for (unsigned l = 0; l < 32; ++l) {
    if (!(mask >> l & 1)) continue;
    const LaneSlot& s = lanes[l];
    const int mode = static_cast<int>(s.in[2]);
    const unsigned segmask = static_cast<unsigned>(32 - s.width) & 0x1Fu;
    const unsigned clamp = mode == shfl_up ? 0u : 0x1Fu;
    const int max_lane = static_cast<int>((l & segmask) | (clamp & ~segmask));
    const int min_lane = static_cast<int>(l & segmask);
    const unsigned b = static_cast<unsigned>(s.arg) & 0x1Fu;
    int j = 0;
    bool inside = false;
    switch (mode) {
      case shfl_up: j = static_cast<int>(l) - static_cast<int>(b); inside = j >= max_lane; break;
      case shfl_down: j = static_cast<int>(l + b); inside = j <= max_lane; break;
      case shfl_bfly: j = static_cast<int>(l ^ b); inside = j <= max_lane; break;
      default: j = min_lane | static_cast<int>(b & ~segmask); inside = j <= max_lane; break;
    }
    if (!inside) j = static_cast<int>(l);
    if (mask >> j & 1) {
      lanes[l].out[0] = lanes[j].in[0];
      lanes[l].out[1] = lanes[j].in[1];
    } else {
      lanes[l].out[0] = lanes[l].out[1] = 0xFFFFFFFFu;  // undefined on a GPU: make it visible
    }
  }
}

void shuffle_width_error(const char* what, int width, const char* file, int line) {
  fail(std::string(what) + " at " + short_location(file, line) + ": width " + std::to_string(width) +
       " is not a power of two between 1 and 32");
}

void vote_exchange(LaneSlot* lanes, unsigned mask) {
  unsigned ballot = 0;
  for (unsigned l = 0; l < 32; ++l)
    if ((mask >> l & 1) && lanes[l].in[1] != 0) ballot |= 1u << l;
  for (unsigned l = 0; l < 32; ++l) {
    if (!(mask >> l & 1)) continue;
    switch (static_cast<int>(lanes[l].in[0])) {
      case vote_ballot: lanes[l].out[0] = ballot; break;
      case vote_any: lanes[l].out[0] = ballot != 0; break;
      case vote_all: lanes[l].out[0] = ballot == mask; break;
      default: lanes[l].out[0] = 0;
    }
  }
}

unsigned vote(const char* what, VoteKind kind, unsigned mask, int predicate, const char* file, int line) {
  LaneSlot& s = my_lane_slot();
  s.in[0] = static_cast<uint32_t>(kind);
  s.in[1] = predicate != 0;
  warp_collective(what, mask, &vote_exchange, file, line);
  return s.out[0];
}

void reduce_exchange(LaneSlot* lanes, unsigned mask) {
  const int kind = static_cast<int>(lanes[__builtin_ctz(mask)].in[2]);
  auto value = [&](unsigned l) { return lanes[l].in[0] | static_cast<uint64_t>(lanes[l].in[1]) << 32; };
  if (kind == match_any || kind == match_all) {
    bool all_equal = true;
    for (unsigned l = 0; l < 32; ++l)
      if ((mask >> l & 1) && value(l) != value(__builtin_ctz(mask))) all_equal = false;
    for (unsigned l = 0; l < 32; ++l) {
      if (!(mask >> l & 1)) continue;
      unsigned same = 0;
      for (unsigned k = 0; k < 32; ++k)
        if ((mask >> k & 1) && value(k) == value(l)) same |= 1u << k;
      lanes[l].out[0] = kind == match_any ? same : (all_equal ? mask : 0u);
      lanes[l].out[1] = 0;
    }
    return;
  }
  uint32_t r = 0;
  bool first = true;
  for (unsigned l = 0; l < 32; ++l) {
    if (!(mask >> l & 1)) continue;
    const uint32_t v = lanes[l].in[0];
    if (first) {
      r = v;
      first = false;
      continue;
    }
    switch (kind) {
      case reduce_add: r += v; break;
      case reduce_min: r = v < r ? v : r; break;
      case reduce_max: r = v > r ? v : r; break;
      case reduce_min_signed: r = static_cast<int32_t>(v) < static_cast<int32_t>(r) ? v : r; break;
      case reduce_max_signed: r = static_cast<int32_t>(v) > static_cast<int32_t>(r) ? v : r; break;
      case reduce_and: r &= v; break;
      case reduce_or: r |= v; break;
      default: r ^= v; break;
    }
  }
  for (unsigned l = 0; l < 32; ++l)
    if (mask >> l & 1) {
      lanes[l].out[0] = r;
      lanes[l].out[1] = 0;
    }
}

uint64_t reduce(const char* what, ReduceKind kind, unsigned mask, uint64_t value, const char* file, int line) {
  LaneSlot& s = my_lane_slot();
  s.in[0] = static_cast<uint32_t>(value);
  s.in[1] = static_cast<uint32_t>(value >> 32);
  s.in[2] = static_cast<uint32_t>(kind);
  warp_collective(what, mask, &reduce_exchange, file, line);
  return s.out[0] | static_cast<uint64_t>(s.out[1]) << 32;
}

}  // namespace fusegrad::cuda::emulator
