"""Fused multi-tensor optimizer steps and gradient clipping, on NumPy (CPU) and CUDA arrays.

Each function takes lists of float32 arrays (or a single array) and updates them in place, every
tensor of the list in one threaded pass on the CPU, or one or a few kernel launches on a GPU:

    adam_step(params, grads, exp_avgs, exp_avg_sqs, step=t, lr=1e-3)      # torch.optim.Adam
    adam_step(..., weight_decay=0.01, decoupled_weight_decay=True)        # torch.optim.AdamW
    sgd_step(params, grads, bufs, step=t, lr=0.1, momentum=0.9)           # torch.optim.SGD
    total = clip_grad_norm(grads, max_norm=1.0)                           # clip_grad_norm_

`step` is the 1-based number of the step being taken (Adam's bias correction; SGD's first step
copies the gradient into the momentum buffer). On a GPU every step-dependent scalar is computed on
the host and travels in the launch arguments, so a step never waits for the device.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .. import _backend, _cpu
from .._backend import device_of, native, to_kind
from ._common import SIZE_LIMIT, check_dtype, is_contiguous


# --- argument checks ------------------------------------------------------------------------------


def _as_list(x, name: str) -> list:
    if isinstance(x, (list, tuple)):
        return list(x)
    if x is None:
        raise TypeError(f"{name}: expected an array or a list of arrays, got None")
    return [x]


def _check_lengths(lists: dict) -> int:
    lengths = {name: len(items) for name, items in lists.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError("tensor lists differ in length: " + ", ".join(f"{n} has {k}" for n, k in lengths.items()))
    return next(iter(lengths.values()))


def _real(value, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {value!r}")
    return float(value)


def _check_step(step) -> int:
    if isinstance(step, (bool, np.bool_)) or not isinstance(step, numbers.Integral):
        raise TypeError(f"step: expected an integer, got {step!r}")
    step = int(step)
    if step < 1:
        raise ValueError(f"step must be >= 1 (the 1-based number of this step), got {step}")
    if step > SIZE_LIMIT:
        raise ValueError(f"step {step} is out of range")
    return step


def _flag(value, name: str) -> bool:
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, numbers.Integral) and value in (0, 1)):
        return bool(value)
    raise TypeError(f"{name}: expected True or False, got {value!r}")


def _check_nonnegative(value, name: str) -> float:
    v = _real(value, name)
    if not (0.0 <= v < math.inf):  # NaN fails too
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return v


def _check_beta(value, name: str) -> float:
    v = _real(value, name)
    if not (0.0 <= v < 1.0):
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return v


# --- the list plumbing shared by every op -------------------------------------------------------


def _native_lists(lists: dict, written: set):
    """Native arrays of every list after the full checks, the common device and the caller kind."""
    arrays, kinds = {}, {}
    for name, items in lists.items():
        arrays[name] = []
        for i, x in enumerate(items):
            a, kind = native(x, f"{name}[{i}]")
            check_dtype(a, f"{name}[{i}]")
            arrays[name].append(a)
            kinds.setdefault(kind, f"{name}[{i}]")
    devices = {}
    for name, items in arrays.items():
        for i, a in enumerate(items):
            devices.setdefault(device_of(a), f"{name}[{i}]")
    if len(devices) > 1:
        where = ", ".join(f"{who} on {dev}" for dev, who in devices.items())
        raise ValueError(f"all arrays must be on the same device, got {where}")
    first = next(iter(arrays))
    for name, items in arrays.items():
        for i, a in enumerate(items):
            if a.shape != arrays[first][i].shape:
                raise ValueError(
                    f"{name}[{i}]: shape {tuple(a.shape)} differs from {first}[{i}] {tuple(arrays[first][i].shape)}"
                )
            if name in written and isinstance(a, np.ndarray) and not a.flags.writeable:
                raise ValueError(f"{name}[{i}]: is read-only")
    device = next(iter(devices)) if devices else "cpu"
    return arrays, device


def _contiguous_lists(arrays: dict, written: set):
    """The lists with every position brought to one C-contiguous layout (copies where needed), and
    the (original, copy) pairs of written arrays to copy back after the kernel ran."""
    names = list(arrays)
    n = len(arrays[names[0]])
    write_back = []
    for i in range(n):
        group = [arrays[name][i] for name in names]
        if all(a.flags.c_contiguous for a in group) or (
            all(is_contiguous(a) for a in group) and all(a.strides == group[0].strides or a.size <= 1 for a in group)
        ):
            continue
        xp = _backend.array_module(group[0])
        for name in names:
            a = arrays[name][i]
            copy = xp.ascontiguousarray(a)
            if copy is a:  # already C-contiguous: keep it, it is updated in place
                continue
            arrays[name][i] = copy
            if name in written:
                write_back.append((a, copy))
    return arrays, write_back


def _run(lists: dict, written: set, cpu_fast, cpu_call, cuda_call, stream=None):
    """Runs an op over checked lists: the C++ fast path for plain NumPy lists, else the full path."""
    if lists and not _backend.emulating and all(type(items[0]) is np.ndarray for items in lists.values()):
        result = cpu_fast(lists)
        if result is not None and result is not False:
            return result
    arrays, device = _native_lists(lists, written)
    arrays, write_back = _contiguous_lists(arrays, written)
    if device == "cpu":
        result = cpu_call(arrays)
    else:
        sizes = [int(a.size) for a in next(iter(arrays.values()))]
        names = list(arrays)
        flat = [a for name in names for a in arrays[name]]
        written_at = {i for i, name in enumerate(n for n in names for _ in arrays[n]) if name in written}
        with _backend.device_call(flat, written_at, stream) as call:
            it = iter(call.pointers)
            ptrs = {name: [next(it) for _ in arrays[name]] for name in names}
            result = cuda_call(call, ptrs, sizes)
    for original, copy in write_back:
        original[...] = copy
    return result


# --- Adam / AdamW ---------------------------------------------------------------------------------


def adam_step(params, grads, exp_avgs, exp_avg_sqs, *, step, lr, beta1=0.9, beta2=0.999, eps=1e-8,
              weight_decay=0.0, decoupled_weight_decay=False, maximize=False, stream=None) -> None:
    """One Adam step in place: torch.optim.Adam's update, or AdamW's with decoupled_weight_decay.

    params, exp_avgs and exp_avg_sqs are updated; grads are only read. Lists must have equal
    lengths and pairwise equal shapes, float32, all on one device. `step` is the 1-based number of
    this step (bias corrections use beta^step).
    """
    lists = {
        "params": _as_list(params, "params"), "grads": _as_list(grads, "grads"),
        "exp_avgs": _as_list(exp_avgs, "exp_avgs"), "exp_avg_sqs": _as_list(exp_avg_sqs, "exp_avg_sqs"),
    }
    _check_lengths(lists)
    step = _check_step(step)
    lr = _check_nonnegative(lr, "lr")
    beta1, beta2 = _check_beta(beta1, "beta1"), _check_beta(beta2, "beta2")
    eps = _real(eps, "eps")
    if not (0.0 < eps < math.inf):
        raise ValueError(f"eps must be a finite number > 0, got {eps}")
    weight_decay = _check_nonnegative(weight_decay, "weight_decay")
    decoupled, maximize = _flag(decoupled_weight_decay, "decoupled_weight_decay"), _flag(maximize, "maximize")
    if not lists["params"]:
        return None
    hyper = (step, lr, beta1, beta2, eps, weight_decay, decoupled, maximize)

    def fast(ls):
        return _cpu.adam_step(ls["params"], ls["grads"], ls["exp_avgs"], ls["exp_avg_sqs"], *hyper)

    def cpu(ls):
        if not fast(ls):
            raise RuntimeError("adam_step: internal error, contiguous lists were refused")

    def cuda(call, ptrs, sizes):
        call.module.adam_step(ptrs["params"], ptrs["grads"], ptrs["exp_avgs"], ptrs["exp_avg_sqs"], sizes, *hyper,
                              call.stream, call.device)

    _run(lists, {"params", "exp_avgs", "exp_avg_sqs"}, fast, cpu, cuda, stream)
    return None


# --- SGD --------------------------------------------------------------------------------------------


def sgd_step(params, grads, momentum_buffers=None, *, step, lr, momentum=0.0, dampening=0.0,
             nesterov=False, weight_decay=0.0, maximize=False, stream=None) -> None:
    """One SGD step in place, exactly torch.optim.SGD.

    With momentum != 0, momentum_buffers (one per parameter) are updated too; at step 1 each buffer
    takes the gradient (after weight decay), whatever it held, as PyTorch's lazily created buffers do.
    With momentum == 0 the buffers are neither needed nor touched.
    """
    lists = {"params": _as_list(params, "params"), "grads": _as_list(grads, "grads")}
    step = _check_step(step)
    lr = _check_nonnegative(lr, "lr")
    momentum = _check_nonnegative(momentum, "momentum")
    dampening = _real(dampening, "dampening")
    if not math.isfinite(dampening):
        raise ValueError(f"dampening must be finite, got {dampening}")
    weight_decay = _check_nonnegative(weight_decay, "weight_decay")
    nesterov, maximize = _flag(nesterov, "nesterov"), _flag(maximize, "maximize")
    if nesterov and (momentum <= 0.0 or dampening != 0.0):
        raise ValueError("nesterov momentum requires a momentum > 0 and zero dampening")
    if momentum != 0.0:
        if momentum_buffers is None:
            raise ValueError("momentum_buffers are required when momentum != 0")
        lists["momentum_buffers"] = _as_list(momentum_buffers, "momentum_buffers")
    _check_lengths(lists)
    if not lists["params"]:
        return None
    hyper = (step, lr, momentum, dampening, nesterov, weight_decay, maximize)

    def fast(ls):
        return _cpu.sgd_step(ls["params"], ls["grads"], ls.get("momentum_buffers"), *hyper)

    def cpu(ls):
        if not fast(ls):
            raise RuntimeError("sgd_step: internal error, contiguous lists were refused")

    def cuda(call, ptrs, sizes):
        call.module.sgd_step(ptrs["params"], ptrs["grads"], ptrs.get("momentum_buffers", []), sizes, *hyper,
                             call.stream, call.device)

    _run(lists, {"params", "momentum_buffers"}, fast, cpu, cuda, stream)
    return None


# --- gradient clipping ------------------------------------------------------------------------------

_CLIP_EPS = np.float32(1e-6)  # added to the norm before dividing, as torch.nn.utils.clip_grad_norm_


def _check_norm_type(norm_type) -> float:
    p = _real(norm_type, "norm_type")
    if not p > 0.0:  # also NaN
        raise ValueError(f"norm_type must be > 0 (or inf), got {norm_type}")
    return p


def grad_norm(grads, norm_type=2.0, *, stream=None):
    """The total p-norm of a list of gradients (as if concatenated): a float for CPU arrays, a 0-d
    float32 array of the caller's kind for CUDA arrays (no host-device synchronisation)."""
    return _norm_and_clip(grads, None, norm_type, stream)


