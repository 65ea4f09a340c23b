"""fusegrad.ops.quantized_conv2d and quantized_max_pool2d on CUDA arrays (cuda/conv/conv_int8.cu's
im2col and the int8 GEMM; cuda/pool/pool.cu's int8 max pooling) against exact int64 NumPy
references and the CPU kernels: strides, asymmetric padding (which holds the zero point),
dilation, the 1×1 case read in place, every output type, channel counts on and off the 4-byte
word path. On the emulator every run, on a GPU where there is one.
"""
import numpy as np
import pytest

import fusegrad.ops as ops
from quantized import assert_requantized, conv_reference, pool_reference, real_result, s8, u8

# (N, H, W, C_in, KH, KW, C_out, stride, padding pairs, dilation)
GEOMETRIES = [
    (2, 7, 6, 5, 1, 1, 9, (1, 1), ((0, 0), (0, 0)), (1, 1)),   # 1×1 stride 1: the image is the A operand
    (1, 8, 8, 3, 1, 1, 4, (2, 2), ((0, 0), (0, 0)), (1, 1)),   # 1×1 strided: im2col
    (2, 9, 9, 3, 3, 3, 17, (1, 1), ((1, 1), (1, 1)), (1, 1)),
    (1, 11, 10, 1, 5, 5, 33, (2, 2), ((2, 2), (2, 2)), (1, 1)),
    (2, 12, 13, 4, 3, 3, 8, (1, 2), ((0, 1), (2, 0)), (2, 2)),
    (3, 13, 13, 32, 3, 3, 64, (1, 1), ((0, 0), (0, 0)), (1, 1)),  # the MNIST CNN's second layer
]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=[f"g{i}" for i in range(len(GEOMETRIES))])
def test_exact_int32(cuda_device, rng, geometry):
    n, h, w_, ci, kh, kw, co, stride, pads, dilation = geometry
    x, w = u8(rng, n, h, w_, ci), s8(rng, kh, kw, ci, co)
    packed = ops.pack_quantized_weight(cuda_device.array(w))
    assert packed.kernel_shape == (kh, kw, ci, co)
    for zp in (0, 77):
        got, kernels = cuda_device.run(lambda: ops.quantized_conv2d(
            cuda_device.array(x), packed, stride=stride, padding=pads, dilation=dilation, x_zero_point=zp))
        gemm = "int8_mma_kernel" if kh * kw * ci % 16 == 0 else "int8_gemm_kernel"  # tensor cores, else dp4a
        names = [gemm] + ([] if (kh, kw, stride, pads) == (1, 1, (1, 1), ((0, 0), (0, 0))) else ["int8_im2col_kernel"])
        cuda_device.assert_ran(kernels, *names)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, conv_reference(x, w, zp, stride, pads, dilation))


def test_padding_holds_the_zero_point(cuda_device):
    x = np.full((1, 5, 5, 3), 131, np.uint8)
    w = np.full((3, 3, 3, 2), 100, np.int8)
    got = ops.quantized_conv2d(cuda_device.array(x), cuda_device.array(w), padding=2, x_zero_point=131,
                               x_scale=0.1, w_scale=0.1)
    np.testing.assert_array_equal(cuda_device.host(got), 0.0)


def test_float_and_requantized_outputs_equal_the_cpu(cuda_device, rng):
    x, w = u8(rng, 2, 10, 9, 6), s8(rng, 3, 3, 6, 20)
    bias = rng.standard_normal(20).astype(np.float32)
    w_scale = rng.uniform(0.002, 0.01, 20).astype(np.float32)
    acc = conv_reference(x, w, 90, padding=((1, 1), (1, 1)))
    packed = ops.pack_quantized_weight(cuda_device.array(w))
    kwargs = dict(padding=1, x_scale=0.03, x_zero_point=90, activation="relu")
    device_vectors = dict(w_scale=cuda_device.array(w_scale), bias=cuda_device.array(bias))
    got = cuda_device.host(ops.quantized_conv2d(cuda_device.array(x), packed, **kwargs, **device_vectors))
    want = real_result(acc, 0.03 * w_scale.astype(np.float64), bias, relu=True)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-5 * np.abs(want).max())
    for dtype, zero_point in ((np.uint8, 5), (np.int8, -3)):
        q = cuda_device.host(ops.quantized_conv2d(cuda_device.array(x), packed, out_dtype=dtype, out_scale=0.08,
                                                  out_zero_point=zero_point, **kwargs, **device_vectors))
        assert_requantized(q, want, 0.08, zero_point, dtype)
        with cuda_device.cpu():
            cpu = ops.quantized_conv2d(x, w, out_dtype=dtype, out_scale=0.08, out_zero_point=zero_point,
                                       w_scale=w_scale, bias=bias, **kwargs)
        assert np.abs(q.astype(np.int64) - cpu).max() <= 1
    out = cuda_device.array(np.zeros((2, 10, 9, 20), np.float32))
    assert ops.quantized_conv2d(cuda_device.array(x), packed, out=out, **kwargs, **device_vectors) is out


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("c", [3, 4, 35, 64])
@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), (3, 1, 1), (1, 1, 0)])
def test_quantized_max_pool(cuda_device, rng, dtype, c, k, s, p):
    lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
    x = rng.integers(lo, hi + 1, (2, 9, 8, c), dtype=dtype)
    got, kernels = cuda_device.run(lambda: ops.quantized_max_pool2d(cuda_device.array(x), k, s, p))
    cuda_device.assert_ran(kernels, f"max_forward_int8_kernel<{'true' if c % 4 == 0 else 'false'}>")
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, pool_reference(x, k, s, p))


def test_empty_batch(cuda_device, rng):
    x, w = u8(rng, 0, 5, 5, 3), s8(rng, 3, 3, 3, 4)
    assert cuda_device.host(ops.quantized_conv2d(cuda_device.array(x), cuda_device.array(w))).shape == (0, 3, 3, 4)
    assert cuda_device.host(ops.quantized_max_pool2d(cuda_device.array(x), 2)).shape == (0, 2, 2, 3)
