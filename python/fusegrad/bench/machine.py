"""A description of the machine a benchmark ran on, stored with its results."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess

import numpy as np

from .. import _cpu, cuda


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _version(name: str) -> str | None:
    try:
        return __import__(name).__version__
    except ImportError:
        return None


def describe() -> dict:
    gpus = [cuda.device_name(i) for i in range(cuda.device_count())]
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "threads": _cpu.get_num_threads(),
        "isa": _cpu.isa(),
        "gpu": ", ".join(gpus) if gpus else None,
        "commit": _commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "fusegrad": _cpu.__version__,
        "numpy": np.__version__,
        "torch": _version("torch"),
        "cupy": _version("cupy"),
    }
