"""2-D convolution over NHWC float32 images with HWIO weights: forward with fused bias and
activation, and the three backward passes.

Shapes: x (N, H, W, C_in), w (KH, KW, C_in / groups, C_out), output (N, OH, OW, C_out) with
OH = (H + pad_top + pad_bottom - dilation_h * (KH - 1) - 1) // stride_h + 1 (OW likewise).

groups (PyTorch's groups=): group g convolves input channels [g*C_in/G, (g+1)*C_in/G) with
weight columns [g*C_out/G, (g+1)*C_out/G) into those output channels; PyTorch's weight
(C_out, C_in/G, KH, KW) is w.transpose(2, 3, 1, 0). groups = C_in is a depthwise convolution.
The groups run inside the kernels: on the CPU the driver regroups each array once per call
(cpp/conv/grouped.h), on a GPU each group is one batch item of the implicit GEMM; depthwise
shapes (C_in / groups = 1) run on direct kernels on both (cpp/conv/depthwise.h,
cuda/conv/conv_depthwise.cu). conv2d_max_pool2d has no groups.

padding: an int p (p on every side), a pair (ph, pw), a pair of pairs ((top, bottom), (left,
right)), "valid" (none) or "same" (TensorFlow's rule: OH = ceil(H / stride), the total padding
split evenly with the odd pixel at the bottom/right; also for stride > 1).

The kernels are implicit GEMMs: on the CPU (NumPy arrays) on the GEMM family's micro-tiles (see
cpp/conv/conv.h), on a GPU (CuPy and other CUDA arrays) on the CUDA GEMM's SIMT mainloop (see
cuda/conv/conv.cuh), in fp32 on both. CUDA kernels run on the caller's current CuPy stream unless
stream= is given. Inputs of any layout are used C-contiguous (copied when they are not).

precision: "fp32" (the default), or "bf16" for conv2d and its input and weight gradients (groups 1):
input and weight rounded to bf16, fp32 sums, fp32 results, as an im2col and the bf16 GEMM of either
device (ops/conv_bf16.py; on CUDA the tensor-core GEMM, not yet timed on a GPU).
"""
from __future__ import annotations

import numpy as np

from .. import _backend, _cpu
from .._backend import array_module, to_kind
from ._common import (check_out, check_same_device, cpu_output, finish_output, flag, float32_input,
                      integer, pair, real, shape_argument)
from .activation import COMMUTES_WITH_MAX, TABLE, activation_code
from . import conv_bf16
from . import gemm_int8
from .gemm import epilogue_code
from .gemm_int8 import as_quantized_weight, int8_operand, int8_output, requant_args


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


def check_groups(groups, c_in, c_out, fn: str) -> int:
    """groups as an int after checking it divides both channel counts (ValueError as PyTorch's
    modules raise it)."""
    groups = integer(groups, "groups", fn, minimum=1)
    for name, c in (("in_channels", c_in), ("out_channels", c_out)):
        if c % groups:
            raise ValueError(f"{fn}: {name} ({c}) must be divisible by groups ({groups})")
    return groups


def conv_geometry(x_shape, w_shape, stride, padding, dilation, fn: str, groups: int = 1):
    """(OH, OW, geometry) after checking every size, geometry being what the kernels take
    (stride, dilation, padding); ValueError showing the shapes. The output size is the compiled
    side's (cpp/conv/conv_shape.cpp), the one formula for it."""
    if len(x_shape) != 4:
        raise ValueError(f"{fn}: input must be 4-D NHWC (N, H, W, C_in), got shape {tuple(x_shape)}")
    if len(w_shape) != 4:
        raise ValueError(f"{fn}: weight must be 4-D HWIO (KH, KW, C_in, C_out), got shape {tuple(w_shape)}")
    groups = check_groups(groups, x_shape[3], w_shape[3], fn)
    if groups > 1 and x_shape[3] != w_shape[2] * groups:
        raise ValueError(f"{fn}: input {tuple(x_shape)} has {x_shape[3]} channels but weight {tuple(w_shape)} "
                         f"with groups={groups} expects C_in = {w_shape[2] * groups} (weight is "
                         f"(KH, KW, C_in / groups, C_out))")
    if groups == 1 and x_shape[3] != w_shape[2]:
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


