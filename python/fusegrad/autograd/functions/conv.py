"""2-D convolution over NHWC input with HWIO weights, plain and fused with max-pooling.

float32 arrays run on the conv kernels (CPU or CUDA), groups included. Anything else (float64
for gradient checks) runs as KH*KW batched matrix products over the taps, one batch item a group.
"""
from __future__ import annotations

import numpy as np

from ... import ops
from ..._backend import array_module, device_of
from ...ops.activation import DERIVATIVE_FROM_OUTPUT, EPILOGUE
from ...ops.conv import conv_geometry
from ..autocast import conv_precision
from ..engine import Function


def _on_kernels(*arrays) -> bool:
    """True when the conv kernels take these arrays: float32, all on one device."""
    present = [a for a in arrays if a is not None]
    return all(a.dtype == np.float32 for a in present) and len({device_of(a) for a in present}) == 1


def _taps(kernel_hw, stride, dilation, out_hw):
    """(i, j, index) for every kernel tap: index selects the input pixels that tap reads, a
    strided view of shape (N, OH, OW, C) of the padded input."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel_hw, stride, dilation, out_hw
    for i in range(kh):
        for j in range(kw):
            yield i, j, (slice(None), slice(i * dh, i * dh + sh * (oh - 1) + 1, sh),
                         slice(j * dw, j * dw + sw * (ow - 1) + 1, sw), slice(None))


def _grouped(a, groups):
    """(G, rows, C/G) view of a (..., C) array: group-major, for batched matmuls."""
    return a.reshape(-1, groups, a.shape[-1] // groups).transpose(1, 0, 2)


def _taps_forward(x, w, b, stride, pads, dilation, groups=1):
    xp = array_module(x)
    n = x.shape[0]
    kh, kw, c, co = w.shape
    oh, ow, _ = conv_geometry(x.shape, w.shape, stride, pads, dilation, "conv2d", groups)
    xpad = xp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    out = xp.zeros((groups, n * oh * ow, co // groups), dtype=x.dtype)
    for i, j, index in _taps((kh, kw), stride, dilation, (oh, ow)):
        out += _grouped(xpad[index], groups) @ _grouped(w[i, j], groups)
    out = out.transpose(1, 0, 2).reshape(n * oh * ow, co)
    if b is not None:
        out += b
    return out.reshape(n, oh, ow, co)


def _taps_backward(g, x, w, x_shape, stride, pads, dilation, need_x, need_w, groups=1):
    xp = array_module(g)
    n, oh, ow, co = g.shape
    kh, kw, c, _ = w.shape
    (top, bottom), (left, right) = pads
    gg = _grouped(g, groups)  # (G, N*OH*OW, C_out/G)
    padded = (n, x_shape[1] + top + bottom, x_shape[2] + left + right, c * groups)
    xpad = xp.pad(x, ((0, 0), pads[0], pads[1], (0, 0))) if need_w else None
    gxpad = xp.zeros(padded, dtype=g.dtype) if need_x else None
    gw = xp.empty(w.shape, dtype=g.dtype) if need_w else None
    for i, j, index in _taps((kh, kw), stride, dilation, (oh, ow)):
        if need_w:  # (G, C_in/G, C_out/G) back to (C_in/G, C_out)
            gw[i, j] = (_grouped(xpad[index], groups).transpose(0, 2, 1) @ gg).transpose(1, 0, 2).reshape(c, co)
        if need_x:
            gxg = gg @ _grouped(w[i, j], groups).transpose(0, 2, 1)  # (G, N*OH*OW, C_in/G)
            gxpad[index] += gxg.transpose(1, 0, 2).reshape(n, oh, ow, c * groups)
    gx = gxpad[:, top:top + x_shape[1], left:left + x_shape[2], :] if need_x else None
    return gx, gw


def _conv_backward(needs_grad, g, x, w, x_shape, stride, pads, dilation, groups=1, precision="fp32"):
    """(gx, gw, gb) of a convolution from the gradient of its output, each None when not needed;
    the input and weight gradients in `precision` (that of the forward, under autocast)."""
    need_x, need_w = needs_grad[0], needs_grad[1]
    need_b = len(needs_grad) > 2 and needs_grad[2]
    if _on_kernels(g, x, w):
        geo = dict(stride=stride, padding=pads, dilation=dilation, groups=groups, precision=precision)
        if need_w:
            # One call for all that is needed: first layers read g once for every gradient.
            gx, gw, gb = ops.conv2d_backward(g, x, w, input_grad=need_x, bias_grad=need_b, **geo)
        else:
            gx = ops.conv2d_backward_input(g, w, x_shape, **geo) if need_x else None
            gw = None
            gb = ops.conv2d_backward_bias(g) if need_b else None
    else:
        gx, gw = _taps_backward(g, x, w, x_shape, stride, pads, dilation, need_x, need_w, groups)
        gb = g.reshape(-1, g.shape[-1]).sum(axis=0) if need_b else None
    return gx, gw, gb


class Conv2d(Function):
    """act(conv2d(x, w) + b), with an activation whose derivative comes from its output
    (ops.activation.DERIVATIVE_FROM_OUTPUT) applied in the kernel's store when the epilogue offers
    it, else (leaky_relu with slope `param`) as a pass over the output. Backward takes the
    activation's derivative from the saved output, then runs the backward kernels for just the
    gradients that are needed."""

    def forward(self, x, w, b=None, stride=(1, 1), pads=((0, 0), (0, 0)), dilation=(1, 1), activation=None,
                param=0.01, groups=1):
        if activation is not None and activation not in DERIVATIVE_FROM_OUTPUT:
            raise ValueError(f"conv2d: activation {activation!r} cannot be fused (its derivative needs the input)")
        precision = "fp32"
        if _on_kernels(x, w, b):
            precision = conv_precision(device_of(x), groups)
            in_store = activation if activation in EPILOGUE else None
            y = ops.conv2d(x, w, b, stride=stride, padding=pads, dilation=dilation, groups=groups,
                           activation=in_store, precision=precision)
            if activation is not None and in_store is None:
                ops.activation.forward(activation, y, param=param, out=y)
        else:
            y = _taps_forward(x, w, b, stride, pads, dilation, groups)
            if activation is not None:
                y = ops.activation.forward(activation, y, param=param)
        # w always (a parameter, alive anyway): the one-call backward takes it with x.
        self.save(x if self.needs_grad[1] else None, w, y if activation else None, x.shape, stride, pads,
                  dilation, activation, param, groups, precision)
        return y

    def backward(self, g):
        x, w, y, x_shape, stride, pads, dilation, activation, param, groups, precision = self.saved
        if activation is not None:
            g = ops.activation.backward(activation, g, y, param=param)
        return _conv_backward(self.needs_grad, g, x, w, x_shape, stride, pads, dilation, groups, precision)


class Conv2dMaxPool(Function):
    """max_pool2d(act(conv2d(x, w) + b), pool) on the fused kernel, which never writes the conv
    output; activation None or one that commutes with max (ops.activation.COMMUTES_WITH_MAX), which
    the kernel applies to the pooled values and whose derivative backward takes from the pooled
    output. Backward routes the gradient through the pool indices into the conv output's shape,
    then runs the conv backward kernels."""

    def forward(self, x, w, b=None, stride=(1, 1), pads=((0, 0), (0, 0)), dilation=(1, 1), pool=2,
                activation=None, negative_slope=0.01):
        precision = conv_precision(device_of(x))
        if precision == "fp32" and not self.recording():  # inference: no indices to find
            return ops.conv2d_max_pool2d(x, w, b, stride=stride, padding=pads, dilation=dilation, pool=pool,
                                         activation=activation, negative_slope=negative_slope, return_indices=False)
        if precision == "fp32":
            y, indices = ops.conv2d_max_pool2d(x, w, b, stride=stride, padding=pads, dilation=dilation, pool=pool,
                                               activation=activation, negative_slope=negative_slope)
        else:
            # The fused kernel is fp32: under autocast the bf16 convolution, then the pooling and
            # the activation on the pooled values, which is what the fused kernel computes.
            conv = ops.conv2d(x, w, b, stride=stride, padding=pads, dilation=dilation, precision=precision)
            y, indices = ops.max_pool2d(conv, pool, return_indices=True)
            if activation is not None:
                ops.activation.forward(activation, y, param=negative_slope, out=y)
        oh, ow, _ = conv_geometry(x.shape, w.shape, stride, pads, dilation, "conv2d_max_pool2d")
        conv_shape = (x.shape[0], oh, ow, w.shape[3])
        self.save(x if self.needs_grad[1] else None, w, y if activation else None, indices, conv_shape, x.shape,
                  stride, pads, dilation, pool, activation, negative_slope, precision)
        return y

    def backward(self, g):
        (x, w, y, indices, conv_shape, x_shape, stride, pads, dilation, pool, activation, slope,
         precision) = self.saved
        if activation is not None:
            g = ops.activation.backward(activation, g, y, param=slope)
        # Each pooled value routes its gradient to exactly one conv output (the windows do not
        # overlap), so the bias gradient, a sum over the conv output, is the same sum over the
        # pooled gradient: a quarter of the data, before the scatter.
        need_b = len(self.needs_grad) > 2 and self.needs_grad[2]
        gb = ops.conv2d_backward_bias(g) if need_b else None
        g = ops.max_pool2d_backward(g, indices, conv_shape, pool)
        gx, gw, _ = _conv_backward(self.needs_grad[:2], g, x, w, x_shape, stride, pads, dilation,
                                   precision=precision)
        return gx, gw, gb


class ConvTranspose2d(Function):
    """The transposed convolution: the gradient of conv2d with respect to its input, run on the
    conv backward-input kernel. w is the HWIO weight of the convolution it transposes,
    (KH, KW, C_out / groups, C_in); out_shape is (N, H_out, W_out, C_out). Backward: conv2d of g
    for x, the backward-weight kernel for w."""

    def forward(self, x, w, b=None, out_shape=(), stride=(1, 1), pads=((0, 0), (0, 0)), dilation=(1, 1), groups=1):
        precision = "fp32"
        if _on_kernels(x, w, b):
            precision = conv_precision(device_of(x), groups)
            y = ops.conv2d_backward_input(x, w, out_shape, stride=stride, padding=pads, dilation=dilation,
                                          groups=groups, precision=precision)
        else:
            y, _ = _taps_backward(x, None, w, out_shape, stride, pads, dilation, True, False, groups)
            y = array_module(x).ascontiguousarray(y)
        if b is not None:
            y = y + b
        self.save(x, w, stride, pads, dilation, groups, precision)
        return y

    def backward(self, g):
        x, w, stride, pads, dilation, groups, precision = self.saved
        need_x, need_w = self.needs_grad[0], self.needs_grad[1]
        need_b = len(self.needs_grad) > 2 and self.needs_grad[2]
        gx = gw = None
        if _on_kernels(g, x, w):
            geo = dict(stride=stride, padding=pads, dilation=dilation, groups=groups, precision=precision)
            gx = ops.conv2d(g, w, **geo) if need_x else None
            gw = ops.conv2d_backward_weight(g, x, w.shape, **geo) if need_w else None
        else:
            gx = _taps_forward(g, w, None, stride, pads, dilation, groups) if need_x else None
            gw = (_taps_backward(x, g, w, g.shape, stride, pads, dilation, False, True, groups)[1]
                  if need_w else None)
        gb = g.reshape(-1, g.shape[-1]).sum(axis=0) if need_b else None
        return gx, gw, gb
