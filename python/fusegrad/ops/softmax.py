"""Softmax, log-softmax and the fused losses on them, on float32 NumPy (CPU) and CUDA arrays.

softmax / log_softmax normalise along any axis (default the last) and are stable for large
logits: they exponentiate x - max(x). Their backward passes take the forward output y.

softmax_cross_entropy and bce_with_logits compute the loss and, with return_grad=True, its
gradient with respect to the logits in the same pass over the data, matching PyTorch's
cross_entropy / binary_cross_entropy_with_logits. For reduction="none" the gradient is that of
the sum of the per-sample losses (each row's gradient of its own loss).

CUDA arrays (CuPy, anything with __cuda_array_interface__ or DLPack, and the emulated device's
arrays) run the CUDA kernels (cuda/softmax/) on the caller's current CuPy stream unless `stream=`
is given. Their losses are reduced on the device and returned as 0-d device arrays: nothing waits
for the GPU. For the same reason softmax_cross_entropy checks CUDA labels inside the kernel: a
label outside [0, C) makes its row's loss and gradient NaN (so a mean or sum is NaN), and the
ValueError naming it is raised only when asked, with check_labels=True, which waits for the kernel
to read its status back. NumPy labels are always checked before the kernel runs.
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import _backend, _cpu
from .._backend import array_module, device_of, native, to_kind
from ._common import _overlaps_unsafely, check_out, check_same_device, flag, float32_input, real

REDUCTIONS = ("mean", "sum", "none")


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


def _empty(like, shape: tuple, dtype=np.float32):
    """A new array on like's device."""
    with _backend.on_device(like):
        return array_module(like).empty(shape, dtype)


def _split(shape: tuple, axis: int) -> tuple:
    """(outer, len, inner) of a C-contiguous array around `axis`."""
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
    return outer, shape[axis], inner


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


def _run_rowwise_cuda(call_kernel, inputs: list, out, kind: str, stream):
    """The CUDA side of _run_rowwise: call_kernel(call) with the inputs' and the target's pointers
    in call.pointers, the same rule for writing into `out`."""
    shape = inputs[0].shape
    if out is None:
        target = result = _empty(inputs[0], shape)
    else:
        result = check_out(out, shape, device_of(inputs[0]))
        usable = result.flags.c_contiguous and not _overlaps_unsafely(result, inputs)
        target = result if usable else _empty(inputs[0], shape)
    if target.size:
        with _backend.device_call([*inputs, target], written=(len(inputs),), stream=stream) as call:
            call_kernel(call)
    if target is not result:
        result[...] = target
    return out if out is not None else to_kind(result, kind)


def _softmax(x, axis, out, log: bool, fn: str, stream):
    arr, kind, cuda = _float32(x, "x")
    ax = _axis(axis, arr.ndim, fn)
    if cuda:
        arr = _contiguous(arr)
        split = _split(arr.shape, ax)
        return _run_rowwise_cuda(
            lambda call: call.module.softmax_forward(*call.pointers, *split, log, call.stream, call.device),
            [arr], out, kind, stream)
    arr = np.ascontiguousarray(arr)
    return _run_rowwise(lambda a, o: _cpu.softmax_forward(a, o, ax, log), [arr], out, kind)


def _softmax_backward(grad_out, y, axis, out, log: bool, fn: str, stream):
    g, kind, cuda = _float32(grad_out, "grad_out")
    ya, _, _ = _float32(y, "y")
    if g.shape != ya.shape:
        raise ValueError(f"{fn}: shapes differ: grad_out {tuple(g.shape)}, y {tuple(ya.shape)}")
    check_same_device(grad_out=g, y=ya)
    ax = _axis(axis, g.ndim, fn)
    if cuda:
        g, ya = _contiguous(g), _contiguous(ya)
        split = _split(g.shape, ax)
        return _run_rowwise_cuda(
            lambda call: call.module.softmax_backward(*call.pointers, *split, log, call.stream, call.device),
            [g, ya], out, kind, stream)
    g, ya = np.ascontiguousarray(g), np.ascontiguousarray(ya)
    return _run_rowwise(lambda a, b, o: _cpu.softmax_backward(a, b, o, ax, log), [g, ya], out, kind)


