"""Tensor and the autograd engine.

A Tensor wraps a NumPy array (CPU) or a CuPy array (GPU) and, when it requires a gradient and grad
mode is on, remembers the Function that made it. Each op is one Function subclass with its forward
and backward side by side; forward runs on raw arrays, backward returns one gradient array (or None)
per input. Heavy ops (matmul, activations) call fusegrad.ops kernels; cheap ones use the array
module of the storage (`xp`), one code path for both devices.

backward() sorts the graph topologically without recursion (a 5,000-op chain is fine), sums the
gradients of every path, accumulates into `.grad` of leaves, and frees the graph unless
retain_graph=True.
"""
from __future__ import annotations

import functools
import math
import sys

import numpy as np

from . import _backend, ops

# --- grad mode ----------------------------------------------------------------------------------

_grad_enabled = True


def is_grad_enabled() -> bool:
    return _grad_enabled


class no_grad:
    """Context manager and decorator: ops inside record no graph."""

    def __enter__(self):
        global _grad_enabled
        self._previous, _grad_enabled = _grad_enabled, False

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self._previous

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with no_grad():
                return fn(*args, **kwargs)

        return wrapper


class enable_grad(no_grad):
    def __enter__(self):
        global _grad_enabled
        self._previous, _grad_enabled = _grad_enabled, True


# --- random state ---------------------------------------------------------------------------------

_rng = np.random.default_rng()


def manual_seed(seed: int) -> None:
    """Seeds fusegrad's generator: initialisation, dropout, randn/rand and shuffling."""
    global _rng
    _rng = np.random.default_rng(seed)
    cupy = _cupy_if_loaded()
    if cupy is not None:
        cupy.random.seed(seed)


def default_generator() -> np.random.Generator:
    return _rng


def _cupy_if_loaded():
    import sys

    return sys.modules.get("cupy")


# --- devices --------------------------------------------------------------------------------------


