// CPU feature detection and per-ISA kernel dispatch.
//
// Every kernel family is compiled once per ISA level (see CMakeLists.txt); each copy defines a
// table of function pointers named <family>_kernels in namespace fusegrad::isa_<level>. The
// family's dispatcher picks the table of the active level with select_for_isa(). The level is
// chosen once, at import: the best one the CPU *and* the OS support, or FUSEGRAD_ISA.
#pragma once
#include <string>

namespace fusegrad {

enum class Isa : int { generic = 0, avx2 = 1, avx512 = 2 };

Isa best_supported_isa();          // cpuid + xgetbv
bool isa_supported(Isa isa);
Isa active_isa();
void set_active_isa(Isa isa);      // throws std::invalid_argument if unsupported
const char* isa_name(Isa isa);
Isa isa_from_name(const std::string& name);  // throws std::invalid_argument on unknown names

// Extensions of the avx512 level used only by the low-precision kernels (int8 and bf16 in gemm and
// conv), which pick their best path per call from these rather than being compiled per level:
// the files that use them are compiled once, with their own flags (CMakeLists.txt). A feature is
// usable when the CPU and OS support it (AMX also needs the kernel's permission, requested once
// through arch_prctl), the active level is avx512, and it has not been switched off; tests switch
// the faster ones off to cover every path the machine has, and FUSEGRAD_DISABLE_CPU_FEATURES
// (comma-separated names) does it at import.
enum class CpuFeature : int { avx512_vnni = 0, avx512_bf16 = 1, amx_int8 = 2, amx_bf16 = 3 };
constexpr int kCpuFeatureCount = 4;

bool cpu_feature_supported(CpuFeature feature);
bool cpu_feature_usable(CpuFeature feature);
void set_cpu_feature_enabled(CpuFeature feature, bool enabled);  // throws if enabling an unsupported one
const char* cpu_feature_name(CpuFeature feature);
CpuFeature cpu_feature_from_name(const std::string& name);       // throws std::invalid_argument

// Picks one of three tables. On builds for non-x86 machines only the generic table exists, and
// callers pass it three times (FG_X86 = 0).
template <class Table>
const Table& select_for_isa(const Table& generic, const Table& avx2, const Table& avx512) {
  switch (active_isa()) {
    case Isa::avx512: return avx512;
    case Isa::avx2: return avx2;
    default: return generic;
  }
}

}  // namespace fusegrad

// Declares `extern const Type name` in each ISA namespace, and defines an inline accessor
// `const Type& name()` in namespace fusegrad that returns the active level's table.
#if FG_X86
#define FG_DECLARE_KERNEL_TABLE(Type, name)                                        \
  namespace isa_generic { extern const Type name; }                                \
  namespace isa_avx2 { extern const Type name; }                                   \
  namespace isa_avx512 { extern const Type name; }                                 \
  inline const Type& active_##name() {                                             \
    return select_for_isa(isa_generic::name, isa_avx2::name, isa_avx512::name);   \
  }
#else
#define FG_DECLARE_KERNEL_TABLE(Type, name)                                        \
  namespace isa_generic { extern const Type name; }                                \
  inline const Type& active_##name() { return isa_generic::name; }
#endif
