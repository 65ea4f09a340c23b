// The GEMM driver: cache blocking, threads, batching, and the no-packing path. Compiled once per
// ISA level; it calls that level's microkernel (microkernel_<isa>.cpp) and packing (pack.cpp).
//
// Loop nest of the blocked path (BLIS order), with where each operand lives:
//   jc over N by NC      B block KC×NC, packed once, shared by the threads   -> L3
//    pc over K by KC
//     ic over M by MC    A block MC×KC, packed by each thread for itself     -> that core's L2
//      jr over NC by NR  B micro-panel KC×NR, reused by every A micro-panel  -> L1
//       ir over MC by MR A micro-panel MR×KC streamed from L2 into the kernel
#include <algorithm>
#include <memory>
#include <vector>

#include "activation/activation_math.h"
#include "common/threads.h"
#include "gemm/gemm.h"
#include "gemm/gemm_batch.h"
#include "gemm/microkernel.h"
#include "gemm/pack.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace {

// Cache blocks for the reference CPU (Zen 4: 32 KiB L1d, 1 MiB L2 per core, 32 MiB shared L3).
//   KC: every C tile is loaded and stored once per KC step, so KC should be deep. Summing K in
//       KC-long blocks also keeps float rounding close to a blocked (pairwise-like) sum. A k step of
//       the AVX-512 kernel reads 128 B of B and 48 B of A per 24 FMA cycles, about 7 B/cycle,
//       a small part of Zen 4's 32 B/cycle from L2 to L1, so the B micro-panel (KC × NR) need
//       not fit in L1 and KC is bounded by L2 instead: 384 (B micro-panel 48 KiB in L2, streamed
//       by the prefetcher). Measured on the reference CPU at n = 1024, one thread: KC = 192, 256,
//       384, 512 gave about 90, 95, 99, 92 GFLOP/s. AVX2 (NR = 16, 12 FMAs a step): 256.
//   MC: the packed A block (MC × KC floats) must stay in the core's L2 while the whole KC × NC
//       B block streams past it: 240 × 384 × 4 B = 360 KiB, a third of the 1 MiB L2, leaving
//       room for the B micro-panel (48 KiB) and the C tiles passing through. MC = 480 (720 KiB)
//       measured a few percent slower.
//   NC: the packed B block (KC × NC floats) is shared by both cores from L3: 384 × 4096 × 4 B =
//       6 MiB, under a fifth of the 32 MiB L3, so it survives next to A and C; one NC block
//       covers every N <= 4096.
#if defined(__AVX512F__)
constexpr int64_t kKC = 384, kMC = 240, kNC = 4096;
#elif defined(__AVX2__)
constexpr int64_t kKC = 256, kMC = 288, kNC = 4096;
#else
constexpr int64_t kKC = 256, kMC = 128, kNC = 2048;
#endif
static_assert(kMC % kMR == 0 && kNC % kNR == 0, "blocks must be whole micro-tiles");

// When the in-place (no-packing) path runs; see gemm_in_place for why. It keeps each C tile in
// registers over the whole of K and packs nothing; it wins while the A rows a thread works on
// stay in its L2, since every B micro-panel then re-reads them from there. Measured on the
// reference CPU, one thread, CPU time: 256^3 111 GFLOP/s in place vs 105 packed, 512^3 109 vs
// ~104, 32x500x784 108 vs 81; but 1024^3 (4 MiB of A, streamed from L3 for every B panel) 85
// vs 102, where the packed, blocked path takes over.
constexpr int64_t kInPlaceABytes = 1 << 20;  // a thread's share of A: the 1 MiB L2
constexpr int64_t kInPlaceMaxK = 2048;       // a B micro-panel (K × NR floats) <= 256 KiB of L2
// ... and always when N or M spans at most this many micro-tiles: then a packed panel would be
// read once or twice, never paying for its copy (e.g. the 10-wide last layer of an MLP).
constexpr int64_t kInPlaceTiles = 2;

