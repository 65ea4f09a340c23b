"""Reductions: sum, prod, max/min (over axes, the gradient split among tied extremes; along one
dim with indices, the gradient to the index), cumulative sums and products, logsumexp, norms."""
from __future__ import annotations

import numbers

import numpy as np

from ..._backend import array_module
from ..engine import Function


def normalise_axes(axis, ndim):
    """The reduced axes as a tuple of non-negative ints (all of them for axis=None)."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    out = []
    size = max(ndim, 1)  # a 0-d tensor takes dim 0 and -1, as in PyTorch
    for ax in axes:
        if isinstance(ax, bool) or not isinstance(ax, numbers.Integral):
            raise TypeError(f"dim must be an int or a tuple of ints, got {axis!r}")
        if not -size <= ax < size:
            raise IndexError(f"Dimension out of range (expected to be in range of [{-size}, {size - 1}], "
                             f"but got {ax})")
        if ax % size in out:
            raise RuntimeError(f"dim {ax % size} appears multiple times in the list of dims")
        out.append(ax % size)
    return tuple(out) if ndim else ()


def _expand_reduced(g, shape, axes, keepdims):
    """Reshapes a reduced gradient so it broadcasts back over `shape`."""
    if not keepdims:
        kept = [1 if i in axes else n for i, n in enumerate(shape)]
        g = g.reshape(kept)
    return g


class Sum(Function):
    def forward(self, a, axis=None, keepdims=False):
        axes = normalise_axes(axis, a.ndim)
        self.save(a.shape, axes, keepdims)
        return array_module(a).asarray(a.sum(axis=axes, keepdims=keepdims))

    def backward(self, g):
        shape, axes, keepdims = self.saved
        return (array_module(g).broadcast_to(_expand_reduced(g, shape, axes, keepdims), shape),)


class MaxReduce(Function):
    """max/min over axes; the gradient is split evenly among tied extremes."""

    def forward(self, a, axis=None, keepdims=False, take_max=True):
        axes = normalise_axes(axis, a.ndim)
        if a.size == 0:
            raise ValueError("max/min of an empty tensor is undefined")
        out = a.max(axis=axes, keepdims=True) if take_max else a.min(axis=axes, keepdims=True)
        self.save(a, out, axes, keepdims)
        return out if keepdims else out.reshape([n for i, n in enumerate(a.shape) if i not in axes])

    def backward(self, g):
        a, out, axes, keepdims = self.saved
        mask = (a == out).astype(g.dtype)
        mask /= mask.sum(axis=axes, keepdims=True)
        return (mask * _expand_reduced(g, a.shape, axes, keepdims),)


class MaxDim(Function):
    """The values at `indices` (argmax or argmin along `dim`, kept as a size-1 axis); the gradient
    goes to those indices only, as torch.max(dim) does."""

    def forward(self, a, indices=None, dim=0, keepdim=False):
        xp = array_module(a)
        out = xp.take_along_axis(a, indices, axis=dim)
        self.save(a.shape, indices, dim, keepdim)
        return out if keepdim else out.squeeze(dim)

    def backward(self, g):
        shape, indices, dim, keepdim = self.saved
        xp = array_module(g)
        if not keepdim:
            g = xp.expand_dims(g, dim)
        positions = xp.arange(shape[dim]).reshape([-1 if d == dim else 1 for d in range(len(shape))])
        return (xp.where(positions == indices, g, g.dtype.type(0)),)


def _exclusive(xp, a, axis, reverse=False):
    """Products of the entries before each one along `axis` (after, with reverse=True)."""
    if reverse:
        return xp.flip(_exclusive(xp, xp.flip(a, axis), axis), axis)
    ones = xp.ones_like(xp.take(a, [0], axis=axis))
    return xp.cumprod(xp.concatenate([ones, xp.take(a, xp.arange(a.shape[axis] - 1), axis=axis)], axis), axis)


class Prod(Function):
    """Product along one dim (or of everything, dim None); exact gradient with zeros present (the
    product of the other entries)."""

    def forward(self, a, dim=None, keepdim=False):
        self.save(a, dim, keepdim)
        return array_module(a).asarray(a.prod(axis=dim, keepdims=keepdim))

    def backward(self, g):
        a, dim, keepdim = self.saved
        xp = array_module(g)
        flat = a.reshape(-1) if dim is None else a
        axis = 0 if dim is None else dim
        others = _exclusive(xp, flat, axis) * _exclusive(xp, flat, axis, reverse=True)
        if dim is None:
            return ((others.reshape(a.shape) * g).astype(g.dtype, copy=False),)
        return ((others * (g if keepdim else xp.expand_dims(g, dim))).astype(g.dtype, copy=False),)


class CumSum(Function):
    def forward(self, a, dim=0):
        self.save(dim)
        return array_module(a).cumsum(a, axis=dim, dtype=a.dtype)

    def backward(self, g):
        xp, dim = array_module(g), self.saved[0]
        return (xp.flip(xp.cumsum(xp.flip(g, dim), axis=dim), dim),)


class CumProd(Function):
    def forward(self, a, dim=0):
        out = array_module(a).cumprod(a, axis=dim, dtype=a.dtype)
        self.save(a, out, dim)
        return out

    def backward(self, g):
        a, out, dim = self.saved
        xp = array_module(g)
        if not bool((a == 0).any()):
            return (xp.flip(xp.cumsum(xp.flip(g * out, dim), axis=dim), dim) / a,)
        # With zeros: d out_j / d a_i = prod_{k <= j, k != i} a_k for j >= i, one i at a time.
        grad = xp.zeros_like(a)
        moved_a, moved_g, moved_out = (xp.moveaxis(x, dim, 0) for x in (a, g, grad))
        for i in range(a.shape[dim]):
            others = moved_a.copy()
            others[i] = 1
            moved_out[i] = (xp.cumprod(others, axis=0)[i:] * moved_g[i:]).sum(axis=0)
        return (grad,)


class LogSumExp(Function):
    def forward(self, a, axes=(), keepdim=False):
        xp = array_module(a)
        m = a.max(axis=axes, keepdims=True) if a.size else xp.zeros([1] * a.ndim, a.dtype)
        m = xp.where(xp.isfinite(m), m, a.dtype.type(0))
        with np.errstate(divide="ignore"):
            out = xp.log(xp.exp(a - m).sum(axis=axes, keepdims=True)) + m
        self.save(a, out, axes, keepdim)
        return out if keepdim else out.reshape([n for i, n in enumerate(a.shape) if i not in axes])

    def backward(self, g):
        a, out, axes, keepdim = self.saved
        return (array_module(g).exp(a - out) * _expand_reduced(g, a.shape, axes, keepdim),)


class Norm(Function):
    """The p-norm over `axes` (p > 0 or inf); the gradient at a zero norm is 0, as in PyTorch."""

    def forward(self, a, p=2.0, axes=(), keepdim=False):
        xp = array_module(a)
        m = xp.abs(a)
        if p == float("inf"):
            out = m.max(axis=axes, keepdims=True)
        elif p == 2:
            out = xp.sqrt((a * a).sum(axis=axes, keepdims=True))
        elif p == 1:
            out = m.sum(axis=axes, keepdims=True)
        else:
            out = (m**p).sum(axis=axes, keepdims=True) ** (1.0 / p)
        self.save(a, out, p, axes, keepdim)
        return out if keepdim else out.reshape([n for i, n in enumerate(a.shape) if i not in axes])

    def backward(self, g):
        a, out, p, axes, keepdim = self.saved
        xp = array_module(g)
        g = _expand_reduced(g, a.shape, axes, keepdim)
        sign = xp.sign(a)
        with np.errstate(divide="ignore", invalid="ignore"):
            if p == float("inf"):
                mask = (xp.abs(a) == out).astype(g.dtype)
                d = sign * mask / mask.sum(axis=axes, keepdims=True)
            elif p == 1:
                d = sign
            else:
                d = sign * xp.abs(a) ** (p - 1) / out ** (p - 1)
            d = xp.where(out == 0, g.dtype.type(0), d)
        return ((g * d).astype(g.dtype, copy=False),)
