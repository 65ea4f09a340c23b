"""Reductions: sum, and max/min with the gradient split among tied extremes."""
from __future__ import annotations

from ..._backend import array_module
from ..engine import Function


def normalise_axes(axis, ndim):
    """The reduced axes as a tuple of non-negative ints (all of them for axis=None)."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    out = []
    for ax in axes:
        if not -ndim <= ax < max(ndim, 1):
            raise ValueError(f"axis {ax} is out of range for a tensor of {ndim} dimensions")
        out.append(ax % max(ndim, 1))
    return tuple(out)


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
