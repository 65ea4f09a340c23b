// The int8 convolution: a GEMM over output pixels (rows) × C_out (columns) with depth
// KH·KW·C_in. Rows are gathered (im2col) block by block into a per-thread uint8 buffer that stays
// in cache while the GEMM packs it, padding taps filled with the input zero point so they stand
// for a real 0. Compiled once: the gather is memcpy/memset of whole channel runs, and the GEMM
// picks its own path.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <vector>

#include "common/threads.h"
#include "conv/int8_conv.h"

namespace fusegrad {
namespace {

// Bytes of gathered rows per block: at most 1 MiB, half the L2 of the AMX machines, so the GEMM
// packs them from L2 right after the gather wrote them (and the buffers stay small for any input).
constexpr int64_t kGatherBytes = 1 << 20;
// At least this many rows per block, so the GEMM's B panels are reused over many rows even for
// very deep K.
constexpr int64_t kMinGatherRows = 256;
// Below this many multiply-adds one thread does it all (as in the GEMM driver).
constexpr double kThreadMacs = 1 << 20;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

void gather_rows(const Int8ConvProblem& p, int64_t row0, int64_t rows, uint8_t* dst, int64_t k) {
  const ConvShape& s = p.s;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t row = row0 + r;
    const int64_t ow = row % s.ow, oh = (row / s.ow) % s.oh, n = row / (s.ow * s.oh);
    uint8_t* d = dst + r * k;
    const int64_t iw0 = ow * s.sw - s.pl;
    // With dilation 1 a window row lies whole inside the image away from its left and right
    // edges: its KW taps are then one contiguous run of KW·C bytes.
    const bool whole_rows = s.dw == 1 && iw0 >= 0 && iw0 + s.kw <= s.w;
    for (int64_t kh = 0; kh < s.kh; ++kh) {
      const int64_t ih = oh * s.sh - s.pt + kh * s.dh;
      if (whole_rows && ih >= 0 && ih < s.h) {
        std::memcpy(d, p.x + ((n * s.h + ih) * s.w + iw0) * s.c, s.kw * s.c);
        d += s.kw * s.c;
        continue;
      }
      for (int64_t kw = 0; kw < s.kw; ++kw, d += s.c) {
        const int64_t iw = iw0 + kw * s.dw;
        if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) std::memset(d, p.x_zero_point, s.c);
        else std::memcpy(d, p.x + ((n * s.h + ih) * s.w + iw) * s.c, s.c);
      }
    }
  }
}

}  // namespace

void int8_conv2d(const Int8ConvProblem& p) {
  const ConvShape& s = p.s;
  const int64_t rows = s.n * s.oh * s.ow, k = s.kh * s.kw * s.c;
  const int64_t out_row = s.co * int8_out_size(p.epilogue.out);
  Int8GemmProblem g;
  g.b = p.w;
  g.ldo = s.co;
  g.epilogue = p.epilogue;
  g.epilogue.a_zero_point = p.x_zero_point;
  g.path = p.path;
  const bool in_place = s.kh == 1 && s.kw == 1 && s.sh == 1 && s.sw == 1 && s.pt == 0 && s.pl == 0 &&
                        s.oh == s.h && s.ow == s.w;
  if (in_place) {
    g.m = rows;
    g.a = p.x;
    g.lda = s.c;
    g.out = p.out;
    int8_gemm(g);
    return;
  }
#if FG_X86
  const bool amx = p.path == Int8Path::automatic || p.path == Int8Path::amx;
  if (amx && int8_path_usable(Int8Path::amx) && isa_avx512_ext::int8_conv2d_implicit_fits(s)) {
    isa_avx512_ext::int8_conv2d_implicit(p);
    return;
  }
#endif
  // Each thread gathers its own blocks of rows and multiplies them on its own (one parallel region
  // for the whole convolution: a fork and join per block would cost more than the block's work at
  // CNN layer sizes, and far more on a busy machine). Blocks come in a multiple of the thread
  // count, so on a quiet machine every thread gets the same number.
  const double macs = double(rows) * double(s.co) * double(std::max<int64_t>(k, 1));
  const int threads = macs < kThreadMacs ? 1 : static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(
                                                   get_num_threads(), ceil_div(rows, kMinGatherRows))));
  const int64_t most = std::max(kMinGatherRows, kGatherBytes / std::max<int64_t>(k, 1));
  const int64_t count = round_up(ceil_div(rows, most), threads);
  const int64_t block = ceil_div(rows, count);
  std::vector<std::vector<uint8_t>> buffers(threads);
  for (auto& b : buffers) b.resize(static_cast<size_t>(block * k));
  // Threads take blocks in turn from a shared counter, so a thread the OS sets aside for a while
  // holds up no other. The GEMM may allocate its per-thread workspace on first use: an exception
  // must not leave an OpenMP region, so the first one is kept and rethrown after it.
  std::atomic<int64_t> next{0};
  std::exception_ptr error;
  run_on_threads(threads, [&](int tid) {
    try {
      Int8GemmProblem t = g;
      t.max_threads = 1;
      for (int64_t r; (r = next.fetch_add(1, std::memory_order_relaxed) * block) < rows;) {
        t.m = std::min(block, rows - r);
        gather_rows(p, r, t.m, buffers[tid].data(), k);
        t.a = buffers[tid].data();
        t.lda = k;
        t.out = static_cast<char*>(p.out) + r * out_row;
        int8_gemm(t);
      }
    } catch (...) {
#pragma omp critical(fusegrad_int8_conv_error)
      if (!error) error = std::current_exception();
    }
  });
  if (error) std::rethrow_exception(error);
}

}  // namespace fusegrad
