"""Shapes, views and indexing of the Tensor, with PyTorch's names, signatures and errors
(a dimension out of range is an IndexError)."""
from __future__ import annotations

import math
import numbers

import numpy as np

from .._backend import array_module
from ..autograd import engine
from ..autograd.functions.index import Gather, Scatter, check_index
from ..autograd.functions.shape import Diagonal, Expand, Flip, Index, Permute, Reshape, Roll, Take, Tile, Triangle
from .base import TensorBase, is_tensor
from .promote import check_dim


def _sizes(args):
    """A shape given as separate ints or as one tuple/list."""
    return tuple(args[0]) if len(args) == 1 and isinstance(args[0], (tuple, list)) else tuple(args)


def _index_data(i):
    if is_tensor(i):
        return i.data
    if isinstance(i, list) and any(is_tensor(x) for x in i):
        return [x.data if is_tensor(x) else x for x in i]
    return i


def _is_advanced(i) -> bool:
    return not (i is None or i is Ellipsis or isinstance(i, (slice, numbers.Integral)))


def torch_index(index):
    """(first, rest) such that a[first][rest] is PyTorch's a[index], or (None, index) where NumPy
    agrees with PyTorch. They differ when integers and index arrays are separated by a slice
    (a[0, :, [1, 2]]): NumPy counts the integer as an advanced index and moves the indexed
    dimensions first; PyTorch applies the integer first, so only the arrays' dimensions move."""
    if not isinstance(index, tuple):
        return None, index
    ints = [isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in index]
    if not any(ints) or not any(_is_advanced(i) for i in index):
        return None, index
    first, rest = [], []
    for i, is_int in zip(index, ints):
        if is_int:
            first.append(i)
        elif i is None or i is Ellipsis:
            first.append(i)
            rest.append(slice(None) if i is None else i)
        else:
            width = getattr(i, "ndim", 1) if getattr(i, "dtype", None) is not None and i.dtype == bool else 1
            first.extend([slice(None)] * width)
            rest.append(i)
    return tuple(first), tuple(rest)


