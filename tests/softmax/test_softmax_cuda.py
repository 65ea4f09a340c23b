"""The CUDA softmax family (cuda/softmax/), on the host SIMT emulator every run and on a GPU where
there is one (the cuda_device fixture), against float64 references written here and against the
CPU kernels: rows of length 1, 31/32/33, 1023/1024/1025 and longer, non-last axes, in place, NaN
and infinities; cross-entropy with each reduction and smoothing and bad labels; BCE 0-d and empty.
Shapes stay small: the emulator runs every thread as a fiber."""
import numpy as np
import pytest

from fusegrad import ops

# ---- float64 references --------------------------------------------------------------------------


def ref_log_softmax(x, axis=-1):
    x = x.astype(np.float64)
    m = np.max(x, axis=axis, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


def ref_softmax(x, axis=-1):
    return np.exp(ref_log_softmax(x, axis))


def ref_xent(x, labels, reduction="mean", smoothing=0.0):
    """(loss, d loss / d logits) as PyTorch defines cross_entropy with label_smoothing."""
    n, c = x.shape
    logp = ref_log_softmax(x)
    target = np.full((n, c), smoothing / c)
    target[np.arange(n), labels] += 1 - smoothing
    rows, grad = -(target * logp).sum(axis=1), np.exp(logp) - target
    if reduction == "none":
        return rows, grad
    return (rows.sum(), grad) if reduction == "sum" else (rows.mean(), grad / n)


def ref_bce(x, t, reduction="mean"):
    x, t = x.astype(np.float64), t.astype(np.float64)
    loss = np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))
    grad = 1 / (1 + np.exp(-x)) - t
    if reduction == "none":
        return loss, grad
    return (loss.sum(), grad) if reduction == "sum" else (loss.mean(), grad / max(x.size, 1))


def logits(rng, shape, scale=3.0):
    return np.asarray(rng.standard_normal(shape) * scale, dtype=np.float32)


# Row lengths around the warp (32), the register limit of the warp kernel (1024), and long rows
# cached in shared memory (up to 16384) or not, with the kernel each one runs (the launch log
# names a kernel as written at its launch site: the warp kernels' sizes are template names there).
WARP = "softmax_warp_forward"
ROWS = [(5, 1, WARP), (4, 31, WARP), (4, 32, WARP), (3, 33, WARP), (3, 10, WARP), (2, 1023, WARP),
        (2, 1024, WARP), (2, 1025, "softmax_block_forward<1, true"), (2, 3000, "softmax_block_forward<4, true"),
        (1, 16384, "softmax_block_forward<4, true"), (1, 16500, "softmax_block_forward<4, false")]


# ---- softmax / log-softmax ----------------------------------------------------------------------------


@pytest.mark.parametrize("rows,length,kernel", ROWS)
@pytest.mark.parametrize("log", [False, True])
def test_softmax_rows(cuda_device, rng, rows, length, kernel, log):
    x = logits(rng, (rows, length))
    fn = ops.log_softmax if log else ops.softmax
    y, kernels = cuda_device.run(lambda: fn(cuda_device.array(x)))
    cuda_device.assert_ran(kernels, kernel)
    ref = ref_log_softmax(x) if log else ref_softmax(x)
    np.testing.assert_allclose(y, ref, rtol=2e-5, atol=1e-6 if log else 1e-7)
    with cuda_device.cpu():
        np.testing.assert_allclose(y, fn(x), rtol=2e-5, atol=1e-6 if log else 1e-7)

    g = rng.standard_normal(x.shape).astype(np.float32)
    back = ops.log_softmax_backward if log else ops.softmax_backward
    dx, kernels = cuda_device.run(lambda: back(cuda_device.array(g), cuda_device.array(y)))
    cuda_device.assert_ran(kernels, "softmax_warp_backward" if length <= 1024 else "softmax_block_backward")
    y64 = ref.astype(np.float64)
    if log:
        ref_dx = g - np.exp(y64) * g.sum(axis=-1, keepdims=True)
    else:
        ref_dx = y64 * (g - (g * y64).sum(axis=-1, keepdims=True))
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-4, atol=1e-5 if log else 1e-6)


AXES = [((4, 5, 6), 0), ((4, 5, 6), 1), ((3, 7, 33), 1), ((2, 40, 3), 1), ((10, 3), 0), ((1, 1, 1), 1),
        ((37, 2), 0), ((300, 40), 0)]


