#include "common/isa.h"

#include <stdexcept>

#if FG_X86
#include <cpuid.h>
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
#else
Isa detect() { return Isa::generic; }
#endif

Isa g_active = best_supported_isa();

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

}  // namespace fusegrad
