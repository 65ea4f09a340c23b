// Thread control. OpenMP does the work; these helpers keep small problems on one thread, since
// waking a second thread costs a few microseconds, more than a small kernel runs.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>

#if defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>
#endif

namespace fusegrad {

void set_num_threads(int n);   // n >= 1, checked by the binding
int get_num_threads();

// Subnormal floats (|x| < 1.2e-38) take a microcode assist on x86 for every operation that reads
// or produces one, tens of times slower than a normal one: Adam's running averages of small
// gradients drift into that range and doubled an MLP's training step after ~750 steps. While a
// kernel runs, every thread that runs it (the caller and the OpenMP workers) flushes subnormal
// results to zero (FTZ) and reads subnormal inputs as zero (DAZ), as GPUs and most BLAS kernels
// do; the thread's previous mode is restored afterwards. set_flush_denormals(false) (Python:
// fusegrad.set_flush_denormal, or FUSEGRAD_FLUSH_DENORMALS=0) keeps IEEE subnormals.
void set_flush_denormals(bool on);
bool flush_denormals();

class DenormalsAreZero {
 public:
#if defined(__x86_64__) || defined(_M_X64)
  DenormalsAreZero() : saved_(_mm_getcsr()) {
    if (flush_denormals()) _mm_setcsr(saved_ | kFtzDaz);
  }
  ~DenormalsAreZero() { _mm_setcsr(saved_); }

 private:
  static constexpr unsigned kFtzDaz = 0x8040;  // MXCSR bits 15 (flush to zero) and 6 (denormals are zero)
  unsigned saved_;
#else
  DenormalsAreZero() {}
#endif
  DenormalsAreZero(const DenormalsAreZero&) = delete;
  DenormalsAreZero& operator=(const DenormalsAreZero&) = delete;
};

// Calls body(begin, end) over [0, n) in contiguous chunks of at least `grain` items, one chunk
// per thread; runs inline when there is less than two grains of work.
template <class Body>
void parallel_for(int64_t n, int64_t grain, Body&& body) {
  if (n <= 0) return;
  const int64_t max_chunks = std::max<int64_t>(1, n / std::max<int64_t>(grain, 1));
  const int threads = static_cast<int>(std::min<int64_t>(get_num_threads(), max_chunks));
  if (threads <= 1) {
    body(int64_t(0), n);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const DenormalsAreZero mode;
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t begin = n * t / nt, end = n * (t + 1) / nt;
    if (begin < end) body(begin, end);
  }
}

// Calls body(tid) for tid in [0, n) on n threads (inline when n <= 1): for kernels that split
// their work by hand, e.g. into per-thread partial sums.
template <class Body>
void run_on_threads(int n, Body&& body) {
  if (n <= 1) {
    body(0);
    return;
  }
#pragma omp parallel num_threads(n)
  {
    const DenormalsAreZero mode;
    body(omp_get_thread_num());
  }
}

}  // namespace fusegrad
