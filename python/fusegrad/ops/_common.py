"""Argument checks and array plumbing shared by every kernel family in fusegrad.ops.

Every public op checks its arguments here before anything reaches compiled code (DESIGN.md,
Errors): wrong dtype -> TypeError naming the argument; wrong shapes -> ValueError showing them;
arrays on different devices -> ValueError saying which; read-only or unsafely aliased `out` ->
ValueError.
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import _backend
from .._backend import array_module, device_of, native, to_kind

FLOAT32 = np.dtype(np.float32)
# Sizes, strides and paddings beyond this are refused before they reach 64-bit kernel arithmetic.
SIZE_LIMIT = 2**62


def integer(value, name: str, fn: str, minimum: int | None = None) -> int:
    """An int argument (Python or NumPy integers, not bools): TypeError for anything else,
    ValueError below `minimum` or beyond what 64-bit kernel arithmetic can take."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{fn}: {name} must be an int, got {value!r}")
    value = int(value)
    if abs(value) > SIZE_LIMIT:
        raise ValueError(f"{fn}: {name} {value} is out of range")
    if minimum is not None and value < minimum:
        raise ValueError(f"{fn}: {name} must be an int >= {minimum}, got {value}")
    return value


def real(value, name: str, fn: str, *, minimum: float | None = None, finite: bool = True) -> float:
    """A real-number argument (int, float or a NumPy scalar, not a bool or a string): TypeError
    for anything else; ValueError for NaN, for an infinity unless finite=False, or below
    `minimum`."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{fn}: {name} must be a real number, got {value!r}")
    value = float(value)
    if value != value or (finite and value in (float("inf"), float("-inf"))):
        raise ValueError(f"{fn}: {name} must be a finite number, got {value}")
    if minimum is not None and not value >= minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {value}")
    return value


def flag(value, name: str, fn: str) -> bool:
    """A bool argument: True, False, or the integers 1 and 0 (NumPy's too); a string such as "no"
    or any other value is a TypeError rather than read by its truth."""
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, numbers.Integral) and value in (0, 1)):
        return bool(value)
    raise TypeError(f"{fn}: {name} must be True or False, got {value!r}")


def shape_argument(value, name: str, fn: str, ndim: int) -> tuple:
    """A shape argument: a tuple or list of `ndim` ints >= 0."""
    if not isinstance(value, (tuple, list)) or not all(
            isinstance(d, numbers.Integral) and not isinstance(d, bool) for d in value):
        raise TypeError(f"{fn}: {name} must be a tuple of ints, got {value!r}")
    shape = tuple(int(d) for d in value)
    if len(shape) != ndim:
        raise ValueError(f"{fn}: {name} must be {ndim} sizes >= 0, got {shape}")
    if min(shape, default=0) < 0 or max(shape, default=0) > SIZE_LIMIT:
        raise ValueError(f"{fn}: {name} must be {ndim} sizes >= 0, got a negative or huge size in {shape}")
    return shape


def pair(value, name: str, fn: str) -> tuple:
    """(a, b) from an int or a pair of ints (NumPy integers too, not bools): the one reading of
    kernel_size, stride, padding and dilation arguments. TypeError for anything else; ValueError
    for values no kernel could index."""
    if type(value) is int:  # the common cases first: these run on every call of small kernels
        items = (value, value)
    elif type(value) is tuple and len(value) == 2 and type(value[0]) is int and type(value[1]) is int:
        items = value
    else:
        items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
        if len(items) != 2 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in items):
            raise TypeError(f"{fn}: {name} must be an int or a pair of ints, got {value!r}")
        items = (int(items[0]), int(items[1]))
    if not (-SIZE_LIMIT <= items[0] <= SIZE_LIMIT and -SIZE_LIMIT <= items[1] <= SIZE_LIMIT):
        raise ValueError(f"{fn}: {name} {value!r} is out of range")
    return items


def check_dtype(x, name: str, expected=FLOAT32) -> None:
    if x.dtype != expected:
        raise TypeError(f"{name}: expected dtype {np.dtype(expected).name}, got {x.dtype}")


def check_same_device(**arrays) -> str:
    """The common device of the named arrays, or ValueError naming where each one lives."""
    devices = {name: device_of(a) for name, a in arrays.items() if a is not None}
    if len(set(devices.values())) > 1:
        where = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"arrays must be on the same device, got {where}")
    return next(iter(devices.values()))


def check_same_shape(**arrays) -> tuple:
    shapes = {name: tuple(a.shape) for name, a in arrays.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError("shapes differ: " + ", ".join(f"{n} {s}" for n, s in shapes.items()))
    return next(iter(shapes.values()))


def float32_input(x, name: str):
    """(native array, caller kind) for a float32 input."""
    arr, kind = native(x, name)
    check_dtype(arr, name)
    return arr, kind


def check_out(out, shape: tuple, device: str, name: str = "out"):
    """The native `out` array after checking it can receive a float32 result of `shape` on `device`."""
    arr, _ = native(out, name)
    check_dtype(arr, name)
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(arr.shape)}")
    if device_of(arr) != device:
        raise ValueError(f"{name}: is on {device_of(arr)} but the inputs are on {device}")
    if isinstance(arr, np.ndarray) and not arr.flags.writeable:
        raise ValueError(f"{name}: is read-only")
    return arr


def cpu_output(out, shape: tuple, inputs=()):
    """(array a CPU kernel writes, caller's out array or None): out itself when it is C-contiguous
    and shares no memory with an input, else a fresh array that finish_output copies into out."""
    if out is None:
        return np.empty(shape, np.float32), None
    arr = check_out(out, shape, "cpu")
    if arr.flags.c_contiguous and not any(np.may_share_memory(arr, x) for x in inputs if x is not None):
        return arr, arr
    return np.empty(shape, np.float32), arr


def finish_output(target, result, out, kind):
    """What an op with out= returns, after cpu_output: out (filled), or the result as the caller's
    kind of array."""
    if result is not None and target is not result:
        result[...] = target
    return out if out is not None else to_kind(target, kind)


def is_contiguous(x) -> bool:
    return x.flags.c_contiguous or x.flags.f_contiguous


def same_layout(a, b) -> bool:
    return a.shape == b.shape and (a.strides == b.strides or a.size <= 1)


def _overlaps_unsafely(out, inputs) -> bool:
    """True when out shares memory with an input other than being exactly that input."""
    for x in inputs:
        if out is x:
            continue
        xp = array_module(x)
        if xp.may_share_memory(out, x) and not (_ptr(out) == _ptr(x) and same_layout(out, x)):
            return True
    return False


def _ptr(x) -> int:
    return _backend.info(x).ptr


def elementwise(cpu_kernel, cuda_kernel, inputs: dict, out, *, stream=None):
    """Runs a flat elementwise kernel over same-shaped float32 inputs and returns the result.

    `inputs` maps argument names to arrays of any kind and layout; they are brought to one common
    contiguous layout (copying only those that need it). The kernels are called as
    cpu_kernel(*arrays, out_array) and cuda_kernel(*pointers, out_pointer, n, stream, device).
    """
    names = list(inputs)
    arrays, kinds = zip(*(float32_input(inputs[n], n) for n in names))
    arrays = list(arrays)
    shape = check_same_shape(**dict(zip(names, arrays)))
    device = check_same_device(**dict(zip(names, arrays)))
    xp = array_module(arrays[0])

    # One layout for all: keep the inputs' own if they share a contiguous one, else C order.
    if not all(is_contiguous(a) and same_layout(a, arrays[0]) for a in arrays):
        arrays = [xp.ascontiguousarray(a) for a in arrays]

    if out is None:
        target = result = xp.empty_like(arrays[0])
    else:
        result = check_out(out, shape, device)
        usable = same_layout(result, arrays[0]) and is_contiguous(result)
        target = result if usable and not _overlaps_unsafely(result, arrays) else xp.empty_like(arrays[0])

    if target.size:
        if xp is np:
            cpu_kernel(*arrays, target)
        else:
            with _backend.device_call([*arrays, target], written=(len(arrays),), stream=stream) as call:
                cuda_kernel(call.module, *call.pointers, target.size, call.stream, call.device)
    if target is not result:
        result[...] = target
    return out if out is not None else to_kind(result, kinds[0])
