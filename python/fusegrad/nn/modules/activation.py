"""Activation modules. Each names its activation in `kind` (a name of ops.activation.NAMES) and
`param` (leaky_relu's slope), which nn.fusion reads to fuse it into the layer before it."""
from __future__ import annotations

from .module import Module


class _Activation(Module):
    kind = ""
    param = 0.0

    def forward(self, x):
        return getattr(x, self.kind)()


class ReLU(_Activation):
    fusion_role = "activation"  # nn.fusion
    kind = "relu"


class Sigmoid(_Activation):
    fusion_role = "activation"  # nn.fusion
    kind = "sigmoid"


class Tanh(_Activation):
    fusion_role = "activation"  # nn.fusion
    kind = "tanh"


class SiLU(_Activation):
    fusion_role = "activation"  # nn.fusion
    kind = "silu"


class LeakyReLU(_Activation):
    fusion_role = "activation"  # nn.fusion
    kind = "leaky_relu"

    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        self.negative_slope = negative_slope

    @property
    def param(self):
        return self.negative_slope

    def forward(self, x):
        return x.leaky_relu(self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class GELU(_Activation):
    fusion_role = "activation"  # nn.fusion

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate: expected 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    @property
    def kind(self):
        return "gelu" if self.approximate == "none" else "gelu_tanh"

    def forward(self, x):
        return x.gelu(self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class Softmax(Module):
    def __init__(self, dim: int = -1):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return x.softmax(self.dim)


class LogSoftmax(Softmax):
    def forward(self, x):
        return x.log_softmax(self.dim)
