"""2-D pooling over NHWC float32 images: max, average and global average, with backward passes.

Sizes (kernel_size, stride, padding) are ints or (h, w) pairs; stride defaults to kernel_size.
The output size follows PyTorch (floor rule, ceil_mode=False): OH = (H + 2 ph - kh) // sh + 1.
Padding is at most half the window (as PyTorch requires); max pooling pads with -inf, so padded
positions never win, and average pooling divides by kh * kw (count_include_pad=True) or by the
number of real pixels in the window (count_include_pad=False).

Max-pool indices are int32, shaped like the output: for each output element, the flat position
ih * W + iw of the chosen pixel in its own (H, W) plane (the image and channel are those of the
output element), as PyTorch's max_pool2d(return_indices=True) gives for NCHW. Ties keep the first
pixel in row-major window order; NaN wins and propagates. max_pool2d_backward takes these indices.

These kernels run on the CPU (NumPy arrays); CUDA arrays raise ValueError.
"""
from __future__ import annotations

import numpy as np

from .. import _cpu
from .._backend import device_of, native, to_kind
from ._common import cpu_output, finish_output, flag, float32_input, pair, shape_argument


def _cpu_float32(x, name: str, fn: str):
    arr, kind = float32_input(x, name)
    if device_of(arr) != "cpu":
        raise ValueError(f"{fn}: {name} is on {device_of(arr)}, but pooling runs on the CPU only so far")
    return arr, kind


def _check_rank4(shape, name: str, fn: str) -> None:
    if len(shape) != 4:
        raise ValueError(f"{fn}: {name} must be 4-D (N, H, W, C), got shape {tuple(shape)}")


def _geometry(shape, kernel_size, stride, padding, fn: str):
    """(OH, OW, kh, kw, sh, sw, ph, pw) after checking every size against the input shape; the
    output size is the compiled side's (cpp/pool/pool_geometry.cpp), the one formula for it."""
    _check_rank4(shape, "input", fn)
    kh, kw = pair(kernel_size, "kernel_size", fn)
    sh, sw = pair(kernel_size if stride is None else stride, "stride", fn)
    ph, pw = pair(padding, "padding", fn)
    try:
        oh, ow = _cpu.pool2d_output_size(shape[1], shape[2], kh, kw, sh, sw, ph, pw)
    except ValueError as err:
        raise ValueError(f"{fn}: {err} (input shape {tuple(shape)}, padding {(ph, pw)})") from None
    return oh, ow, kh, kw, sh, sw, ph, pw


def _input_shape(input_shape, fn: str) -> tuple:
    return shape_argument(input_shape, "input_shape", fn, 4)


def _check_grad_out(grad_out, expected: tuple, fn: str):
    g, kind = _cpu_float32(grad_out, "grad_out", fn)
    if tuple(g.shape) != expected:
        raise ValueError(f"{fn}: grad_out has shape {tuple(g.shape)}, expected {expected} for this input_shape")
    return np.ascontiguousarray(g), kind


def max_pool2d(x, kernel_size, stride=None, padding=0, *, return_indices=False, out=None):
    """Max pooling of NHWC x -> (N, OH, OW, C), and with return_indices=True also the int32
    indices (see the module docstring) that max_pool2d_backward takes."""
    fn = "max_pool2d"
    arr, kind = _cpu_float32(x, "x", fn)
    oh, ow, *geo = _geometry(arr.shape, kernel_size, stride, padding, fn)
    shape = (arr.shape[0], oh, ow, arr.shape[3])
    arr = np.ascontiguousarray(arr)
    target, result = cpu_output(out, shape, (arr,))
    return_indices = flag(return_indices, "return_indices", fn)
    indices = np.empty(shape, np.int32) if return_indices else None
    if target.size:
        _cpu.max_pool2d_forward(arr, target, indices, *geo)
    y = finish_output(target, result, out, kind)
    return (y, to_kind(indices, kind)) if return_indices else y