def _inputs(fn: str, **arrays):
    """The native float32 arrays (None stays None), the caller's kind of the first, and their
    common device: TypeError for another dtype, ValueError for arrays on different devices."""
    native, kind = {}, None
    for name, x in arrays.items():
        if x is None:
            native[name] = None
            continue
        arr, k = float32_input(x, name)
        native[name] = arr
        kind = kind or k
    device = check_same_device(**{n: a for n, a in native.items() if a is not None})
    return (*native.values(), kind, device)


def _check_bias(ba, w_shape, fn: str) -> None:
    if ba is not None and ba.shape != (w_shape[3],):
        raise ValueError(f"{fn}: bias must have shape ({w_shape[3]},) for weight {tuple(w_shape)}, got {ba.shape}")


CONV_PRECISIONS = ("fp32", "bf16")


def _precision(precision, device: str, fn: str, groups=1) -> str:
    if type(precision) is not str or precision not in CONV_PRECISIONS:
        raise ValueError(f"{fn}: precision must be one of {', '.join(map(repr, CONV_PRECISIONS))}, got {precision!r}")
    if precision == "bf16" and groups != 1:
        raise ValueError(f"{fn}: precision='bf16' needs groups=1; grouped convolutions compute in fp32")
    return precision


def quantized_conv2d(x, w, *, stride=1, padding=0, dilation=1, x_scale=None, x_zero_point=0, w_scale=None,
                     bias=None, activation=None, out_dtype=None, out_scale=None, out_zero_point=0, out=None,
                     stream=None):
    """The int8 convolution: uint8 NHWC x (N, H, W, C_in) with int8 HWIO w (KH, KW, C_in, C_out),
    or w packed once by pack_quantized_weight(w) (a QuantizedWeight with its kernel_shape).

    Padding positions hold x_zero_point, the quantized real 0. The epilogue is quantized_matmul's
    (fusegrad.ops.gemm_int8): no scales, the exact int32 sums of (x − x_zero_point) · w; with x_scale
    and w_scale (a number or (C_out,) per output channel), x_scale · w_scale · sums + bias, relu,
    as float32 or with out_dtype=np.uint8 / np.int8 requantized with out_scale, out_zero_point. A
    weight packed with its scales and bias (pack_quantized_weight(w, scale=..., bias=...)) supplies
    w_scale and bias.
    On the CPU it runs as an im2col of blocks of output pixels and the int8 GEMM (AMX: an implicit
    GEMM); a 1×1 convolution of stride 1 without padding multiplies the image in place. On a CUDA
    array (with a weight packed from a CUDA array) it is one im2col kernel and the CUDA int8 GEMM.
    """
    fn = "quantized_conv2d"
    xa, kind, cuda = int8_operand(x, "x")
    if xa.dtype != np.uint8:
        raise TypeError(f"x: expected dtype uint8, got {xa.dtype}")
    device = _backend.device_of(xa)
    packed = as_quantized_weight(w, fn, device)
    if packed.kernel_shape is None:
        raise ValueError(f"{fn}: w must be a 4-D HWIO (KH, KW, C_in, C_out) weight or one packed from it, "
                         f"got a packed {packed.shape} matrix")
    oh, ow, geo = conv_geometry(xa.shape, packed.kernel_shape, stride, padding, dilation, fn)
    kh, kw, _, co = packed.kernel_shape
    zp, dtype, scale, bias, act, inv, out_zp = requant_args(
        fn, co, x_scale, x_zero_point, w_scale, bias, activation, out_dtype, out_scale, out_zero_point, "x", "w",
        device=device, weight=packed)
    shape = (xa.shape[0], oh, ow, co)
    if cuda:
        xa = array_module(xa).ascontiguousarray(xa)
        cols = _int8_patches(xa, packed.kernel_shape, oh, ow, geo, zp, stream)
        return gemm_int8.quantized_matmul_cuda(cols, packed, shape, zp, dtype, scale, bias, act, inv, out_zp, out,
                                               kind, stream, fn)
    xa = np.ascontiguousarray(xa)
    target, result = int8_output(out, shape, dtype, xa, fn)
    if target.size:
        _cpu.int8_conv2d_forward(xa, packed.packed, kh, kw, target, geo, zp, scale, bias, act, inv, out_zp,
                                 gemm_int8._INT8_PATH)
    return finish_output(target, result, out, kind)


