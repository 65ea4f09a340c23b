// Every tunable of the convolution kernels, with the reason for its value: the tile shapes, the
// lengths that get compile-time micro-tiles, the band and segment sizes that keep a pass's data in
// L2, the thread grain, and the cost model that picks a backward-input form. Compiled once per ISA
// level: the tile shapes follow that level's GEMM micro-tile (kMR × kNR) and vector width.
// conv_kernels.cpp has the map of which file holds what.
#pragma once
#include <algorithm>
#include <cstdint>
#include <utility>

#include "common/simd.h"
#include "common/threads.h"
#include "gemm/microkernel.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace conv {

inline constexpr int W = kVecWidth;
inline constexpr int kNV = kNR / W;  // vectors per NR-column panel

// ---- threads ----------------------------------------------------------------------------------

// Same reasoning as the GEMM's kThreadFlops: below ~1.8 MFLOP of work per chunk the second thread
// costs more to wake than it saves.
inline constexpr double kThreadFlops = 2.0 * 96 * 96 * 96;

// Threads for a pass of `flops` split by hand: one per kThreadFlops, at most all of them.
inline int threads_for(double flops) {
  const int most = get_num_threads();
  return static_cast<int>(std::max<double>(1.0, std::min<double>(most, flops / kThreadFlops)));
}

// ---- the indirect micro-tile (tiles/indirect.h) ---------------------------------------------

// Run lengths (floats read through one pointer) that get micro-tiles with the run loop unrolled
// at compile time: C_in = 1..4 per tap, and the kernel-row runs of first layers (3x3 or 5x5 over
// 1, 2, 3 or 4 channels). With so few iterations per pointer, a runtime loop's overhead (and the
// missed scheduling across runs) costs as much as the FMAs themselves. Index 0: any length.
using FixedLens = std::integer_sequence<int, 0, 1, 2, 3, 4, 5, 6, 9, 12, 15>;
inline constexpr int kFixedLens[] = {0, 1, 2, 3, 4, 5, 6, 9, 12, 15};

// Index of len in kFixedLens, or 0 when runs of len floats take the runtime loop.
inline int fixed_len_index(int64_t len) {
  for (int i = 1; i < int(sizeof(kFixedLens) / sizeof(int)); ++i)
    if (kFixedLens[i] == len) return i;
  return 0;
}

// Rows of the indirect micro-tile: each row has its own input pointer, and the k loop needs all
// of them in general registers next to the B pointer and the counters. Twelve (the GEMM's MR
// on AVX-512) leave the compiler short of registers: it spilled row pointers and even a B
// vector to the stack, measured 40% slower. Eight rows × NR columns still give 16 independent
// accumulators (enough to hide the FMA latency) and fit the 16 general registers.
inline constexpr int kConvMR = kMR < 8 ? kMR : 8;

// Runs of a fixed length (first layers: 3 or 9 floats per pointer) unroll the run at compile time,
// so the row pointers are loaded once per run from the pointer table instead of living in
// registers across a runtime loop: there, the GEMM's full MR rows fit without spills, and the
// taller tile spreads the per-tile work (pointer table, bias, stores) over 12 rows instead of 8.
inline constexpr int kFixedRunMR = kMR;

// The wide tile: 6 rows × two NR panels (AVX-512: 6 × 64, 24 accumulators, 4 B vectors and a
// broadcast = 29 of 32 zmm). Used when C_out (forward) or C_in (backward-input) spans two or
// more panels: the tile then reads its A rows once for 64 columns instead of once per 32, and
// loads 4 B vectors per 24 FMAs instead of 2 per 16. Only AVX-512 has the registers for it.
// Backward-weight's patch tile uses the same shape for the same reason (4 gy vectors and 6
// broadcasts per 24 FMAs, against 2 and 12 for the GEMM's 12 × NR).
inline constexpr bool kHasWideTile = kVecWidth == 16;
inline constexpr int kWideMR = 6;
inline constexpr int kMaxV = kHasWideTile ? 2 * kNV : kNV;  // vectors per row of the widest tile

inline constexpr int kMaxTileRows = std::max(kConvMR, std::max(kFixedRunMR, kWideMR));

// ---- first layers -----------------------------------------------------------------------------

// C_in up to this gets the direct forms: backward-input's gather form, and the fused backward
// (every pass image by image, conv_kernels.backward).
inline constexpr int kDirectMaxCin = 4;

// ---- the gather tile (tiles/gather.h) ---------------------------------------------------------

// Accumulators of a gather tile: 24 of the 32 zmm registers (the rest hold C_in weight vectors and
// a gy vector), 12 of AVX2's 16. Its rows are the largest power of two with rows * C_in within that.
inline constexpr int kGatherAcc = kVecWidth >= 16 ? 24 : 12;

// Bytes of the gather form's band copy of gy: with the band's outputs it stays in a core's L2.
inline constexpr int64_t kGatherBandBytes = 256 << 10;

// ---- forward fused with max-pooling -----------------------------------------------------------

// Conv rows the fused conv + max-pool computes before pooling them: a whole small image (a 26x26x32
// first layer is 86 KiB), or bands of it for large ones, kept within L2 with the packed weights.
// Whole images keep the tiles running on across conv rows (a band of 2 rows of 26 pixels would
// leave 8 of 60 tile rows idle).
inline constexpr int64_t kPoolBandBytes = 256 << 10;

// ---- backward-input: which form -----------------------------------------------------------------

// The chooser (backward_input.cpp) compares the useful fraction of the FMAs each form would run.
// The scatter form adds its patch gradients into gx after the GEMM: that is counted as a tenth of
// its time (one vector add per C_in floats against 2*C_out flops each).
inline constexpr double kScatterOverhead = 0.9;
// The stride-1 form run as a forward skips the border of gx, but each border class then has only
// a few pixels per image: its tiles take rows from several images and few taps. That counts as no
// gain unless the interior (pixels with every tap inside gy) is at least this fraction of gx: at
// 11% (6x6 -> 4x4) the forward ran 25% slower than the scatter form, at 48% (13x13 -> 11x11) 6%
// faster.
inline constexpr double kInteriorForForward = 0.4;

// ---- backward-weight --------------------------------------------------------------------------

// Backward-weight works through the output pixels in segments: every K group × C_out panel of
// gw passes over a whole segment with its block in registers, so the segment's gy rows and the
// input rows under them are read once per group from L2. Half of a core's L2 leaves room for gw
// itself (147 KiB for 3x3x64->64) and the next segment's lines.
inline constexpr int64_t kPatchSegmentBytes = 512 << 10;

// ---- backward-bias ----------------------------------------------------------------------------

// Rows of gy summed in float before they are added into the double totals of backward-bias:
// short enough that float rounding stays at the level of a 64-term sum.
inline constexpr int64_t kBiasBlock = 64;

// Column blocks of this many vectors: 8 of them (16 accumulators, two rows at a time) cover C_out
// up to 128 in one pass over the rows on AVX-512, and leave registers for the loads.
inline constexpr int kBiasVecs = 8;

}  // namespace conv
}  // namespace FG_ISA_NS
}  // namespace fusegrad
