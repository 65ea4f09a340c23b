"""Convolution and pooling layers on NHWC input (conv weights HWIO), as Functions over the kernels
of fusegrad.ops. Until the convolution kernels land (issue 4), Conv2d runs as KH*KW GEMMs over
strided views of the padded input: no im2col copy, one matmul per kernel tap."""
from __future__ import annotations

import math

import numpy as np

from .. import ops
from ..tensor import Function, Tensor, _xp, matmul
from . import init
from .functional import FUSABLE_ACTIVATIONS
from .module import Module, Parameter


def _pair(value, name: str) -> tuple:
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) for v in pair):
        raise ValueError(f"{name}: expected an int or a pair of ints, got {value!r}")
    return int(pair[0]), int(pair[1])


def conv_padding(padding, in_hw, kernel_hw, stride, dilation) -> tuple:
    """((top, bottom), (left, right)) for an int, a pair, "valid" or "same" (TensorFlow's rule:
    output = ceil(input / stride), the odd pixel of padding at the bottom/right)."""
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":
        pads = []
        for n, k, s, d in zip(in_hw, kernel_hw, stride, dilation):
            out = -(-n // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    if isinstance(padding, str):
        raise ValueError(f"padding: expected an int, a pair, 'valid' or 'same', got {padding!r}")
    ph, pw = _pair(padding, "padding")
    if ph < 0 or pw < 0:
        raise ValueError(f"padding must be >= 0, got {padding!r}")
    return (ph, ph), (pw, pw)


def _taps(xpad_shape, kernel_hw, stride, dilation, out_hw):
    """(i, j, index) for every kernel tap: index selects the input pixels that tap reads, a
    strided view of shape (N, OH, OW, C)."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel_hw, stride, dilation, out_hw
    for i in range(kh):
        for j in range(kw):
            yield i, j, (slice(None), slice(i * dh, i * dh + sh * (oh - 1) + 1, sh),
                         slice(j * dw, j * dw + sw * (ow - 1) + 1, sw), slice(None))


class Conv2dFunction(Function):
    def forward(self, x, w, b=None, stride=(1, 1), pads=((0, 0), (0, 0)), dilation=(1, 1), activation=None):
        xp = _xp(x)
        n, h, wd, c = x.shape
        kh, kw, _, co = w.shape
        xpad = xp.pad(x, ((0, 0), pads[0], pads[1], (0, 0))) if any(pads[0] + pads[1]) else x
        oh = (xpad.shape[1] - (kh - 1) * dilation[0] - 1) // stride[0] + 1
        ow = (xpad.shape[2] - (kw - 1) * dilation[1] - 1) // stride[1] + 1
        out = xp.zeros((n * oh * ow, co), dtype=x.dtype)
        for i, j, index in _taps(xpad.shape, (kh, kw), stride, dilation, (oh, ow)):
            matmul(xpad[index].reshape(-1, c), w[i, j], out=out, accumulate=True)
        if b is not None:
            out += b
        if activation is not None:
            getattr(ops, activation)(out, out=out)
        y = out.reshape(n, oh, ow, co)
        self.save(xpad, w, y if activation else None, (h, wd), stride, pads, dilation, activation)
        return y

    def backward(self, g):
        xpad, w, y, (h, wd), stride, pads, dilation, activation = self.saved
        if activation is not None:
            g = getattr(ops, f"{activation}_backward")(g, y)
        xp = _xp(g)
        n, oh, ow, co = g.shape
        kh, kw, c, _ = w.shape
        g2 = g.reshape(-1, co)
        gxpad = xp.zeros_like(xpad) if self.needs_grad[0] else None
        gw = xp.empty_like(w) if self.needs_grad[1] else None
        for i, j, index in _taps(xpad.shape, (kh, kw), stride, dilation, (oh, ow)):
            if gw is not None:
                matmul(xpad[index].reshape(-1, c).T, g2, out=gw[i, j])
            if gxpad is not None:
                gxpad[index] += matmul(g2, w[i, j].T).reshape(n, oh, ow, c)
        gx = None
        if gxpad is not None:
            (top, _), (left, _) = pads
            gx = gxpad[:, top:top + h, left:left + wd, :]
        gb = g2.sum(axis=0) if len(self.needs_grad) > 2 and self.needs_grad[2] else None
        return gx, gw, gb


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0, dilation=1,
           activation: str | None = None) -> Tensor:
    """2-D convolution of NHWC x with HWIO weight; padding an int, a pair, "valid" or "same"."""
    if x.ndim != 4:
        raise ValueError(f"conv2d: expected NHWC input of 4 dimensions, got shape {x.shape}")
    if weight.ndim != 4:
        raise ValueError(f"conv2d: expected HWIO weight of 4 dimensions, got shape {weight.shape}")
    if x.shape[3] != weight.shape[2]:
        raise ValueError(f"conv2d: input has {x.shape[3]} channels but weight {weight.shape} expects "
                         f"{weight.shape[2]}")
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    if min(stride) < 1 or min(dilation) < 1:
        raise ValueError(f"conv2d: stride and dilation must be >= 1, got {stride}, {dilation}")
    pads = conv_padding(padding, x.shape[1:3], weight.shape[:2], stride, dilation)
    for n, (lo, hi), k, d in zip(x.shape[1:3], pads, weight.shape[:2], dilation):
        if n + lo + hi < (k - 1) * d + 1:
            raise ValueError(f"conv2d: kernel {weight.shape[:2]} (dilation {dilation}) is larger than the padded "
                             f"input {x.shape[1:3]}")
    if activation is not None and activation not in FUSABLE_ACTIVATIONS:
        return getattr(conv2d(x, weight, bias, stride, padding, dilation), activation)()
    args = (x, weight) if bias is None else (x, weight, bias)
    return Conv2dFunction.apply(*args, stride=stride, pads=pads, dilation=dilation, activation=activation)


class Conv2d(Module):
    """NHWC convolution, weight (KH, KW, in_channels, out_channels); PyTorch's default init."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 bias: bool = True, activation: str | None = None):
        super().__init__()
        kh, kw = _pair(kernel_size, "kernel_size")
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
        return conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                      activation or self.activation)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}" + (f", activation={self.activation!r}" if self.activation else ""))


