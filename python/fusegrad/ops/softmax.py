"""Softmax, log-softmax and the fused losses on them, on float32 NumPy arrays (CPU).

softmax / log_softmax normalise along any axis (default the last) and are stable for large
logits: they exponentiate x - max(x). Their backward passes take the forward output y.

softmax_cross_entropy and bce_with_logits compute the loss and, with return_grad=True, its
gradient with respect to the logits in the same pass over the data, matching PyTorch's
cross_entropy / binary_cross_entropy_with_logits. For reduction="none" the gradient is that of
the sum of the per-sample losses (each row's gradient of its own loss).
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import _cpu
from .._backend import device_of, native, to_kind
from ._common import _overlaps_unsafely, check_out, flag, float32_input, real

REDUCTIONS = ("mean", "sum", "none")


def _cpu_float32(x, name: str, fn: str):
    arr, kind = float32_input(x, name)
    if device_of(arr) != "cpu":
        raise ValueError(f"{fn}: {name} is on {device_of(arr)}, but {fn} runs on the CPU only so far")
    return arr, kind


def _axis(axis, ndim: int, fn: str) -> int:
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"{fn}: axis must be an int, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{fn}: axis {axis} is out of range for an array of {ndim} dimensions")
    return int(axis) % ndim


def _run_rowwise(kernel, inputs: list, out, kind: str):
    """Calls kernel(*contiguous inputs, target) and returns the result in `out` or a new array."""
    shape = inputs[0].shape
    if out is None:
        target = result = np.empty(shape, np.float32)
    else:
        result = check_out(out, shape, "cpu")
        # Writing over an input is safe only when it *is* that input (each element is read before
        # its own position is written).
        usable = result.flags.c_contiguous and not _overlaps_unsafely(result, inputs)
        target = result if usable else np.empty(shape, np.float32)
    if target.size:
        kernel(*inputs, target)
    if target is not result:
        result[...] = target
    return out if out is not None else to_kind(result, kind)


def _softmax(x, axis, out, log: bool, fn: str):
    arr, kind = _cpu_float32(x, "x", fn)
    ax = _axis(axis, arr.ndim, fn)
    arr = np.ascontiguousarray(arr)
    return _run_rowwise(lambda a, o: _cpu.softmax_forward(a, o, ax, log), [arr], out, kind)


def _softmax_backward(grad_out, y, axis, out, log: bool, fn: str):
    g, kind = _cpu_float32(grad_out, "grad_out", fn)
    ya, _ = _cpu_float32(y, "y", fn)
    if g.shape != ya.shape:
        raise ValueError(f"{fn}: shapes differ: grad_out {tuple(g.shape)}, y {tuple(ya.shape)}")
    ax = _axis(axis, g.ndim, fn)
    g, ya = np.ascontiguousarray(g), np.ascontiguousarray(ya)
    return _run_rowwise(lambda a, b, o: _cpu.softmax_backward(a, b, o, ax, log), [g, ya], out, kind)


def softmax(x, axis: int = -1, *, out=None):
    """exp(x - max) / sum(exp(x - max)) along `axis`."""
    return _softmax(x, axis, out, False, "softmax")


def log_softmax(x, axis: int = -1, *, out=None):
    """x - max - log(sum(exp(x - max))) along `axis`."""
    return _softmax(x, axis, out, True, "log_softmax")


def softmax_backward(grad_out, y, axis: int = -1, *, out=None):
    """y * (grad_out - sum(grad_out * y)) along `axis`, with y = softmax(x)."""
    return _softmax_backward(grad_out, y, axis, out, False, "softmax_backward")


def log_softmax_backward(grad_out, y, axis: int = -1, *, out=None):
    """grad_out - exp(y) * sum(grad_out) along `axis`, with y = log_softmax(x)."""
    return _softmax_backward(grad_out, y, axis, out, True, "log_softmax_backward")


def _reduction(reduction, fn: str) -> str:
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"{fn}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def _reduce(total: float, rows, count: int, reduction: str, kind: str):
    if reduction == "none":
        return to_kind(rows, kind)
    value = total if reduction == "sum" else (total / count if count else float("nan"))
    return to_kind(np.array(value, dtype=np.float32), kind)


def softmax_cross_entropy(logits, labels, *, reduction: str = "mean", label_smoothing: float = 0.0,
                          return_grad: bool = False):
    """Cross-entropy of softmax(logits) (N, C) against integer class labels (N,), as PyTorch's
    cross_entropy (with its label_smoothing). Returns the loss (a 0-d array, or (N,) for
    reduction="none"), or (loss, grad) with grad = d loss / d logits when return_grad=True."""
    fn = "softmax_cross_entropy"
    x, kind = _cpu_float32(logits, "logits", fn)
    if x.ndim != 2:
        raise ValueError(f"{fn}: logits must be 2-D (N, C), got shape {tuple(x.shape)}")
    n, c = x.shape
    lab, _ = native(labels, "labels")
    if device_of(lab) != "cpu":
        raise ValueError(f"{fn}: labels is on {device_of(lab)}, but {fn} runs on the CPU only so far")
    if lab.dtype.kind not in "iu":
        raise TypeError(f"{fn}: labels: expected an integer dtype (int64 or int32), got {lab.dtype}")
    if tuple(lab.shape) != (n,):
        raise ValueError(f"{fn}: labels must have shape ({n},) to match logits {tuple(x.shape)}, "
                         f"got {tuple(lab.shape)}")
    if n and (int(lab.min()) < 0 or int(lab.max()) >= c):
        raise ValueError(f"{fn}: labels out of range [0, {c}): min {int(lab.min())}, max {int(lab.max())}")
    reduction = _reduction(reduction, fn)
    return_grad = flag(return_grad, "return_grad", fn)
    label_smoothing = real(label_smoothing, "label_smoothing", fn)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{fn}: label_smoothing must be in [0, 1], got {label_smoothing}")

    x = np.ascontiguousarray(x)
    lab = np.ascontiguousarray(lab, dtype=np.int64)
    rows = np.empty(n, np.float32) if reduction == "none" else None
    grad = np.empty((n, c), np.float32) if return_grad else None
    scale = 1.0 / n if reduction == "mean" and n else 1.0
    total = _cpu.softmax_cross_entropy(x, lab, float(label_smoothing), scale, rows, grad)
    loss = _reduce(total, rows, n, reduction, kind)
    return (loss, to_kind(grad, kind)) if return_grad else loss


def bce_with_logits(logits, targets, *, reduction: str = "mean", return_grad: bool = False):
    """Binary cross-entropy of sigmoid(logits) against targets (same shape, float32), computed
    stably from the logits as PyTorch's binary_cross_entropy_with_logits. Returns the loss, or
    (loss, grad) with grad = d loss / d logits when return_grad=True."""
    fn = "bce_with_logits"
    x, kind = _cpu_float32(logits, "logits", fn)
    t, _ = _cpu_float32(targets, "targets", fn)
    if x.shape != t.shape:
        raise ValueError(f"{fn}: shapes differ: logits {tuple(x.shape)}, targets {tuple(t.shape)}")
    reduction = _reduction(reduction, fn)
    return_grad = flag(return_grad, "return_grad", fn)
    x, t = np.asarray(x, order="C"), np.asarray(t, order="C")  # ascontiguousarray makes 0-d arrays 1-d
    loss = np.empty(x.shape, np.float32) if reduction == "none" else None
    grad = np.empty(x.shape, np.float32) if return_grad else None
    scale = 1.0 / x.size if reduction == "mean" and x.size else 1.0
    total = _cpu.bce_with_logits(x, t, scale, loss, grad)
    result = _reduce(total, loss, x.size, reduction, kind)
    return (result, to_kind(grad, kind)) if return_grad else result


__all__ = [
    "softmax", "log_softmax", "softmax_backward", "log_softmax_backward", "softmax_cross_entropy",
    "bce_with_logits",
]
