"""PyTorch's in-place ops: add_ sub_ mul_ div_ clamp_ fmod_ remainder_ zero_ fill_.

Each computes the out-of-place op and makes it the tensor's value, with PyTorch's rules: on a
leaf that requires grad (a parameter) it is a RuntimeError while gradients are recorded (under
no_grad it is allowed: that is how a parameter is updated by hand); the result must keep the
tensor's shape (broadcasting only the other operand) and be castable to its dtype (an int tensor
cannot take a float result).

Where the result is part of a graph (grad mode, and the tensor or the other operand requires
grad), the tensor becomes that op's output: its earlier value stays, unchanged, in the graph
behind it, so every gradient is the one PyTorch computes. Then the tensor holds a new array:
views of its old array (NumPy or CuPy views taken from .data, or tensors made from them) keep the
old values. Otherwise the new values are written into the tensor's own array, so views see them,
as PyTorch's do. There are no version counters: changing a tensor in place under no_grad after an
op saved it for its backward gives that backward the new values, where PyTorch raises.
"""
from __future__ import annotations

from .._backend import array_module
from ..autograd import is_grad_enabled
from .base import TensorBase

# A result may be cast to the tensor's dtype when its kind ranks no higher (PyTorch's can_cast).
_KIND_RANK = {"b": 0, "u": 1, "i": 1, "f": 2, "c": 3}


class TensorInPlace(TensorBase):
    __slots__ = ()

    def _check_in_place(self) -> None:
        if self.requires_grad and self.is_leaf and is_grad_enabled():
            raise RuntimeError("a leaf Variable that requires grad is being used in an in-place operation.")

    def _previous(self):
        """This tensor's current value as a tensor of its own: the operand of the op that
        replaces it (the op's input must not be the tensor that becomes its output)."""
        old = self._wrap(self.data, self.requires_grad)
        old._ctx = self._ctx
        return old

    def _become(self, result):
        """Makes `result`, computed from self._previous(), this tensor's value (module docstring)."""
        if tuple(result.shape) != tuple(self.shape):
            raise RuntimeError(f"output with shape {list(self.shape)} doesn't match the broadcast shape "
                               f"{list(result.shape)}")
        if _KIND_RANK[result.dtype.kind] > _KIND_RANK[self.dtype.kind]:
            raise RuntimeError(f"result type {result.dtype} can't be cast to the desired output type {self.dtype}")
        if is_grad_enabled() and result.requires_grad:
            if result.dtype != self.dtype:
                result = result.to(self.dtype)
            self.data, self._ctx, self.requires_grad = result.data, result._ctx, True
        else:
            self.data[...] = result.data
        return self

    def _in_place(self, op):
        self._check_in_place()
        return self._become(op(self._previous()))

    def add_(self, other, alpha=1):
        return self._in_place(lambda t: t.add(other, alpha=alpha))

    def sub_(self, other, alpha=1):
        return self._in_place(lambda t: t.sub(other, alpha=alpha))

    def mul_(self, other):
        return self._in_place(lambda t: t.mul(other))

    def div_(self, other, rounding_mode=None):
        return self._in_place(lambda t: t.div(other, rounding_mode=rounding_mode))

    def clamp_(self, min=None, max=None):  # noqa: A002 - PyTorch's names
        return self._in_place(lambda t: t.clamp(min, max))

    def fmod_(self, other):
        return self._in_place(lambda t: t.fmod(other))

    def remainder_(self, other):
        return self._in_place(lambda t: t.remainder(other))

    clip_ = clamp_
    multiply_ = mul_
    subtract_ = sub_
    divide_ = true_divide_ = div_

    def fill_(self, value):
        self._check_in_place()
        if self.requires_grad and is_grad_enabled():
            # Part of a graph: the new value is a constant, so what came before gets gradient 0.
            mask = self._wrap(array_module(self.data).ones(self.shape, dtype=bool), False)
            return self._become(self._previous().masked_fill(mask, value))
        self.data[...] = value
        return self

    def zero_(self):
        return self.fill_(0)

