// The int8 GEMM driver: picks the path, splits the product into blocks and threads, and runs the
// path's packing, microkernel and epilogue. Compiled once: it only orchestrates calls into the
// kernel tables, each compiled with its own flags.
//
// Loop nest per thread, over its share of (row block, column block) tasks in row-major order:
//   ic: MC rows of A, packed whole (all of K) by this thread, kept while its tasks share ic -> L2
//    jc: NC columns, an int32 scratch block MC × NC                                          -> L2
//     pc: KC deep; B is pre-packed, so a micro-tile's B block is read where it lies        -> L1
//      jr by NR, ir by MR: the microkernel into the scratch block (added to it after pc = 0)
//    then the epilogue turns the scratch block into the caller's output type while it is in L2.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include "common/threads.h"
#include "gemm/int8_gemm.h"

namespace fusegrad {
namespace {

// Below this many multiply-adds one thread does it all: waking and joining the second thread
// costs a few microseconds, in which even the generic path does ~1M of them.
constexpr double kThreadMacs = 1 << 20;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// A 64-byte aligned buffer that grows and is never shrunk, so later calls reuse it.
class AlignedBytes {
 public:
  AlignedBytes() = default;
  AlignedBytes(const AlignedBytes&) = delete;
  AlignedBytes& operator=(const AlignedBytes&) = delete;
  ~AlignedBytes() { std::free(data_); }
  void* get(int64_t bytes) {
    if (bytes > size_) {
      const int64_t size = round_up(std::max<int64_t>(bytes, 64), 64);
      void* p = std::aligned_alloc(64, static_cast<size_t>(size));
      if (!p) throw std::bad_alloc();
      std::free(data_);
      data_ = p;
      size_ = size;
    }
    return data_;
  }