# --- pooling ---------------------------------------------------------------------------------------


class MaxPool2dFunction(Function):
    def forward(self, x, kernel_size=2, stride=None, padding=0):
        y, indices = ops.max_pool2d(x, kernel_size, stride, padding, return_indices=True)
        self.save(indices, x.shape, kernel_size, stride, padding)
        return y

    def backward(self, g):
        indices, shape, k, s, p = self.saved
        return (ops.max_pool2d_backward(g, indices, shape, k, s, p),)


class AvgPool2dFunction(Function):
    def forward(self, x, kernel_size=2, stride=None, padding=0, count_include_pad=True):
        self.save(x.shape, kernel_size, stride, padding, count_include_pad)
        return ops.avg_pool2d(x, kernel_size, stride, padding, count_include_pad=count_include_pad)

    def backward(self, g):
        shape, k, s, p, cip = self.saved
        return (ops.avg_pool2d_backward(g, shape, k, s, p, count_include_pad=cip),)


class GlobalAvgPool2dFunction(Function):
    def forward(self, x):
        self.save(x.shape)
        return ops.global_avg_pool2d(x)

    def backward(self, g):
        return (ops.global_avg_pool2d_backward(g, self.saved[0]),)


def max_pool2d(x: Tensor, kernel_size, stride=None, padding=0) -> Tensor:
    return MaxPool2dFunction.apply(x, kernel_size=kernel_size, stride=stride, padding=padding)


def avg_pool2d(x: Tensor, kernel_size, stride=None, padding=0, count_include_pad=True) -> Tensor:
    return AvgPool2dFunction.apply(x, kernel_size=kernel_size, stride=stride, padding=padding,
                                   count_include_pad=count_include_pad)


def global_avg_pool2d(x: Tensor) -> Tensor:
    return GlobalAvgPool2dFunction.apply(x)


class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x):
        return max_pool2d(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool2d(MaxPool2d):
    def __init__(self, kernel_size, stride=None, padding=0, count_include_pad=True):
        super().__init__(kernel_size, stride, padding)
        self.count_include_pad = count_include_pad

    def forward(self, x):
        return avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.count_include_pad)


class GlobalAvgPool2d(Module):
    """(N, H, W, C) -> (N, C)."""

    def forward(self, x):
        return global_avg_pool2d(x)
