"""Softmax, log-softmax and the fused losses against float64 NumPy references written here,
PyTorch where importable, and finite differences; every error case."""
import numpy as np
import pytest

import fusegrad
from fusegrad import _cpu, ops

# ---- float64 references ------------------------------------------------------------------------


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
    onehot = np.zeros((n, c))
    onehot[np.arange(n), labels] = 1
    target = (1 - smoothing) * onehot + smoothing / c
    rows = -(target * logp).sum(axis=1)
    grad = np.exp(logp) - target
    if reduction == "none":
        return rows, grad
    if reduction == "sum":
        return rows.sum(), grad
    return rows.mean(), grad / n


def ref_bce(x, t, reduction="mean"):
    x, t = x.astype(np.float64), t.astype(np.float64)
    loss = np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))
    grad = 1 / (1 + np.exp(-x)) - t
    if reduction == "none":
        return loss, grad
    if reduction == "sum":
        return loss.sum(), grad
    return loss.mean(), grad / x.size




# Shapes around the vector widths (8, 16) and their doubles, primes, 1 and 1000.
ROW_SHAPES = [(1, 1), (3, 1), (2, 7), (5, 15), (4, 16), (4, 17), (3, 31), (2, 32), (3, 33), (6, 1000), (1, 4099)]
AXIS_CASES = [((4, 5, 6), 0), ((4, 5, 6), 1), ((4, 5, 6), 2), ((4, 5, 6), -2), ((3, 7, 33), 1),
              ((2, 3, 17, 16), 1), ((10, 3), 0), ((1, 1, 1), 1), ((6,), 0)]

# ---- softmax / log_softmax ---------------------------------------------------------------------