// The in-place and narrow paths keep a tile in registers for kKC steps of K at a time, then add
// it into C: a single running float sum over a long K loses digits (K = 2e7 ones sums to 2^24),
// while sums of KC-long blocks keep the error growing like the packed path's (and PyTorch's). One
// C load and store per KC steps costs nothing measurable next to the KC × MR × NR FMAs between.

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// A block size <= max_block that splits `total` into equal-as-possible blocks of whole `unit`s,
// so that, e.g., K = KC + 1 becomes two half blocks rather than a full one and a sliver.
int64_t balanced_block(int64_t total, int64_t max_block, int64_t unit) {
  const int64_t blocks = ceil_div(total, max_block);
  return std::min(max_block, ceil_div(ceil_div(total, blocks), unit) * unit);
}

// One GEMM of a batch: pointers already offset to this batch item.
struct Mat {
  int64_t m, n, k;
  const float* a;
  int64_t a_rs, a_cs;
  const float* b;
  int64_t b_rs, b_cs;
  float* c;
  int64_t ldc;
  const float* bias;
  Activation act;
  float act_param;
  bool accumulate;
  GemmPath path;
};

// The packing buffers of one calling thread: the shared B block, and one A block per worker.
// All are allocated by the caller before a parallel region starts, so an allocation failure is
// a std::bad_alloc in the caller (a MemoryError in Python), never an exception inside OpenMP.
struct Workspace {
  PackBuffer b;
  std::vector<std::unique_ptr<PackBuffer>> a;
  float* a_block(int worker, int64_t floats) {
    while (static_cast<int>(a.size()) <= worker) a.push_back(std::make_unique<PackBuffer>());
    return a[worker]->get(floats);
  }
};

Workspace& workspace() {
  static thread_local Workspace w;
  return w;
}

MicroTile base_tile(const Mat& x) {
  MicroTile t;
  t.ldc = x.ldc;
  t.load_c = x.accumulate;
  t.act = x.act;
  t.act_param = x.act_param;
  return t;
}

// How `threads` threads split one GEMM: tm groups along M (each packs its own A rows), tn along
// the N micro-panels of the shared B block. Picks the split with the least work for the busiest
// thread: its micro-tiles (MR × NR multiply-adds per step of K) plus the A rows it packs (every
// thread of an M group packs the group's whole A block). On a tie it prefers M splits: a core
// then keeps its A block to itself in its L2 and the two cores only share the read-only B block.
// E.g. the weight gradient of an LSTM (M = 512, N = 128, K = 1792): splitting N would leave no
// idle tile, but each thread would pack all of A for 2 micro-panels of B, and ran 1.5x slower.
constexpr double kPackCostPerFloat = 16.0;  // packing one float of A, in multiply-adds (~20 GB/s copy)
void choose_split(int64_t m, int64_t n, int threads, bool packs_a, int& tm, int& tn) {
  const int64_t mp = ceil_div(m, kMR), np = ceil_div(std::min(n, kNC), kNR);
  double best = 0.0;
  tm = threads;
  tn = 1;
  for (int cand = threads; cand >= 1; --cand) {
    if (threads % cand) continue;
    const int other = threads / cand;
    const double rows = double(ceil_div(mp, cand)), cols = double(ceil_div(np, other));
    const double work = rows * cols * kMR * kNR + (packs_a ? rows * kMR * kPackCostPerFloat : 0.0);
    if (best == 0.0 || work < best * 0.98) {
      best = work;
      tm = cand;
      tn = other;
    }
  }
}

