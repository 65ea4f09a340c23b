"""The emulated CUDA device: fusegrad's CUDA kernels run on the host SIMT emulator
(`fusegrad._cuda_emulated`, cuda/common/emulator/), for tests and kernel development on machines
without a GPU. It is not a device for real work: it is slow, and checks every access.

Its arrays are `DeviceArray`s: NumPy arrays that fusegrad treats as living on "cuda:0", in memory
the emulator allocated between guard pages, so a kernel that reads one element past an array fails
with the kernel, block, thread and address. `xp` below plays CuPy's part for them: the array
module that non-kernel code (`xp = array_module(x)`) gets for an emulated array. Like CuPy,
a DeviceArray refuses to be mixed with a plain NumPy array in arithmetic, so code that would need a
host round trip on a real GPU fails here too.
"""
from __future__ import annotations

import ctypes
import functools
import math
import types

import numpy as np

_module = None
_import_error: str | None = None
# Where an allocation sits in its guarded mapping: "end_aligned" (cudaMalloc's 256-byte alignment,
# as close to the trailing guard page as that allows), "end" (the last byte against the guard
# page: catches any overrun, vectors may be misaligned) or "start" (the first byte after the
# leading guard page: catches underruns).
placement = "end_aligned"


def module():
    """The `_cuda_emulated` extension, or None when it was not built."""
    global _module, _import_error
    if _module is None and _import_error is None:
        try:
            from . import _cuda_emulated  # noqa: PLC0415

            _module = _cuda_emulated
        except ImportError as err:
            _import_error = str(err)
    return _module


def require_module():
    mod = module()
    if mod is None:
        raise RuntimeError(f"the CUDA emulator is not built (fusegrad._cuda_emulated: {_import_error}); "
                           "build with -Ccmake.define.FUSEGRAD_CUDA_EMULATED=ON")
    return mod


class DeviceArray(np.ndarray):
    """An array on the emulated CUDA device "cuda:0" (a NumPy array underneath)."""

    def get(self) -> np.ndarray:
        """A host copy, as a plain NumPy array (CuPy's name for it)."""
        return np.array(self.view(np.ndarray), copy=True)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        _refuse_host_arrays(ufunc.__name__, inputs + tuple(kwargs.get("out", ())))
        plain = [x.view(np.ndarray) if isinstance(x, DeviceArray) else x for x in inputs]
        if "out" in kwargs:
            kwargs["out"] = tuple(x.view(np.ndarray) if isinstance(x, DeviceArray) else x for x in kwargs["out"])
        result = getattr(ufunc, method)(*plain, **kwargs)
        return _on_device(result)

    def __repr__(self):
        return f"DeviceArray({np.array2string(self.view(np.ndarray), separator=', ')}, device='cuda:0')"


def _refuse_host_arrays(what: str, arrays) -> None:
    for x in arrays:
        if type(x) is np.ndarray and x.ndim > 0:
            raise TypeError(f"{what}: an emulated CUDA array cannot be mixed with a NumPy array (as on a GPU, "
                            "move it first with fusegrad's to_device or xp.asarray)")


def _on_device(result):
    """Plain NumPy results of an operation on device arrays, viewed as device arrays."""
    if type(result) is np.ndarray:
        return result.view(DeviceArray)
    if isinstance(result, np.generic):  # as CuPy: an operation on device arrays gives a 0-d array
        return np.asarray(result).view(DeviceArray)
    if isinstance(result, tuple):
        return tuple(_on_device(r) for r in result)
    if isinstance(result, list):
        return [_on_device(r) for r in result]
    return result


class _Allocation:
    """Emulator memory, freed when the last array over it goes away."""

    __slots__ = ("address", "__weakref__")

    def __init__(self, nbytes: int):
        self.address = require_module().alloc(nbytes, placement)

    def __del__(self):
        mod = module()
        if mod is not None and self.address:
            mod.free(self.address)


