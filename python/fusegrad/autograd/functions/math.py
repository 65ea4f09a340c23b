"""Elementwise math beyond arithmetic: a table of unary functions (forward and derivative side by
side), atan2, remainder, fmod and floor division, and dtype casts. Derivatives follow PyTorch's: the
step functions (floor, ceil, round, trunc, sign) and floor division have gradient 0."""
from __future__ import annotations

import math

import numpy as np

from ..._backend import array_module
from ..engine import Function
from .elementwise import unbroadcast


def erf(a):
    """The error function on the storage's device (SciPy's, or CuPy's)."""
    xp = array_module(a)
    if xp.__name__ == "cupy":
        from cupyx.scipy.special import erf as cupy_erf  # noqa: PLC0415

        return cupy_erf(a)
    try:
        from scipy.special import erf as scipy_erf  # noqa: PLC0415
    except ImportError:
        return xp.asarray(np.vectorize(math.erf, otypes=[a.dtype])(a))
    return scipy_erf(a).astype(a.dtype, copy=False)


def _zero(xp, a, out, g):
    return xp.zeros_like(g)


# name: (forward(xp, a), derivative times g: (xp, a, out, g) -> array)
UNARY = {
    "sin": (lambda xp, a: xp.sin(a), lambda xp, a, out, g: g * xp.cos(a)),
    "cos": (lambda xp, a: xp.cos(a), lambda xp, a, out, g: -g * xp.sin(a)),
    "tan": (lambda xp, a: xp.tan(a), lambda xp, a, out, g: g * (1 + out * out)),
    "asin": (lambda xp, a: xp.arcsin(a), lambda xp, a, out, g: g / xp.sqrt(1 - a * a)),
    "acos": (lambda xp, a: xp.arccos(a), lambda xp, a, out, g: -g / xp.sqrt(1 - a * a)),
    "atan": (lambda xp, a: xp.arctan(a), lambda xp, a, out, g: g / (1 + a * a)),
    "sinh": (lambda xp, a: xp.sinh(a), lambda xp, a, out, g: g * xp.cosh(a)),
    "cosh": (lambda xp, a: xp.cosh(a), lambda xp, a, out, g: g * xp.sinh(a)),
    "tanh": (lambda xp, a: xp.tanh(a), lambda xp, a, out, g: g * (1 - out * out)),
    "floor": (lambda xp, a: xp.floor(a), _zero),
    "ceil": (lambda xp, a: xp.ceil(a), _zero),
    "round": (lambda xp, a: xp.round(a), _zero),
    "trunc": (lambda xp, a: xp.trunc(a), _zero),
    "sign": (lambda xp, a: xp.sign(a), _zero),
    "frac": (lambda xp, a: a - xp.trunc(a), lambda xp, a, out, g: g),
    "rsqrt": (lambda xp, a: 1 / xp.sqrt(a), lambda xp, a, out, g: -0.5 * g * out * out * out),
    "erf": (lambda xp, a: erf(a), lambda xp, a, out, g: g * (2 / math.sqrt(math.pi)) * xp.exp(-a * a)),
    "reciprocal": (lambda xp, a: 1 / a, lambda xp, a, out, g: -g * out * out),
    "log2": (lambda xp, a: xp.log2(a), lambda xp, a, out, g: g / (a * math.log(2))),
    "log10": (lambda xp, a: xp.log10(a), lambda xp, a, out, g: g / (a * math.log(10))),
    "log1p": (lambda xp, a: xp.log1p(a), lambda xp, a, out, g: g / (1 + a)),
    "expm1": (lambda xp, a: xp.expm1(a), lambda xp, a, out, g: g * (out + 1)),
    "square": (lambda xp, a: a * a, lambda xp, a, out, g: 2 * g * a),
}
# Functions that keep an integer tensor's dtype (the others need a floating-point input).
INTEGER_CLOSED = frozenset({"floor", "ceil", "round", "trunc", "sign", "square"})


