// Emulated mma.sync, ldmatrix and cp.async (see ptx.h). The fragment tables follow the PTX ISA
// sections "Matrix Fragments for mma.m16n8k16 with floating point type", "Matrix Fragments for
// mma.m16n8k8" (.tf32) and "Warp-level matrix load instruction: ldmatrix". With
// groupID g = lane / 4 and threadID_in_group t = lane % 4:
//
//   m16n8k16 .bf16/.f16, A 16x16 (4 regs, 2 elements each, low half first): element i of the 8
//     is at row g + 8 * ((i / 2) % 2), column 2t + (i % 2) + 8 * (i / 4)
//   m16n8k16 B 16x8 (2 regs): element i of 4 at row (k) 2t + (i % 2) + 8 * (i / 2), column g
//   m16n8k8 .tf32, A 16x8 (4 regs): element i at row g + 8 * (i % 2), column t + 4 * (i / 2)
//   m16n8k8 .tf32, B 8x8 (2 regs): element i at row t + 4i, column g
//   C and D 16x8 fp32 (4 regs, both shapes): element i at row g + 8 * (i / 2), column 2t + (i % 2)
#include "common/emulator/ptx.h"

#include <cstring>
#include <string>

#include "common/emulator/context.h"
#include "common/emulator/low_precision.h"
#include "common/emulator/shared_memory.h"

namespace fusegrad::cuda::ptx {

using namespace ::fusegrad::cuda::emulator;

namespace {

enum class Input { bf16, f16, tf32 };

float unpack16(uint32_t reg, int half, Input in) {
  const uint16_t bits = static_cast<uint16_t>(half ? reg >> 16 : reg & 0xFFFFu);
  return in == Input::bf16 ? bf16_to_float(bits) : half_to_float(bits);
}

float tf32_of(uint32_t reg) { return tf32_round(bits_float(reg)); }

// D = A * B + C for A (m x k), B (k x 8), C (m x 8): exact products summed in double, rounded once.
template <int kM, int kK>
void multiply_accumulate(const float (&a)[kM][kK], const float (&b)[kK][8], const float (&c)[kM][8], float (&d)[kM][8]) {
  for (int i = 0; i < kM; ++i)
    for (int j = 0; j < 8; ++j) {
      double s = c[i][j];
      for (int k = 0; k < kK; ++k) s += static_cast<double>(a[i][k]) * static_cast<double>(b[k][j]);
      d[i][j] = static_cast<float>(s);
    }
}

void gather_c(const LaneSlot* lanes, float (&c)[16][8]) {
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    for (int i = 0; i < 4; ++i) c[g + 8 * (i / 2)][2 * t + i % 2] = bits_float(lanes[l].in[6 + i]);
  }
}

void scatter_d(const float (&d)[16][8], LaneSlot* lanes) {
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    for (int i = 0; i < 4; ++i) lanes[l].out[i] = float_bits(d[g + 8 * (i / 2)][2 * t + i % 2]);
  }
}

template <Input kIn>
void mma_m16n8k16_exchange(LaneSlot* lanes, unsigned) {
  float a[16][16], b[16][8], c[16][8], d[16][8];
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    for (int i = 0; i < 8; ++i) a[g + 8 * ((i / 2) % 2)][2 * t + i % 2 + 8 * (i / 4)] = unpack16(lanes[l].in[i / 2], i % 2, kIn);
    for (int i = 0; i < 4; ++i) b[2 * t + i % 2 + 8 * (i / 2)][g] = unpack16(lanes[l].in[4 + i / 2], i % 2, kIn);
  }
  gather_c(lanes, c);
  multiply_accumulate(a, b, c, d);
  scatter_d(d, lanes);
}