def clip_grad_norm(grads, max_norm, norm_type=2.0, *, stream=None):
    """Scales the gradients in place so that their total p-norm is at most max_norm, as
    torch.nn.utils.clip_grad_norm_ (coefficient max_norm / (norm + 1e-6), clamped to 1), and
    returns the total norm before clipping: a float for CPU arrays, a 0-d float32 array of the
    caller's kind for CUDA arrays (computed and applied on the device, without synchronising)."""
    max_norm = _real(max_norm, "max_norm")
    if not max_norm >= 0.0:
        raise ValueError(f"max_norm must be >= 0, got {max_norm}")
    return _norm_and_clip(grads, max_norm, norm_type, stream)


def _norm_and_clip(grads, max_norm, norm_type, stream):
    p = _check_norm_type(norm_type)
    lists = {"grads": _as_list(grads, "grads")}
    if not lists["grads"]:
        return 0.0
    written = {"grads"} if max_norm is not None else set()

    def clip_cpu(ls, total: float) -> float:
        total32 = np.float32(total)
        if max_norm is not None:
            with np.errstate(all="ignore"):
                coef = np.float32(max_norm) / (total32 + _CLIP_EPS)
            if not coef >= 1.0:  # clamped to 1 multiplies by one: nothing to do. NaN scales.
                if not _cpu.scale_grads(ls["grads"], float(coef)):
                    raise RuntimeError("clip_grad_norm: internal error, contiguous lists were refused")
        return float(total32)

    def fast(ls):
        total = _cpu.grad_norm(ls["grads"], p, max_norm is not None)
        return None if total is None else clip_cpu(ls, total)

    def cpu(ls):
        total = fast(ls)
        if total is None:
            raise RuntimeError("clip_grad_norm: internal error, contiguous lists were refused")
        return total

    first, kind_of_first = native(lists["grads"][0], "grads[0]")

    def cuda(call, ptrs, sizes):
        xp = _backend.array_module(first)
        with _backend.on_device(first):
            workspace = xp.empty(call.module.norm_workspace_size(len(sizes)), dtype=np.float64)
            out = xp.empty(2, dtype=np.float32)  # [total norm, clip coefficient]
        call.module.grad_norm_clip(ptrs["grads"], sizes, p, -1.0 if max_norm is None else max_norm,
                                   _backend.device_pointer(workspace), _backend.device_pointer(out), call.stream,
                                   call.device)
        return to_kind(out[0], kind_of_first)

    return _run(lists, written, fast, cpu, cuda, stream)


