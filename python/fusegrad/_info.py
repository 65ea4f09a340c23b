"""fusegrad.info(): what this installation is and can use."""
from __future__ import annotations

from . import _backend, _cpu, cuda


def info() -> dict:
    devices = ["cpu"]
    n_gpu = cuda.device_count()
    devices += [f"cuda:{i} ({cuda.device_name(i)})" for i in range(n_gpu)]
    return {
        "version": _cpu.__version__,
        "isa": _cpu.isa(),
        "best_isa": _cpu.best_isa(),
        "cpu_features": [name for name, usable in _cpu.cpu_features().items() if usable],
        "num_threads": _cpu.get_num_threads(),
        "malloc_tuned": _backend.malloc_tuned,
        "cuda_built": _backend.cuda_built(),
        "cuda_available": n_gpu > 0,
        "devices": devices,
    }


def format_info(d: dict) -> str:
    width = max(len(k) for k in d)
    return "\n".join(f"{k:<{width}}  {', '.join(v) if isinstance(v, list) else v}" for k, v in d.items())
