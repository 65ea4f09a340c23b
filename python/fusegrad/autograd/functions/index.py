"""Selection by masks and index tensors: where, masked_fill, clamp with tensor bounds, gather,
scatter and scatter_add (PyTorch's semantics: the index may be smaller than the input in the
other dimensions; out-of-range indices raise RuntimeError as in PyTorch)."""
from __future__ import annotations

from ..._backend import array_module
from ..engine import Function
from .elementwise import unbroadcast


class Where(Function):
    def forward(self, x, y, cond=None):
        self.save(cond, x.shape, y.shape)
        return array_module(x).where(cond, x, y)

    def backward(self, g):
        cond, sx, sy = self.saved
        zero = array_module(g).zeros((), g.dtype)
        xp = array_module(g)
        return (unbroadcast(xp.where(cond, g, zero), sx) if self.needs_grad[0] else None,
                unbroadcast(xp.where(cond, zero, g), sy) if self.needs_grad[1] else None)


class MaskedFill(Function):
    def forward(self, a, mask=None, value=0):
        xp = array_module(a)
        self.save(mask, a.shape)
        return xp.where(mask, xp.asarray(value, dtype=a.dtype), a)

    def backward(self, g):
        mask, shape = self.saved
        return (unbroadcast(array_module(g).where(mask, g.dtype.type(0), g), shape),)


class ClampTensor(Function):
    """min(max(a, lo), hi) with tensor bounds (lo or hi may be None); each gets the gradient where
    it is the result, as in torch.clamp."""

    def forward(self, a, *bounds, has_lo=True, has_hi=True):
        xp = array_module(a)
        bounds = list(bounds)
        lo = bounds.pop(0) if has_lo else None
        hi = bounds.pop(0) if has_hi else None
        out = a
        keep = xp.ones(a.shape, bool)
        if lo is not None:
            keep = keep & (a >= lo)
            out = xp.maximum(out, lo)
        if hi is not None:
            keep = keep & (a <= hi)
            out = xp.minimum(out, hi)
        to_lo = (~keep & (out == lo)) if lo is not None else None
        to_hi = (~keep & ~to_lo if to_lo is not None else ~keep) if hi is not None else None
        self.save(a.shape, [m for m in (keep, to_lo, to_hi) if m is not None],
                  [x.shape for x in (a, lo, hi) if x is not None])
        return out

    def backward(self, g):
        shape, masks, shapes = self.saved
        g = array_module(g).broadcast_to(g, g.shape)
        return tuple(unbroadcast(g * m, s) for m, s in zip(masks, shapes))


def along(index, dim):
    """Coordinates for every entry of `index`, with `index` itself along `dim`."""
    xp = array_module(index)
    coords = []
    for d, n in enumerate(index.shape):
        shape = [1] * index.ndim
        shape[d] = n
        coords.append(index if d == dim else xp.arange(n).reshape(shape))
    return tuple(coords)


def check_index(index, size: int, dim: int, fn: str, error=RuntimeError):
    """RuntimeError (error) as PyTorch's for a non-integer index or one outside [0, size)."""
    if index.dtype.kind not in "iu":
        raise RuntimeError(f"{fn}(): Expected dtype int64 for index, got {index.dtype}")
    if index.size and (int(index.min()) < 0 or int(index.max()) >= size):
        bad = int(index.max()) if int(index.max()) >= size else int(index.min())
        raise error(f"{fn}(): index {bad} is out of bounds for dimension {dim} with size {size}")


class Gather(Function):
    def forward(self, a, index=None, dim=0):
        coords = along(index, dim)
        self.save(a.shape, coords)
        return a[coords]

    def backward(self, g):
        shape, coords = self.saved
        xp = array_module(g)
        out = xp.zeros(shape, g.dtype)
        xp.add.at(out, coords, g)
        return (out,)


class Scatter(Function):
    """a with src's entries written (add=False) or added at `index` along `dim`; src is sliced
    to the index's shape."""

    def forward(self, a, src, index=None, dim=0, add=False):
        xp = array_module(a)
        coords = along(index, dim)
        full = src.shape
        src = src[tuple(slice(0, n) for n in index.shape)] if src.ndim else xp.broadcast_to(src, index.shape)
        out = a.copy()
        if add:
            xp.add.at(out, coords, src)
        else:
            out[coords] = src
        self.save(coords, add, full)
        return out

    def backward(self, g):
        coords, add, src_shape = self.saved
        xp = array_module(g)
        ga = g
        if not add and self.needs_grad[0]:
            ga = g.copy()
            ga[coords] = 0
        gs = None
        if self.needs_grad[1]:
            picked = g[coords]
            if len(src_shape) == 0:
                gs = picked.sum()
            else:
                gs = xp.zeros(src_shape, g.dtype)
                gs[tuple(slice(0, n) for n in picked.shape)] = picked
        return ga, gs
