"""fusegrad.ops.attention / attention_backward against float64 references (tests/attention/reference.py),
finite differences and PyTorch's scaled_dot_product_attention: every mask kind, causal, Sq != Sk,
odd sizes, D up to 256, S = 1, dropout (the exact Philox mask and its statistics), errors."""
import numpy as np
import pytest

from fusegrad import ops

import attention_reference as ref
from attention_reference import make, make_mask

# (B, H, Sq, Sk, D): ones, primes, one below/above the 48-query and 96/256-key blocks and the
# 12/32 micro-tile, D not a multiple of any vector width, D = 256.
SHAPES = [(1, 1, 1, 1, 1), (2, 3, 17, 29, 13), (1, 2, 47, 129, 64), (1, 1, 49, 97, 33), (2, 1, 5, 200, 256),
          (1, 2, 130, 3, 7), (1, 1, 1, 95, 16), (1, 1, 50, 257, 20), (1, 1, 97, 255, 8)]
MASKS = ["none", "key_padding", "full_bool", "additive", "square_2d", "causal", "causal_padding"]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", MASKS)
def test_forward_and_backward_match_reference(rng, isa, shape, kind):
    q, k, v = make(rng, shape)
    mask, causal = make_mask(rng, kind, shape)
    out, lse = ops.attention(q, k, v, mask=mask, causal=causal, return_lse=True)
    want, want_lse, _ = ref.attention(q, k, v, mask, causal)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(lse, want_lse, rtol=1e-5, atol=1e-5)
    g = rng.standard_normal(out.shape).astype(np.float32)
    grads = ops.attention_backward(g, q, k, v, out, lse, mask=mask, causal=causal)
    for got, expected in zip(grads, ref.attention_grad(g, q, k, v, mask, causal)):
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)


def test_scale_and_large_scores(rng):
    q, k, v = make(rng, (1, 2, 33, 70, 24), scale=6.0)  # scores in the hundreds: the online max matters
    out, lse = ops.attention(q, k, v, scale=0.7, return_lse=True)
    want, want_lse, _ = ref.attention(q, k, v, scale=0.7)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(lse, want_lse, rtol=1e-5)


def test_finite_differences(rng):
    q, k, v = make(rng, (1, 2, 5, 7, 3))
    mask = np.arange(7)[None, None, None, :] < np.array([7, 4])[:, None, None, None][:1]
    w = rng.standard_normal(q.shape)

    def loss(q_, k_, v_):
        return float((ops.attention(q_, k_, v_, mask=mask, causal=True).astype(np.float64) * w).sum())

    out, lse = ops.attention(q, k, v, mask=mask, causal=True, return_lse=True)
    grads = ops.attention_backward(w.astype(np.float32), q, k, v, out, lse, mask=mask, causal=True)
    eps = 1e-2
    for which, (a, g) in enumerate(zip((q, k, v), grads)):
        numeric = np.zeros(a.shape)
        for idx in np.ndindex(a.shape):
            args = [q.copy(), k.copy(), v.copy()]
            args[which][idx] += eps
            hi = loss(*args)
            args[which][idx] -= 2 * eps
            numeric[idx] = (hi - loss(*args)) / (2 * eps)
        np.testing.assert_allclose(g, numeric, rtol=2e-2, atol=2e-3)


def test_query_attending_to_nothing_gets_zeros(rng):
    q, k, v = make(rng, (2, 1, 4, 6, 5))
    mask = np.ones((2, 1, 4, 6), bool)
    mask[0, 0, 2] = False
    out, lse = ops.attention(q, k, v, mask=mask, return_lse=True)
    assert np.all(out[0, 0, 2] == 0) and lse[0, 0, 2] == -np.inf
    grads = ops.attention_backward(np.ones_like(out), q, k, v, out, lse, mask=mask)
    assert all(np.isfinite(g).all() for g in grads)
    assert np.all(grads[0][0, 0, 2] == 0)
    empty_keys = ops.attention(q, k[:, :, :0], v[:, :, :0])
    assert empty_keys.shape == q.shape and np.all(empty_keys == 0)


