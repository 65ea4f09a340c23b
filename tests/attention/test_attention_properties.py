"""Property test: attention forward and backward on random shapes (Sq, Sk around the block and
micro-tile sizes), random masks (none, key padding, full boolean, additive; some queries fully
masked), causal or not, and random dropout, against float64 (seeded, bounded)."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import attention_reference as ref
from fusegrad import ops


@settings(max_examples=150)
@given(b=st.integers(1, 2), h=st.integers(1, 3), sq=st.integers(1, 140), sk=st.integers(1, 140),
       d=st.integers(1, 40), kind=st.sampled_from(["none", "padding", "full", "additive"]), causal=st.booleans(),
       p=st.sampled_from([0.0, 0.0, 0.25]), seed=st.integers(0, 2**32 - 1))
def test_attention_matches_float64(b, h, sq, sk, d, kind, causal, p, seed):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((b, h, s, d)).astype(np.float32) for s in (sq, sk, sk))
    mask = None
    if kind == "padding":
        mask = (np.arange(sk)[None, :] < rng.integers(0, sk + 1, b)[:, None])[:, None, None, :]
    elif kind == "full":
        mask = rng.random((b, 1, sq, sk)) < 0.6
    elif kind == "additive":
        mask = np.where(rng.random((1, h, sq, sk)) < 0.3, -np.inf, rng.standard_normal((1, h, sq, sk))).astype(np.float32)
    keep = ref.philox_keep(seed, (b, h, sq, sk), p) if p else None
    out, lse = ops.attention(q, k, v, mask=mask, causal=causal, dropout_p=p, seed=seed, return_lse=True)
    want, want_lse, _ = ref.attention(q, k, v, mask, causal, keep=keep, p=p)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=5e-5)
    np.testing.assert_allclose(lse, want_lse, rtol=1e-5, atol=1e-5)
    g = rng.standard_normal(out.shape).astype(np.float32)
    grads = ops.attention_backward(g, q, k, v, out, lse, mask=mask, causal=causal, dropout_p=p, seed=seed)
    for got, expected in zip(grads, ref.attention_grad(g, q, k, v, mask, causal, keep=keep, p=p)):
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, expected, rtol=2e-3, atol=2e-4)
