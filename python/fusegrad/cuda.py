"""Whether fusegrad can use a GPU here."""
from __future__ import annotations

from . import _backend


def is_available() -> bool:
    """True when the CUDA module is built, loads, and sees at least one device."""
    return device_count() > 0


def device_count() -> int:
    """Number of CUDA devices visible (0 without a driver, a device or the CUDA module)."""
    mod = _backend.cuda_module()
    return 0 if mod is None else int(mod.device_count())


def device_name(device: int = 0) -> str:
    return _backend.require_cuda().device_name(device)


def synchronize(device: int = 0) -> None:
    _backend.require_cuda().synchronize(device)
