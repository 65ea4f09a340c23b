// How the C library's allocator treats the large, short-lived arrays of a training step.
#pragma once

namespace fusegrad {

// A training step frees and reallocates the same multi-megabyte activations and gradients every
// iteration. glibc serves each of them with a fresh mmap (and unmaps it on free), so every step
// page-faults its whole working set again; on the MNIST CNN at batch 128 that was a third of the
// step. Raising the mmap threshold to glibc's maximum and the trim threshold well above a step's
// working set lets freed blocks be reused while still warm. Returns false where the C library
// has no such knobs (not glibc), leaving the allocator as it was.
bool keep_freed_memory_for_reuse();

}  // namespace fusegrad
