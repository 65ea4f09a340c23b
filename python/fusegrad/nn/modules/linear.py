"""Identity and Linear."""
from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from .. import init
from .module import Module, Parameter


class Identity(Module):
    """Returns its input; takes (and ignores) any constructor arguments, as PyTorch's."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x


class Linear(Module):
    """y = x @ weight.T + bias, weight of shape (out_features, in_features) as in PyTorch.

    activation= (a name of ops.activation.NAMES) is applied in the GEMM's store where its
    derivative allows (ops.activation.DERIVATIVE_FROM_OUTPUT), else after the product.
    """

    fusion_role = "linear"  # nn.fusion

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str | None = None):
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(f"Linear: sizes must be >= 1, got in={in_features}, out={out_features}")
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        self.weight = Parameter(np.empty((out_features, in_features), np.float32))
        self.bias = Parameter(np.empty(out_features, np.float32)) if bias else None
        if not bias:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        # PyTorch's default: kaiming_uniform(a=sqrt 5) = U(-1/sqrt(in), 1/sqrt(in)); bias likewise.
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features)
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x, activation: str | None = None, negative_slope: float = 0.01):
        return F.linear(x, self.weight, self.bias, activation or self.activation, negative_slope)

    def extra_repr(self):
        act = f", activation={self.activation!r}" if self.activation else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}{act}"
