"""The benchmark suite: `python -m fusegrad bench [--filter PATTERN] [--json FILE]`.

Every case times the fusegrad call beside its baselines (NumPy always; PyTorch and CuPy when
importable) interleaved in one run, and reports throughput, the speedup over each baseline
(baseline time / fusegrad time, above 1 means fusegrad is faster) and the fraction of the machine
limit measured at start-up (re-measured when a case beats it; see limits.py). Figures are computed
from the minimum time over rounds.
"""
from __future__ import annotations

import contextlib
import json
import sys

from .. import _cpu, cuda
from .case import Case
from .cases import all_cases
from .limits import Limits, cpu_probes, cuda_probes
from .machine import describe
from .timer import measure

__all__ = ["Case", "all_cases", "run", "main"]

# Units counted in billions per second (int8 cases count integer operations in GOP/s).
GIGA_UNITS = ("GFLOP/s", "GOP/s", "GB/s")


def _gpu_ready() -> bool:
    try:
        import cupy  # noqa: F401
    except ImportError:
        return False
    return cuda.is_available()


def select(cases, pattern: str = "", device: str = "all"):
    """Cases whose name contains any of the comma-separated parts of `pattern`."""
    parts = [p.strip() for p in pattern.split(",") if p.strip()]
    return [c for c in cases if (not parts or any(p in c.name for p in parts))
            and (device == "all" or c.device == device)]


@contextlib.contextmanager
def thread_count(n: int | None):
    """Runs fusegrad, PyTorch and NumPy's BLAS at n threads for the block (None: unchanged)."""
    if n is None:
        yield
        return
    saved = _cpu.get_num_threads()
    torch = sys.modules.get("torch")
    # Read before changing ours: torch may share fusegrad's OpenMP runtime, and then it would
    # report (and later restore) our temporary count instead of the original.
    torch_saved = torch.get_num_threads() if torch else None
    _cpu.set_num_threads(n)
    if torch:
        torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        blas = threadpool_limits(limits=n, user_api="blas")
    except ImportError:
        blas = None
    try:
        yield
    finally:
        # threadpoolctl restores every pool it saw (OpenMP included) to what it found, which
        # was already our temporary count; so it goes first and ours are restored after it.
        if blas is not None:
            blas.restore_original_limits()
        _cpu.set_num_threads(saved)
        if torch:
            torch.set_num_threads(torch_saved)


def limit_demand(case: Case, throughput: float, threads_at_limit: int) -> float:
    """A case's throughput (G.../s) in the units of its limit, as a demand on the whole machine:
    a case pinned to one thread is held to one core's share of the FMA peak."""
    demand = throughput / (1e3 if case.limit.endswith("TFLOPs") else 1.0)
    if case.threads == 1 and case.limit == "fma_GFLOPs":
        demand *= max(1, threads_at_limit)
    return demand


def set_fraction(result: dict, case: Case, limits: Limits | None, threads_at_limit: int, reprobe: bool = True):
    """Fills result["fraction_of_limit"] (capped at 1, with "fraction_capped") from the case's
    throughput; a case faster than its limit has the limit re-probed first (reprobe=True)."""
    if not case.limit or limits is None or case.limit not in limits.values:
        return
    throughput = case.work / result["fusegrad"]["min_s"] / (1e9 if case.unit in GIGA_UNITS else 1.0)
    fraction, capped = limits.fraction(case.limit, limit_demand(case, throughput, threads_at_limit), reprobe)
    result["fraction_of_limit"] = round(fraction, 3)
    result["limit"] = case.limit
    result.pop("fraction_capped", None)
    if capped:
        result["fraction_capped"] = True


