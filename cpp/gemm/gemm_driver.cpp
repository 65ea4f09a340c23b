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

#include "common/threads.h"
#include "gemm/gemm.h"
#include "gemm/microkernel.h"
#include "gemm/pack.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace {

// Cache blocks for the reference CPU (Zen 4: 32 KiB L1d, 1 MiB L2 per core, 32 MiB shared L3).
//   KC: every C tile is loaded and stored once per KC step, so KC should be deep. A k step of
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

// Below this many flops per GEMM one thread does it all: waking the second core and the barriers
// of the blocked loop cost a few microseconds, which a ~100 GFLOP/s core spends on ~0.5 MFLOP.
// 2 * 96^3 = 1.8 MFLOP is where the second thread starts to pay for itself.
constexpr double kThreadFlops = 2.0 * 96 * 96 * 96;

// At or below this m·n·k (and with K fitting one block) the operands are read in place, without
// packing: the whole problem fits in L1/L2, so packing would copy data that is already cached
// and cost about as much as the product itself.
constexpr int64_t kSmallWork = 64 * 64 * 64;

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
};

PackBuffer& thread_a_buffer() {
  static thread_local PackBuffer buffer;
  return buffer;
}
PackBuffer& thread_b_buffer() {
  static thread_local PackBuffer buffer;
  return buffer;
}

MicroTile base_tile(const Mat& x) {
  MicroTile t;
  t.ldc = x.ldc;
  t.load_c = x.accumulate;
  t.act = x.act;
  t.act_param = x.act_param;
  return t;
}

// Small problems, one thread: A read in place by the strided kernel, B in place when row-major
// (columns past N are masked), else packed whole once.
void gemm_small(const Mat& x) {
  MicroTile t = base_tile(x);
  t.k = x.k;
  const float* b = x.b;
  int64_t ldb = x.b_rs;
  t.b_padded = false;
  if (x.k > 0 && x.b_cs != 1) {
    float* packed = thread_b_buffer().get(x.k * ceil_div(x.n, kNR) * kNR);
    pack_b(x.b, x.b_rs, x.b_cs, x.k, x.n, packed);
    b = packed;
    t.b_padded = true;
  }
  for (int64_t j = 0; j < x.n; j += kNR) {
    t.n = static_cast<int>(std::min<int64_t>(kNR, x.n - j));
    t.b = t.b_padded ? b + j * x.k : b + j;
    t.ldb = t.b_padded ? kNR : ldb;
    t.bias = x.bias ? x.bias + j : nullptr;
    for (int64_t i = 0; i < x.m; i += kMR) {
      t.m = static_cast<int>(std::min<int64_t>(kMR, x.m - i));
      t.a = x.a + i * x.a_rs;
      t.c = x.c + i * x.ldc + j;
      microkernel_strided_a(t, x.a_rs, x.a_cs);
    }
  }
}

// How `threads` threads split one GEMM: tm groups along M (each packs its own A rows), tn along
// the N micro-panels of the shared B block. Picks the split that leaves the fewest idle
// micro-tiles, preferring M splits on a tie: a core then keeps its A block to itself in its L2
// and the two cores only share the read-only B block.
void choose_split(int64_t m, int64_t n, int threads, int& tm, int& tn) {
  const int64_t mp = ceil_div(m, kMR), np = ceil_div(std::min(n, kNC), kNR);
  double best = -1.0;
  tm = threads;
  tn = 1;
  for (int cand = threads; cand >= 1; --cand) {
    if (threads % cand) continue;
    const int other = threads / cand;
    const double em = double(mp) / (cand * ceil_div(mp, cand));
    const double en = double(np) / (other * ceil_div(np, other));
    const double eff = em * en;
    if (eff > best + 0.02) {
      best = eff;
      tm = cand;
      tn = other;
    }
  }
}

void gemm_blocked(const Mat& x, int threads) {
  const int64_t kc_max = balanced_block(x.k, kKC, 8);
  const int64_t nc_max = balanced_block(x.n, kNC, kNR);
  int tm, tn;
  choose_split(x.m, x.n, threads, tm, tn);
  float* bpack = thread_b_buffer().get(kc_max * nc_max);
  const int64_t mp = ceil_div(x.m, kMR);

  auto body = [&](int tid) {
    const auto sync = [&] {
      if (threads > 1) {
#pragma omp barrier
      }
    };
    const int gm = tid / tn, gn = tid % tn;
    const int64_t i_begin = std::min(x.m, mp * gm / tm * kMR);
    const int64_t i_end = std::min(x.m, mp * (gm + 1) / tm * kMR);
    const int64_t mc_max = balanced_block(std::max<int64_t>(i_end - i_begin, 1), kMC, kMR);
    float* apack = thread_a_buffer().get(mc_max * kc_max);
    bool first = true;

    for (int64_t jc = 0; jc < x.n; jc += nc_max) {
      const int64_t nc = std::min(nc_max, x.n - jc);
      const int64_t np = ceil_div(nc, kNR);
      for (int64_t pc = 0; pc < x.k; pc += kc_max) {
        const int64_t kc = std::min(kc_max, x.k - pc);
        if (!first) sync();  // everyone is done with the previous B block
        first = false;
        {  // Pack this thread's share of the B block's micro-panels.
          const int64_t p0 = np * tid / threads, p1 = np * (tid + 1) / threads;
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
    body(0);
  } else {
#pragma omp parallel num_threads(threads)
    body(omp_get_thread_num());
  }
}

void gemm_one(const Mat& x, int threads) {
  if (x.m == 0 || x.n == 0) return;
  if (x.k == 0 || (threads <= 1 && x.m * x.n * x.k <= kSmallWork && x.k <= kKC)) {
    gemm_small(x);  // K = 0 too: the kernel then stores just the epilogue (0 + bias, activated)
    return;
  }
  gemm_blocked(x, threads);
}

Mat item(const GemmProblem& p, int64_t i) {
  return Mat{p.m, p.n, p.k,
             p.a + i * p.a_bs, p.a_rs, p.a_cs,
             p.b + i * p.b_bs, p.b_rs, p.b_cs,
             p.c + i * p.c_bs, p.c_rs,
             p.bias, p.act, p.act_param, p.accumulate};
}

void gemm(const GemmProblem& p) {
  if (p.batch <= 0 || p.m <= 0 || p.n <= 0) return;
  const double flops = 2.0 * double(p.m) * double(p.n) * double(p.k);
  const int threads = get_num_threads();
  if (p.batch > 1 && threads > 1 && flops < kThreadFlops && flops * p.batch >= kThreadFlops) {
    // Many small products: one per thread at a time, each single-threaded.
    const int64_t grain = std::max<int64_t>(1, static_cast<int64_t>(kThreadFlops / std::max(flops, 1.0)));
    parallel_for(p.batch, grain, [&](int64_t b0, int64_t b1) {
      for (int64_t i = b0; i < b1; ++i) gemm_one(item(p, i), 1);
    });
    return;
  }
  const int per_item = flops >= kThreadFlops ? threads : 1;
  for (int64_t i = 0; i < p.batch; ++i) gemm_one(item(p, i), per_item);
}

}  // namespace

extern const GemmKernels gemm_kernels{kMR, kNR, kMC, kKC, kNC, gemm, microkernel, pack_a, pack_b};

}  // namespace FG_ISA_NS
}  // namespace fusegrad
