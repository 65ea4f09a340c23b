"""PyTorch's pooling options in the pool kernels: dilation for max pooling, ceil_mode for max and
average pooling (with PyTorch's divisor for the last windows, including those that hang past the
padding), and max_pool2d's indices (return_indices, MaxUnpool2d). The CPU kernels at every ISA
level and the CUDA kernels (host SIMT emulator every run, a GPU where there is one) against
float64 references written here as loops, and the modules against PyTorch, forward and backward."""
import math

import numpy as np
import pytest

import fusegrad as fg
from fusegrad import nn, ops
from fusegrad.nn import functional as F


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _out(n, k, s, p, d, ceil):
    """PyTorch's pooling_output_shape, written out."""
    span = n + 2 * p - d * (k - 1) - 1
    out = (math.ceil(span / s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= n + p:
        out -= 1
    return out


def _plan(shape, k, s, p, d, ceil):
    _, h, w, _ = shape
    (kh, kw), (ph, pw), (dh, dw) = _pair(k), _pair(p), _pair(d)
    sh, sw = _pair(k if s is None else s)
    return (kh, kw, sh, sw, ph, pw, dh, dw), (_out(h, kh, sh, ph, dh, ceil), _out(w, kw, sw, pw, dw, ceil))


def ref_max(x, k, s, p, d, ceil):
    """(values, indices) in float64: the first maximum over the taps inside the input."""
    (kh, kw, sh, sw, ph, pw, dh, dw), (oh, ow) = _plan(x.shape, k, s, p, d, ceil)
    n, h, w, c = x.shape
    y, idx = np.full((n, oh, ow, c), -np.inf), np.zeros((n, oh, ow, c), np.int64)
    for i in range(oh):
        for j in range(ow):
            taps = [(a, b) for a in range(i * sh - ph, i * sh - ph + kh * dh, dh)
                    for b in range(j * sw - pw, j * sw - pw + kw * dw, dw) if 0 <= a < h and 0 <= b < w]
            idx[:, i, j] = taps[0][0] * w + taps[0][1]
            for a, b in taps:
                v = x[:, a, b].astype(np.float64)
                take = v > y[:, i, j]
                y[:, i, j] = np.where(take, v, y[:, i, j])
                idx[:, i, j] = np.where(take, a * w + b, idx[:, i, j])
    return y, idx


def ref_avg(x, k, s, p, ceil, include_pad):
    """float64 average with PyTorch's divisor: the window clipped to the padded input, or the
    number of real pixels."""
    (kh, kw, sh, sw, ph, pw, _, _), (oh, ow) = _plan(x.shape, k, s, p, 1, ceil)
    n, h, w, c = x.shape
    y = np.zeros((n, oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            h0, w0 = i * sh - ph, j * sw - pw
            h1, w1 = min(h0 + kh, h + ph), min(w0 + kw, w + pw)
            a0, a1, b0, b1 = max(h0, 0), min(h1, h), max(w0, 0), min(w1, w)
            total = x[:, a0:a1, b0:b1].astype(np.float64).sum(axis=(1, 2))
            y[:, i, j] = total / ((h1 - h0) * (w1 - w0) if include_pad else (a1 - a0) * (b1 - b0))
    return y


def ref_avg_grad(g, shape, k, s, p, ceil, include_pad):
    """The average's gradient as the transpose of ref_avg, built column by column."""
    x = np.zeros(shape)
    gx = np.zeros(shape)
    for q in np.ndindex(*shape[1:3]):
        x[:] = 0
        x[:, q[0], q[1], :] = 1
        gx[:, q[0], q[1], :] = (ref_avg(x, k, s, p, ceil, include_pad) * g).sum(axis=(1, 2))
    return gx


# (H, W, kernel, stride, padding, dilation, ceil_mode)
MAX_CASES = [
    (7, 8, 3, 1, 1, 2, False),       # dilation 2, overlapping
    (9, 9, 3, 2, 1, 2, True),        # dilated and ceil mode
    (5, 5, 2, 2, 0, 1, True),        # ceil: a partial last window
    (5, 6, 3, 3, 1, 1, True),        # ceil: the rule drops a window that would start in the padding
    (8, 7, (2, 3), (3, 2), (1, 1), (3, 1), True),  # asymmetric everything
    (6, 6, 2, 3, 0, 2, False),       # dilated windows that do not overlap (the scatter path)
    (4, 11, 2, 1, 0, (1, 4), False),  # dilation along one axis only
]
CHANNELS = [3, 8]


def _check_max(x, case, dev=lambda a: a, host=np.asarray):
    h, w, k, s, p, d, ceil = case
    want, want_idx = ref_max(x, k, s, p, d, ceil)
    y, idx = ops.max_pool2d(dev(x), k, s, p, d, ceil, return_indices=True)
    np.testing.assert_array_equal(host(y), want.astype(np.float32))
    np.testing.assert_array_equal(host(idx), want_idx)
    g = np.random.default_rng(2).standard_normal(want.shape).astype(np.float32)
    gx = host(ops.max_pool2d_backward(dev(g), idx, x.shape, k, s, p, d, ceil))
    ref = np.zeros(x.shape)
    for q in np.ndindex(*want.shape):
        n, _, _, c = q
        ref[n, want_idx[q] // w, want_idx[q] % w, c] += g[q]
    np.testing.assert_allclose(gx, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("c", CHANNELS)
@pytest.mark.parametrize("case", MAX_CASES, ids=str)
def test_max_pool_options_cpu(case, c, isa, rng):
    _check_max(rng.standard_normal((2, case[0], case[1], c)).astype(np.float32), case)


@pytest.mark.parametrize("c", CHANNELS)
@pytest.mark.parametrize("case", MAX_CASES, ids=str)
def test_max_pool_options_cuda(case, c, cuda_device, rng):
    _check_max(rng.standard_normal((2, case[0], case[1], c)).astype(np.float32), case, cuda_device.array,
               cuda_device.host)


def test_dilated_backward_checks_indices_on_cuda(cuda_device, rng):
    x = rng.standard_normal((1, 7, 7, 4)).astype(np.float32)
    y, idx = ops.max_pool2d(cuda_device.array(x), 3, 1, 1, 2, return_indices=True)
    bad = cuda_device.host(idx).copy()
    bad[0, 2, 2, 1] += 1  # a pixel between the window's taps
    with pytest.raises(ValueError, match="1 indices do not name a pixel"):
        ops.max_pool2d_backward(cuda_device.array(np.ones(y.shape, np.float32)), cuda_device.array(bad), x.shape,
                                3, 1, 1, 2, check_indices=True)


# (H, W, kernel, stride, padding)
AVG_CASES = [
    (5, 5, 2, 2, 0),                 # a partial last window
    (6, 7, 3, 2, 1),                 # last windows hang past the padding
    (5, 6, 3, 3, 1),                 # the rule drops a window starting in the padding
    (7, 4, (3, 2), (2, 3), (1, 1)),
    (4, 4, 3, 1, 1),                 # ceil mode changes nothing: stride 1
]


def _check_avg(x, case, include_pad, dev=lambda a: a, host=np.asarray):
    h, w, k, s, p = case
    want = ref_avg(x, k, s, p, True, include_pad)
    y = ops.avg_pool2d(dev(x), k, s, p, True, include_pad)
    np.testing.assert_allclose(host(y), want, rtol=1e-5, atol=1e-6)
    g = np.random.default_rng(4).standard_normal(want.shape).astype(np.float32)
    gx = ops.avg_pool2d_backward(dev(g), x.shape, k, s, p, True, include_pad)
    np.testing.assert_allclose(host(gx), ref_avg_grad(g, x.shape, k, s, p, True, include_pad), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("include_pad", [True, False])
@pytest.mark.parametrize("case", AVG_CASES, ids=str)
def test_avg_pool_ceil_mode_cpu(case, include_pad, isa, rng):
    _check_avg(rng.standard_normal((2, case[0], case[1], 5)).astype(np.float32), case, include_pad)


@pytest.mark.parametrize("include_pad", [True, False])
@pytest.mark.parametrize("case", AVG_CASES, ids=str)
def test_avg_pool_ceil_mode_cuda(case, include_pad, cuda_device, rng):
    _check_avg(rng.standard_normal((2, case[0], case[1], 4)).astype(np.float32), case, include_pad,
               cuda_device.array, cuda_device.host)


def test_option_errors():
    x = np.ones((1, 5, 5, 2), np.float32)
    with pytest.raises(ValueError, match="dilation must be >= 1"):
        ops.max_pool2d(x, 2, 1, 0, 0)
    with pytest.raises(ValueError, match=r"dilated to \(5, 5\) is larger than the padded input \(4, 4\)"):
        ops.max_pool2d(np.ones((1, 4, 4, 1), np.float32), 3, 1, 0, 2)
    with pytest.raises(TypeError, match="ceil_mode must be True or False"):
        ops.avg_pool2d(x, 2, ceil_mode="yes")
    with pytest.raises(ValueError, match="indices must lie in"):
        F.max_unpool2d(fg.ones(1, 2, 2, 2), np.full((1, 2, 2, 2), 16), 2)
    with pytest.raises(ValueError, match="indices must be integers shaped like the input"):
        F.max_unpool2d(fg.ones(1, 2, 2, 2), np.zeros((1, 2, 2, 1), np.int64), 2)


# ---- against PyTorch ------------------------------------------------------------------------------


def _torch():
    return pytest.importorskip("torch")


def _compare(fo, to, fxs, txs, rtol=1e-5, atol=1e-6):
    """Outputs equal (PyTorch's permuted to NHWC), and the gradients of sum(out * weights)."""
    torch = _torch()
    to_nhwc = to.permute(0, 2, 3, 1)
    np.testing.assert_allclose(fo.numpy(), to_nhwc.detach().numpy(), rtol=rtol, atol=atol)
    wts = np.random.default_rng(6).standard_normal(fo.shape).astype(np.float32)
    (fo * fg.tensor(wts)).sum().backward()
    (to_nhwc * torch.tensor(wts)).sum().backward()
    for f, t in zip(fxs, txs):
        np.testing.assert_allclose(f.grad.numpy(), t.grad.permute(0, 2, 3, 1).numpy(), rtol=rtol, atol=atol)


def _pair_inputs(shape, seed=0):
    torch = _torch()
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    fx = fg.tensor(x, requires_grad=True)
    tx = torch.tensor(x).permute(0, 3, 1, 2).detach().requires_grad_(True)
    return fx, tx


@pytest.mark.parametrize("case", MAX_CASES, ids=str)
def test_max_pool2d_module_against_torch(case):
    torch = _torch()
    h, w, k, s, p, d, ceil = case
    fx, tx = _pair_inputs((2, h, w, 3))
    fo, fi = nn.MaxPool2d(k, s, p, d, return_indices=True, ceil_mode=ceil)(fx)
    to, ti = torch.nn.MaxPool2d(k, s, p, d, return_indices=True, ceil_mode=ceil)(tx)
    assert fi.dtype == np.int64
    np.testing.assert_array_equal(fi.numpy(), ti.permute(0, 2, 3, 1).numpy())
    _compare(fo, to, [fx], [tx])


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("case", AVG_CASES, ids=str)
def test_avg_pool2d_ceil_mode_against_torch(case, count_include_pad):
    torch = _torch()
    h, w, k, s, p = case
    fx, tx = _pair_inputs((2, h, w, 3))
    fo = nn.AvgPool2d(k, s, p, ceil_mode=True, count_include_pad=count_include_pad)(fx)
    to = torch.nn.AvgPool2d(k, s, p, ceil_mode=True, count_include_pad=count_include_pad)(tx)
    _compare(fo, to, [fx], [tx])


@pytest.mark.parametrize("k,s,p,hw,output_size", [(2, 2, 0, (6, 8), None), (3, 2, 1, (7, 7), None),
                                                  (2, 2, 0, (7, 9), (7, 9))])
def test_max_unpool2d_against_torch(k, s, p, hw, output_size):
    torch = _torch()
    fx, tx = _pair_inputs((2, *hw, 4), seed=3)
    fy, fi = F.max_pool2d(fx, k, s, p, return_indices=True)
    ty, ti = torch.nn.functional.max_pool2d(tx, k, s, p, return_indices=True)
    unpool = nn.MaxUnpool2d(k, s, p)
    fo = unpool(fy, fi, output_size)
    to = torch.nn.MaxUnpool2d(k, s, p)(ty, ti, output_size)
    _compare(fo, to, [fx], [tx])


def test_pool_modules_repr_their_options():
    assert "dilation=2, ceil_mode=True, return_indices=True" in repr(nn.MaxPool2d(3, 1, 1, 2, True, True))
    assert "ceil_mode=True" in repr(nn.AvgPool2d(3, ceil_mode=True))