def _normalise_device(device) -> str:
    if device is None:
        return "cpu"
    device = str(device)
    if device == "cuda":
        return "cuda:0"
    if device == "cpu" or (device.startswith("cuda:") and device[5:].isdigit()):
        return device
    raise ValueError(f"device: expected 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def _to_device(array, device: str):
    """The array on `device` (a copy only when it moves)."""
    if device == "cpu":
        return array if isinstance(array, np.ndarray) else array.get()
    cupy = _backend.cupy_module()
    index = int(device.split(":")[1])
    if not isinstance(array, np.ndarray) and array.device.id == index:
        return array
    with cupy.cuda.Device(index):
        return cupy.asarray(array)


def _as_array(data, dtype=None):
    """Native array of `data` with fusegrad's default dtypes: floats become float32."""
    if isinstance(data, Tensor):
        data = data.data
    if isinstance(data, np.ndarray) or type(data).__module__.startswith("cupy"):
        arr = data
    elif hasattr(data, "__cuda_array_interface__") or hasattr(data, "__dlpack__"):
        arr, _ = _backend.native(data)
    else:
        arr = np.asarray(data)
    if dtype is not None:
        return arr.astype(dtype, copy=False)
    if arr.dtype.kind == "f" and arr.dtype != np.float32:
        return arr.astype(np.float32)
    return arr


# --- Function ------------------------------------------------------------------------------------


class Function:
    """One differentiable op. Subclasses define forward(*arrays, **kw) and backward(grad)."""

    __slots__ = ("parents", "needs_grad", "saved", "freed")

    def __init__(self, *parents: Tensor):
        self.parents = parents
        self.needs_grad = tuple(p.requires_grad for p in parents)
        self.saved = ()
        self.freed = False

    def save(self, *arrays):
        self.saved = arrays

    def forward(self, *arrays, **kwargs):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError

    @classmethod
    def apply(cls, *parents: Tensor, **kwargs) -> Tensor:
        ctx = cls(*parents)
        data = ctx.forward(*(p.data for p in parents), **kwargs)
        if isinstance(data, np.generic):  # NumPy turns 0-d results into scalars
            data = np.asarray(data)
        requires_grad = _grad_enabled and any(ctx.needs_grad)
        out = Tensor._wrap(data, requires_grad)
        if requires_grad:
            out._ctx = ctx
        return out


def _unbroadcast(grad, shape):
    """Sums `grad` down to `shape`, undoing NumPy broadcasting."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(i + extra for i, n in enumerate(shape) if n == 1 and grad.shape[i + extra] != 1)
    return grad.sum(axis=axes, keepdims=True).reshape(shape) if axes else grad.reshape(shape)


def _xp(a):
    return _backend.array_module(a)


# --- elementwise arithmetic ------------------------------------------------------------------------


class Add(Function):
    def forward(self, a, b):
        self.save(a.shape, b.shape)
        return a + b

    def backward(self, g):
        sa, sb = self.saved
        return _unbroadcast(g, sa), _unbroadcast(g, sb)


class Sub(Function):
    def forward(self, a, b):
        self.save(a.shape, b.shape)
        return a - b

    def backward(self, g):
        sa, sb = self.saved
        return _unbroadcast(g, sa), (_unbroadcast(-g, sb) if self.needs_grad[1] else None)


class Mul(Function):
    def forward(self, a, b):
        self.save(a, b)
        return a * b

    def backward(self, g):
        a, b = self.saved
        return (_unbroadcast(g * b, a.shape) if self.needs_grad[0] else None,
                _unbroadcast(g * a, b.shape) if self.needs_grad[1] else None)


class Div(Function):
    def forward(self, a, b):
        self.save(a, b)
        return a / b

    def backward(self, g):
        a, b = self.saved
        return (_unbroadcast(g / b, a.shape) if self.needs_grad[0] else None,
                _unbroadcast(-g * a / (b * b), b.shape) if self.needs_grad[1] else None)


class Pow(Function):
    """a ** b for tensors a, b (a scalar exponent arrives as a 0-d tensor)."""

    def forward(self, a, b):
        out = a**b
        self.save(a, b, out)
        return out

    def backward(self, g):
        a, b, out = self.saved
        xp = _xp(a)
        ga = _unbroadcast(g * b * a ** (b - 1), a.shape) if self.needs_grad[0] else None
        gb = None
        if self.needs_grad[1]:
            log_a = xp.log(xp.where(a > 0, a, 1)).astype(out.dtype)  # d/db a^b = a^b ln a (a > 0)
            gb = _unbroadcast(g * out * log_a, b.shape)
        return ga, gb


class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, g):
        return (-g,)


class Exp(Function):
    def forward(self, a):
        out = _xp(a).exp(a)
        self.save(out)
        return out

    def backward(self, g):
        return (g * self.saved[0],)


class Log(Function):
    def forward(self, a):
        self.save(a)
        return _xp(a).log(a)

    def backward(self, g):
        return (g / self.saved[0],)


class Sqrt(Function):
    def forward(self, a):
        out = _xp(a).sqrt(a)
        self.save(out)
        return out

    def backward(self, g):
        return (g / (2 * self.saved[0]),)


class Abs(Function):
    def forward(self, a):
        self.save(a)
        return _xp(a).abs(a)

    def backward(self, g):
        return (g * _xp(g).sign(self.saved[0]).astype(g.dtype),)


class Clamp(Function):
    """Gradient flows where min <= a <= max, as in torch.clamp."""

    def forward(self, a, lo=None, hi=None):
        xp = _xp(a)
        self.save((a >= lo if lo is not None else True) & (a <= hi if hi is not None else True))
        return xp.clip(a, lo, hi).astype(a.dtype, copy=False)

    def backward(self, g):
        return (g * self.saved[0],)


class Maximum(Function):
    """Elementwise max; on ties the gradient is split evenly, as in torch.maximum."""

    def forward(self, a, b, take_max=True):
        xp = _xp(a)
        out = xp.maximum(a, b) if take_max else xp.minimum(a, b)
        self.save(a, b, out)
        return out

    def backward(self, g):
        a, b, out = self.saved
        wa = (a == out).astype(g.dtype)
        wb = (b == out).astype(g.dtype)
        total = wa + wb
        return (_unbroadcast(g * wa / total, a.shape) if self.needs_grad[0] else None,
                _unbroadcast(g * wb / total, b.shape) if self.needs_grad[1] else None)


# --- reductions ------------------------------------------------------------------------------------


def _norm_axes(axis, ndim):
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
        axes = _norm_axes(axis, a.ndim)
        self.save(a.shape, axes, keepdims)
        return _xp(a).asarray(a.sum(axis=axes, keepdims=keepdims))

    def backward(self, g):
        shape, axes, keepdims = self.saved
        return (_xp(g).broadcast_to(_expand_reduced(g, shape, axes, keepdims), shape),)


class MaxReduce(Function):
    """max/min over axes; the gradient is split evenly among tied extremes."""

    def forward(self, a, axis=None, keepdims=False, take_max=True):
        axes = _norm_axes(axis, a.ndim)
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


# --- shape ---------------------------------------------------------------------------------------


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
    def forward(self, a, index=None):
        self.save(a.shape, index)
        return a[index]

    def backward(self, g):
        shape, index = self.saved
        xp = _xp(g)
        out = xp.zeros(shape, dtype=g.dtype)
        if xp is np:
            np.add.at(out, index, g)  # repeated indices accumulate
        else:
            xp.add.at(out, index, g)
        return (out,)


class Concatenate(Function):
    def forward(self, *arrays, axis=0):
        self.save([a.shape[axis] for a in arrays], axis)
        return _xp(arrays[0]).concatenate(arrays, axis=axis)

    def backward(self, g):
        sizes, axis = self.saved
        cuts = np.cumsum(sizes)[:-1].tolist()
        return tuple(_xp(g).split(g, cuts, axis=axis))


# --- linear algebra and activations ------------------------------------------------------------


def matmul(a, b, out=None, accumulate=False):
    """a @ b on raw arrays: the fusegrad GEMM for float32 matrices and batches of them, the array
    module's matmul for everything else (float64, vectors, broadcast batches)."""
    if (a.dtype == np.float32 and b.dtype == np.float32 and isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray) and a.ndim in (2, 3) and b.ndim in (2, 3)
            and (b.ndim == 2 or (a.ndim == 3 and a.shape[0] == b.shape[0]))):
        return ops.matmul(a, b, out=out, accumulate=accumulate)
    result = _xp(a).matmul(a, b)
    if out is None:
        return result
    if accumulate:
        out += result
    else:
        out[...] = result
    return out


