"""fusegrad.ops.quantized_matmul, pack_quantized_weight and quantize_uint8 on CUDA arrays
(cuda/gemm/gemm_int8.cu) against exact int64 NumPy references and the CPU kernels: both kernels
(tensor cores: shapes around the 128×128 tile and 64-byte k step; dp4a: around its 64×64 tile and
32-byte step, unaligned rows and byte loads), every output type with saturation, and the errors of
mixing devices. On the emulator every run, on a GPU where there is one.
"""
import numpy as np
import pytest

import fusegrad.ops as ops
from fusegrad import _backend, _cpu
from fusegrad.ops import gemm_int8
from quantized import assert_requantized, real_result, s8, u8

TILE, K_STEP = 64, 32


def exact(a, b, zp=0):
    return (a.astype(np.int64) - zp) @ b.astype(np.int64)


@pytest.fixture
def int8_kernel(monkeypatch):
    """Forces the CUDA int8 GEMM kernel: int8_kernel("mma") or int8_kernel("dp4a")."""
    return lambda name: monkeypatch.setattr(gemm_int8, "_CUDA_INT8_KERNEL", name)


def test_tensor_core_kernel_on_edge_shapes(cuda_device, int8_kernel, rng):
    int8_kernel("mma")
    for m, k, n in [(1, 16, 1), (127, 64, 129), (129, 48, 127), (128, 128, 128), (257, 16, 7), (5, 320, 263)]:
        a, b = u8(rng, m, k), s8(rng, k, n)
        w = ops.pack_quantized_weight(cuda_device.array(b))
        for zp in (0, 255):
            got, kernels = cuda_device.run(lambda: ops.quantized_matmul(cuda_device.array(a), w, a_zero_point=zp))
            cuda_device.assert_ran(kernels, "int8_mma_kernel")
            np.testing.assert_array_equal(got, exact(a, b, zp), err_msg=f"{m}x{k}x{n} zp={zp}")
    with pytest.raises(ValueError, match="tensor-core kernel needs K"):
        ops.quantized_matmul(cuda_device.array(u8(rng, 4, 30)), cuda_device.array(s8(rng, 30, 3)))


def test_automatic_choice(cuda_device, rng):
    for k, kernel in ((64, "int8_mma_kernel"), (30, "int8_gemm_kernel")):
        a, b = u8(rng, 9, k), s8(rng, k, 5)
        got, kernels = cuda_device.run(lambda: ops.quantized_matmul(cuda_device.array(a), cuda_device.array(b)))
        cuda_device.assert_ran(kernels, kernel)
        np.testing.assert_array_equal(got, exact(a, b))


def test_exact_int32_on_edge_shapes(cuda_device, int8_kernel, rng):
    int8_kernel("dp4a")
    for m, k, n in [(1, 1, 1), (TILE - 1, K_STEP - 1, TILE + 1), (TILE + 1, K_STEP + 1, TILE - 1), (TILE, 3, TILE),
                    (2 * TILE + 3, 2 * K_STEP + 5, 7), (5, 4 * K_STEP, 2 * TILE + 9)]:
        a, b = u8(rng, m, k), s8(rng, k, n)
        w = ops.pack_quantized_weight(cuda_device.array(b))
        assert w.device.startswith("cuda") and w.shape == (k, n)
        np.testing.assert_array_equal(w.column_sums(), b.astype(np.int64).sum(0))
        for zp in (0, 128, 255):
            got, kernels = cuda_device.run(lambda: ops.quantized_matmul(cuda_device.array(a), w, a_zero_point=zp))
            cuda_device.assert_ran(kernels, "int8_gemm_kernel")  # dp4a
            assert got.dtype == np.int32 and got.shape == (m, n)
            np.testing.assert_array_equal(got, exact(a, b, zp), err_msg=f"{m}x{k}x{n} zp={zp}")


def test_extreme_values_sum_exactly(cuda_device):
    for k in (64, 1000, 4096, 4099):  # 64 and 4096 on the tensor cores
        a = np.full((40, k), 255, np.uint8)
        b = np.full((k, 40), -128, np.int8)
        b[:, ::2] = 127
        got = cuda_device.host(ops.quantized_matmul(cuda_device.array(a), cuda_device.array(b)))
        np.testing.assert_array_equal(got, exact(a, b))


