"""The package around the kernels: info, threads, ISA selection, array adapters, the CLI."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fusegrad
from fusegrad import _backend, ops


def run_python(code: str, **env):
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env,
                          timeout=300)


def test_info_keys():
    d = fusegrad.info()
    for key in ("version", "isa", "num_threads", "cuda_built", "cuda_available", "devices"):
        assert key in d
    assert d["version"] == fusegrad.__version__
    assert d["isa"] in ("generic", "avx2", "avx512")
    assert d["devices"][0] == "cpu"
    assert isinstance(d["cuda_available"], bool)
    assert d["cuda_available"] == fusegrad.cuda.is_available()
    assert fusegrad.cuda.device_count() >= 0


def test_info_cli():
    r = subprocess.run([sys.executable, "-m", "fusegrad", "info"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "isa" in r.stdout and "num_threads" in r.stdout and "cuda_available" in r.stdout


def test_set_num_threads():
    before = fusegrad.get_num_threads()
    try:
        fusegrad.set_num_threads(1)
        assert fusegrad.get_num_threads() == 1
        assert fusegrad.info()["num_threads"] == 1
    finally:
        fusegrad.set_num_threads(before)
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        fusegrad.set_num_threads(0)
    with pytest.raises(TypeError, match="must be an int"):
        fusegrad.set_num_threads(2.5)


def test_omp_num_threads_is_honoured():
    r = run_python("import fusegrad; print(fusegrad.get_num_threads())", OMP_NUM_THREADS="1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1"


FAULTS_SCRIPT = """
import resource, numpy as np, fusegrad
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
a = np.ones(3 << 20, np.float32); del a
before = faults()
for _ in range(10):
    a = np.ones(3 << 20, np.float32); del a
print(fusegrad.info()["malloc_tuned"], (faults() - before) / 10)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the allocator setting is glibc's")
def test_freed_arrays_are_reused_without_page_faults():
    # A 12 MiB array is 3,072 pages; reallocated from warm memory it faults on almost none.
    tuned, faults = run_python(FAULTS_SCRIPT).stdout.split()
    assert tuned == "True" and float(faults) < 50
    tuned, faults = run_python(FAULTS_SCRIPT, FUSEGRAD_TUNE_MALLOC="0").stdout.split()
    assert tuned == "False"


ISA_SCRIPT = """
import numpy as np, fusegrad, sys
from fusegrad import ops
rng = np.random.default_rng(1)
x = (rng.standard_normal(100_003) * 4).astype(np.float32)
g = rng.standard_normal(100_003).astype(np.float32)
outs = [ops.relu(x), ops.leaky_relu(x, 0.1), ops.sigmoid(x), ops.tanh(x), ops.silu(x), ops.gelu(x),
        ops.gelu(x, 'tanh'), ops.gelu_backward(g, x), ops.silu_backward(g, x), ops.tanh_backward(g, np.tanh(x))]
np.save(sys.argv[1], np.stack(outs))
print(fusegrad.info()['isa'])
"""


def test_each_isa_gives_the_same_results(tmp_path):
    best = fusegrad.info()["best_isa"]
    levels = ["generic", "avx2", "avx512"]
    levels = levels[: levels.index(best) + 1]
    results = {}
    for level in levels:
        path = tmp_path / f"{level}.npy"
        r = subprocess.run([sys.executable, "-c", ISA_SCRIPT, str(path)], capture_output=True, text=True,
                           env={**os.environ, "FUSEGRAD_ISA": level}, timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == level
        results[level] = np.load(path)
    for level in levels[1:]:
        # Same formulas at every level; only FMA contraction and lane order may differ.
        np.testing.assert_allclose(results[level], results["generic"], rtol=2e-6, atol=1e-7)


def test_unknown_isa_is_a_clear_error_at_import():
    r = run_python("import fusegrad", FUSEGRAD_ISA="sse9")
    assert r.returncode != 0
    assert "FUSEGRAD_ISA='sse9'" in r.stderr and "expected generic, avx2 or avx512" in r.stderr


def test_cpu_features_are_reported_and_can_be_switched_off():
    from fusegrad import _cpu

    supported = _cpu.supported_cpu_features()
    assert set(_cpu.cpu_features()) == {"avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16"}
    assert set(fusegrad.info()["cpu_features"]) <= set(supported)
    for name in supported:
        _cpu.set_cpu_feature(name, False)
        try:
            assert not _cpu.cpu_features()[name]
        finally:
            _cpu.set_cpu_feature(name, True)
    unsupported = set(_cpu.cpu_features()) - set(supported)
    for name in unsupported:
        with pytest.raises(ValueError, match="not supported"):
            _cpu.set_cpu_feature(name, True)
    with pytest.raises(ValueError, match="unknown CPU feature"):
        _cpu.set_cpu_feature("avx1024", False)
    r = run_python("import fusegrad; print(fusegrad.info()['cpu_features'])",
                   FUSEGRAD_DISABLE_CPU_FEATURES=",".join(supported))
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr


def test_native_and_info_of_numpy():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)[:, ::2]
    arr, kind = _backend.native(x)
    assert arr is x and kind == "numpy"
    info = _backend.info(x)
    assert info.device == "cpu" and info.shape == (2, 2) and info.strides == (12, 8)
    assert info.ptr == x.__array_interface__["data"][0] and not info.readonly
    assert _backend.array_module(x) is np


def test_cuda_array_without_cuda_is_a_clear_error():
    class FakeCudaArray:
        __cuda_array_interface__ = {"shape": (4,), "typestr": "<f4", "data": (0, False), "version": 3}

    if fusegrad.cuda.is_available():
        pytest.skip("this machine has a GPU; the no-GPU path is not reachable")  # CUDA-only branch
    with pytest.raises((RuntimeError, TypeError)) as err:
        ops.relu(FakeCudaArray())
    assert "CuPy" in str(err.value) or "CUDA" in str(err.value)


def test_import_does_not_load_cuda_module():
    r = run_python("import sys, fusegrad; print('fusegrad._cuda' in sys.modules)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_bench_cli_writes_json(tmp_path):
    path = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "-m", "fusegrad", "bench", "--filter", "activation/relu_forward",
                        "--device", "cpu", "--repeat", "2", "--json", str(path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    report = json.loads(path.read_text())
    assert {"cpu", "cores", "gpu", "commit", "date"} <= set(report["machine"])
    assert report["limits"]["copy_GBps"] > 0 and report["limits"]["fma_GFLOPs"] > 0
    (case,) = report["cases"]
    assert case["name"] == "activation/relu_forward/16M" and case["family"] == "activation"
    assert case["device"] == "cpu" and case["unit"] == "GB/s"
    assert case["fusegrad"]["min_s"] <= case["fusegrad"]["median_s"]
    assert case["fusegrad"]["throughput"] > 0 and 0 < case["fraction_of_limit"]
    numpy = case["baselines"]["numpy"]
    assert numpy["speedup"] == pytest.approx(numpy["min_s"] / case["fusegrad"]["min_s"], rel=1e-2)
    assert "activation/relu_forward/16M" in r.stdout


def test_bench_unknown_filter():
    r = subprocess.run([sys.executable, "-m", "fusegrad", "bench", "--filter", "no-such-case"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no benchmark case matches" in r.stderr


def test_bench_case_names_are_unique_and_families_known():
    from fusegrad.bench import all_cases
    from fusegrad.bench.case import FAMILIES

    cases = all_cases()
    assert len({c.name for c in cases}) == len(cases)
    assert all(c.family in FAMILIES for c in cases)
    assert [c.family for c in cases][0] == "activation"  # activation cases come first
