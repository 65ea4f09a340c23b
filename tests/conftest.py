import contextlib
import os

import numpy as np
import pytest

import fusegrad
from hypothesis import settings

# Property tests (tests/*/test_*_properties.py) are seeded and bounded: the same examples on
# every run, no example database, no per-example deadline on a shared CI machine.
settings.register_profile("fusegrad", derandomize=True, database=None, deadline=None, print_blob=True)
settings.load_profile("fusegrad")


def _gpu_present() -> bool:
    try:
        import cupy  # noqa: F401
    except ImportError:
        return False
    return fusegrad.cuda.is_available()


GPU = _gpu_present()

ISA_LEVELS = ["generic", "avx2", "avx512"]
SUPPORTED_ISAS = ISA_LEVELS[: ISA_LEVELS.index(fusegrad._backend._cpu.best_isa()) + 1]


def pytest_collection_modifyitems(config, items):
    # Only tests marked `cuda` are skipped without a GPU; every CPU test always runs.
    if GPU:
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU with CuPy (fusegrad.cuda.is_available() is False)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:  # the marker, not any keyword named "cuda"
            item.add_marker(skip)


@pytest.fixture
def rng():
    return np.random.default_rng(int(os.environ.get("FUSEGRAD_TEST_SEED", "0")))


@pytest.fixture(params=SUPPORTED_ISAS)
def isa(request):
    """Runs a test at each ISA level this CPU supports (the kernels are compiled once per level)."""
    cpu = fusegrad._backend._cpu
    saved = cpu.isa()
    cpu.set_isa(request.param)
    yield request.param
    cpu.set_isa(saved)


class CudaDevice:
    """The device a CUDA test runs on: "emulated" (the host SIMT emulator, every run) or "gpu" (a
    real GPU through CuPy, where one is present)."""

    def __init__(self, kind: str, emulation=None):
        self.kind, self.emulation = kind, emulation

    def array(self, host: np.ndarray):
        """A device copy of a NumPy array (emulated: in a guarded emulator allocation)."""
        if self.kind == "emulated":
            return fusegrad._emulated.to_device(host)
        import cupy

        return cupy.asarray(host)

    def host(self, x) -> np.ndarray:
        return fusegrad._backend.to_host(x)

    @contextlib.contextmanager
    def cpu(self):
        """The CPU kernels for NumPy arrays inside the block, as on a GPU. The emulator's context
        otherwise runs fusegrad.ops on NumPy arrays on the emulated device, so a reference
        computed with NumPy arrays would be the emulated kernel compared with itself."""
        saved, fusegrad._backend.emulating = fusegrad._backend.emulating, False
        try:
            yield
        finally:
            fusegrad._backend.emulating = saved

    def kernels(self) -> list | None:
        """The kernels launched so far in this test (emulated only; None on a GPU)."""
        return self.emulation.kernels() if self.emulation is not None else None

    def run(self, fn):
        """fn()'s result as host arrays, and the kernels it launched (None on a GPU)."""
        if self.emulation is not None:
            self.emulation.clear()
        result = fn()
        kernels = self.kernels()
        if isinstance(result, tuple):
            return tuple(self.host(r) for r in result), kernels
        return self.host(result), kernels

    @staticmethod
    def assert_ran(kernels, *names):
        """Each name is in some launched kernel's name (nothing to check on a GPU: kernels is None)."""
        if kernels is None:
            return
        for name in names:
            assert any(name in k for k in kernels), f"{name} not in {kernels}"

    def misaligned(self, host: np.ndarray):
        """A C-contiguous device view of host's values that starts 4 bytes past a 16-byte boundary."""
        flat = self.array(np.concatenate([np.zeros(1, host.dtype), host.ravel()]))
        view = flat[1:].reshape(host.shape)
        assert fusegrad._backend.info(view).ptr % 16 == 4
        return view


@pytest.fixture(params=[pytest.param("emulated", marks=pytest.mark.cuda_emulated),
                        pytest.param("gpu", marks=pytest.mark.cuda)])
def cuda_device(request):
    """Runs a test of CUDA kernels on the emulator on every run, and on a real GPU where there is
    one: the same assertions hold the emulator and the hardware to the same references."""
    if request.param == "emulated":
        with fusegrad.cuda.emulate(seed=int(os.environ.get("FUSEGRAD_TEST_SEED", "0"))) as emu:
            yield CudaDevice("emulated", emu)
    else:
        yield CudaDevice("gpu")


# The bf16 kernels' paths (fusegrad.ops.gemm.bf16_path), with the CPU features each needs
# switched on and those of the faster paths switched off.
BF16_PATHS = {"amx_bf16": {"amx_bf16": True, "avx512_bf16": True},
              "avx512_bf16": {"amx_bf16": False, "avx512_bf16": True},
              "generic": {"amx_bf16": False, "avx512_bf16": False}}


@pytest.fixture(params=list(BF16_PATHS))
def bf16_path(request):
    """Runs a test on each path of the bf16 GEMM this machine has; restores the switches after."""
    cpu = fusegrad._backend._cpu
    wanted = BF16_PATHS[request.param]
    # cpu_features() reports what is usable, which equals what is switched on only at avx512.
    supported = set(cpu.supported_cpu_features()) if cpu.isa() == "avx512" else set()
    if any(on and f not in supported for f, on in wanted.items()):
        pytest.skip(f"this CPU/OS has no {request.param} (usable features: {sorted(supported)})")
    saved = cpu.cpu_features()
    for name in supported & set(wanted):
        cpu.set_cpu_feature(name, wanted[name])
    yield request.param
    for name in supported & set(wanted):
        cpu.set_cpu_feature(name, saved[name])
