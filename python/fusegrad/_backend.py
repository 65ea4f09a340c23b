"""The bottom floor: the compiled modules, arrays and devices.

`_cpu` is loaded at import; `_cuda` lazily, the first time a GPU array or `fusegrad.cuda` needs it,
so that `import fusegrad` never touches a GPU driver. This module also knows what kind of array a
caller handed in (NumPy, or a CUDA array from CuPy/PyTorch/anything with
``__cuda_array_interface__`` or DLPack), turns it into the native array the kernels take without
copying, and turns results back into the caller's kind; and it names devices ("cpu", "cuda:N")
and moves arrays between them. Every other floor imports these helpers; none of them is private.
"""
from __future__ import annotations

import os
from typing import Any, NamedTuple

import numpy as np

from . import _cpu

# --- ISA level --------------------------------------------------------------------------------

_requested_isa = os.environ.get("FUSEGRAD_ISA", "").strip().lower()
if _requested_isa:
    try:
        _cpu.set_isa(_requested_isa)
    except ValueError as err:
        raise RuntimeError(f"FUSEGRAD_ISA={_requested_isa!r}: {err}") from None

# --- host memory -----------------------------------------------------------------------------

# Each training step frees and reallocates the same large arrays; by default glibc maps and unmaps
# them every time, and the page faults cost a third of a small CNN's step. FUSEGRAD_TUNE_MALLOC=0
# leaves the process's allocator alone.
malloc_tuned = os.environ.get("FUSEGRAD_TUNE_MALLOC", "1").strip() != "0" and _cpu.keep_freed_memory_for_reuse()

# --- the CUDA module, loaded on first use -----------------------------------------------------

_cuda_module: Any = None
_cuda_import_error: str | None = None


def cuda_module():
    """The `_cuda` extension, or None when it was not built or cannot load."""
    global _cuda_module, _cuda_import_error
    if _cuda_module is None and _cuda_import_error is None:
        try:
            from . import _cuda  # noqa: PLC0415

            _cuda_module = _cuda
        except ImportError as err:
            _cuda_import_error = str(err)
    return _cuda_module


def cuda_built() -> bool:
    from importlib.util import find_spec

    return find_spec("fusegrad._cuda") is not None


def require_cuda():
    """The `_cuda` module, or a clear error why a CUDA array cannot be served."""
    mod = cuda_module()
    if mod is None:
        why = _cuda_import_error or "fusegrad was built without CUDA (nvcc was not found)"
        raise RuntimeError(f"a CUDA array was given but fusegrad's CUDA kernels are unavailable: {why}")
    return mod


def cupy_module():
    try:
        import cupy  # noqa: PLC0415
    except ImportError:
        raise RuntimeError(
            "CUDA arrays are served through CuPy; install it with `pip install fusegrad[cuda]`"
        ) from None
    return cupy


# --- arrays -------------------------------------------------------------------------------------


class ArrayInfo(NamedTuple):
    """What a kernel needs to know of an array: where it is and how it is laid out."""

    ptr: int
    dtype: np.dtype
    shape: tuple
    strides: tuple  # in bytes
    device: str  # "cpu" or "cuda:N"
    readonly: bool


def _is_cupy(x) -> bool:
    return type(x).__module__.startswith("cupy")


def native(x, name: str = "x"):
    """(array, kind): a NumPy or CuPy array sharing x's memory, and the kind to give results back as.

    kind is "numpy", "cupy" or the module of a DLPack producer (e.g. "torch") whose from_dlpack
    turns results back. A non-array raises TypeError.
    """
    if isinstance(x, np.ndarray):
        return x, "numpy"
    if _is_cupy(x):
        return x, "cupy"
    producer = type(x).__module__.split(".")[0]
    if hasattr(x, "__cuda_array_interface__"):
        return cupy_module().asarray(x), producer
    if hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__"):
        device_type, _ = x.__dlpack_device__()
        if device_type == 1:  # kDLCPU
            return np.from_dlpack(x), producer
        if device_type in (2, 3):  # kDLCUDA, kDLCUDAHost
            return cupy_module().from_dlpack(x), producer
        raise TypeError(f"{name}: arrays on DLPack device type {device_type} are not supported")
    raise TypeError(
        f"{name}: expected a NumPy array or a CUDA array (CuPy, PyTorch, ...), got {type(x).__name__}"
    )