def empty(shape, dtype=np.float32) -> DeviceArray:
    """An uninitialised device array in its own guarded emulator allocation."""
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes == 0:
        return np.empty(shape, dtype).view(DeviceArray)
    allocation = _Allocation(nbytes)
    buffer = (ctypes.c_char * nbytes).from_address(allocation.address)
    buffer.allocation = allocation  # the buffer, and so every array over it, keeps the memory alive
    return np.frombuffer(buffer, dtype=dtype).reshape(shape).view(DeviceArray)


def to_device(array) -> DeviceArray:
    """A guarded device copy of any array (host or device)."""
    host = array.view(np.ndarray) if isinstance(array, np.ndarray) else np.asarray(array)
    out = empty(host.shape, host.dtype)
    out.view(np.ndarray)[...] = host
    return out


def is_guarded(array: DeviceArray) -> bool:
    """Whether the array's bytes lie inside one emulator allocation (so kernels are checked on it)."""
    if array.size == 0:
        return True
    found = require_module().allocation_of(array.__array_interface__["data"][0])
    return found is not None and found["live"] and found["offset"] + array.nbytes <= found["nbytes"]


# --- xp: the array module of DeviceArrays ----------------------------------------------------------


def _made_on_host(name):
    """A creation function that builds the array with NumPy, then copies it to the device."""
    numpy_fn = getattr(np, name)

    @functools.wraps(numpy_fn)
    def create(*args, **kwargs):
        return to_device(numpy_fn(*args, **kwargs))

    return create


def _filled(value):
    def create(shape, dtype=np.float32):
        out = empty(shape, dtype)
        if value is not None:
            out.view(np.ndarray)[...] = value
        return out

    return create


def _filled_like(value):
    def create(a, dtype=None):
        out = empty(a.shape, a.dtype if dtype is None else dtype)
        if value is not None:
            out.view(np.ndarray)[...] = value
        return out

    return create


def asarray(a, dtype=None):
    """`a` itself when it is already a device array of that dtype, else a device copy."""
    if isinstance(a, DeviceArray) and (dtype is None or a.dtype == np.dtype(dtype)):
        return a
    return to_device(np.asarray(a.view(np.ndarray) if isinstance(a, np.ndarray) else a, dtype=dtype))


def ascontiguousarray(a, dtype=None):
    a = asarray(a, dtype)
    return a if a.flags.c_contiguous else to_device(np.ascontiguousarray(a.view(np.ndarray)))


def _wrapped(fn):
    @functools.wraps(fn)
    def call(*args, **kwargs):
        flat = [a for a in args if isinstance(a, np.ndarray)]
        flat += [a for v in args if isinstance(v, (list, tuple)) for a in v if isinstance(a, np.ndarray)]
        _refuse_host_arrays(fn.__name__, flat)
        return _on_device(fn(*args, **kwargs))

    return call


class _DeviceNumpy(types.ModuleType):
    """NumPy's API for DeviceArrays, as CuPy's is for CuPy arrays: creation functions make guarded
    device arrays, other functions return device arrays, and host arrays are refused."""

    empty = staticmethod(empty)
    zeros = staticmethod(_filled(0))
    ones = staticmethod(_filled(1))
    empty_like = staticmethod(_filled_like(None))
    zeros_like = staticmethod(_filled_like(0))
    ones_like = staticmethod(_filled_like(1))
    asarray = staticmethod(asarray)
    ascontiguousarray = staticmethod(ascontiguousarray)

    def full(self, shape, fill_value, dtype=np.float32):
        return _filled(fill_value)(shape, dtype)

    def __getattr__(self, name):
        value = getattr(np, name)
        if name in ("array", "arange", "eye", "linspace", "full_like"):
            value = _made_on_host(name)
        elif isinstance(value, types.FunctionType) or type(value).__name__ == "_ArrayFunctionDispatcher":
            value = _wrapped(value)  # (NumPy 2 functions such as where and broadcast_to are dispatchers)
        setattr(self, name, value)
        return value

    def asnumpy(self, x):
        return x.get() if isinstance(x, DeviceArray) else np.asarray(x)


xp = _DeviceNumpy("fusegrad._emulated.xp")