 private:
  void* data_ = nullptr;
  int64_t size_ = 0;
};

// Per worker: the packed A block and the int32 scratch block. Allocated by the calling thread
// before the parallel region, so a failed allocation is a std::bad_alloc (MemoryError), never an
// exception inside OpenMP.
struct Worker {
  AlignedBytes apack, scratch;
};

std::vector<std::unique_ptr<Worker>>& workers() {
  static thread_local std::vector<std::unique_ptr<Worker>> w;
  return w;
}

}  // namespace

bool int8_path_usable(Int8Path path) {
  switch (path) {
#if FG_X86
    case Int8Path::vnni: return cpu_feature_usable(CpuFeature::avx512_vnni);
    case Int8Path::amx: return cpu_feature_usable(CpuFeature::amx_int8);
#else
    case Int8Path::vnni:
    case Int8Path::amx: return false;
#endif
    default: return true;
  }
}

const Int8Kernels& int8_kernels_for(Int8Path path) {
#if FG_X86
  if (path == Int8Path::automatic || !int8_path_usable(path))
    path = int8_path_usable(Int8Path::amx) ? Int8Path::amx
           : int8_path_usable(Int8Path::vnni) ? Int8Path::vnni : Int8Path::generic;
  if (path == Int8Path::amx) return isa_avx512_ext::int8_amx_kernels;
  if (path == Int8Path::vnni) return isa_avx512_ext::int8_vnni_kernels;
#endif
  return active_int8_generic_kernels();
}

void int8_gemm(const Int8GemmProblem& p) {
  const Int8PackedWeight& w = *p.b;
  const int64_t m = p.m, n = w.n, k = w.k, k4 = w.k4;
  if (m <= 0 || n <= 0) return;
  const Int8Kernels& kt = int8_kernels_for(p.path);
  const int64_t mr = kt.mr, nr = kt.nr;

  const int64_t mc = std::min(kt.mc, round_up(m, mr));
  const int64_t mb = ceil_div(m, mc);
  const double macs = double(m) * double(n) * double(std::max<int64_t>(k, 1));
  int threads = macs < kThreadMacs ? 1 : p.max_threads > 0 ? std::min(p.max_threads, get_num_threads())
                                                            : get_num_threads();
  // Narrower column blocks when there are too few tasks to give every thread two (e.g. a batch
  // of 32 rows through a Linear layer: one row block).
  int64_t nc = std::min(kt.nc, round_up(n, nr));
  if (threads > 1 && mb * ceil_div(n, nc) < 2 * threads)
    nc = std::max(nr, round_up(ceil_div(n, ceil_div(2 * threads, mb)), nr));
  const int64_t nb = ceil_div(n, nc), tasks = mb * nb;
  threads = static_cast<int>(std::min<int64_t>(threads, tasks));

  // Depth blocks of KC, the last one taking up to a quarter of KC more rather than leaving a thin
  // block (K = 576 on AMX: one block, not 512 + 64, whose partial sums would go to the scratch
  // block and back for one step of depth). Every block but the last is whole k_align granules
  // (padded to itself), so packed A blocks start at pc · mc_pad.
  // Reading A in place, a last block that is not whole granules is split: its whole part read in
  // place, the rest (under k_align) packed.
  const bool a_in_place = kt.reads_rows && nb == 1;
  const auto depth_block = [&](int64_t pc) {
    const int64_t size = k4 - pc <= kt.kc + kt.kc / 4 ? k4 - pc : kt.kc;
    return a_in_place && size % kt.k_align && size > kt.k_align ? size / kt.k_align * kt.k_align : size;
  };
  // Whether micro-panel rows [ir, ir + MR) of depth block [pc, pc + kc) are read in place.
  const auto in_place = [&](int64_t pc, int64_t kc, int64_t rows_left) {
    return a_in_place && kc % kt.k_align == 0 && pc + kc <= k && rows_left >= mr;
  };
  const int64_t mc_pad = round_up(mc, mr), nc_pad = round_up(nc, nr);
  const int64_t depth = k4 == 0 ? 0 : round_up(k4, kt.k_align);  // all depth blocks, padded
  auto& ws = workers();
  std::vector<uint8_t*> apacks(threads);
  std::vector<int32_t*> scratches(threads);
  for (int t = 0; t < threads; ++t) {
    if (static_cast<int>(ws.size()) <= t) ws.push_back(std::make_unique<Worker>());
    apacks[t] = static_cast<uint8_t*>(ws[t]->apack.get(mc_pad * depth));
    scratches[t] = static_cast<int32_t*>(ws[t]->scratch.get(mc_pad * nc_pad * 4));
  }
  const int64_t out_size = int8_out_size(p.epilogue.out);

  // Each thread works through its own contiguous share of the tasks (so consecutive tasks share
  // its packed A block), then takes what is left of the others' shares: on a busy machine a thread
  // that the OS set aside for a while no longer holds up the whole product.
  const std::unique_ptr<std::atomic<int64_t>[]> cursor(new std::atomic<int64_t>[threads]);
  for (int t = 0; t < threads; ++t) cursor[t].store(tasks * t / threads, std::memory_order_relaxed);
  // (Shares are those of the threads asked for; should OpenMP give fewer, the missing ones' shares
  // are simply taken by the others.)
  const auto next_task = [&](int tid) -> int64_t {
    for (int i = 0; i < threads; ++i) {
      const int owner = (tid + i) % threads;
      const int64_t task = cursor[owner].fetch_add(1, std::memory_order_relaxed);
      if (task < tasks * (owner + 1) / threads) return task;
    }
    return -1;
  };

  auto body = [&](int tid) {
    if (kt.thread_begin) kt.thread_begin();
    uint8_t* apack = apacks[tid];
    int32_t* scratch = scratches[tid];
    int64_t packed_ib = -1;
    for (int64_t task; (task = next_task(tid)) >= 0;) {
      const int64_t ib = task / nb, jb = task % nb;
      const int64_t ic = ib * mc, rows = std::min(mc, m - ic);
      const int64_t jc = jb * nc, cols = std::min(nc, n - jc);
      if (ib != packed_ib) {
        for (int64_t pc = 0, kc; pc < k4; pc += kc) {
          kc = depth_block(pc);
          const int64_t kc_pad = round_up(kc, kt.k_align);
          const int64_t k_real = std::min(kc, k - pc);
          for (int64_t ir = 0; ir < rows; ir += mr)
            if (!in_place(pc, kc, rows - ir))
              kt.pack_a(p.a + (ic + ir) * p.lda + pc, p.lda, static_cast<int>(std::min(mr, rows - ir)), k_real,
                        kc_pad, apack + pc * mc_pad + ir * kc_pad);
        }
        packed_ib = ib;
      }
      if (k4 == 0) std::memset(scratch, 0, mc_pad * nc_pad * 4);
      Int8Tile t;
      t.b_stride = w.panel_bytes();
      t.ldc = nc_pad;
      for (int64_t pc = 0, kc; pc < k4; pc += kc) {
        kc = depth_block(pc);
        t.kc = round_up(kc, kt.k_align);
        t.load_c = pc > 0;
        for (int64_t jr = 0; jr < cols; jr += nr) {
          t.nv = static_cast<int>(ceil_div(std::min(nr, cols - jr), kInt8PanelCols));
          t.b = w.panel((jc + jr) / kInt8PanelCols) + pc * kInt8PanelCols;
          for (int64_t ir = 0; ir < rows; ir += mr) {
            const bool here = in_place(pc, kc, rows - ir);
            t.a = here ? p.a + (ic + ir) * p.lda + pc : apack + pc * mc_pad + ir * t.kc;
            t.lda = here ? p.lda : 0;
            t.c = scratch + ir * nc_pad + jr;
            kt.microkernel(t);
          }
        }
      }
      kt.epilogue(scratch, nc_pad, rows, cols,
                  static_cast<char*>(p.out) + (ic * p.ldo + jc) * out_size, p.ldo, p.epilogue, jc);
    }
    if (kt.thread_end) kt.thread_end();
  };

  run_on_threads(threads, body);
}

}  // namespace fusegrad