void mma_m16n8k8_tf32_exchange(LaneSlot* lanes, unsigned) {
  float a[16][8], b[8][8], c[16][8], d[16][8];
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    for (int i = 0; i < 4; ++i) a[g + 8 * (i % 2)][t + 4 * (i / 2)] = tf32_of(lanes[l].in[i]);
    for (int i = 0; i < 2; ++i) b[t + 4 * i][g] = tf32_of(lanes[l].in[4 + i]);
  }
  gather_c(lanes, c);
  multiply_accumulate(a, b, c, d);
  scatter_d(d, lanes);
}

// m16n8k32 .u8.s8.s32: A 16x32 (4 regs of 4 bytes, low byte first): register r holds row
// g + 8 * (r % 2), k 4t + 16 * (r / 2) + byte; B 32x8 (2 regs): register r holds k 4t + 16r + byte,
// column g; C and D int32 as the fp32 accumulators. Products exact, the sum wraps as the hardware's.
void mma_m16n8k32_u8s8_exchange(LaneSlot* lanes, unsigned) {
  int a[16][32], b[32][8];
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    for (int r = 0; r < 4; ++r)
      for (int byte = 0; byte < 4; ++byte)
        a[g + 8 * (r % 2)][4 * t + 16 * (r / 2) + byte] = static_cast<int>(lanes[l].in[r] >> 8 * byte & 0xFFu);
    for (int r = 0; r < 2; ++r)
      for (int byte = 0; byte < 4; ++byte)
        b[4 * t + 16 * r + byte][g] = static_cast<int8_t>(lanes[l].in[4 + r] >> 8 * byte & 0xFFu);
  }
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    for (int i = 0; i < 4; ++i) {
      const int row = g + 8 * (i / 2), col = 2 * t + i % 2;
      uint32_t sum = lanes[l].in[6 + i];
      for (int k = 0; k < 32; ++k) sum += static_cast<uint32_t>(a[row][k] * b[k][col]);
      lanes[l].out[i] = sum;
    }
  }
}

void mma(const char* what, CollectiveFn exchange, float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
         const float (&c)[4], const char* file, int line) {
  LaneSlot& s = my_lane_slot();
  for (int i = 0; i < 4; ++i) s.in[i] = a[i];
  s.in[4] = b[0];
  s.in[5] = b[1];
  for (int i = 0; i < 4; ++i) s.in[6 + i] = float_bits(c[i]);
  warp_collective(what, kWholeWarp, exchange, file, line);
  for (int i = 0; i < 4; ++i) d[i] = bits_float(s.out[i]);
}

uint16_t load16(const void* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

template <int kMatrices, bool kTrans>
void ldmatrix_exchange(LaneSlot* lanes, unsigned) {
  for (int m = 0; m < kMatrices; ++m) {
    const char* rows[8];
    for (int r = 0; r < 8; ++r) {
      rows[r] = static_cast<const char*>(lanes[8 * m + r].address);
      check_shared_access(rows[r], 16);
    }
    for (int l = 0; l < 32; ++l) {
      const int g = l / 4, t = l % 4;
      const uint16_t lo = kTrans ? load16(rows[2 * t] + 2 * g) : load16(rows[g] + 4 * t);
      const uint16_t hi = kTrans ? load16(rows[2 * t + 1] + 2 * g) : load16(rows[g] + 4 * t + 2);
      lanes[l].out[m] = lo | static_cast<uint32_t>(hi) << 16;
    }
  }
}

template <int kMatrices, bool kTrans>
void ldmatrix(const char* what, uint32_t* r, const void* row, const char* file, int line) {
  const ThreadContext& ctx = *tls_context;
  if (lane_id() < 8 * kMatrices) {
    const char *name, *lo, *hi;
    if (reinterpret_cast<uintptr_t>(row) % 16 != 0)
      fail(std::string(what) + " at " + short_location(file, line) + ": row address is not 16-byte aligned");
    if (!find_shared_region(ctx, row, 16, &name, &lo, &hi))
      fail(std::string(what) + " at " + short_location(file, line) +
           ": the 16-byte row this lane names is not inside the block's shared memory");
  }
  LaneSlot& s = my_lane_slot();
  s.address = row;
  warp_collective(what, kWholeWarp, &ldmatrix_exchange<kMatrices, kTrans>, file, line);
  for (int i = 0; i < kMatrices; ++i) r[i] = s.out[i];
}

void remove_pending(ThreadContext& ctx, const PendingCopy& c) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(c.dst);
  for (uintptr_t w = a / 4; w < (a + static_cast<uintptr_t>(c.bytes)) / 4; ++w) {
    auto it = ctx.pending_words.find(w);
    if (it != ctx.pending_words.end() && --it->second.count == 0) ctx.pending_words.erase(it);
  }
  tls_pending_copies = !ctx.pending_words.empty();
}

