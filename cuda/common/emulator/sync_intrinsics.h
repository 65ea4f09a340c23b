// CUDA's block barriers and warp intrinsics (shuffles, votes, __syncwarp, match, reduce) on top
// of the scheduler's barrier and warp collectives. Each takes its caller's source location as
// trailing default arguments, which is how the scheduler tells one call site from another.
//
// Shuffles follow PTX shfl.sync exactly, widths included: a lane whose source is outside its
// segment reads its own value. Reading from a lane outside the mask is undefined on a GPU; here
// it yields all-ones bits (NaN for floats), so a kernel relying on it gives visibly wrong results.
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "common/emulator/scheduler.h"

namespace fusegrad::cuda::emulator {

enum ShuffleMode : int { shfl_idx = 0, shfl_up = 1, shfl_down = 2, shfl_bfly = 3 };

void shuffle_exchange(LaneSlot* lanes, unsigned mask);  // in each lane: in[0..1] value, in[2] mode, arg, width
[[noreturn]] void shuffle_width_error(const char* what, int width, const char* file, int line);

template <class T>
T shuffle(const char* what, ShuffleMode mode, unsigned mask, T var, int arg, int width, const char* file, int line) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffled values are at most 8 bytes");
  if (width <= 0 || width > 32 || (width & (width - 1)) != 0) shuffle_width_error(what, width, file, line);
  LaneSlot& s = my_lane_slot();
  uint64_t bits = 0;
  std::memcpy(&bits, &var, sizeof(T));
  s.in[0] = static_cast<uint32_t>(bits);
  s.in[1] = static_cast<uint32_t>(bits >> 32);
  s.in[2] = mode;
  s.arg = arg;
  s.width = width;
  warp_collective(what, mask, &shuffle_exchange, file, line);
  bits = s.out[0] | static_cast<uint64_t>(s.out[1]) << 32;
  T r;
  std::memcpy(&r, &bits, sizeof(T));
  return r;
}

enum VoteKind : int { vote_ballot = 0, vote_any = 1, vote_all = 2, vote_sync = 3 };
void vote_exchange(LaneSlot* lanes, unsigned mask);  // in[0] kind, in[1] predicate
unsigned vote(const char* what, VoteKind kind, unsigned mask, int predicate, const char* file, int line);

enum ReduceKind : int { reduce_add = 0, reduce_min = 1, reduce_max = 2, reduce_and = 3, reduce_or = 4, reduce_xor = 5,
                        reduce_min_signed = 6, reduce_max_signed = 7, match_any = 8, match_all = 9 };
void reduce_exchange(LaneSlot* lanes, unsigned mask);  // in[0..1] value, in[2] kind, out[0..1]
uint64_t reduce(const char* what, ReduceKind kind, unsigned mask, uint64_t value, const char* file, int line);

}  // namespace fusegrad::cuda::emulator

#define FG_EMU_HERE const char *fg_file = __builtin_FILE(), int fg_line = __builtin_LINE()

inline void __syncthreads(FG_EMU_HERE) {
  ::fusegrad::cuda::emulator::block_barrier("__syncthreads()", ::fusegrad::cuda::emulator::BarrierReduce::none, 0,
                                            fg_file, fg_line);
}
inline int __syncthreads_count(int predicate, FG_EMU_HERE) {
  return ::fusegrad::cuda::emulator::block_barrier("__syncthreads_count()", ::fusegrad::cuda::emulator::BarrierReduce::count,
                                                   predicate, fg_file, fg_line);
}
inline int __syncthreads_and(int predicate, FG_EMU_HERE) {
  return ::fusegrad::cuda::emulator::block_barrier("__syncthreads_and()", ::fusegrad::cuda::emulator::BarrierReduce::all,
                                                   predicate, fg_file, fg_line);
}
inline int __syncthreads_or(int predicate, FG_EMU_HERE) {
  return ::fusegrad::cuda::emulator::block_barrier("__syncthreads_or()", ::fusegrad::cuda::emulator::BarrierReduce::any,
                                                   predicate, fg_file, fg_line);
}

