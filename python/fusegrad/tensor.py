"""Tensor: an array (NumPy on the CPU, CuPy on a GPU) that records the ops made from it, and the
functions that create tensors.

Each op is an autograd Function (autograd/functions/); the methods, here and in the mixins of
_tensor/ (arithmetic and math, shapes and indexing, reductions), pick the Function and convert
their arguments with PyTorch's rules. backward() hands the graph to the autograd engine.
"""
from __future__ import annotations


import numpy as np

from . import _backend
from ._backend import array_module, as_array, normalise_device, to_device, to_host
from ._tensor.arith import TensorArith
from ._tensor.inplace import TensorInPlace
from ._tensor.promote import DEFAULT_FLOAT, as_dtype, check_dim, dim_arg, result_type
from ._tensor.reduce import TensorReduce
from ._tensor.shape import TensorShape
from .autograd import engine
from .autograd.functions.activation import Activation
from .autograd.functions.shape import Concatenate
from .autograd.functions.softmax import Softmax
from .random import default_generator


class _HookHandle:
    _next = 0

    def __init__(self, table: dict):
        self.table, self.id = table, _HookHandle._next
        _HookHandle._next += 1

    def remove(self) -> None:
        self.table.pop(self.id, None)


class Tensor(TensorInPlace, TensorReduce, TensorShape, TensorArith):
    __slots__ = ("data", "grad", "requires_grad", "_ctx", "_grad_hooks", "__weakref__")
    __array_priority__ = 1000  # NumPy defers to Tensor's reflected operators

    def __init__(self, data, requires_grad: bool = False, device=None, dtype=None):
        arr = as_array(data.data if isinstance(data, Tensor) else data, None if dtype is None else as_dtype(dtype))
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

    def clone(self) -> Tensor:
        """A copy that stays in the graph (its gradient flows to this tensor)."""
        return self + self._constant(0, self.dtype) if self.requires_grad else self._wrap(self.data.copy(), False)

    def new_tensor(self, data, dtype=None) -> Tensor:
        return Tensor(data, device=self.device, dtype=dtype)

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

    def softmax(self, dim=-1, *, axis=None):
        return Softmax.apply(self, axis=check_dim(dim_arg(dim, axis, "softmax", -1), self.ndim))

    def log_softmax(self, dim=-1, *, axis=None):
        return Softmax.apply(self, axis=check_dim(dim_arg(dim, axis, "log_softmax", -1), self.ndim), log=True)


# --- creation -------------------------------------------------------------------------------------


def tensor(data, requires_grad: bool = False, device=None, dtype=None) -> Tensor:
    return Tensor(data, requires_grad=requires_grad, device=device, dtype=dtype)


def _shape(shape):
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else tuple(shape)


def _make(array, requires_grad, device) -> Tensor:
    return Tensor(array, requires_grad=requires_grad, device=device)


def zeros(*shape, requires_grad=False, device=None, dtype=np.float32):
    return _make(np.zeros(_shape(shape), as_dtype(dtype)), requires_grad, device)


def ones(*shape, requires_grad=False, device=None, dtype=np.float32):
    return _make(np.ones(_shape(shape), as_dtype(dtype)), requires_grad, device)


def full(shape, value, requires_grad=False, device=None, dtype=None):
    if dtype is None:
        dtype = result_type(np.zeros(1, np.bool_), value)
    return _make(np.full(_shape((shape,)), value, as_dtype(dtype)), requires_grad, device)


def _like(t: Tensor, fill, dtype, requires_grad):
    xp = array_module(t.data)
    out = xp.full(t.shape, fill, dtype=t.dtype if dtype is None else as_dtype(dtype))
    return Tensor._wrap(out, requires_grad)


def zeros_like(t: Tensor, requires_grad=False, dtype=None):
    return _like(t, 0, dtype, requires_grad)


def ones_like(t: Tensor, requires_grad=False, dtype=None):
    return _like(t, 1, dtype, requires_grad)


def full_like(t: Tensor, fill_value, requires_grad=False, dtype=None):
    return _like(t, fill_value, dtype, requires_grad)


def randn(*shape, requires_grad=False, device=None, dtype=np.float32):
    values = default_generator().standard_normal(_shape(shape), dtype=np.float32)
    return _make(values.astype(as_dtype(dtype), copy=False), requires_grad, device)


def rand(*shape, requires_grad=False, device=None, dtype=np.float32):
    values = default_generator().random(_shape(shape), dtype=np.float32)
    return _make(values.astype(as_dtype(dtype), copy=False), requires_grad, device)


def arange(start, end=None, step=1, device=None, dtype=None, requires_grad=False):
    """Integers (int64) for integer arguments, else float32, unless dtype says otherwise."""
    values = np.arange(start, end, step) if end is not None else np.arange(start)
    if dtype is None and values.dtype.kind == "f":
        dtype = DEFAULT_FLOAT
    return _make(values.astype(as_dtype(dtype)) if dtype is not None else values, requires_grad, device)


def eye(n, m=None, device=None, dtype=np.float32, requires_grad=False):
    return _make(np.eye(n, m, dtype=as_dtype(dtype)), requires_grad, device)


def linspace(start, end, steps, device=None, dtype=np.float32, requires_grad=False):
    return _make(np.linspace(start, end, steps).astype(as_dtype(dtype)), requires_grad, device)


def from_dlpack(x) -> Tensor:
    """A tensor sharing memory with any DLPack producer (PyTorch, CuPy, NumPy, JAX)."""
    arr, _ = _backend.native(x)
    return Tensor._wrap(arr, False)


def _tensors(tensors, fn):
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"{fn}: needs at least one tensor")
    if not all(isinstance(t, Tensor) for t in tensors):
        raise TypeError(f"{fn}: expected a sequence of Tensors")
    dtype = result_type(*(t.data for t in tensors))
    return [t._cast_to(dtype) for t in tensors]


def cat(tensors, dim: int = 0, *, axis=None) -> Tensor:
    tensors = _tensors(tensors, "cat")
    d = check_dim(dim_arg(dim, axis, "cat", 0), tensors[0].ndim)
    return Concatenate.apply(*tensors, axis=d)


concatenate = cat


def stack(tensors, dim: int = 0, *, axis=None) -> Tensor:
    tensors = _tensors(tensors, "stack")
    shapes = {t.shape for t in tensors}
    if len(shapes) > 1:
        raise RuntimeError(f"stack expects each tensor to be equal size, got {sorted(shapes)}")
    d = check_dim(dim_arg(dim, axis, "stack", 0), tensors[0].ndim + 1)
    return cat([t.unsqueeze(d) for t in tensors], dim=d)


def maximum(a: Tensor, b) -> Tensor:
    return a.maximum(b)


def minimum(a: Tensor, b) -> Tensor:
    return a.minimum(b)
