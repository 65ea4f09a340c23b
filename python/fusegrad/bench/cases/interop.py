"""Calling fusegrad's kernels from NumPy code (the card's third use): fusegrad's OpenMP threads and
NumPy's BLAS threads share the cores, and each pool's idle threads must not keep them busy.

interop/numpy_alternating times 8 pairs of (fusegrad.ops.matmul, a @ b) on 384x384 float32,
alternated, against the same 16 products run as two bursts (8 of fusegrad's, then 8 of NumPy's):
the speedup (bursts time / alternating time) is ~1.0 when neither pool spins in the other's way.
"""
from __future__ import annotations

import numpy as np

from ... import ops
from ..case import Case

N, PAIRS = 384, 8


def _case() -> Case:
    def setup():
        rng = np.random.default_rng(0)
        a, b = rng.random((N, N), dtype=np.float32), rng.random((N, N), dtype=np.float32)

        def alternating():
            for _ in range(PAIRS):
                ops.matmul(a, b)
                a @ b

        def bursts():
            for _ in range(PAIRS):
                ops.matmul(a, b)
            for _ in range(PAIRS):
                a @ b

        return alternating, {"bursts": bursts}

    return Case(f"interop/numpy_alternating/{N}", "interop", "cpu", "GFLOP/s", 2 * PAIRS * 2.0 * N**3, setup,
                limit="fma_GFLOPs", note="speedup = bursts / alternating; 1.0 means no interference")


def cases():
    return [_case()]
