"""pytest-benchmark entry points over the same cases as `python -m fusegrad bench`.

    pip install ".[bench]"
    pytest bench/ --benchmark-only [-k relu]

Each case contributes one benchmark for the fusegrad call and one per available baseline, grouped
by case so pytest-benchmark's table puts them side by side.
"""
import pytest

from fusegrad.bench import all_cases, thread_count

IMPLS = ["fusegrad", "numpy", "torch", "torch_channels_last", "torch_fused", "torch_foreach", "cupy"]


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        cases = all_cases()
        metafunc.parametrize("case", cases, ids=[c.name for c in cases])
        metafunc.parametrize("impl", IMPLS)


def _gpu_ready():
    try:
        import cupy  # noqa: F401

        import fusegrad

        return fusegrad.cuda.is_available()
    except ImportError:
        return False


@pytest.fixture(scope="session")
def gpu_ready():
    return _gpu_ready()


@pytest.fixture
def prepared(case, impl, gpu_ready):
    if case.device == "cuda" and not gpu_ready:
        pytest.skip("CUDA case: no GPU here")
    with thread_count(case.threads):
        ours, baselines = case.setup()
        fns = {"fusegrad": ours, **baselines}
        if impl not in fns:
            pytest.skip(f"{case.name} has no {impl} baseline here")
        yield fns[impl]