def run_case(case: Case, limits: Limits | None, repeat: int | None = None,
             threads_at_limit: int | None = None) -> dict:
    """Times one case; its result. limits: the machine's (None: no fraction); threads_at_limit:
    the thread count the limits were measured at (default: the current one)."""
    with thread_count(case.threads):
        fusegrad_fn, baselines = case.setup()
        timings = measure({"fusegrad": fusegrad_fn, **baselines}, device=case.device, repeat=repeat,
                          settle_s=case.settle_s)
    scale = 1e9 if case.unit in GIGA_UNITS else 1.0
    ours = timings.pop("fusegrad")
    result = {
        "name": case.name, "family": case.family, "device": case.device, "unit": case.unit,
        "work": case.work, "threads": case.threads or _cpu.get_num_threads(),
        "fusegrad": {"min_s": ours.min_s, "median_s": ours.median_s,
                     "throughput": round(case.work / ours.min_s / scale, 3)},
        "baselines": {
            name: {"min_s": t.min_s, "median_s": t.median_s,
                   "throughput": round(case.work / t.min_s / scale, 3),
                   "speedup": round(t.min_s / ours.min_s, 3)}
            for name, t in timings.items()
        },
        "fraction_of_limit": None,
    }
    set_fraction(result, case, limits, _cpu.get_num_threads() if threads_at_limit is None else threads_at_limit)
    if case.note:
        result["note"] = case.note
    return result


def format_row(r: dict) -> str:
    f = r["fusegrad"]
    frac = "      -"
    if r["fraction_of_limit"] is not None:
        frac = f"{100 * r['fraction_of_limit']:5.1f}%" + ("*" if r.get("fraction_capped") else " ")
    vs = "  ".join(f"{name} {b['speedup']:.2f}x" for name, b in r["baselines"].items())
    return (f"{r['name']:<44} {r['device']:<4} {f['min_s'] * 1e3:9.3f} ms {f['median_s'] * 1e3:9.3f} ms "
            f"{f['throughput']:9.1f} {r['unit']:<9} {frac} {vs}")


HEADER = (f"{'case':<44} {'dev':<4} {'min':>12} {'median':>12} {'throughput':>19} {'limit':>6}  "
          "speedup vs baselines (baseline time / fusegrad time)")
CAPPED_NOTE = ("* faster than the measured limit even after measuring it again (it ran from cache, or the "
               "machine was busy while the limit was measured): shown as 100%")


def run(pattern: str = "", json_path: str | None = None, device: str = "all",
        repeat: int | None = None, out=sys.stdout) -> dict:
    gpu = _gpu_ready()
    selected = select(all_cases(), pattern, device)
    cases = [c for c in selected if c.device == "cpu" or gpu]
    machine = describe()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in machine.items() if v is not None), file=out)
    if len(cases) < len(selected):
        print(f"no usable GPU: {len(selected) - len(cases)} cuda cases skipped", file=out)
    threads = _cpu.get_num_threads()
    probes = {}
    if any(c.device == "cpu" for c in cases):
        probes.update(cpu_probes())
    if gpu and any(c.device == "cuda" for c in cases):
        probes.update(cuda_probes())
    limits = Limits(probes)
    print("limits:  " + ", ".join(f"{k}={v}" for k, v in {"threads": threads, **limits.as_dict()}.items()),
          file=out)
    print(HEADER, file=out, flush=True)
    results = []
    for case in cases:
        reprobes_before = len(limits.reprobed)
        r = run_case(case, limits, repeat, threads_at_limit=threads)
        results.append((case, r))
        print(format_row(r), file=out, flush=True)
        for change in limits.reprobed[reprobes_before:]:
            print(f"  {change['limit']} measured again after this case: {change['before']:.2f} -> "
                  f"{change['after']:.2f} (the JSON's fractions use the final limits)", file=out, flush=True)
    for case, r in results:  # against the final limits, which only ever rose
        set_fraction(r, case, limits, threads, reprobe=False)
    if any(r.get("fraction_capped") for _, r in results):
        print(CAPPED_NOTE, file=out)
    report = {"machine": machine, "limits": {"threads": threads, **limits.as_dict()},
              "limits_measured_again": limits.reprobed, "cases": [r for _, r in results]}
    if json_path:
        with open(json_path, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {json_path}", file=out)
    return report


def main(args) -> int:
    if args.list:
        for c in select(all_cases(), args.filter, args.device):
            print(f"{c.name:<48} {c.family:<10} {c.device}")
        return 0
    if not select(all_cases(), args.filter, args.device):
        print(f"no benchmark case matches {args.filter!r}", file=sys.stderr)
        return 2
    if args.device == "cuda" and not _gpu_ready():
        print("bench --device cuda: no usable GPU here (fusegrad.cuda.is_available() is False, or CuPy is not "
              "installed: pip install \".[cuda]\")", file=sys.stderr)
        return 1
    run(args.filter, args.json, args.device, args.repeat)
    return 0
