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
