"""The elementwise activations, on the activation kernels forward and backward."""
from __future__ import annotations

from ... import ops
from ...ops.activation import BACKWARD_FROM_OUTPUT
from ..engine import Function


class Activation(Function):
    """kind: a name of the activation table (ops.activation.NAMES); param: leaky_relu's slope."""

    def forward(self, a, kind="relu", param=0.0):
        out = ops.activation.forward(kind, a, param=param)
        self.save(kind, param, out if kind in BACKWARD_FROM_OUTPUT else a)
        return out

    def backward(self, g):
        kind, param, saved = self.saved
        return (ops.activation.backward(kind, g, saved, param=param),)
