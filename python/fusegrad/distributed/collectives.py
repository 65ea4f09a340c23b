"""The collectives: all_reduce, broadcast, all_gather, barrier, on NumPy arrays over MPI and on
CuPy arrays over NCCL (on the caller's current stream).

Buffers are handed to MPI as they are (contiguous arrays are never copied): all_reduce with out=None
is exactly one MPI_Allreduce into a new array, with out=array it reduces in place (MPI_IN_PLACE).
"""
from __future__ import annotations

import numpy as np

from .._backend import is_cupy
from .group import require, state, wait_request
from .work import Work

OPS = ("sum", "mean", "max")
DTYPES = (np.float32, np.float64, np.float16, np.int32, np.int64, np.uint8, np.int8)


def _kind(array, name: str) -> str:
    if isinstance(array, np.ndarray):
        return "numpy"
    if is_cupy(array):
        return "cupy"
    raise TypeError(f"{name}: expected a NumPy or CuPy array, got {type(array).__name__}")


def _check(array, name: str):
    kind = _kind(array, name)
    if array.dtype not in DTYPES:
        raise TypeError(f"{name}: dtype {array.dtype} is not supported; expected one of "
                        f"{', '.join(np.dtype(d).name for d in DTYPES)}")
    if kind == "cupy":
        if state.backend != "nccl" and not _mpi_cuda_aware():
            raise TypeError(f"{name}: a CUDA array was given to the 'mpi' backend, and this MPI is not CUDA-aware; "
                            "init(backend='nccl') for GPU arrays (or copy the array to the host)")
    return kind


def _mpi_cuda_aware() -> bool:
    from mpi4py import MPI  # noqa: PLC0415
    query = getattr(MPI, "Query_cuda_support", None)
    try:
        return bool(query()) if query is not None else False
    except Exception:  # noqa: BLE001 - an MPI without the extension
        return False


def _check_out(array, out, name: str):
    if out is None:
        return
    if type(out) is not type(array) and _kind(out, "out") != _kind(array, name):
        raise TypeError(f"out is a {type(out).__name__}, {name} a {type(array).__name__}: both must be of one kind")
    if out.dtype != array.dtype:
        raise TypeError(f"out has dtype {out.dtype}, expected {array.dtype} (the dtype of {name})")
    if tuple(out.shape) != tuple(array.shape):
        raise ValueError(f"out has shape {tuple(out.shape)}, {name} has {tuple(array.shape)}")
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    if isinstance(out, np.ndarray) and not out.flags.writeable:
        raise ValueError("out is read-only")
    if isinstance(out, np.ndarray) and out is not array and np.may_share_memory(out, array):
        raise ValueError("out overlaps the input without being the same array; pass out=array to reduce in place")


def _mpi_op(op: str):
    from mpi4py import MPI  # noqa: PLC0415
    return MPI.MAX if op == "max" else MPI.SUM


def all_reduce(array, op: str = "sum", *, out=None, async_op: bool = False):
    """The element-wise reduction ("sum", "mean" or "max") of `array` over all ranks, in `out`
    (out=array reduces in place; None: a new array). With async_op=True, returns a Work whose
    wait() returns the result (MPI_Iallreduce; NCCL on a side stream)."""
    if op not in OPS:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")
    st = require()
    kind = _check(array, "array")
    _check_out(array, out, "array")
    if op == "mean" and array.dtype.kind != "f":
        raise TypeError(f"op='mean' needs a floating-point array, got dtype {array.dtype}")
    if kind == "cupy" and st.backend == "nccl":
        from . import nccl  # noqa: PLC0415
        return nccl.all_reduce(st, array, op, out, async_op)
    xp = np
    if not array.flags.c_contiguous:
        array = xp.ascontiguousarray(array)
    if out is None:
        out = xp.empty_like(array)
    from mpi4py import MPI  # noqa: PLC0415
    send = MPI.IN_PLACE if out is array else array
    scale = 1.0 / st.size if op == "mean" else None

    def finish():
        if scale is not None and st.size > 1:
            np.multiply(out, out.dtype.type(scale), out=out)

    if not async_op:
        if st.timeout is None:
            st.comm.Allreduce(send, out, _mpi_op(op))
        else:
            wait_request(st.comm.Iallreduce(send, out, _mpi_op(op)), "all_reduce")
        finish()
        return out
    request = st.comm.Iallreduce(send, out, _mpi_op(op))

    def wait():
        wait_request(request, "all_reduce")
        finish()

    work = Work(wait, out)
    work.test = request.Test
    return work


def broadcast(array, root: int = 0):
    """Overwrites `array` (in place, on every rank) with root's; returns it."""
    st = require()
    kind = _check(array, "array")
    _check_root(root, st)
    if not array.flags.c_contiguous:
        raise ValueError("broadcast: array must be C-contiguous (it is written in place)")
    if kind == "numpy" and not array.flags.writeable:
        raise ValueError("broadcast: array is read-only (it is written in place)")
    if kind == "cupy" and st.backend == "nccl":
        from . import nccl  # noqa: PLC0415
        return nccl.broadcast(st, array, root)
    if st.timeout is None:
        st.comm.Bcast(array, root)
    else:
        wait_request(st.comm.Ibcast(array, root), "broadcast")
    return array


def all_gather(array, *, out=None):
    """Every rank's `array` (all of one shape and dtype), stacked: shape (world_size, *array.shape)."""
    st = require()
    kind = _check(array, "array")
    if out is not None:
        shape = (st.size,) + tuple(array.shape)
        if tuple(out.shape) != shape or out.dtype != array.dtype or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous {array.dtype} array of shape {shape}, got "
                             f"{out.dtype} {tuple(out.shape)}")
    if kind == "cupy" and st.backend == "nccl":
        from . import nccl  # noqa: PLC0415
        return nccl.all_gather(st, array, out)
    array = np.ascontiguousarray(array)
    if out is None:
        out = np.empty((st.size,) + array.shape, array.dtype)
    if st.timeout is None:
        st.comm.Allgather(array, out)
    else:
        wait_request(st.comm.Iallgather(array, out), "all_gather")
    return out


def barrier() -> None:
    """Returns when every rank has called it."""
    st = require()
    if st.timeout is None:
        st.comm.Barrier()
    else:
        wait_request(st.comm.Ibarrier(), "barrier")


def broadcast_object(obj, root: int = 0):
    """A picklable Python object from root to every rank (small things: a seed, a config)."""
    st = require()
    _check_root(root, st)
    return st.comm.bcast(obj, root)


def all_reduce_scalar(value: float, op: str = "sum") -> float:
    """all_reduce of one float (metrics across ranks)."""
    return float(all_reduce(np.array([value], np.float64), op, out=None)[0])


def _check_root(root, st):
    if isinstance(root, bool) or not isinstance(root, (int, np.integer)) or not 0 <= root < st.size:
        raise ValueError(f"root must be a rank in [0, {st.size}), got {root!r}")