// wgmma: the descriptor fields (see ptx.cuh) and the accumulator layout of the PTX ISA's "Register
// Fragments and Shared Memory Matrix Layouts" for wgmma .m64nNk16: warp w of the warpgroup holds
// rows 16w + g and 16w + g + 8; register 4j + i of a lane is row g + 8 * (i / 2), column
// 8j + 2t + (i % 2).
struct Descriptor {
  uint32_t start, lbo, sbo;  // bytes
};

Descriptor decode(uint64_t desc, const char* what, const char* file, int line) {
  const auto field = [&](int bit) { return static_cast<uint32_t>(desc >> bit & 0x3FFF) << 4; };
  if (desc >> 62 != 0 || (desc >> 49 & 7) != 0)
    fail(std::string(what) + " at " + short_location(file, line) +
         ": the emulator reads only descriptors without swizzle and with base offset 0");
  return {field(0), field(16), field(32)};
}

// Element (r, k) of a K-major bf16 operand: 8×8 core matrices of 16-byte rows.
float descriptor_element(const ThreadContext& ctx, const Descriptor& d, int r, int k, const char* what,
                         const char* file, int line) {
  const size_t at = size_t{d.start} + size_t(r / 8) * d.sbo + size_t(k / 8) * d.lbo + size_t(r % 8) * 16 +
                    size_t(k % 8) * 2;
  if (ctx.dynamic_lo == nullptr || at + 2 > static_cast<size_t>(ctx.dynamic_hi - ctx.dynamic_lo))
    fail(std::string(what) + " at " + short_location(file, line) + ": element (" + std::to_string(r) + ", " +
         std::to_string(k) + ") lies at byte " + std::to_string(at) + ", outside the dynamic shared memory");
  const char* p = ctx.dynamic_lo + at;
  check_shared_access(p, 2);  // a cp.async still in flight to it fails here
  return bf16_to_float(load16(p));
}

// Runs one pending wgmma: D += A·B for the warp's 16 rows, reading shared memory now.
void run_wgmma(const PendingWgmma& op) {
  const ThreadContext& ctx = *tls_context;
  const char* what = op.n == 128 ? "wgmma.m64n128k16.bf16" : "wgmma.m64n256k16.bf16";
  const Descriptor a = decode(op.desc_a, what, op.file, op.line), b = decode(op.desc_b, what, op.file, op.line);
  float fa[16][16], fb[256][16];
  for (int r = 0; r < 16; ++r)
    for (int k = 0; k < 16; ++k)
      fa[r][k] = descriptor_element(ctx, a, static_cast<int>(op.rows) + r, k, what, op.file, op.line);
  for (int n = 0; n < op.n; ++n)
    for (int k = 0; k < 16; ++k) fb[n][k] = descriptor_element(ctx, b, n, k, what, op.file, op.line);
  for (int l = 0; l < 32; ++l) {
    float* d = op.d[l];
    const int g = l / 4, t = l % 4;
    for (int j = 0; j < op.n / 8; ++j)
      for (int i = 0; i < 4; ++i) {
        const int r = g + 8 * (i / 2), n = 8 * j + 2 * t + i % 2;
        double sum = d[4 * j + i];
        for (int k = 0; k < 16; ++k) sum += static_cast<double>(fa[r][k]) * static_cast<double>(fb[n][k]);
        d[4 * j + i] = static_cast<float>(sum);
      }
  }
}

