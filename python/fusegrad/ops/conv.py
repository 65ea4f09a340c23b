"""2-D convolution over NHWC float32 images with HWIO weights: forward with fused bias and
activation, and the three backward passes.

Shapes: x (N, H, W, C_in), w (KH, KW, C_in, C_out), output (N, OH, OW, C_out) with
OH = (H + pad_top + pad_bottom - dilation_h * (KH - 1) - 1) // stride_h + 1 (OW likewise).

padding: an int p (p on every side), a pair (ph, pw), a pair of pairs ((top, bottom), (left,
right)), "valid" (none) or "same" (TensorFlow's rule: OH = ceil(H / stride), the total padding
split evenly with the odd pixel at the bottom/right; also for stride > 1).

The kernels (cpp/conv/) are implicit GEMMs on the GEMM family's micro-tiles; see cpp/conv/conv.h.
They run on the CPU (NumPy arrays); CUDA arrays raise ValueError.
"""
from __future__ import annotations

import numpy as np

from .. import _cpu
from .._backend import device_of, to_kind
from ._common import cpu_output, finish_output, flag, float32_input, integer, pair, real, shape_argument
from .activation import COMMUTES_WITH_MAX, TABLE, activation_code
from .gemm import epilogue_code


def conv_padding(padding, in_hw, kernel_hw, stride, dilation, fn: str = "conv2d") -> tuple:
    """((top, bottom), (left, right)) for an int, a pair, a pair of pairs, "valid" or "same"
    (TensorFlow's rule: output = ceil(input / stride), the odd pixel of padding at the
    bottom/right). The one padding rule of fusegrad; nn.Conv2d uses it too."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding == "same":
            pads = []
            for n, k, s, d in zip(in_hw, kernel_hw, stride, dilation):
                out = -(-n // s)
                total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
                pads.append((total // 2, total - total // 2))
            return tuple(pads)
        raise ValueError(f"{fn}: padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    if (isinstance(padding, (tuple, list)) and len(padding) == 2
            and all(isinstance(p, (tuple, list)) for p in padding)):
        pads = (pair(padding[0], "padding", fn), pair(padding[1], "padding", fn))
    else:
        ph, pw = pair(padding, "padding", fn)
        pads = ((ph, ph), (pw, pw))
    if min(pads[0] + pads[1]) < 0:
        raise ValueError(f"{fn}: padding must be >= 0, got {padding!r}")
    return pads


def conv_geometry(x_shape, w_shape, stride, padding, dilation, fn: str):
    """(OH, OW, geometry) after checking every size, geometry being what the kernels take
    (stride, dilation, padding); ValueError showing the shapes. The output size is the compiled
    side's (cpp/conv/conv_shape.cpp), the one formula for it."""
    if len(x_shape) != 4:
        raise ValueError(f"{fn}: input must be 4-D NHWC (N, H, W, C_in), got shape {tuple(x_shape)}")
    if len(w_shape) != 4:
        raise ValueError(f"{fn}: weight must be 4-D HWIO (KH, KW, C_in, C_out), got shape {tuple(w_shape)}")
    if x_shape[3] != w_shape[2]:
        hint = ""
        if x_shape[1] == w_shape[2]:
            hint = ("; fusegrad images are NHWC, and this looks like NCHW: use x.transpose(0, 2, 3, 1) for an "
                    "array (or fusegrad.ops.to_nhwc(x)), x.permute(0, 2, 3, 1) for a Tensor")
        raise ValueError(f"{fn}: input {tuple(x_shape)} has {x_shape[3]} channels but weight {tuple(w_shape)} "
                         f"expects C_in = {w_shape[2]}{hint}")
    sh, sw = pair(stride, "stride", fn)
    dh, dw = pair(dilation, "dilation", fn)
    # "same" padding divides by the stride, so these come before it.
    if min(sh, sw) < 1:
        raise ValueError(f"{fn}: stride must be >= 1, got {stride!r}")
    if min(dh, dw) < 1:
        raise ValueError(f"{fn}: dilation must be >= 1, got {dilation!r}")
    (pt, pb), (pl, pr) = conv_padding(padding, x_shape[1:3], w_shape[:2], (sh, sw), (dh, dw), fn)
    geometry = _cpu.ConvGeometry(sh, sw, dh, dw, pt, pb, pl, pr)
    try:
        oh, ow = _cpu.conv2d_output_size(x_shape[1], x_shape[2], w_shape[0], w_shape[1], geometry)
    except ValueError as err:
        raise ValueError(f"{fn}: {err} (input shape {tuple(x_shape)}, weight shape {tuple(w_shape)}, "
                         f"padding {((pt, pb), (pl, pr))})") from None
    return oh, ow, geometry