# --- flat arenas -----------------------------------------------------------------------------------

# Each piece of an arena starts on a 64-byte boundary (a cache line, and one AVX-512 vector of
# float32), so every view's first vector load is aligned and no two tensors share a cache line.
ARENA_ALIGN_BYTES = 64


def _array_key(a, name: str):
    """(dtype, device) of a NumPy or CuPy array; anything else is a TypeError."""
    if not (isinstance(a, np.ndarray) or _backend._is_cupy(a)):
        raise TypeError(f"{name}: expected a NumPy or CuPy array, got {type(a).__name__}")
    return a.dtype, device_of(a)


def group_by_dtype_device(arrays) -> dict:
    """{(dtype, device): [indices into arrays]} in first-seen order: the split of a mixed list into
    lists that flatten_params accepts."""
    groups: dict = {}
    for i, a in enumerate(arrays):
        groups.setdefault(_array_key(a, f"arrays[{i}]"), []).append(i)
    return groups


def flatten_params(arrays, *, zeros: bool = False):
    """(flat, views): one new contiguous 1-D buffer holding copies of `arrays`, and per array a view
    into it with the original shape, so a list of tensors can be updated by one call on `flat`.

    The arrays must share one dtype and one device (NumPy, or CuPy on one GPU); the buffer is made
    there. Each view starts on a 64-byte boundary; the padding between views is zero. With
    zeros=True the values are not copied: the views are zero, in the same layout as the copy's (a
    gradient or optimizer-state arena matching a parameter arena). An empty list gives an empty
    float32 NumPy buffer and no views.
    """
    arrays = list(arrays)
    keys = group_by_dtype_device(arrays)
    if len(keys) > 1:
        found = ", ".join(f"{dt} on {dev} (arrays{idx[:3]}{'...' if len(idx) > 3 else ''})"
                          for (dt, dev), idx in keys.items())
        raise ValueError(f"flatten_params needs arrays of one dtype on one device, got {found}; "
                         "split them with group_by_dtype_device")
    if not arrays:
        return np.zeros(0, np.float32), []
    dtype, device = next(iter(keys))
    xp = _backend.array_module(arrays[0])
    quantum = max(1, ARENA_ALIGN_BYTES // dtype.itemsize)  # elements per aligned piece
    offsets, total = [], 0
    for a in arrays:
        offsets.append(total)
        total += -(-a.size // quantum) * quantum
    if device == "cpu":
        # Over-allocate by one alignment unit and start at the first aligned element: NumPy only
        # promises 16-byte alignment. (CuPy's pool hands out 256-byte aligned blocks already.)
        raw = np.zeros(total + quantum, dtype)
        shift = (-raw.ctypes.data % ARENA_ALIGN_BYTES) // dtype.itemsize
        flat = raw[shift:shift + total]
    else:
        with xp.cuda.Device(int(device.split(":")[1])):
            flat = xp.zeros(total, dtype)
    views = []
    for a, start in zip(arrays, offsets):
        view = flat[start:start + a.size].reshape(a.shape)
        if not zeros:
            view[...] = a
        views.append(view)
    return flat, views


__all__ = ["adam_step", "sgd_step", "clip_grad_norm", "grad_norm", "flatten_params", "group_by_dtype_device"]
