"""fusegrad.ops.matmul(precision="bf16") on the CPU against a float64 reference computed from the
bf16-rounded inputs, on every path of the bf16 GEMM this machine has (the bf16_path fixture:
AMX-BF16 tiles, AVX-512 BF16, generic)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fusegrad.ops as ops
from fusegrad import _cpu


def bf16_round(x):
    """float32 -> bf16 values (as float32): round to nearest even, subnormals to signed zero, NaN kept."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    r = (((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16).astype(np.uint32)
    r = np.where((u & 0x7F800000) == 0, (u & 0x80000000).astype(np.uint32), r)
    r = np.where(np.isnan(x), (u | 0x00400000).astype(np.uint32) & 0xFFFF0000, r)
    return r.astype(np.uint32).view(np.float32).reshape(x.shape)


def reference(a, b, bias=None, activation=None):
    """float64 product of the bf16-rounded operands, with the epilogue."""
    c = np.matmul(bf16_round(a).astype(np.float64), bf16_round(b).astype(np.float64))
    if bias is not None:
        c = c + bias
    if activation == "relu":
        c = np.maximum(c, 0)
    elif activation == "tanh":
        c = np.tanh(c)
    elif activation == "sigmoid":
        c = 1 / (1 + np.exp(-c))
    return c


def tolerance(a, b, scale=1.0):
    """Per-element bound on the fp32 summation error of the product of the rounded operands: the
    exact bf16 products are summed in fp32 in blocks, so the error grows like sqrt(K) units of the
    sum of |a||b| at worst-case-ish constants; a kernel that skipped the rounding, a K pair or a
    tile would miss by orders of magnitude more."""
    k = a.shape[-1]
    mag = np.matmul(np.abs(bf16_round(a)).astype(np.float64), np.abs(bf16_round(b)).astype(np.float64))
    return scale * (8 * np.sqrt(k) + 8) * 2.0**-24 * mag + 1e-30


def check(c, a, b, bias=None, activation=None):
    ref = reference(a, b, bias, activation)
    assert c.dtype == np.float32 and c.shape == ref.shape
    # An activation may move a value by at most its argument's error (|f'| <= 1 for these).
    err = np.abs(c.astype(np.float64) - ref)
    tol = tolerance(a, b) + (1e-6 * np.abs(ref) if activation else 0)
    assert np.all(err <= tol), f"max error {err.max()} (bound {tol.flat[np.argmax(err - tol)]})"


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# Edges of every path's tiles and blocks: MR 12 and 32 rows, NR 32 columns, K odd (pairs), K past
# the AMX's 32-deep steps and the K blocks (AVX-512 BF16 512, AMX 4096), C summed over them.
SHAPES = [(1, 1, 1), (1, 7, 3), (5, 3, 1), (12, 32, 2), (13, 33, 31), (31, 17, 33), (32, 32, 32), (33, 31, 65),
          (11, 64, 257), (40, 50, 513), (70, 97, 1030), (33, 40, 4129), (32, 64, 8200)]


@pytest.mark.parametrize("m,n,k", SHAPES, ids=[f"{m}x{n}x{k}" for m, n, k in SHAPES])
def test_matches_float64_reference_on_every_path(bf16_path, rng, m, n, k):
    assert ops.gemm.bf16_path() == bf16_path
    a, b = rand(rng, m, k), rand(rng, k, n)
    check(ops.matmul(a, b, precision="bf16"), a, b)


@pytest.mark.parametrize("threads", [1, 2])
def test_large_and_threaded(bf16_path, rng, threads):
    before = _cpu.get_num_threads()
    _cpu.set_num_threads(threads)
    try:
        a, b = rand(rng, 261, 700), rand(rng, 700, 195)
        check(ops.matmul(a, b, precision="bf16"), a, b)
        a, b = rand(rng, 20, 300), rand(rng, 300, 400)  # fewer row panels than threads: N is split
        check(ops.matmul(a, b, precision="bf16"), a, b)
    finally:
        _cpu.set_num_threads(before)


def test_large_result_and_the_streaming_store(bf16_path, rng):
    # C of 1472² floats (8.3 MiB) is past the size from which the AMX path writes full tiles with
    # streaming stores; edges and a second K block (accumulated) ride along.
    a, b = rand(rng, 1472, 70), rand(rng, 70, 1472)
    check(ops.matmul(a, b, precision="bf16"), a, b)
    a2, b2 = rand(rng, 1440, 4100), rand(rng, 4100, 1470)[:, :1470]
    out = np.full((1440, 1470), np.nan, np.float32)
    ops.matmul(a2, b2, out=out, precision="bf16")
    check(out, a2, b2)


