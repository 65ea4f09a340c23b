"""Arithmetic, comparisons, logical operators, elementwise math, selection (where, masked_fill,
clamp) and dtype conversions of the Tensor, with PyTorch's names, signatures and dtype rules."""
from __future__ import annotations

import numpy as np

from .._backend import array_module, normalise_device
from ..autograd.functions.elementwise import Abs, Add, Clamp, Div, Exp, Log, Maximum, Mul, Neg, Pow, Sqrt, Sub
from ..autograd.functions.gemm import MatMul
from ..autograd.functions.index import ClampTensor, MaskedFill, Where
from ..autograd.functions.math import INTEGER_CLOSED, UNARY, Atan2, FloorDivide, Fmod, Remainder, Unary
from ..autograd.functions.shape import ToDevice
from .base import TensorBase, is_tensor
from .promote import BOOL, DEFAULT_FLOAT, DTYPE_NAMES, as_dtype, is_scalar, result_type

_TYPE_NAMES = {"float32": "FloatTensor", "float64": "DoubleTensor", "float16": "HalfTensor", "int32": "IntTensor",
               "int64": "LongTensor", "int16": "ShortTensor", "int8": "CharTensor", "uint8": "ByteTensor",
               "bool": "BoolTensor"}


def _bitwise(name):
    def op(self, other, reflected=False):
        if not is_tensor(other) and not is_scalar(other):
            return NotImplemented
        a, b = self._promoted(other)
        if a.dtype.kind not in "biu":
            raise RuntimeError(f"\"{name}\" is not implemented for tensors of dtype {a.dtype} "
                               "(bool and integer tensors only)")
        xp = array_module(a.data)
        fn = getattr(xp, name)
        return self._wrap(xp.asarray(fn(b.data, a.data) if reflected else fn(a.data, b.data)), False)
    return op


def _compare(fn):
    def op(self, other):
        if not is_tensor(other) and not is_scalar(other):
            return NotImplemented
        a, b = self._promoted(other)
        return self._wrap(array_module(a.data).asarray(fn(a.data, b.data)), False)
    return op


def _unary(name):
    def method(self):
        x = self if self.dtype.kind == "f" or name in INTEGER_CLOSED else self._cast_to(DEFAULT_FLOAT)
        return Unary.apply(x, name=name)
    method.__name__ = name
    return method


