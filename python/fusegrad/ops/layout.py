"""Explicit conversions between image layouts: fusegrad's kernels take NHWC images (channels last)
and HWIO convolution weights; PyTorch's convention is NCHW and OIHW."""
from __future__ import annotations

from .._backend import array_module, native, to_kind


def _four_d(x, name: str, fn: str):
    arr, kind = native(x, name)
    if arr.ndim != 4:
        raise ValueError(f"{fn}: {name} must be 4-D, got shape {tuple(arr.shape)}")
    return arr, kind


def to_nhwc(x):
    """(N, C, H, W) -> (N, H, W, C), as a C-contiguous copy of the caller's kind of array."""
    arr, kind = _four_d(x, "x", "to_nhwc")
    return to_kind(array_module(arr).ascontiguousarray(arr.transpose(0, 2, 3, 1)), kind)


def to_nchw(x):
    """(N, H, W, C) -> (N, C, H, W), as a C-contiguous copy of the caller's kind of array."""
    arr, kind = _four_d(x, "x", "to_nchw")
    return to_kind(array_module(arr).ascontiguousarray(arr.transpose(0, 3, 1, 2)), kind)


def weight_to_hwio(w):
    """A PyTorch convolution weight (C_out, C_in, KH, KW) -> fusegrad's (KH, KW, C_in, C_out)."""
    arr, kind = _four_d(w, "w", "weight_to_hwio")
    return to_kind(array_module(arr).ascontiguousarray(arr.transpose(2, 3, 1, 0)), kind)


def weight_to_oihw(w):
    """fusegrad's (KH, KW, C_in, C_out) convolution weight -> PyTorch's (C_out, C_in, KH, KW)."""
    arr, kind = _four_d(w, "w", "weight_to_oihw")
    return to_kind(array_module(arr).ascontiguousarray(arr.transpose(3, 2, 0, 1)), kind)
