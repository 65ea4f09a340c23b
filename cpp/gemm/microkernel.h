// The microkernel of the ISA level this file is compiled for: its register tile MR×NR and its
// entry points. Included by the per-ISA microkernel file and by the driver/packing (which are
// compiled once per level), so every level sees its own shape.
//
// Register budget per level (C accumulators + B vectors + one broadcast A value):
//   AVX-512: 12×32 = 12 rows × 2 zmm = 24 accumulators + 2 + 1 = 27 of 32 zmm. Each k step is
//            24 FMAs against 2 vector loads and 12 broadcasts, so the two load ports keep up with
//            the FMA pipes; 24 independent chains hide the 4-cycle FMA latency many times over.
//            (Zen 4 runs a zmm FMA as two 256-bit halves, so zmm and ymm peaks are equal; the
//            wider vectors halve the instruction count and the loads per FMA.)
//   AVX2:    6×16 = 6 rows × 2 ymm = 12 accumulators + 2 + 1 = 15 of 16 ymm.
//   generic: 4×8 scalars, small enough for the compiler to keep (or SLP-vectorise) in registers.
#pragma once
#include <cstdint>

#include "gemm/gemm.h"

#ifndef FG_ISA_NS
#error "microkernel.h is for sources compiled once per ISA level"
#endif

namespace fusegrad {
namespace FG_ISA_NS {

#if defined(__AVX512F__)
constexpr int kMR = 12, kNR = 32;
#elif defined(__AVX2__) && defined(__FMA__)
constexpr int kMR = 6, kNR = 16;
#else
constexpr int kMR = 4, kNR = 8;
#endif

// The tile t with A from a packed micro-panel (element (r, p) at t.a[p * kMR + r]).
void microkernel(const MicroTile& t);

// The same with A read in place: element (r, p) at t.a[r * a_rs + p * a_cs]. Used by the
// no-packing path for small problems, where copying A would cost as much as the product.
void microkernel_strided_a(const MicroTile& t, int64_t a_rs, int64_t a_cs);

}  // namespace FG_ISA_NS
}  // namespace fusegrad