@pytest.mark.parametrize("shape,axis", AXES)
@pytest.mark.parametrize("log", [False, True])
def test_softmax_any_axis(cuda_device, rng, shape, axis, log):
    x = logits(rng, shape)
    fn = ops.log_softmax if log else ops.softmax
    y, kernels = cuda_device.run(lambda: fn(cuda_device.array(x), axis))
    inner = int(np.prod(shape[axis + 1:]))
    cuda_device.assert_ran(kernels, "softmax_column_forward" if inner > 1 else "softmax_warp_forward")
    ref = ref_log_softmax(x, axis) if log else ref_softmax(x, axis)
    np.testing.assert_allclose(y, ref, rtol=2e-5, atol=1e-6)
    g = rng.standard_normal(shape).astype(np.float32)
    back = ops.log_softmax_backward if log else ops.softmax_backward
    dx, kernels = cuda_device.run(lambda: back(cuda_device.array(g), cuda_device.array(y), axis))
    cuda_device.assert_ran(kernels, "softmax_column_backward" if inner > 1 else "softmax_warp_backward")
    with cuda_device.cpu():
        np.testing.assert_allclose(dx, back(g, y, axis), rtol=1e-4, atol=1e-5)


def test_softmax_large_logits_nan_and_infinities(cuda_device):
    x = np.array([[1000.0, 1001.0, 999.0, -1000.0],
                  [np.nan, 1.0, 2.0, 3.0],
                  [-np.inf, 0.0, 1.0, -np.inf],
                  [-np.inf, -np.inf, -np.inf, -np.inf],
                  [np.inf, 1.0, 2.0, 3.0]], np.float32)
    for log in (False, True):
        fn = ops.log_softmax if log else ops.softmax
        for arr, axis in ((x, -1), (np.ascontiguousarray(x.T), 0), (np.repeat(x, 300, axis=1), -1)):
            y = cuda_device.host(fn(cuda_device.array(arr), axis))
            with cuda_device.cpu():
                np.testing.assert_allclose(y, fn(arr, axis), rtol=1e-5, atol=1e-6)  # NaN where the CPU has NaN
        np.testing.assert_allclose(cuda_device.host(fn(cuda_device.array(x[:1])))[0],
                                   (ref_log_softmax(x[:1]) if log else ref_softmax(x[:1]))[0], rtol=1e-5, atol=1e-7)


def test_softmax_in_place_out_strided_and_misaligned(cuda_device, rng):
    x = logits(rng, (6, 40))
    xd = cuda_device.array(x)
    assert ops.softmax(xd, out=xd) is xd  # in place
    np.testing.assert_allclose(cuda_device.host(xd), ref_softmax(x), rtol=2e-5, atol=1e-7)
    xd = cuda_device.array(x)
    out = cuda_device.array(np.zeros((6, 20), np.float32))
    ops.log_softmax(xd[:, ::2], out=out)  # strided input: copied first
    np.testing.assert_allclose(cuda_device.host(out), ref_log_softmax(x[:, ::2]), rtol=2e-5, atol=1e-6)
    long_rows = logits(rng, (2, 1028))
    y, kernels = cuda_device.run(lambda: ops.softmax(cuda_device.misaligned(long_rows)))
    cuda_device.assert_ran(kernels, "softmax_block_forward<1, true")
    np.testing.assert_allclose(y, ref_softmax(long_rows), rtol=2e-5, atol=1e-8)
    g = rng.standard_normal(long_rows.shape).astype(np.float32)
    dx, kernels = cuda_device.run(lambda: ops.softmax_backward(cuda_device.misaligned(g), cuda_device.array(y)))
    cuda_device.assert_ran(kernels, "softmax_block_backward<1")
    with cuda_device.cpu():
        np.testing.assert_allclose(dx, ops.softmax_backward(g, y), rtol=1e-4, atol=1e-7)


def test_softmax_zero_size(cuda_device):
    for shape, axis in [((0, 5), -1), ((3, 0), -1), ((3, 0, 2), 0)]:
        x = cuda_device.array(np.zeros(shape, np.float32))
        y, kernels = cuda_device.run(lambda: ops.softmax(x, axis))
        assert y.shape == shape and kernels in (None, [])
        assert cuda_device.host(ops.log_softmax_backward(x, x, axis)).shape == shape


