"""Elementwise arithmetic with NumPy broadcasting: the gradient of a broadcast input is summed
back to its shape."""
from __future__ import annotations

import numpy as np

from ..._backend import array_module
from ..engine import Function


def unbroadcast(grad, shape):
    """Sums `grad` down to `shape`, undoing NumPy broadcasting."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(i + extra for i, n in enumerate(shape) if n == 1 and grad.shape[i + extra] != 1)
    return grad.sum(axis=axes, keepdims=True).reshape(shape) if axes else grad.reshape(shape)


class Add(Function):
    def forward(self, a, b):
        self.save(a.shape, b.shape)
        return a + b

    def backward(self, g):
        sa, sb = self.saved
        return unbroadcast(g, sa), unbroadcast(g, sb)


class Sub(Function):
    def forward(self, a, b):
        self.save(a.shape, b.shape)
        return a - b

    def backward(self, g):
        sa, sb = self.saved
        return unbroadcast(g, sa), (unbroadcast(-g, sb) if self.needs_grad[1] else None)


class Mul(Function):
    def forward(self, a, b):
        self.save(a, b)
        return a * b

    def backward(self, g):
        a, b = self.saved
        return (unbroadcast(g * b, a.shape) if self.needs_grad[0] else None,
                unbroadcast(g * a, b.shape) if self.needs_grad[1] else None)


class Div(Function):
    def forward(self, a, b):
        self.save(a, b)
        return a / b

    def backward(self, g):
        a, b = self.saved
        return (unbroadcast(g / b, a.shape) if self.needs_grad[0] else None,
                unbroadcast(-g * a / (b * b), b.shape) if self.needs_grad[1] else None)


class Pow(Function):
    """a ** b for tensors a, b (a scalar exponent arrives as a 0-d tensor). Derivatives as in
    PyTorch: d/da is 0 where b == 0 (so x ** 0 has gradient 0 even at x = 0); d/db is a^b ln a, 0
    where a == 0 and b >= 0, NaN for a < 0 (the log of a negative number)."""

    def forward(self, a, b):
        if a.dtype.kind in "iu" and b.dtype.kind in "iu" and bool((b < 0).any()):
            raise RuntimeError("Integers to negative integer powers are not allowed.")
        with np.errstate(divide="ignore", invalid="ignore"):
            out = a**b
        self.save(a, b, out)
        return out

    def backward(self, g):
        a, b, out = self.saved
        xp = array_module(a)
        ga = gb = None
        if self.needs_grad[0]:
            with np.errstate(divide="ignore", invalid="ignore"):
                d = b * a ** (b - 1)
            ga = unbroadcast(xp.where(b == 0, xp.zeros((), g.dtype), g * d).astype(g.dtype, copy=False), a.shape)
        if self.needs_grad[1]:
            with np.errstate(divide="ignore", invalid="ignore"):
                d = out * xp.log(a)
            d = xp.where((a == 0) & (b >= 0), xp.zeros((), d.dtype), d)
            gb = unbroadcast((g * d).astype(g.dtype, copy=False), b.shape)
        return ga, gb


class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, g):
        return (-g,)


class Exp(Function):
    def forward(self, a):
        out = array_module(a).exp(a)
        self.save(out)
        return out

    def backward(self, g):
        return (g * self.saved[0],)


class Log(Function):
    def forward(self, a):
        self.save(a)
        return array_module(a).log(a)

    def backward(self, g):
        return (g / self.saved[0],)


class Sqrt(Function):
    def forward(self, a):
        out = array_module(a).sqrt(a)
        self.save(out)
        return out

    def backward(self, g):
        return (g / (2 * self.saved[0]),)


class Abs(Function):
    def forward(self, a):
        self.save(a)
        return array_module(a).abs(a)

    def backward(self, g):
        return (g * array_module(g).sign(self.saved[0]).astype(g.dtype),)


class Clamp(Function):
    """Gradient flows where min <= a <= max, as in torch.clamp."""

    def forward(self, a, lo=None, hi=None):
        xp = array_module(a)
        self.save((a >= lo if lo is not None else True) & (a <= hi if hi is not None else True))
        return xp.clip(a, lo, hi).astype(a.dtype, copy=False)

    def backward(self, g):
        return (g * self.saved[0],)


class Maximum(Function):
    """Elementwise max (or min); on ties the gradient is split evenly, as in torch.maximum."""

    def forward(self, a, b, take_max=True):
        xp = array_module(a)
        out = xp.maximum(a, b) if take_max else xp.minimum(a, b)
        self.save(a, b, out)
        return out

    def backward(self, g):
        a, b, out = self.saved
        wa = (a == out).astype(g.dtype)
        wb = (b == out).astype(g.dtype)
        total = wa + wb
        return (unbroadcast(g * wa / total, a.shape) if self.needs_grad[0] else None,
                unbroadcast(g * wb / total, b.shape) if self.needs_grad[1] else None)
