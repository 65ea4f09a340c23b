"""Reductions of the Tensor with PyTorch's signatures: dim=/keepdim= (NumPy's axis=/keepdims= are
accepted too); max/min along a dim return (values, indices) as PyTorch does."""
from __future__ import annotations

import math
import numbers
from collections import namedtuple

import numpy as np

from .._backend import array_module
from ..autograd.functions.math import StdSqrt
from ..autograd.functions.reduce import CumProd, CumSum, LogSumExp, MaxDim, MaxReduce, Norm, Prod, Sum, normalise_axes
from .base import TensorBase, is_tensor
from .promote import DEFAULT_INT, check_dim, dim_arg, keep_arg

# torch.return_types.max / min: a named tuple (values, indices)
MaxResult = namedtuple("max", ["values", "indices"])
MinResult = namedtuple("min", ["values", "indices"])


def _need_float(t, fn):
    if t.dtype.kind != "f":
        raise RuntimeError(f"{fn}(): could not infer output dtype. Input dtype must be either a floating point or "
                           f"complex dtype. Got: {t.dtype}")


class TensorReduce(TensorBase):
    __slots__ = ()

    def _integers_widened(self):
        return self._cast_to(DEFAULT_INT) if self.dtype.kind in "biu" else self

    def sum(self, dim=None, keepdim=False, *, dtype=None, axis=None, keepdims=None):
        x = self._integers_widened() if dtype is None else self.to(dtype)
        return Sum.apply(x, axis=dim_arg(dim, axis, "sum"), keepdims=keep_arg(keepdim, keepdims))

    def mean(self, dim=None, keepdim=False, *, dtype=None, axis=None, keepdims=None):
        x = self if dtype is None else self.to(dtype)
        _need_float(x, "mean")
        axes = normalise_axes(dim_arg(dim, axis, "mean"), self.ndim)
        count = math.prod(self.shape[a] for a in axes)
        return x.sum(axes, keep_arg(keepdim, keepdims)) * (1.0 / count if count else float("nan"))

    def var(self, dim=None, unbiased=None, keepdim=False, *, correction=None, axis=None, keepdims=None):
        _need_float(self, "var")
        if isinstance(dim, bool) and unbiased is None:  # var(unbiased) in PyTorch's old spelling
            dim, unbiased = None, dim
        if correction is None:
            correction = 1 if unbiased is None else int(bool(unbiased))
        axes = normalise_axes(dim_arg(dim, axis, "var"), self.ndim)
        count = math.prod(self.shape[a] for a in axes)
        centred = self - self.mean(axes, keepdim=True)
        denom = max(count - correction, 0)
        return (centred * centred).sum(axes, keep_arg(keepdim, keepdims)) * (1.0 / denom if denom else float("nan"))

    def std(self, dim=None, unbiased=None, keepdim=False, *, correction=None, axis=None, keepdims=None):
        return StdSqrt.apply(self.var(dim, unbiased, keepdim, correction=correction, axis=axis, keepdims=keepdims))

    def _extreme(self, dim, keepdim, take_max, result):
        if is_tensor(dim):  # max(other): the elementwise maximum
            return self.maximum(dim) if take_max else self.minimum(dim)
        if dim is None:
            if self.size == 0:
                raise RuntimeError(f"{'max' if take_max else 'min'}(): Expected reduction dim to be specified for "
                                   "input.numel() == 0. Specify the reduction dim with the 'dim' argument.")
            return MaxReduce.apply(self, axis=None, keepdims=False, take_max=take_max)
        if not isinstance(dim, numbers.Integral):
            raise TypeError(f"max/min take one dim (an int); for several use amax/amin, got {dim!r}")
        d = check_dim(dim, self.ndim)
        x = self if self.ndim else self.reshape(1)
        if x.shape[d] == 0:
            raise IndexError(f"max(): Expected reduction dim {d} to have non-zero size.")
        xp = array_module(x.data)
        find = xp.argmax if take_max else xp.argmin
        idx = xp.expand_dims(find(x.data, axis=d), d).astype(np.int64)
        values = MaxDim.apply(x, indices=idx, dim=d, keepdim=keepdim or self.ndim == 0)
        indices = idx if keepdim else idx.squeeze(d)
        if self.ndim == 0:
            values, indices = values.reshape(()), indices.reshape(())
        return result(values, self._wrap(indices, False))

    def max(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return self._extreme(dim_arg(dim, axis, "max"), keep_arg(keepdim, keepdims), True, MaxResult)

    def min(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return self._extreme(dim_arg(dim, axis, "min"), keep_arg(keepdim, keepdims), False, MinResult)

    def amax(self, dim=(), keepdim=False, *, axis=None, keepdims=None):
        dim = dim_arg(dim, axis, "amax", ())
        return MaxReduce.apply(self, axis=None if dim == () else dim, keepdims=keep_arg(keepdim, keepdims),
                               take_max=True)

    def amin(self, dim=(), keepdim=False, *, axis=None, keepdims=None):
        dim = dim_arg(dim, axis, "amin", ())
        return MaxReduce.apply(self, axis=None if dim == () else dim, keepdims=keep_arg(keepdim, keepdims),
                               take_max=False)

    def _arg(self, dim, keepdim, take_max):
        xp = array_module(self.data)
        find = xp.argmax if take_max else xp.argmin
        if self.size == 0:
            raise RuntimeError("argmax(): Expected reduction dim to be specified for input.numel() == 0.")
        if dim is None:
            out = xp.asarray(find(self.data.reshape(-1)))
            return self._wrap(out.reshape((1,) * self.ndim if keepdim else ()).astype(np.int64), False)
        d = check_dim(dim, self.ndim)
        x = self.data if self.ndim else self.data.reshape(1)
        out = xp.asarray(find(x, axis=d))
        out = xp.expand_dims(out, d) if keepdim and self.ndim else out.reshape(out.shape if self.ndim else ())
        return self._wrap(out.astype(np.int64), False)

    def argmax(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return self._arg(dim_arg(dim, axis, "argmax"), keep_arg(keepdim, keepdims), True)

    def argmin(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return self._arg(dim_arg(dim, axis, "argmin"), keep_arg(keepdim, keepdims), False)

    def prod(self, dim=None, keepdim=False, *, dtype=None, axis=None, keepdims=None):
        x = self._integers_widened() if dtype is None else self.to(dtype)
        dim = dim_arg(dim, axis, "prod")
        d = None if dim is None else check_dim(dim, self.ndim)
        if d is not None and self.ndim == 0:
            d = None
        return Prod.apply(x, dim=d, keepdim=keep_arg(keepdim, keepdims) and d is not None)

    def _logical(self, dim, keepdim, fn):
        axes = None if dim is None else normalise_axes(dim, self.ndim)
        xp = array_module(self.data)
        return self._wrap(xp.asarray(fn(self.data != 0, axis=axes, keepdims=keepdim)), False)

    def any(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return self._logical(dim_arg(dim, axis, "any"), keep_arg(keepdim, keepdims), array_module(self.data).any)

    def all(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return self._logical(dim_arg(dim, axis, "all"), keep_arg(keepdim, keepdims), array_module(self.data).all)

    def count_nonzero(self, dim=None):
        return (self != 0).sum(dim)

    def cumsum(self, dim, *, dtype=None):
        x = self._integers_widened() if dtype is None else self.to(dtype)
        if self.ndim == 0:
            return x.reshape(1).cumsum(0).reshape(())
        return CumSum.apply(x, dim=check_dim(dim, self.ndim))

    def cumprod(self, dim, *, dtype=None):
        x = self._integers_widened() if dtype is None else self.to(dtype)
        if self.ndim == 0:
            return x.reshape(1).cumprod(0).reshape(())
        return CumProd.apply(x, dim=check_dim(dim, self.ndim))

    def logsumexp(self, dim, keepdim=False):
        x = self._floating()
        return LogSumExp.apply(x, axes=normalise_axes(dim, self.ndim), keepdim=bool(keepdim))

    def norm(self, p="fro", dim=None, keepdim=False, dtype=None):
        x = self._floating() if dtype is None else self.to(dtype)
        if p in ("fro", None):
            p = 2.0
        if isinstance(p, str):
            raise RuntimeError(f"norm: p={p!r} is not supported (use a number, 'fro' or inf)")
        p = float(p)
        if not p > 0:
            raise RuntimeError(f"norm: p must be > 0 or inf, got {p}")
        return Norm.apply(x, p=p, axes=normalise_axes(dim, self.ndim), keepdim=bool(keepdim))