def test_views_out_and_empty(rng):
    x = rng.standard_normal((2, 9, 3, 8)).astype(np.float32)  # (B, S, H, D) as a projection gives it
    q = k = v = x.transpose(0, 2, 1, 3)
    out = np.empty((2, 3, 9, 8), np.float32)
    assert ops.attention(q, k, v, out=out) is out
    np.testing.assert_allclose(out, ref.attention(q, k, v)[0], rtol=1e-4, atol=2e-5)
    assert ops.attention(*make(rng, (0, 2, 3, 4, 5))).shape == (0, 2, 3, 5)
    assert ops.attention(*make(rng, (1, 2, 0, 4, 5))).shape == (1, 2, 0, 5)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_mask_is_the_documented_philox_mask(rng, isa, p):
    shape = (2, 3, 21, 50, 12)
    q, k, v = make(rng, shape)
    mask, _ = make_mask(rng, "key_padding", shape)
    keep = ref.philox_keep(1234567891011, shape[:4], p)
    out, lse = ops.attention(q, k, v, mask=mask, causal=True, dropout_p=p, seed=1234567891011, return_lse=True)
    want, want_lse, _ = ref.attention(q, k, v, mask, True, keep=keep, p=p)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=3e-5)
    np.testing.assert_allclose(lse, want_lse, rtol=1e-5, atol=1e-5)  # dropout leaves the normaliser alone
    g = rng.standard_normal(out.shape).astype(np.float32)
    grads = ops.attention_backward(g, q, k, v, out, lse, mask=mask, causal=True, dropout_p=p, seed=1234567891011)
    for got, expected in zip(grads, ref.attention_grad(g, q, k, v, mask, True, keep=keep, p=p)):
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=2e-4)


def test_dropout_statistics(rng):
    # q = k = 0: uniform probabilities 1/Sk; v = identity: out[i, j] = keep_ij / ((1 - p) Sk).
    sk, p = 256, 0.3
    q = np.zeros((4, 2, 64, sk), np.float32)
    v = np.broadcast_to(np.eye(sk, dtype=np.float32), (4, 2, sk, sk)).copy()
    out = ops.attention(q, q[:, :, :1].repeat(sk, axis=2), v, dropout_p=p, seed=7)
    kept = out * sk * (1 - p)
    np.testing.assert_allclose(kept[kept > 0.5], 1.0, rtol=1e-4)
    rate = (kept > 0.5).mean()
    n = kept.size
    assert abs(rate - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n)
    assert abs(out.sum(axis=-1).mean() - 1.0) < 0.01  # unbiased: E[row sum] = 1
    other = ops.attention(q, q[:, :, :1].repeat(sk, axis=2), v, dropout_p=p, seed=8)
    same = ops.attention(q, q[:, :, :1].repeat(sk, axis=2), v, dropout_p=p, seed=7)
    assert np.array_equal(out, same) and not np.array_equal(out, other)
    # Neighbouring rows, heads and batches are uncorrelated: their keep masks agree ~p^2 + (1-p)^2.
    k0, k1 = kept[0, 0, 0] > 0.5, kept[1, 1, 1] > 0.5
    assert abs((k0 == k1).mean() - (p * p + (1 - p) ** 2)) < 0.15


def test_errors(rng):
    q, k, v = make(rng, (1, 2, 3, 4, 5))
    with pytest.raises(TypeError, match="q: expected dtype float32, got float64"):
        ops.attention(q.astype(np.float64), k, v)
    with pytest.raises(ValueError, match="4-D"):
        ops.attention(q[0], k[0], v[0])
    with pytest.raises(ValueError, match="same B, H, D"):
        ops.attention(q, k[..., :4], v)
    with pytest.raises(ValueError, match="does not broadcast"):
        ops.attention(q, k, v, mask=np.ones((1, 1, 3, 3), bool))
    with pytest.raises(TypeError, match="mask: expected dtype bool or float32, got int64"):
        ops.attention(q, k, v, mask=np.ones((4,), np.int64))
    with pytest.raises(ValueError, match="dropout_p must be in"):
        ops.attention(q, k, v, dropout_p=1.0)
    with pytest.raises(TypeError, match="seed"):
        ops.attention(q, k, v, dropout_p=0.1, seed="x")
    out = np.empty((1, 2, 3, 5), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        ops.attention(q, k, v, out=out)
    o, lse = ops.attention(q, k, v, return_lse=True)
    with pytest.raises(ValueError, match="seed"):
        ops.attention_backward(o, q, k, v, o, lse, dropout_p=0.2)
    with pytest.raises(ValueError, match="lse must have shape"):
        ops.attention_backward(o, q, k, v, o, lse[..., :2])


@pytest.mark.parametrize("causal", [False, True])
def test_backward_is_the_same_at_any_thread_count(rng, causal):
    # One head and more threads than heads takes the two-pass schedule; it must give the bits of
    # the one-pass schedule that one thread takes.
    import fusegrad

    q, k, v = make(rng, (1, 1, 301, 290, 24))
    out, lse = ops.attention(q, k, v, causal=causal, dropout_p=0.2, seed=5, return_lse=True)
    g = rng.standard_normal(out.shape).astype(np.float32)
    cpu = fusegrad._backend._cpu
    saved = cpu.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            cpu.set_num_threads(threads)
            results.append(ops.attention_backward(g, q, k, v, out, lse, causal=causal, dropout_p=0.2, seed=5))
    finally:
        cpu.set_num_threads(saved)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert np.array_equal(a, b)
    keep = ref.philox_keep(5, (1, 1, 301, 290), 0.2)
    for got, expected in zip(results[1], ref.attention_grad(g, q, k, v, None, causal, keep=keep, p=0.2)):
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=2e-4)
