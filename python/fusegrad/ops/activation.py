"""Elementwise activations and their backward passes, on NumPy (CPU) and CUDA arrays.

Backward functions take the upstream gradient and what autograd keeps of the forward: the input x,
except for the activations whose derivative comes cheapest from their output y (sigmoid and tanh:
`BACKWARD_FROM_OUTPUT`).

The activations, their codes and their properties come from the compiled side's one table
(cpp/activation/activation.h, FG_ACTIVATIONS); the sets below are derived from it.
"""
from __future__ import annotations

from .. import _cpu
from ._common import elementwise, real

TABLE = {row["name"]: row for row in _cpu.activation_table()}
CODES = {name: row["code"] for name, row in TABLE.items()}
NAMES = tuple(name for name in CODES if name != "none")
# What the GEMM and convolution epilogues apply while storing their output (no parameter).
EPILOGUE = frozenset(name for name in NAMES if not TABLE[name]["takes_param"])
# Those whose derivative is a function of the output: a layer may apply them in its store and
# autograd keep only the output (leaky_relu for a positive slope).
DERIVATIVE_FROM_OUTPUT = frozenset(name for name in NAMES if TABLE[name]["derivative_from_output"])
BACKWARD_FROM_OUTPUT = frozenset(name for name in NAMES if TABLE[name]["backward_from_output"])
# Non-decreasing and exact on ties (leaky_relu for a positive slope): a max-pool may run first.
COMMUTES_WITH_MAX = frozenset(name for name in NAMES if TABLE[name]["commutes_with_max"])


def activation_code(name) -> int:
    """The kernel code of an activation name (None for no activation); ValueError if unknown."""
    if name is None:
        return CODES["none"]
    code = CODES.get(name) if isinstance(name, str) else None
    if code is None:
        known = ", ".join(repr(k) for k in CODES)
        raise ValueError(f"unknown activation {name!r}; expected None or one of {known}")
    return code


def _gelu_kind(approximate: str) -> str:
    if approximate == "none":
        return "gelu"
    if approximate == "tanh":
        return "gelu_tanh"
    raise ValueError(f"approximate: expected 'none' or 'tanh', got {approximate!r}")


def forward(kind: str, x, *, param: float = 0.0, out=None, stream=None):
    """The activation `kind` (a name of the table) of x."""
    code = activation_code(kind)
    return elementwise(
        lambda xa, o: _cpu.activation_forward(code, xa, o, param),
        lambda cuda, xp, op, n, st, dev: cuda.activation_forward(code, xp, op, n, param, st, dev),
        {"x": x}, out, stream=stream,
    )


def backward(kind: str, grad_out, saved, *, param: float = 0.0, out=None, stream=None):
    """grad_out times the derivative of `kind`, at the input x, or at the output y for the kinds in
    BACKWARD_FROM_OUTPUT."""
    code = activation_code(kind)
    return elementwise(
        lambda g, s, o: _cpu.activation_backward(code, g, s, o, param),
        lambda cuda, gp, sp, op, n, st, dev: cuda.activation_backward(code, gp, sp, op, n, param, st, dev),
        {"grad_out": grad_out, "y" if kind in BACKWARD_FROM_OUTPUT else "x": saved}, out, stream=stream,
    )


def relu(x, *, out=None, stream=None):
    """max(x, 0), NaN kept."""
    return forward("relu", x, out=out, stream=stream)


def leaky_relu(x, negative_slope: float = 0.01, *, out=None, stream=None):
    """x where x > 0, negative_slope * x elsewhere."""
    return forward("leaky_relu", x, param=real(negative_slope, "negative_slope", "leaky_relu"), out=out,
                   stream=stream)


def sigmoid(x, *, out=None, stream=None):
    """1 / (1 + exp(-x))."""
    return forward("sigmoid", x, out=out, stream=stream)


def tanh(x, *, out=None, stream=None):
    return forward("tanh", x, out=out, stream=stream)


def silu(x, *, out=None, stream=None):
    """x * sigmoid(x) (also called swish)."""
    return forward("silu", x, out=out, stream=stream)


def gelu(x, approximate: str = "none", *, out=None, stream=None):
    """x * Phi(x) exactly, or with approximate="tanh" the tanh approximation (as torch.nn.GELU)."""
    return forward(_gelu_kind(approximate), x, out=out, stream=stream)


def relu_backward(grad_out, x, *, out=None, stream=None):
    return backward("relu", grad_out, x, out=out, stream=stream)


def leaky_relu_backward(grad_out, x, negative_slope: float = 0.01, *, out=None, stream=None):
    return backward("leaky_relu", grad_out, x, param=real(negative_slope, "negative_slope", "leaky_relu_backward"),
                    out=out, stream=stream)


def sigmoid_backward(grad_out, y, *, out=None, stream=None):
    """grad_out * y * (1 - y), with y = sigmoid(x)."""
    return backward("sigmoid", grad_out, y, out=out, stream=stream)


def tanh_backward(grad_out, y, *, out=None, stream=None):
    """grad_out * (1 - y^2), with y = tanh(x)."""
    return backward("tanh", grad_out, y, out=out, stream=stream)


def silu_backward(grad_out, x, *, out=None, stream=None):
    return backward("silu", grad_out, x, out=out, stream=stream)


def gelu_backward(grad_out, x, approximate: str = "none", *, out=None, stream=None):
    return backward(_gelu_kind(approximate), grad_out, x, out=out, stream=stream)
