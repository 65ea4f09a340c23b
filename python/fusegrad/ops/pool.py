"""2-D pooling over NHWC float32 images: max, average and global average, with backward passes.

Sizes (kernel_size, stride, padding, dilation) are ints or (h, w) pairs; stride defaults to
kernel_size. The output size follows PyTorch: OH = (H + 2 ph - dh (kh - 1) - 1) // sh + 1, or with
ceil_mode=True rounded up, except that the last window must start inside the input or its top
padding. Padding is at most half the window (as PyTorch requires); max pooling pads with -inf, so
padded positions never win, and its window's taps lie dilation apart. Average pooling (no
dilation) divides by the window clipped to the padded input (count_include_pad=True: kh * kw, less
for ceil mode's last windows that hang past the padding, as PyTorch) or by the number of real
pixels in the window (count_include_pad=False).

Max-pool indices are int32, shaped like the output: for each output element, the flat position
ih * W + iw of the chosen pixel in its own (H, W) plane (the image and channel are those of the
output element), as PyTorch's max_pool2d(return_indices=True) gives for NCHW. Ties keep the first
pixel in row-major window order; NaN wins and propagates. max_pool2d_backward takes these indices.

NumPy arrays run the CPU kernels; CUDA arrays (CuPy, or anything with __cuda_array_interface__ or
DLPack) and the emulated device's arrays run the CUDA kernels (cuda/pool/), on the caller's current
CuPy stream unless `stream=` is given, with the same conventions and results: max pooling and both
backward passes are deterministic. One difference: max_pool2d_backward on a CUDA array checks that
each index names a pixel of its own window only when asked (check_indices=True), because reading the
count back waits for the GPU; unchecked, an index outside its window contributes nothing.
"""
from __future__ import annotations

import numpy as np

from .. import _backend, _cpu
from .._backend import array_module, device_of, native, to_kind
from ._common import (check_out, check_same_device, cpu_output, finish_output, flag, float32_input, pair,
                      shape_argument)
from .gemm_int8 import int8_operand, int8_output


def _float32(x, name: str):
    """(native array, caller kind, whether it is on a CUDA device) for a float32 input."""
    arr, kind = float32_input(x, name)
    return arr, kind, device_of(arr) != "cpu"


def _contiguous(arr):
    return arr if arr.flags.c_contiguous else array_module(arr).ascontiguousarray(arr)


def _read_back(arr, stream: int):
    """A host copy of a small device array the kernels on `stream` wrote: waits for that stream."""
    if not _backend.is_emulated(arr):
        _backend.cupy_module().cuda.runtime.streamSynchronize(stream)
    return _backend.to_host(arr)


def _empty(like, shape: tuple, dtype=np.float32, zero: bool = False):
    """A new array on like's device."""
    xp = array_module(like)
    with _backend.on_device(like):
        return xp.zeros(shape, dtype) if zero else xp.empty(shape, dtype)


def _cuda_output(out, shape: tuple, inputs: tuple):
    """(array the CUDA kernel writes, the caller's out or None): out itself when it is C-contiguous
    and shares no memory with an input, else a fresh device array copied into out afterwards."""
    xp = array_module(inputs[0])
    if out is None:
        return _empty(inputs[0], shape), None
    arr = check_out(out, shape, device_of(inputs[0]))
    if arr.flags.c_contiguous and not any(xp.may_share_memory(arr, x) for x in inputs):
        return arr, arr
    return _empty(inputs[0], shape), arr


def _check_rank4(shape, name: str, fn: str) -> None:
    if len(shape) != 4:
        raise ValueError(f"{fn}: {name} must be 4-D (N, H, W, C), got shape {tuple(shape)}")


def _geometry(shape, kernel_size, stride, padding, fn: str, dilation=1, ceil_mode=False):
    """(OH, OW, window) after checking every size against the input shape, window being (kh, kw,
    sh, sw, ph, pw, dh, dw, ceil_mode) as the kernels take it; the output size is the compiled
    side's (cpp/pool/pool_geometry.cpp), the one formula for it."""
    _check_rank4(shape, "input", fn)
    kh, kw = pair(kernel_size, "kernel_size", fn)
    sh, sw = pair(kernel_size if stride is None else stride, "stride", fn)
    ph, pw = pair(padding, "padding", fn)
    dh, dw = pair(dilation, "dilation", fn)
    ceil_mode = flag(ceil_mode, "ceil_mode", fn)
    try:
        oh, ow = _cpu.pool2d_output_size(shape[1], shape[2], kh, kw, sh, sw, ph, pw, dh, dw, ceil_mode)
    except ValueError as err:
        raise ValueError(f"{fn}: {err} (input shape {tuple(shape)}, padding {(ph, pw)})") from None
    return oh, ow, (kh, kw, sh, sw, ph, pw, dh, dw, ceil_mode)


def _input_shape(input_shape, fn: str) -> tuple:
    return shape_argument(input_shape, "input_shape", fn, 4)