def test_unaligned_rows_and_batches(cuda_device, rng):
    # K = 37: rows 37 bytes apart, so most 4-byte words of A and of B^T are unaligned; a view of
    # every other row of a wider array gives a row stride of 2·41 bytes.
    b = s8(rng, 37, 19)
    wide = u8(rng, 12, 41)
    view = cuda_device.array(wide)[::2, :37]
    np.testing.assert_array_equal(cuda_device.host(ops.quantized_matmul(view, cuda_device.array(b))),
                                  exact(wide[::2, :37], b))
    a3 = u8(rng, 3, 5, 37)
    got = cuda_device.host(ops.quantized_matmul(cuda_device.array(a3), cuda_device.array(b), a_zero_point=9))
    np.testing.assert_array_equal(got, exact(a3.reshape(-1, 37), b, 9).reshape(3, 5, 19))


@pytest.mark.parametrize("kernel", ["mma", "dp4a"])
@pytest.mark.parametrize("dtype", [np.float32, np.uint8, np.int8])
def test_real_and_requantized_outputs_equal_the_cpu(cuda_device, int8_kernel, rng, dtype, kernel):
    int8_kernel(kernel)
    m, k, n = 70, 208, 150
    a, b = u8(rng, m, k), s8(rng, k, n)
    bias = rng.standard_normal(n).astype(np.float32) * 5
    b_scale = rng.uniform(0.001, 0.01, n).astype(np.float32)
    w = ops.pack_quantized_weight(cuda_device.array(b))
    for out_scale in (0.5, 0.05):  # 0.05: most values saturate
        for relu in (False, True):
            kw = dict(a_scale=0.02, a_zero_point=128, activation="relu" if relu else None)
            if dtype != np.float32:
                kw.update(out_dtype=dtype, out_scale=out_scale, out_zero_point=128 if dtype == np.uint8 else 0)
            got = cuda_device.host(ops.quantized_matmul(cuda_device.array(a), w, b_scale=cuda_device.array(b_scale),
                                                        bias=cuda_device.array(bias), **kw))
            with cuda_device.cpu():
                cpu = ops.quantized_matmul(a, b, b_scale=b_scale, bias=bias, **kw)
            real = real_result(exact(a, b, 128), 0.02 * b_scale.astype(np.float64), bias, relu)
            if dtype == np.float32:
                np.testing.assert_allclose(got, real, rtol=2e-6, atol=1e-5 * np.abs(real).max())
                np.testing.assert_allclose(got, cpu, rtol=1e-6, atol=1e-6 * np.abs(real).max())
            else:
                assert_requantized(got, real, out_scale, kw["out_zero_point"], dtype)
                assert np.abs(got.astype(np.int64) - cpu).max() <= 1


def test_scales_and_bias_packed_with_the_weight_stay_on_the_device(cuda_device, rng, monkeypatch):
    """A weight packed with its scales and bias: a call reads nothing back from the device (no
    wait for the GPU) and, with the same activation scale, copies nothing to it again."""
    m, k, n = 40, 64, 48
    a, b = u8(rng, m, k), s8(rng, k, n)
    bias = rng.standard_normal(n).astype(np.float32)
    b_scale = rng.uniform(0.001, 0.01, n).astype(np.float32)
    w = ops.pack_quantized_weight(cuda_device.array(b), scale=cuda_device.array(b_scale), bias=cuda_device.array(bias))
    with cuda_device.cpu():
        want = ops.quantized_matmul(a, b, a_scale=0.02, a_zero_point=128, b_scale=b_scale, bias=bias)
    ad, results, kept = cuda_device.array(a), [], []
    for _ in range(2):
        with monkeypatch.context() as m:
            m.setattr(_backend, "to_host", lambda x: pytest.fail("a device array was read back"))
            results.append(ops.quantized_matmul(ad, w, a_scale=0.02, a_zero_point=128))
        kept.append({key: copy for key, (_, copy) in w._on_device.items()})
    assert kept[0].keys() == {"scale", "bias"} and all(kept[1][key] is kept[0][key] for key in kept[0])
    for got in results:
        np.testing.assert_allclose(cuda_device.host(got), want, rtol=1e-6, atol=1e-6 * np.abs(want).max())
    ops.quantized_matmul(ad, w, a_scale=0.03, a_zero_point=128)  # another activation scale: copied anew
    assert w._on_device["scale"][1] is not kept[0]["scale"] and w._on_device["bias"][1] is kept[0]["bias"]


