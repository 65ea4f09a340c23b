"""Conv2d: NHWC convolution with an HWIO weight."""
from __future__ import annotations

import math

import numpy as np

from ...ops._common import pair
from .. import functional as F
from .. import init
from .module import Module, Parameter


class Conv2d(Module):
    """NHWC convolution, weight (KH, KW, in_channels, out_channels); PyTorch's default init.
    activation=: applied in the kernel's store where its derivative allows (see F.conv2d)."""

    fusion_role = "conv"  # nn.fusion

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 bias: bool = True, activation: str | None = None):
        super().__init__()
        kh, kw = pair(kernel_size, "kernel_size", "Conv2d")
        if in_channels < 1 or out_channels < 1 or kh < 1 or kw < 1:
            raise ValueError("Conv2d: channels and kernel sizes must be >= 1")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, (kh, kw)
        self.stride, self.padding, self.dilation, self.activation = stride, padding, dilation, activation
        self.weight = Parameter(np.empty((kh, kw, in_channels, out_channels), np.float32))
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if bias:
            self.bias = Parameter(np.empty(out_channels, np.float32))
            bound = 1 / math.sqrt(in_channels * kh * kw)
            init.uniform_(self.bias, -bound, bound)
        else:
            self.register_parameter("bias", None)

    def forward(self, x, activation: str | None = None):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        activation or self.activation)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}" + (f", activation={self.activation!r}" if self.activation else ""))
