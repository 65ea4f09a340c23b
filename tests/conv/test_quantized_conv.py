"""fusegrad.ops.quantized_conv2d and quantized_max_pool2d against exact int64 NumPy references on
every int8 path this machine has, and against PyTorch's quantized conv2d where it is installed."""
import numpy as np
import pytest

import fusegrad.ops as ops
from fusegrad import _emulated
from quantized import (assert_requantized, conv_reference as reference, int8_path, pool_reference,  # noqa: F401
                       real_result, s8, threads, u8)


# (N, H, W, C_in, KH, KW, C_out, stride, padding pairs, dilation)
GEOMETRIES = [
    (2, 7, 6, 5, 1, 1, 9, (1, 1), ((0, 0), (0, 0)), (1, 1)),   # 1×1 stride 1: the image read in place
    (1, 8, 8, 3, 1, 1, 4, (2, 2), ((0, 0), (0, 0)), (1, 1)),   # 1×1 strided: gathered
    (2, 9, 9, 3, 3, 3, 17, (1, 1), ((1, 1), (1, 1)), (1, 1)),
    (1, 11, 10, 1, 5, 5, 33, (2, 2), ((2, 2), (2, 2)), (1, 1)),
    (2, 12, 13, 4, 3, 3, 8, (1, 2), ((0, 1), (2, 0)), (2, 2)),
    (3, 6, 6, 16, 2, 3, 65, (1, 1), ((0, 0), (1, 1)), (1, 1)),
    (2, 20, 20, 40, 3, 3, 48, (1, 1), ((1, 1), (1, 1)), (1, 1)),  # several gather blocks at K = 360
    # C_in a multiple of 32 at stride 1: the AMX implicit GEMM (32- and 64-channel chunks), with
    # outputs that do not fill its 32-row tiles, odd C_out, asymmetric padding and kernels
    (3, 13, 13, 32, 3, 3, 64, (1, 1), ((0, 0), (0, 0)), (1, 1)),  # the MNIST CNN's second layer
    (2, 7, 9, 64, 3, 3, 17, (1, 1), ((1, 1), (1, 1)), (1, 1)),
    (1, 5, 40, 96, 1, 3, 48, (1, 1), ((0, 2), (1, 0)), (1, 1)),
    (2, 6, 5, 32, 5, 5, 80, (1, 1), ((2, 2), (2, 2)), (1, 1)),
    (1, 3, 3, 128, 3, 3, 33, (1, 1), ((1, 1), (1, 1)), (1, 1)),
    (1, 9, 12, 64, 3, 3, 20, (1, 1), ((0, 0), (0, 0)), (1, 1)),   # one unpadded image: its copy's slack
    (2, 40, 41, 32, 3, 3, 16, (1, 1), ((1, 1), (0, 0)), (1, 1)),  # several work items per image
]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=[f"g{i}" for i in range(len(GEOMETRIES))])
def test_exact_int32(int8_path, threads, rng, geometry):
    n, h, w_, ci, kh, kw, co, stride, pads, dilation = geometry
    x, w = u8(rng, n, h, w_, ci), s8(rng, kh, kw, ci, co)
    for zp in (0, 77):
        got = ops.quantized_conv2d(x, w, stride=stride, padding=pads, dilation=dilation, x_zero_point=zp)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, reference(x, w, zp, stride, pads, dilation))


def test_padding_holds_the_zero_point(int8_path):
    # An image of real zeros (every pixel = zero point) gives exactly 0 everywhere, borders included.
    x = np.full((1, 5, 5, 3), 131, np.uint8)
    w = np.full((3, 3, 3, 2), 100, np.int8)
    got = ops.quantized_conv2d(x, w, padding=2, x_zero_point=131, x_scale=0.1, w_scale=0.1)
    np.testing.assert_array_equal(got, 0.0)


def test_float_and_requantized_outputs(int8_path, threads, rng):
    x, w = u8(rng, 2, 10, 9, 6), s8(rng, 3, 3, 6, 20)
    bias = rng.standard_normal(20).astype(np.float32)
    w_scale = rng.uniform(0.002, 0.01, 20).astype(np.float32)
    acc = reference(x, w, 90, padding=((1, 1), (1, 1)))
    packed = ops.pack_quantized_weight(w)
    assert packed.kernel_shape == (3, 3, 6, 20)
    kwargs = dict(padding=1, x_scale=0.03, x_zero_point=90, w_scale=w_scale, bias=bias, activation="relu")
    got = ops.quantized_conv2d(x, packed, **kwargs)
    want = real_result(acc, 0.03 * w_scale.astype(np.float64), bias, relu=True)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-5 * np.abs(want).max())
    for dtype, zero_point in ((np.uint8, 5), (np.int8, -3)):
        q = ops.quantized_conv2d(x, packed, out_dtype=dtype, out_scale=0.08, out_zero_point=zero_point, **kwargs)
        assert_requantized(q, want, 0.08, zero_point, dtype)
    out = np.empty((2, 10, 9, 20), np.float32)
    assert ops.quantized_conv2d(x, packed, out=out, **kwargs) is out
    np.testing.assert_array_equal(out, got)


