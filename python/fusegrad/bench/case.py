"""What a benchmark case is.

A case names the work (shapes, layout, dtype), how much of it one call does, and a `setup`
that allocates the inputs and returns the fusegrad call and its baselines as zero-argument
callables. Setup runs only when the case is selected, so listing the suite allocates nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

# Worker threads of other libraries keep spinning after each call: OpenBLAS's for about 2^28 cycles
# (~70 ms), PyTorch's OpenMP team for its own spin. On 2 cores they would halve the speed of
# whichever candidate is timed next; a case whose baselines spin runs each candidate untimed for
# this long before its sample (Case.settle_s), so the spinners have parked.
SPINNING_BASELINE_SETTLE_S = 0.1

FAMILIES = ("gemm", "conv", "pool", "activation", "softmax", "optim", "rnn", "attention", "train", "interop",
            "quantization")


@dataclass
class Case:
    name: str  # unique, "family/what/shape", e.g. "activation/relu/16M"
    family: str  # one of FAMILIES
    device: str  # "cpu" or "cuda"
    unit: str  # "GFLOP/s", "GOP/s" (integer operations), "GB/s" or "samples/s"
    work: float  # per call: floating-point operations, bytes moved, or samples
    # () -> (fusegrad_fn, {baseline_name: fn}); baseline names: "numpy", "torch", "cupy", or a
    # variant such as "torch_channels_last" or "torch_fused". Unavailable baselines are left out.
    setup: Callable[[], tuple]
    limit: str | None = None  # key of the machine limit this work is bound by: "copy_GBps" or "fma_GFLOPs"
    threads: int | None = None  # run at this many threads (None: the current setting)
    settle_s: float = 0.0  # pause before each sample (see timer.measure): for baselines that spin
    note: str = ""
    tags: tuple = field(default_factory=tuple)

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"case {self.name}: unknown family {self.family!r}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"case {self.name}: device must be 'cpu' or 'cuda'")


def optional_import(name: str):
    """The module, or None when it is not installed (its baselines are then skipped)."""
    try:
        return __import__(name)
    except ImportError:
        return None
