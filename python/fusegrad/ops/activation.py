"""Elementwise activations and their backward passes, on NumPy (CPU) and CUDA arrays.

Backward functions take the upstream gradient and what autograd keeps of the forward: the input x,
except for sigmoid and tanh whose derivative comes cheapest from their output y.
"""
from __future__ import annotations

from .. import _cpu
from ._common import elementwise

# Codes of the compiled side (cpp/activation/activation.h); shared with the GEMM/conv epilogues.
ACTIVATIONS = {
    None: 0, "none": 0, "relu": 1, "leaky_relu": 2, "sigmoid": 3, "tanh": 4, "silu": 5,
    "gelu": 6, "gelu_tanh": 7,
}


def activation_code(name) -> int:
    """The kernel code of an activation name (None for no activation); ValueError if unknown."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        known = ", ".join(repr(k) for k in ACTIVATIONS if k is not None)
        raise ValueError(f"unknown activation {name!r}; expected None or one of {known}") from None


def _gelu_code(approximate: str) -> int:
    if approximate == "none":
        return ACTIVATIONS["gelu"]
    if approximate == "tanh":
        return ACTIVATIONS["gelu_tanh"]
    raise ValueError(f"approximate: expected 'none' or 'tanh', got {approximate!r}")


def _forward(code: int, x, out, stream, param: float = 0.0):
    return elementwise(
        lambda xa, o: _cpu.activation_forward(code, xa, o, param),
        lambda cuda, xp, op, n, st, dev: cuda.activation_forward(code, xp, op, n, param, st, dev),
        {"x": x}, out, stream=stream,
    )


def _backward(code: int, grad_out, saved, saved_name: str, out, stream, param: float = 0.0):
    return elementwise(
        lambda g, s, o: _cpu.activation_backward(code, g, s, o, param),
        lambda cuda, gp, sp, op, n, st, dev: cuda.activation_backward(code, gp, sp, op, n, param, st, dev),
        {"grad_out": grad_out, saved_name: saved}, out, stream=stream,
    )


def relu(x, *, out=None, stream=None):
    """max(x, 0), NaN kept."""
    return _forward(ACTIVATIONS["relu"], x, out, stream)


def leaky_relu(x, negative_slope: float = 0.01, *, out=None, stream=None):
    """x where x > 0, negative_slope * x elsewhere."""
    return _forward(ACTIVATIONS["leaky_relu"], x, out, stream, float(negative_slope))


def sigmoid(x, *, out=None, stream=None):
    """1 / (1 + exp(-x))."""
    return _forward(ACTIVATIONS["sigmoid"], x, out, stream)


def tanh(x, *, out=None, stream=None):
    return _forward(ACTIVATIONS["tanh"], x, out, stream)


def silu(x, *, out=None, stream=None):
    """x * sigmoid(x) (also called swish)."""
    return _forward(ACTIVATIONS["silu"], x, out, stream)


def gelu(x, approximate: str = "none", *, out=None, stream=None):
    """x * Phi(x) exactly, or with approximate="tanh" the tanh approximation (as torch.nn.GELU)."""
    return _forward(_gelu_code(approximate), x, out, stream)


def relu_backward(grad_out, x, *, out=None, stream=None):
    return _backward(ACTIVATIONS["relu"], grad_out, x, "x", out, stream)


def leaky_relu_backward(grad_out, x, negative_slope: float = 0.01, *, out=None, stream=None):
    return _backward(ACTIVATIONS["leaky_relu"], grad_out, x, "x", out, stream, float(negative_slope))


def sigmoid_backward(grad_out, y, *, out=None, stream=None):
    """grad_out * y * (1 - y), with y = sigmoid(x)."""
    return _backward(ACTIVATIONS["sigmoid"], grad_out, y, "y", out, stream)


def tanh_backward(grad_out, y, *, out=None, stream=None):
    """grad_out * (1 - y^2), with y = tanh(x)."""
    return _backward(ACTIVATIONS["tanh"], grad_out, y, "y", out, stream)


def silu_backward(grad_out, x, *, out=None, stream=None):
    return _backward(ACTIVATIONS["silu"], grad_out, x, "x", out, stream)


def gelu_backward(grad_out, x, approximate: str = "none", *, out=None, stream=None):
    return _backward(_gelu_code(approximate), grad_out, x, "x", out, stream)
