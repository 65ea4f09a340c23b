"""Automatic mixed precision: `fusegrad.autocast(device, dtype="bf16")` runs the matrix products
and convolutions of autograd (MatMul, Linear, Conv2d and its fused/transposed forms, forward and
backward) with precision="bf16": operands rounded to bf16, fp32 sums, fp32 results. Parameters
(the master weights), activations between ops and gradients stay fp32, so the fused optimizers,
losses and every other op run unchanged.

Scope, as in PyTorch: the state is per thread and per device kind ("cpu", "cuda"); contexts
nest, an inner one (or enabled=False) overrides the outer until it exits; an instance is also a
decorator. A Function decides its precision when its forward runs and keeps it for its backward,
so backward() outside the context repeats what forward did.

What stays fp32: attention and the recurrent layers (their kernels are fp32 only), and on CUDA
the convolutions: their bf16 path (an im2col and the tensor-core GEMM, ops.conv2d(precision="bf16"))
has not yet been timed against the fp32 implicit GEMM on a GPU. CUDA matrix products do use bf16.
"""
from __future__ import annotations

import functools
import threading

DEVICE_KINDS = ("cpu", "cuda")
_DTYPES = {"bf16": "bf16", "bfloat16": "bf16"}


class _State(threading.local):
    def __init__(self):
        self.precision = {kind: "fp32" for kind in DEVICE_KINDS}


_state = _State()


def _kind(device: str) -> str:
    return "cpu" if device == "cpu" else "cuda"


def gemm_precision(device: str) -> str:
    """The precision a matrix product on `device` ("cpu", "cuda:N") runs with now: "fp32" or "bf16"."""
    return _state.precision[_kind(device)]


def conv_precision(device: str, groups: int = 1) -> str:
    """The precision a convolution on `device` runs with now (CUDA and grouped convolutions: always
    "fp32": grouped ones have no bf16 path, CUDA ones' is not yet measured)."""
    return _state.precision["cpu"] if device == "cpu" and groups == 1 else "fp32"


def is_autocast_enabled(device: str = "cpu") -> bool:
    if device not in DEVICE_KINDS:
        raise ValueError(f"is_autocast_enabled: device must be 'cpu' or 'cuda', got {device!r}")
    return _state.precision[device] != "fp32"


class autocast:
    """Context manager (and decorator) under which autograd's matrix products and convolutions on
    `device` ("cpu" or "cuda") compute in `dtype` ("bf16"); enabled=False turns an outer autocast
    off inside it. See the module docstring for what runs in bf16 and what stays fp32."""

    def __init__(self, device: str = "cpu", dtype: str = "bf16", enabled: bool = True):
        if device not in DEVICE_KINDS:
            raise ValueError(f"autocast: device must be 'cpu' or 'cuda', got {device!r}")
        if not isinstance(dtype, str) or dtype not in _DTYPES:
            raise ValueError(f"autocast: dtype must be 'bf16', got {dtype!r}")
        if not isinstance(enabled, bool):
            raise TypeError(f"autocast: enabled must be True or False, got {enabled!r}")
        self.device, self.dtype, self.enabled = device, _DTYPES[dtype], enabled
        self._saved = []  # one entry per active `with` of this instance (re-entrant)

    def __enter__(self):
        self._saved.append(_state.precision[self.device])
        _state.precision[self.device] = self.dtype if self.enabled else "fp32"
        return self

    def __exit__(self, *exc):
        _state.precision[self.device] = self._saved.pop()
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with autocast(self.device, self.dtype, self.enabled):
                return fn(*args, **kwargs)
        return wrapper

    def __repr__(self):
        return f"autocast(device={self.device!r}, dtype={self.dtype!r}, enabled={self.enabled})"