def _check_grad_out(grad_out, expected: tuple, fn: str):
    """(contiguous grad_out, caller kind, on a CUDA device) after checking its shape."""
    g, kind, cuda = _float32(grad_out, "grad_out")
    if tuple(g.shape) != expected:
        raise ValueError(f"{fn}: grad_out has shape {tuple(g.shape)}, expected {expected} for this input_shape")
    return (_contiguous(g) if cuda else np.ascontiguousarray(g)), kind, cuda


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, *, return_indices=False,
               out=None, stream=None):
    """Max pooling of NHWC x -> (N, OH, OW, C), and with return_indices=True also the int32
    indices (see the module docstring) that max_pool2d_backward takes."""
    fn = "max_pool2d"
    arr, kind, cuda = _float32(x, "x")
    oh, ow, geo = _geometry(arr.shape, kernel_size, stride, padding, fn, dilation, ceil_mode)
    shape = (arr.shape[0], oh, ow, arr.shape[3])
    return_indices = flag(return_indices, "return_indices", fn)
    if cuda:
        arr = _contiguous(arr)
        target, result = _cuda_output(out, shape, (arr,))
        indices = _empty(arr, shape, np.int32) if return_indices else None
        if target.size:
            with _backend.device_call([arr, target, indices], written=(1, 2), stream=stream) as call:
                call.module.max_pool2d_forward(*call.pointers, (*arr.shape, oh, ow), geo, call.stream, call.device)
    else:
        arr = np.ascontiguousarray(arr)
        target, result = cpu_output(out, shape, (arr,))
        indices = np.empty(shape, np.int32) if return_indices else None
        if target.size:
            _cpu.max_pool2d_forward(arr, target, indices, *geo)
    y = finish_output(target, result, out, kind)
    return (y, to_kind(indices, kind)) if return_indices else y


def max_pool2d_backward(grad_out, indices, input_shape, kernel_size, stride=None, padding=0, dilation=1,
                        ceil_mode=False, *, check_indices=False, stream=None):
    """Gradient of max_pool2d with respect to its input, shape input_shape (N, H, W, C): each
    grad_out value goes to the pixel its index names (accumulating where windows overlap).

    Indices that do not name a pixel of their window are a ValueError: always on the CPU; on a CUDA
    device with check_indices=True (which waits for the kernel to count them); unchecked, such an
    index contributes nothing."""
    fn = "max_pool2d_backward"
    shape = _input_shape(input_shape, fn)
    oh, ow, geo = _geometry(shape, kernel_size, stride, padding, fn, dilation, ceil_mode)
    expected = (shape[0], oh, ow, shape[3])
    g, kind, cuda = _float32(grad_out, "grad_out")
    if tuple(g.shape) != expected:
        raise ValueError(f"{fn}: grad_out has shape {tuple(g.shape)}, expected {expected} for this input_shape")
    ind, _ = native(indices, "indices")
    if device_of(ind) != device_of(g):
        check_same_device(grad_out=g, indices=ind)
    if ind.dtype.kind not in "iu":
        raise TypeError(f"{fn}: indices: expected an integer dtype (int32 from max_pool2d), got {ind.dtype}")
    if tuple(ind.shape) != expected:
        raise ValueError(f"{fn}: indices has shape {tuple(ind.shape)}, expected {expected}")
    check_indices = flag(check_indices, "check_indices", fn)
    if ind.dtype != np.int32:
        if ind.size and (int(ind.min()) < 0 or int(ind.max()) >= shape[1] * shape[2]):
            raise ValueError(f"{fn}: indices out of range [0, H*W = {shape[1] * shape[2]})")
        ind = ind.astype(np.int32)
    if cuda:
        g, ind = _contiguous(g), _contiguous(ind)
        gx = _empty(g, shape)
        bad = _empty(g, (), np.uint64, zero=True) if check_indices else None
        if gx.size:
            with _backend.device_call([g, ind, gx, bad], written=(2, 3), stream=stream) as call:
                call.module.max_pool2d_backward(*call.pointers, (*shape, oh, ow), geo, call.stream, call.device)
        if bad is not None and gx.size:
            count = int(_read_back(bad, call.stream))
            if count:
                raise ValueError(f"{fn}: {count} indices do not name a pixel of their pooling window")
        return to_kind(gx, kind)
    g, ind = np.ascontiguousarray(g), np.ascontiguousarray(ind)
    gx = np.empty(shape, np.float32)
    if gx.size:
        # The kernel skips, counts and reports (ValueError) indices outside their window.
        _cpu.max_pool2d_backward(g, ind, gx, *geo)
    return to_kind(gx, kind)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, *, out=None,
               stream=None):
    """Average pooling of NHWC x -> (N, OH, OW, C)."""
    fn = "avg_pool2d"
    arr, kind, cuda = _float32(x, "x")
    oh, ow, geo = _geometry(arr.shape, kernel_size, stride, padding, fn, 1, ceil_mode)
    shape = (arr.shape[0], oh, ow, arr.shape[3])
    include_pad = flag(count_include_pad, "count_include_pad", fn)
    if cuda:
        arr = _contiguous(arr)
        target, result = _cuda_output(out, shape, (arr,))
        if target.size:
            with _backend.device_call([arr, target], written=(1,), stream=stream) as call:
                call.module.avg_pool2d_forward(*call.pointers, (*arr.shape, oh, ow), geo, include_pad,
                                               call.stream, call.device)
    else:
        arr = np.ascontiguousarray(arr)
        target, result = cpu_output(out, shape, (arr,))
        if target.size:
            _cpu.avg_pool2d_forward(arr, target, *geo[:6], include_pad, geo[8])
    return finish_output(target, result, out, kind)