class TensorArith(TensorBase):
    __slots__ = ()

    # -- arithmetic ------------------------------------------------------------------------------
    def add(self, other, alpha=1):
        a, b = self._promoted(other)
        return Add.apply(a, b if alpha == 1 else b * alpha)

    def sub(self, other, alpha=1):
        if self.dtype == BOOL or isinstance(other, (bool, np.bool_)) or (is_tensor(other) and other.dtype == BOOL):
            raise RuntimeError("Subtraction, the `-` operator, with a bool tensor is not supported. If you are "
                               "trying to invert a mask, use the `~` or `logical_not()` operator instead.")
        a, b = self._promoted(other)
        return Sub.apply(a, b if alpha == 1 else b * alpha)

    def mul(self, other):
        return Mul.apply(*self._promoted(other))

    def div(self, other, rounding_mode=None):
        if rounding_mode is None:
            return Div.apply(*self._promoted(other, to_float=True))
        if rounding_mode == "floor":
            return FloorDivide.apply(*self._no_bool(self._promoted(other), "div_floor"), differentiable=True)
        if rounding_mode != "trunc":
            raise ValueError(f"div expected rounding_mode to be one of None, 'trunc', or 'floor' but found "
                             f"'{rounding_mode}'")
        a, b = self._promoted(other)
        if a.dtype.kind == "f":
            return Div.apply(a, b).trunc()
        floor = FloorDivide.apply(a, b)
        xp = array_module(a.data)
        inexact = (xp.remainder(a.data, b.data) != 0) & ((a.data < 0) ^ (b.data < 0))
        return self._wrap(floor.data + inexact.astype(floor.dtype), False)

    true_divide = divide = lambda self, other: self.div(other)
    multiply = mul
    subtract = sub

    def floor_divide(self, other):
        return FloorDivide.apply(*self._no_bool(self._promoted(other), "div_floor"))

    def remainder(self, other):
        return Remainder.apply(*self._no_bool(self._promoted(other), "remainder"))

    def fmod(self, other):
        return Fmod.apply(*self._no_bool(self._promoted(other), "fmod"))

    @staticmethod
    def _no_bool(operands, name):
        if operands[0].dtype == BOOL:
            raise NotImplementedError(f"\"{name}\" not implemented for 'Bool'")
        return operands

    def pow(self, exponent):
        a, b = self._promoted(exponent)
        if a.dtype == BOOL:  # x ** y on bools: x or not y
            return self._wrap(a.data | ~b.data, False)
        return Pow.apply(a, b)

    def neg(self):
        if self.dtype == BOOL:
            raise RuntimeError("Negation, the `-` operator, on a bool tensor is not supported. "
                               "If you are trying to invert a mask, use the `~` or `logical_not()` operator instead.")
        return Neg.apply(self)

    negative = neg

    def abs(self):
        return Abs.apply(self)

    absolute = abs

    def matmul(self, other):
        other = self._operand(other)
        if not is_tensor(other):
            raise TypeError("matmul: both arguments must be tensors")
        if self.dtype != other.dtype:
            raise RuntimeError(f"expected both operands of matmul to have the same dtype, got {self.dtype} "
                               f"and {other.dtype}")
        return MatMul.apply(self, other)

    def atan2(self, other):
        return Atan2.apply(*self._promoted(other, to_float=True))

    arctan2 = atan2

    def _reflected(self, other, fn):
        other = self._operand(other)
        left = other if is_tensor(other) else self._constant(other, result_type(self.data, other))
        return fn(left, self)

    __add__ = add
    __sub__ = sub
    __mul__ = mul
    __truediv__ = lambda self, x: self.div(x)  # noqa: E731
    __floordiv__ = floor_divide
    __mod__ = remainder
    __pow__ = pow
    __matmul__ = matmul
    __neg__ = neg
    __abs__ = abs
    __radd__ = lambda self, x: self._reflected(x, lambda a, b: a.add(b))  # noqa: E731
    __rsub__ = lambda self, x: self._reflected(self._no_bool_sub(x), lambda a, b: a.sub(b))  # noqa: E731

    def _no_bool_sub(self, x):
        if self.dtype == BOOL or isinstance(x, (bool, np.bool_)):
            self.sub(x)  # raises PyTorch's error
        return x
    __rmul__ = lambda self, x: self._reflected(x, lambda a, b: a.mul(b))  # noqa: E731
    __rtruediv__ = lambda self, x: self._reflected(x, lambda a, b: a.div(b))  # noqa: E731
    __rfloordiv__ = lambda self, x: self._reflected(x, lambda a, b: a.floor_divide(b))  # noqa: E731
    __rmod__ = lambda self, x: self._reflected(x, lambda a, b: a.remainder(b))  # noqa: E731
    __rpow__ = lambda self, x: self._reflected(x, lambda a, b: a.pow(b))  # noqa: E731
    __rmatmul__ = lambda self, x: self._reflected(x, lambda a, b: a.matmul(b))  # noqa: E731

    # -- comparisons and logic (plain bool tensors, no gradient) ----------------------------------
    eq = __eq__ = _compare(lambda a, b: a == b)
    ne = __ne__ = _compare(lambda a, b: a != b)
    lt = less = __lt__ = _compare(lambda a, b: a < b)
    le = less_equal = __le__ = _compare(lambda a, b: a <= b)
    gt = greater = __gt__ = _compare(lambda a, b: a > b)
    ge = greater_equal = __ge__ = _compare(lambda a, b: a >= b)
    __hash__ = object.__hash__
    bitwise_and = __and__ = _bitwise("bitwise_and")
    bitwise_or = __or__ = _bitwise("bitwise_or")
    bitwise_xor = __xor__ = _bitwise("bitwise_xor")
    __rand__ = lambda self, x: _bitwise("bitwise_and")(self, x, True)  # noqa: E731
    __ror__ = lambda self, x: _bitwise("bitwise_or")(self, x, True)  # noqa: E731
    __rxor__ = lambda self, x: _bitwise("bitwise_xor")(self, x, True)  # noqa: E731

    def __invert__(self):
        if self.dtype.kind not in "biu":
            raise RuntimeError(f"\"bitwise_not\" is not implemented for tensors of dtype {self.dtype}")
        xp = array_module(self.data)
        return self._wrap(xp.asarray(xp.invert(self.data)), False)

    bitwise_not = __invert__

    def logical_not(self):
        return self._wrap(array_module(self.data).asarray(self.data == 0), False)

    def _logical(self, other, fn):
        return self._wrap(array_module(self.data).asarray(fn(self.data != 0, self._operand_data(other) != 0)), False)

    def logical_and(self, other): return self._logical(other, lambda a, b: a & b)
    def logical_or(self, other): return self._logical(other, lambda a, b: a | b)
    def logical_xor(self, other): return self._logical(other, lambda a, b: a ^ b)

    def _operand_data(self, other):
        other = self._operand(other)
        return other.data if is_tensor(other) else other

    def equal(self, other) -> bool:
        """True when both have the same shape and elements (torch.equal)."""
        return self.shape == other.shape and bool((self == other).data.all())

    def __bool__(self):
        if self.size != 1:
            raise RuntimeError(f"Boolean value of Tensor with {'no' if self.size == 0 else 'more than one'} "
                               "value is ambiguous")
        return bool(self.item())

    def __float__(self): return float(self._one("float"))
    def __int__(self): return int(self._one("int"))

    def __index__(self):
        if self.dtype.kind not in "iu":
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self._one("index"))

    def _one(self, what):
        if self.size != 1:
            raise RuntimeError(f"a Tensor with {self.size} elements cannot be converted to {what}")
        return self.item()

    # -- elementwise math ----------------------------------------------------------------------
    def exp(self): return Exp.apply(self._floating())
    def log(self): return Log.apply(self._floating())
    def sqrt(self): return Sqrt.apply(self._floating())

    def _floating(self):
        return self if self.dtype.kind == "f" else self._cast_to(DEFAULT_FLOAT)

    def round(self, decimals: int = 0):
        if decimals and self.dtype.kind == "f":
            return Unary.apply(self, name="round", decimals=int(decimals))
        return Unary.apply(self, name="round")

    fix = lambda self: self.trunc()  # noqa: E731
    arcsin = lambda self: self.asin()  # noqa: E731
    arccos = lambda self: self.acos()  # noqa: E731
    arctan = lambda self: self.atan()  # noqa: E731

    def isnan(self): return self._wrap(array_module(self.data).isnan(self.data), False)
    def isinf(self): return self._wrap(array_module(self.data).isinf(self.data), False)
    def isfinite(self): return self._wrap(array_module(self.data).isfinite(self.data), False)

    def isclose(self, other, rtol=1e-05, atol=1e-08, equal_nan=False):
        a, b = self._promoted(other)
        return self._wrap(array_module(a.data).isclose(a.data, b.data, rtol=rtol, atol=atol, equal_nan=equal_nan), False)

    def allclose(self, other, rtol=1e-05, atol=1e-08, equal_nan=False) -> bool:
        return bool(self.isclose(other, rtol, atol, equal_nan).data.all())

    def nan_to_num(self, nan=0.0, posinf=None, neginf=None):
        if self.dtype.kind != "f":
            return self._wrap(self.data.copy(), False)
        xp = array_module(self.data)
        filled = xp.nan_to_num(self.data, nan=nan, posinf=posinf, neginf=neginf)
        return Where.apply(self, self._wrap(filled, False), cond=xp.isfinite(self.data))

    # -- selection -------------------------------------------------------------------------------
    def where(self, condition, other):
        """self where condition, else other (torch.Tensor.where)."""
        if not is_tensor(condition):
            condition = self._constant(condition)
        if condition.dtype != BOOL:
            raise RuntimeError(f"where expected condition to be a boolean tensor, but got a tensor with dtype "
                               f"{condition.dtype}")
        x, y = self._promoted(other)
        return Where.apply(x, y, cond=condition.data)

    def masked_fill(self, mask, value):
        if not is_tensor(mask):
            mask = self._constant(mask)
        if mask.dtype != BOOL:
            raise RuntimeError(f"masked_fill only supports boolean masks, but got mask with dtype {mask.dtype}")
        if is_tensor(value):
            if value.ndim != 0:
                raise RuntimeError("masked_fill only supports a 0-dimensional value tensor, but got tensor "
                                   f"with {value.ndim} dimension(s).")
            value = value.item()
        try:
            fits = np.broadcast_shapes(mask.shape, self.shape) == self.shape
        except ValueError:
            fits = False
        if not fits:
            raise RuntimeError(f"masked_fill: the mask of shape {mask.shape} does not broadcast to {self.shape}")
        return MaskedFill.apply(self, mask=mask.data, value=value)

    def clamp(self, min=None, max=None):  # noqa: A002 - PyTorch's names
        if min is None and max is None:
            raise RuntimeError("torch.clamp: At least one of 'min' or 'max' must not be None")
        if not is_tensor(min) and not is_tensor(max):
            x = self._promoted(*(b for b in (min, max) if b is not None))[0]
            return Clamp.apply(x, lo=min, hi=max)
        promoted = list(self._promoted(*(b for b in (min, max) if b is not None)))
        return ClampTensor.apply(*promoted, has_lo=min is not None, has_hi=max is not None)

    clip = clamp

    def clamp_min(self, min): return self.clamp(min=min)  # noqa: A002
    def clamp_max(self, max): return self.clamp(max=max)  # noqa: A002
    def maximum(self, other): return Maximum.apply(*self._promoted(other), take_max=True)
    def minimum(self, other): return Maximum.apply(*self._promoted(other), take_max=False)

    # -- dtype and device ------------------------------------------------------------------------
    def to(self, *args, **kwargs):
        """to(device), to(dtype), to(device, dtype), to(other_tensor); differentiable."""
        device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
        kwargs.pop("non_blocking", None), kwargs.pop("copy", None)
        if kwargs:
            raise TypeError(f"to() got unexpected keyword arguments {sorted(kwargs)}")
        for arg in args:
            if is_tensor(arg):
                device, dtype = arg.device, arg.dtype
            elif isinstance(arg, str) and arg.rsplit(".", 1)[-1] not in DTYPE_NAMES:
                device = arg
            elif arg is not None:
                dtype = arg
        out = self
        if dtype is not None:
            out = out._cast_to(as_dtype(dtype))
        if device is not None and normalise_device(device) != out.device:
            out = ToDevice.apply(out, device=normalise_device(device))
        return out

    def type(self, dtype=None):
        if dtype is None:
            return "fusegrad." + _TYPE_NAMES.get(self.dtype.name, self.dtype.name)
        return self.to(dtype)

    def float(self): return self.to(np.float32)
    def double(self): return self.to(np.float64)
    def half(self): return self.to(np.float16)
    def int(self): return self.to(np.int32)
    def long(self): return self.to(np.int64)
    def short(self): return self.to(np.int16)
    def byte(self): return self.to(np.uint8)
    def bool(self): return self.to(np.bool_)

    def is_floating_point(self) -> bool:
        return self.dtype.kind == "f"


for _name in UNARY:
    if _name not in ("round", "tanh"):
        setattr(TensorArith, _name, _unary(_name))
