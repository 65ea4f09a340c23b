"""Pooling over NHWC tensors: max (backward through the kernel's indices), average, global
average, and max-unpooling (the scatter those indices describe)."""
from __future__ import annotations

import numpy as np

from ... import ops
from ..._backend import array_module
from ..engine import Function


class MaxPool2d(Function):
    """indices_out: a list that forward appends the kernel's int32 indices to (return_indices)."""

    def forward(self, x, kernel_size=2, stride=None, padding=0, dilation=1, ceil_mode=False, indices_out=None):
        y, indices = ops.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices=True)
        if indices_out is not None:
            indices_out.append(indices)
        self.save(indices, x.shape, kernel_size, stride, padding, dilation, ceil_mode)
        return y

    def backward(self, g):
        indices, shape, k, s, p, d, ceil = self.saved
        return (ops.max_pool2d_backward(g, indices, shape, k, s, p, d, ceil),)


class AvgPool2d(Function):
    def forward(self, x, kernel_size=2, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        self.save(x.shape, kernel_size, stride, padding, ceil_mode, count_include_pad)
        return ops.avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad)

    def backward(self, g):
        shape, k, s, p, ceil, cip = self.saved
        return (ops.avg_pool2d_backward(g, shape, k, s, p, ceil, cip),)


class GlobalAvgPool2d(Function):
    def forward(self, x):
        self.save(x.shape)
        return ops.global_avg_pool2d(x)

    def backward(self, g):
        return (ops.global_avg_pool2d_backward(g, self.saved[0]),)


def _flat_positions(indices, out_hw):
    """Flat positions in an (N, H_out, W_out, C) array of the elements that NHWC `indices` (values
    ih * W_out + iw per image and channel) name."""
    xp = array_module(indices)
    n, _, _, c = indices.shape
    image = xp.arange(n, dtype=np.int64).reshape(n, 1, 1, 1) * (out_hw[0] * out_hw[1])
    channel = xp.arange(c, dtype=np.int64).reshape(1, 1, 1, c)
    return ((image + indices.astype(np.int64)) * c + channel).reshape(-1)


class MaxUnpool2d(Function):
    """Places each value of x (N, H, W, C) at the position its index names in a zero (N, H_out,
    W_out, C): PyTorch's max_unpool2d in NHWC. Duplicate indices keep one of the values (PyTorch
    leaves which unspecified too); backward gathers the gradient at the indices."""

    def forward(self, x, indices=None, out_hw=(1, 1)):
        xp = array_module(x)
        flat = _flat_positions(indices, out_hw)
        y = xp.zeros((x.shape[0], *out_hw, x.shape[3]), x.dtype)
        y.reshape(-1)[flat] = x.reshape(-1)
        self.save(flat, x.shape)
        return y

    def backward(self, g):
        flat, shape = self.saved
        return (array_module(g).ascontiguousarray(g).reshape(-1)[flat].reshape(shape),)