def avg_pool2d_backward(grad_out, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True, *, stream=None):
    """Gradient of avg_pool2d with respect to its input, shape input_shape (N, H, W, C)."""
    fn = "avg_pool2d_backward"
    shape = _input_shape(input_shape, fn)
    oh, ow, geo = _geometry(shape, kernel_size, stride, padding, fn, 1, ceil_mode)
    g, kind, cuda = _check_grad_out(grad_out, (shape[0], oh, ow, shape[3]), fn)
    include_pad = flag(count_include_pad, "count_include_pad", fn)
    if cuda:
        gx = _empty(g, shape)
        if gx.size:
            with _backend.device_call([g, gx], written=(1,), stream=stream) as call:
                call.module.avg_pool2d_backward(*call.pointers, (*shape, oh, ow), geo, include_pad,
                                                call.stream, call.device)
        return to_kind(gx, kind)
    gx = np.empty(shape, np.float32)
    if gx.size:
        _cpu.avg_pool2d_backward(g, gx, *geo[:6], include_pad, geo[8])
    return to_kind(gx, kind)


def global_avg_pool2d(x, *, out=None, stream=None):
    """Mean over H and W of NHWC x -> (N, C). An empty H or W gives NaN, as a mean of nothing."""
    fn = "global_avg_pool2d"
    arr, kind, cuda = _float32(x, "x")
    _check_rank4(arr.shape, "x", fn)
    n, h, w, c = arr.shape
    shape = (n, c)
    if cuda:
        arr = _contiguous(arr)
        target, result = _cuda_output(out, shape, (arr,))
        if target.size:
            with _backend.device_call([arr, target], written=(1,), stream=stream) as call:
                # Partial sums of planes split over several blocks (small batches), on the device.
                size = call.module.global_avg_pool2d_workspace_size(n, h * w, c, call.device)
                workspace = _empty(arr, (size,), np.float64) if size else None
                call.module.global_avg_pool2d_forward(*call.pointers, _backend.device_pointer(workspace) if size else 0,
                                                      n, h * w, c, call.stream, call.device)
    else:
        arr = np.ascontiguousarray(arr)
        target, result = cpu_output(out, shape, (arr,))
        if target.size:
            _cpu.global_avg_pool2d_forward(arr, target)
    return finish_output(target, result, out, kind)


def global_avg_pool2d_backward(grad_out, input_shape, *, stream=None):
    """Gradient of global_avg_pool2d: grad_out (N, C) spread evenly over each (H, W) plane."""
    fn = "global_avg_pool2d_backward"
    shape = _input_shape(input_shape, fn)
    g, kind, cuda = _check_grad_out(grad_out, (shape[0], shape[3]), fn)
    if cuda:
        gx = _empty(g, shape)
        if gx.size:
            with _backend.device_call([g, gx], written=(1,), stream=stream) as call:
                call.module.global_avg_pool2d_backward(*call.pointers, shape[0], shape[1] * shape[2], shape[3],
                                                       call.stream, call.device)
        return to_kind(gx, kind)
    gx = np.empty(shape, np.float32)
    if gx.size:
        _cpu.global_avg_pool2d_backward(g, gx)
    return to_kind(gx, kind)


__all__ = [
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward", "global_avg_pool2d",
    "global_avg_pool2d_backward",
]


def quantized_max_pool2d(x, kernel_size, stride=None, padding=0, *, out=None, stream=None):
    """Max pooling of a quantized NHWC image: uint8 or int8 x -> (N, OH, OW, C) of the same dtype,
    scale and zero point (padding never wins). Requantization is monotone, so pooling a quantized
    convolution's output equals quantizing its pooled real output: a quantized conv -> relu ->
    pool network stays in int8. On the CPU or, for a CUDA array, on its device."""
    fn = "quantized_max_pool2d"
    arr, kind, cuda = int8_operand(x, "x")
    if arr.dtype not in (np.uint8, np.int8):
        raise TypeError(f"x: expected dtype uint8 or int8, got {arr.dtype}")
    oh, ow, window = _geometry(arr.shape, kernel_size, stride, padding, fn)
    shape = (arr.shape[0], oh, ow, arr.shape[3])
    arr = _contiguous(arr)
    target, result = int8_output(out, shape, arr.dtype, arr, fn)
    if target.size and cuda:
        with _backend.device_call([arr, target], written=(1,), stream=stream) as call:
            call.module.max_pool2d_int8_forward(*call.pointers, (*arr.shape, oh, ow), window, arr.dtype == np.int8,
                                                call.stream, call.device)
    elif target.size:
        _cpu.max_pool2d_int8_forward(arr, target, *window[:6])  # no dilation, floor mode
    return finish_output(target, result, out, kind)