// The warp of a collective, from the index each lane put in in[0].
Warp& warp_of(const LaneSlot* lanes) { return tls_context->warps[lanes[0].in[0]]; }

// Issue: every lane names the same descriptors; the op joins the warp's open group. lanes[l]:
// in[0] warp, in[1..4] the descriptors, in[5] N, address the accumulators; file and line in
// the warp's (identical) call site.
thread_local const char* tls_wgmma_file = "";
thread_local int tls_wgmma_line = 0;

void wgmma_issue_exchange(LaneSlot* lanes, unsigned) {
  PendingWgmma op;
  op.n = static_cast<int>(lanes[0].in[5]);
  op.rows = 16 * (lanes[0].in[0] % 4);
  op.desc_a = lanes[0].in[1] | uint64_t{lanes[0].in[2]} << 32;
  op.desc_b = lanes[0].in[3] | uint64_t{lanes[0].in[4]} << 32;
  op.file = tls_wgmma_file;
  op.line = tls_wgmma_line;
  for (int l = 0; l < 32; ++l) {
    if ((lanes[l].in[1] | uint64_t{lanes[l].in[2]} << 32) != op.desc_a ||
        (lanes[l].in[3] | uint64_t{lanes[l].in[4]} << 32) != op.desc_b)
      fail("wgmma at " + short_location(op.file, op.line) + ": the lanes of a warp name different descriptors");
    op.d[l] = static_cast<float*>(const_cast<void*>(lanes[l].address));
  }
  warp_of(lanes).wgmma_open.push_back(op);
}

void wgmma_commit_exchange(LaneSlot* lanes, unsigned) {
  Warp& w = warp_of(lanes);
  w.wgmma_groups.push_back(std::move(w.wgmma_open));
  w.wgmma_open.clear();
}

// in[1]: the groups that may stay pending.
void wgmma_wait_exchange(LaneSlot* lanes, unsigned) {
  Warp& w = warp_of(lanes);
  while (w.wgmma_groups.size() > lanes[0].in[1]) {
    for (const PendingWgmma& op : w.wgmma_groups.front()) run_wgmma(op);
    w.wgmma_groups.erase(w.wgmma_groups.begin());
  }
}

void warp_collective_with_index(const char* what, CollectiveFn fn, uint32_t arg, const char* file, int line) {
  LaneSlot& s = my_lane_slot();
  s.in[0] = tls_context->current->warp;
  s.in[1] = arg;
  warp_collective(what, kWholeWarp, fn, file, line);
}

}  // namespace

void mma_m16n8k32_u8s8(int (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const int (&c)[4],
                       const char* file, int line) {
  LaneSlot& s = my_lane_slot();
  for (int i = 0; i < 4; ++i) s.in[i] = a[i];
  s.in[4] = b[0];
  s.in[5] = b[1];
  for (int i = 0; i < 4; ++i) s.in[6 + i] = static_cast<uint32_t>(c[i]);
  warp_collective("mma.sync.m16n8k32.u8.s8", kWholeWarp, &mma_m16n8k32_u8s8_exchange, file, line);
  for (int i = 0; i < 4; ++i) d[i] = static_cast<int>(s.out[i]);
}
void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4],
                       const char* file, int line) {
  mma("mma.sync.m16n8k16.bf16", &mma_m16n8k16_exchange<Input::bf16>, d, a, b, c, file, line);
}
void mma_m16n8k16_f16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4],
                      const char* file, int line) {
  mma("mma.sync.m16n8k16.f16", &mma_m16n8k16_exchange<Input::f16>, d, a, b, c, file, line);
}
void mma_m16n8k8_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4],
                      const char* file, int line) {
  mma("mma.sync.m16n8k8.tf32", &mma_m16n8k8_tf32_exchange, d, a, b, c, file, line);
}

