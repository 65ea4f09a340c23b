// Shared memory in the emulator: every access through a declared name is bounds-checked.
//
//   FG_SHARED(float, tile, [32][33]);  ->  a SharedArray<float[32][33]>: tile[i][j] checks i and j
//   FG_DYNAMIC_SHARED(float, smem);    ->  a SharedSpan<float> over the launch's dynamic shared
//                                          memory: smem[i], (smem + k)[i] check the byte range
//   shared_as<float4>(tile or smem)    ->  a SharedSpan<float4> over the same bytes
//
// Both convert implicitly to raw pointers, so they can be passed where CUDA code passes T*; a raw
// pointer is checked only against running off the end of the array (a guard page follows each
// static array and the dynamic region, see shared_memory.cpp). Static arrays are per OS thread
// (`static thread_local`), which is per block because a block's fibers share one OS thread and a
// block finishes before its thread starts the next. Both are filled with 0xFF bytes (NaN floats)
// when a block starts, so a read of never-written shared memory shows up as NaN.
//
// An access also fails while a cp.async into those bytes is still pending (issued but not yet
// completed by cp.async.wait_group), which is how a read before the wait is caught.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

#include "common/emulator/keywords.h"

namespace fusegrad::cuda::emulator {

// Nonzero while the running block has cp.async copies in flight (set by ptx.cpp).
extern FG_EMU_THREAD_LOCAL int tls_pending_copies;

void* allocate_static_shared(size_t bytes, const char* name, const std::string& shape);
void release_static_shared(void* data);
[[noreturn]] void shared_index_error(const void* array, long long index, long long extent, int dimension);
[[noreturn]] void span_index_error(const void* lo, const void* hi, intptr_t at, size_t element_bytes);
[[noreturn]] void misaligned_view_error(const void* p, size_t alignment);
void check_no_pending_copy(const void* p, size_t bytes);
struct DynamicShared {
  char* lo;
  char* hi;
};
DynamicShared dynamic_shared_region(const char* name);

inline void check_shared_access(const void* p, size_t bytes) {
  if (__builtin_expect(tls_pending_copies != 0, 0)) check_no_pending_copy(p, bytes);
}

template <class A>
std::string shape_of() {
  if constexpr (std::is_array_v<A>)
    return "[" + std::to_string(std::extent_v<A>) + "]" + shape_of<std::remove_extent_t<A>>();
  else
    return "";
}

template <class I>
using IfIndex = std::enable_if_t<std::is_integral_v<I> || std::is_enum_v<I>, int>;

// The sub-array A (dimension `Dim` of its declaration) at p: indexing checks the first extent.
template <class A, int Dim>
class SharedSlice {
  using Row = std::remove_extent_t<A>;
  static constexpr long long kExtent = static_cast<long long>(std::extent_v<A>);

 public:
  explicit SharedSlice(A* p) : p_(p) {}
  template <class I, IfIndex<I> = 0>
  decltype(auto) operator[](I i) const {
    const long long k = static_cast<long long>(i);
    if (k < 0 || k >= kExtent)
      shared_index_error(p_, k, kExtent, Dim);
    if constexpr (std::is_array_v<Row>) {
      return SharedSlice<Row, Dim + 1>(&(*p_)[k]);
    } else {
      Row& e = (*p_)[k];
      check_shared_access(&e, sizeof(Row));
      return static_cast<Row&>(e);
    }
  }
  operator Row*() const { return *p_; }
  A* data() const { return p_; }

 private:
  A* p_;
};

// A static __shared__ array of type A (e.g. float[32][33]) in checked, guarded storage.
template <class A>
class SharedArray {
  static_assert(std::is_array_v<A>, "FG_SHARED(T, name, dims): dims must be one or more [extent]");
  using Row = std::remove_extent_t<A>;

 public:
  explicit SharedArray(const char* name)
      : data_(static_cast<A*>(allocate_static_shared(sizeof(A), name, shape_of<A>()))) {}
  ~SharedArray() { release_static_shared(data_); }
  SharedArray(const SharedArray&) = delete;
  SharedArray& operator=(const SharedArray&) = delete;

  template <class I, IfIndex<I> = 0>
  decltype(auto) operator[](I i) const { return SharedSlice<A, 1>(data_)[i]; }
  operator Row*() const { return *data_; }
  A* data() const { return data_; }