@pytest.mark.parametrize("shape", ROW_SHAPES)
def test_softmax_rows(rng, isa, shape):
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    np.testing.assert_allclose(ops.softmax(x), ref_softmax(x), rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(ops.log_softmax(x), ref_log_softmax(x), rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("shape,axis", AXIS_CASES)
def test_softmax_any_axis(rng, isa, shape, axis):
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    np.testing.assert_allclose(ops.softmax(x, axis), ref_softmax(x, axis), rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(ops.log_softmax(x, axis), ref_log_softmax(x, axis), rtol=1e-5, atol=2e-6)


def test_softmax_large_logits_and_specials():
    x = np.array([[1e4, 1e4 + 1, 1e4 - 2], [-1e30, 0, 1e30], [88.0, 89.0, 90.0], [-1000, -1001, -999]],
                 np.float32)
    np.testing.assert_allclose(ops.softmax(x), ref_softmax(x), rtol=1e-5, atol=1e-30)
    np.testing.assert_allclose(ops.log_softmax(x), ref_log_softmax(x), rtol=1e-5, atol=1e-5)
    # -inf entries get probability 0; an all -inf row, a NaN or a +inf poison their row (as PyTorch)
    y = ops.softmax(np.array([[0, -np.inf, 0], [-np.inf] * 3, [1, np.nan, 2], [0, np.inf, 1]], np.float32))
    np.testing.assert_allclose(y[0], [0.5, 0, 0.5], atol=1e-30)
    assert np.isnan(y[1:]).all()
    ly = ops.log_softmax(np.array([[0, -np.inf, 0], [1, np.nan, 2]], np.float32))
    assert ly[0, 1] == -np.inf and np.isnan(ly[1]).all()


def test_softmax_strided_input_out_and_in_place(rng):
    base = rng.standard_normal((6, 40)).astype(np.float32)
    x = base[::2, 3:30]
    np.testing.assert_allclose(ops.softmax(x), ref_softmax(x), rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(ops.softmax(base.T, 0), ref_softmax(base.T, 0), rtol=2e-6, atol=1e-7)
    out = np.empty(x.shape, np.float32)
    assert ops.log_softmax(x, out=out) is out
    np.testing.assert_allclose(out, ref_log_softmax(x), rtol=1e-5, atol=2e-6)
    inplace = base.copy()
    ops.softmax(inplace, out=inplace)
    np.testing.assert_allclose(inplace, ref_softmax(base), rtol=2e-6, atol=1e-7)
    shifted = base.copy()  # out overlapping the input at an offset: computed aside, then copied
    ops.softmax(shifted[:, :20], out=shifted[:, 20:])
    np.testing.assert_allclose(shifted[:, 20:], ref_softmax(base[:, :20]), rtol=2e-6, atol=1e-7)


def test_softmax_zero_size():
    assert ops.softmax(np.zeros((0, 5), np.float32)).shape == (0, 5)
    assert ops.log_softmax(np.zeros((3, 0), np.float32)).shape == (3, 0)
    assert ops.softmax(np.zeros((2, 0, 4), np.float32), 1).shape == (2, 0, 4)
    assert ops.softmax_backward(np.zeros((0, 5), np.float32), np.zeros((0, 5), np.float32)).shape == (0, 5)


def test_softmax_both_thread_counts(rng):
    x = rng.standard_normal((512, 1000)).astype(np.float32)
    z = rng.standard_normal((64, 100, 33)).astype(np.float32)
    saved = fusegrad.get_num_threads()
    try:
        for threads in (1, 2):
            fusegrad.set_num_threads(threads)
            np.testing.assert_allclose(ops.softmax(x), ref_softmax(x), rtol=2e-6, atol=1e-7)
            np.testing.assert_allclose(ops.log_softmax(z, 1), ref_log_softmax(z, 1), rtol=1e-5, atol=2e-6)
    finally:
        fusegrad.set_num_threads(saved)


# ---- backward ----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,axis", [((5, 17), -1), ((3, 1000), 1), ((1, 1), 0)] + AXIS_CASES)
def test_softmax_backward(rng, isa, shape, axis):
    x = rng.standard_normal(shape).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    y = ops.softmax(x, axis)
    ry = ref_softmax(x, axis)
    ref = ry * (g - np.sum(g * ry, axis=axis, keepdims=True))
    np.testing.assert_allclose(ops.softmax_backward(g, y, axis), ref, rtol=1e-4, atol=1e-6)
    ly = ops.log_softmax(x, axis)
    ref = g - np.exp(ref_log_softmax(x, axis)) * np.sum(g, axis=axis, keepdims=True)
    np.testing.assert_allclose(ops.log_softmax_backward(g, ly, axis), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("axis", [0, 1])
def test_softmax_backward_by_finite_differences(rng, log, axis):
    x = rng.standard_normal((3, 5)).astype(np.float32)
    g = rng.standard_normal((3, 5))
    f = ops.log_softmax if log else ops.softmax
    back = ops.log_softmax_backward if log else ops.softmax_backward
    dx = back(g.astype(np.float32), f(x, axis), axis)
    eps = 1e-2
    num = np.zeros(x.shape)
    for q in np.ndindex(*x.shape):
        xp, xm = x.copy(), x.copy()
        xp[q] += eps
        xm[q] -= eps
        num[q] = (np.sum(f(xp, axis) * g) - np.sum(f(xm, axis) * g)) / (2 * eps)
    np.testing.assert_allclose(dx, num, rtol=2e-3, atol=2e-4)


def test_softmax_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((7, 3, 19)).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    for axis in (0, 1, 2):
        for log, f, back in ((False, ops.softmax, ops.softmax_backward),
                             (True, ops.log_softmax, ops.log_softmax_backward)):
            xt = torch.from_numpy(x).requires_grad_()
            yt = (torch.log_softmax if log else torch.softmax)(xt, axis)
            yt.backward(torch.from_numpy(g))
            y = f(x, axis)
            np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(back(g, y, axis), xt.grad.numpy(), rtol=1e-4, atol=1e-6)


# ---- softmax cross-entropy ---------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("shape", [(1, 1), (1, 10), (7, 3), (128, 10), (5, 17), (33, 1000)])
def test_cross_entropy_matches_reference(rng, isa, shape, smoothing, reduction):
    n, c = shape
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    labels = rng.integers(0, c, n)
    loss, grad = ops.softmax_cross_entropy(x, labels, reduction=reduction, label_smoothing=smoothing,
                                           return_grad=True)
    rloss, rgrad = ref_xent(x, labels, reduction, smoothing)
    assert loss.dtype == np.float32 and loss.shape == np.shape(rloss)
    np.testing.assert_allclose(loss, rloss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, rgrad, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(ops.softmax_cross_entropy(x, labels, reduction=reduction,
                                                            label_smoothing=smoothing), loss)


def test_cross_entropy_large_logits_and_label_dtypes(rng):
    x = (rng.standard_normal((6, 50)) * 3 + 1e4).astype(np.float32)
    x[:, 7] += 30.0
    for dtype in (np.int64, np.int32, np.int16, np.uint8):
        labels = np.array([7, 0, 49, 7, 3, 7], dtype)
        loss, grad = ops.softmax_cross_entropy(x, labels, label_smoothing=0.2, return_grad=True)
        rloss, rgrad = ref_xent(x, labels.astype(np.int64), "mean", 0.2)
        np.testing.assert_allclose(loss, rloss, rtol=1e-5)
        np.testing.assert_allclose(grad, rgrad, rtol=1e-5, atol=1e-7)


def test_cross_entropy_by_finite_differences(rng):
    x = rng.standard_normal((4, 6)).astype(np.float32)
    labels = np.array([0, 5, 2, 2])
    for reduction in ("mean", "sum"):
        _, grad = ops.softmax_cross_entropy(x, labels, reduction=reduction, label_smoothing=0.3, return_grad=True)
        eps = 1e-2
        num = np.zeros(x.shape)
        for q in np.ndindex(*x.shape):
            xp, xm = x.copy(), x.copy()
            xp[q] += eps
            xm[q] -= eps
            f = lambda z: float(ops.softmax_cross_entropy(z, labels, reduction=reduction,  # noqa: E731
                                                          label_smoothing=0.3))
            num[q] = (f(xp) - f(xm)) / (2 * eps)
        np.testing.assert_allclose(grad, num, rtol=2e-3, atol=2e-4)


def test_cross_entropy_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x = (rng.standard_normal((64, 100)) * 5).astype(np.float32)
    labels = rng.integers(0, 100, 64)
    for reduction in ("mean", "sum", "none"):
        for smoothing in (0.0, 0.25):
            xt = torch.from_numpy(x).requires_grad_()
            lt = torch.nn.functional.cross_entropy(xt, torch.from_numpy(labels), reduction=reduction,
                                                   label_smoothing=smoothing)
            lt.backward(torch.ones_like(lt))
            loss, grad = ops.softmax_cross_entropy(x, labels, reduction=reduction, label_smoothing=smoothing,
                                                   return_grad=True)
            np.testing.assert_allclose(loss, lt.detach().numpy(), rtol=2e-6, atol=1e-6)
            np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=1e-5, atol=1e-8)


def test_cross_entropy_large_batch_both_thread_counts(rng):
    x = (rng.standard_normal((1024, 1000)) * 2).astype(np.float32)
    labels = rng.integers(0, 1000, 1024).astype(np.int32)
    rloss, rgrad = ref_xent(x, labels.astype(np.int64))
    saved = fusegrad.get_num_threads()
    try:
        for threads in (1, 2):
            fusegrad.set_num_threads(threads)
            loss, grad = ops.softmax_cross_entropy(x, labels, return_grad=True)
            np.testing.assert_allclose(loss, rloss, rtol=1e-5)
            np.testing.assert_allclose(grad, rgrad, rtol=1e-5, atol=1e-9)
    finally:
        fusegrad.set_num_threads(saved)


def test_cross_entropy_empty_batch():
    x = np.zeros((0, 5), np.float32)
    labels = np.zeros(0, np.int64)
    assert np.isnan(ops.softmax_cross_entropy(x, labels))  # the mean of nothing, as PyTorch
    assert ops.softmax_cross_entropy(x, labels, reduction="sum") == 0
    loss, grad = ops.softmax_cross_entropy(x, labels, reduction="none", return_grad=True)
    assert loss.shape == (0,) and grad.shape == (0, 5)


def test_cross_entropy_errors():
    x = np.zeros((3, 4), np.float32)
    labels = np.array([0, 1, 3])
    with pytest.raises(TypeError, match="logits: expected dtype float32, got float64"):
        ops.softmax_cross_entropy(x.astype(np.float64), labels)
    with pytest.raises(TypeError, match="integer dtype"):
        ops.softmax_cross_entropy(x, labels.astype(np.float32))
    with pytest.raises(ValueError, match="out of range"):
        ops.softmax_cross_entropy(x, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match="out of range"):
        ops.softmax_cross_entropy(x, np.array([0, -1, 1], np.int32))
    with pytest.raises(ValueError, match="out of range"):
        ops.softmax_cross_entropy(np.zeros((2, 0), np.float32), np.array([0, 0]))
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\)"):
        ops.softmax_cross_entropy(x, np.array([0, 1]))
    with pytest.raises(ValueError, match="2-D"):
        ops.softmax_cross_entropy(np.zeros(4, np.float32), np.array([1]))
    with pytest.raises(ValueError, match="2-D"):
        ops.softmax_cross_entropy(np.zeros((2, 3, 4), np.float32), np.array([1, 1]))
    with pytest.raises(ValueError, match="reduction must be one of"):
        ops.softmax_cross_entropy(x, labels, reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        ops.softmax_cross_entropy(x, labels, label_smoothing=1.5)
    with pytest.raises(TypeError, match="label_smoothing must be a real number"):
        ops.softmax_cross_entropy(x, labels, label_smoothing="0.1")
    # the compiled side guards its labels too
    with pytest.raises(ValueError, match="out of range"):
        _cpu.softmax_cross_entropy(x, np.array([0, 9, 1], np.int64), 0.0, 1.0, None, None)
    with pytest.raises(TypeError, match="int64"):
        _cpu.softmax_cross_entropy(x, np.array([0, 1, 1], np.int32), 0.0, 1.0, None, None)


# ---- BCE with logits ---------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(1,), (15,), (17,), (3, 33), (64, 1000), (2, 3, 5)])
def test_bce_matches_reference(rng, isa, shape, reduction):
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    t = rng.random(shape).astype(np.float32)
    loss, grad = ops.bce_with_logits(x, t, reduction=reduction, return_grad=True)
    rloss, rgrad = ref_bce(x, t, reduction)
    np.testing.assert_allclose(loss, rloss, rtol=2e-6, atol=1e-7)
    # sigmoid(x) - t cancels where the two are close: an ulp of sigmoid's float32 value remains
    ulp = 1.2e-7 / (x.size if reduction == "mean" else 1)
    np.testing.assert_allclose(grad, rgrad, rtol=2e-6, atol=ulp)
    np.testing.assert_allclose(ops.bce_with_logits(x, t, reduction=reduction), loss, rtol=0, atol=0)


def test_bce_extreme_logits_are_stable():
    x = np.array([-200, -90, -30, -1e-6, 0, 1e-6, 30, 90, 200], np.float32)
    for t in (np.zeros_like(x), np.ones_like(x), np.full_like(x, 0.3)):
        loss, grad = ops.bce_with_logits(x, t, reduction="none", return_grad=True)
        rloss, rgrad = ref_bce(x, t, "none")
        assert np.isfinite(loss).all() and np.isfinite(grad).all()
        np.testing.assert_allclose(loss, rloss, rtol=1e-6, atol=1e-30)
        np.testing.assert_allclose(grad, rgrad, rtol=1e-6, atol=1.2e-7)  # sigmoid(30) rounds to 1
    assert np.isnan(ops.bce_with_logits(np.array([np.nan], np.float32), np.ones(1, np.float32),
                                        reduction="none", return_grad=True)).all()


def test_bce_by_finite_differences(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    t = rng.random((3, 4)).astype(np.float32)
    _, grad = ops.bce_with_logits(x, t, return_grad=True)
    eps = 1e-2
    num = np.zeros(x.shape)
    for q in np.ndindex(*x.shape):
        xp, xm = x.copy(), x.copy()
        xp[q] += eps
        xm[q] -= eps
        num[q] = (float(ops.bce_with_logits(xp, t)) - float(ops.bce_with_logits(xm, t))) / (2 * eps)
    np.testing.assert_allclose(grad, num, rtol=2e-3, atol=1e-5)


def test_bce_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x = (rng.standard_normal((50, 70)) * 6).astype(np.float32)
    t = (rng.random((50, 70)) > 0.5).astype(np.float32)
    for reduction in ("mean", "sum", "none"):
        xt = torch.from_numpy(x).requires_grad_()
        lt = torch.nn.functional.binary_cross_entropy_with_logits(xt, torch.from_numpy(t), reduction=reduction)
        lt.backward(torch.ones_like(lt))
        loss, grad = ops.bce_with_logits(x, t, reduction=reduction, return_grad=True)
        np.testing.assert_allclose(loss, lt.detach().numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=1e-5, atol=1e-8)


def test_bce_zero_size_and_errors():
    e = np.zeros((0, 3), np.float32)
    assert np.isnan(ops.bce_with_logits(e, e))
    assert ops.bce_with_logits(e, e, reduction="sum") == 0
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="shapes differ"):
        ops.bce_with_logits(x, np.zeros((3, 2), np.float32))
    with pytest.raises(TypeError, match="targets: expected dtype float32"):
        ops.bce_with_logits(x, np.zeros((2, 3)))
    with pytest.raises(TypeError, match="logits: expected dtype float32"):
        ops.bce_with_logits(x.astype(np.float16), x)
    with pytest.raises(ValueError, match="reduction"):
        ops.bce_with_logits(x, x, reduction="mean_all")


# ---- softmax errors ----------------------------------------------------------------------------


def test_softmax_errors():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(TypeError, match="x: expected dtype float32, got float64"):
        ops.softmax(x.astype(np.float64))
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        ops.softmax(x, 2)
    with pytest.raises(ValueError, match="axis -3 is out of range"):
        ops.log_softmax(x, -3)
    with pytest.raises(ValueError, match="out of range for an array of 0"):
        ops.softmax(np.ones((), np.float32))
    with pytest.raises(TypeError, match="axis must be an int"):
        ops.softmax(x, 1.0)
    with pytest.raises(ValueError, match="shapes differ"):
        ops.softmax_backward(x, np.zeros((3, 2), np.float32))
    with pytest.raises(TypeError, match="y: expected dtype float32"):
        ops.log_softmax_backward(x, x.astype(np.float64))
    with pytest.raises(ValueError, match="expected shape"):
        ops.softmax(x, out=np.zeros((3, 2), np.float32))
    ro = np.zeros((2, 3), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        ops.softmax(x, out=ro)


def test_bce_with_logits_keeps_zero_dimensional_shapes():
    x, t = np.array(0.3, np.float32), np.array(1.0, np.float32)
    loss, grad = ops.bce_with_logits(x, t, reduction="none", return_grad=True)
    assert loss.shape == () and grad.shape == ()
    np.testing.assert_allclose(loss, np.log1p(np.exp(-0.3)), rtol=1e-6)
    assert ops.bce_with_logits(x, t).shape == ()


@pytest.mark.parametrize("view", ["cols", "reversed_rows"])
def test_bce_with_logits_of_empty_views(view):
    z = np.zeros((3, 5), np.float32)[:, :0] if view == "cols" else np.zeros((5, 3), np.float32)[::-1, :0]
    assert ops.bce_with_logits(z, z, reduction="sum") == 0.0
    assert ops.bce_with_logits(z, z, reduction="none").shape == z.shape