def test_out_argument(cuda_device, rng):
    a, b = u8(rng, 9, 33), s8(rng, 33, 21)
    out = cuda_device.array(np.zeros((9, 21), np.int32))
    assert ops.quantized_matmul(cuda_device.array(a), cuda_device.array(b), out=out) is out
    np.testing.assert_array_equal(cuda_device.host(out), exact(a, b))
    big = cuda_device.array(np.zeros((9, 42), np.float32))
    ops.quantized_matmul(cuda_device.array(a), cuda_device.array(b), a_scale=1.0, b_scale=1.0, out=big[:, ::2])
    np.testing.assert_array_equal(cuda_device.host(big)[:, ::2], exact(a, b))
    np.testing.assert_array_equal(cuda_device.host(big)[:, 1::2], 0)


def test_empty_sizes(cuda_device, rng):
    assert cuda_device.host(ops.quantized_matmul(cuda_device.array(u8(rng, 0, 5)),
                                                 cuda_device.array(s8(rng, 5, 3)))).shape == (0, 3)
    got = cuda_device.host(ops.quantized_matmul(cuda_device.array(u8(rng, 4, 0)), cuda_device.array(s8(rng, 0, 3))))
    np.testing.assert_array_equal(got, np.zeros((4, 3), np.int32))


def test_devices_are_not_mixed(cuda_device, rng):
    a, b = u8(rng, 4, 8), s8(rng, 8, 3)
    host_weight = ops.QuantizedWeight(_cpu.int8_pack_weight(b))  # packed for the CPU even while emulating
    with pytest.raises(ValueError, match="packed for cpu but the input is on cuda"):
        ops.quantized_matmul(cuda_device.array(a), host_weight)
    device_weight = ops.pack_quantized_weight(cuda_device.array(b))
    if cuda_device.emulation is None:  # while emulating, NumPy arrays are device arrays too
        with pytest.raises(ValueError, match="packed for cuda:0 but the input is on cpu"):
            ops.quantized_matmul(a, device_weight)
        with pytest.raises(ValueError, match="b_scale is on cpu but the input is on cuda"):
            ops.quantized_matmul(cuda_device.array(a), device_weight, a_scale=0.1, b_scale=np.ones(3, np.float32))


def test_quantize_uint8_equals_the_cpu(cuda_device, rng):
    x = (rng.standard_normal(5000) * 30).astype(np.float32)
    x[:6] = [np.nan, np.inf, -np.inf, 1e30, -1e30, 0.05]  # NaN gives 0; the rest saturate or round
    x[6:10] = np.array([0.5, 1.5, 2.5, -0.5], np.float32) * 0.1  # ties: to even
    for scale, zp in ((0.1, 128), (0.37, 0), (2.0, 255)):
        got, kernels = cuda_device.run(lambda: ops.quantize_uint8(cuda_device.array(x), scale, zp))
        cuda_device.assert_ran(kernels, "quantize_uint8_kernel")
        with cuda_device.cpu():
            np.testing.assert_array_equal(got, ops.quantize_uint8(x, scale, zp))
    q = cuda_device.array(np.zeros((50, 100), np.uint8))
    assert ops.quantize_uint8(cuda_device.array(x[:5000].reshape(50, 100)), 0.1, 3, out=q) is q
    with cuda_device.cpu():
        want = ops.quantize_uint8(x.reshape(50, 100), 0.1, 3)
    np.testing.assert_array_equal(cuda_device.host(q), want)