void ldmatrix_x1(uint32_t (&r)[1], const void* row, const char* file, int line) { ldmatrix<1, false>("ldmatrix.x1", r, row, file, line); }
void ldmatrix_x2(uint32_t (&r)[2], const void* row, const char* file, int line) { ldmatrix<2, false>("ldmatrix.x2", r, row, file, line); }
void ldmatrix_x4(uint32_t (&r)[4], const void* row, const char* file, int line) { ldmatrix<4, false>("ldmatrix.x4", r, row, file, line); }
void ldmatrix_x1_trans(uint32_t (&r)[1], const void* row, const char* file, int line) { ldmatrix<1, true>("ldmatrix.x1.trans", r, row, file, line); }
void ldmatrix_x2_trans(uint32_t (&r)[2], const void* row, const char* file, int line) { ldmatrix<2, true>("ldmatrix.x2.trans", r, row, file, line); }
void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row, const char* file, int line) { ldmatrix<4, true>("ldmatrix.x4.trans", r, row, file, line); }

void cp_async_issue(const char* what, void* smem_dst, const void* gmem_src, int bytes, int src_bytes, const char* file,
                    int line) {
  ThreadContext& ctx = *tls_context;
  Fiber& f = *ctx.current;
  const std::string at = std::string(what) + " at " + short_location(file, line) + ": ";
  if (src_bytes < 0 || src_bytes > bytes)
    fail(at + "src-size " + std::to_string(src_bytes) + " is outside [0, " + std::to_string(bytes) + "]");
  if (reinterpret_cast<uintptr_t>(smem_dst) % static_cast<uintptr_t>(bytes) != 0)
    fail(at + "the shared-memory destination is not aligned to the copy size (" + std::to_string(bytes) + " bytes)");
  if (reinterpret_cast<uintptr_t>(gmem_src) % static_cast<uintptr_t>(bytes) != 0)
    fail(at + "the global source is not aligned to the copy size (" + std::to_string(bytes) + " bytes)");
  const char *name, *lo, *hi;
  if (!find_shared_region(ctx, smem_dst, static_cast<size_t>(bytes), &name, &lo, &hi))
    fail(at + "the " + std::to_string(bytes) + "-byte destination is not inside the block's shared memory");
  check_shared_access(smem_dst, static_cast<size_t>(bytes));  // a copy already in flight to the same bytes
  if (src_bytes > 0) {  // fault now, in this thread, if the source is out of bounds
    const volatile char* s = static_cast<const volatile char*>(gmem_src);
    (void)s[0];
    (void)s[src_bytes - 1];
  }
  f.copies.push_back(PendingCopy{static_cast<char*>(smem_dst), static_cast<const char*>(gmem_src), bytes, src_bytes, file, line});
  const uintptr_t a = reinterpret_cast<uintptr_t>(smem_dst);
  for (uintptr_t w = a / 4; w < (a + static_cast<uintptr_t>(bytes)) / 4; ++w) {
    PendingWord& p = ctx.pending_words[w];
    p = PendingWord{p.count + 1, f.linear, file, line};
  }
  tls_pending_copies = 1;
}

void cp_async_commit() {
  Fiber& f = *tls_context->current;
  f.group_end.push_back(f.copies.size());
}

void cp_async_wait_group(int pending_groups) {
  ThreadContext& ctx = *tls_context;
  Fiber& f = *ctx.current;
  while (f.group_end.size() - f.groups_done > static_cast<size_t>(pending_groups)) {
    for (; f.performed < f.group_end[f.groups_done]; ++f.performed) {
      const PendingCopy& c = f.copies[f.performed];
      std::memcpy(c.dst, c.src, static_cast<size_t>(c.src_bytes));
      std::memset(c.dst + c.src_bytes, 0, static_cast<size_t>(c.bytes - c.src_bytes));
      remove_pending(ctx, c);
    }
    ++f.groups_done;
  }
  if (f.performed == f.copies.size() && f.groups_done == f.group_end.size()) {
    f.copies.clear();
    f.group_end.clear();
    f.performed = f.groups_done = 0;
  }
}

