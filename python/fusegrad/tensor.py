"""Tensor: an array (NumPy on the CPU, CuPy on a GPU) that records the ops made from it, and the
functions that create tensors.

Each op is an autograd Function (autograd/functions/); the methods here pick the Function and
convert their arguments. backward() hands the graph to the autograd engine.
"""
from __future__ import annotations

import math

import numpy as np

from . import _backend
from ._backend import array_module, as_array, normalise_device, on_host, to_device, to_host
from .autograd import engine
from .autograd.functions.activation import Activation
from .autograd.functions.elementwise import Abs, Add, Clamp, Div, Exp, Log, Maximum, Mul, Neg, Pow, Sqrt, Sub
from .autograd.functions.gemm import MatMul
from .autograd.functions.reduce import MaxReduce, Sum, normalise_axes
from .autograd.functions.shape import Concatenate, Index, Permute, Reshape, ToDevice
from .autograd.functions.softmax import Softmax
from .random import default_generator


class _HookHandle:
    _next = 0

    def __init__(self, table: dict):
        self.table, self.id = table, _HookHandle._next
        _HookHandle._next += 1

    def remove(self) -> None:
        self.table.pop(self.id, None)


class Tensor:
    __slots__ = ("data", "grad", "requires_grad", "_ctx", "_grad_hooks", "__weakref__")
    __array_priority__ = 1000  # NumPy defers to Tensor's reflected operators

    def __init__(self, data, requires_grad: bool = False, device=None, dtype=None):
        arr = as_array(data.data if isinstance(data, Tensor) else data, dtype)
        if device is not None:
            arr = to_device(arr, normalise_device(device))
        if requires_grad and arr.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require gradients, got dtype {arr.dtype}")
        self.data = arr
        self.grad: Tensor | None = None
        self.requires_grad = bool(requires_grad)
        self._ctx: engine.Function | None = None

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
        return to_host(self.data)

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
        device = normalise_device(device)
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
        """Accumulates d self / d leaf into the .grad of every leaf that requires a gradient; grad is
        d loss / d self (may be omitted for a one-element tensor)."""
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad (no graph was recorded)")
        if grad is None:
            if self.size != 1:
                raise RuntimeError(
                    f"backward() without a gradient needs a scalar output, got shape {self.shape}; "
                    "pass grad= of the same shape")
            g = array_module(self.data).ones(self.shape, dtype=self.dtype)
        else:
            g = as_array(grad.data if isinstance(grad, Tensor) else grad, self.dtype)
            if tuple(g.shape) != self.shape:
                raise ValueError(f"backward: grad has shape {tuple(g.shape)}, expected {self.shape}")
        engine.backward(self, g, retain_graph)

    def register_post_accumulate_grad_hook(self, hook) -> _HookHandle:
        """hook(tensor) is called during backward() right after this leaf's .grad has received its
        final gradient of that backward (as PyTorch's hook of the same name). Returns a handle
        whose remove() unregisters it."""
        if self._ctx is not None:
            raise RuntimeError("post-accumulate-grad hooks can only be registered on leaf tensors")
        if not callable(hook):
            raise TypeError(f"hook must be callable, got {type(hook).__name__}")
        hooks = getattr(self, "_grad_hooks", None)
        if hooks is None:
            hooks = self._grad_hooks = {}
        handle = _HookHandle(hooks)
        hooks[handle.id] = hook
        return handle

    # -- operators -------------------------------------------------------------------------------
    def _other(self, x) -> Tensor:
        if isinstance(x, Tensor):
            return x
        arr = as_array(x)
        if arr.dtype.kind == "f" or self.dtype.kind == "f":
            arr = arr.astype(self.dtype if self.dtype.kind == "f" else np.float32, copy=False)
        if not on_host(self.data):
            arr = to_device(arr, self.device)
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
        if self.requires_grad and engine.is_grad_enabled():
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
        axes = normalise_axes(axis, self.ndim)
        count = math.prod(self.shape[a] for a in axes)
        return self.sum(axis=axes, keepdims=keepdims) * (1.0 / count if count else float("nan"))

    def var(self, axis=None, keepdims=False, correction: int = 1):
        axes = normalise_axes(axis, self.ndim)
        count = math.prod(self.shape[a] for a in axes)
        centred = self - self.mean(axis=axes, keepdims=True)
        denom = max(count - correction, 0)
        return (centred * centred).sum(axis=axes, keepdims=keepdims) * (1.0 / denom if denom else float("nan"))

    def max(self, axis=None, keepdims=False): return MaxReduce.apply(self, axis=axis, keepdims=keepdims, take_max=True)
    def min(self, axis=None, keepdims=False): return MaxReduce.apply(self, axis=axis, keepdims=keepdims, take_max=False)

    def argmax(self, axis=None):
        return Tensor._wrap(array_module(self.data).asarray(self.data.argmax(axis=axis)), False)

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
    def relu(self): return Activation.apply(self, kind="relu")
    def leaky_relu(self, negative_slope=0.01):
        return Activation.apply(self, kind="leaky_relu", param=float(negative_slope))
    def sigmoid(self): return Activation.apply(self, kind="sigmoid")
    def tanh(self): return Activation.apply(self, kind="tanh")
    def silu(self): return Activation.apply(self, kind="silu")

    def gelu(self, approximate="none"):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate: expected 'none' or 'tanh', got {approximate!r}")
        return Activation.apply(self, kind="gelu" if approximate == "none" else "gelu_tanh")

    def softmax(self, axis=-1): return Softmax.apply(self, axis=axis)
    def log_softmax(self, axis=-1): return Softmax.apply(self, axis=axis, log=True)


# --- creation -------------------------------------------------------------------------------------


def tensor(data, requires_grad: bool = False, device=None, dtype=None) -> Tensor:
    return Tensor(data, requires_grad=requires_grad, device=device, dtype=dtype)


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
    return Tensor._wrap(array_module(t.data).zeros_like(t.data), requires_grad)


def ones_like(t: Tensor, requires_grad=False):
    return Tensor._wrap(array_module(t.data).ones_like(t.data), requires_grad)


def randn(*shape, requires_grad=False, device=None):
    return _make(default_generator().standard_normal(_shape(shape), dtype=np.float32), requires_grad, device)


def rand(*shape, requires_grad=False, device=None):
    return _make(default_generator().random(_shape(shape), dtype=np.float32), requires_grad, device)


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