def _cpu_input(x, name: str, fn: str):
    arr, kind = float32_input(x, name)
    if device_of(arr) != "cpu":
        raise ValueError(f"{fn}: {name} is on {device_of(arr)}, but convolution runs on the CPU only so far")
    return arr, kind


def _bias_input(bias, w_shape, fn: str):
    """bias as a contiguous float32 CPU array of C_out elements, or None."""
    if bias is None:
        return None
    ba, _ = _cpu_input(bias, "bias", fn)
    if ba.shape != (w_shape[3],):
        raise ValueError(f"{fn}: bias must have shape ({w_shape[3]},) for weight {tuple(w_shape)}, got {ba.shape}")
    return np.ascontiguousarray(ba)


def conv2d(x, w, bias=None, *, stride=1, padding=0, dilation=1, activation=None, out=None):
    """act(conv(x, w) + bias) -> (N, OH, OW, C_out).

    x (N, H, W, C_in), w (KH, KW, C_in, C_out), bias (C_out,) or None; stride and dilation an int
    or a pair; padding as in the module docstring. activation: None, "relu", "gelu", "gelu_tanh",
    "sigmoid", "tanh" or "silu", applied with the bias while the kernel stores the output.
    """
    fn = "conv2d"
    xa, kind = _cpu_input(x, "x", fn)
    wa, _ = _cpu_input(w, "w", fn)
    code = epilogue_code(activation)
    oh, ow, geo = conv_geometry(xa.shape, wa.shape, stride, padding, dilation, fn)
    ba = _bias_input(bias, wa.shape, fn)
    shape = (xa.shape[0], oh, ow, wa.shape[3])
    xa, wa = np.ascontiguousarray(xa), np.ascontiguousarray(wa)
    target, result = cpu_output(out, shape, (xa, wa, ba))
    if target.size:
        _cpu.conv2d_forward(xa, wa, ba, target, geo, code)
    return finish_output(target, result, out, kind)