def _int8_patches(x, kernel_shape, oh, ow, geo, zero_point: int, stream):
    """The A operand of a CUDA int8 convolution: x itself (as N·H·W rows of C) for a 1×1 kernel of
    stride 1 without padding, else its im2col rows (N·OH·OW, KH·KW·C), padding = zero_point."""
    n, _, _, ci = x.shape
    kh, kw = kernel_shape[:2]
    if (kh, kw, geo.sh, geo.sw, geo.pt, geo.pl) == (1, 1, 1, 1, 0, 0):
        return x.reshape(-1, ci)
    xp = array_module(x)
    with _backend.on_device(x):
        cols = xp.empty((n * oh * ow, kh * kw * ci), np.uint8)
    if cols.size:
        with _backend.device_call([x, cols], written=(1,), stream=stream) as call:
            call.module.int8_im2col(*call.pointers, _dims(x.shape, kernel_shape, oh, ow, geo), zero_point, call.stream,
                                    call.device)
    return cols


# --- CUDA ---------------------------------------------------------------------------------------

# Tile configuration of the CUDA implicit GEMMs ("auto", "large", "small") and the K splits of the
# weight gradient (0: by size): fixed by tests to cover each configuration.
_CUDA_TILES = "auto"
_CUDA_WGRAD_SPLITS = 0


