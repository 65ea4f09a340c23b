"""The NCCL backend, through CuPy's bindings (cupy.cuda.nccl); imported only by init(backend="nccl")
and by collectives on CuPy arrays, so nothing here is needed on a CPU-only machine.

The unique id that ties the NCCL communicator together travels over MPI (rank 0 makes it and
broadcasts it). Synchronous collectives run on the caller's current CuPy stream; async_op=True runs
them on a side stream that first waits for the current one, and Work.wait() makes the current stream
wait for the side stream (no host synchronisation either way).
"""
from __future__ import annotations

import numpy as np

from .work import EXTRA_INSTALL, Work


def _cupy():
    try:
        import cupy  # noqa: PLC0415
        from cupy.cuda import nccl  # noqa: PLC0415
    except ImportError as err:
        raise RuntimeError(f"the 'nccl' backend needs CuPy with NCCL ({err}); pip install \"fusegrad[cuda]\" "
                           f"and {EXTRA_INSTALL}") from None
    if hasattr(nccl, "available") and not nccl.available:
        raise RuntimeError("CuPy was built without NCCL; install a cupy-cuda wheel, which ships NCCL")
    return cupy, nccl


_NCCL_DTYPES = {"float32": "NCCL_FLOAT32", "float64": "NCCL_FLOAT64", "float16": "NCCL_FLOAT16",
                "int32": "NCCL_INT32", "int64": "NCCL_INT64", "uint8": "NCCL_UINT8", "int8": "NCCL_INT8"}


def make_communicator(comm, rank: int, size: int, local_rank: int):
    cupy, nccl = _cupy()
    count = cupy.cuda.runtime.getDeviceCount()
    if count == 0:
        raise RuntimeError("the 'nccl' backend needs a GPU and this process sees none")
    cupy.cuda.Device(local_rank % count).use()
    uid = nccl.get_unique_id() if rank == 0 else None
    uid = comm.bcast(uid, 0)
    return nccl.NcclCommunicator(size, uid, rank)


def _dtype(nccl, array):
    return getattr(nccl, _NCCL_DTYPES[np.dtype(array.dtype).name])


def _check_device(array):
    cupy, _ = _cupy()
    if array.device.id != cupy.cuda.Device().id:
        raise ValueError(f"array is on cuda:{array.device.id}, but this rank's NCCL communicator is on "
                         f"cuda:{cupy.cuda.Device().id}")


_side_streams: dict = {}


def _side_stream(cupy):
    dev = cupy.cuda.Device().id
    if dev not in _side_streams:
        _side_streams[dev] = cupy.cuda.Stream(non_blocking=True)
    return _side_streams[dev]


def all_reduce(st, array, op: str, out, async_op: bool):
    cupy, nccl = _cupy()
    _check_device(array)
    array = cupy.ascontiguousarray(array)
    if out is None:
        out = cupy.empty_like(array)
    current = cupy.cuda.get_current_stream()
    stream = current
    if async_op:
        stream = _side_stream(cupy)
        stream.wait_event(current.record())
    nccl_op = nccl.NCCL_MAX if op == "max" else nccl.NCCL_SUM
    st.nccl.allReduce(array.data.ptr, out.data.ptr, array.size, _dtype(nccl, array), nccl_op, stream.ptr)
    if op == "mean" and st.size > 1:
        with stream:
            out *= out.dtype.type(1.0 / st.size)
    if not async_op:
        return out
    done = stream.record()

    def wait():
        cupy.cuda.get_current_stream().wait_event(done)

    work = Work(wait, out)
    work.test = lambda: done.done  # CuPy's Event: .done is True once the stream has passed it
    return work


def broadcast(st, array, root: int):
    cupy, nccl = _cupy()
    _check_device(array)
    st.nccl.bcast(array.data.ptr, array.size, _dtype(nccl, array), root, cupy.cuda.get_current_stream().ptr)
    return array


def all_gather(st, array, out):
    cupy, nccl = _cupy()
    _check_device(array)
    array = cupy.ascontiguousarray(array)
    if out is None:
        out = cupy.empty((st.size,) + tuple(array.shape), array.dtype)
    st.nccl.allGather(array.data.ptr, out.data.ptr, array.size, _dtype(nccl, array),
                      cupy.cuda.get_current_stream().ptr)
    return out
