"""Property test: the fused Adam/AdamW and SGD steps on random tensor lists and hyper-parameters
against float64 transcriptions of PyTorch's algorithms (seeded, bounded)."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fusegrad import ops

sizes = st.lists(st.integers(0, 300), min_size=1, max_size=5)


@settings(max_examples=300)
@given(sizes=sizes, steps=st.integers(1, 4), lr=st.sampled_from([1e-3, 0.1]), wd=st.sampled_from([0.0, 0.05]),
       decoupled=st.booleans(), maximize=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_adam_matches_float64(sizes, steps, lr, wd, decoupled, maximize, seed):
    rng = np.random.default_rng(seed)
    b1, b2, eps = 0.9, 0.999, 1e-8
    p = [rng.standard_normal(s).astype(np.float32) for s in sizes]
    m, v = [np.zeros(s, np.float32) for s in sizes], [np.zeros(s, np.float32) for s in sizes]
    rp, rm, rv = [x.astype(np.float64) for x in p], [np.zeros(s) for s in sizes], [np.zeros(s) for s in sizes]
    for t in range(1, steps + 1):
        g = [rng.standard_normal(s).astype(np.float32) for s in sizes]
        ops.adam_step(p, g, m, v, step=t, lr=lr, weight_decay=wd, decoupled_weight_decay=decoupled, maximize=maximize)
        for i, gi in enumerate(g):
            gi = -gi.astype(np.float64) if maximize else gi.astype(np.float64)
            if decoupled:
                rp[i] = rp[i] * (1 - lr * wd)
            else:
                gi = gi + wd * rp[i]
            rm[i] = b1 * rm[i] + (1 - b1) * gi
            rv[i] = b2 * rv[i] + (1 - b2) * gi * gi
            rp[i] = rp[i] - lr * (rm[i] / (1 - b1**t)) / (np.sqrt(rv[i] / (1 - b2**t)) + eps)
    for got, want in zip(p, rp):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@settings(max_examples=300)
@given(sizes=sizes, steps=st.integers(1, 4), momentum=st.sampled_from([0.0, 0.9]), nesterov=st.booleans(),
       wd=st.sampled_from([0.0, 0.01]), seed=st.integers(0, 2**32 - 1))
def test_sgd_matches_float64(sizes, steps, momentum, nesterov, wd, seed):
    nesterov = nesterov and momentum > 0
    rng = np.random.default_rng(seed)
    lr = 0.05
    p = [rng.standard_normal(s).astype(np.float32) for s in sizes]
    bufs = [np.zeros(s, np.float32) for s in sizes]
    rp, rb = [x.astype(np.float64) for x in p], [None] * len(sizes)
    for t in range(1, steps + 1):
        g = [rng.standard_normal(s).astype(np.float32) for s in sizes]
        ops.sgd_step(p, g, bufs, step=t, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=wd)
        for i, gi in enumerate(g):
            gi = gi.astype(np.float64) + wd * rp[i]
            if momentum:
                rb[i] = gi.copy() if t == 1 else momentum * rb[i] + gi
                gi = gi + momentum * rb[i] if nesterov else rb[i]
            rp[i] = rp[i] - lr * gi
    for got, want in zip(p, rp):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
