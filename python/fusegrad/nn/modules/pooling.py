"""Pooling modules over NHWC input."""
from __future__ import annotations

from .. import functional as F
from .module import Module


class MaxPool2d(Module):
    """NHWC max pooling with PyTorch's options (see F.max_pool2d); return_indices=True makes
    forward return (output, indices), which MaxUnpool2d takes."""

    fusion_role = "max_pool"  # nn.fusion

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        super().__init__()
        self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation
        self.return_indices, self.ceil_mode = return_indices, ceil_mode

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode,
                            self.return_indices)

    def extra_repr(self):
        extra = (f", dilation={self.dilation}" if self.dilation not in (1, (1, 1)) else "") + \
            (", ceil_mode=True" if self.ceil_mode else "") + (", return_indices=True" if self.return_indices else "")
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}{extra}"


class MaxUnpool2d(Module):
    """The partial inverse of MaxPool2d on NHWC tensors (see F.max_unpool2d)."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x, indices, output_size=None):
        return F.max_unpool2d(x, indices, self.kernel_size, self.stride, self.padding, output_size)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad)

    def extra_repr(self):
        ceil = ", ceil_mode=True" if self.ceil_mode else ""
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}{ceil}"


class GlobalAvgPool2d(Module):
    """(N, H, W, C) -> (N, C)."""

    def forward(self, x):
        return F.global_avg_pool2d(x)


class AdaptiveAvgPool2d(Module):
    """NHWC average pooling to a fixed output size (PyTorch's windows); see F.adaptive_avg_pool2d."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"
