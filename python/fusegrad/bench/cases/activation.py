"""Activation cases: memory-bound maps over 16M floats (CPU) and 64M floats (GPU).

Work is counted as bytes moved through memory: 8 per element forward (read x, write y), 12
backward (read grad and x or y, write dx). Every candidate writes into a preallocated output
where its library allows one, so allocation is not what is measured.
"""
from __future__ import annotations

import math

import numpy as np

from ...ops import activation
from ..case import Case, optional_import

CPU_SIZE = 16 << 20
GPU_SIZE = 64 << 20
SLOPE = 0.01


def _numpy_forward(name, x, o):
    """NumPy written as a careful user would: in place, no temporaries where NumPy allows."""
    if name == "relu":
        return lambda: np.maximum(x, 0, out=o)
    if name == "leaky_relu":
        return lambda: (np.multiply(x, SLOPE, out=o), np.maximum(x, o, out=o))
    if name == "sigmoid":  # 1 / (1 + exp(-x)) in place
        return lambda: (np.negative(x, out=o), np.exp(o, out=o), np.add(o, 1, out=o), np.reciprocal(o, out=o))
    if name == "tanh":
        return lambda: np.tanh(x, out=o)
    if name == "silu":
        return lambda: (np.negative(x, out=o), np.exp(o, out=o), np.add(o, 1, out=o), np.divide(x, o, out=o))
    special = optional_import("scipy.special") and __import__("scipy.special").special
    if name == "gelu" and special is not None:  # 0.5 x (1 + erf(x / sqrt 2))
        return lambda: (np.multiply(x, 1 / math.sqrt(2), out=o), special.erf(o, out=o), np.add(o, 1, out=o),
                        np.multiply(o, x, out=o), np.multiply(o, 0.5, out=o))
    if name == "gelu_tanh":
        k = math.sqrt(2 / math.pi)
        return lambda: (np.multiply(x, x, out=o), np.multiply(o, 0.044715, out=o), np.add(o, 1, out=o),
                        np.multiply(o, x, out=o), np.multiply(o, k, out=o), np.tanh(o, out=o),
                        np.add(o, 1, out=o), np.multiply(o, x, out=o), np.multiply(o, 0.5, out=o))
    return None


def _numpy_backward(name, g, s, o):
    if name == "relu":
        return lambda: np.multiply(g, s > 0, out=o)
    if name == "sigmoid":  # g * y * (1 - y)
        return lambda: (np.subtract(1, s, out=o), np.multiply(o, s, out=o), np.multiply(o, g, out=o))
    if name == "tanh":  # g * (1 - y^2)
        return lambda: (np.multiply(s, s, out=o), np.subtract(1, o, out=o), np.multiply(o, g, out=o))
    return None


def _torch_forward(torch, name, x, o):
    aten = torch.ops.aten
    if name == "relu":
        return lambda: aten.clamp_min.out(x, 0, out=o)
    if name == "leaky_relu":
        return lambda: aten.leaky_relu.out(x, SLOPE, out=o)
    if name == "sigmoid":
        return lambda: torch.sigmoid(x, out=o)
    if name == "tanh":
        return lambda: torch.tanh(x, out=o)
    if name == "silu":
        return lambda: aten.silu.out(x, out=o)
    if name == "gelu":
        return lambda: aten.gelu.out(x, approximate="none", out=o)
    if name == "gelu_tanh":
        return lambda: aten.gelu.out(x, approximate="tanh", out=o)
    return None


def _torch_backward(torch, name, g, s, o):
    aten = torch.ops.aten
    if name == "relu":
        return lambda: aten.threshold_backward.grad_input(g, s, 0, grad_input=o)
    if name == "leaky_relu":
        return lambda: aten.leaky_relu_backward.grad_input(g, s, SLOPE, False, grad_input=o)
    if name == "sigmoid":
        return lambda: aten.sigmoid_backward.grad_input(g, s, grad_input=o)
    if name == "tanh":
        return lambda: aten.tanh_backward.grad_input(g, s, grad_input=o)
    if name == "silu":
        return lambda: aten.silu_backward.grad_input(g, s, grad_input=o)
    if name == "gelu":
        return lambda: aten.gelu_backward.grad_input(g, s, approximate="none", grad_input=o)
    if name == "gelu_tanh":
        return lambda: aten.gelu_backward.grad_input(g, s, approximate="tanh", grad_input=o)
    return None


def _param(name):
    return SLOPE if activation.TABLE[name]["takes_param"] else 0.0


def _fusegrad_forward(name, x, o):
    return lambda: activation.forward(name, x, param=_param(name), out=o)


def _fusegrad_backward(name, g, s, o):
    return lambda: activation.backward(name, g, s, param=_param(name), out=o)


def _cpu_case(name: str, backward: bool) -> Case:
    n = CPU_SIZE

    def setup():
        rng = np.random.default_rng(0)
        x = rng.standard_normal(n, dtype=np.float32)
        g = rng.standard_normal(n, dtype=np.float32)
        if name in activation.BACKWARD_FROM_OUTPUT and backward:
            x = activation.forward(name, x)  # their backward takes the forward output
        o = np.zeros_like(x)
        if backward:
            ours, base = _fusegrad_backward(name, g, x, o), {"numpy": _numpy_backward(name, g, x, o)}
        else:
            ours, base = _fusegrad_forward(name, x, o), {"numpy": _numpy_forward(name, x, o)}
        torch = optional_import("torch")
        if torch is not None:
            tx, tg, to = (torch.from_numpy(a.copy()) for a in (x, g, o))
            base["torch"] = (_torch_backward(torch, name, tg, tx, to) if backward
                             else _torch_forward(torch, name, tx, to))
        return ours, {k: v for k, v in base.items() if v is not None}

    kind = "backward" if backward else "forward"
    return Case(f"activation/{name}_{kind}/16M", "activation", "cpu", "GB/s",
                (12 if backward else 8) * n, setup, limit="copy_GBps")


def _cuda_case(name: str, backward: bool) -> Case:
    n = GPU_SIZE

    def setup():
        import cupy as cp

        x = cp.random.standard_normal(n, dtype=cp.float32)
        g = cp.random.standard_normal(n, dtype=cp.float32)
        if name in activation.BACKWARD_FROM_OUTPUT and backward:
            x = activation.forward(name, x)
        o = cp.zeros_like(x)
        ours = _fusegrad_backward(name, g, x, o) if backward else _fusegrad_forward(name, x, o)
        base = {}
        torch = optional_import("torch")
        if torch is not None and torch.cuda.is_available():
            tx, tg, to = (torch.from_dlpack(a) for a in (x, g, o))
            base["torch"] = (_torch_backward(torch, name, tg, tx, to) if backward
                             else _torch_forward(torch, name, tx, to))
        if not backward and name == "relu":
            base["cupy"] = lambda: cp.maximum(x, 0, out=o)
        return ours, base

    kind = "backward" if backward else "forward"
    return Case(f"activation/{name}_{kind}/64M", "activation", "cuda", "GB/s",
                (12 if backward else 8) * n, setup, limit="cuda_copy_GBps")


def cases():
    out = []
    for backward in (False, True):
        out += [_cpu_case(n, backward) for n in activation.NAMES]
    for backward in (False, True):
        out += [_cuda_case(n, backward) for n in activation.NAMES]
    return out