// The no-packing path: A read in place by the strided kernel, B in place when row-major (its
// columns past N are masked), else packed whole once. Each tile runs over the whole K, so C is
// loaded and stored just once, and nothing is copied. It is the faster path while a thread's
// rows of A fit in its L2 (kInPlaceABytes), and whenever a packed panel would be read only once
// or twice. Threads split the tile grid as in the blocked path.
void gemm_in_place(const Mat& x, int threads) {
  const int64_t mp = ceil_div(x.m, kMR), np = ceil_div(x.n, kNR);
  // A B that is not row-major is packed whole first, by all threads together.
  const bool padded = x.k > 0 && x.b_cs != 1;
  float* packed = padded ? workspace().b.get(x.k * np * kNR) : nullptr;
  const float* b = padded ? packed : x.b;
  const int64_t ldb = padded ? kNR : x.b_rs;
  // The split is made inside the team, from the number of threads OpenMP actually gave (fewer
  // than asked for under OMP_DYNAMIC), so every tile is always computed.
  auto body = [&](int tid, int nt) {
    if (padded) {
      const int64_t p0 = np * tid / nt, p1 = np * (tid + 1) / nt;
      if (p1 > p0)
        pack_b(x.b + p0 * kNR * x.b_cs, x.b_rs, x.b_cs, x.k, std::min(x.n, p1 * kNR) - p0 * kNR,
               packed + p0 * kNR * x.k);
      if (nt > 1) {
#pragma omp barrier
      }
    }
    int tm = 1, tn = 1;
    if (nt > 1) choose_split(x.m, x.n, nt, false, tm, tn);
    const int gm = tid / tn, gn = tid % tn;
    MicroTile t = base_tile(x);
    t.ldb = ldb;
    t.b_padded = padded;
    for (int64_t jp = np * gn / tn; jp < np * (gn + 1) / tn; ++jp) {
      const int64_t j = jp * kNR;
      t.n = static_cast<int>(std::min<int64_t>(kNR, x.n - j));
      const float* bj = padded ? b + j * x.k : b + j;
      for (int64_t ip = mp * gm / tm; ip < mp * (gm + 1) / tm; ++ip) {
        const int64_t i = ip * kMR;
        t.m = static_cast<int>(std::min<int64_t>(kMR, x.m - i));
        t.c = x.c + i * x.ldc + j;
        // K in KC blocks (accuracy: the note by kInPlaceTiles); K = 0 runs once, to store the epilogue.
        for (int64_t p0 = 0; p0 == 0 || p0 < x.k; p0 += kKC) {
          const bool last = p0 + kKC >= x.k;
          t.k = std::min(kKC, x.k - p0);
          t.a = x.a + i * x.a_rs + p0 * x.a_cs;
          t.b = bj + p0 * ldb;
          t.load_c = x.accumulate || p0 > 0;
          t.bias = last && x.bias ? x.bias + j : nullptr;
          t.act = last ? x.act : Activation::none;
          microkernel_strided_a(t, x.a_rs, x.a_cs);
        }
      }
    }
  };
  if (threads <= 1) {
    body(0, 1);
  } else {
#pragma omp parallel num_threads(threads)
    {
      const DenormalsAreZero mode;
      body(omp_get_thread_num(), omp_get_num_threads());
    }
  }
}

void gemm_blocked(const Mat& x, int threads) {
  const int64_t kc_max = balanced_block(x.k, kKC, 8);
  const int64_t nc_max = balanced_block(x.n, kNC, kNR);
  Workspace& ws = workspace();
  float* bpack = ws.b.get(kc_max * nc_max);
  const int64_t mp = ceil_div(x.m, kMR);
  // One A block per worker, allocated here, before the parallel region (see Workspace).
  std::vector<float*> apacks(threads);
  for (int tid = 0; tid < threads; ++tid) apacks[tid] = ws.a_block(tid, kMC * kc_max);

  // As in gemm_in_place, the split follows the team OpenMP actually gave.
  auto body = [&](int tid, int nt) {
    const auto sync = [&] {
      if (nt > 1) {
#pragma omp barrier
      }
    };
    int tm, tn;
    choose_split(x.m, x.n, nt, true, tm, tn);
    const int gm = tid / tn, gn = tid % tn;
    const int64_t i_begin = std::min(x.m, mp * gm / tm * kMR);
    const int64_t i_end = std::min(x.m, mp * (gm + 1) / tm * kMR);
    const int64_t mc_max = balanced_block(std::max<int64_t>(i_end - i_begin, 1), kMC, kMR);
    float* apack = apacks[tid];
    bool first = true;

    for (int64_t jc = 0; jc < x.n; jc += nc_max) {
      const int64_t nc = std::min(nc_max, x.n - jc);
      const int64_t np = ceil_div(nc, kNR);
      for (int64_t pc = 0; pc < x.k; pc += kc_max) {
        const int64_t kc = std::min(kc_max, x.k - pc);
        if (!first) sync();  // everyone is done with the previous B block
        first = false;
        {  // Pack this thread's share of the B block's micro-panels.
          const int64_t p0 = np * tid / nt, p1 = np * (tid + 1) / nt;
          if (p1 > p0)
            pack_b(x.b + pc * x.b_rs + (jc + p0 * kNR) * x.b_cs, x.b_rs, x.b_cs, kc,
                   std::min(nc, p1 * kNR) - p0 * kNR, bpack + p0 * kNR * kc);
        }
        sync();

        const bool last = pc + kc >= x.k;
        MicroTile t = base_tile(x);
        t.k = kc;
        t.ldb = kNR;
        t.b_padded = true;
        t.load_c = x.accumulate || pc > 0;
        t.act = last ? x.act : Activation::none;
        const int64_t jp0 = np * gn / tn, jp1 = np * (gn + 1) / tn;

        for (int64_t ic = i_begin; ic < i_end; ic += mc_max) {
          const int64_t mc = std::min(mc_max, i_end - ic);
          pack_a(x.a + ic * x.a_rs + pc * x.a_cs, x.a_rs, x.a_cs, mc, kc, apack);
          for (int64_t jp = jp0; jp < jp1; ++jp) {
            const int64_t j = jc + jp * kNR;
            t.n = static_cast<int>(std::min<int64_t>(kNR, x.n - j));
            t.b = bpack + jp * kNR * kc;
            t.bias = (last && x.bias) ? x.bias + j : nullptr;
            for (int64_t ir = 0; ir < mc; ir += kMR) {
              t.m = static_cast<int>(std::min<int64_t>(kMR, mc - ir));
              t.a = apack + ir * kc;
              t.c = x.c + (ic + ir) * x.ldc + j;
              microkernel(t);
            }
          }
        }
      }
    }
  };

  if (threads <= 1) {
    body(0, 1);
  } else {
#pragma omp parallel num_threads(threads)
    {
      const DenormalsAreZero mode;
      body(omp_get_thread_num(), omp_get_num_threads());
    }
  }
}