def softmax(x, axis: int = -1, *, out=None, stream=None):
    """exp(x - max) / sum(exp(x - max)) along `axis`."""
    return _softmax(x, axis, out, False, "softmax", stream)


def log_softmax(x, axis: int = -1, *, out=None, stream=None):
    """x - max - log(sum(exp(x - max))) along `axis`."""
    return _softmax(x, axis, out, True, "log_softmax", stream)


def softmax_backward(grad_out, y, axis: int = -1, *, out=None, stream=None):
    """y * (grad_out - sum(grad_out * y)) along `axis`, with y = softmax(x)."""
    return _softmax_backward(grad_out, y, axis, out, False, "softmax_backward", stream)


def log_softmax_backward(grad_out, y, axis: int = -1, *, out=None, stream=None):
    """grad_out - exp(y) * sum(grad_out) along `axis`, with y = log_softmax(x)."""
    return _softmax_backward(grad_out, y, axis, out, True, "log_softmax_backward", stream)


def _reduction(reduction, fn: str) -> str:
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"{fn}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def _reduce(total: float, rows, count: int, reduction: str, kind: str):
    if reduction == "none":
        return to_kind(rows, kind)
    value = total if reduction == "sum" else (total / count if count else float("nan"))
    return to_kind(np.array(value, dtype=np.float32), kind)


def _empty_loss(kind: str, like, reduction: str, shape: tuple):
    """The loss of an empty input: NaN (mean of nothing), 0 (sum) or an empty array (none)."""
    xp = array_module(like)
    if reduction == "none":
        return to_kind(_empty(like, shape), kind)
    with _backend.on_device(like):
        value = xp.full((), np.nan if reduction == "mean" else 0.0, dtype=np.float32)
    return to_kind(value, kind)


def softmax_cross_entropy(logits, labels, *, reduction: str = "mean", label_smoothing: float = 0.0,
                          return_grad: bool = False, check_labels: bool = False, stream=None):
    """Cross-entropy of softmax(logits) (N, C) against integer class labels (N,), as PyTorch's
    cross_entropy (with its label_smoothing). Returns the loss (a 0-d array, or (N,) for
    reduction="none"), or (loss, grad) with grad = d loss / d logits when return_grad=True.

    Labels outside [0, C) are a ValueError: for NumPy arrays always, before the kernel runs; for
    CUDA arrays when check_labels=True (which waits for the kernel); unchecked, their rows' loss
    and gradient are NaN."""
    fn = "softmax_cross_entropy"
    x, kind, cuda = _float32(logits, "logits")
    if x.ndim != 2:
        raise ValueError(f"{fn}: logits must be 2-D (N, C), got shape {tuple(x.shape)}")
    n, c = x.shape
    lab, _ = native(labels, "labels")
    if device_of(lab) != device_of(x):
        check_same_device(logits=x, labels=lab)
    if lab.dtype.kind not in "iu":
        raise TypeError(f"{fn}: labels: expected an integer dtype (int64 or int32), got {lab.dtype}")
    if tuple(lab.shape) != (n,):
        raise ValueError(f"{fn}: labels must have shape ({n},) to match logits {tuple(x.shape)}, "
                         f"got {tuple(lab.shape)}")
    if not cuda and n and (int(lab.min()) < 0 or int(lab.max()) >= c):
        raise ValueError(f"{fn}: labels out of range [0, {c}): min {int(lab.min())}, max {int(lab.max())}")
    reduction = _reduction(reduction, fn)
    return_grad = flag(return_grad, "return_grad", fn)
    check_labels = flag(check_labels, "check_labels", fn)
    label_smoothing = real(label_smoothing, "label_smoothing", fn)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{fn}: label_smoothing must be in [0, 1], got {label_smoothing}")
    scale = 1.0 / n if reduction == "mean" and n else 1.0

    if cuda:
        return _cross_entropy_cuda(x, lab, kind, reduction, float(label_smoothing), scale, return_grad,
                                   check_labels, stream, fn)
    x = np.ascontiguousarray(x)
    lab = np.ascontiguousarray(lab, dtype=np.int64)
    rows = np.empty(n, np.float32) if reduction == "none" else None
    grad = np.empty((n, c), np.float32) if return_grad else None
    total = _cpu.softmax_cross_entropy(x, lab, float(label_smoothing), scale, rows, grad)
    loss = _reduce(total, rows, n, reduction, kind)
    return (loss, to_kind(grad, kind)) if return_grad else loss


