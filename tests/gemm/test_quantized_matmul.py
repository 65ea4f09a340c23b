"""fusegrad.ops.quantized_matmul against exact int64 NumPy references, on every int8 path this
machine has (AMX tiles, AVX-512 VNNI, portable C++ at each ISA level), and against PyTorch's
quantized Linear where PyTorch is installed.

Edge shapes come from each path's own micro-tile and blocks (_cpu.int8_gemm_path), so every path
is tested one below and above its own tile and block sizes.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import fusegrad.ops as ops
from fusegrad import _cpu, _emulated
from quantized import assert_requantized, int8_path, real_result, s8, threads, u8  # noqa: F401


def exact(a, b, zp=0):
    return (a.astype(np.int64) - zp) @ b.astype(np.int64)


def edge_shapes(cfg):
    mr, nr, kc, mc, nc = (cfg[key] for key in ("mr", "nr", "kc", "mc", "nc"))
    return [(1, 1, 1), (1, 7, 1), (3, 1, 5), (mr - 1, 4, nr - 1), (mr + 1, 5, nr + 1), (mr, 64, nr),
            (2 * mr + 3, kc - 1, 17), (7, kc + 1, 2 * nr + 5), (mc + 1, 3, nc + 1), (mc - 1, 2 * kc + 5, 33),
            (97, 129, 63)]


def test_exact_int32_on_edge_shapes(int8_path, threads, rng):
    cfg = _cpu.int8_gemm_path(0)
    for m, k, n in edge_shapes(cfg):
        a, b = u8(rng, m, k), s8(rng, k, n)
        for zp in (0, 128, 255):
            got = ops.quantized_matmul(a, b, a_zero_point=zp)
            assert got.dtype == np.int32 and got.shape == (m, n)
            np.testing.assert_array_equal(got, exact(a, b, zp), err_msg=f"{int8_path} {m}x{k}x{n} zp={zp}")


def test_extreme_values_sum_exactly(int8_path, threads):
    # 255 · -128 in every product, as deep as a tile block and more: the largest sums int32 holds
    # here, and vpdpbusd must not saturate (vpdpbusds would).
    for k in (64, 1000, 4099):
        a = np.full((40, k), 255, np.uint8)
        b = np.full((k, 40), -128, np.int8)
        b[:, ::2] = 127
        np.testing.assert_array_equal(ops.quantized_matmul(a, b), exact(a, b))
        np.testing.assert_array_equal(ops.quantized_matmul(a, b, a_zero_point=255), np.zeros((40, 40)))


def test_large_product(int8_path, rng):
    a, b = u8(rng, 300, 2100), s8(rng, 2100, 130)
    np.testing.assert_array_equal(ops.quantized_matmul(a, b, a_zero_point=3), exact(a, b, 3))


def test_prepacked_weight_and_layouts(int8_path, rng):
    a, b = u8(rng, 20, 50), s8(rng, 50, 30)
    w = ops.pack_quantized_weight(b)
    assert w.shape == (50, 30) and "QuantizedWeight" in repr(w)
    np.testing.assert_array_equal(w.column_sums(), b.astype(np.int64).sum(0))
    for _ in range(2):  # reused
        np.testing.assert_array_equal(ops.quantized_matmul(a, w, a_zero_point=9), exact(a, b, 9))
    linear = ops.pack_quantized_weight(np.ascontiguousarray(b.T), layout="nk")  # a PyTorch Linear weight (N, K)
    np.testing.assert_array_equal(ops.quantized_matmul(a, linear), exact(a, b))
    strided = ops.pack_quantized_weight(np.repeat(b, 2, axis=1)[:, ::2])
    np.testing.assert_array_equal(ops.quantized_matmul(a, strided), exact(a, b))


def test_float_output_scales_bias_relu(int8_path, threads, rng):
    m, k, n = 37, 91, 45
    a, b = u8(rng, m, k), s8(rng, k, n)
    bias = rng.standard_normal(n).astype(np.float32)
    per_channel = rng.uniform(0.001, 0.02, n).astype(np.float32)
    for b_scale in (0.0123, per_channel):
        for relu in (False, True):
            got = ops.quantized_matmul(a, b, a_scale=0.05, a_zero_point=100, b_scale=b_scale, bias=bias,
                                       activation="relu" if relu else None)
            assert got.dtype == np.float32
            want = real_result(exact(a, b, 100), 0.05 * np.asarray(b_scale, np.float64), bias, relu)
            np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-5 * np.abs(want).max())
    for b_scale in (0.25, np.float32(0.25), np.array(0.25)):
        got = ops.quantized_matmul(a, b, a_scale=np.float32(0.5), b_scale=b_scale)
        np.testing.assert_allclose(got, exact(a, b) * 0.125, rtol=1e-6)


def test_scales_and_bias_packed_with_the_weight(rng):
    """Packed once with the weight, the scales and bias give what passing them to each call gives;
    passed again, or without the activation scale, they are refused."""
    m, k, n = 21, 40, 35
    a, b = u8(rng, m, k), s8(rng, k, n)
    bias = rng.standard_normal(n).astype(np.float32)
    per_channel = rng.uniform(0.001, 0.02, n).astype(np.float32)
    for scale in (0.0123, per_channel):
        w = ops.pack_quantized_weight(b, scale=scale, bias=bias)
        for kw in (dict(activation="relu"), dict(out_dtype=np.uint8, out_scale=0.05, out_zero_point=3)):
            want = ops.quantized_matmul(a, b, a_scale=0.05, a_zero_point=7, b_scale=scale, bias=bias, **kw)
            np.testing.assert_array_equal(ops.quantized_matmul(a, w, a_scale=0.05, a_zero_point=7, **kw), want)
    w = ops.pack_quantized_weight(b, scale=per_channel)  # no bias packed: one may be given per call
    np.testing.assert_array_equal(ops.quantized_matmul(a, w, a_scale=0.05, bias=bias),
                                  ops.quantized_matmul(a, b, a_scale=0.05, b_scale=per_channel, bias=bias))
    with pytest.raises(ValueError, match="carries its scales; leave b_scale out"):
        ops.quantized_matmul(a, w, a_scale=0.05, b_scale=per_channel)
    with pytest.raises(ValueError, match="carries its scales: give a_scale"):
        ops.quantized_matmul(a, w)
    with pytest.raises(ValueError, match="carries its bias; leave bias out"):
        ops.quantized_matmul(a, ops.pack_quantized_weight(b, scale=0.1, bias=bias), a_scale=0.05, bias=bias)
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
        ops.pack_quantized_weight(b, scale=np.where(np.arange(n) == 3, np.nan, per_channel).astype(np.float32))
    with pytest.raises(ValueError, match=r"bias must have shape \(35,\)"):
        ops.pack_quantized_weight(b, scale=0.1, bias=bias[:-1])


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_requantized_output_saturates(int8_path, threads, rng, dtype):
    m, k, n = 70, 200, 150  # the AVX-512 epilogue packs 64 columns at a time, then 16 (the last masked)
    a, b = u8(rng, m, k), s8(rng, k, n)
    bias = rng.standard_normal(n).astype(np.float32) * 5
    b_scale = rng.uniform(0.001, 0.01, n).astype(np.float32)
    acc = exact(a, b, 128)
    zero_point = 128 if dtype == np.uint8 else 0
    for out_scale in (0.5, 0.05):  # 0.05: most values saturate at both ends
        for relu in (False, True):
            got = ops.quantized_matmul(a, b, a_scale=0.02, a_zero_point=128, b_scale=b_scale, bias=bias,
                                       activation="relu" if relu else None, out_dtype=dtype, out_scale=out_scale,
                                       out_zero_point=zero_point)
            real = real_result(acc, 0.02 * b_scale.astype(np.float64), bias, relu)
            assert_requantized(got, real, out_scale, zero_point, dtype)
    lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
    assert (got == hi).any() and (got == zero_point).any() and (relu or (got == lo).any())


def test_round_half_to_even(int8_path):
    # acc = 1, 3, 5, 7 at scale 0.5 / out_scale 1: 0.5, 1.5, 2.5, 3.5 -> 0, 2, 2, 4.
    a = np.array([[1], [3], [5], [7]], np.uint8)
    b = np.ones((1, 1), np.int8)
    got = ops.quantized_matmul(a, b, a_scale=0.5, b_scale=1.0, out_dtype=np.uint8, out_scale=1.0)
    np.testing.assert_array_equal(got[:, 0], [0, 2, 2, 4])


def test_batched_and_strided_inputs(int8_path, rng):
    b = s8(rng, 24, 19)
    a3 = u8(rng, 3, 5, 24)
    np.testing.assert_array_equal(ops.quantized_matmul(a3, b, a_zero_point=1),
                                  exact(a3.reshape(-1, 24), b, 1).reshape(3, 5, 19))
    wide = u8(rng, 30, 60)
    for view in (wide[::2, :24], wide[:, ::2][:, :24], u8(rng, 24, 11).T, a3.transpose(1, 0, 2)):
        np.testing.assert_array_equal(ops.quantized_matmul(view, b), exact(view.reshape(-1, 24), b).reshape(
            view.shape[:-1] + (19,)))


def test_out_argument(int8_path, rng):
    a, b = u8(rng, 9, 33), s8(rng, 33, 21)
    out = np.empty((9, 21), np.int32)
    assert ops.quantized_matmul(a, b, out=out) is out
    np.testing.assert_array_equal(out, exact(a, b))
    big = np.zeros((9, 42), np.float32)
    res = ops.quantized_matmul(a, b, a_scale=1.0, b_scale=1.0, out=big[:, ::2])
    np.testing.assert_array_equal(big[:, ::2], exact(a, b))
    np.testing.assert_array_equal(big[:, 1::2], 0)
    assert res.base is big
    q = np.empty((9, 21), np.uint8)
    ops.quantized_matmul(a, b, a_scale=0.01, b_scale=0.01, out_dtype=np.uint8, out_scale=0.1, out=q)
    assert_requantized(q, real_result(exact(a, b), 1e-4), 0.1, 0, np.uint8)


def test_empty_sizes(int8_path):
    np.testing.assert_array_equal(ops.quantized_matmul(np.zeros((0, 5), np.uint8), np.ones((5, 3), np.int8)),
                                  np.zeros((0, 3)))
    assert ops.quantized_matmul(np.zeros((4, 5), np.uint8), np.ones((5, 0), np.int8)).shape == (4, 0)
    np.testing.assert_array_equal(ops.quantized_matmul(np.zeros((4, 0), np.uint8), np.ones((0, 3), np.int8)),
                                  np.zeros((4, 3)))
    bias = np.array([1.5, -2.0, 3.0], np.float32)
    got = ops.quantized_matmul(np.zeros((2, 0), np.uint8), np.ones((0, 3), np.int8), a_scale=1.0, b_scale=1.0,
                               bias=bias, activation="relu")
    np.testing.assert_array_equal(got, np.tile([1.5, 0.0, 3.0], (2, 1)))


@pytest.mark.parametrize("level", ["generic", "avx2"])
def test_lower_isa_levels_in_a_fresh_interpreter(level):
    # Below avx512 the VNNI and AMX features are off: the generic path of that level runs.
    from conftest import SUPPORTED_ISAS
    if level not in SUPPORTED_ISAS:
        pytest.skip(f"this CPU has no {level} level")  # generic is always there
    code = ("import numpy as np, fusegrad.ops as ops; from fusegrad import _cpu\n"
            "r = np.random.default_rng(1); a = r.integers(0, 256, (70, 300), dtype=np.uint8)\n"
            "b = r.integers(-128, 128, (300, 50), dtype=np.int8)\n"
            "assert not any(_cpu.cpu_features().values()) and _cpu.int8_gemm_path(0)['name'] == 'generic'\n"
            "want = (a.astype(np.int64) - 7) @ b.astype(np.int64)\n"
            "assert np.array_equal(ops.quantized_matmul(a, b, a_zero_point=7), want)\n"
            "print('ok')\n")
    env = dict(os.environ, FUSEGRAD_ISA=level)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


# --- errors ------------------------------------------------------------------------------------

def test_errors(rng):
    a, b = u8(rng, 4, 6), s8(rng, 6, 5)
    qm = ops.quantized_matmul
    cases = [
        (lambda: qm(a.astype(np.float32), b), TypeError, "a: expected dtype uint8, got float32"),
        (lambda: qm(a, b.astype(np.int16)), TypeError, "b: expected dtype int8, got int16"),
        (lambda: qm(a, s8(rng, 7, 5)), ValueError, "inner sizes differ"),
        (lambda: qm(a[0], b), ValueError, "a must be (M, K)"),
        (lambda: qm(a, b[None]), ValueError, "b must be 2-D"),
        (lambda: qm(a, b, a_scale=0.1), ValueError, "give both a_scale and b_scale"),
        (lambda: qm(a, b, a_zero_point=256), ValueError, "a_zero_point must be in [0, 255]"),
        (lambda: qm(a, b, a_zero_point=1.5), TypeError, "a_zero_point must be an int"),
        (lambda: qm(a, b, a_scale=-1.0, b_scale=1.0), ValueError, "a_scale must be > 0"),
        (lambda: qm(a, b, a_scale=1.0, b_scale=np.ones(4)), ValueError, "b_scale must be a number or have shape (5,)"),
        (lambda: qm(a, b, a_scale=1.0, b_scale=np.array([1, 1, 0, 1, 1.0])), ValueError, "finite and > 0"),
        (lambda: qm(a, b, a_scale=1.0, b_scale="x"), TypeError, "b_scale"),
        (lambda: qm(a, b, bias=np.zeros(5, np.float32)), ValueError, "bias and out_scale need a_scale"),
        (lambda: qm(a, b, out_dtype=np.uint8), ValueError, "needs a_scale and b_scale"),
        (lambda: qm(a, b, a_scale=1.0, b_scale=1.0, out_dtype=np.uint8), ValueError, "needs out_scale"),
        (lambda: qm(a, b, a_scale=1.0, b_scale=1.0, out_dtype=np.int32), ValueError, "out_dtype must be float32"),
        (lambda: qm(a, b, a_scale=1.0, b_scale=1.0, out_scale=0.5), ValueError, "out_scale is for out_dtype"),
        (lambda: qm(a, b, a_scale=1.0, b_scale=1.0, out_dtype=np.int8, out_scale=1.0, out_zero_point=128),
         ValueError, "out_zero_point must be in [-128, 127]"),
        (lambda: qm(a, b, a_scale=1.0, b_scale=1.0, bias=np.zeros(5)), TypeError, "bias: expected dtype float32"),
        (lambda: qm(a, b, a_scale=1.0, b_scale=1.0, bias=np.zeros(4, np.float32)), ValueError, "bias must have shape (5,)"),
        (lambda: qm(a, b, a_scale=1.0, b_scale=1.0, bias=np.array([np.nan] * 5, np.float32), out_dtype=np.uint8,
                    out_scale=1.0), ValueError, "bias must be finite"),
        (lambda: qm(a, b, activation="gelu"), ValueError, "activation must be None or 'relu'"),
        (lambda: qm(a, b, out=np.empty((4, 5), np.float32)), TypeError, "out: expected dtype int32"),
        (lambda: qm(a, b, out=np.empty((4, 4), np.int32)), ValueError, "out must have shape (4, 5)"),
        (lambda: qm([[1]], b), TypeError, "a: expected a NumPy array"),
        (lambda: ops.pack_quantized_weight(b, layout="kt"), ValueError, "layout must be 'kn'"),
    ]
    for call, error, fragment in cases:
        with pytest.raises(error) as info:
            call()
        assert fragment in str(info.value), (fragment, str(info.value))
    read_only = np.empty((4, 5), np.int32)
    read_only.setflags(write=False)
    with pytest.raises(ValueError, match="out is read-only"):
        qm(a, b, out=read_only)


@pytest.mark.cuda_emulated
def test_device_input_and_host_weight_are_refused(rng):
    # (the CUDA kernels themselves: test_quantized_matmul_cuda.py)
    a = _emulated.to_device(u8(rng, 4, 6))
    with pytest.raises(ValueError, match="packed for cpu but the input is on cuda:0"):
        ops.quantized_matmul(a, s8(rng, 6, 5))


def test_too_deep_k_is_refused():
    k = _cpu.int8_max_k() + 1
    with pytest.raises(ValueError, match="too deep"):
        ops.pack_quantized_weight(np.zeros((k, 1), np.int8))


# --- PyTorch's quantized Linear ----------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")
@pytest.mark.parametrize("engine", ["fbgemm", "onednn"])
@pytest.mark.parametrize("m,k,n", [(1, 64, 10), (33, 200, 70), (128, 512, 256)])
def test_against_torch_quantized_linear(int8_path, rng, engine, m, k, n):
    torch = pytest.importorskip("torch")  # only this comparison needs PyTorch
    if engine not in torch.backends.quantized.supported_engines:
        pytest.skip(f"this PyTorch has no {engine} engine")
    a, w = u8(rng, m, k), s8(rng, n, k)  # a Linear weight is (N, K)
    bias = rng.standard_normal(n).astype(np.float32)
    a_scale, a_zp, w_scale, out_scale, out_zp = 0.02, 120, 0.004, 0.3, 60
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        xq = torch._make_per_tensor_quantized_tensor(torch.from_numpy(a), a_scale, a_zp)
        wq = torch._make_per_tensor_quantized_tensor(torch.from_numpy(w), w_scale, 0)
        packed = torch.ops.quantized.linear_prepack(wq, torch.from_numpy(bias))
        want = torch.ops.quantized.linear(xq, packed, out_scale, out_zp).int_repr().numpy()
    finally:
        torch.backends.quantized.engine = before
    got = ops.quantized_matmul(a, ops.pack_quantized_weight(w, layout="nk"), a_scale=a_scale, a_zero_point=a_zp,
                               b_scale=w_scale, bias=bias, out_dtype=np.uint8, out_scale=out_scale,
                               out_zero_point=out_zp)
    # The engines requantize with their own float rounding: at most one step apart, and rarely.
    diff = np.abs(got.astype(np.int64) - want)
    assert diff.max() <= 1 and (diff == 0).mean() > 0.98


def _quantize_reference(x, scale, zero_point):
    scaled = x.astype(np.float32) * np.float32(np.float32(1.0) / np.float32(scale))
    q = np.rint(np.nan_to_num(scaled, nan=-512.0).clip(-512, 512)) + zero_point
    return q.clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 1000, 300_001])
@pytest.mark.parametrize("scale,zero_point", [(0.05, 0), (0.013, 128), (1.0, 255), (3e-6, 7)])
def test_quantize_uint8_rounds_half_even_and_saturates(rng, n, scale, zero_point):
    x = (rng.standard_normal(n) * 4).astype(np.float32)
    if n >= 17:
        x[:8] = [0.5 * scale, 1.5 * scale, 2.5 * scale, -0.5 * scale, np.inf, -np.inf, np.nan, 1e30]
    np.testing.assert_array_equal(ops.quantize_uint8(x, scale, zero_point), _quantize_reference(x, scale, zero_point))


def test_quantize_uint8_keeps_shape_and_writes_out(rng):
    x = rng.standard_normal((3, 5, 7)).astype(np.float32)
    out = np.empty((3, 5, 7), np.uint8)
    assert ops.quantize_uint8(x, 0.1, 100, out=out) is out
    np.testing.assert_array_equal(out, _quantize_reference(x, 0.1, 100))
    view = x.transpose(2, 0, 1)  # not contiguous: copied first
    np.testing.assert_array_equal(ops.quantize_uint8(view, 0.1, 100), _quantize_reference(view, 0.1, 100))


def test_quantize_uint8_errors(rng):
    x = rng.standard_normal(8).astype(np.float32)
    with pytest.raises(ValueError, match="scale"):
        ops.quantize_uint8(x, 0.0)
    with pytest.raises(ValueError, match="zero_point"):
        ops.quantize_uint8(x, 0.1, 256)
    with pytest.raises(TypeError):
        ops.quantize_uint8(x.astype(np.float64), 0.1)
    with pytest.raises(ValueError, match="shape"):
        ops.quantize_uint8(x, 0.1, out=np.empty(7, np.uint8))
