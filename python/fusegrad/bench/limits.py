"""The machine's own limits, measured at start-up so each result can say how close it comes.

- copy_GBps: a streaming copy of 64 MiB with all threads, counting bytes read plus written; the
  best of fusegrad's threaded copy kernel and NumPy's copyto, so the limit is what this machine
  demonstrably does, not what one implementation manages.
- fma_GFLOPs: independent FMA chains on every thread at the active ISA level (float32).
A fraction of a limit above 100% means the case ran from cache (the limits are DRAM and FMA).
- On a GPU: cuda_copy_GBps (device-to-device copy of 1 GiB, read + write) and cublas_fp32_TFLOPs
  (CuPy's SGEMM at 8192^3), plus cublas_bf16_TFLOPs when PyTorch is there.
"""
from __future__ import annotations

import time

import numpy as np

from .. import _cpu


def _best_of(fn, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def cpu_limits() -> dict:
    n = 16 << 20
    src = np.random.default_rng(0).standard_normal(n, dtype=np.float32)
    dst = np.empty_like(src)
    dst.fill(0)
    ours = _best_of(lambda: _cpu.activation_forward(0, src, dst, 0.0), 20)
    numpys = _best_of(lambda: np.copyto(dst, src), 20)
    copy_gbps = 2 * src.nbytes / min(ours, numpys) / 1e9

    # Many short rounds rather than a few long ones: the best round is the one no other process
    # touched, and a shared machine rarely leaves both cores alone for long.
    iterations = 500_000
    _cpu.probe_fma_peak(iterations)
    flops = {}

    def run():
        flops["n"] = _cpu.probe_fma_peak(iterations)

    t = _best_of(run, 40)
    return {"copy_GBps": round(copy_gbps, 2), "fma_GFLOPs": round(flops["n"] / t / 1e9, 1)}


def cuda_limits() -> dict:
    import cupy as cp

    from .timer import measure

    src = cp.ones(1 << 28, dtype=cp.float32)  # 1 GiB
    dst = cp.empty_like(src)
    t = measure({"copy": lambda: cp.copyto(dst, src)}, device="cuda", repeat=10)["copy"].min_s
    limits = {"cuda_copy_GBps": round(2 * src.nbytes / t / 1e9, 1)}
    del src, dst
    n = 8192
    a = cp.random.standard_normal((n, n), dtype=cp.float32)
    b = cp.random.standard_normal((n, n), dtype=cp.float32)
    t = measure({"sgemm": lambda: a @ b}, device="cuda", repeat=5)["sgemm"].min_s
    limits["cublas_fp32_TFLOPs"] = round(2 * n**3 / t / 1e12, 1)
    try:
        import torch

        ta = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        tb = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        t = measure({"bf16": lambda: ta @ tb}, device="cuda", repeat=5)["bf16"].min_s
        limits["cublas_bf16_TFLOPs"] = round(2 * n**3 / t / 1e12, 1)
    except Exception:  # noqa: BLE001 - PyTorch absent or without CUDA: that limit is not reported
        pass
    return limits