def test_the_inputs_are_rounded_to_bf16(bf16_path):
    # bf16 keeps 7 fraction bits: 1 + 2^-10 rounds to 1, 1 + 0.75 * 2^-7 to 1 + 2^-7 (nearest).
    k = 64
    a = np.full((3, k), 1 + 2.0**-10, np.float32)
    b = np.ones((k, 5), np.float32)
    np.testing.assert_array_equal(ops.matmul(a, b, precision="bf16"), np.full((3, 5), k, np.float32))
    a[:] = 1 + 0.75 * 2.0**-7
    np.testing.assert_array_equal(ops.matmul(a, b, precision="bf16"), np.full((3, 5), k * (1 + 2.0**-7), np.float32))
    # A tie, 1 + 2^-8 (half way between 1 and 1 + 2^-7), goes to the even one: 1.
    a[:] = 1 + 2.0**-8
    np.testing.assert_array_equal(ops.matmul(a, b, precision="bf16"), np.full((3, 5), k, np.float32))


def test_transposed_and_strided_views(bf16_path, rng):
    m, n, k = 29, 45, 67
    at = rand(rng, k, m).T          # column-major A
    bt = rand(rng, n, k).T          # column-major B (what a Linear layer passes: weight.T)
    check(ops.matmul(at, bt, precision="bf16"), at, bt)
    a_s = rand(rng, m, 2 * k)[:, ::2]  # strided rows: neither row- nor column-major
    b_s = rand(rng, 2 * k, n)[::2]
    check(ops.matmul(a_s, b_s, precision="bf16"), a_s, b_s)
    b_neg = rand(rng, k, n)[::-1]
    check(ops.matmul(at, b_neg, precision="bf16"), at, b_neg)


def test_batched(bf16_path, rng):
    a3, b3 = rand(rng, 4, 19, 35), rand(rng, 4, 35, 40)
    check(ops.matmul(a3, b3, precision="bf16"), a3, b3)
    b2 = rand(rng, 35, 40)
    check(ops.matmul(a3, b2, precision="bf16"), a3, b2)
    a2 = rand(rng, 19, 35)
    check(ops.matmul(a2, b3, precision="bf16"), a2, b3)
    big = rand(rng, 3, 130, 70)
    w = rand(rng, 70, 90)
    check(ops.matmul(big, w, precision="bf16"), big, w)
    # Many small products: spread one per thread, each on that thread's packing buffers.
    many_a, many_b = rand(rng, 300, 17, 15), rand(rng, 300, 15, 33)
    check(ops.matmul(many_a, many_b, precision="bf16"), many_a, many_b)


@pytest.mark.parametrize("activation", [None, "relu", "tanh", "sigmoid"])
def test_bias_and_activation(bf16_path, rng, activation):
    a, b, bias = rand(rng, 37, 45), rand(rng, 45, 70), rand(rng, 70)
    check(ops.matmul(a, b, bias=bias, activation=activation, precision="bf16"), a, b, bias, activation)
    a3 = rand(rng, 2, 33, 45)
    check(ops.matmul(a3, b, bias=bias, activation=activation, precision="bf16"), a3, b, bias, activation)


def test_accumulate_into_out(bf16_path, rng):
    a, b = rand(rng, 45, 300), rand(rng, 300, 50)
    start = rand(rng, 45, 50)
    out = start.copy()
    assert ops.matmul(a, b, out=out, accumulate=True, precision="bf16") is out
    ref = start + reference(a, b)
    assert np.all(np.abs(out - ref) <= tolerance(a, b) + 1e-6 * np.abs(start))
    # Into a strided view (computed aside, then added in place), and a plain overwrite.
    big = np.zeros((45, 80), np.float32)
    view = big[:, 10:60]
    view[...] = start
    ops.matmul(a, b, out=view, accumulate=True, precision="bf16")
    np.testing.assert_allclose(view, out, rtol=0, atol=1e-4)
    assert np.all(big[:, :10] == 0) and np.all(big[:, 60:] == 0)
    ops.matmul(a, b, out=out, precision="bf16")
    check(out, a, b)


def test_empty_and_k_zero(bf16_path, rng):
    assert ops.matmul(np.zeros((0, 5), np.float32), rand(rng, 5, 4), precision="bf16").shape == (0, 4)
    bias = rand(rng, 4)
    c = ops.matmul(np.zeros((3, 0), np.float32), np.zeros((0, 4), np.float32), bias=bias, activation="relu",
                   precision="bf16")
    np.testing.assert_array_equal(c, np.broadcast_to(np.maximum(bias, 0), (3, 4)))


def test_nan_and_inf_propagate(bf16_path, rng):
    a, b = rand(rng, 20, 40), rand(rng, 40, 35)
    a[3, 7] = np.nan
    a[5, :] = 0
    a[5, 2] = np.inf
    b[2, :] = np.abs(b[2, :]) + 1
    c = ops.matmul(a, b, precision="bf16")
    assert np.all(np.isnan(c[3])) and np.all(np.isposinf(c[5]))
    rows = [i for i in range(20) if i not in (3, 5)]
    check(c[rows], a[rows], b)