// A C of at most MR columns (and more rows), like the 10 logits of a classifier: the normal
// tiles would fill only n of each vector's lanes, so compute Cᵀ = Bᵀ·Aᵀ instead, with the
// kernel's vectors along C's rows. Bᵀ is read in place (a strided "A" of n rows); Aᵀ is read in
// place when A is column-major, else packed panel by panel. Each Cᵀ tile lands
// in a small buffer (in L1) and is stored transposed into C with the epilogue. Threads split
// C's rows.
template <Activation kind>
void store_transposed(const Mat& x, const float* tile, float* c, int rows) {
  const int cols = static_cast<int>(x.n);
  const VecF param = set1(x.act_param);
  for (int j = 0; j < rows; ++j) {
    float* row = c + j * x.ldc;
    for (int r = 0; r < cols; ++r) {
      float v = tile[r * kNR + j];
      if (x.accumulate) v += row[r];
      if (x.bias) v += x.bias[r];
      row[r] = v;
    }
    if constexpr (kind != Activation::none) {
      int r = 0;
      for (; r + kVecWidth <= cols; r += kVecWidth)
        store(row + r, activation_forward<kind>(load(row + r), param));
      if (r < cols)
        store_partial(row + r, activation_forward<kind>(load_partial(row + r, cols - r), param), cols - r);
    }
  }
}

void gemm_narrow(const Mat& x, int threads) {
  // Row-major A: each thread packs one NR-row panel of Aᵀ at a time into its own buffer (k × NR
  // floats, L2-sized for MLP widths), right before the kernel reads it, so A crosses memory once.
  const bool pack = x.a_rs != 1;
  Workspace& ws = workspace();
  std::vector<float*> buffers(threads);
  if (pack)
    for (int tid = 0; tid < threads; ++tid) buffers[tid] = ws.a_block(tid, x.k * kNR);
  const int64_t np = ceil_div(x.m, kNR);
  auto body = [&](int tid, int nt) {
    alignas(64) float tile[kMR * kNR];
    MicroTile t;
    t.m = static_cast<int>(x.n);
    t.ldb = pack ? kNR : x.a_cs;
    t.b_padded = pack;
    t.c = tile;
    t.ldc = kNR;
    for (int64_t jp = np * tid / nt; jp < np * (tid + 1) / nt; ++jp) {
      const int64_t i = jp * kNR;
      t.n = static_cast<int>(std::min<int64_t>(kNR, x.m - i));
      if (pack) pack_b(x.a + i * x.a_rs, x.a_cs, x.a_rs, x.k, t.n, buffers[tid]);
      const float* bi = pack ? buffers[tid] : x.a + i;
      // K in KC blocks summed in the tile (accuracy: the note by kInPlaceTiles).
      for (int64_t p0 = 0; p0 < x.k; p0 += kKC) {
        t.k = std::min(kKC, x.k - p0);
        t.a = x.b + p0 * x.b_rs;
        t.b = bi + p0 * t.ldb;
        t.load_c = p0 > 0;
        microkernel_strided_a(t, x.b_cs, x.b_rs);
      }
      with_activation(x.act, [&](auto k) {
        store_transposed<decltype(k)::value>(x, tile, x.c + i * x.ldc, t.n);
      });
    }
  };
  if (threads <= 1 || np < 2) {
    body(0, 1);
  } else {
#pragma omp parallel num_threads(threads)
    {
      const DenormalsAreZero mode;
      body(omp_get_thread_num(), omp_get_num_threads());
    }
  }
}