 private:
  A* data_;
};

// A pointer into shared memory that knows the byte range [lo, hi) it may touch.
template <class T>
class SharedSpan {
 public:
  SharedSpan(T* p, const void* lo, const void* hi)
      : p_(reinterpret_cast<intptr_t>(p)), lo_(reinterpret_cast<intptr_t>(lo)), hi_(reinterpret_cast<intptr_t>(hi)) {}
  template <class U, class = std::enable_if_t<std::is_convertible_v<U*, T*>>>
  SharedSpan(const SharedSpan<U>& o) : p_(o.address()), lo_(o.lo()), hi_(o.hi()) {}

  template <class I, IfIndex<I> = 0>
  T& operator[](I i) const {
    const intptr_t at = p_ + static_cast<intptr_t>(i) * static_cast<intptr_t>(sizeof(T));
    if (at < lo_ || at + static_cast<intptr_t>(sizeof(T)) > hi_) span_index_error(reinterpret_cast<void*>(lo_), reinterpret_cast<void*>(hi_), at, sizeof(T));
    check_shared_access(reinterpret_cast<void*>(at), sizeof(T));
    return *reinterpret_cast<T*>(at);
  }
  T& operator*() const { return (*this)[0]; }
  T* operator->() const { return &(*this)[0]; }
  operator T*() const { return reinterpret_cast<T*>(p_); }

  template <class I, IfIndex<I> = 0>
  SharedSpan operator+(I k) const { return moved(static_cast<intptr_t>(k)); }
  template <class I, IfIndex<I> = 0>
  SharedSpan operator-(I k) const { return moved(-static_cast<intptr_t>(k)); }
  template <class I, IfIndex<I> = 0>
  SharedSpan& operator+=(I k) { p_ += static_cast<intptr_t>(k) * static_cast<intptr_t>(sizeof(T)); return *this; }
  template <class I, IfIndex<I> = 0>
  SharedSpan& operator-=(I k) { p_ -= static_cast<intptr_t>(k) * static_cast<intptr_t>(sizeof(T)); return *this; }
  SharedSpan& operator++() { p_ += sizeof(T); return *this; }
  SharedSpan& operator--() { p_ -= sizeof(T); return *this; }
  friend ptrdiff_t operator-(const SharedSpan& a, const SharedSpan& b) { return (a.p_ - b.p_) / static_cast<intptr_t>(sizeof(T)); }

  intptr_t address() const { return p_; }
  intptr_t lo() const { return lo_; }
  intptr_t hi() const { return hi_; }

 private:
  SharedSpan moved(intptr_t k) const {
    SharedSpan s = *this;
    s.p_ += k * static_cast<intptr_t>(sizeof(T));
    return s;
  }
  intptr_t p_, lo_, hi_;
};

template <class T>
SharedSpan<T> dynamic_shared(const char* name) {
  const DynamicShared d = dynamic_shared_region(name);
  return SharedSpan<T>(reinterpret_cast<T*>(d.lo), d.lo, d.hi);
}

// shared_as<U>(x): the same shared bytes viewed as U, still checked.
template <class U>
SharedSpan<U> span_view(intptr_t p, intptr_t lo, intptr_t hi) {
  if (p % static_cast<intptr_t>(alignof(U)) != 0) misaligned_view_error(reinterpret_cast<void*>(p), alignof(U));
  return SharedSpan<U>(reinterpret_cast<U*>(p), reinterpret_cast<void*>(lo), reinterpret_cast<void*>(hi));
}
template <class U, class T>
SharedSpan<U> shared_as(const SharedSpan<T>& s) { return span_view<U>(s.address(), s.lo(), s.hi()); }
template <class U, class A>
SharedSpan<U> shared_as(const SharedArray<A>& a) {
  const intptr_t p = reinterpret_cast<intptr_t>(a.data());
  return span_view<U>(p, p, p + static_cast<intptr_t>(sizeof(A)));
}
template <class U, class A, int D>
SharedSpan<U> shared_as(const SharedSlice<A, D>& s) {
  const intptr_t p = reinterpret_cast<intptr_t>(s.data());
  return span_view<U>(p, p, p + static_cast<intptr_t>(sizeof(A)));
}
template <class U, class T>
U* shared_as(T* p) { return reinterpret_cast<U*>(p); }

}  // namespace fusegrad::cuda::emulator

namespace fusegrad::cuda {
using emulator::shared_as;
}

#define FG_SHARED(T, name, dims) static thread_local ::fusegrad::cuda::emulator::SharedArray<T dims> name{#name}
#define FG_DYNAMIC_SHARED(T, name) \
  const ::fusegrad::cuda::emulator::SharedSpan<T> name = ::fusegrad::cuda::emulator::dynamic_shared<T>(#name)