def _cross_entropy_cuda(x, lab, kind, reduction, smoothing, scale, return_grad, check_labels, stream, fn):
    n, c = x.shape
    x = _contiguous(x)
    lab = _contiguous(lab if lab.dtype == np.int64 else lab.astype(np.int64))
    grad = _empty(x, (n, c)) if return_grad else None
    if n == 0:
        loss = _empty_loss(kind, x, reduction, (0,))
        return (loss, to_kind(grad, kind)) if return_grad else loss
    rows = _empty(x, (n,)) if reduction == "none" else None
    total = _empty(x, ()) if reduction != "none" else None
    status = _empty(x, (2,), np.int64) if check_labels else None
    with _backend.device_call([x, lab, rows, grad, total, status], written=(2, 3, 4, 5), stream=stream) as call:
        size = call.module.cross_entropy_workspace_size(n, c, call.device)
        workspace = _empty(x, (size,), np.float64) if (total is not None or status is not None) else None
        call.module.softmax_cross_entropy(
            call.pointers[0], call.pointers[1], n, c, smoothing, scale, *call.pointers[2:5],
            float(n) if reduction == "mean" else 1.0,
            0 if workspace is None else _backend.device_pointer(workspace), call.pointers[5], call.stream,
            call.device)
    if status is not None:
        row, label = (int(v) for v in _read_back(status, call.stream))
        if row >= 0:
            raise ValueError(f"{fn}: labels out of range [0, {c}): row {row} has label {label}")
    loss = to_kind(rows if reduction == "none" else total, kind)
    return (loss, to_kind(grad, kind)) if return_grad else loss


def bce_with_logits(logits, targets, *, reduction: str = "mean", return_grad: bool = False, stream=None):
    """Binary cross-entropy of sigmoid(logits) against targets (same shape, float32), computed
    stably from the logits as PyTorch's binary_cross_entropy_with_logits. Returns the loss, or
    (loss, grad) with grad = d loss / d logits when return_grad=True."""
    fn = "bce_with_logits"
    x, kind, cuda = _float32(logits, "logits")
    t, _, _ = _float32(targets, "targets")
    if x.shape != t.shape:
        raise ValueError(f"{fn}: shapes differ: logits {tuple(x.shape)}, targets {tuple(t.shape)}")
    check_same_device(logits=x, targets=t)
    reduction = _reduction(reduction, fn)
    return_grad = flag(return_grad, "return_grad", fn)
    scale = 1.0 / x.size if reduction == "mean" and x.size else 1.0
    if cuda:
        x, t = _contiguous(x), _contiguous(t)
        grad = _empty(x, x.shape) if return_grad else None
        if x.size == 0:
            loss = _empty_loss(kind, x, reduction, x.shape)
            return (loss, to_kind(grad, kind)) if return_grad else loss
        elems = _empty(x, x.shape) if reduction == "none" else None
        total = _empty(x, ()) if reduction != "none" else None
        with _backend.device_call([x, t, elems, grad, total], written=(2, 3, 4), stream=stream) as call:
            size = call.module.bce_workspace_size(x.size, call.device) if total is not None else 0
            workspace = _empty(x, (size,), np.float64) if size else None
            call.module.bce_with_logits(
                call.pointers[0], call.pointers[1], x.size, scale, *call.pointers[2:5],
                float(x.size) if reduction == "mean" else 1.0,
                0 if workspace is None else _backend.device_pointer(workspace), call.stream, call.device)
        loss = to_kind(elems if reduction == "none" else total, kind)
        return (loss, to_kind(grad, kind)) if return_grad else loss
    x, t = np.asarray(x, order="C"), np.asarray(t, order="C")  # ascontiguousarray makes 0-d arrays 1-d
    loss = np.empty(x.shape, np.float32) if reduction == "none" else None
    grad = np.empty(x.shape, np.float32) if return_grad else None
    total = _cpu.bce_with_logits(x, t, scale, loss, grad)
    result = _reduce(total, loss, x.size, reduction, kind)
    return (result, to_kind(grad, kind)) if return_grad else result


__all__ = [
    "softmax", "log_softmax", "softmax_backward", "log_softmax_backward", "softmax_cross_entropy",
    "bce_with_logits",
]
