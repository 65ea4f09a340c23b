"""Convolution and pooling layers on NHWC input (conv weights HWIO), as Functions over the kernels
of fusegrad.ops (ops.conv2d and its backward passes; the pooling kernels)."""
from __future__ import annotations

import math

import numpy as np

from .. import ops
from ..ops.conv import conv_geometry, conv_padding
from ..tensor import Function, Tensor, _xp
from . import init
from .functional import FUSABLE_ACTIVATIONS
from .module import Module, Parameter


def _pair(value, name: str) -> tuple:
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) for v in pair):
        raise ValueError(f"{name}: expected an int or a pair of ints, got {value!r}")
    return int(pair[0]), int(pair[1])


# Activations the conv kernel applies in its store; leaky_relu (which needs its slope) runs as an
# in-place pass over the output instead.
_KERNEL_ACTIVATIONS = ("relu", "sigmoid", "tanh")


def _taps(kernel_hw, stride, dilation, out_hw):
    """(i, j, index) for every kernel tap: index selects the input pixels that tap reads, a
    strided view of shape (N, OH, OW, C) of the padded input."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel_hw, stride, dilation, out_hw
    for i in range(kh):
        for j in range(kw):
            yield i, j, (slice(None), slice(i * dh, i * dh + sh * (oh - 1) + 1, sh),
                         slice(j * dw, j * dw + sw * (ow - 1) + 1, sw), slice(None))


def _on_kernels(*arrays) -> bool:
    """True when the conv kernels take these arrays: float32 NumPy. Anything else (float64 for
    gradient checks, CuPy arrays until the CUDA conv lands) runs as KH*KW matmuls over taps."""
    return all(a is None or (isinstance(a, np.ndarray) and a.dtype == np.float32) for a in arrays)


def _taps_forward(x, w, b, stride, pads, dilation):
    xp = _xp(x)
    n = x.shape[0]
    kh, kw, c, co = w.shape
    xpad = xp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    oh = (xpad.shape[1] - (kh - 1) * dilation[0] - 1) // stride[0] + 1
    ow = (xpad.shape[2] - (kw - 1) * dilation[1] - 1) // stride[1] + 1
    out = xp.zeros((n * oh * ow, co), dtype=x.dtype)
    for i, j, index in _taps((kh, kw), stride, dilation, (oh, ow)):
        out += xpad[index].reshape(-1, c) @ w[i, j]
    if b is not None:
        out += b
    return out.reshape(n, oh, ow, co)


def _taps_backward(g, x, w, x_shape, stride, pads, dilation, need_x, need_w):
    xp = _xp(g)
    n, oh, ow, co = g.shape
    kh, kw, c, _ = w.shape
    (top, bottom), (left, right) = pads
    g2 = g.reshape(-1, co)
    padded = (n, x_shape[1] + top + bottom, x_shape[2] + left + right, c)
    xpad = xp.pad(x, ((0, 0), pads[0], pads[1], (0, 0))) if need_w else None
    gxpad = xp.zeros(padded, dtype=g.dtype) if need_x else None
    gw = xp.empty(w.shape, dtype=g.dtype) if need_w else None
    for i, j, index in _taps((kh, kw), stride, dilation, (oh, ow)):
        if need_w:
            gw[i, j] = xpad[index].reshape(-1, c).T @ g2
        if need_x:
            gxpad[index] += (g2 @ w[i, j].T).reshape(n, oh, ow, c)
    gx = gxpad[:, top:top + x_shape[1], left:left + x_shape[2], :] if need_x else None
    return gx, gw


# Activations the conv kernel applies in its store; leaky_relu (which needs its slope) runs as an
# in-place pass over the output instead.
_KERNEL_ACTIVATIONS = ("relu", "sigmoid", "tanh")


class Conv2dFunction(Function):
    """conv2d on the fusegrad conv kernels, with bias and a fusable activation in the forward
    store; backward runs the activation's derivative from the saved output, then the backward
    kernels (input, weight, bias) for just the gradients that are needed."""

    def forward(self, x, w, b=None, stride=(1, 1), pads=((0, 0), (0, 0)), dilation=(1, 1), activation=None):
        if _on_kernels(x, w, b):
            fused = activation if activation in _KERNEL_ACTIVATIONS else None
            y = ops.conv2d(x, w, b, stride=stride, padding=pads, dilation=dilation, activation=fused)
            if activation is not None and fused is None:
                getattr(ops, activation)(y, out=y)
        else:
            y = _taps_forward(x, w, b, stride, pads, dilation)
        # w always (a parameter, alive anyway): the one-call backward takes it with x.
        self.save(x if self.needs_grad[1] else None, w, y if activation else None, x.shape, w.shape, stride, pads,
                  dilation, activation)
        return y

    def backward(self, g):
        x, w, y, x_shape, w_shape, stride, pads, dilation, activation = self.saved
        if activation is not None:
            g = getattr(ops, f"{activation}_backward")(g, y)
        return _conv_backward(self.needs_grad, g, x, w, x_shape, w_shape, stride, pads, dilation)


def _conv_backward(needs_grad, g, x, w, x_shape, w_shape, stride, pads, dilation):
    """(gx, gw, gb) of a convolution from the gradient of its output, each None when not needed."""
    need_x, need_w = needs_grad[0], needs_grad[1]
    need_b = len(needs_grad) > 2 and needs_grad[2]
    if _on_kernels(g, x, w):
        geo = dict(stride=stride, padding=pads, dilation=dilation)
        if need_w:
            # One call for all that is needed: first layers read g once for every gradient.
            gx, gw, gb = ops.conv2d_backward(g, x, w, input_grad=need_x, bias_grad=need_b, **geo)
        else:
            gx = ops.conv2d_backward_input(g, w, x_shape, **geo) if need_x else None
            gw = None
            gb = ops.conv2d_backward_bias(g) if need_b else None
    else:
        gx, gw = _taps_backward(g, x, w, x_shape, stride, pads, dilation, need_x, need_w)
        gb = g.reshape(-1, g.shape[-1]).sum(axis=0) if need_b else None
    return gx, gw, gb


class Conv2dMaxPoolFunction(Function):
    """max_pool2d(act(conv2d(x, w) + b), pool) on the fused kernel, which never writes the conv
    output; activation None, "relu" or "leaky_relu" (they commute with max, so the kernel applies
    them to the pooled values, and backward takes their derivative from the pooled output).
    Backward routes the gradient through the pool indices into the conv output's shape, then
    runs the conv backward kernels."""

    def forward(self, x, w, b=None, stride=(1, 1), pads=((0, 0), (0, 0)), dilation=(1, 1), pool=2,
                activation=None, negative_slope=0.01):
        y, indices = ops.conv2d_max_pool2d(x, w, b, stride=stride, padding=pads, dilation=dilation, pool=pool,
                                           activation=activation, negative_slope=negative_slope)
        oh, ow, _ = conv_geometry(x.shape, w.shape, stride, pads, dilation, "conv2d_max_pool2d")
        conv_shape = (x.shape[0], oh, ow, w.shape[3])
        self.save(x if self.needs_grad[1] else None, w, y if activation else None, indices, conv_shape, x.shape,
                  w.shape, stride, pads, dilation, pool, activation, negative_slope)
        return y

    def backward(self, g):
        x, w, y, indices, conv_shape, x_shape, w_shape, stride, pads, dilation, pool, activation, slope = self.saved
        if activation == "relu":
            g = ops.relu_backward(g, y)
        elif activation == "leaky_relu":
            g = ops.leaky_relu_backward(g, y, slope)
        # Each pooled value routes its gradient to exactly one conv output (the windows do not
        # overlap), so the bias gradient, a sum over the conv output, is the same sum over the
        # pooled gradient: a quarter of the data, before the scatter.
        need_b = len(self.needs_grad) > 2 and self.needs_grad[2]
        gb = ops.conv2d_backward_bias(g) if need_b else None
        g = ops.max_pool2d_backward(g, indices, conv_shape, pool)
        gx, gw, _ = _conv_backward(self.needs_grad[:2], g, x, w, x_shape, w_shape, stride, pads, dilation)
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
    # Fused only where the activation kernels can run on the output (float32); other dtypes (the
    # float64 of gradient checks) apply it as its own op.
    if activation is not None and (activation not in FUSABLE_ACTIVATIONS or x.dtype != np.float32):
        return getattr(conv2d(x, weight, bias, stride, padding, dilation), activation)()
    args = (x, weight) if bias is None else (x, weight, bias)
    return Conv2dFunction.apply(*args, stride=stride, pads=pads, dilation=dilation, activation=activation)


def conv2d_max_pool2d(x: Tensor, conv: "Conv2d", pool: int, activation=None, negative_slope=0.01):
    """max_pool2d(act(conv(x)), pool) through the fused kernel: what Sequential runs for Conv2d ->
    ReLU/LeakyReLU -> MaxPool2d(pool) on float32 CPU tensors."""
    stride, dilation = _pair(conv.stride, "stride"), _pair(conv.dilation, "dilation")
    pads = conv_padding(conv.padding, x.shape[1:3], conv.kernel_size, stride, dilation)
    args = (x, conv.weight) if conv.bias is None else (x, conv.weight, conv.bias)
    return Conv2dMaxPoolFunction.apply(*args, stride=stride, pads=pads, dilation=dilation, pool=pool,
                                       activation=activation, negative_slope=negative_slope)


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
