"""The bottom floor: the compiled modules, arrays and devices.

`_cpu` is loaded at import; `_cuda` lazily, the first time a GPU array or `fusegrad.cuda` needs it,
so that `import fusegrad` never touches a GPU driver. This module also knows what kind of array a
caller handed in (NumPy, or a CUDA array from CuPy/PyTorch/anything with
``__cuda_array_interface__`` or DLPack), turns it into the native array the kernels take without
copying, and turns results back into the caller's kind; and it names devices ("cpu", "cuda:N")
and moves arrays between them. Every other floor imports these helpers; none of them is private.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, NamedTuple

import numpy as np

from . import _emulated

# --- OpenMP's idle threads --------------------------------------------------------------------

# After a parallel region libgomp's worker threads spin before they sleep: 300,000 rounds by
# default, a millisecond or so, so that the next kernel finds them awake. Between fusegrad's own
# kernels that is right, but when NumPy's BLAS runs next (fusegrad called from NumPy code), the
# spinning threads take the cores its threads need. OMP_SPIN_ROUNDS spans the gap between two
# kernels of a training step (tens of microseconds of Python) and no more. libgomp reads
# GOMP_SPINCOUNT once, when it is loaded, so it is set only while `_cpu` loads it, and never over
# the user's own GOMP_SPINCOUNT or OMP_WAIT_POLICY; PyTorch's bundled OpenMP does not see it.
OMP_SPIN_ROUNDS = 10_000


def _load_cpu_module():
    ours = os.environ.get("FUSEGRAD_OMP_SPINCOUNT", str(OMP_SPIN_ROUNDS)).strip()
    set_here = ours != "" and "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ
    if set_here:
        os.environ["GOMP_SPINCOUNT"] = ours
    try:
        from . import _cpu  # noqa: PLC0415
    finally:
        if set_here:
            del os.environ["GOMP_SPINCOUNT"]
    return _cpu


_cpu = _load_cpu_module()

# --- ISA level --------------------------------------------------------------------------------

_requested_isa = os.environ.get("FUSEGRAD_ISA", "").strip().lower()
if _requested_isa:
    try:
        _cpu.set_isa(_requested_isa)
    except ValueError as err:
        raise RuntimeError(f"FUSEGRAD_ISA={_requested_isa!r}: {err}") from None

# Low-precision CPU features (VNNI, AVX-512 BF16, AMX) a user or test wants left unused.
for _feature in filter(None, (f.strip().lower() for f in os.environ.get("FUSEGRAD_DISABLE_CPU_FEATURES", "").split(","))):
    try:
        _cpu.set_cpu_feature(_feature, False)
    except ValueError as err:
        raise RuntimeError(f"FUSEGRAD_DISABLE_CPU_FEATURES: {err}") from None

# --- subnormals: flushed to zero by the kernels unless FUSEGRAD_FLUSH_DENORMALS=0 ------------------

_cpu.set_flush_denormals(os.environ.get("FUSEGRAD_FLUSH_DENORMALS", "1").strip() != "0")

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


# --- the emulated device ----------------------------------------------------------------------------

# While True (fusegrad.cuda.emulate(), or FUSEGRAD_CUDA_EMULATE=1), fusegrad.ops run their CUDA
# kernels on the host SIMT emulator for NumPy arrays too, and "cuda" tensors live on it.
emulating = os.environ.get("FUSEGRAD_CUDA_EMULATE", "").strip() not in ("", "0")


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


def is_cupy(x) -> bool:
    return _is_cupy(x)


def is_emulated(x) -> bool:
    """Whether x is an array on the emulated CUDA device."""
    return isinstance(x, _emulated.DeviceArray)


def on_host(x) -> bool:
    """Whether x is a host (NumPy) array that the CPU kernels take: not a CuPy array, and not an
    array of the emulated device (which is a NumPy array underneath)."""
    return isinstance(x, np.ndarray) and not isinstance(x, _emulated.DeviceArray)


def native(x, name: str = "x"):
    """(array, kind): a NumPy, CuPy or emulated-device array sharing x's memory, and the kind to
    give results back as.

    kind is "numpy", "cupy", "emulated" or the module of a DLPack producer (e.g. "torch") whose
    from_dlpack turns results back. While emulating, a NumPy array comes back as a view on the
    emulated device (its results are turned back into NumPy arrays). A non-array raises TypeError.
    """
    if isinstance(x, np.ndarray):
        if isinstance(x, _emulated.DeviceArray):
            return x, "emulated"
        return (x.view(_emulated.DeviceArray) if emulating else x), "numpy"
    if _is_cupy(x):
        return x, "cupy"
    producer = type(x).__module__.split(".")[0]
    if hasattr(x, "__cuda_array_interface__"):
        return cupy_module().asarray(x), producer
    if hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__"):
        device_type, _ = x.__dlpack_device__()
        if device_type == 1:  # kDLCPU
            return native(np.from_dlpack(x), name)[0], producer
        if device_type in (2, 3):  # kDLCUDA, kDLCUDAHost
            return cupy_module().from_dlpack(x), producer
        raise TypeError(f"{name}: arrays on DLPack device type {device_type} are not supported")
    raise TypeError(
        f"{name}: expected a NumPy array or a CUDA array (CuPy, PyTorch, ...), got {type(x).__name__}"
    )


def to_kind(result, kind: str):
    """Returns a native result as the caller's kind of array (zero-copy)."""
    if result is None or kind in ("cupy", "emulated"):
        return result
    if kind == "numpy":
        return result.view(np.ndarray) if isinstance(result, _emulated.DeviceArray) else result
    import importlib

    if isinstance(result, _emulated.DeviceArray):
        result = result.view(np.ndarray)
    return importlib.import_module(kind).from_dlpack(result)