class MatMul(Function):
    def forward(self, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError("matmul: both operands must have at least one dimension")
        self.save(a, b)
        return matmul(a, b)

    def backward(self, g):
        a, b = self.saved
        xp = _xp(g)
        a2 = a.reshape(1, -1) if a.ndim == 1 else a
        b2 = b.reshape(-1, 1) if b.ndim == 1 else b
        g2 = g
        if a.ndim == 1:
            g2 = xp.expand_dims(g2, -2)
        if b.ndim == 1:
            g2 = xp.expand_dims(g2, -1)
        ga = gb = None
        if self.needs_grad[0]:
            ga = _unbroadcast(matmul(g2, xp.swapaxes(b2, -1, -2)), a2.shape if a.ndim > 1 else (1, a.shape[0]))
            ga = ga.reshape(a.shape)
        if self.needs_grad[1]:
            gb = _unbroadcast(matmul(xp.swapaxes(a2, -1, -2), g2), b2.shape if b.ndim > 1 else (b.shape[0], 1))
            gb = gb.reshape(b.shape)
        return ga, gb


class Activation(Function):
    """The elementwise activations of fusegrad.ops, forward and backward kernels."""

    _BACKWARD_FROM_OUTPUT = ("sigmoid", "tanh")

    def forward(self, a, name="relu", param=None):
        kwargs = {} if param is None else ({"negative_slope": param} if name == "leaky_relu" else {"approximate": param})
        out = getattr(ops, name)(a, **kwargs)
        self.save(name, kwargs, out if name in self._BACKWARD_FROM_OUTPUT else a)
        return out

    def backward(self, g):
        name, kwargs, saved = self.saved
        return (getattr(ops, f"{name}_backward")(g, saved, **kwargs),)


class LogSoftmax(Function):
    def forward(self, a, axis=-1):
        out = ops.log_softmax(a, axis)
        self.save(out, axis)
        return out

    def backward(self, g):
        out, axis = self.saved
        return (ops.log_softmax_backward(g, out, axis),)


class Softmax(Function):
    def forward(self, a, axis=-1):
        out = ops.softmax(a, axis)
        self.save(out, axis)
        return out

    def backward(self, g):
        out, axis = self.saved
        return (ops.softmax_backward(g, out, axis),)


# --- Tensor ----------------------------------------------------------------------------------------


class Tensor:
    __slots__ = ("data", "grad", "requires_grad", "_ctx", "__weakref__")
    __array_priority__ = 1000  # NumPy defers to Tensor's reflected operators

    def __init__(self, data, requires_grad: bool = False, device=None, dtype=None):
        arr = _as_array(data, dtype)
        if device is not None:
            arr = _to_device(arr, _normalise_device(device))
        if requires_grad and arr.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require gradients, got dtype {arr.dtype}")
        self.data = arr
        self.grad: Tensor | None = None
        self.requires_grad = bool(requires_grad)
        self._ctx: Function | None = None

    @classmethod
    def _wrap(cls, data, requires_grad=False) -> Tensor:
        t = Tensor.__new__(Tensor)
        t.data, t.grad, t.requires_grad, t._ctx = data, None, requires_grad, None
        return t

    # -- properties --------------------------------------------------------------------------
    shape = property(lambda self: tuple(self.data.shape))
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    device = property(lambda self: _backend.device_of(self.data))
    is_leaf = property(lambda self: self._ctx is None)

    @property
    def size(self):
        return self.data.size

    def numel(self) -> int:
        return int(self.data.size)

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        dev = "" if self.device == "cpu" else f", device='{self.device}'"
        return f"tensor({np.array2string(self.numpy(), separator=', ', prefix='tensor(')}{dev}{grad})"

    # -- conversion ----------------------------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (shared on the CPU, copied from a GPU)."""
        return self.data if isinstance(self.data, np.ndarray) else self.data.get()

    def __array__(self, dtype=None, copy=None):
        arr = self.numpy()
        return arr if dtype is None else arr.astype(dtype, copy=False)

    def item(self):
        if self.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.numpy().reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def __dlpack__(self, *args, **kwargs):
        return self.data.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self.data.__dlpack_device__()

    def to(self, device) -> Tensor:
        """This tensor on `device`; the same tensor if it is there already. Differentiable."""
        device = _normalise_device(device)
        if device == self.device:
            return self
        return ToDevice.apply(self, device=device)

    def cpu(self) -> Tensor:
        return self.to("cpu")

    def cuda(self, device: int = 0) -> Tensor:
        return self.to(f"cuda:{device}")

    def detach(self) -> Tensor:
        return Tensor._wrap(self.data, False)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if requires_grad and self.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require gradients, got dtype {self.dtype}")
        if not self.is_leaf and not requires_grad:
            raise RuntimeError("requires_grad can only be turned off on leaf tensors; use detach()")
        self.requires_grad = requires_grad
        return self

    def zero_(self) -> Tensor:
        self.data[...] = 0
        return self

    def float(self) -> Tensor:
        return self if self.dtype == np.float32 else Tensor._wrap(self.data.astype(np.float32), False)

    def long(self) -> Tensor:
        return Tensor._wrap(self.data.astype(np.int64), False)

    # -- autograd --------------------------------------------------------------------------------
    def backward(self, grad=None, retain_graph: bool = False) -> None:
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad (no graph was recorded)")
        xp = _xp(self.data)
        if grad is None:
            if self.size != 1:
                raise RuntimeError(
                    f"backward() without a gradient needs a scalar output, got shape {self.shape}; "
                    "pass grad= of the same shape")
            g = xp.ones(self.shape, dtype=self.dtype)
        else:
            g = _as_array(grad.data if isinstance(grad, Tensor) else grad, self.dtype)
            if tuple(g.shape) != self.shape:
                raise ValueError(f"backward: grad has shape {tuple(g.shape)}, expected {self.shape}")
        grads = {id(self): g}
        for node in reversed(_topological_order(self)):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if isinstance(g, np.generic):  # NumPy turns 0-d results into scalars
                g = np.asarray(g)
            ctx = node._ctx
            if ctx is None:  # a leaf: accumulate
                if node.requires_grad:
                    if node.grad is None:
                        # Adopt g when nothing else can see it (it owns its memory, and the only
                        # references are this loop's and getrefcount's); otherwise, e.g. the same
                        # array handed to two parents by an Add, the leaf gets its own copy.
                        private = g.base is None and sys.getrefcount(g) == 2
                        node.grad = Tensor._wrap(g if private else g.copy(), False)
                    else:
                        node.grad.data += g
                continue
            if ctx.freed:
                raise RuntimeError(
                    "backward through a graph that has already been freed; call backward(retain_graph=True) "
                    "the first time to go through it again")
            parent_grads = ctx.backward(g)
            for parent, needs, pg in zip(ctx.parents, ctx.needs_grad, parent_grads):
                if not needs or pg is None:
                    continue
                key = id(parent)
                grads[key] = pg if key not in grads else grads[key] + pg
            parent_grads = pg = g = None  # `grads` holds the only references (see the leaf case)
            if not retain_graph:
                ctx.saved, ctx.freed = (), True

    # -- operators -------------------------------------------------------------------------------
    def _other(self, x) -> Tensor:
        if isinstance(x, Tensor):
            return x
        arr = _as_array(x)
        if arr.dtype.kind == "f" or self.dtype.kind == "f":
            arr = arr.astype(self.dtype if self.dtype.kind == "f" else np.float32, copy=False)
        if not isinstance(self.data, np.ndarray):
            arr = _to_device(arr, self.device)
        return Tensor._wrap(arr, False)

    def __add__(self, x): return Add.apply(self, self._other(x))
    def __radd__(self, x): return Add.apply(self._other(x), self)
    def __sub__(self, x): return Sub.apply(self, self._other(x))
    def __rsub__(self, x): return Sub.apply(self._other(x), self)
    def __mul__(self, x): return Mul.apply(self, self._other(x))
    def __rmul__(self, x): return Mul.apply(self._other(x), self)
    def __truediv__(self, x): return Div.apply(self, self._other(x))
    def __rtruediv__(self, x): return Div.apply(self._other(x), self)
    def __pow__(self, x): return Pow.apply(self, self._other(x))
    def __rpow__(self, x): return Pow.apply(self._other(x), self)
    def __matmul__(self, x): return MatMul.apply(self, self._other(x))
    def __rmatmul__(self, x): return MatMul.apply(self._other(x), self)
    def __neg__(self): return Neg.apply(self)
    def __getitem__(self, index):
        if isinstance(index, Tensor):
            index = index.data
        elif isinstance(index, tuple):
            index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
        return Index.apply(self, index=index)

    def __setitem__(self, index, value):
        if self.requires_grad and _grad_enabled:
            raise RuntimeError("in-place assignment into a tensor that requires grad is not supported")
        self.data[index] = value.data if isinstance(value, Tensor) else value

    # comparisons give plain (non-differentiable) boolean tensors
    def _compare(self, x, op):
        return Tensor._wrap(op(self.data, self._other(x).data), False)

    def __lt__(self, x): return self._compare(x, lambda a, b: a < b)
    def __le__(self, x): return self._compare(x, lambda a, b: a <= b)
    def __gt__(self, x): return self._compare(x, lambda a, b: a > b)
    def __ge__(self, x): return self._compare(x, lambda a, b: a >= b)
    def eq(self, x): return self._compare(x, lambda a, b: a == b)
    __hash__ = object.__hash__

    # -- math ------------------------------------------------------------------------------------
    def exp(self): return Exp.apply(self)
    def log(self): return Log.apply(self)
    def sqrt(self): return Sqrt.apply(self)
    def abs(self): return Abs.apply(self)
    def clamp(self, min=None, max=None):  # noqa: A002 - PyTorch's names
        if min is None and max is None:
            raise ValueError("clamp: give at least one of min and max")
        return Clamp.apply(self, lo=min, hi=max)
    clip = clamp
    def maximum(self, x): return Maximum.apply(self, self._other(x), take_max=True)
    def minimum(self, x): return Maximum.apply(self, self._other(x), take_max=False)

    def sum(self, axis=None, keepdims=False): return Sum.apply(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        axes = _norm_axes(axis, self.ndim)
        count = math.prod(self.shape[a] for a in axes)
        return self.sum(axis=axes, keepdims=keepdims) * (1.0 / count if count else float("nan"))

    def var(self, axis=None, keepdims=False, correction: int = 1):
        axes = _norm_axes(axis, self.ndim)
        count = math.prod(self.shape[a] for a in axes)
        centred = self - self.mean(axis=axes, keepdims=True)
        denom = max(count - correction, 0)
        return (centred * centred).sum(axis=axes, keepdims=keepdims) * (1.0 / denom if denom else float("nan"))

    def max(self, axis=None, keepdims=False): return MaxReduce.apply(self, axis=axis, keepdims=keepdims, take_max=True)
    def min(self, axis=None, keepdims=False): return MaxReduce.apply(self, axis=axis, keepdims=keepdims, take_max=False)

    def argmax(self, axis=None):
        return Tensor._wrap(_xp(self.data).asarray(self.data.argmax(axis=axis)), False)

    # -- shape -----------------------------------------------------------------------------------
    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return Reshape.apply(self, shape=tuple(shape))

    view = reshape

    def flatten(self, start_dim: int = 0, end_dim: int = -1):
        if self.ndim == 0:
            return self.reshape(1)
        s, e = start_dim % self.ndim, end_dim % self.ndim
        return self.reshape(self.shape[:s] + (-1,) + self.shape[e + 1:])

    def permute(self, *axes):
        axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
        if sorted(a % self.ndim for a in axes) != list(range(self.ndim)):
            raise ValueError(f"permute: {tuple(axes)} is not a permutation of {self.ndim} axes")
        return Permute.apply(self, axes=tuple(a % self.ndim for a in axes))

    def transpose(self, dim0: int = -2, dim1: int = -1):
        axes = list(range(self.ndim))
        axes[dim0], axes[dim1] = axes[dim1], axes[dim0]
        return self.permute(axes)

    @property
    def T(self):
        return self.permute(tuple(reversed(range(self.ndim))))

    def unsqueeze(self, axis: int):
        axis = axis % (self.ndim + 1)
        return self.reshape(self.shape[:axis] + (1,) + self.shape[axis:])

    def squeeze(self, axis=None):
        if axis is None:
            return self.reshape(tuple(n for n in self.shape if n != 1))
        axis = axis % self.ndim
        return self.reshape(self.shape[:axis] + self.shape[axis + 1:]) if self.shape[axis] == 1 else self

    # -- activations -------------------------------------------------------------------------
    def relu(self): return Activation.apply(self, name="relu")
    def leaky_relu(self, negative_slope=0.01): return Activation.apply(self, name="leaky_relu", param=negative_slope)
    def sigmoid(self): return Activation.apply(self, name="sigmoid")
    def tanh(self): return Activation.apply(self, name="tanh")
    def silu(self): return Activation.apply(self, name="silu")
    def gelu(self, approximate="none"): return Activation.apply(self, name="gelu", param=approximate)
    def softmax(self, axis=-1): return Softmax.apply(self, axis=axis)
    def log_softmax(self, axis=-1): return LogSoftmax.apply(self, axis=axis)


class ToDevice(Function):
    def forward(self, a, device="cpu"):
        self.save(_backend.device_of(a))
        return _to_device(a, device)

    def backward(self, g):
        return (_to_device(g, self.saved[0]),)


def _topological_order(root: Tensor) -> list:
    """Nodes reachable from root, each after all of its parents; iterative (no recursion limit)."""
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        if node._ctx is not None:
            for parent in node._ctx.parents:
                if parent.requires_grad and id(parent) not in visited:
                    stack.append((parent, False))
    return order


# --- creation -------------------------------------------------------------------------------------


def tensor(data, requires_grad: bool = False, device=None, dtype=None) -> Tensor:
    return Tensor(data, requires_grad=requires_grad, device=device, dtype=dtype)


def _xp_for(device):
    return np if _normalise_device(device) == "cpu" else _backend.cupy_module()


def _shape(shape):
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else tuple(shape)


def _make(array, requires_grad, device) -> Tensor:
    return Tensor(array, requires_grad=requires_grad, device=device)


def zeros(*shape, requires_grad=False, device=None, dtype=np.float32):
    return _make(np.zeros(_shape(shape), dtype), requires_grad, device)


def ones(*shape, requires_grad=False, device=None, dtype=np.float32):
    return _make(np.ones(_shape(shape), dtype), requires_grad, device)


def full(shape, value, requires_grad=False, device=None, dtype=np.float32):
    return _make(np.full(_shape((shape,)), value, dtype), requires_grad, device)


def zeros_like(t: Tensor, requires_grad=False):
    return Tensor._wrap(_xp(t.data).zeros_like(t.data), requires_grad)


def ones_like(t: Tensor, requires_grad=False):
    return Tensor._wrap(_xp(t.data).ones_like(t.data), requires_grad)


def randn(*shape, requires_grad=False, device=None):
    return _make(_rng.standard_normal(_shape(shape), dtype=np.float32), requires_grad, device)


def rand(*shape, requires_grad=False, device=None):
    return _make(_rng.random(_shape(shape), dtype=np.float32), requires_grad, device)


def arange(start, stop=None, step=1, device=None, dtype=None):
    values = np.arange(start, stop, step) if stop is not None else np.arange(start)
    return _make(values.astype(dtype) if dtype else values, False, device)


def from_dlpack(x) -> Tensor:
    """A tensor sharing memory with any DLPack producer (PyTorch, CuPy, NumPy, JAX)."""
    arr, _ = _backend.native(x)
    return Tensor._wrap(arr, False)


def cat(tensors, axis: int = 0) -> Tensor:
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: needs at least one tensor")
    return Concatenate.apply(*tensors, axis=axis)


concatenate = cat


def stack(tensors, axis: int = 0) -> Tensor:
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack: needs at least one tensor")
    shapes = {t.shape for t in tensors}
    if len(shapes) > 1:
        raise ValueError(f"stack: all tensors must have the same shape, got {sorted(shapes)}")
    return cat([t.unsqueeze(axis) for t in tensors], axis=axis)


def maximum(a: Tensor, b) -> Tensor:
    return a.maximum(b)


def minimum(a: Tensor, b) -> Tensor:
    return a.minimum(b)
