"""Convolutions, channels last: Conv1d (N, L, C), Conv2d and ConvTranspose2d (NHWC), with HWIO weights."""
from __future__ import annotations

import math

import numpy as np

from ...ops._common import pair
from ...ops.conv import check_groups
from .. import functional as F
from .. import init
from .module import Module, Parameter


class Conv2d(Module):
    """NHWC convolution, weight (KH, KW, in_channels / groups, out_channels) (PyTorch's (out, in /
    groups, KH, KW) permuted by (2, 3, 1, 0)); PyTorch's default init. activation=: applied in the
    kernel's store where its derivative allows (see F.conv2d)."""

    fusion_role = "conv"  # nn.fusion

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, activation: str | None = None):
        super().__init__()
        kh, kw = pair(kernel_size, "kernel_size", "Conv2d")
        if in_channels < 1 or out_channels < 1 or kh < 1 or kw < 1:
            raise ValueError("Conv2d: channels and kernel sizes must be >= 1")
        self.groups = check_groups(groups, in_channels, out_channels, "Conv2d")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, (kh, kw)
        self.stride, self.padding, self.dilation, self.activation = stride, padding, dilation, activation
        self.weight = Parameter(np.empty((kh, kw, in_channels // self.groups, out_channels), np.float32))
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if bias:
            self.bias = Parameter(np.empty(out_channels, np.float32))
            bound = 1 / math.sqrt(in_channels // self.groups * kh * kw)
            init.uniform_(self.bias, -bound, bound)
        else:
            self.register_parameter("bias", None)

    def forward(self, x, activation: str | None = None):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups,
                        activation or self.activation)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}" + (f", groups={self.groups}" if self.groups != 1 else "")
                + (f", activation={self.activation!r}" if self.activation else ""))


class Conv1d(Module):
    """Channels-last 1-D convolution: input (N, L, C_in), weight (K, C_in / groups, C_out) (PyTorch's
    (C_out, C_in / groups, K) permuted by (2, 1, 0)); runs on the 2-D conv kernels. PyTorch's
    default init."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding=0,
                 dilation: int = 1, groups: int = 1, bias: bool = True):
        super().__init__()
        if in_channels < 1 or out_channels < 1 or kernel_size < 1:
            raise ValueError("Conv1d: channels and kernel size must be >= 1")
        self.groups = check_groups(groups, in_channels, out_channels, "Conv1d")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.weight = Parameter(np.empty((kernel_size, in_channels // self.groups, out_channels), np.float32))
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1 / math.sqrt(in_channels // self.groups * kernel_size)
        if bias:
            self.bias = Parameter(np.empty(out_channels, np.float32))
            init.uniform_(self.bias, -bound, bound)
        else:
            self.register_parameter("bias", None)

    def forward(self, x):
        return F.conv1d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}")


class ConvTranspose2d(Module):
    """NHWC transposed convolution; weight (KH, KW, out_channels / groups, in_channels), the HWIO
    weight of the convolution it transposes (PyTorch's (in, out / groups, KH, KW) permuted by
    (2, 3, 1, 0)). Runs on the conv kernels (its forward is a convolution's input gradient).
    PyTorch's default init."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, output_padding=0,
                 groups: int = 1, bias: bool = True, dilation=1):
        super().__init__()
        kh, kw = pair(kernel_size, "kernel_size", "ConvTranspose2d")
        if in_channels < 1 or out_channels < 1 or kh < 1 or kw < 1:
            raise ValueError("ConvTranspose2d: channels and kernel sizes must be >= 1")
        self.groups = check_groups(groups, in_channels, out_channels, "ConvTranspose2d")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, (kh, kw)
        self.stride, self.padding, self.output_padding, self.dilation = stride, padding, output_padding, dilation
        self.weight = Parameter(np.empty((kh, kw, out_channels // self.groups, in_channels), np.float32))
        # PyTorch's fan_in for a transposed conv is out_channels / groups * KH * KW (its weight's dim 1 on)
        bound = 1 / math.sqrt(out_channels // self.groups * kh * kw)
        init.uniform_(self.weight, -bound, bound)
        if bias:
            self.bias = Parameter(np.empty(out_channels, np.float32))
            init.uniform_(self.bias, -bound, bound)
        else:
            self.register_parameter("bias", None)

    def forward(self, x):
        return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding, self.output_padding,
                                  self.groups, self.dilation)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, output_padding={self.output_padding}")