# ---- softmax cross-entropy --------------------------------------------------------------------------------

XENT_SHAPES = [(7, 10), (5, 1), (3, 33), (9, 1000), (3, 1025), (2, 3001)]


@pytest.mark.parametrize("shape", XENT_SHAPES)
@pytest.mark.parametrize("reduction,smoothing", [("mean", 0.0), ("sum", 0.1), ("none", 0.25), ("mean", 1.0)])
def test_cross_entropy(cuda_device, rng, shape, reduction, smoothing):
    n, c = shape
    x = logits(rng, shape)
    labels = rng.integers(0, c, n)
    (loss, grad), kernels = cuda_device.run(lambda: ops.softmax_cross_entropy(
        cuda_device.array(x), cuda_device.array(labels), reduction=reduction, label_smoothing=smoothing,
        return_grad=True))
    cuda_device.assert_ran(kernels, "xent_warp_kernel" if c <= 1024 else "xent_block_kernel")
    if reduction != "none":
        cuda_device.assert_ran(kernels, "loss_finish_kernel")
        assert loss.shape == () and loss.dtype == np.float32
    ref_loss, ref_grad = ref_xent(x, labels, reduction, smoothing)
    np.testing.assert_allclose(loss, ref_loss, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-7)
    with cuda_device.cpu():
        cpu_loss, cpu_grad = ops.softmax_cross_entropy(x, labels, reduction=reduction, label_smoothing=smoothing,
                                                       return_grad=True)
    np.testing.assert_allclose(loss, cpu_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, cpu_grad, rtol=1e-4, atol=1e-8)


def test_cross_entropy_loss_only_is_deterministic_and_large_logits(cuda_device, rng):
    x = logits(rng, (300, 12), scale=1000.0)  # several blocks' partials
    labels = rng.integers(0, 12, 300).astype(np.int32)  # int32 labels are widened
    first = cuda_device.host(ops.softmax_cross_entropy(cuda_device.array(x), cuda_device.array(labels)))
    again = cuda_device.host(ops.softmax_cross_entropy(cuda_device.array(x), cuda_device.array(labels)))
    assert first.tobytes() == again.tobytes()
    np.testing.assert_allclose(first, ref_xent(x, labels)[0], rtol=1e-5)
    rows = cuda_device.host(ops.softmax_cross_entropy(cuda_device.array(x), cuda_device.array(labels),
                                                      reduction="none"))
    np.testing.assert_allclose(rows, ref_xent(x, labels, "none")[0], rtol=1e-5, atol=1e-3)


def test_cross_entropy_misaligned_long_rows(cuda_device, rng):
    x = logits(rng, (2, 1100))
    labels = np.array([3, 1099])
    (loss, grad), kernels = cuda_device.run(lambda: ops.softmax_cross_entropy(
        cuda_device.misaligned(x), cuda_device.array(labels), return_grad=True, label_smoothing=0.1))
    cuda_device.assert_ran(kernels, "xent_block_kernel<1>")
    ref_loss, ref_grad = ref_xent(x, labels, "mean", 0.1)
    np.testing.assert_allclose(loss, ref_loss, rtol=2e-5)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("c", [10, 1030])
def test_cross_entropy_bad_labels(cuda_device, rng, c):
    x = logits(rng, (6, c))
    labels = np.array([0, 1, c, 2, -1, c - 1])
    with pytest.raises(ValueError, match=f"labels out of range \\[0, {c}\\): row 2 has label {c}"):
        ops.softmax_cross_entropy(cuda_device.array(x), cuda_device.array(labels), check_labels=True)
    # Unchecked: no wait for the GPU, and the bad rows' loss and gradient are NaN.
    (rows, grad), _ = cuda_device.run(lambda: ops.softmax_cross_entropy(
        cuda_device.array(x), cuda_device.array(labels), reduction="none", return_grad=True))
    bad = np.array([False, False, True, False, True, False])
    assert np.isnan(rows[bad]).all() and np.isnan(grad[bad]).all()
    good = ~bad
    np.testing.assert_allclose(rows[good], ref_xent(x[good], labels[good], "none")[0], rtol=2e-5, atol=1e-6)
    mean = cuda_device.host(ops.softmax_cross_entropy(cuda_device.array(x), cuda_device.array(labels)))
    assert np.isnan(mean)
    # Good labels pass the check.
    ops.softmax_cross_entropy(cuda_device.array(x), cuda_device.array(labels % c), check_labels=True)


