"""The machine's own limits, measured by the suite so each result can say how close it comes.

- copy_GBps: a streaming copy of 64 MiB with all threads, counting bytes read plus written; the
  best of fusegrad's threaded copy kernel and NumPy's copyto, so the limit is what this machine
  demonstrably does, not what one implementation manages.
- fma_GFLOPs: independent FMA chains on every thread at the active ISA level (float32).
- On a GPU: cuda_copy_GBps (device-to-device copy of 1 GiB, read + write) and cublas_fp32_TFLOPs
  (CuPy's SGEMM at 8192^3), plus cublas_bf16_TFLOPs when PyTorch is there.

A limit is only as good as the quietest moment it was measured in, and the machine is shared. So
each limit has a probe (one measurement, itself the best of a few short rounds); at start-up every
probe runs PROBES_AT_START times, the probes taking turns so they spread over time, and the best
counts. A case that runs faster than a limit proves the limit was measured on a busy machine: the
limit is probed again, up to REPROBES times, until the case no longer beats it. If it still does
(a case that runs from cache beats a DRAM bandwidth), the fraction is capped at 1 and flagged.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from .. import _cpu

PROBES_AT_START = 3
REPROBES = 3


class Limits:
    """The best value each probe has shown so far; `fraction` compares a case with it.

    probes: {name: () -> value}; a higher value is a better measurement (throughputs)."""

    def __init__(self, probes: dict[str, Callable[[], float]], probes_at_start: int = PROBES_AT_START,
                 reprobes: int = REPROBES):
        self.probes, self.reprobes = dict(probes), reprobes
        self.values: dict[str, float] = {}
        self.reprobed: list[dict] = []  # {"limit", "before", "after"} for every re-probe that raised a limit
        for _ in range(probes_at_start):
            for name in self.probes:
                self._probe(name)

    def _probe(self, name: str) -> float:
        value = float(self.probes[name]())
        self.values[name] = max(value, self.values.get(name, 0.0))
        return self.values[name]

    def fraction(self, name: str, demand: float, reprobe: bool = True) -> tuple[float, bool]:
        """(demand / limit, capped): `demand` is a case's throughput in the limit's own units.
        Beating the limit re-probes it first (unless reprobe=False); a fraction above 1 after
        that is capped at 1 and capped is True."""
        if reprobe:
            before = self.values[name]
            for _ in range(self.reprobes):
                if demand <= self.values[name]:
                    break
                self._probe(name)
            if self.values[name] > before:
                self.reprobed.append({"limit": name, "before": round(before, 3), "after": round(self.values[name], 3)})
        limit = self.values[name]
        if demand > limit:
            return 1.0, True
        return demand / limit, False

    def as_dict(self, digits: int = 2) -> dict:
        return {name: round(value, digits) for name, value in self.values.items()}


def _best_time(fn, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def cpu_probes() -> dict:
    """Probes of copy_GBps and fma_GFLOPs."""
    n = 16 << 20
    src = np.random.default_rng(0).standard_normal(n, dtype=np.float32)
    dst = np.empty_like(src)
    dst.fill(0)

    def copy_gbps():
        ours = _best_time(lambda: _cpu.activation_forward(0, src, dst, 0.0), 8)
        numpys = _best_time(lambda: np.copyto(dst, src), 8)
        return 2 * src.nbytes / min(ours, numpys) / 1e9

    # Many short rounds rather than a few long ones: the best round is the one no other process
    # touched, and a shared machine rarely leaves both cores alone for long.
    iterations = 500_000
    _cpu.probe_fma_peak(iterations)  # warm: clocks up, code paged in

    def fma_gflops():
        flops = {}

        def one():
            flops["n"] = _cpu.probe_fma_peak(iterations)

        seconds = _best_time(one, 15)
        return flops["n"] / seconds / 1e9

    return {"copy_GBps": copy_gbps, "fma_GFLOPs": fma_gflops}


def cuda_probes() -> dict:
    """Probes of cuda_copy_GBps, cublas_fp32_TFLOPs and (with PyTorch on CUDA) cublas_bf16_TFLOPs.
    Each allocates its own arrays and drops them, so nothing stays held while the cases run."""
    import cupy as cp

    from .timer import measure

    n = 8192

    def copy_gbps():
        src = cp.ones(1 << 28, dtype=cp.float32)  # 1 GiB
        dst = cp.empty_like(src)
        t = measure({"copy": lambda: cp.copyto(dst, src)}, device="cuda", repeat=10)["copy"].min_s
        return 2 * src.nbytes / t / 1e9

    def sgemm_tflops():
        a = cp.random.standard_normal((n, n), dtype=cp.float32)
        b = cp.random.standard_normal((n, n), dtype=cp.float32)
        return 2 * n**3 / measure({"sgemm": lambda: a @ b}, device="cuda", repeat=5)["sgemm"].min_s / 1e12

    probes = {"cuda_copy_GBps": copy_gbps, "cublas_fp32_TFLOPs": sgemm_tflops}
    try:
        import torch

        if torch.cuda.is_available():
            def bf16_tflops():
                ta = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
                tb = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
                return 2 * n**3 / measure({"bf16": lambda: ta @ tb}, device="cuda", repeat=5)["bf16"].min_s / 1e12

            probes["cublas_bf16_TFLOPs"] = bf16_tflops
    except ImportError:  # PyTorch absent: that limit is not reported
        pass
    return probes


def cpu_limits() -> dict:
    """{"copy_GBps", "fma_GFLOPs"}: the start-up measurement on its own."""
    return Limits(cpu_probes()).as_dict()


def cuda_limits() -> dict:
    return Limits(cuda_probes()).as_dict()