// When the in-place path loses to packing although A fits:
// - a column-major A: every step of K is a new cache line per tile, read at a long stride that
//   neither L1 nor the prefetchers keep up with. Packing it costs less once the GEMM is large
//   enough to hide the copy and A spans more than a few tiles. Measured on the reference CPU,
//   2 threads, packed against in place: 784×500×128 1.19×, 512³ 1.25×, 1024×64×1024 1.26×,
//   2048×32×4096 1.82× faster; 64×512×512 0.71×, 128×64×128 0.75× (slower).
// - a row-major B whose rows lie a multiple of 1 KiB apart, over a long K: its micro-panel rows
//   then fall into a few cache sets and on a new page each, so the panel is not kept between
//   the row tiles that reuse it. Packed: 128×512×1792 (rows 2 KiB apart) 2.2×, 1024×1024×448
//   (4 KiB) 1.4× faster; 64×512×512, whose B panels are reused by only five tiles, 0.75×.
constexpr int64_t kStridedAMaxRows = 8 * kMR;
constexpr double kStridedAMaxMacs = 8e6;
constexpr int64_t kAliasingStrideFloats = 256;
bool in_place_is_slow(const Mat& x) {
  const bool a_column_major = x.a_rs == 1 && x.a_cs != 1 && x.m > kStridedAMaxRows &&
                              double(x.m) * double(x.n) * double(x.k) >= kStridedAMaxMacs;
  const bool b_aliasing = x.b_cs == 1 && x.b_rs % kAliasingStrideFloats == 0 && x.k > kKC &&
                          x.m > kStridedAMaxRows;
  return a_column_major || b_aliasing;
}

void gemm_one(const Mat& x, int threads) {
  if (x.m == 0 || x.n == 0) return;
  if (x.path == GemmPath::automatic && x.k > 0 && x.n <= kMR && 2 * x.n < kNR && x.m > x.n) {
    gemm_narrow(x, threads);
    return;
  }
  const int64_t a_share_bytes = ceil_div(x.m, threads) * x.k * 4;
  const bool fits = a_share_bytes <= kInPlaceABytes && x.k <= kInPlaceMaxK;
  const bool little_reuse = x.n <= kInPlaceTiles * kNR || x.m <= kInPlaceTiles * kMR;
  const bool in_place = x.path == GemmPath::automatic ? (fits || little_reuse) && !in_place_is_slow(x)
                                                     : x.path == GemmPath::in_place;
  if (x.k == 0 || in_place) {
    gemm_in_place(x, threads);  // K = 0 too: the kernel then stores just the epilogue
    return;
  }
  gemm_blocked(x, threads);
}

Mat item(const GemmProblem& p, int64_t i) {
  return Mat{p.m, p.n, p.k,
             p.a + i * p.a_bs, p.a_rs, p.a_cs,
             p.b + i * p.b_bs, p.b_rs, p.b_cs,
             p.c + i * p.c_bs, p.c_rs,
             p.bias, p.act, p.act_param, p.accumulate, p.path};
}

void gemm(const GemmProblem& p) {
  if (p.batch <= 0 || p.m <= 0 || p.n <= 0) return;
  for_each_gemm(p.batch, 2.0 * double(p.m) * double(p.n) * double(p.k),
                [&](int64_t i, int threads) { gemm_one(item(p, i), threads); });
}

}  // namespace

extern const GemmKernels gemm_kernels{kMR, kNR, kMC, kKC, kNC, gemm, microkernel,
                                      microkernel_strided_a, pack_a, pack_b};

}  // namespace FG_ISA_NS
}  // namespace fusegrad