def to_kind(result, kind: str):
    """Returns a NumPy/CuPy result as the caller's kind of array (zero-copy)."""
    if kind in ("numpy", "cupy") or result is None:
        return result
    import importlib

    return importlib.import_module(kind).from_dlpack(result)


def device_of(x) -> str:
    """"cpu" for a NumPy array, "cuda:N" for a CuPy array on device N."""
    if isinstance(x, np.ndarray):
        return "cpu"
    return f"cuda:{x.device.id}"


def info(x) -> ArrayInfo:
    """Pointer, dtype, shape, strides, device and read-only flag of a native array."""
    if isinstance(x, np.ndarray):
        return ArrayInfo(
            x.__array_interface__["data"][0], x.dtype, x.shape, x.strides, "cpu",
            not x.flags.writeable,
        )
    return ArrayInfo(x.data.ptr, x.dtype, x.shape, x.strides, device_of(x), False)


def array_module(x):
    """cupy for a CuPy array, numpy for anything else (NumPy arrays and scalars): write
    device-agnostic code once."""
    return cupy_module() if _is_cupy(x) else np


def stream_handle(stream) -> int:
    """The cudaStream_t to launch on: `stream` if given (CuPy stream or raw handle), else CuPy's
    current stream."""
    if stream is None:
        return cupy_module().cuda.get_current_stream().ptr
    if isinstance(stream, int):
        return stream
    ptr = getattr(stream, "ptr", None)
    if ptr is None:
        ptr = getattr(stream, "cuda_stream", None)  # torch.cuda.Stream
    if ptr is None:
        raise TypeError(f"stream: expected a CuPy/PyTorch stream or an int handle, got {type(stream).__name__}")
    return int(ptr)


def is_cupy(x) -> bool:
    return _is_cupy(x)


def as_array(data, dtype=None):
    """A native array of `data` (an array of any supported kind, or nested sequences and scalars)
    with fusegrad's default dtypes: floating-point data becomes float32 unless `dtype` says
    otherwise. No copy when nothing changes."""
    if isinstance(data, np.ndarray) or _is_cupy(data):
        arr = data
    elif hasattr(data, "__cuda_array_interface__") or hasattr(data, "__dlpack__"):
        arr, _ = native(data)
    else:
        arr = np.asarray(data)
    if dtype is not None:
        return arr.astype(dtype, copy=False)
    if arr.dtype.kind == "f" and arr.dtype != np.float32:
        return arr.astype(np.float32)
    return arr


# --- devices ------------------------------------------------------------------------------------


def normalise_device(device) -> str:
    """"cpu" or "cuda:N" for None (the CPU), "cpu", "cuda" (device 0) or "cuda:N"."""
    if device is None:
        return "cpu"
    device = str(device)
    if device == "cuda":
        return "cuda:0"
    if device == "cpu" or (device.startswith("cuda:") and device[5:].isdigit()):
        return device
    raise ValueError(f"device: expected 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def to_device(array, device: str):
    """The array on `device` ("cpu" or "cuda:N"); a copy only when it moves."""
    if device == "cpu":
        return array if isinstance(array, np.ndarray) else array.get()
    cupy = cupy_module()
    index = int(device.split(":")[1])
    if not isinstance(array, np.ndarray) and array.device.id == index:
        return array
    with cupy.cuda.Device(index):
        return cupy.asarray(array)


def default_device() -> str:
    """The GPU when fusegrad can use one (the CUDA module sees a device and CuPy imports), else
    the CPU: what Trainer and the CLI pick when no device is named."""
    mod = cuda_module()
    if mod is None or mod.device_count() == 0:
        return "cpu"
    try:
        import cupy  # noqa: F401, PLC0415
    except ImportError:
        return "cpu"
    return "cuda:0"
