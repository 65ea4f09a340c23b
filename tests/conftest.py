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
