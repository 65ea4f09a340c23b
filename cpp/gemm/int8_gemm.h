// Int8 GEMM for quantized inference: C = requant(A·B), A uint8 activations (M×K), B int8 weights
// (K×N), products summed exactly in int32, and an epilogue applied while the result is stored.
//
// Design (BLIS-shaped, all our own code):
//   * int8_pack.cpp     packs B once into Int8PackedWeight: 16-column panels in the "VNNI-4"
//                       order (per group of 4 k's, 16 columns × 4 bytes = 64 bytes), which is at
//                       the same time one zmm for vpdpbusd and one row of an AMX B tile, so one
//                       packed weight serves every path. Column sums for the zero-point
//                       correction are computed there too.
//   * int8_<path>.cpp   one kernel table per path: AMX-INT8 tiles (int8_amx.cpp, tdpbusd),
//                       AVX-512 VNNI (int8_vnni.cpp, vpdpbusd), and portable C++ (int8_generic.cpp,
//                       compiled once per ISA level). Each table packs A into the layout its own
//                       microkernel reads and carries the epilogue compiled with its flags.
//   * int8_driver.cpp   cache blocks, threads, and the choice of path per call (the best usable
//                       CpuFeature, else generic).
//
// Epilogue, per element (i, n) of the int32 product acc (Int8Epilogue):
//   corrected = acc − a_zero_point · colsum_b[n]   (exact: wrapping int32, the true value fits)
//   s32 out:  corrected, or max(corrected, 0) with relu
//   else:     v = scale[n] · corrected + bias[n] (fp32; scale = a_scale · b_scale[n]), relu
//             f32 out: v; u8/s8 out: clamp(nearbyint(v · inv_out_scale) + out_zero_point)
//             (round half to even, saturated to the type's range).
#pragma once
#include <cstdint>
#include <memory>

#include "common/isa.h"

