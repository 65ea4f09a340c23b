"""Reshapes, permutations, indexing, concatenation and moves between devices."""
from __future__ import annotations

import numpy as np

from ..._backend import array_module, device_of, to_device
from ..engine import Function
from .elementwise import unbroadcast


class Reshape(Function):
    def forward(self, a, shape=()):
        self.save(a.shape)
        return a.reshape(shape)

    def backward(self, g):
        return (g.reshape(self.saved[0]),)


class Permute(Function):
    def forward(self, a, axes=()):
        self.save(axes)
        return a.transpose(axes)

    def backward(self, g):
        return (g.transpose(np.argsort(self.saved[0])),)


class Index(Function):
    """a[index], or a[first][index] when `first` is given: PyTorch applies integer indices before
    advanced ones (tensor.py splits such an index in two), so the gradient goes through both."""

    def forward(self, a, index=None, first=None):
        self.save(a.shape, index, first)
        return a[index] if first is None else a[first][index]

    def backward(self, g):
        shape, index, first = self.saved
        xp = array_module(g)
        out = xp.zeros(shape, dtype=g.dtype)
        target = out if first is None else out[first]
        if _is_basic(index):
            target[index] = g  # a view: each element at most once
        else:
            xp.add.at(target, index, g)  # repeated indices accumulate
        return (out,)


def _is_basic(index) -> bool:
    """Whether `index` is NumPy basic indexing (integers, slices, Ellipsis, None): it selects each
    element at most once, so its gradient is a plain assignment rather than the much slower add.at."""
    items = index if isinstance(index, tuple) else (index,)
    return all(i is None or i is Ellipsis or isinstance(i, slice) or
               (isinstance(i, (int, np.integer)) and not isinstance(i, (bool, np.bool_))) for i in items)


class Expand(Function):
    """A broadcast view (torch.expand); the gradient is summed back."""

    def forward(self, a, shape=()):
        self.save(a.shape)
        return array_module(a).broadcast_to(a, shape)

    def backward(self, g):
        return (unbroadcast(g, self.saved[0]),)


class Tile(Function):
    """torch.repeat: the array tiled `reps` times along each axis (reps as long as a.ndim)."""

    def forward(self, a, reps=()):
        self.save(a.shape, reps)
        return array_module(a).tile(a, reps)

    def backward(self, g):
        shape, reps = self.saved
        split = [n for pair in zip(reps, shape) for n in pair]
        return (g.reshape(split).sum(axis=tuple(range(0, 2 * len(shape), 2))),)


class Flip(Function):
    def forward(self, a, dims=()):
        self.save(dims)
        return array_module(a).flip(a, axis=dims)

    def backward(self, g):
        return (array_module(g).flip(g, axis=self.saved[0]),)


class Roll(Function):
    def forward(self, a, shifts=0, dims=None):
        self.save(shifts, dims)
        return array_module(a).roll(a, shifts, axis=dims)

    def backward(self, g):
        shifts, dims = self.saved
        back = tuple(-s for s in shifts) if isinstance(shifts, tuple) else -shifts
        return (array_module(g).roll(g, back, axis=dims),)


class Diagonal(Function):
    def forward(self, a, offset=0, dim1=0, dim2=1):
        self.save(a.shape, offset, dim1, dim2)
        return array_module(a).diagonal(a, offset, dim1, dim2).copy()

    def backward(self, g):
        shape, offset, dim1, dim2 = self.saved
        xp = array_module(g)
        out = xp.zeros(shape, g.dtype)
        view = xp.moveaxis(out, (dim1, dim2), (-2, -1))
        i = xp.arange(g.shape[-1])
        view[..., i + max(-offset, 0), i + max(offset, 0)] = g
        return (out,)


class Triangle(Function):
    """tril (lower=True) or triu of the last two axes, with diagonal offset k."""

    def forward(self, a, k=0, lower=True):
        xp = array_module(a)
        ones = xp.ones(a.shape[-2:], dtype=bool)
        mask = xp.tril(ones, k) if lower else xp.triu(ones, k)
        self.save(mask)
        return xp.where(mask, a, xp.zeros((), a.dtype))

    def backward(self, g):
        return (g * self.saved[0],)


class Take(Function):
    """a's entries `index` (any shape) along `dim`: index_select, repeat_interleave and unfold. The
    index's axes replace `dim`."""

    def forward(self, a, index=None, dim=0):
        self.save(a.shape, index, dim)
        return array_module(a).take(a, index, axis=dim)

    def backward(self, g):
        shape, index, dim = self.saved
        xp = array_module(g)
        out = xp.zeros(shape, g.dtype)
        k = index.ndim
        xp.add.at(xp.moveaxis(out, dim, 0), index, xp.moveaxis(g, tuple(range(dim, dim + k)), tuple(range(k))))
        return (out,)


class Concatenate(Function):
    def forward(self, *arrays, axis=0):
        self.save([a.shape[axis] for a in arrays], axis)
        return array_module(arrays[0]).concatenate(arrays, axis=axis)

    def backward(self, g):
        sizes, axis = self.saved
        cuts = np.cumsum(sizes)[:-1].tolist()
        return tuple(array_module(g).split(g, cuts, axis=axis))


class ToDevice(Function):
    def forward(self, a, device="cpu"):
        self.save(device_of(a))
        return to_device(a, device)

    def backward(self, g):
        return (to_device(g, self.saved[0]),)


class PadConstant(Function):
    """a padded with `value` by `widths` ((before, after) per axis, all >= 0)."""

    def forward(self, a, widths=(), value=0.0):
        self.save(widths, a.shape)
        return array_module(a).pad(a, widths, mode="constant", constant_values=value)

    def backward(self, g):
        widths, shape = self.saved
        return (g[tuple(slice(b, b + n) for (b, _), n in zip(widths, shape))],)