def max_pool2d_backward(grad_out, indices, input_shape, kernel_size, stride=None, padding=0):
    """Gradient of max_pool2d with respect to its input, shape input_shape (N, H, W, C): each
    grad_out value goes to the pixel its index names (accumulating where windows overlap)."""
    fn = "max_pool2d_backward"
    shape = _input_shape(input_shape, fn)
    oh, ow, *geo = _geometry(shape, kernel_size, stride, padding, fn)
    expected = (shape[0], oh, ow, shape[3])
    g, kind = _check_grad_out(grad_out, expected, fn)
    ind, _ = native(indices, "indices")
    if device_of(ind) != "cpu":
        raise ValueError(f"{fn}: indices is on {device_of(ind)}, but pooling runs on the CPU only so far")
    if ind.dtype.kind not in "iu":
        raise TypeError(f"{fn}: indices: expected an integer dtype (int32 from max_pool2d), got {ind.dtype}")
    if tuple(ind.shape) != expected:
        raise ValueError(f"{fn}: indices has shape {tuple(ind.shape)}, expected {expected}")
    if ind.dtype != np.int32:
        if ind.size and (ind.min() < 0 or ind.max() >= shape[1] * shape[2]):
            raise ValueError(f"{fn}: indices out of range [0, H*W = {shape[1] * shape[2]})")
        ind = ind.astype(np.int32)
    ind = np.ascontiguousarray(ind)
    gx = np.empty(shape, np.float32)
    if gx.size:
        # The kernel skips, counts and reports (ValueError) indices outside their window.
        _cpu.max_pool2d_backward(g, ind, gx, *geo)
    return to_kind(gx, kind)


def avg_pool2d(x, kernel_size, stride=None, padding=0, *, count_include_pad=True, out=None):
    """Average pooling of NHWC x -> (N, OH, OW, C)."""
    fn = "avg_pool2d"
    arr, kind = _cpu_float32(x, "x", fn)
    oh, ow, *geo = _geometry(arr.shape, kernel_size, stride, padding, fn)
    shape = (arr.shape[0], oh, ow, arr.shape[3])
    arr = np.ascontiguousarray(arr)
    target, result = cpu_output(out, shape, (arr,))
    if target.size:
        _cpu.avg_pool2d_forward(arr, target, *geo, flag(count_include_pad, "count_include_pad", fn))
    return finish_output(target, result, out, kind)


def avg_pool2d_backward(grad_out, input_shape, kernel_size, stride=None, padding=0, *, count_include_pad=True):
    """Gradient of avg_pool2d with respect to its input, shape input_shape (N, H, W, C)."""
    fn = "avg_pool2d_backward"
    shape = _input_shape(input_shape, fn)
    oh, ow, *geo = _geometry(shape, kernel_size, stride, padding, fn)
    g, kind = _check_grad_out(grad_out, (shape[0], oh, ow, shape[3]), fn)
    gx = np.empty(shape, np.float32)
    if gx.size:
        _cpu.avg_pool2d_backward(g, gx, *geo, flag(count_include_pad, "count_include_pad", fn))
    return to_kind(gx, kind)


def global_avg_pool2d(x, *, out=None):
    """Mean over H and W of NHWC x -> (N, C). An empty H or W gives NaN, as a mean of nothing."""
    fn = "global_avg_pool2d"
    arr, kind = _cpu_float32(x, "x", fn)
    _check_rank4(arr.shape, "x", fn)
    shape = (arr.shape[0], arr.shape[3])
    arr = np.ascontiguousarray(arr)
    target, result = cpu_output(out, shape, (arr,))
    if target.size:
        _cpu.global_avg_pool2d_forward(arr, target)
    return finish_output(target, result, out, kind)


def global_avg_pool2d_backward(grad_out, input_shape):
    """Gradient of global_avg_pool2d: grad_out (N, C) spread evenly over each (H, W) plane."""
    fn = "global_avg_pool2d_backward"
    shape = _input_shape(input_shape, fn)
    g, kind = _check_grad_out(grad_out, (shape[0], shape[3]), fn)
    gx = np.empty(shape, np.float32)
    if gx.size:
        _cpu.global_avg_pool2d_backward(g, gx)
    return to_kind(gx, kind)


__all__ = [
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward", "global_avg_pool2d",
    "global_avg_pool2d_backward",
]
