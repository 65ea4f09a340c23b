"""The CUDA pooling kernels (cuda/pool/), on the host SIMT emulator every run and on a GPU where
there is one (the cuda_device fixture), against float64 references written here and against the
CPU kernels: channel counts around the float4 width, misaligned views (the scalar path), overlapping
and disjoint windows, padding, ties and NaN, empty sizes. Shapes stay small: the emulator runs every
thread as a fiber."""
import numpy as np
import pytest

from fusegrad import ops

CHANNELS = [1, 3, 4, 5, 63, 64, 65]
# (kernel_size, stride, padding): disjoint, overlapping with padding, asymmetric, dense, gapped,
# gapped rows and disjoint columns with padding.
GEOMETRIES = [(2, None, 0), (3, 2, 1), ((3, 2), (1, 2), (1, 0)), (3, 1, 1), (2, 3, 0), ((2, 3), 3, 1)]


# ---- float64 references -------------------------------------------------------------------------


def _geo(h, w, k, s, p):
    kh, kw = (k, k) if isinstance(k, int) else k
    s = k if s is None else s
    sh, sw = (s, s) if isinstance(s, int) else s
    ph, pw = (p, p) if isinstance(p, int) else p
    return kh, kw, sh, sw, ph, pw, (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1


def _windows(shape, k, s, p):
    """(i, j, a0, a1, b0, b1, kh * kw) of every output pixel: its window clipped to the input."""
    _, h, w, _ = shape
    kh, kw, sh, sw, ph, pw, oh, ow = _geo(h, w, k, s, p)
    for i in range(oh):
        for j in range(ow):
            h0, w0 = i * sh - ph, j * sw - pw
            yield i, j, max(h0, 0), min(h0 + kh, h), max(w0, 0), min(w0 + kw, w), kh * kw


def ref_max_pool(x, k, s=None, p=0):
    """Values and indices: first maximum in row-major window order, NaN wins."""
    n, h, w, c = x.shape
    _, _, _, _, _, _, oh, ow = _geo(h, w, k, s, p)
    y, idx = np.empty((n, oh, ow, c)), np.empty((n, oh, ow, c), np.int64)
    for i, j, a0, a1, b0, b1, _ in _windows(x.shape, k, s, p):
        best, arg = np.full((n, c), -np.inf), np.full((n, c), a0 * w + b0)
        for a in range(a0, a1):
            for b in range(b0, b1):
                v = x[:, a, b, :].astype(np.float64)
                take = (v > best) | np.isnan(v)
                best, arg = np.where(take, v, best), np.where(take, a * w + b, arg)
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
    _, _, _, _, _, _, oh, ow = _geo(h, w, k, s, p)
    y = np.empty((n, oh, ow, c))
    for i, j, a0, a1, b0, b1, area in _windows(x.shape, k, s, p):
        count = area if include_pad else (a1 - a0) * (b1 - b0)
        y[:, i, j] = x[:, a0:a1, b0:b1, :].astype(np.float64).sum(axis=(1, 2)) / count
    return y


def ref_avg_pool_backward(g, shape, k, s=None, p=0, include_pad=True):
    gx = np.zeros(shape)
    for i, j, a0, a1, b0, b1, area in _windows(shape, k, s, p):
        count = area if include_pad else (a1 - a0) * (b1 - b0)
        gx[:, a0:a1, b0:b1, :] += (g[:, i, j, :].astype(np.float64) / count)[:, None, None, :]
    return gx


def distinct_values(rng, shape):
    """Values a permutation apart: no ties."""
    v = rng.permutation(int(np.prod(shape))).astype(np.float32) * 0.25
    return (v - v.mean()).reshape(shape).astype(np.float32)


# ---- max pooling ------------------------------------------------------------------------------------


@pytest.mark.parametrize("c", CHANNELS)
@pytest.mark.parametrize("geo", GEOMETRIES[:2])
def test_max_pool_channels(cuda_device, rng, c, geo):
    x = distinct_values(rng, (2, 5, 6, c))
    (y, ind), kernels = cuda_device.run(lambda: ops.max_pool2d(cuda_device.array(x), *geo, return_indices=True))
    cuda_device.assert_ran(kernels, f"max_forward_kernel<{4 if c % 4 == 0 else 1}, true>")
    ref_y, ref_ind = ref_max_pool(x, *geo)
    np.testing.assert_array_equal(y, ref_y.astype(np.float32))
    np.testing.assert_array_equal(ind, ref_ind)
    with cuda_device.cpu():
        cpu_y, cpu_ind = ops.max_pool2d(x, *geo, return_indices=True)
    np.testing.assert_array_equal(y, cpu_y)
    np.testing.assert_array_equal(ind, cpu_ind)

    g = rng.standard_normal(y.shape).astype(np.float32)
    gx, kernels = cuda_device.run(lambda: ops.max_pool2d_backward(
        cuda_device.array(g), cuda_device.array(ind), x.shape, *geo, check_indices=True))
    cuda_device.assert_ran(kernels, f"max_backward_kernel<{4 if c % 4 == 0 else 1}, true>")
    np.testing.assert_allclose(gx, ref_max_pool_backward(g, ref_ind, x.shape), rtol=1e-6, atol=1e-6)
    # The windows are added in the CPU scatter's order: the same bits.
    with cuda_device.cpu():
        np.testing.assert_array_equal(gx, ops.max_pool2d_backward(g, cpu_ind, x.shape, *geo))


@pytest.mark.parametrize("geo", GEOMETRIES)
def test_max_pool_geometries(cuda_device, rng, geo):
    x = distinct_values(rng, (2, 7, 6, 8))
    (y, ind), _ = cuda_device.run(lambda: ops.max_pool2d(cuda_device.array(x), *geo, return_indices=True))
    ref_y, ref_ind = ref_max_pool(x, *geo)
    np.testing.assert_array_equal(y, ref_y.astype(np.float32))
    np.testing.assert_array_equal(ind, ref_ind)
    g = rng.standard_normal(y.shape).astype(np.float32)
    gx, kernels = cuda_device.run(lambda: ops.max_pool2d_backward(cuda_device.array(g), cuda_device.array(ind),
                                                                 x.shape, *geo))
    cuda_device.assert_ran(kernels, "max_backward_kernel<4, false>")
    with cuda_device.cpu():
        np.testing.assert_array_equal(gx, ops.max_pool2d_backward(g, ind, x.shape, *geo))
    np.testing.assert_allclose(gx, ref_max_pool_backward(g, ref_ind, x.shape), rtol=1e-6, atol=1e-6)


def test_max_pool_ties_nan_and_infinities(cuda_device):
    x = np.zeros((1, 4, 4, 5), np.float32)
    x[0, 0, 1, 1] = np.nan          # NaN wins its window
    x[0, 1, 0, 1] = np.nan          # ... and a later NaN takes over
    x[..., 2] = -np.inf             # all -inf: the window's first pixel
    x[0, 2:, 2:, 3] = 7.0           # ties: the first in row-major order
    x[0, 3, 3, 4] = np.inf
    for geo in [(2, None, 0), (3, 1, 1)]:
        (y, ind), _ = cuda_device.run(lambda: ops.max_pool2d(cuda_device.array(x), *geo, return_indices=True))
        ref_y, ref_ind = ref_max_pool(x, *geo)
        np.testing.assert_array_equal(y, ref_y.astype(np.float32))
        np.testing.assert_array_equal(ind, ref_ind)
        with cuda_device.cpu():
            cpu_y, cpu_ind = ops.max_pool2d(x, *geo, return_indices=True)
        np.testing.assert_array_equal(ind, cpu_ind)


def test_max_pool_misaligned_views_take_the_scalar_path(cuda_device, rng):
    x = distinct_values(rng, (2, 4, 4, 8))
    xd = cuda_device.misaligned(x)
    (y, ind), kernels = cuda_device.run(lambda: ops.max_pool2d(xd, 2, return_indices=True))
    cuda_device.assert_ran(kernels, "max_forward_kernel<1, true>")
    with cuda_device.cpu():
        cpu_y, cpu_ind = ops.max_pool2d(x, 2, return_indices=True)
    np.testing.assert_array_equal(y, cpu_y)
    np.testing.assert_array_equal(ind, cpu_ind)
    g = rng.standard_normal(y.shape).astype(np.float32)
    gx, kernels = cuda_device.run(lambda: ops.max_pool2d_backward(cuda_device.misaligned(g),
                                                                 cuda_device.array(ind), x.shape, 2))
    cuda_device.assert_ran(kernels, "max_backward_kernel<1, false>")
    with cuda_device.cpu():
        np.testing.assert_array_equal(gx, ops.max_pool2d_backward(g, cpu_ind, x.shape, 2))


# The backward kernels write each output pixel's cell of the input (pool.cu): windows that tile the
# input, with a partial last window (ceil mode), input rows and columns past the last window, gaps,
# padding; and overlapping ones, up to three windows per axis on a pixel.
CELLS = [((2, None, 0), False), ((2, None, 0), True), ((3, None, 1), True), (((2, 3), (3, 4), (1, 0)), True),
         ((1, 3, 0), False), ((3, 2, 1), True), ((3, 2, 0), True), (((5, 3), (2, 1), (2, 1)), True)]


@pytest.mark.parametrize("c", [4, 5])
@pytest.mark.parametrize("geo,ceil", CELLS)
def test_backward_cells(cuda_device, rng, geo, ceil, c):
    vec = 4 if c % 4 == 0 else 1
    x = distinct_values(rng, (2, 7, 9, c))
    with cuda_device.cpu():
        y, ind = ops.max_pool2d(x, *geo, ceil_mode=ceil, return_indices=True)
    g = rng.standard_normal(y.shape).astype(np.float32)
    gx, kernels = cuda_device.run(lambda: ops.max_pool2d_backward(
        cuda_device.array(g), cuda_device.array(ind), x.shape, *geo, ceil_mode=ceil, check_indices=True))
    cuda_device.assert_ran(kernels, f"max_backward_kernel<{vec}, true>")
    with cuda_device.cpu():
        cpu = ops.max_pool2d_backward(g, ind, x.shape, *geo, ceil_mode=ceil)
    np.testing.assert_array_equal(gx.view(np.uint32), cpu.view(np.uint32))  # bit for bit
    for include_pad in (True, False):
        gx, kernels = cuda_device.run(lambda: ops.avg_pool2d_backward(
            cuda_device.array(g), x.shape, *geo, ceil_mode=ceil, count_include_pad=include_pad))
        cuda_device.assert_ran(kernels, f"avg_backward_kernel<{vec}>")
        with cuda_device.cpu():
            cpu = ops.avg_pool2d_backward(g, x.shape, *geo, ceil_mode=ceil, count_include_pad=include_pad)
        np.testing.assert_array_equal(gx.view(np.uint32), cpu.view(np.uint32))


def test_max_pool_strided_input_and_out(cuda_device, rng):
    x = distinct_values(rng, (2, 6, 6, 12))
    xd = cuda_device.array(x)[:, :, :, ::2]  # not contiguous: copied first
    out = cuda_device.array(np.zeros((2, 3, 3, 6), np.float32))
    result, _ = cuda_device.run(lambda: ops.max_pool2d(xd, 2, out=out))
    np.testing.assert_array_equal(result, ref_max_pool(x[..., ::2], 2)[0].astype(np.float32))
    np.testing.assert_array_equal(cuda_device.host(out), result)
    # A non-contiguous out is filled through a temporary.
    big = cuda_device.array(np.zeros((2, 3, 3, 12), np.float32))
    ops.max_pool2d(xd, 2, out=big[..., ::2])
    np.testing.assert_array_equal(cuda_device.host(big)[..., ::2], result)


def test_max_pool_empty_sizes(cuda_device):
    for shape in [(0, 4, 4, 3), (2, 4, 4, 0)]:
        x = np.zeros(shape, np.float32)
        (y, ind), kernels = cuda_device.run(lambda: ops.max_pool2d(cuda_device.array(x), 2, return_indices=True))
        assert y.shape == ind.shape == (shape[0], 2, 2, shape[3]) and kernels in (None, [])
        gx, _ = cuda_device.run(lambda: ops.max_pool2d_backward(cuda_device.array(y), cuda_device.array(ind),
                                                               shape, 2, check_indices=True))
        assert gx.shape == shape
    # H = 0 with padding: each window holds no pixel; the CPU's values and indices.
    x = np.zeros((2, 0, 3, 4), np.float32)
    (y, ind), _ = cuda_device.run(lambda: ops.max_pool2d(cuda_device.array(x), 2, 1, 1, return_indices=True))
    with cuda_device.cpu():
        cpu_y, cpu_ind = ops.max_pool2d(x, 2, 1, 1, return_indices=True)
    np.testing.assert_array_equal(y, cpu_y)
    np.testing.assert_array_equal(ind, cpu_ind)


@pytest.mark.parametrize("geo", [(2, None, 0), (3, 2, 1)])
def test_max_pool_backward_indices_outside_their_window(cuda_device, rng, geo):
    x = distinct_values(rng, (1, 5, 5, 4))
    with cuda_device.cpu():
        y, ind = ops.max_pool2d(x, *geo, return_indices=True)
    g = rng.standard_normal(y.shape).astype(np.float32)
    bad = ind.copy()
    bad[0, 0, 0, 1] = 24   # the last pixel: outside the first window
    bad[0, 0, 0, 2] = -1
    with pytest.raises(ValueError, match="2 indices do not name a pixel of their pooling window"):
        ops.max_pool2d_backward(cuda_device.array(g), cuda_device.array(bad), x.shape, *geo, check_indices=True)
    # Unchecked, they contribute nothing and nothing is written out of bounds.
    gx = cuda_device.host(ops.max_pool2d_backward(cuda_device.array(g), cuda_device.array(bad), x.shape, *geo))
    g_kept = g.copy()
    g_kept[0, 0, 0, 1:3] = 0
    np.testing.assert_allclose(gx, ref_max_pool_backward(g_kept, ind, x.shape), rtol=1e-6, atol=1e-6)


def test_max_backward_ignores_an_index_into_its_cells_uncovered_end(cuda_device, rng):
    x = distinct_values(rng, (1, 5, 5, 4))
    with cuda_device.cpu():
        y, ind = ops.max_pool2d(x, 2, return_indices=True)
    g = rng.standard_normal(y.shape).astype(np.float32)
    bad = ind.copy()
    bad[0, 1, 1, 0] = 24  # pixel (4, 4): in the last cell, which writes it, but in no window
    with pytest.raises(ValueError, match="1 indices do not name a pixel of their pooling window"):
        ops.max_pool2d_backward(cuda_device.array(g), cuda_device.array(bad), x.shape, 2, check_indices=True)
    gx = cuda_device.host(ops.max_pool2d_backward(cuda_device.array(g), cuda_device.array(bad), x.shape, 2))
    g_kept = g.copy()
    g_kept[0, 1, 1, 0] = 0
    np.testing.assert_array_equal(gx, ref_max_pool_backward(g_kept, ind, x.shape).astype(np.float32))


def test_max_pool_backward_int64_indices_and_device_mismatch(cuda_device, rng):
    x = distinct_values(rng, (1, 4, 4, 4))
    with cuda_device.cpu():
        y, ind = ops.max_pool2d(x, 2, return_indices=True)
        want = ops.max_pool2d_backward(y, ind, x.shape, 2)
    gx = ops.max_pool2d_backward(cuda_device.array(y), cuda_device.array(ind.astype(np.int64)), x.shape, 2)
    np.testing.assert_array_equal(cuda_device.host(gx), want)
    with pytest.raises(ValueError, match="out of range"):
        ops.max_pool2d_backward(cuda_device.array(y), cuda_device.array(ind.astype(np.int64) + 16), x.shape, 2)
    if cuda_device.kind == "gpu":  # a NumPy array beside a GPU array (the emulator takes NumPy arrays)
        with pytest.raises(ValueError, match="same device"):
            ops.max_pool2d_backward(cuda_device.array(y), ind, x.shape, 2)


# ---- average pooling ----------------------------------------------------------------------------------


@pytest.mark.parametrize("include_pad", [True, False])
@pytest.mark.parametrize("geo", GEOMETRIES)
def test_avg_pool(cuda_device, rng, geo, include_pad):
    x = rng.standard_normal((2, 7, 6, 5)).astype(np.float32)
    y, kernels = cuda_device.run(lambda: ops.avg_pool2d(cuda_device.array(x), *geo,
                                                       count_include_pad=include_pad))
    cuda_device.assert_ran(kernels, "avg_forward_kernel<1>")
    np.testing.assert_allclose(y, ref_avg_pool(x, *geo, include_pad=include_pad), rtol=1e-5, atol=1e-6)
    with cuda_device.cpu():
        np.testing.assert_allclose(y, ops.avg_pool2d(x, *geo, count_include_pad=include_pad), rtol=1e-6, atol=1e-7)
    g = rng.standard_normal(y.shape).astype(np.float32)
    gx, kernels = cuda_device.run(lambda: ops.avg_pool2d_backward(cuda_device.array(g), x.shape, *geo,
                                                                 count_include_pad=include_pad))
    cuda_device.assert_ran(kernels, "avg_backward_kernel<1>")
    np.testing.assert_allclose(gx, ref_avg_pool_backward(g, x.shape, *geo, include_pad=include_pad),
                               rtol=1e-5, atol=1e-6)
    with cuda_device.cpu():
        np.testing.assert_allclose(gx, ops.avg_pool2d_backward(g, x.shape, *geo, count_include_pad=include_pad),
                                   rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("c", CHANNELS)
def test_avg_pool_channels(cuda_device, rng, c):
    x = rng.standard_normal((1, 5, 5, c)).astype(np.float32)
    vec = 4 if c % 4 == 0 else 1
    y, kernels = cuda_device.run(lambda: ops.avg_pool2d(cuda_device.array(x), 3, 2, 1, count_include_pad=False))
    cuda_device.assert_ran(kernels, f"avg_forward_kernel<{vec}>")
    np.testing.assert_allclose(y, ref_avg_pool(x, 3, 2, 1, include_pad=False), rtol=1e-5, atol=1e-6)
    g = rng.standard_normal(y.shape).astype(np.float32)
    gx, kernels = cuda_device.run(lambda: ops.avg_pool2d_backward(cuda_device.array(g), x.shape, 3, 2, 1))
    cuda_device.assert_ran(kernels, f"avg_backward_kernel<{vec}>")
    np.testing.assert_allclose(gx, ref_avg_pool_backward(g, x.shape, 3, 2, 1), rtol=1e-5, atol=1e-6)


def test_avg_pool_misaligned_and_empty(cuda_device, rng):
    x = rng.standard_normal((2, 4, 4, 8)).astype(np.float32)
    y, kernels = cuda_device.run(lambda: ops.avg_pool2d(cuda_device.misaligned(x), 2))
    cuda_device.assert_ran(kernels, "avg_forward_kernel<1>")
    np.testing.assert_allclose(y, ref_avg_pool(x, 2), rtol=1e-5, atol=1e-7)
    for shape in [(0, 4, 4, 3), (2, 4, 4, 0)]:
        assert cuda_device.host(ops.avg_pool2d(cuda_device.array(np.zeros(shape, np.float32)), 2)).shape == \
            (shape[0], 2, 2, shape[3])
        g = cuda_device.array(np.zeros((shape[0], 2, 2, shape[3]), np.float32))
        assert cuda_device.host(ops.avg_pool2d_backward(g, shape, 2)).shape == shape
    x = np.zeros((1, 0, 3, 4), np.float32)  # H = 0 with padding: the CPU's values (0, or NaN without pad)
    for include_pad in (True, False):
        y = cuda_device.host(ops.avg_pool2d(cuda_device.array(x), 2, 1, 1, count_include_pad=include_pad))
        with cuda_device.cpu():
            np.testing.assert_array_equal(y, ops.avg_pool2d(x, 2, 1, 1, count_include_pad=include_pad))


# ---- global average pooling ----------------------------------------------------------------------------


@pytest.mark.parametrize("c", CHANNELS)
def test_global_avg_pool(cuda_device, rng, c):
    x = rng.standard_normal((3, 3, 5, c)).astype(np.float32)
    vec = 4 if c % 4 == 0 else 1
    y, kernels = cuda_device.run(lambda: ops.global_avg_pool2d(cuda_device.array(x)))
    cuda_device.assert_ran(kernels, f"global_avg_forward_kernel<{vec}>")
    np.testing.assert_allclose(y, x.astype(np.float64).mean(axis=(1, 2)), rtol=1e-6, atol=1e-7)
    g = rng.standard_normal((3, c)).astype(np.float32)
    gx, kernels = cuda_device.run(lambda: ops.global_avg_pool2d_backward(cuda_device.array(g), x.shape))
    cuda_device.assert_ran(kernels, f"global_avg_backward_kernel<{vec}>")
    with cuda_device.cpu():
        np.testing.assert_array_equal(gx, ops.global_avg_pool2d_backward(g, x.shape))


def test_global_avg_pool_splits_large_planes(cuda_device, rng):
    # One image with a 1024-pixel plane: the plane is split over blocks, partial sums added in order.
    x = (rng.standard_normal((1, 32, 32, 8)) + 100).astype(np.float32)
    y, kernels = cuda_device.run(lambda: ops.global_avg_pool2d(cuda_device.array(x)))
    cuda_device.assert_ran(kernels, "global_avg_forward_kernel<4>", "global_avg_finish_kernel")
    np.testing.assert_allclose(y, x.astype(np.float64).mean(axis=(1, 2)), rtol=1e-7)
    y2, _ = cuda_device.run(lambda: ops.global_avg_pool2d(cuda_device.misaligned(x)))
    np.testing.assert_array_equal(y, y2)


def test_global_avg_pool_empty_sizes(cuda_device):
    y = cuda_device.host(ops.global_avg_pool2d(cuda_device.array(np.zeros((2, 0, 3, 4), np.float32))))
    assert y.shape == (2, 4) and np.isnan(y).all()
    assert cuda_device.host(ops.global_avg_pool2d(cuda_device.array(np.zeros((0, 3, 3, 4), np.float32)))).shape \
        == (0, 4)
    gx = ops.global_avg_pool2d_backward(cuda_device.array(np.ones((2, 4), np.float32)), (2, 0, 3, 4))
    assert cuda_device.host(gx).shape == (2, 0, 3, 4)


def test_global_avg_pool_out(cuda_device, rng):
    x = rng.standard_normal((2, 3, 3, 4)).astype(np.float32)
    out = cuda_device.array(np.zeros((2, 4), np.float32))
    assert ops.global_avg_pool2d(cuda_device.array(x), out=out) is out
    np.testing.assert_allclose(cuda_device.host(out), x.astype(np.float64).mean(axis=(1, 2)), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="expected shape"):
        ops.global_avg_pool2d(cuda_device.array(x), out=cuda_device.array(np.zeros((2, 5), np.float32)))