def test_cross_entropy_empty_and_argument_errors(cuda_device):
    x = cuda_device.array(np.zeros((0, 5), np.float32))
    lab = cuda_device.array(np.zeros(0, np.int64))
    assert np.isnan(cuda_device.host(ops.softmax_cross_entropy(x, lab)))
    assert cuda_device.host(ops.softmax_cross_entropy(x, lab, reduction="sum")) == 0
    loss, grad = ops.softmax_cross_entropy(x, lab, reduction="none", return_grad=True)
    assert cuda_device.host(loss).shape == (0,) and cuda_device.host(grad).shape == (0, 5)
    xd = cuda_device.array(np.zeros((2, 5), np.float32))
    with pytest.raises(TypeError, match="integer dtype"):
        ops.softmax_cross_entropy(xd, cuda_device.array(np.zeros(2, np.float32)))
    with pytest.raises(ValueError, match="shape"):
        ops.softmax_cross_entropy(xd, cuda_device.array(np.zeros(3, np.int64)))
    with pytest.raises(TypeError, match="check_labels"):
        ops.softmax_cross_entropy(xd, cuda_device.array(np.zeros(2, np.int64)), check_labels="yes")


# ---- BCE with logits -------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(), (1,), (7,), (3, 33), (1030,)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_with_logits(cuda_device, rng, shape, reduction):
    x = logits(rng, shape, 4.0)
    t = np.asarray(rng.random(shape), dtype=np.float32)
    (loss, grad), kernels = cuda_device.run(lambda: ops.bce_with_logits(
        cuda_device.array(x), cuda_device.array(t), reduction=reduction, return_grad=True))
    cuda_device.assert_ran(kernels, "bce_kernel")
    if reduction != "none":
        cuda_device.assert_ran(kernels, "loss_finish_kernel")
    ref_loss, ref_grad = ref_bce(x, t, reduction)
    assert loss.shape == np.shape(ref_loss) and grad.shape == shape
    np.testing.assert_allclose(loss, ref_loss, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(grad, ref_grad, rtol=2e-5, atol=1e-7)
    with cuda_device.cpu():
        cpu_loss, cpu_grad = ops.bce_with_logits(x, t, reduction=reduction, return_grad=True)
    np.testing.assert_allclose(loss, cpu_loss, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(grad, cpu_grad, rtol=2e-5, atol=1e-8)


def test_bce_extremes_misaligned_and_empty(cuda_device, rng):
    x = np.array([-200.0, -30.0, -1e-8, 0.0, 1e-8, 30.0, 200.0, np.nan, 5.0], np.float32)
    t = np.array([0.0, 1.0, 0.5, 0.3, 1.0, 0.0, 1.0, 0.5, 1.0], np.float32)
    loss, grad = ops.bce_with_logits(cuda_device.array(x), cuda_device.array(t), reduction="none", return_grad=True)
    with cuda_device.cpu():
        cpu_loss, cpu_grad = ops.bce_with_logits(x, t, reduction="none", return_grad=True)
    np.testing.assert_allclose(cuda_device.host(loss), cpu_loss, rtol=1e-5, atol=1e-30)
    np.testing.assert_allclose(cuda_device.host(grad), cpu_grad, rtol=1e-5, atol=1e-30)
    xs, ts = logits(rng, (64,)), rng.random(64).astype(np.float32)
    (loss, grad), kernels = cuda_device.run(lambda: ops.bce_with_logits(
        cuda_device.misaligned(xs), cuda_device.array(ts), return_grad=True))
    cuda_device.assert_ran(kernels, "bce_kernel<1>")
    np.testing.assert_allclose(loss, ref_bce(xs, ts)[0], rtol=2e-5)
    empty = cuda_device.array(np.zeros((0, 3), np.float32))
    assert np.isnan(cuda_device.host(ops.bce_with_logits(empty, empty)))
    assert cuda_device.host(ops.bce_with_logits(empty, empty, reduction="sum")) == 0
    loss, grad = ops.bce_with_logits(empty, empty, reduction="none", return_grad=True)
    assert cuda_device.host(loss).shape == cuda_device.host(grad).shape == (0, 3)
    with pytest.raises(ValueError, match="shapes differ"):
        ops.bce_with_logits(cuda_device.array(xs), cuda_device.array(ts[:3]))
