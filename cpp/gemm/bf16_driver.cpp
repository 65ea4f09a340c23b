// The loop nest of the bf16 GEMM's fast paths (bf16_gemm.h), one template over the path's traits:
// its row panel height MR, the K step its kernel consumes, its packing and its blocks.
//
// Both operands are packed whole before any product (the threads split the panels), since
// rounding fp32 to bf16 needs a pass over every element anyway; the blocks then only choose
// which slices of the packed operands stay in which cache. A unit of work is one block of MC rows
// times a group of B micro-panels:
//   pc over K by KC     one K block of the unit's panels
//    jr over the group  B micro-panel KC×32, reused by every A micro-panel of the block
//     ir over MC by MR  A block MC×KC in the core's L2, re-read by every B micro-panel
// Threads take packing items and units from shared counters; see gemm_item.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <memory>
#include <new>

#include "common/threads.h"
#include "gemm/bf16_kernels.h"
#include "gemm/gemm_batch.h"

namespace fusegrad {
namespace isa_avx512_ext {
namespace {

// Blocks, from the Sapphire/Emerald Rapids core: 48 KiB L1d, 2 MiB L2.
//   AVX-512 BF16 (12×32 tile): KC = 512 makes the B micro-panel 512 × 32 × 2 B = 32 KiB, which
//   stays in L1 while the 12-row A micro-panels (12 KiB) stream past; MC = 240 makes the A block
//   240 × 512 × 2 B = 240 KiB, an eighth of L2. C is loaded and stored once per KC = 512 K steps
//   (256 pair steps of 24 dot products each), which costs nothing measurable.
//   AMX (32×32 tile): the four accumulator tiles stay in tile registers over K blocks of up to
//   KC = 4096, so C is loaded and stored once per 4096 of depth. Reloading C tiles per K block
//   was the first limit measured: C rows lie a power-of-two stride apart for the usual sizes
//   (conflict misses) and have left every cache between two visits; with KC = 256 tile loads of C
//   took a fifth of the time at n = 1024. The A block is then sized by bytes, not rows: MC rows
//   with MC × KC × 2 B <= kABlockBytes = 1 MiB, half the 2 MiB L2, re-read from L2 by every B
//   micro-panel (KC × 32, streamed from L3 and reused by the MC / 32 A micro-panels). Per 32-deep
//   step the kernel reads 4 KiB of tiles for 4 tdpbf16ps (16 cycles each at full rate): about
//   64 B per cycle from L2 at peak, which L2 cannot sustain, so the AMX path runs at a fraction
//   of its 1024 flops per cycle (measured 2.9 TFLOP/s per core with tiles in registers).
struct Avx512Path {
  static constexpr int kMR = kBf16MRAvx512, kKStep = 2;
  static constexpr int64_t kABlockBytes = 1 << 30;  // MC alone bounds it (240 × 512 × 2 B)
  static constexpr int64_t kKC = 512, kMC = 240;
  static void pack_a(const Bf16Operand& x, const void* base, int64_t m, int64_t k, int64_t kp, uint16_t* dst) {
    bf16_pack_a_pairs(x, base, m, k, kp, dst);
  }
  static const uint16_t* a_at(const uint16_t* panel, int64_t pc) { return panel + pc * kMR; }
  static void begin() {}
  static void end() {}
  static void kernel(const Bf16Tile& t) { bf16_microkernel_avx512(t); }
};

struct AmxPath {
  static constexpr int kMR = kBf16MRAmx, kKStep = kAmxK;
  static constexpr int64_t kABlockBytes = 1 << 20;
  static constexpr int64_t kKC = 4096, kMC = 512;
  static void pack_a(const Bf16Operand& x, const void* base, int64_t m, int64_t k, int64_t kp, uint16_t* dst) {
    bf16_pack_a_tiles(x, base, m, k, kp, dst);
  }
  // Each 32-deep step of a tile panel holds its 32 rows: depth pc starts at pc * 32 elements.
  static const uint16_t* a_at(const uint16_t* panel, int64_t pc) { return panel + pc * kMR; }
  static void begin() { bf16_amx_configure(); }
  static void end() { bf16_amx_release(); }
  static void kernel(const Bf16Tile& t) { bf16_microkernel_amx(t); }
};

static_assert(AmxPath::kKC % kAmxK == 0 && AmxPath::kMC % AmxPath::kMR == 0, "whole tiles per block");
static_assert(Avx512Path::kKC % 2 == 0 && Avx512Path::kMC % Avx512Path::kMR == 0, "whole tiles per block");

// Units of work per thread (see gemm_item): enough that a thread slowed down by a neighbour on
// its core leaves a small remainder, few enough that each unit still reuses its A block across
// several B micro-panels.
constexpr int64_t kUnitsPerThread = 8;
// A C of at least this many bytes is larger than the L2 of both cores together (2 × 2 MiB), so
// its full tiles are written with streaming stores (the AMX kernel), sparing the read of each
// line before it is overwritten; a smaller C is likely read again soon by the caller, from cache.
constexpr int64_t kStreamCBytes = 8 << 20;
// Panels packed per work item: about 64-128 KiB of packed data, long enough to amortise the
// atomic increment, short enough to balance.
constexpr int64_t kPackPanels = 2;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// A 64-byte aligned buffer of bf16 that grows and is reused by later calls on the same thread.
class Buffer {
 public:
  Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { std::free(data_); }
  uint16_t* get(int64_t elements) {
    if (elements > size_) {
      std::free(data_);
      data_ = nullptr;
      size_ = 0;
      const int64_t bytes = round_up(std::max<int64_t>(elements, 1) * 2, 4096);
      data_ = static_cast<uint16_t*>(std::aligned_alloc(64, static_cast<size_t>(bytes)));
      if (!data_) throw std::bad_alloc();
      size_ = bytes / 2;
    }
    return data_;
  }