def _dims(x_shape, w_shape, oh, ow, geo, groups: int = 1) -> tuple:
    """The sizes and geometry the CUDA kernels take (cuda/conv/conv_bind.cu): C_in and C_out
    those of one group."""
    n, h, w, _ = x_shape
    kh, kw, ci, co = w_shape
    return (n, h, w, ci, kh, kw, co // groups, oh, ow, geo.sh, geo.sw, geo.dh, geo.dw, geo.pt, geo.pl)


def _contiguous(xp, *arrays):
    return [a if a is None or a.flags.c_contiguous else xp.ascontiguousarray(a) for a in arrays]


def _device_output(xp, out, shape, device, inputs):
    """(array the kernel writes, out's native array or None): out itself when it is C-contiguous
    and shares no memory with an input, else a new array that finish_output copies into out."""
    if out is None:
        return xp.empty(shape, np.float32), None
    arr = check_out(out, shape, device)
    if arr.flags.c_contiguous and not any(x is not None and x.size and xp.may_share_memory(arr, x) for x in inputs):
        return arr, arr
    return xp.empty(shape, np.float32), arr


def _cuda_call(kernel, arrays, written, stream, *args, **options):
    """Runs compiled kernel `kernel` on the arrays' addresses (after them: args, stream, device,
    then keyword options)."""
    with _backend.device_call(arrays, written=written, stream=stream) as call:
        getattr(call.module, kernel)(*call.pointers, *args, call.stream, call.device, **options)


# --- the ops ------------------------------------------------------------------------------------


def conv2d(x, w, bias=None, *, stride=1, padding=0, dilation=1, groups=1, activation=None, out=None,
           precision="fp32", stream=None):
    """act(conv(x, w) + bias) -> (N, OH, OW, C_out).

    x (N, H, W, C_in), w (KH, KW, C_in / groups, C_out), bias (C_out,) or None; stride and
    dilation an int or a pair; padding and groups as in the module docstring. activation: None,
    "relu", "gelu", "gelu_tanh", "sigmoid", "tanh" or "silu", applied with the bias while the
    kernel stores the output. precision: "fp32", or "bf16" for groups=1 (see the module docstring).
    """
    fn = "conv2d"
    xa, wa, ba, kind, device = _inputs(fn, x=x, w=w, bias=bias)
    precision = _precision(precision, device, fn, groups)
    code = epilogue_code(activation)
    oh, ow, geo = conv_geometry(xa.shape, wa.shape, stride, padding, dilation, fn, groups)
    groups = int(groups)
    _check_bias(ba, wa.shape, fn)
    shape = (xa.shape[0], oh, ow, wa.shape[3])
    if device != "cpu":
        xp = array_module(xa)
        xa, wa, ba = _contiguous(xp, xa, wa, ba)
        target, result = _device_output(xp, out, shape, device, (xa, wa, ba))
        if target.size and precision == "bf16":
            conv_bf16.forward(xa, wa, ba, geo, oh, ow, activation, target, stream)
        elif target.size:
            _cuda_call("conv2d_forward", [xa, wa, ba, target], (3,), stream,
                       _dims(xa.shape, wa.shape, oh, ow, geo, groups), code, 0.0, _CUDA_TILES, groups=groups)
        return finish_output(target, result, out, kind)
    xa, wa, ba = (None if a is None else np.ascontiguousarray(a) for a in (xa, wa, ba))
    target, result = cpu_output(out, shape, (xa, wa, ba))
    if target.size:
        if precision == "bf16":
            conv_bf16.forward(xa, wa, ba, geo, oh, ow, activation, target)
        else:
            _cpu.conv2d_forward(xa, wa, ba, target, geo, code, groups)
    return finish_output(target, result, out, kind)


def conv2d_max_pool2d(x, w, bias=None, *, stride=1, padding=0, dilation=1, pool=2, activation=None,
                      negative_slope=0.01, return_indices=True, stream=None):
    """max_pool2d(act(conv2d(x, w) + bias), pool) with pool×pool windows and stride pool, as one
    kernel that never writes the convolution's output -> (y, indices), the indices those of
    max_pool2d(..., return_indices=True) on the convolution's output (N, OH, OW, C_out), so
    max_pool2d_backward(g, indices, (N, OH, OW, C_out), pool) routes the gradient back.
    return_indices=False -> y alone, for inference: on the CPU the kernel then neither finds nor
    writes the indices, which is about half the pooling's cost.

    activation: None, "relu" or "leaky_relu" (with negative_slope > 0): functions that commute
    with max, which the kernel applies to the pooled values. On a GPU the convolution's output
    goes to a temporary that a pooling pass reads (cuda/conv/conv_max_pool.cu).
    """
    fn = "conv2d_max_pool2d"
    xa, wa, ba, kind, device = _inputs(fn, x=x, w=w, bias=bias)
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
    _check_bias(ba, wa.shape, fn)
    shape = (xa.shape[0], oh // pool, ow // pool, wa.shape[3])
    xp = array_module(xa)
    xa, wa, ba = _contiguous(xp, xa, wa, ba)
    y = xp.empty(shape, np.float32)
    # The CUDA kernel always writes indices (its pooling pass is cheap next to the convolution).
    indices = xp.empty(shape, np.int32) if return_indices or device != "cpu" else None
    if y.size:
        if device != "cpu":
            _cuda_call("conv2d_forward_max_pool", [xa, wa, ba, y, indices], (3, 4), stream,
                       _dims(xa.shape, wa.shape, oh, ow, geo), pool, activation_code(activation),
                       float(negative_slope))
        else:
            _cpu.conv2d_forward_max_pool(xa, wa, ba, y, indices, pool, geo, activation_code(activation),
                                         float(negative_slope))
    if not return_indices:
        return to_kind(y, kind)
    return to_kind(y, kind), to_kind(indices, kind)


def conv2d_backward_input(grad_out, w, input_shape, *, stride=1, padding=0, dilation=1, groups=1, out=None,
                          precision="fp32", stream=None):
    """The gradient of conv2d with respect to x, shape input_shape (N, H, W, C_in). precision:
    "fp32", or "bf16" (grad_out and w rounded to bf16, fp32 sums)."""
    fn = "conv2d_backward_input"
    g, wa, kind, device = _inputs(fn, grad_out=grad_out, w=w)
    precision = _precision(precision, device, fn, groups)
    shape = shape_argument(input_shape, "input_shape", fn, 4)
    oh, ow, geo = conv_geometry(shape, wa.shape, stride, padding, dilation, fn, groups)
    groups = int(groups)
    expected = (shape[0], oh, ow, wa.shape[3])
    if tuple(g.shape) != expected:
        raise ValueError(f"{fn}: grad_out has shape {tuple(g.shape)}, expected {expected} for input_shape "
                         f"{shape} and weight {tuple(wa.shape)}")
    if device != "cpu":
        xp = array_module(g)
        g, wa = _contiguous(xp, g, wa)
        target, result = _device_output(xp, out, shape, device, (g, wa))
        if target.size and precision == "bf16":
            conv_bf16.backward_input(g, wa, shape, geo, oh, ow, target, stream)
        elif target.size:
            _cuda_call("conv2d_backward_input", [g, wa, target], (2,), stream,
                       _dims(shape, wa.shape, oh, ow, geo, groups), _CUDA_TILES, groups=groups)
        return finish_output(target, result, out, kind)
    g, wa = np.ascontiguousarray(g), np.ascontiguousarray(wa)
    target, result = cpu_output(out, shape, (g, wa))
    if target.size:
        if precision == "bf16":
            conv_bf16.backward_input(g, wa, shape, geo, oh, ow, target)
        else:
            _cpu.conv2d_backward_input(g, wa, target, geo, groups)
    return finish_output(target, result, out, kind)


def conv2d_backward_weight(x, grad_out, weight_shape, *, stride=1, padding=0, dilation=1, groups=1, out=None,
                           precision="fp32", stream=None):
    """The gradient of conv2d with respect to w, shape weight_shape (KH, KW, C_in / groups, C_out).
    precision: "fp32", or "bf16" (x and grad_out rounded to bf16, fp32 sums)."""
    fn = "conv2d_backward_weight"
    xa, g, kind, device = _inputs(fn, x=x, grad_out=grad_out)
    precision = _precision(precision, device, fn, groups)
    shape = shape_argument(weight_shape, "weight_shape", fn, 4)
    oh, ow, geo = conv_geometry(xa.shape, shape, stride, padding, dilation, fn, groups)
    groups = int(groups)
    expected = (xa.shape[0], oh, ow, shape[3])
    if tuple(g.shape) != expected:
        raise ValueError(f"{fn}: grad_out has shape {tuple(g.shape)}, expected {expected} for input "
                         f"{tuple(xa.shape)} and weight_shape {shape}")
    if device != "cpu":
        xp = array_module(xa)
        xa, g = _contiguous(xp, xa, g)
        target, result = _device_output(xp, out, shape, device, (xa, g))
        if target.size and precision == "bf16":
            conv_bf16.backward_weight(xa, g, shape, geo, oh, ow, target, stream)
        elif target.size:
            _cuda_call("conv2d_backward_weight", [xa, g, target], (2,), stream,
                       _dims(xa.shape, shape, oh, ow, geo, groups), _CUDA_TILES, _CUDA_WGRAD_SPLITS, groups=groups)
        return finish_output(target, result, out, kind)
    xa, g = np.ascontiguousarray(xa), np.ascontiguousarray(g)
    target, result = cpu_output(out, shape, (xa, g))
    if target.size:
        if precision != "bf16":
            _cpu.conv2d_backward_weight(xa, g, target, geo, groups)
        else:
            conv_bf16.backward_weight(xa, g, shape, geo, oh, ow, target)
    return finish_output(target, result, out, kind)


def conv2d_backward_bias(grad_out, *, out=None, stream=None):
    """The gradient of conv2d with respect to its bias: grad_out summed over N, OH, OW -> (C_out,)."""
    fn = "conv2d_backward_bias"
    g, kind, device = _inputs(fn, grad_out=grad_out)
    if g.ndim != 4:
        raise ValueError(f"{fn}: grad_out must be 4-D (N, OH, OW, C_out), got shape {tuple(g.shape)}")
    shape = (g.shape[3],)
    if device != "cpu":
        xp = array_module(g)
        (g,) = _contiguous(xp, g)
        target, result = _device_output(xp, out, shape, device, (g,))
        if target.size:
            _cuda_call("conv2d_backward_bias", [g, target], (1,), stream, g.size // shape[0], shape[0])
        return finish_output(target, result, out, kind)
    g = np.ascontiguousarray(g)
    target, result = cpu_output(out, shape, (g,))
    if target.size:
        if g.size:
            _cpu.conv2d_backward_bias(g, target)
        else:
            target[...] = 0.0
    return finish_output(target, result, out, kind)


def conv2d_backward(grad_out, x, w, *, stride=1, padding=0, dilation=1, groups=1, input_grad=True,
                    weight_grad=True, bias_grad=True, out=None, precision="fp32", stream=None):
    """The gradients of conv2d with respect to x, w and the bias in one call -> (grad_x, grad_w,
    grad_bias), None for each not asked for (PyTorch's convolution_backward with its output mask).

    The numbers of conv2d_backward_input, _weight and _bias. First layers (C_in <= 4) run the
    passes image by image while the weight gradient is among them, so grad_out is read from
    memory once instead of once per gradient (CPU; on a GPU the three kernels run one after
    another). out: None, or a triple of arrays (or None) to write the gradients into. precision:
    "fp32", or "bf16" on the CPU for the input and weight gradients (the bias gradient, a sum of
    grad_out, is fp32 either way).
    """
    fn = "conv2d_backward"
    g, xa, wa, kind, device = _inputs(fn, grad_out=grad_out, x=x, w=w)
    precision = _precision(precision, device, fn, groups)
    oh, ow, geo = conv_geometry(xa.shape, wa.shape, stride, padding, dilation, fn, groups)
    groups = int(groups)
    expected = (xa.shape[0], oh, ow, wa.shape[3])
    if tuple(g.shape) != expected:
        raise ValueError(f"{fn}: grad_out has shape {tuple(g.shape)}, expected {expected} for input "
                         f"{tuple(xa.shape)} and weight {tuple(wa.shape)}")
    if out is None:
        out = (None, None, None)
    elif not (isinstance(out, (tuple, list)) and len(out) == 3):
        raise ValueError(f"{fn}: out must be None or a triple (grad_x, grad_w, grad_bias), got {type(out).__name__}")
    wanted = (flag(input_grad, "input_grad", fn), flag(weight_grad, "weight_grad", fn), flag(bias_grad, "bias_grad", fn))
    if device != "cpu" or precision == "bf16":
        # One pass per gradient (the bf16 passes are GEMMs on columns; CUDA has a kernel each).
        geometry = {"stride": (geo.sh, geo.sw), "padding": ((geo.pt, geo.pb), (geo.pl, geo.pr)),
                    "dilation": (geo.dh, geo.dw), "groups": groups, "precision": precision}
        grads = (conv2d_backward_input(g, wa, xa.shape, out=out[0], stream=stream, **geometry) if wanted[0] else None,
                 conv2d_backward_weight(xa, g, wa.shape, out=out[1], stream=stream, **geometry) if wanted[1] else None,
                 conv2d_backward_bias(g, out=out[2], stream=stream) if wanted[2] else None)
        # The passes got native arrays: give their results back as the caller's kind (out as given).
        return tuple(r if r is None or o is not None else to_kind(r, kind) for r, o in zip(grads, out))
    g, xa, wa = np.ascontiguousarray(g), np.ascontiguousarray(xa), np.ascontiguousarray(wa)
    shapes = (xa.shape, wa.shape, (wa.shape[3],))
    made = [cpu_output(o, shape, (g, xa, wa)) if want else (None, None)
            for want, o, shape in zip(wanted, out, shapes)]
    targets = [target for target, _ in made]
    if any(t is not None and t.size for t in targets):
        _cpu.conv2d_backward(g, xa, wa, *targets, geo, groups)
    return tuple(finish_output(target, result, o, kind) if want else None
                 for want, (target, result), o in zip(wanted, made, out))
