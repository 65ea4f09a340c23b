"""The root of the Tensor class: what the method mixins share (operand conversion, casts)."""
from __future__ import annotations

import numpy as np

from .._backend import as_array, on_host, to_device
from ..autograd.functions.math import Cast
from .promote import float_type, is_scalar, result_type


class BroadcastError(ValueError, RuntimeError):
    """Shapes that do not broadcast: a RuntimeError as in PyTorch, and a ValueError as fusegrad's
    other shape errors."""


class TensorBase:
    __slots__ = ()

    def _cast_to(self, dtype):
        """This tensor as `dtype`: itself if it is one already, else a differentiable cast."""
        return self if self.dtype == dtype else Cast.apply(self, dtype=np.dtype(dtype))

    def _constant(self, value, dtype=None):
        """A tensor of `value` (a scalar or array-like) on this tensor's device."""
        if dtype is not None and np.dtype(dtype).kind in "iu" and isinstance(value, int):
            arr = np.array(value).astype(dtype)  # wraps around as PyTorch does (uint8 - 1 is 255)
        else:
            arr = np.asarray(value, dtype=dtype) if dtype is not None else as_array(value)
        if not on_host(self.data):
            arr = to_device(arr, self.device)
        return self._wrap(arr, False)

    def _operand(self, x):
        """A tensor, or a scalar as it is (scalars are weak in promotion); array-likes become
        tensors (float data as float32, like fusegrad.tensor)."""
        if isinstance(x, TensorBase) or is_scalar(x):
            return x
        if x is None or isinstance(x, (str, bytes, dict, set)):
            raise TypeError(f"expected a tensor or a number, got {type(x).__name__}")
        return self._constant(x)

    def _promoted(self, *others, to_float=False):
        """self and the others (tensors or scalars) as tensors of their common dtype (PyTorch's
        promotion; to_float: at least the default float dtype, as for true division)."""
        others = [self._operand(x) for x in others]
        dtype = result_type(self.data, *(x if is_scalar(x) else x.data for x in others))
        if to_float:
            dtype = float_type(dtype)
        converted = [x._cast_to(dtype) if isinstance(x, TensorBase) else self._constant(x, dtype) for x in others]
        shapes = [self.shape] + [x.shape for x in converted]
        if any(s != shapes[0] for s in shapes[1:]):
            try:
                np.broadcast_shapes(*shapes)
            except ValueError:
                raise BroadcastError(f"The size of tensor a {shapes[0]} does not broadcast with the size of tensor b "
                                     f"{shapes[1]}") from None
        return (self._cast_to(dtype), *converted)


def is_tensor(x) -> bool:
    return isinstance(x, TensorBase)
