"""Interleaved timing of a fusegrad call and its baselines.

Each round times every candidate once, in turn, so that a slow spell of the machine (another
process, a frequency change) hits all of them alike; the minimum over rounds is the figure of
merit on a shared machine (noise only ever adds time) and the median shows the spread. A sample
runs the call `number` times back to back so that a sample lasts long enough to time well.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass


@dataclass
class Timing:
    min_s: float
    median_s: float
    samples: int


SAMPLE_S = 0.005  # a sample lasts at least this long: far above timer resolution and call overhead
CASE_BUDGET_S = 3.0  # time to spend on one case, all candidates together, once warm


class CpuClock:
    def sample(self, fn, number: int) -> float:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        return (time.perf_counter() - t0) / number


class CudaClock:
    """CUDA events on the current stream, after a synchronize (DESIGN.md, Benchmarks)."""

    def __init__(self):
        import cupy

        self.cupy = cupy
        self.start = cupy.cuda.Event()
        self.end = cupy.cuda.Event()

    def sample(self, fn, number: int) -> float:
        self.cupy.cuda.get_current_stream().synchronize()
        self.start.record()
        for _ in range(number):
            fn()
        self.end.record()
        self.end.synchronize()
        return self.cupy.cuda.get_elapsed_time(self.start, self.end) / 1e3 / number


def measure(candidates: dict, *, device: str = "cpu", repeat: int | None = None,
            budget_s: float = CASE_BUDGET_S, settle_s: float = 0.0) -> dict:
    """{name: Timing} for zero-argument callables, timed interleaved.

    settle_s: before each sample, run the candidate untimed for this long. For baselines whose
    libraries keep worker threads spinning after a call (OpenBLAS spins about 70 ms by default):
    without it the next candidate's threads share cores with those spinners and run at half speed
    on a 2-core machine. (Running rather than sleeping keeps the clocks and the caches warm.)
    """
    clock = CudaClock() if device == "cuda" else CpuClock()
    number, single = {}, {}
    for name, fn in candidates.items():  # warm-up: caches, page faults, lazy initialisation
        clock.sample(fn, 1)
        t = clock.sample(fn, 1)
        number[name] = max(1, int(SAMPLE_S / max(t, 1e-9)))
        single[name] = t * number[name]
    if repeat is None:
        per_round = sum(single.values())
        per_round += settle_s * len(candidates)
        repeat = int(min(30, max(5, budget_s / max(per_round, 1e-9))))
    samples = {name: [] for name in candidates}
    for _ in range(repeat):
        for name, fn in candidates.items():
            if settle_s:
                end = time.perf_counter() + settle_s
                while time.perf_counter() < end:
                    fn()
            samples[name].append(clock.sample(fn, number[name]))
    return {n: Timing(min(s), statistics.median(s), len(s)) for n, s in samples.items()}