template <class T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize, FG_EMU_HERE) {
  return ::fusegrad::cuda::emulator::shuffle("__shfl_sync", ::fusegrad::cuda::emulator::shfl_idx, mask, var, src_lane,
                                             width, fg_file, fg_line);
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize, FG_EMU_HERE) {
  return ::fusegrad::cuda::emulator::shuffle("__shfl_up_sync", ::fusegrad::cuda::emulator::shfl_up, mask, var,
                                             static_cast<int>(delta), width, fg_file, fg_line);
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize, FG_EMU_HERE) {
  return ::fusegrad::cuda::emulator::shuffle("__shfl_down_sync", ::fusegrad::cuda::emulator::shfl_down, mask, var,
                                             static_cast<int>(delta), width, fg_file, fg_line);
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize, FG_EMU_HERE) {
  return ::fusegrad::cuda::emulator::shuffle("__shfl_xor_sync", ::fusegrad::cuda::emulator::shfl_bfly, mask, var,
                                             lane_mask, width, fg_file, fg_line);
}

inline unsigned __ballot_sync(unsigned mask, int predicate, FG_EMU_HERE) {
  return ::fusegrad::cuda::emulator::vote("__ballot_sync", ::fusegrad::cuda::emulator::vote_ballot, mask, predicate,
                                          fg_file, fg_line);
}
inline int __any_sync(unsigned mask, int predicate, FG_EMU_HERE) {
  return static_cast<int>(::fusegrad::cuda::emulator::vote("__any_sync", ::fusegrad::cuda::emulator::vote_any, mask,
                                                           predicate, fg_file, fg_line));
}
inline int __all_sync(unsigned mask, int predicate, FG_EMU_HERE) {
  return static_cast<int>(::fusegrad::cuda::emulator::vote("__all_sync", ::fusegrad::cuda::emulator::vote_all, mask,
                                                           predicate, fg_file, fg_line));
}
inline void __syncwarp(unsigned mask = 0xFFFFFFFFu, FG_EMU_HERE) {
  ::fusegrad::cuda::emulator::vote("__syncwarp", ::fusegrad::cuda::emulator::vote_sync, mask, 0, fg_file, fg_line);
}
// The lanes of the warp that have not exited (divergence inside a warp is not modelled).
inline unsigned __activemask() { return ::fusegrad::cuda::emulator::active_lanes(); }

#define FG_EMU_REDUCE(NAME, T, KIND)                                                                                \
  inline T NAME(unsigned mask, T value, FG_EMU_HERE) {                                                           \
    return static_cast<T>(::fusegrad::cuda::emulator::reduce(#NAME, ::fusegrad::cuda::emulator::KIND, mask,      \
                                                             static_cast<uint64_t>(static_cast<uint32_t>(value)), \
                                                             fg_file, fg_line));                                 \
  }
FG_EMU_REDUCE(__reduce_add_sync, unsigned, reduce_add)
FG_EMU_REDUCE(__reduce_add_sync, int, reduce_add)
FG_EMU_REDUCE(__reduce_min_sync, unsigned, reduce_min)
FG_EMU_REDUCE(__reduce_min_sync, int, reduce_min_signed)
FG_EMU_REDUCE(__reduce_max_sync, unsigned, reduce_max)
FG_EMU_REDUCE(__reduce_max_sync, int, reduce_max_signed)
FG_EMU_REDUCE(__reduce_and_sync, unsigned, reduce_and)
FG_EMU_REDUCE(__reduce_or_sync, unsigned, reduce_or)
FG_EMU_REDUCE(__reduce_xor_sync, unsigned, reduce_xor)
#undef FG_EMU_REDUCE

template <class T>
inline unsigned __match_any_sync(unsigned mask, T value, FG_EMU_HERE) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8);
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  return static_cast<unsigned>(::fusegrad::cuda::emulator::reduce("__match_any_sync", ::fusegrad::cuda::emulator::match_any,
                                                                  mask, bits, fg_file, fg_line));
}
template <class T>
inline unsigned __match_all_sync(unsigned mask, T value, int* all_equal, FG_EMU_HERE) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8);
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  const unsigned r = static_cast<unsigned>(::fusegrad::cuda::emulator::reduce(
      "__match_all_sync", ::fusegrad::cuda::emulator::match_all, mask, bits, fg_file, fg_line));
  *all_equal = r != 0;
  return r;
}