namespace fusegrad {

// Depth alignment of a packed B panel: vpdpbusd and tdpbusd both consume k in groups of four.
constexpr int64_t kInt8KGroup = 4;
// Columns per packed B panel: one zmm of int32 lanes, one AMX tile row of 64 bytes.
constexpr int64_t kInt8PanelCols = 16;
// Bytes readable past the last panel: an AMX B tile may read up to 15 groups of 64 bytes past the
// end of the depth (multiplied by zero bytes of A, so their values never matter).
constexpr int64_t kInt8PanelSlack = 16 * 64;
// The largest K whose exact sum fits in int32: |u8 · s8| <= 255 · 128 per product.
constexpr int64_t kInt8MaxK = 2147483647LL / (255 * 128);

// B packed once and reused by every call (a quantized Linear or convolution weight).
struct Int8PackedWeight {
  int64_t k = 0, n = 0;
  int64_t k4 = 0;      // k rounded up to kInt8KGroup
  int64_t panels = 0;  // ceil(n / 16)
  std::shared_ptr<int8_t> data;     // panels × (k4 × 16) bytes + kInt8PanelSlack, 64-byte aligned
  std::shared_ptr<int32_t> colsum;  // panels × 16 column sums (padding columns 0)
  // Panel jp: group g (k = 4g .. 4g+3), column c, at panel(jp)[g * 64 + c * 4 + (k - 4g)].
  const int8_t* panel(int64_t jp) const { return data.get() + jp * k4 * kInt8PanelCols; }
  int64_t panel_bytes() const { return k4 * kInt8PanelCols; }
};

// Packs b (element (p, j) at b[p * rs + j * cs], strides in bytes, any sign) of k×n; throws
// std::bad_alloc. (int8_pack.cpp)
Int8PackedWeight int8_pack_weight(const int8_t* b, int64_t k, int64_t n, int64_t rs, int64_t cs);

enum class Int8Out : int { s32 = 0, f32 = 1, u8 = 2, s8 = 3 };

struct Int8Epilogue {
  Int8Out out = Int8Out::s32;
  int32_t a_zero_point = 0;
  const int32_t* colsum = nullptr;  // n (from the packed weight)
  const float* scale = nullptr;     // n: a_scale · b_scale[n] (all but s32 output)
  const float* bias = nullptr;      // n or null (all but s32 output)
  bool relu = false;
  float inv_out_scale = 1.0f;       // u8/s8 output
  int32_t out_zero_point = 0;       // u8/s8 output
};

// One call of a path's microkernel: a full MR × (16 · nv) int32 tile of the scratch block C.
struct Int8Tile {
  const uint8_t* a = nullptr;  // the path's packed A micro-panel (MR rows, depth kc), or with
  int64_t lda = 0;             // lda > 0 (reads_rows paths) A itself, rows lda bytes apart
  const int8_t* b = nullptr;   // first B panel of the tile, already at this depth block
  int64_t b_stride = 0;        // bytes from one 16-column panel to the next
  int64_t kc = 0;              // depth of this block, a multiple of the path's k_align
  int32_t* c = nullptr;
  int64_t ldc = 0;             // in int32 elements
  int nv = 1;                  // live 16-column panels, 1 .. NR / 16
  bool load_c = false;         // add to C (later depth blocks) instead of overwriting it
};

// One path: its micro-tile, blocks (each path's file says why), and entry points.
struct Int8Kernels {
  const char* name;
  int mr, nr;          // nr a multiple of 16
  int64_t k_align;     // packed A depth granule (4, or 64 for an AMX tile row)
  int64_t kc, mc, nc;  // depth block, rows of A per packed block, columns per scratch block
  // The microkernel can read A's rows in place (Int8Tile::lda): the driver does so where packing
  // would not pay, i.e. where a row block meets a single column block (N <= NC, e.g. the C_out of
  // a convolution), for panels of MR whole rows and depth blocks of whole k_align granules.
  bool reads_rows;
  // Packs rows [0, rows) × depth [0, k) of A (element (i, p) at a[i * lda + p]) into one
  // micro-panel of depth kc_pad (>= k, zero-filled), rows past `rows` up to MR zero-filled.
  void (*pack_a)(const uint8_t* a, int64_t lda, int rows, int64_t k, int64_t kc_pad, uint8_t* dst);
  void (*microkernel)(const Int8Tile& t);
  // out rows [0, m) × columns [0, n) from acc (ldacc int32 per row); out is row-major with ldo
  // elements per row, of the epilogue's output type; col0: the block's first column (indexes
  // colsum, scale and bias).
  void (*epilogue)(const int32_t* acc, int64_t ldacc, int64_t m, int64_t n, void* out, int64_t ldo,
                   const Int8Epilogue& e, int64_t col0);
  // Called by every thread before its first and after its last microkernel (AMX: load and
  // release the tile configuration); null when the path has no per-thread state.
  void (*thread_begin)();
  void (*thread_end)();
};

// The kernel tables. Generic: one per ISA level (int8_generic.cpp); VNNI and AMX: the avx512
// level's extensions (FG_EXTENSION_SOURCES), used only where cpu_feature_usable() says so.
FG_DECLARE_KERNEL_TABLE(Int8Kernels, int8_generic_kernels)
#if FG_X86
namespace isa_avx512_ext {
extern const Int8Kernels int8_vnni_kernels;
extern const Int8Kernels int8_amx_kernels;
}  // namespace isa_avx512_ext
#endif

// Which path runs: the best usable (automatic), or one forced (benchmarks and tests). A forced
// path the CPU cannot run falls back to automatic's choice (the caller checks with
// int8_path_usable first).
enum class Int8Path : int { automatic = 0, generic = 1, vnni = 2, amx = 3 };
bool int8_path_usable(Int8Path path);
const Int8Kernels& int8_kernels_for(Int8Path path);

// One product: a (M×K, row stride lda bytes, unit column stride) times the packed weight, into
// out (M×N row-major, ldo elements per row, the epilogue's type). (int8_driver.cpp)
struct Int8GemmProblem {
  int64_t m = 0;
  const uint8_t* a = nullptr;
  int64_t lda = 0;
  const Int8PackedWeight* b = nullptr;
  void* out = nullptr;
  int64_t ldo = 0;
  Int8Epilogue epilogue;
  Int8Path path = Int8Path::automatic;
  int max_threads = 0;  // at most this many threads (0: fusegrad's setting)
};

void int8_gemm(const Int8GemmProblem& p);

inline int64_t int8_out_size(Int8Out out) { return out == Int8Out::u8 || out == Int8Out::s8 ? 1 : 4; }

// q[i] = clamp(round_half_even(x[i] · inv_scale) + zero_point, 0, 255) over n floats; NaN gives 0.
// (int8_quantize.cpp)
void quantize_uint8(const float* x, int64_t n, float inv_scale, int32_t zero_point, uint8_t* q);

}  // namespace fusegrad