def test_ml_dtypes_bfloat16_operands(bf16_path, rng):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    a = rand(rng, 23, 41).astype(ml_dtypes.bfloat16)
    b = rand(rng, 41, 37).astype(ml_dtypes.bfloat16)
    a32, b32 = a.astype(np.float32), b.astype(np.float32)  # exact: these are the bf16 values
    check(ops.matmul(a, b, precision="bf16"), a32, b32)
    check(ops.matmul(a.T.copy().T, b, precision="bf16"), a32, b32)     # column-major bf16
    check(ops.matmul(a32, b, precision="bf16"), a32, b32)              # mixed fp32 / bf16
    check(ops.matmul(a, b32[:, ::-1], precision="bf16"), a32, b32[:, ::-1])
    bias = rand(rng, 37)
    check(ops.matmul(a, b, bias=bias, activation="relu", precision="bf16"), a32, b32, bias, "relu")


def test_errors():
    a, b = np.ones((3, 4), np.float32), np.ones((4, 5), np.float32)
    with pytest.raises(TypeError, match="a: expected dtype float32, got float64"):
        ops.matmul(a.astype(np.float64), b, precision="bf16")
    with pytest.raises(TypeError, match="out: expected dtype float32"):
        ops.matmul(a, b, out=np.zeros((3, 5), np.float64), precision="bf16")
    with pytest.raises(ValueError, match="inner sizes differ"):
        ops.matmul(a, b.T, precision="bf16")
    with pytest.raises(ValueError, match="accumulate=True takes no bias"):
        ops.matmul(a, b, out=np.zeros((3, 5), np.float32), accumulate=True, bias=np.ones(5, np.float32),
                   precision="bf16")
    with pytest.raises(ValueError, match="precision='tf32' runs on CUDA"):
        ops.matmul(a, b, precision="tf32")
    with pytest.raises(ValueError, match="precision must be one of"):
        ops.matmul(a, b, precision="bfloat16")
    ro = np.zeros((3, 5), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        ops.matmul(a, b, out=ro, precision="bf16")


def test_bfloat16_arrays_need_precision_bf16():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    a = np.ones((3, 4), ml_dtypes.bfloat16)
    b = np.ones((4, 5), np.float32)
    with pytest.raises(TypeError, match="a: dtype bfloat16 is taken only with precision='bf16'"):
        ops.matmul(a, b)
    with pytest.raises(TypeError, match="bias: expected dtype float32, got bfloat16"):
        ops.matmul(b.T, b, bias=np.ones(5, ml_dtypes.bfloat16), precision="bf16")
    with pytest.raises(TypeError, match="out: expected dtype float32, got bfloat16"):
        ops.matmul(a, b, out=np.zeros((3, 5), ml_dtypes.bfloat16), precision="bf16")
    # The CUDA kernels read float32 only: a bf16 array on a CUDA device (here the emulated one) is refused.
    from fusegrad import _emulated
    with pytest.raises(TypeError, match="a: expected dtype float32, got bfloat16"):
        ops.matmul(a.view(_emulated.DeviceArray), b.view(_emulated.DeviceArray), precision="bf16")


def test_compiled_guard_refuses_bad_arguments():
    a, b = np.ones((3, 4), np.float32), np.ones((4, 5), np.float32)
    with pytest.raises(TypeError, match="expected float32 or bf16"):
        _cpu.gemm_bf16(a.astype(np.float64), b, np.zeros((3, 5), np.float32), None, 0, False)
    with pytest.raises(ValueError, match="shape"):
        _cpu.gemm_bf16(a, b, np.zeros((3, 4), np.float32), None, 0, False)
    with pytest.raises(ValueError, match="overlaps"):
        buf = np.zeros((4, 5), np.float32)
        _cpu.gemm_bf16(np.ones((4, 4), np.float32), buf, buf, None, 0, False)


def test_forced_generic_isa_in_a_subprocess(tmp_path, rng):
    """FUSEGRAD_ISA=generic: no extension is usable, the generic path runs, same numbers."""
    a, b = rand(rng, 33, 70), rand(rng, 70, 41)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    code = ("import numpy as np, fusegrad.ops as ops, sys; d = sys.argv[1]; "
            "a, b = np.load(d + '/a.npy'), np.load(d + '/b.npy'); print(ops.gemm.bf16_path()); "
            "np.save(d + '/c.npy', ops.matmul(a, b, bias=np.ones(41, np.float32), activation='relu', precision='bf16'))")
    env = {**os.environ, "FUSEGRAD_ISA": "generic"}
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "generic"
    check(np.load(tmp_path / "c.npy"), a, b, np.ones(41), "relu")


def test_agrees_with_torch_bf16_matmul(rng):
    torch = pytest.importorskip("torch")
    a, b = rand(rng, 64, 300), rand(rng, 300, 48)
    ours = ops.matmul(a, b, precision="bf16")
    theirs = torch.matmul(torch.from_numpy(a).bfloat16(), torch.from_numpy(b).bfloat16()).float().numpy()
    # torch rounds its result to bf16 (8 significant bits): compare within that rounding.
    np.testing.assert_allclose(ours, theirs, rtol=2.0**-7, atol=1e-3)