def test_conv_relu_pool_stays_in_int8(int8_path, rng):
    # Pooling the requantized output equals requantizing the pooled real output (monotone rounding).
    x, w = u8(rng, 2, 12, 12, 3), s8(rng, 3, 3, 3, 8)
    real = real_result(reference(x, w, 60, padding=((1, 1), (1, 1))), 0.02 * 0.01, relu=True)
    q = ops.quantized_conv2d(x, w, padding=1, x_scale=0.02, x_zero_point=60, w_scale=0.01, activation="relu",
                             out_dtype=np.uint8, out_scale=0.05)
    pooled = ops.quantized_max_pool2d(q, 2)
    real_pooled = real.reshape(2, 6, 2, 6, 2, 8).max(axis=(2, 4))
    assert_requantized(pooled, real_pooled, 0.05, 0, np.uint8)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), (3, 1, 1), (1, 1, 0)])
def test_quantized_max_pool(rng, dtype, k, s, p):
    lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
    x = rng.integers(lo, hi + 1, (2, 9, 8, 35), dtype=dtype)
    got = ops.quantized_max_pool2d(x, k, s, p)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, pool_reference(x, k, s, p))
    view = np.swapaxes(np.swapaxes(x, 1, 2).copy(), 1, 2)  # not C-contiguous
    np.testing.assert_array_equal(ops.quantized_max_pool2d(view, k, s, p), got)


def test_errors(rng):
    x, w = u8(rng, 1, 5, 5, 3), s8(rng, 3, 3, 3, 4)
    qc = ops.quantized_conv2d
    cases = [
        (lambda: qc(x.astype(np.int8), w), TypeError, "x: expected dtype uint8, got int8"),
        (lambda: qc(x, w.astype(np.float32)), TypeError, "b: expected dtype int8"),
        (lambda: qc(x, s8(rng, 3, 3, 2, 4)), ValueError, "has 3 channels but weight"),
        (lambda: qc(x, ops.pack_quantized_weight(s8(rng, 27, 4))), ValueError, "w must be a 4-D HWIO"),
        (lambda: qc(x[0], w), ValueError, "input must be 4-D NHWC"),
        (lambda: qc(x, w, x_scale=1.0), ValueError, "give both x_scale and w_scale"),
        (lambda: qc(x, w, x_zero_point=-1), ValueError, "x_zero_point must be in [0, 255]"),
        (lambda: qc(x, w, x_scale=1.0, w_scale=np.ones(3)), ValueError, "w_scale must be a number or have shape (4,)"),
        (lambda: qc(x, w, stride=0), ValueError, "stride must be >= 1"),
        (lambda: qc(x, w, out=np.empty((1, 3, 3, 4), np.float32)), TypeError, "out: expected dtype int32"),
        (lambda: ops.quantized_max_pool2d(x.astype(np.float32), 2), TypeError, "expected dtype uint8 or int8"),
        (lambda: ops.quantized_max_pool2d(x, 2, out=np.empty((1, 2, 2, 3), np.int8)), TypeError,
         "out: expected dtype uint8"),
        (lambda: ops.quantized_max_pool2d(x, 9), ValueError, "larger than the padded input"),
    ]
    for call, error, fragment in cases:
        with pytest.raises(error) as info:
            call()
        assert fragment in str(info.value), (fragment, str(info.value))


@pytest.mark.cuda_emulated
def test_device_input_and_host_weight_are_refused(rng):
    # (the CUDA kernels themselves: test_quantized_conv_cuda.py)
    x, w = u8(rng, 1, 5, 5, 3), s8(rng, 3, 3, 3, 4)
    with pytest.raises(ValueError, match="packed for cpu but the input is on cuda:0"):
        ops.quantized_conv2d(_emulated.to_device(x), w)
    with pytest.raises(ValueError, match="out is on cuda:0 but the inputs are on cpu"):
        ops.quantized_max_pool2d(x, 2, out=_emulated.to_device(np.zeros((1, 2, 2, 3), np.uint8)))


def test_empty_batch(int8_path, rng):
    got = ops.quantized_conv2d(np.zeros((0, 5, 5, 3), np.uint8), s8(rng, 3, 3, 3, 4), x_scale=1.0, w_scale=1.0)
    assert got.shape == (0, 3, 3, 4) and got.dtype == np.float32


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")
@pytest.mark.parametrize("engine", ["fbgemm", "onednn"])
def test_against_torch_quantized_conv(int8_path, rng, engine):
    torch = pytest.importorskip("torch")  # only this comparison needs PyTorch
    if engine not in torch.backends.quantized.supported_engines:
        pytest.skip(f"this PyTorch has no {engine} engine")
    import torch.ao.nn.quantized.functional as qF

    x, w = u8(rng, 2, 10, 10, 8), s8(rng, 3, 3, 8, 16)
    bias = rng.standard_normal(16).astype(np.float32)
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        xq = torch._make_per_tensor_quantized_tensor(torch.from_numpy(x).permute(0, 3, 1, 2), 0.02, 100)
        wq = torch._make_per_tensor_quantized_tensor(torch.from_numpy(w).permute(3, 2, 0, 1).contiguous(), 0.005, 0)
        yq = qF.conv2d(xq, wq, torch.from_numpy(bias), padding=1, scale=0.1, zero_point=50)
        want = yq.int_repr().permute(0, 2, 3, 1).numpy()
    finally:
        torch.backends.quantized.engine = before
    got = ops.quantized_conv2d(x, w, padding=1, x_scale=0.02, x_zero_point=100, w_scale=0.005, bias=bias,
                               out_dtype=np.uint8, out_scale=0.1, out_zero_point=50)
    diff = np.abs(got.astype(np.int64) - want)
    assert diff.max() <= 1 and (diff == 0).mean() > 0.98
