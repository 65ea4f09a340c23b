// Single-precision GEMM: C = act(A·B + bias) or C += A·B, plain or batched, on any strided A/B.
//
// Design (BLIS-style, all our own code):
//   * pack.cpp       copies a KC-deep slice of A into MR-row micro-panels and of B into NR-column
//                    micro-panels, in aligned reused buffers. Packing reads any (row, column)
//                    strides, so transposed views cost no extra copy (AVX-512: 16×16 in-register
//                    transposes for the row-major-A / column-major-B cases).
//   * microkernel_<isa>.cpp  one register-blocked MR×NR kernel per ISA level (AVX-512 12×32,
//                    AVX2 6×16, generic 4×8), with masked edges and the bias/activation epilogue;
//                    the shared template is microkernel_impl.h.
//   * gemm_driver.cpp three loop nests, chosen by shape: the packed, blocked one (NC → KC → MC →
//                    NR → MR) for large problems; an in-place one that packs nothing while a
//                    thread's rows of A fit its L2 (or a panel would be reused only once or
//                    twice); and a transposed one for C only a few columns wide. Threads, one
//                    below a work threshold, and batching are handled there too.
//
// The microkernel and the packing routines are exported in the kernel table so other families
// (convolution as an implicit GEMM) can pack their own panels and call the same microkernel:
//   const GemmKernels& g = active_gemm_kernels();
//   g.pack_a(a, lda, 1, m, k, apanel);  // or any im2col-style packing into the same layout
//   g.pack_b(b, ldb, 1, k, n, bpanel);
//   MicroTile t; t.k = k; t.a = apanel; t.b = bpanel; t.ldb = g.nr; t.c = c; t.ldc = ldc;
//   t.m = min(g.mr, m); t.n = min(g.nr, n); t.bias = bias; t.act = Activation::relu;
//   g.microkernel(t);                   // one MR×NR tile; step a by mr*k and b by nr*k
#pragma once
#include <cstdint>

#include "activation/activation.h"
#include "common/array_view.h"
#include "common/isa.h"

namespace fusegrad {

// Which loop nest runs: chosen by size (automatic), or forced, which tests use to cover both.
enum class GemmPath : int { automatic = 0, packed = 1, in_place = 2 };

// One GEMM (or a batch of them). Strides are in elements. A is m×k, B is k×n, C is m×n with
// unit column stride. A batch stride of 0 shares that operand across the batch.
struct GemmProblem {
  int64_t batch = 1, m = 0, n = 0, k = 0;
  const float* a = nullptr;
  int64_t a_rs = 0, a_cs = 0, a_bs = 0;
  const float* b = nullptr;
  int64_t b_rs = 0, b_cs = 0, b_bs = 0;
  float* c = nullptr;
  int64_t c_rs = 0, c_bs = 0;
  const float* bias = nullptr;  // n floats added to every row of C, or null
  Activation act = Activation::none;
  float act_param = 0.0f;       // leaky_relu slope
  bool accumulate = false;      // C += A·B (bias and act must then be none/null)
  GemmPath path = GemmPath::automatic;
};

// One call of the microkernel: C[0:m, 0:n] of an MR×NR tile.
//
// Panel layouts (what pack_a / pack_b produce; a caller may build them any other way):
//   A micro-panel: k steps of MR floats, element (r, p) at a[p * MR + r]. Only rows < m are
//                  read (pack_a zero-fills the rest anyway).
//   B micro-panel: k steps, element (p, j) at b[p * ldb + j]. With b_padded, every step has NR
//                  readable floats (pack_b zero-pads, ldb = NR); without it, columns >= n are
//                  never read, so a row-major B (ldb = its row stride) can be used unpacked.
// Epilogue, applied while the tile is stored:
//   load_c   add the tile already in C (accumulation over K blocks, or accumulate=True);
//   bias     n floats for these columns, added after the product (null: none);
//   act      applied last. Give bias/act only on the final K block of a tile.
struct MicroTile {
  int64_t k = 0;
  const float* a = nullptr;
  const float* b = nullptr;
  int64_t ldb = 0;
  bool b_padded = true;
  float* c = nullptr;
  int64_t ldc = 0;
  int m = 0, n = 0;  // 1 <= m <= MR, 1 <= n <= NR
  bool load_c = false;
  const float* bias = nullptr;
  Activation act = Activation::none;
  float act_param = 0.0f;
};

struct GemmKernels {
  int mr, nr;          // micro-tile of this ISA level
  int64_t mc, kc, nc;  // cache blocks of this level (see gemm_driver.cpp for the reasoning)
  void (*gemm)(const GemmProblem& problem);
  void (*microkernel)(const MicroTile& tile);
  // The same tile with A read in place, element (r, p) at tile.a[r * a_rs + p * a_cs] (e.g. the
  // pixels × channels rows of an NHWC image for a 1×1 convolution); B as in microkernel.
  void (*microkernel_strided_a)(const MicroTile& tile, int64_t a_rs, int64_t a_cs);
  // Packs rows [0, m) × depth [0, k) of A (element (i, p) at a[i * rs + p * cs]) into
  // ceil(m / MR) micro-panels of MR * k floats each, rows past m zero-filled.
  void (*pack_a)(const float* a, int64_t rs, int64_t cs, int64_t m, int64_t k, float* dst);
  // Packs depth [0, k) × columns [0, n) of B (element (p, j) at b[p * rs + j * cs]) into
  // ceil(n / NR) micro-panels of k * NR floats each, columns past n zero-filled.
  void (*pack_b)(const float* b, int64_t rs, int64_t cs, int64_t k, int64_t n, float* dst);
};

FG_DECLARE_KERNEL_TABLE(GemmKernels, gemm_kernels)

// out (=|+=) act(a @ b + bias) on the active ISA level, for operands of any layout: a (M, K) or
// (B, M, K), b (K, N) or (B, K, N), out (M, N) or (B, M, N), bias (N,) or null, shapes checked by
// the caller. Matrices that are row- or column-major (any leading dimension) are read in place;
// other layouts are copied first. A result that cannot be written along rows, or that overlaps an
// operand, is computed aside and copied in. (gemm_layout.cpp)
void gemm_strided(const ArrayView& a, const ArrayView& b, const ArrayView& out, const ArrayView* bias,
                  Activation act, bool accumulate, GemmPath path);

}  // namespace fusegrad
