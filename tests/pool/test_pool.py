"""Pooling (NHWC) against float64 NumPy references written here, PyTorch where importable, and
finite differences; every error case."""
import numpy as np
import pytest

import fusegrad
from fusegrad import _cpu, ops

# ---- float64 references ------------------------------------------------------------------------


def _geo(h, w, k, s, p):
    kh, kw = (k, k) if isinstance(k, int) else k
    s = k if s is None else s
    sh, sw = (s, s) if isinstance(s, int) else s
    ph, pw = (p, p) if isinstance(p, int) else p
    return kh, kw, sh, sw, ph, pw, (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1


def ref_max_pool(x, k, s=None, p=0):
    """Values and PyTorch-style indices (first maximum in row-major window order; NaN wins)."""
    n, h, w, c = x.shape
    kh, kw, sh, sw, ph, pw, oh, ow = _geo(h, w, k, s, p)
    y = np.empty((n, oh, ow, c))
    idx = np.empty((n, oh, ow, c), np.int64)
    for i in range(oh):
        for j in range(ow):
            h0, w0 = i * sh - ph, j * sw - pw
            best = np.full((n, c), -np.inf)
            arg = np.full((n, c), max(h0, 0) * w + max(w0, 0))
            for a in range(max(h0, 0), min(h0 + kh, h)):
                for b in range(max(w0, 0), min(w0 + kw, w)):
                    v = x[:, a, b, :].astype(np.float64)
                    take = (v > best) | np.isnan(v)
                    best = np.where(take, v, best)
                    arg = np.where(take, a * w + b, arg)
            y[:, i, j], idx[:, i, j] = best, arg
    return y, idx


def ref_max_pool_backward(g, idx, shape):
    n, h, w, c = shape
    gx = np.zeros((n, h * w, c))
    for q in np.ndindex(*g.shape):
        gx[q[0], idx[q], q[3]] += g[q]
    return gx.reshape(shape)


def ref_avg_pool(x, k, s=None, p=0, include_pad=True):
    n, h, w, c = x.shape
    kh, kw, sh, sw, ph, pw, oh, ow = _geo(h, w, k, s, p)
    y = np.empty((n, oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            h0, w0 = i * sh - ph, j * sw - pw
            a0, a1, b0, b1 = max(h0, 0), min(h0 + kh, h), max(w0, 0), min(w0 + kw, w)
            total = x[:, a0:a1, b0:b1, :].astype(np.float64).sum(axis=(1, 2))
            count = kh * kw if include_pad else (a1 - a0) * (b1 - b0)
            y[:, i, j] = total / count
    return y


def ref_avg_pool_backward(g, shape, k, s=None, p=0, include_pad=True):
    n, h, w, c = shape
    kh, kw, sh, sw, ph, pw, oh, ow = _geo(h, w, k, s, p)
    gx = np.zeros(shape)
    for i in range(oh):
        for j in range(ow):
            h0, w0 = i * sh - ph, j * sw - pw
            a0, a1, b0, b1 = max(h0, 0), min(h0 + kh, h), max(w0, 0), min(w0 + kw, w)
            count = kh * kw if include_pad else (a1 - a0) * (b1 - b0)
            gx[:, a0:a1, b0:b1, :] += (g[:, i, j, :] / count)[:, None, None, :]
    return gx


def distinct_values(rng, shape):
    """Values a permutation apart (step 0.25): no ties, and a small nudge never changes a max."""
    v = rng.permutation(int(np.prod(shape))).astype(np.float32) * 0.25
    return (v - v.mean()).reshape(shape).astype(np.float32)


# (kernel, stride, padding): disjoint, overlapping, gaps, rectangular/asymmetric, padded.
GEOMETRIES = [
    (2, None, 0), (3, 2, 1), (3, 1, 1), (2, 3, 0), (3, 3, 0), (1, 1, 0), (1, 2, 0),
    ((2, 3), (1, 2), (1, 0)), ((3, 1), (2, 1), (1, 0)), (4, 2, 2), (5, 5, 2),
]
SHAPES = [(1, 1, 1, 1), (2, 7, 5, 3), (1, 13, 13, 16), (3, 6, 9, 17), (2, 5, 8, 65), (1, 9, 7, 130)]


def _fits(shape, k, p):
    kh, kw = (k, k) if isinstance(k, int) else k
    ph, pw = (p, p) if isinstance(p, int) else p
    return shape[1] + 2 * ph >= kh and shape[2] + 2 * pw >= kw




# ---- max pooling -------------------------------------------------------------------------------


# Combinations whose window fits the padded input (the others are the error tests' business).
VALID = [(shape, geo) for shape in SHAPES for geo in GEOMETRIES if _fits(shape, geo[0], geo[2])]


@pytest.mark.parametrize("shape,geo", VALID)
def test_max_pool_matches_reference(rng, isa, shape, geo):
    k, s, p = geo
    x = rng.standard_normal(shape).astype(np.float32)
    y, idx = ops.max_pool2d(x, k, s, p, return_indices=True)
    ry, ridx = ref_max_pool(x, k, s, p)
    assert y.dtype == np.float32 and idx.dtype == np.int32
    np.testing.assert_array_equal(y, ry.astype(np.float32))
    np.testing.assert_array_equal(idx, ridx)
    np.testing.assert_array_equal(ops.max_pool2d(x, k, s, p), y)  # the path without indices

    g = rng.standard_normal(y.shape).astype(np.float32)
    gx = ops.max_pool2d_backward(g, idx, x.shape, k, s, p)
    np.testing.assert_allclose(gx, ref_max_pool_backward(g, ridx, x.shape), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("geo", GEOMETRIES)
def test_max_pool_gradient_by_finite_differences(rng, geo):
    k, s, p = geo
    x = distinct_values(rng, (2, 6, 7, 3))
    g = rng.standard_normal(ops.max_pool2d(x, k, s, p).shape)
    _, idx = ops.max_pool2d(x, k, s, p, return_indices=True)
    gx = ops.max_pool2d_backward(g.astype(np.float32), idx, x.shape, k, s, p)
    eps = 0.05
    num = np.zeros(x.shape)
    for q in np.ndindex(*x.shape):
        xp, xm = x.copy(), x.copy()
        xp[q] += eps
        xm[q] -= eps
        num[q] = (np.sum(ops.max_pool2d(xp, k, s, p) * g) - np.sum(ops.max_pool2d(xm, k, s, p) * g)) / (2 * eps)
    np.testing.assert_allclose(gx, num, rtol=1e-3, atol=1e-3)


def test_max_pool_large_batch_both_thread_counts(rng):
    x = rng.standard_normal((64, 30, 30, 32)).astype(np.float32)
    ry, ridx = ref_max_pool(x, 2)
    g = rng.standard_normal(ry.shape).astype(np.float32)
    saved = fusegrad.get_num_threads()
    try:
        for threads in (1, 2):
            fusegrad.set_num_threads(threads)
            y, idx = ops.max_pool2d(x, 2, return_indices=True)
            np.testing.assert_array_equal(y, ry.astype(np.float32))
            np.testing.assert_array_equal(idx, ridx)
            gx = ops.max_pool2d_backward(g, idx, x.shape, 2)
            np.testing.assert_array_equal(gx, ref_max_pool_backward(g, ridx, x.shape).astype(np.float32))
            # overlapping windows take the scatter path, threaded over images and channel blocks
            y3, idx3 = ops.max_pool2d(x, 3, 2, 1, return_indices=True)
            ry3, ridx3 = ref_max_pool(x, 3, 2, 1)
            np.testing.assert_array_equal(idx3, ridx3)
            g3 = np.ones(y3.shape, np.float32)
            np.testing.assert_array_equal(ops.max_pool2d_backward(g3, idx3, x.shape, 3, 2, 1),
                                          ref_max_pool_backward(g3, ridx3, x.shape).astype(np.float32))
    finally:
        fusegrad.set_num_threads(saved)


def test_max_pool_nan_inf_and_ties():
    x = np.zeros((1, 4, 4, 2), np.float32)
    x[0, 0, 1, 0] = np.nan           # NaN wins its window
    x[0, 2:, 2:, 1] = -np.inf        # an all -inf window points at its first pixel
    x[0, 2:, :2, 0] = 5.0            # ties: the first pixel in row-major order
    y, idx = ops.max_pool2d(x, 2, return_indices=True)
    assert np.isnan(y[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 1
    assert y[0, 1, 1, 1] == -np.inf and idx[0, 1, 1, 1] == 2 * 4 + 2
    assert y[0, 1, 0, 0] == 5.0 and idx[0, 1, 0, 0] == 2 * 4 + 0
    assert np.isnan(ops.max_pool2d(x, 2)[0, 0, 0, 0])


def test_max_pool_padding_is_minus_infinity():
    x = -np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3, 1)  # all negative: zero padding would win
    y, idx = ops.max_pool2d(x, 3, 1, 1, return_indices=True)
    np.testing.assert_array_equal(y[0, :, :, 0], [[-1, -1, -2], [-1, -1, -2], [-4, -4, -5]])
    assert idx.min() >= 0 and idx.max() < 9


def test_max_pool_strided_views_and_out(rng):
    base = rng.standard_normal((4, 12, 10, 6)).astype(np.float32)
    x = base[::2, ::2, :, 1:5]  # not contiguous
    ry, _ = ref_max_pool(x, 2)
    np.testing.assert_array_equal(ops.max_pool2d(x, 2), ry.astype(np.float32))
    out = np.empty(ry.shape, np.float32)
    assert ops.max_pool2d(x, 2, out=out) is out
    np.testing.assert_array_equal(out, ry.astype(np.float32))
    strided_out = np.empty((ry.shape[0], ry.shape[1], ry.shape[2], 2 * ry.shape[3]), np.float32)[..., ::2]
    ops.max_pool2d(x, 2, out=strided_out)
    np.testing.assert_array_equal(strided_out, ry.astype(np.float32))
    # transposed view: an NCHW array seen as NHWC
    xt = np.ascontiguousarray(base.transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(ops.max_pool2d(xt, 3, 2, 1), ref_max_pool(base, 3, 2, 1)[0].astype(np.float32))


def test_max_pool_zero_size():
    for shape in [(0, 4, 4, 3), (2, 4, 4, 0)]:
        x = np.zeros(shape, np.float32)
        y, idx = ops.max_pool2d(x, 2, return_indices=True)
        assert y.shape == (shape[0], 2, 2, shape[3]) and idx.shape == y.shape
        gx = ops.max_pool2d_backward(y, idx, shape, 2)
        assert gx.shape == shape


def test_max_pool_backward_accepts_int64_indices(rng):
    x = rng.standard_normal((2, 6, 6, 4)).astype(np.float32)
    _, idx = ops.max_pool2d(x, 3, 1, 1, return_indices=True)
    g = rng.standard_normal(idx.shape).astype(np.float32)
    np.testing.assert_array_equal(ops.max_pool2d_backward(g, idx.astype(np.int64), x.shape, 3, 1, 1),
                                  ops.max_pool2d_backward(g, idx, x.shape, 3, 1, 1))


@pytest.mark.parametrize("geo", [(2, None, 0), (3, 2, 1), (3, 1, 1), ((2, 3), (1, 2), (1, 0))])
def test_max_pool_matches_torch(rng, geo):
    torch = pytest.importorskip("torch")
    k, s, p = geo
    x = rng.standard_normal((3, 11, 9, 20)).astype(np.float32)
    y, idx = ops.max_pool2d(x, k, s, p, return_indices=True)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().requires_grad_()
    yt, it = torch.nn.functional.max_pool2d(xt, k, s, p, return_indices=True)
    np.testing.assert_array_equal(y, yt.detach().permute(0, 2, 3, 1).numpy())
    np.testing.assert_array_equal(idx, it.permute(0, 2, 3, 1).numpy())
    g = rng.standard_normal(y.shape).astype(np.float32)
    yt.backward(torch.from_numpy(g).permute(0, 3, 1, 2))
    np.testing.assert_allclose(ops.max_pool2d_backward(g, idx, x.shape, k, s, p),
                               xt.grad.permute(0, 2, 3, 1).numpy(), rtol=1e-6, atol=1e-6)


# ---- average pooling ---------------------------------------------------------------------------


@pytest.mark.parametrize("include_pad", [True, False])
@pytest.mark.parametrize("shape,geo", VALID)
def test_avg_pool_matches_reference(rng, isa, shape, geo, include_pad):
    k, s, p = geo
    x = rng.standard_normal(shape).astype(np.float32)
    y = ops.avg_pool2d(x, k, s, p, count_include_pad=include_pad)
    np.testing.assert_allclose(y, ref_avg_pool(x, k, s, p, include_pad), rtol=1e-5, atol=1e-6)
    g = rng.standard_normal(y.shape).astype(np.float32)
    gx = ops.avg_pool2d_backward(g, x.shape, k, s, p, count_include_pad=include_pad)
    np.testing.assert_allclose(gx, ref_avg_pool_backward(g, x.shape, k, s, p, include_pad), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("include_pad", [True, False])
@pytest.mark.parametrize("geo", [(2, None, 0), (3, 2, 1), (3, 1, 1), ((2, 3), (1, 2), (1, 0))])
def test_avg_pool_gradient_by_finite_differences(rng, geo, include_pad):
    k, s, p = geo
    x = rng.standard_normal((1, 5, 6, 2)).astype(np.float32)
    g = rng.standard_normal(ops.avg_pool2d(x, k, s, p).shape)
    gx = ops.avg_pool2d_backward(g.astype(np.float32), x.shape, k, s, p, count_include_pad=include_pad)
    eps = 0.1
    num = np.zeros(x.shape)
    for q in np.ndindex(*x.shape):
        xp, xm = x.copy(), x.copy()
        xp[q] += eps
        xm[q] -= eps
        f = lambda z: np.sum(ops.avg_pool2d(z, k, s, p, count_include_pad=include_pad) * g)  # noqa: E731
        num[q] = (f(xp) - f(xm)) / (2 * eps)
    np.testing.assert_allclose(gx, num, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("include_pad", [True, False])
@pytest.mark.parametrize("geo", [(2, None, 0), (3, 2, 1), ((2, 3), (1, 2), (1, 0))])
def test_avg_pool_matches_torch(rng, geo, include_pad):
    torch = pytest.importorskip("torch")
    k, s, p = geo
    x = rng.standard_normal((2, 10, 9, 33)).astype(np.float32)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().requires_grad_()
    yt = torch.nn.functional.avg_pool2d(xt, k, s, p, count_include_pad=include_pad)
    y = ops.avg_pool2d(x, k, s, p, count_include_pad=include_pad)
    np.testing.assert_allclose(y, yt.detach().permute(0, 2, 3, 1).numpy(), rtol=1e-5, atol=1e-6)
    g = rng.standard_normal(y.shape).astype(np.float32)
    yt.backward(torch.from_numpy(g).permute(0, 3, 1, 2))
    np.testing.assert_allclose(ops.avg_pool2d_backward(g, x.shape, k, s, p, count_include_pad=include_pad),
                               xt.grad.permute(0, 2, 3, 1).numpy(), rtol=1e-5, atol=1e-6)


def test_avg_pool_large_batch(rng):
    x = rng.standard_normal((64, 15, 15, 64)).astype(np.float32)
    np.testing.assert_allclose(ops.avg_pool2d(x, 2), ref_avg_pool(x, 2), rtol=1e-5, atol=1e-6)


# ---- global average pooling --------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 7), (4, 8, 8, 64), (3, 4, 4, 130), (64, 4, 4, 128)])
def test_global_avg_pool(rng, isa, shape):
    x = rng.standard_normal(shape).astype(np.float32)
    y = ops.global_avg_pool2d(x)
    np.testing.assert_allclose(y, x.astype(np.float64).mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    g = rng.standard_normal(y.shape).astype(np.float32)
    gx = ops.global_avg_pool2d_backward(g, x.shape)
    ref = np.broadcast_to(g[:, None, None, :] / (shape[1] * shape[2]), shape)
    np.testing.assert_allclose(gx, ref, rtol=1e-6, atol=1e-7)


def test_global_avg_pool_matches_torch_and_edge_sizes(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((5, 7, 3, 40)).astype(np.float32)
    ref = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x).permute(0, 3, 1, 2), 1)
    np.testing.assert_allclose(ops.global_avg_pool2d(x), ref.flatten(1).numpy(), rtol=1e-5, atol=1e-6)


def test_global_avg_pool_zero_size():
    assert ops.global_avg_pool2d(np.zeros((0, 3, 3, 4), np.float32)).shape == (0, 4)
    assert ops.global_avg_pool2d(np.zeros((2, 3, 3, 0), np.float32)).shape == (2, 0)
    assert np.isnan(ops.global_avg_pool2d(np.zeros((2, 0, 3, 4), np.float32))).all()
    assert ops.global_avg_pool2d_backward(np.zeros((2, 4), np.float32), (2, 0, 3, 4)).shape == (2, 0, 3, 4)


# ---- errors --------------------------------------------------------------------------------------


def test_errors_dtype():
    x64 = np.zeros((1, 4, 4, 2))
    for fn in (lambda: ops.max_pool2d(x64, 2), lambda: ops.avg_pool2d(x64, 2), lambda: ops.global_avg_pool2d(x64)):
        with pytest.raises(TypeError, match="float32"):
            fn()
    with pytest.raises(TypeError, match="grad_out"):
        ops.max_pool2d_backward(np.zeros((1, 2, 2, 2)), np.zeros((1, 2, 2, 2), np.int32), (1, 4, 4, 2), 2)
    with pytest.raises(TypeError, match="integer"):
        ops.max_pool2d_backward(np.zeros((1, 2, 2, 2), np.float32), np.zeros((1, 2, 2, 2), np.float32),
                                (1, 4, 4, 2), 2)
    with pytest.raises(TypeError, match="NumPy array"):
        ops.max_pool2d([[1.0]], 2)


def test_errors_shapes_and_sizes():
    x = np.zeros((1, 4, 4, 2), np.float32)
    with pytest.raises(ValueError, match="4-D"):
        ops.max_pool2d(np.zeros((4, 4, 2), np.float32), 2)
    with pytest.raises(ValueError, match="4-D"):
        ops.avg_pool2d(np.zeros((1, 1, 4, 4, 2), np.float32), 2)
    with pytest.raises(ValueError, match="4-D"):
        ops.global_avg_pool2d(np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="stride must be >= 1"):
        ops.max_pool2d(x, 2, 0)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        ops.avg_pool2d(x, 2, (1, -1))
    with pytest.raises(ValueError, match="kernel_size must be >= 1"):
        ops.max_pool2d(x, 0)
    with pytest.raises(ValueError, match="padding must be >= 0"):
        ops.max_pool2d(x, 2, 1, -1)
    with pytest.raises(ValueError, match="at most half"):
        ops.max_pool2d(x, 2, 1, 2)
    with pytest.raises(ValueError, match="larger than the padded input"):
        ops.max_pool2d(x, 5)
    with pytest.raises(ValueError, match="larger than the padded input"):
        ops.avg_pool2d(x, (2, 7), 1, (0, 1))
    with pytest.raises(TypeError, match="kernel_size must be an int or a pair"):
        ops.max_pool2d(x, "2")
    with pytest.raises(TypeError, match="kernel_size must be an int or a pair"):
        ops.max_pool2d(x, (2, 2, 2))
    with pytest.raises(TypeError, match="stride must be an int or a pair"):
        ops.max_pool2d(x, 2, 1.5)


def test_errors_backward_arguments():
    g = np.zeros((1, 2, 2, 2), np.float32)
    idx = np.zeros((1, 2, 2, 2), np.int32)
    with pytest.raises(ValueError, match="grad_out has shape"):
        ops.max_pool2d_backward(g, idx, (1, 6, 6, 2), 2)
    with pytest.raises(ValueError, match="grad_out has shape"):
        ops.avg_pool2d_backward(g, (1, 4, 4, 3), 2)
    with pytest.raises(ValueError, match="grad_out has shape"):
        ops.global_avg_pool2d_backward(g, (1, 4, 4, 2))
    with pytest.raises(ValueError, match="indices has shape"):
        ops.max_pool2d_backward(g, np.zeros((1, 2, 2, 3), np.int32), (1, 4, 4, 2), 2)
    with pytest.raises(ValueError, match="input_shape must be 4 sizes"):
        ops.max_pool2d_backward(g, idx, (4, 4, 2), 2)
    with pytest.raises(ValueError, match="negative"):
        ops.avg_pool2d_backward(g, (1, -4, 4, 2), 2)
    with pytest.raises(TypeError, match="input_shape"):
        ops.avg_pool2d_backward(g, 5, 2)


@pytest.mark.parametrize("geo", [(2, None, 0), (3, 1, 1)])  # the disjoint and the overlapping path
def test_errors_bad_indices(rng, geo):
    k, s, p = geo
    x = rng.standard_normal((2, 6, 6, 3)).astype(np.float32)
    _, idx = ops.max_pool2d(x, k, s, p, return_indices=True)
    g = np.ones(idx.shape, np.float32)
    for bad in (-1, 36, 10 ** 6):
        wrong = idx.copy()
        wrong[1, 0, 0, 2] = bad
        with pytest.raises(ValueError, match="indices"):
            ops.max_pool2d_backward(g, wrong, x.shape, k, s, p)
    with pytest.raises(ValueError, match="out of range"):
        ops.max_pool2d_backward(g, np.full(idx.shape, 2 ** 40, np.int64), x.shape, k, s, p)


def test_errors_index_outside_its_window():
    x = np.zeros((1, 4, 4, 1), np.float32)
    idx = np.zeros((1, 2, 2, 1), np.int32)  # every window names pixel 0: only the first is right
    with pytest.raises(ValueError, match="3 indices"):
        ops.max_pool2d_backward(np.ones((1, 2, 2, 1), np.float32), idx, x.shape, 2)


def test_errors_out():
    x = np.zeros((1, 4, 4, 2), np.float32)
    with pytest.raises(ValueError, match="expected shape"):
        ops.max_pool2d(x, 2, out=np.empty((1, 3, 3, 2), np.float32))
    ro = np.empty((1, 2, 2, 2), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        ops.avg_pool2d(x, 2, out=ro)
    with pytest.raises(TypeError, match="out"):
        ops.global_avg_pool2d(x, out=np.empty((1, 2)))


def test_compiled_guards_reject_inconsistent_arrays():
    """The bindings re-check what reaches a kernel even when called directly."""
    x = np.zeros((1, 4, 4, 2), np.float32)
    with pytest.raises(ValueError, match="shape does not match"):
        _cpu.max_pool2d_forward(x, np.empty((1, 3, 3, 2), np.float32), None, 2, 2, 2, 2, 0, 0)
    with pytest.raises(ValueError, match="larger than the padded input"):
        _cpu.avg_pool2d_forward(x, np.empty((1, 1, 1, 2), np.float32), 9, 9, 1, 1, 0, 0, True)
    with pytest.raises(ValueError, match="C-contiguous"):
        _cpu.max_pool2d_forward(x[:, :, ::2], np.empty((1, 2, 1, 2), np.float32), None, 2, 2, 2, 2, 0, 0)
    with pytest.raises(ValueError, match="indices"):
        _cpu.max_pool2d_backward(np.ones((1, 3, 3, 2), np.float32), np.full((1, 3, 3, 2), 99, np.int32),
                                 np.empty_like(x), 2, 2, 1, 1, 0, 0)


def test_huge_windows_average_to_finite_values():
    # A 2^32 x 2^32 window's area does not fit int64: the divisor must still be right, not inf.
    y = ops.avg_pool2d(np.ones((1, 1, 1, 1), np.float32), 2**32, 1, 2**31)
    np.testing.assert_allclose(y, np.full(y.shape, 2.0**-64, np.float32), rtol=1e-6)


def test_global_average_of_a_large_plane_is_accurate():
    # Summed in blocks: a single running float sum over 2048 x 2048 pixels lost three digits.
    x = np.random.default_rng(3).random((1, 2048, 2048, 3), dtype=np.float32)
    ref = x.astype(np.float64).mean(axis=(1, 2))
    assert np.abs(ops.global_avg_pool2d(x) - ref).max() / np.abs(ref).max() < 2e-7


def test_shape_arguments_must_be_ints():
    with pytest.raises(TypeError, match="input_shape must be a tuple of ints"):
        ops.avg_pool2d_backward(np.ones((1, 2, 2, 1), np.float32), (1, 4.0, 4, 1), 2)
    with pytest.raises(ValueError, match="stride 9223372036854775808 is out of range"):
        ops.max_pool2d(np.ones((1, 4, 4, 1), np.float32), 2, 2**63)
    with pytest.raises(TypeError, match="return_indices must be True or False"):
        ops.max_pool2d(np.ones((1, 4, 4, 1), np.float32), 2, return_indices="yes")
