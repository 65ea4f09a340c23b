"""Property test: softmax, log-softmax and the fused cross-entropy on random shapes and values
against float64 (seeded, bounded)."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fusegrad import ops


def log_softmax64(x, axis):
    x = x.astype(np.float64)
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


@settings(max_examples=400)
@given(shape=st.lists(st.integers(1, 9), min_size=1, max_size=3), data=st.data(), scale=st.sampled_from([1.0, 30.0]),
       seed=st.integers(0, 2**32 - 1))
def test_softmax_matches_float64(shape, data, scale, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)
    ref = log_softmax64(x, axis)
    np.testing.assert_allclose(ops.log_softmax(x, axis), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ops.softmax(x, axis), np.exp(ref), rtol=1e-5, atol=1e-6)


@settings(max_examples=400)
@given(n=st.integers(0, 20), c=st.integers(1, 40), smoothing=st.sampled_from([0.0, 0.1, 1.0]),
       reduction=st.sampled_from(["mean", "sum", "none"]), seed=st.integers(0, 2**32 - 1))
def test_cross_entropy_matches_float64(n, c, smoothing, reduction, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, c)) * 5).astype(np.float32)
    labels = rng.integers(0, c, n)
    logp = log_softmax64(x, 1)
    rows = -(1 - smoothing) * logp[np.arange(n), labels] - smoothing * logp.mean(axis=1)
    want = rows if reduction == "none" else rows.sum() if reduction == "sum" else (rows.mean() if n else np.nan)
    loss, grad = ops.softmax_cross_entropy(x, labels, reduction=reduction, label_smoothing=smoothing, return_grad=True)
    np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-5)
    onehot = np.eye(c)[labels] * (1 - smoothing) + smoothing / c
    scale = 1 / n if reduction == "mean" and n else 1
    np.testing.assert_allclose(grad, (np.exp(logp) - onehot) * scale, rtol=1e-5, atol=1e-6)