def conv2d_max_pool2d(x, w, bias=None, *, stride=1, padding=0, dilation=1, pool=2, activation=None,
                      negative_slope=0.01):
    """max_pool2d(act(conv2d(x, w) + bias), pool) with pool×pool windows and stride pool, as one
    kernel that never writes the convolution's output -> (y, indices), the indices those of
    max_pool2d(..., return_indices=True) on the convolution's output (N, OH, OW, C_out), so
    max_pool2d_backward(g, indices, (N, OH, OW, C_out), pool) routes the gradient back.

    activation: None, "relu" or "leaky_relu" (with negative_slope > 0): functions that commute
    with max, which the kernel applies to the pooled values.
    """
    fn = "conv2d_max_pool2d"
    xa, kind = _cpu_input(x, "x", fn)
    wa, _ = _cpu_input(w, "w", fn)
    if activation is not None and activation not in COMMUTES_WITH_MAX:
        known = ", ".join(repr(a) for a in [None, *sorted(COMMUTES_WITH_MAX)])
        raise ValueError(f"{fn}: activation must be one of {known} (they commute with max), got {activation!r}")
    if activation is not None and TABLE[activation]["takes_param"] and not negative_slope > 0:
        raise ValueError(f"{fn}: leaky_relu commutes with max only for negative_slope > 0, got {negative_slope}")
    pool = integer(pool, "pool", fn, minimum=1)
    negative_slope = real(negative_slope, "negative_slope", fn)
    oh, ow, geo = conv_geometry(xa.shape, wa.shape, stride, padding, dilation, fn)
    if pool > min(oh, ow):
        raise ValueError(f"{fn}: pool window {pool} is larger than the convolution's output {oh}x{ow}")
    ba = _bias_input(bias, wa.shape, fn)
    shape = (xa.shape[0], oh // pool, ow // pool, wa.shape[3])
    xa, wa = np.ascontiguousarray(xa), np.ascontiguousarray(wa)
    y, indices = np.empty(shape, np.float32), np.empty(shape, np.int32)
    if y.size:
        _cpu.conv2d_forward_max_pool(xa, wa, ba, y, indices, pool, geo, activation_code(activation),
                                     float(negative_slope))
    return to_kind(y, kind), to_kind(indices, kind)


def conv2d_backward_input(grad_out, w, input_shape, *, stride=1, padding=0, dilation=1, out=None):
    """The gradient of conv2d with respect to x, shape input_shape (N, H, W, C_in)."""
    fn = "conv2d_backward_input"
    g, kind = _cpu_input(grad_out, "grad_out", fn)
    wa, _ = _cpu_input(w, "w", fn)
    shape = shape_argument(input_shape, "input_shape", fn, 4)
    oh, ow, geo = conv_geometry(shape, wa.shape, stride, padding, dilation, fn)
    expected = (shape[0], oh, ow, wa.shape[3])
    if tuple(g.shape) != expected:
        raise ValueError(f"{fn}: grad_out has shape {tuple(g.shape)}, expected {expected} for input_shape "
                         f"{shape} and weight {tuple(wa.shape)}")
    g, wa = np.ascontiguousarray(g), np.ascontiguousarray(wa)
    target, result = cpu_output(out, shape, (g, wa))
    if target.size:
        _cpu.conv2d_backward_input(g, wa, target, geo)
    return finish_output(target, result, out, kind)


def conv2d_backward_weight(x, grad_out, weight_shape, *, stride=1, padding=0, dilation=1, out=None):
    """The gradient of conv2d with respect to w, shape weight_shape (KH, KW, C_in, C_out)."""
    fn = "conv2d_backward_weight"
    xa, kind = _cpu_input(x, "x", fn)
    g, _ = _cpu_input(grad_out, "grad_out", fn)
    shape = shape_argument(weight_shape, "weight_shape", fn, 4)
    oh, ow, geo = conv_geometry(xa.shape, shape, stride, padding, dilation, fn)
    expected = (xa.shape[0], oh, ow, shape[3])
    if tuple(g.shape) != expected:
        raise ValueError(f"{fn}: grad_out has shape {tuple(g.shape)}, expected {expected} for input "
                         f"{tuple(xa.shape)} and weight_shape {shape}")
    xa, g = np.ascontiguousarray(xa), np.ascontiguousarray(g)
    target, result = cpu_output(out, shape, (xa, g))
    if target.size:
        _cpu.conv2d_backward_weight(xa, g, target, geo)
    return finish_output(target, result, out, kind)


def conv2d_backward_bias(grad_out, *, out=None):
    """The gradient of conv2d with respect to its bias: grad_out summed over N, OH, OW -> (C_out,)."""
    fn = "conv2d_backward_bias"
    g, kind = _cpu_input(grad_out, "grad_out", fn)
    if g.ndim != 4:
        raise ValueError(f"{fn}: grad_out must be 4-D (N, OH, OW, C_out), got shape {tuple(g.shape)}")
    g = np.ascontiguousarray(g)
    shape = (g.shape[3],)
    target, result = cpu_output(out, shape, (g,))
    if target.size:
        if g.size:
            _cpu.conv2d_backward_bias(g, target)
        else:
            target[...] = 0.0
    return finish_output(target, result, out, kind)


def conv2d_backward(grad_out, x, w, *, stride=1, padding=0, dilation=1, input_grad=True, weight_grad=True,
                    bias_grad=True, out=None):
    """The gradients of conv2d with respect to x, w and the bias in one call -> (grad_x, grad_w,
    grad_bias), None for each not asked for (PyTorch's convolution_backward with its output mask).

    The numbers of conv2d_backward_input, _weight and _bias. First layers (C_in <= 4) run the
    passes image by image while the weight gradient is among them, so grad_out is read from
    memory once instead of once per gradient. out: None, or a triple of arrays (or None) to
    write the gradients into.
    """
    fn = "conv2d_backward"
    g, kind = _cpu_input(grad_out, "grad_out", fn)
    xa, _ = _cpu_input(x, "x", fn)
    wa, _ = _cpu_input(w, "w", fn)
    oh, ow, geo = conv_geometry(xa.shape, wa.shape, stride, padding, dilation, fn)
    expected = (xa.shape[0], oh, ow, wa.shape[3])
    if tuple(g.shape) != expected:
        raise ValueError(f"{fn}: grad_out has shape {tuple(g.shape)}, expected {expected} for input "
                         f"{tuple(xa.shape)} and weight {tuple(wa.shape)}")
    if out is None:
        out = (None, None, None)
    elif not (isinstance(out, (tuple, list)) and len(out) == 3):
        raise ValueError(f"{fn}: out must be None or a triple (grad_x, grad_w, grad_bias), got {type(out).__name__}")
    g, xa, wa = np.ascontiguousarray(g), np.ascontiguousarray(xa), np.ascontiguousarray(wa)
    wanted = (flag(input_grad, "input_grad", fn), flag(weight_grad, "weight_grad", fn), flag(bias_grad, "bias_grad", fn))
    shapes = (xa.shape, wa.shape, (wa.shape[3],))
    made = [cpu_output(o, shape, (g, xa, wa)) if want else (None, None)
            for want, o, shape in zip(wanted, out, shapes)]
    targets = [target for target, _ in made]
    if any(t is not None and t.size for t in targets):
        _cpu.conv2d_backward(g, xa, wa, *targets, geo)
    return tuple(finish_output(target, result, o, kind) if want else None
                 for want, (target, result), o in zip(wanted, made, out))