def device_of(x) -> str:
    """"cpu" for a NumPy array, "cuda:N" for a CuPy array on device N ("cuda:0" for the emulated
    device)."""
    if isinstance(x, np.ndarray):
        return "cuda:0" if isinstance(x, _emulated.DeviceArray) else "cpu"
    return f"cuda:{x.device.id}"


def info(x) -> ArrayInfo:
    """Pointer, dtype, shape, strides, device and read-only flag of a native array."""
    if isinstance(x, np.ndarray):
        return ArrayInfo(x.__array_interface__["data"][0], x.dtype, x.shape, x.strides, device_of(x),
                         not x.flags.writeable)
    return ArrayInfo(x.data.ptr, x.dtype, x.shape, x.strides, device_of(x), False)


def array_module(x):
    """cupy for a CuPy array, the emulated device's stand-in for an emulated array, numpy for
    anything else (NumPy arrays and scalars): write device-agnostic code once."""
    if isinstance(x, _emulated.DeviceArray):
        return _emulated.xp
    return cupy_module() if _is_cupy(x) else np


def to_host(x) -> np.ndarray:
    """x as a plain NumPy array: itself on the CPU, a copy from a device."""
    if isinstance(x, np.ndarray):
        return x.get() if isinstance(x, _emulated.DeviceArray) else x
    return x.get()


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


def device_pointer(x) -> int:
    """The device address of a CuPy or emulated array (0 for an empty one)."""
    if x.size == 0:
        return 0
    return x.__array_interface__["data"][0] if isinstance(x, np.ndarray) else x.data.ptr


def on_device(x):
    """A context in which CuPy allocates on x's device (nothing to do for other arrays)."""
    if _is_cupy(x):
        return x.device
    return contextlib.nullcontext()


class DeviceCall(NamedTuple):
    """What a CUDA kernel call needs: the compiled module, the arrays' addresses, the stream and
    the device index."""

    module: Any
    pointers: list
    stream: int
    device: int


@contextlib.contextmanager
def device_call(arrays: list, written=(), stream=None):
    """The module, pointers, stream and device for calling CUDA kernels on `arrays` (all on one
    device; `written` the indices of those the kernels write).

    For CuPy arrays this is just their addresses. On the emulated device, arrays outside the
    emulator's guarded allocations (views of NumPy memory, results of NumPy arithmetic) are
    copied into guarded ones for the call and, if written, copied back after it, so every access
    of every kernel is checked."""
    if not any(isinstance(a, _emulated.DeviceArray) for a in arrays):
        module = require_cuda()
        first = next((a for a in arrays if a is not None), None)
        yield DeviceCall(module, [0 if a is None else device_pointer(a) for a in arrays],
                         stream_handle(stream), first.device.id if first is not None else 0)
        return
    staged, copies = [], []
    for i, a in enumerate(arrays):
        if a is not None and not _emulated.is_guarded(a):
            copy = _emulated.to_device(a)
            copies.append((i, a, copy))
            a = copy
        staged.append(a)
    yield DeviceCall(_emulated.require_module(), [0 if a is None else device_pointer(a) for a in staged], 0, 0)
    for i, original, copy in copies:
        if i in written:
            original.view(np.ndarray)[...] = copy.view(np.ndarray)


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
    """The array on `device` ("cpu" or "cuda:N"; "cuda:0" is the emulated device while emulating);
    a copy only when it moves."""
    if device == "cpu":
        return to_host(array)
    if emulating or isinstance(array, _emulated.DeviceArray):
        if device != "cuda:0":
            raise ValueError(f"the emulated CUDA device is cuda:0, not {device}")
        return _emulated.xp.asarray(array)
    cupy = cupy_module()
    index = int(device.split(":")[1])
    if not isinstance(array, np.ndarray) and array.device.id == index:
        return array
    with cupy.cuda.Device(index):
        return cupy.asarray(array)


def default_device() -> str:
    """The GPU when fusegrad can use one (the CUDA module sees a device and CuPy imports, or the
    emulator is on), else the CPU: what Trainer and the CLI pick when no device is named."""
    if emulating:
        return "cuda:0"
    mod = cuda_module()
    if mod is None or mod.device_count() == 0:
        return "cpu"
    try:
        import cupy  # noqa: F401, PLC0415
    except ImportError:
        return "cpu"
    return "cuda:0"
