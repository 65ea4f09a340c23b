"""The function forms `fusegrad.X(input, ...)` of the Tensor's methods (torch.X), and the few
functions that are not methods of one tensor (where with scalar branches, einsum)."""
from __future__ import annotations

from .._backend import array_module
from ..autograd.functions.math import UNARY
from ..ops.activation import NAMES as ACTIVATIONS
from ..tensor import Tensor
from .promote import is_scalar, result_type


def as_tensor(x, dtype=None, device=None) -> Tensor:
    """x itself when it is a Tensor (of that dtype and device), else a new tensor of it."""
    if isinstance(x, Tensor):
        return x.to(*(a for a in (device, dtype) if a is not None))
    return Tensor(x, dtype=dtype, device=device)


def _method(name):
    def fn(input, *args, **kwargs):  # noqa: A002 - PyTorch's name
        return getattr(as_tensor(input), name)(*args, **kwargs)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"torch.{name}: the function form of Tensor.{name}."
    return fn


METHODS = (
    "add", "sub", "subtract", "mul", "multiply", "div", "divide", "true_divide", "floor_divide", "remainder", "fmod",
    "pow", "neg", "negative", "abs", "absolute", "matmul", "atan2", "arctan2", "exp", "log", "sqrt", "round",
    "eq", "ne", "lt", "le", "gt", "ge", "equal", "logical_and", "logical_or", "logical_xor", "logical_not",
    "bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not",
    "masked_fill", "clamp", "clip", "clamp_min", "clamp_max", "isclose", "allclose", "isnan", "isinf",
    "isfinite", "nan_to_num", "sum", "mean", "var", "std", "prod", "any", "all", "cumsum", "cumprod",
    "logsumexp", "argmin", "argmax", "norm", "amax", "amin", "max", "min", "count_nonzero",
    "reshape", "flatten", "squeeze", "unsqueeze", "transpose", "swapaxes", "permute", "t", "movedim", "moveaxis",
    "flip", "fliplr", "flipud", "roll", "split", "chunk", "unbind", "tril", "triu", "diagonal", "gather",
    "scatter", "scatter_add", "index_select", "narrow", "repeat_interleave", "broadcast_to",
    "softmax", "log_softmax",
) + tuple(n for n in UNARY if n not in ("round", "tanh")) + tuple(n for n in ACTIVATIONS if hasattr(Tensor, n))

for _name in METHODS:
    globals()[_name] = _method(_name)


def where(condition, input=None, other=None):  # noqa: A002
    """input where condition, else other (either may be a Python number); where(condition) alone
    is nonzero(condition, as_tuple=True)."""
    condition = as_tensor(condition)
    if input is None and other is None:
        return nonzero(condition, as_tuple=True)
    if isinstance(input, Tensor):
        return input.where(condition, other)
    if isinstance(other, Tensor):
        x = other._constant(input, result_type(other.data, input) if is_scalar(input) else None)
        return x.where(condition, other)
    dtype = result_type(input, other) if is_scalar(input) and is_scalar(other) else None
    return condition._constant(input, dtype).where(condition, other)


def nonzero(input, as_tuple=False):  # noqa: A002
    t = as_tensor(input)
    xp = array_module(t.data)
    found = xp.nonzero(t.data if t.ndim else t.data.reshape(1))
    if as_tuple:
        return tuple(Tensor._wrap(i.astype("int64"), False) for i in found)
    return Tensor._wrap(xp.stack(found, axis=-1).astype("int64") if found else xp.zeros((0, 0), "int64"), False)


def numel(input) -> int:  # noqa: A002
    return as_tensor(input).numel()


def is_tensor(x) -> bool:
    return isinstance(x, Tensor)