void cp_async_wait_all() {
  cp_async_commit();
  cp_async_wait_group(0);
}

uint64_t smem_descriptor(const void* p, uint32_t lbo_bytes, uint32_t sbo_bytes, const char* file, int line) {
  const ThreadContext& ctx = *tls_context;
  const char* c = static_cast<const char*>(p);
  if (ctx.dynamic_lo == nullptr || c < ctx.dynamic_lo || c >= ctx.dynamic_hi)
    fail("wgmma descriptor at " + short_location(file, line) + ": the address is not in the dynamic shared memory");
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0 || lbo_bytes % 16 != 0 || sbo_bytes % 16 != 0)
    fail("wgmma descriptor at " + short_location(file, line) + ": address and offsets must be multiples of 16 bytes");
  const uint64_t field = 0x3FFF;
  return (static_cast<uint64_t>(c - ctx.dynamic_lo) >> 4 & field) | (uint64_t{lbo_bytes} >> 4 & field) << 16 |
         (uint64_t{sbo_bytes} >> 4 & field) << 32;
}

namespace {

void wgmma_m64nNk16_bf16(int n, float* d, uint64_t desc_a, uint64_t desc_b, const char* file, int line) {
  const ThreadContext& ctx = *tls_context;
  const unsigned warp = ctx.current->warp;
  const std::string what = "wgmma.mma_async.m64n" + std::to_string(n) + "k16.bf16";
  if ((warp / 4 + 1) * 128 > ctx.block_threads)
    fail(what + " at " + short_location(file, line) + ": warp " + std::to_string(warp) +
         " has no whole warpgroup of 4 warps in a block of " + std::to_string(ctx.block_threads) + " threads");
  LaneSlot& s = my_lane_slot();
  s.address = d;
  tls_wgmma_file = file;
  tls_wgmma_line = line;
  s.in[0] = warp;
  s.in[1] = static_cast<uint32_t>(desc_a), s.in[2] = static_cast<uint32_t>(desc_a >> 32);
  s.in[3] = static_cast<uint32_t>(desc_b), s.in[4] = static_cast<uint32_t>(desc_b >> 32);
  s.in[5] = static_cast<uint32_t>(n);
  warp_collective(n == 128 ? "wgmma.mma_async.m64n128k16.bf16" : "wgmma.mma_async.m64n256k16.bf16", kWholeWarp,
                  &wgmma_issue_exchange, file, line);
}

}  // namespace

void wgmma_m64n128k16_bf16(float (&d)[64], uint64_t desc_a, uint64_t desc_b, const char* file, int line) {
  wgmma_m64nNk16_bf16(128, d, desc_a, desc_b, file, line);
}
void wgmma_m64n256k16_bf16(float (&d)[128], uint64_t desc_a, uint64_t desc_b, const char* file, int line) {
  wgmma_m64nNk16_bf16(256, d, desc_a, desc_b, file, line);
}
void wgmma_commit(const char* file, int line) {
  warp_collective_with_index("wgmma.commit_group", &wgmma_commit_exchange, 0, file, line);
}
void wgmma_wait_group(int pending_groups, const char* file, int line) {
  warp_collective_with_index("wgmma.wait_group", &wgmma_wait_exchange, static_cast<uint32_t>(pending_groups), file,
                             line);
}

float tf32_round(float x) {
  uint32_t u = float_bits(x);
  if ((u & 0x7F800000u) == 0x7F800000u) return x;  // inf and NaN unchanged
  u = (u + 0x1000u) & 0xFFFFE000u;
  return bits_float(u);
}

}  // namespace fusegrad::cuda::ptx