 private:
  uint16_t* data_ = nullptr;
  int64_t size_ = 0;
};

struct Workspace {
  Buffer a, b;
};

Workspace& workspace() {
  static thread_local Workspace w;
  return w;
}

const void* element(const Bf16Operand& x, int64_t item, int64_t i, int64_t j) {
  const int64_t size = x.bf16 ? 2 : 4;
  return static_cast<const char*>(x.data) + (item * x.bs + i * x.rs + j * x.cs) * size;
}

template <class P>
void gemm_item(const Bf16GemmProblem& p, int64_t item, int threads) {
  const int64_t m = p.m, n = p.n, k = p.k;
  const int64_t kp = round_up(k, P::kKStep);
  const int64_t mp = ceil_div(m, P::kMR), np = ceil_div(n, kBf16NR);
  // Allocated by the calling thread before the team starts, so a failure is a bad_alloc here
  // (MemoryError in Python), never an exception inside OpenMP.
  Workspace& ws = workspace();
  uint16_t* apack = ws.a.get(mp * P::kMR * kp);
  uint16_t* bpack = ws.b.get(np * kBf16NR * kp);
  // K blocks of equal size in whole K steps, so K = KC + 1 is not one block and a sliver.
  const int64_t kc_max = round_up(ceil_div(kp, ceil_div(kp, P::kKC)), P::kKStep);
  const int64_t kMCPanels = std::max<int64_t>(1, std::min(P::kMC, P::kABlockBytes / (2 * kc_max)) / P::kMR);
  float* c = p.c + item * p.c_bs;

  // Work is handed out through atomic counters rather than split in advance: on a shared machine
  // a thread that loses its core for a while then delays only the items it holds, not a fixed
  // half of the product (measured on 2 busy cores: the static split's time was the slower
  // thread's, often 3-4 times the best). Packing goes by kPackPanels panels per item; the product
  // by units of one A block (MC rows) times a group of B micro-panels, each unit running all of
  // K, so the K blocks of a C tile are summed in order by one thread.
  const int64_t ic_blocks = ceil_div(mp, kMCPanels);
  const int64_t groups = std::max<int64_t>(1, std::min(np, ceil_div(kUnitsPerThread * threads, ic_blocks)));
  const int64_t group_panels = ceil_div(np, groups);
  const int64_t units = ic_blocks * ceil_div(np, group_panels);
  const int64_t a_items = ceil_div(mp, kPackPanels), b_items = ceil_div(np, kPackPanels);
  std::atomic<int64_t> next_pack{0}, next_unit{0};

  auto body = [&](int nt) {
    for (int64_t it; (it = next_pack.fetch_add(1, std::memory_order_relaxed)) < a_items + b_items;) {
      if (it < a_items) {
        const int64_t a0 = it * kPackPanels, a1 = std::min(mp, a0 + kPackPanels);
        P::pack_a(p.a, element(p.a, item, a0 * P::kMR, 0), std::min(m, a1 * P::kMR) - a0 * P::kMR, k, kp,
                  apack + a0 * P::kMR * kp);
      } else {
        const int64_t b0 = (it - a_items) * kPackPanels, b1 = std::min(np, b0 + kPackPanels);
        bf16_pack_b(p.b, element(p.b, item, 0, b0 * kBf16NR), k, std::min(n, b1 * kBf16NR) - b0 * kBf16NR, kp,
                    bpack + b0 * kBf16NR * kp);
      }
    }
    if (nt > 1) {
#pragma omp barrier
    }
    bool begun = false;
    Bf16Tile t;
    t.ldc = p.c_rs;
    t.act_param = p.act_param;
    t.stream_c = m * n * 4 >= kStreamCBytes;
    for (int64_t u; (u = next_unit.fetch_add(1, std::memory_order_relaxed)) < units;) {
      if (!begun) P::begin();
      begun = true;
      const int64_t ic = (u / groups) * kMCPanels, ic_end = std::min(mp, ic + kMCPanels);
      const int64_t j_begin = (u % groups) * group_panels, j_end = std::min(np, j_begin + group_panels);
      for (int64_t pc = 0; pc < kp; pc += kc_max) {
        t.k = std::min(kc_max, kp - pc);
        const bool last = pc + t.k >= kp;
        t.load_c = p.accumulate || pc > 0;
        t.act = last ? p.act : Activation::none;
        for (int64_t jp = j_begin; jp < j_end; ++jp) {
          const int64_t j = jp * kBf16NR;
          t.n = static_cast<int>(std::min<int64_t>(kBf16NR, n - j));
          t.b = bpack + jp * kBf16NR * kp + pc * kBf16NR;
          t.bias = last && p.bias ? p.bias + j : nullptr;
          for (int64_t ip = ic; ip < ic_end; ++ip) {
            const int64_t i = ip * P::kMR;
            t.m = static_cast<int>(std::min<int64_t>(P::kMR, m - i));
            t.a = P::a_at(apack + ip * P::kMR * kp, pc);
            t.c = c + i * p.c_rs + j;
            P::kernel(t);
          }
        }
      }
    }
    if (begun) P::end();
  };

  if (threads <= 1) {
    body(1);
  } else {
#pragma omp parallel num_threads(threads)
    body(omp_get_num_threads());
  }
}

template <class P>
void gemm_bf16(const Bf16GemmProblem& p) {
  if (p.batch <= 0 || p.m <= 0 || p.n <= 0) return;
  for_each_gemm(p.batch, 2.0 * double(p.m) * double(p.n) * double(p.k),
                [&](int64_t i, int threads) { gemm_item<P>(p, i, threads); });
}

}  // namespace

void gemm_bf16_avx512(const Bf16GemmProblem& p) { gemm_bf16<Avx512Path>(p); }
void gemm_bf16_amx(const Bf16GemmProblem& p) { gemm_bf16<AmxPath>(p); }

}  // namespace isa_avx512_ext
}  // namespace fusegrad
