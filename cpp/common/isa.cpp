#include "common/isa.h"

#include <array>
#include <stdexcept>

#include <atomic>

#if FG_X86
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>
#endif

namespace fusegrad {
namespace {

#if FG_X86
uint64_t read_xcr0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (uint64_t(edx) << 32) | eax;
}

Isa detect() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return Isa::generic;
  const bool osxsave = c & (1u << 27), avx = c & (1u << 28), fma = c & (1u << 12);
  if (!osxsave || !avx) return Isa::generic;
  const uint64_t xcr0 = read_xcr0();
  const bool os_saves_ymm = (xcr0 & 0x6) == 0x6;            // SSE + AVX state
  const bool os_saves_zmm = (xcr0 & 0xe6) == 0xe6;          // + opmask, ZMM_Hi256, Hi16_ZMM
  if (!os_saves_ymm || !__get_cpuid_count(7, 0, &a, &b, &c, &d)) return Isa::generic;
  const bool avx2 = b & (1u << 5);
  const bool avx512 = (b & (1u << 16)) && (b & (1u << 17)) && (b & (1u << 30)) && (b & (1u << 31));
  if (avx512 && avx2 && fma && os_saves_zmm) return Isa::avx512;  // F, DQ, BW, VL
  if (avx2 && fma) return Isa::avx2;
  return Isa::generic;
}

// Linux hands out the AMX tile state only to processes that ask (arch_prctl ARCH_REQ_XCOMP_PERM
// for XFEATURE_XTILEDATA); without it the first tile instruction raises SIGILL.
bool request_amx_permission() {
#if defined(__linux__) && defined(SYS_arch_prctl)
  constexpr int kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

std::array<bool, kCpuFeatureCount> detect_features() {
  std::array<bool, kCpuFeatureCount> has{};
  unsigned a, b, c, d;
  if (detect() != Isa::avx512 || !__get_cpuid_count(7, 0, &a, &b, &c, &d)) return has;
  const bool amx_tile = d & (1u << 24), amx_int8 = d & (1u << 25), amx_bf16 = d & (1u << 22);
  has[int(CpuFeature::avx512_vnni)] = c & (1u << 11);
  unsigned a1 = 0, b1, c1, d1;
  if (__get_cpuid_count(7, 1, &a1, &b1, &c1, &d1)) has[int(CpuFeature::avx512_bf16)] = a1 & (1u << 5);
  const bool os_saves_tiles = (read_xcr0() & 0x60000) == 0x60000;  // XTILECFG + XTILEDATA
  if (amx_tile && os_saves_tiles && (amx_int8 || amx_bf16) && request_amx_permission()) {
    has[int(CpuFeature::amx_int8)] = amx_int8;
    has[int(CpuFeature::amx_bf16)] = amx_bf16;
  }
  return has;
}
#else
Isa detect() { return Isa::generic; }
std::array<bool, kCpuFeatureCount> detect_features() { return {}; }
#endif

Isa g_active = best_supported_isa();

const std::array<bool, kCpuFeatureCount>& supported_features() {
  static const std::array<bool, kCpuFeatureCount> has = detect_features();
  return has;
}

std::array<std::atomic<bool>, kCpuFeatureCount> g_feature_enabled{true, true, true, true};

}  // namespace

Isa best_supported_isa() {
  static const Isa best = detect();
  return best;
}

bool isa_supported(Isa isa) { return static_cast<int>(isa) <= static_cast<int>(best_supported_isa()); }

Isa active_isa() { return g_active; }

void set_active_isa(Isa isa) {
  if (!isa_supported(isa))
    throw std::invalid_argument(std::string("ISA level '") + isa_name(isa) +
                                "' is not supported by this CPU/OS (best supported: '" +
                                isa_name(best_supported_isa()) + "')");
  g_active = isa;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "generic";
  }
}

Isa isa_from_name(const std::string& name) {
  if (name == "generic") return Isa::generic;
  if (name == "avx2") return Isa::avx2;
  if (name == "avx512") return Isa::avx512;
  throw std::invalid_argument("unknown ISA level '" + name + "'; expected generic, avx2 or avx512");
}

bool cpu_feature_supported(CpuFeature feature) { return supported_features()[int(feature)]; }

bool cpu_feature_usable(CpuFeature feature) {
  return active_isa() == Isa::avx512 && supported_features()[int(feature)] &&
         g_feature_enabled[int(feature)].load(std::memory_order_relaxed);
}

void set_cpu_feature_enabled(CpuFeature feature, bool enabled) {
  if (enabled && !cpu_feature_supported(feature))
    throw std::invalid_argument(std::string("CPU feature '") + cpu_feature_name(feature) +
                                "' is not supported by this CPU/OS");
  g_feature_enabled[int(feature)].store(enabled, std::memory_order_relaxed);
}

const char* cpu_feature_name(CpuFeature feature) {
  switch (feature) {
    case CpuFeature::avx512_vnni: return "avx512_vnni";
    case CpuFeature::avx512_bf16: return "avx512_bf16";
    case CpuFeature::amx_int8: return "amx_int8";
    default: return "amx_bf16";
  }
}

CpuFeature cpu_feature_from_name(const std::string& name) {
  for (int i = 0; i < kCpuFeatureCount; ++i)
    if (name == cpu_feature_name(CpuFeature(i))) return CpuFeature(i);
  throw std::invalid_argument("unknown CPU feature '" + name +
                              "'; expected avx512_vnni, avx512_bf16, amx_int8 or amx_bf16");
}

}  // namespace fusegrad