class TensorShape(TensorBase):
    __slots__ = ()

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[check_dim(dim, self.ndim)]

    def dim(self) -> int:
        return self.ndim

    def contiguous(self):
        return self

    def reshape(self, *shape):
        return Reshape.apply(self, shape=_sizes(shape))

    def view(self, *shape):
        return self.reshape(*shape)

    def view_as(self, other):
        return self.reshape(other.shape)

    reshape_as = view_as

    def flatten(self, start_dim: int = 0, end_dim: int = -1):
        if self.ndim == 0:
            return self.reshape(1)
        s, e = check_dim(start_dim, self.ndim), check_dim(end_dim, self.ndim)
        if s > e:
            raise RuntimeError("flatten() has invalid args: start_dim cannot come after end_dim")
        return self.reshape(self.shape[:s] + (-1,) + self.shape[e + 1:])

    def permute(self, *dims):
        dims = _sizes(dims)
        if len(dims) != self.ndim:
            raise RuntimeError(f"permute(sparse_coo): number of dimensions in the tensor input does not match "
                               f"the length of the desired ordering of dimensions i.e. input.dim() = {self.ndim} "
                               f"is not equal to len(dims) = {len(dims)}")
        axes = tuple(check_dim(d, self.ndim) for d in dims)
        if len(set(axes)) != len(axes):
            raise RuntimeError(f"permute(): duplicate dims are not allowed, got {dims}")
        return Permute.apply(self, axes=axes)

    def transpose(self, dim0: int = -2, dim1: int = -1):
        if self.ndim < 2 and (dim0, dim1) == (-2, -1):
            return self
        axes = list(range(self.ndim))
        d0, d1 = check_dim(dim0, self.ndim), check_dim(dim1, self.ndim)
        if self.ndim == 0:
            return self
        axes[d0], axes[d1] = axes[d1], axes[d0]
        return Permute.apply(self, axes=tuple(axes))

    swapaxes = swapdims = transpose

    def t(self):
        if self.ndim > 2:
            raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is {self.ndim}D")
        return self.transpose(0, -1) if self.ndim == 2 else self

    @property
    def T(self):
        return Permute.apply(self, axes=tuple(reversed(range(self.ndim))))

    @property
    def mT(self):
        return self.transpose(-2, -1)

    def movedim(self, source, destination):
        src = (source,) if isinstance(source, numbers.Integral) else tuple(source)
        dst = (destination,) if isinstance(destination, numbers.Integral) else tuple(destination)
        if len(src) != len(dst):
            raise RuntimeError(f"movedim: Invalid source or destination dims: source ({list(src)} dims) should "
                               f"contain the same number of dims as destination ({list(dst)} dims)")
        src = [check_dim(d, self.ndim) for d in src]
        dst = [check_dim(d, self.ndim) for d in dst]
        order = [d for d in range(self.ndim) if d not in src]
        for d, s in sorted(zip(dst, src)):
            order.insert(d, s)
        return Permute.apply(self, axes=tuple(order))

    moveaxis = movedim

    def unsqueeze(self, dim: int):
        d = check_dim(dim, self.ndim + 1)
        return self.reshape(self.shape[:d] + (1,) + self.shape[d:])

    def squeeze(self, dim=None):
        if dim is None:
            return self.reshape(tuple(n for n in self.shape if n != 1))
        dims = {check_dim(d, self.ndim) for d in ((dim,) if isinstance(dim, numbers.Integral) else dim)}
        return self.reshape(tuple(n for i, n in enumerate(self.shape) if not (i in dims and n == 1)))

    def expand(self, *sizes):
        sizes = _sizes(sizes)
        if len(sizes) < self.ndim:
            raise RuntimeError(f"expand: the number of sizes provided ({len(sizes)}) must be greater or equal to "
                               f"the number of dimensions in the tensor ({self.ndim})")
        lead = len(sizes) - self.ndim
        shape = []
        for i, n in enumerate(sizes):
            own = self.shape[i - lead] if i >= lead else None
            if n == -1:
                if own is None:
                    raise RuntimeError("expand: -1 is not allowed in a leading, non-existing dimension")
                n = own
            if own is not None and own != 1 and own != n:
                raise RuntimeError(f"The expanded size of the tensor ({n}) must match the existing size ({own}) "
                                   f"at non-singleton dimension {i}.  Target sizes: {list(sizes)}.  "
                                   f"Tensor sizes: {list(self.shape)}")
            shape.append(n)
        return Expand.apply(self, shape=tuple(shape))

    def expand_as(self, other):
        return self.expand(other.shape)

    def broadcast_to(self, shape):
        return self.expand(shape)

    def repeat(self, *sizes):
        sizes = _sizes(sizes)
        if len(sizes) < self.ndim:
            raise RuntimeError("Number of dimensions of repeat dims can not be smaller than number of dimensions "
                               "of tensor")
        x = self.reshape((1,) * (len(sizes) - self.ndim) + self.shape)
        return Tile.apply(x, reps=tuple(sizes))

    def repeat_interleave(self, repeats, dim=None):
        x, d = (self.reshape(-1), 0) if dim is None else (self, check_dim(dim, self.ndim))
        xp = array_module(self.data)
        reps = repeats.data if is_tensor(repeats) else repeats
        index = xp.repeat(xp.arange(x.shape[d] if x.ndim else 1), reps)
        return Take.apply(x if x.ndim else x.reshape(1), index=index, dim=d)

    def flip(self, *dims):
        dims = tuple(check_dim(d, self.ndim) for d in _sizes(dims))
        return Flip.apply(self, dims=dims)

    def fliplr(self): return self.flip(1)
    def flipud(self): return self.flip(0)

    def roll(self, shifts, dims=None):
        if dims is None:
            return Roll.apply(self, shifts=int(shifts) if isinstance(shifts, numbers.Integral) else tuple(shifts))
        shifts = (shifts,) if isinstance(shifts, numbers.Integral) else tuple(shifts)
        dims = (dims,) if isinstance(dims, numbers.Integral) else tuple(dims)
        if len(shifts) != len(dims):
            raise RuntimeError(f"shifts and dimensions must align. shifts: {len(shifts)}, dims: {len(dims)}")
        return Roll.apply(self, shifts=shifts, dims=tuple(check_dim(d, self.ndim) for d in dims))

    def narrow(self, dim, start, length):
        d = check_dim(dim, self.ndim)
        size = self.shape[d]
        start = start + size if start < 0 else start
        if not (0 <= start <= size) or length < 0 or start + length > size:
            raise IndexError(f"narrow(): start ({start}) + length ({length}) exceeds dimension size ({size}).")
        return self[(slice(None),) * d + (slice(start, start + length),)]

    def split(self, split_size_or_sections, dim=0):
        d = check_dim(dim, self.ndim)
        size = self.shape[d]
        if isinstance(split_size_or_sections, numbers.Integral):
            step = int(split_size_or_sections)
            if step <= 0 and size:
                raise RuntimeError(f"split_size can only be 0 if dimension size is 0, but got dimension size of {size}")
            sizes = [min(step, size - s) for s in range(0, size, step)] if size else [0]
        else:
            sizes = list(split_size_or_sections)
            if sum(sizes) != size:
                raise RuntimeError(f"split_with_sizes expects split_sizes to sum exactly to {size} (input tensor's "
                                   f"size at dimension {d}), but got split_sizes={sizes}")
        starts = np.cumsum([0] + sizes[:-1]).tolist()
        return tuple(self.narrow(d, s, n) for s, n in zip(starts, sizes))

    def chunk(self, chunks: int, dim=0):
        if chunks <= 0:
            raise RuntimeError("chunk expects `chunks` to be greater than 0")
        size = self.shape[check_dim(dim, self.ndim)]
        return self.split(max(math.ceil(size / chunks), 1), dim)

    def unbind(self, dim=0):
        d = check_dim(dim, self.ndim)
        return tuple(self[(slice(None),) * d + (i,)] for i in range(self.shape[d]))

    def tril(self, diagonal: int = 0): return self._triangle(diagonal, True)
    def triu(self, diagonal: int = 0): return self._triangle(diagonal, False)

    def _triangle(self, k, lower):
        if self.ndim < 2:
            raise RuntimeError(f"{'tril' if lower else 'triu'}: input tensor must have at least 2 dimensions")
        return Triangle.apply(self, k=int(k), lower=lower)

    def diagonal(self, offset: int = 0, dim1: int = 0, dim2: int = 1):
        d1, d2 = check_dim(dim1, self.ndim), check_dim(dim2, self.ndim)
        if d1 == d2:
            raise RuntimeError(f"diagonal dimensions cannot be identical {dim1}, {dim2}")
        return Diagonal.apply(self, offset=int(offset), dim1=d1, dim2=d2)

    def unfold(self, dimension: int, size: int, step: int):
        d = check_dim(dimension, self.ndim)
        n = self.shape[d] if self.ndim else 1
        if size > n:
            raise RuntimeError(f"maximum size for tensor at dimension {d} is {n} but size is {size}")
        if step <= 0:
            raise RuntimeError(f"step is {step} but must be > 0")
        xp = array_module(self.data)
        index = xp.arange((n - size) // step + 1)[:, None] * step + xp.arange(size)[None, :]
        windows = Take.apply(self if self.ndim else self.reshape(1), index=index, dim=d)
        return windows.movedim(d + 1, -1) if self.ndim else windows.reshape(1, size)[0]

    def index_select(self, dim, index):
        d = check_dim(dim, self.ndim)
        idx = index.data if is_tensor(index) else array_module(self.data).asarray(index)
        if idx.ndim > 1:
            raise IndexError("index_select(): Index is supposed to be a vector")
        check_index(idx, self.shape[d] if self.ndim else 1, d, "index_select", IndexError)
        return Take.apply(self if self.ndim else self.reshape(1), index=idx.reshape(-1), dim=d)

    def gather(self, dim, index):
        d = check_dim(dim, self.ndim)
        idx = self._index_tensor(index, "gather")
        for i, (n, m) in enumerate(zip(idx.shape, self.shape)):
            if i != d and n > m:
                raise RuntimeError(f"Size does not match at dimension {i} expected index {list(idx.shape)} to be "
                                   f"no larger than self {list(self.shape)} apart from dimension {d}")
        check_index(idx, self.shape[d], d, "gather")
        return Gather.apply(self, index=idx, dim=d)

    def _index_tensor(self, index, fn):
        idx = index.data if is_tensor(index) else array_module(self.data).asarray(index)
        if idx.ndim != self.ndim:
            raise RuntimeError(f"{fn}(): Index tensor must have the same number of dimensions as input tensor")
        return idx

    def scatter(self, dim, index, src=None, value=None, reduce=None):
        return self._scatter(dim, index, value if src is None else src, add=reduce == "add", fn="scatter")

    def scatter_add(self, dim, index, src):
        return self._scatter(dim, index, src, add=True, fn="scatter_add")

    def _scatter(self, dim, index, src, add, fn):
        d = check_dim(dim, self.ndim)
        idx = self._index_tensor(index, fn)
        check_index(idx, self.shape[d], d, fn)
        if not is_tensor(src):
            src = self._constant(src, self.dtype)
        elif src.dtype != self.dtype:
            raise RuntimeError(f"{fn}(): Expected self.dtype to be equal to src.dtype ({self.dtype} vs {src.dtype})")
        return Scatter.apply(self, src, index=idx, dim=d, add=add)

    # -- indexing --------------------------------------------------------------------------------
    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.shape[0]))

    def __contains__(self, element) -> bool:
        return bool((self == element).any())

    def __format__(self, spec):
        if self.ndim == 0 and spec:
            return format(self.item(), spec)
        return object.__format__(self, spec) if not spec else format(str(self), spec)

    def __getitem__(self, index):
        index = tuple(_index_data(i) for i in index) if isinstance(index, tuple) else _index_data(index)
        first, rest = torch_index(index)
        return Index.apply(self, index=rest, first=first)

    def __setitem__(self, index, value):
        if self.requires_grad and engine.is_grad_enabled():
            raise RuntimeError("in-place assignment into a tensor that requires grad is not supported")
        index = tuple(_index_data(i) for i in index) if isinstance(index, tuple) else _index_data(index)
        first, rest = torch_index(index)
        target = self.data if first is None else self.data[first]
        target[rest] = value.data if is_tensor(value) else value