class Unary(Function):
    """One function of the UNARY table."""

    def forward(self, a, name="sin", decimals=0):
        xp = array_module(a)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if name == "round" and decimals:
                out = xp.round(a, decimals)
            else:
                out = UNARY[name][0](xp, a)
        out = xp.asarray(out).astype(a.dtype, copy=False)
        self.save(a, out, name)
        return out

    def backward(self, g):
        a, out, name = self.saved
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return (UNARY[name][1](array_module(g), a, out, g).astype(g.dtype, copy=False),)


class StdSqrt(Function):
    """sqrt of a variance, for std: its gradient is 0 where the std is 0, as in PyTorch (so a
    constant input gets gradient 0, not NaN)."""

    def forward(self, a):
        out = array_module(a).sqrt(a)
        self.save(out)
        return out

    def backward(self, g):
        out = self.saved[0]
        xp = array_module(g)
        with np.errstate(divide="ignore", invalid="ignore"):
            return (xp.where(out == 0, g.dtype.type(0), g / (2 * out)),)


class Atan2(Function):
    def forward(self, a, b):
        self.save(a, b)
        return array_module(a).arctan2(a, b)

    def backward(self, g):
        a, b = self.saved
        with np.errstate(divide="ignore", invalid="ignore"):
            r = a * a + b * b
            return (unbroadcast(g * b / r, a.shape) if self.needs_grad[0] else None,
                    unbroadcast(-g * a / r, b.shape) if self.needs_grad[1] else None)


class Remainder(Function):
    """a - floor(a / b) * b: the sign of the divisor, as Python's % and torch.remainder.
    Gradients (PyTorch's): 1 for a, -floor(a / b) for b."""

    op, quotient = "remainder", "floor"  # the array module's functions

    def forward(self, a, b):
        xp = array_module(a)
        if a.dtype.kind in "iu" and bool((b == 0).any()):
            raise RuntimeError("ZeroDivisionError")
        self.save(a, b)
        with np.errstate(divide="ignore", invalid="ignore"):
            return getattr(xp, self.op)(a, b)

    def backward(self, g):
        a, b = self.saved
        xp = array_module(g)
        gb = None
        if self.needs_grad[1]:
            with np.errstate(divide="ignore", invalid="ignore"):
                gb = unbroadcast(-g * getattr(xp, self.quotient)(a / b), b.shape)
        return unbroadcast(g, a.shape), gb


class Fmod(Remainder):
    """a - trunc(a / b) * b: the sign of the dividend, as C's fmod and torch.fmod. Gradients
    (PyTorch's): 1 for a, -trunc(a / b) for b."""

    op, quotient = "fmod", "trunc"


class FloorDivide(Function):
    """floor(a / b) (torch.floor_divide rounds down since PyTorch 1.13). Like PyTorch, floor_divide
    has no derivative (backward raises) while div(rounding_mode="floor") has gradient 0."""

    def forward(self, a, b, differentiable=False):
        self.differentiable = differentiable
        xp = array_module(a)
        if a.dtype.kind in "iu" and bool((b == 0).any()):
            raise RuntimeError("ZeroDivisionError")
        self.save(a.shape, b.shape)
        with np.errstate(divide="ignore", invalid="ignore"):
            return xp.floor_divide(a, b)

    def backward(self, g):
        if not self.differentiable:
            raise RuntimeError("derivative for aten::floor_divide is not implemented")
        sa, sb = self.saved
        xp = array_module(g)
        return xp.zeros(sa, g.dtype), xp.zeros(sb, g.dtype)


class Cast(Function):
    """A dtype conversion; the gradient is cast back (between floating-point dtypes)."""

    def forward(self, a, dtype=np.float32):
        self.save(a.dtype)
        return a.astype(dtype)

    def backward(self, g):
        return (g.astype(self.saved[0]),)
