"""fusegrad on NVIDIA GPUs: whether one is usable here, and the host SIMT emulator that runs the
CUDA kernels without one (for tests and kernel development)."""
from __future__ import annotations

import contextlib

from . import _backend, _emulated


def is_available() -> bool:
    """True when the CUDA module is built, loads, and sees at least one device (or while the
    emulator is on)."""
    return device_count() > 0


def device_count() -> int:
    """Number of CUDA devices visible (0 without a driver, a device or the CUDA module; 1 while
    emulating)."""
    if _backend.emulating:
        return 1
    mod = _backend.cuda_module()
    return 0 if mod is None else int(mod.device_count())


def device_name(device: int = 0) -> str:
    if _backend.emulating:
        return _emulated.require_module().device_name(device)
    return _backend.require_cuda().device_name(device)


def synchronize(device: int = 0) -> None:
    if not _backend.emulating:
        _backend.require_cuda().synchronize(device)


class Emulation:
    """What `emulate()` yields: the record of the kernel launches it ran."""

    def __init__(self, module):
        self._module = module

    @property
    def launches(self) -> list:
        """Each emulated launch since the context began: dicts of kernel (as written at the launch
        site), grid, block, smem (dynamic shared bytes) and location."""
        return self._module.launches()

    def kernels(self) -> list:
        """The names of the launched kernels, in order."""
        return [launch["kernel"] for launch in self.launches]

    def clear(self) -> None:
        self._module.clear_launches()


@contextlib.contextmanager
def emulate(seed: int | None = None, placement: str = "end_aligned"):
    """Runs fusegrad's CUDA kernels on the host SIMT emulator inside the context:

        with fusegrad.cuda.emulate() as emu:
            y = fusegrad.ops.relu(x)           # NumPy in, NumPy out, computed by the CUDA kernel
            print(emu.kernels())               # ['forward_kernel<decltype(k)::value>']

    fusegrad.ops on NumPy arrays run their CUDA kernels and return NumPy arrays; tensors and
    models moved to "cuda" live on the emulated device (DeviceArray), so a whole training step
    runs there. Every kernel runs checked: a barrier phase in a different thread order each time
    (`seed` picks the shuffles), every memory access against its allocation (`placement`:
    "end_aligned" like cudaMalloc, "end" to catch any overrun, "start" any underrun). Not a device
    for real work: it is orders of magnitude slower than a GPU. FUSEGRAD_CUDA_EMULATE=1 turns it on
    for a whole process."""
    module = _emulated.require_module()
    if placement not in ("end_aligned", "end", "start"):
        raise ValueError(f"placement: expected 'end_aligned', 'end' or 'start', got {placement!r}")
    saved = _backend.emulating, _emulated.placement, module.schedule_seed()
    _backend.emulating, _emulated.placement = True, placement
    if seed is not None:
        module.set_schedule_seed(int(seed))
    module.clear_launches()
    try:
        yield Emulation(module)
    finally:
        _backend.emulating, _emulated.placement = saved[0], saved[1]
        module.set_schedule_seed(saved[2])
