"""ops.conv2d and its input/weight gradients with precision="bf16" on the CPU (and on CUDA arrays), against float64
references computed from the bf16-rounded operands, on every path of the bf16 GEMM this machine
has (the bf16_path fixture)."""
import numpy as np
import pytest

import fusegrad.ops as ops
from fusegrad.ops import conv_bf16


def bf16_round(x):
    x = np.ascontiguousarray(x, dtype=np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    r = (((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16).astype(np.uint32)
    r = np.where((u & 0x7F800000) == 0, (u & 0x80000000).astype(np.uint32), r)
    return r.view(np.float32).reshape(x.shape).astype(np.float64)


def taps(kh, kw, stride, dilation, oh, ow):
    for i in range(kh):
        for j in range(kw):
            yield i, j, (slice(None), slice(i * dilation[0], i * dilation[0] + stride[0] * (oh - 1) + 1, stride[0]),
                         slice(j * dilation[1], j * dilation[1] + stride[1] * (ow - 1) + 1, stride[1]), slice(None))


def ref_forward(x, w, stride, pads, dilation):
    n, h, wd, c = x.shape
    kh, kw, _, co = w.shape
    xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    oh = (xp.shape[1] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (xp.shape[2] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((n, oh, ow, co))
    for i, j, index in taps(kh, kw, stride, dilation, oh, ow):
        out += xp[index] @ w[i, j]
    return out


def ref_backward(g, x, w, stride, pads, dilation):
    n, oh, ow, co = g.shape
    kh, kw, c, _ = w.shape
    xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    gxp = np.zeros_like(xp)
    gw = np.zeros(w.shape)
    for i, j, index in taps(kh, kw, stride, dilation, oh, ow):
        gw[i, j] = xp[index].reshape(-1, c).T @ g.reshape(-1, co)
        gxp[index] += g @ w[i, j].T
    h, wd = x.shape[1:3]
    return gxp[:, pads[0][0]:pads[0][0] + h, pads[1][0]:pads[1][0] + wd], gw


def assert_close(got, ref, mag, k):
    """Within the fp32 summation error of k exact bf16 products (see tests/gemm/test_bf16_matmul.py)."""
    tol = (8 * np.sqrt(k) + 8) * 2.0**-24 * mag + 1e-30
    err = np.abs(got.astype(np.float64) - ref)
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert np.all(err <= tol), f"max error {err.max()}, bound there {tol.flat[np.argmax(err - tol)]}"


CASES = [  # x shape, w shape, stride, padding ((top, bottom), (left, right)), dilation
    ((2, 7, 9, 3), (3, 3, 3, 5), (1, 1), ((1, 1), (1, 1)), (1, 1)),
    ((3, 8, 8, 4), (3, 3, 4, 33), (2, 2), ((0, 1), (1, 0)), (1, 1)),
    ((1, 11, 10, 5), (3, 2, 5, 7), (1, 2), ((2, 2), (0, 0)), (2, 1)),
    ((2, 5, 6, 37), (1, 1, 37, 13), (1, 1), ((0, 0), (0, 0)), (1, 1)),   # pointwise: a plain GEMM
    ((2, 7, 7, 6), (1, 1, 6, 9), (2, 2), ((0, 0), (0, 0)), (1, 1)),      # 1×1 with stride: im2col
    ((4, 6, 6, 16), (5, 5, 16, 24), (1, 1), ((2, 2), (2, 2)), (1, 1)),
]


@pytest.mark.parametrize("xs,ws,stride,pads,dilation", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_forward_and_gradients_on_every_path(bf16_path, rng, xs, ws, stride, pads, dilation):
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    geo = dict(stride=stride, padding=pads, dilation=dilation)
    k = ws[0] * ws[1] * ws[2]
    y = ops.conv2d(x, w, **geo, precision="bf16")
    assert_close(y, ref_forward(bf16_round(x), bf16_round(w), stride, pads, dilation),
                 ref_forward(np.abs(bf16_round(x)), np.abs(bf16_round(w)), stride, pads, dilation), k)
    g = rng.standard_normal(y.shape).astype(np.float32)
    gx = ops.conv2d_backward_input(g, w, xs, **geo, precision="bf16")
    gw = ops.conv2d_backward_weight(x, g, ws, **geo, precision="bf16")
    rx, rw = ref_backward(bf16_round(g), bf16_round(x), bf16_round(w), stride, pads, dilation)
    mx, mw = ref_backward(np.abs(bf16_round(g)), np.abs(bf16_round(x)), np.abs(bf16_round(w)), stride, pads, dilation)
    assert_close(gx, rx, mx, ws[0] * ws[1] * ws[3])
    assert_close(gw, rw, mw, g.shape[0] * g.shape[1] * g.shape[2])
    # The one-call backward gives the same numbers, and the fp32 bias gradient.
    bx, bw, bb = ops.conv2d_backward(g, x, w, **geo, precision="bf16")
    np.testing.assert_array_equal(bx, gx)
    np.testing.assert_array_equal(bw, gw)
    np.testing.assert_allclose(bb, g.astype(np.float64).sum(axis=(0, 1, 2)), rtol=1e-5, atol=1e-4)


def test_bias_activation_and_out(bf16_path, rng):
    x = rng.standard_normal((2, 9, 9, 8)).astype(np.float32)
    w = rng.standard_normal((3, 3, 8, 12)).astype(np.float32)
    b = rng.standard_normal(12).astype(np.float32)
    pads = ((1, 1), (1, 1))
    ref = ref_forward(bf16_round(x), bf16_round(w), (1, 1), pads, (1, 1)) + b
    mag = ref_forward(np.abs(bf16_round(x)), np.abs(bf16_round(w)), (1, 1), pads, (1, 1)) + np.abs(b)
    out = np.full((2, 9, 9, 12), np.nan, np.float32)
    y = ops.conv2d(x, w, b, padding="same", activation="relu", out=out, precision="bf16")
    assert y is out
    assert_close(out, np.maximum(ref, 0), mag, 72)


def test_batches_are_processed_in_column_chunks(bf16_path, rng, monkeypatch):
    # One image's columns (6*6*27*4 B) at a time: chunks of one image, the weight gradient summed over them.
    monkeypatch.setattr(conv_bf16, "_COLUMN_BYTES", 6 * 6 * 27 * 4)
    x = rng.standard_normal((3, 6, 6, 3)).astype(np.float32)
    w = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
    g = rng.standard_normal((3, 6, 6, 4)).astype(np.float32)
    pads = ((1, 1), (1, 1))
    y = ops.conv2d(x, w, padding=1, precision="bf16")
    assert_close(y, ref_forward(bf16_round(x), bf16_round(w), (1, 1), pads, (1, 1)),
                 ref_forward(np.abs(bf16_round(x)), np.abs(bf16_round(w)), (1, 1), pads, (1, 1)), 27)
    gw = ops.conv2d_backward_weight(x, g, w.shape, padding=1, precision="bf16")
    gx = ops.conv2d_backward_input(g, w, x.shape, padding=1, precision="bf16")
    rx, rw = ref_backward(bf16_round(g), bf16_round(x), bf16_round(w), (1, 1), pads, (1, 1))
    mx, mw = ref_backward(np.abs(bf16_round(g)), np.abs(bf16_round(x)), np.abs(bf16_round(w)), (1, 1), pads, (1, 1))
    assert_close(gw, rw, mw, 108)
    assert_close(gx, rx, mx, 36)


def test_empty_batch(bf16_path):
    x = np.zeros((0, 5, 5, 3), np.float32)
    w = np.ones((3, 3, 3, 4), np.float32)
    assert ops.conv2d(x, w, precision="bf16").shape == (0, 3, 3, 4)
    gw = ops.conv2d_backward_weight(x, np.zeros((0, 3, 3, 4), np.float32), w.shape, precision="bf16")
    np.testing.assert_array_equal(gw, np.zeros(w.shape, np.float32))


def test_errors():
    x = np.ones((1, 4, 4, 2), np.float32)
    w = np.ones((3, 3, 2, 3), np.float32)
    with pytest.raises(ValueError, match="precision must be one of 'fp32', 'bf16'"):
        ops.conv2d(x, w, precision="tf32")
    with pytest.raises(TypeError, match="x: expected dtype float32, got float64"):
        ops.conv2d(x.astype(np.float64), w, precision="bf16")
    with pytest.raises(ValueError, match="channels"):
        ops.conv2d(x, np.ones((3, 3, 3, 3), np.float32), precision="bf16")
    with pytest.raises(ValueError, match="precision must be one of"):
        ops.conv2d_backward(np.ones((1, 2, 2, 3), np.float32), x, w, precision=None)


def test_agrees_with_torch_bf16_conv(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 10, 10, 8)).astype(np.float32)
    w = rng.standard_normal((3, 3, 8, 16)).astype(np.float32)
    ours = ops.conv2d(x, w, padding=1, precision="bf16")
    tx = torch.from_numpy(x).permute(0, 3, 1, 2).bfloat16()
    tw = torch.from_numpy(w).permute(3, 2, 0, 1).bfloat16()
    theirs = torch.nn.functional.conv2d(tx, tw, padding=1).float().permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=2.0**-7, atol=2e-2)


# --- on CUDA arrays: the im2col on the device and the tensor-core bf16 GEMM ---------------------


@pytest.mark.parametrize("xs,ws,stride,pads,dilation", CASES[:5], ids=[f"case{i}" for i in range(5)])
def test_cuda_forward_and_gradients(cuda_device, rng, xs, ws, stride, pads, dilation):
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[3]).astype(np.float32)
    geo = dict(stride=stride, padding=pads, dilation=dilation)
    k = ws[0] * ws[1] * ws[2]
    y, kernels = cuda_device.run(lambda: ops.conv2d(cuda_device.array(x), cuda_device.array(w), cuda_device.array(b),
                                                    **geo, precision="bf16"))
    cuda_device.assert_ran(kernels, "bf16_gemm_kernel")
    assert_close(y, ref_forward(bf16_round(x), bf16_round(w), stride, pads, dilation) + b,
                 ref_forward(np.abs(bf16_round(x)), np.abs(bf16_round(w)), stride, pads, dilation) + np.abs(b), k)
    g = rng.standard_normal(y.shape).astype(np.float32)
    gx = cuda_device.host(ops.conv2d_backward_input(cuda_device.array(g), cuda_device.array(w), xs, **geo,
                                                    precision="bf16"))
    gw = cuda_device.host(ops.conv2d_backward_weight(cuda_device.array(x), cuda_device.array(g), ws, **geo,
                                                     precision="bf16"))
    rx, rw = ref_backward(bf16_round(g), bf16_round(x), bf16_round(w), stride, pads, dilation)
    mx, mw = ref_backward(np.abs(bf16_round(g)), np.abs(bf16_round(x)), np.abs(bf16_round(w)), stride, pads, dilation)
    assert_close(gx, rx, mx, ws[0] * ws[1] * ws[3])
    assert_close(gw, rw, mw, g.shape[0] * g.shape[1] * g.shape[2])


def test_cuda_empty_batch(cuda_device):
    x = cuda_device.array(np.zeros((0, 5, 5, 3), np.float32))
    w = np.ones((3, 3, 3, 4), np.float32)
    assert cuda_device.host(ops.conv2d(x, cuda_device.array(w), precision="bf16")).shape == (0, 3, 3, 4)
    gw = ops.conv2d_backward_weight(x, cuda_device.array(np.zeros((0, 3, 3, 4), np.float32)), w.shape,
                                    precision="bf16")
    np.testing.assert_array_equal(cuda_device.host(gw), np.zeros(w.shape, np.float32))
