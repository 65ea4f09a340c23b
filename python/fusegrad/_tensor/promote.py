"""PyTorch's dtype promotion and argument spellings, for the Tensor's methods.

Promotion follows torch.result_type: categories bool < integer < floating; a Python (or NumPy)
scalar, and a 0-d tensor beside a tensor with dimensions, only decide the category, never widen
within it (int32 tensor + 1 stays int32; float32 tensor + 2.5 stays float32; int32 tensor + 2.5
is float32, the default float dtype); two dimensioned tensors of one category promote as NumPy
does (int32 + int64 -> int64, float32 + float64 -> float64). Integer division gives float32.
Nothing becomes float64 unless an operand already is.
"""
from __future__ import annotations

import numbers

import numpy as np

DEFAULT_FLOAT = np.dtype(np.float32)
DEFAULT_INT = np.dtype(np.int64)
BOOL = np.dtype(np.bool_)

# torch-style aliases: fusegrad.float32 etc. are NumPy dtypes
DTYPE_NAMES = {
    "float32": np.float32, "float": np.float32, "float64": np.float64, "double": np.float64,
    "float16": np.float16, "half": np.float16, "int8": np.int8, "uint8": np.uint8, "int16": np.int16,
    "short": np.int16, "int32": np.int32, "int": np.int32, "int64": np.int64, "long": np.int64,
    "byte": np.uint8, "char": np.int8, "bool": np.bool_,
}


def category(dtype) -> int:
    """0 bool, 1 integer, 2 floating (complex is not supported)."""
    kind = np.dtype(dtype).kind
    if kind == "b":
        return 0
    if kind in "iu":
        return 1
    if kind == "f":
        return 2
    raise TypeError(f"dtype {dtype} is not supported (bool, integer or floating-point only)")


def as_dtype(dtype) -> np.dtype:
    """A NumPy dtype from a NumPy dtype or type, a name ('float32', 'long', 'torch.float32'), or a
    PyTorch dtype; TypeError otherwise."""
    if isinstance(dtype, str) or type(dtype).__module__ == "torch":
        name = str(dtype).rsplit(".", 1)[-1]
        if name in DTYPE_NAMES:
            return np.dtype(DTYPE_NAMES[name])
        raise TypeError(f"unknown dtype {dtype!r}")
    try:
        result = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"expected a dtype, got {dtype!r}") from None
    category(result)
    return result


def scalar_dtype(value) -> np.dtype:
    """The default dtype of a Python scalar's category (bool, int64, float32)."""
    if isinstance(value, (bool, np.bool_)):
        return BOOL
    if isinstance(value, numbers.Integral):
        return DEFAULT_INT
    if isinstance(value, numbers.Real):
        return DEFAULT_FLOAT
    raise TypeError(f"expected a number or a tensor, got {type(value).__name__}")


def is_scalar(value) -> bool:
    return isinstance(value, (numbers.Number, np.generic)) and not isinstance(value, complex)


def _tier_type(dtypes):
    """Within one tier: the highest category, promoted within it."""
    top = max(category(d) for d in dtypes)
    result = None
    for d in dtypes:
        if category(d) == top:
            result = d if result is None else np.promote_types(result, d)
    return np.dtype(result)


def result_type(*operands) -> np.dtype:
    """The dtype of an op on tensors (arrays) and scalars, by PyTorch's rules: tensors with
    dimensions first, then 0-d tensors, then scalars; a later tier counts only when its category
    is higher (a scalar then brings its category's default dtype)."""
    tiers = ([np.dtype(x.dtype) for x in operands if not is_scalar(x) and x.ndim > 0],
             [np.dtype(x.dtype) for x in operands if not is_scalar(x) and x.ndim == 0],
             [scalar_dtype(x) for x in operands if is_scalar(x)])
    result = None
    for dtypes in tiers:
        if dtypes:
            tier = _tier_type(dtypes)
            if result is None or category(tier) > category(result):
                result = tier
    return result


def float_type(dtype) -> np.dtype:
    """dtype itself when floating, else the default float dtype (for /, sqrt, exp ...)."""
    return np.dtype(dtype) if np.dtype(dtype).kind == "f" else DEFAULT_FLOAT


def dim_arg(dim, axis, fn: str, default=None):
    """The one dimension argument of `fn` given as dim= (PyTorch) or axis= (NumPy); `default` is
    dim's default value (so dim=default with axis=... is not taken as both)."""
    if axis is not None:
        if dim is not None and dim != default:
            raise TypeError(f"{fn}: give dim or axis, not both")
        return axis
    return dim


def keep_arg(keepdim, keepdims) -> bool:
    return bool(keepdims) if keepdims is not None else bool(keepdim)


def check_dim(dim, ndim: int) -> int:
    """dim in [-ndim, ndim) (a 0-d tensor takes 0 and -1) as a non-negative int; IndexError
    otherwise, worded as PyTorch's."""
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise TypeError(f"dim must be an int, got {dim!r}")
    size = max(ndim, 1)
    if not -size <= dim < size:
        raise IndexError(f"Dimension out of range (expected to be in range of [{-size}, {size - 1}], but got {dim})")
    return int(dim) % size
