"""Pooling over NHWC tensors: max (backward through the kernel's indices), average and global
average."""
from __future__ import annotations

from ... import ops
from ..engine import Function


class MaxPool2d(Function):
    def forward(self, x, kernel_size=2, stride=None, padding=0):
        y, indices = ops.max_pool2d(x, kernel_size, stride, padding, return_indices=True)
        self.save(indices, x.shape, kernel_size, stride, padding)
        return y

    def backward(self, g):
        indices, shape, k, s, p = self.saved
        return (ops.max_pool2d_backward(g, indices, shape, k, s, p),)


class AvgPool2d(Function):
    def forward(self, x, kernel_size=2, stride=None, padding=0, count_include_pad=True):
        self.save(x.shape, kernel_size, stride, padding, count_include_pad)
        return ops.avg_pool2d(x, kernel_size, stride, padding, count_include_pad=count_include_pad)

    def backward(self, g):
        shape, k, s, p, cip = self.saved
        return (ops.avg_pool2d_backward(g, shape, k, s, p, count_include_pad=cip),)


class GlobalAvgPool2d(Function):
    def forward(self, x):
        self.save(x.shape)
        return ops.global_avg_pool2d(x)

    def backward(self, g):
        return (ops.global_avg_pool2d_backward(g, self.saved[0]),)
