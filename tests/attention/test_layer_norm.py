"""ops.layer_norm / layer_norm_backward and ops.embedding_backward (the attention family's per-token
kernels) against float64 references; the parameter gradients are the same bits at any thread
count; nn.LayerNorm and nn.Embedding on them against finite differences."""
import numpy as np
import pytest

import fusegrad
from fusegrad import Tensor, nn, ops


def ln_reference(x, w, b, eps):
    x = x.astype(np.float64)
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    xhat = (x - mean) / np.sqrt(var + eps)
    y = xhat * (1 if w is None else w) + (0 if b is None else b)
    return y, mean[..., 0], 1 / np.sqrt(var[..., 0] + eps), xhat


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (65, 768), (2, 5, 33), (130, 1000), (0, 4)])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_matches_reference(rng, isa, shape, affine):
    n = shape[-1]
    x = (rng.standard_normal(shape) * 3 + 5).astype(np.float32)
    w = rng.standard_normal(n).astype(np.float32) if affine else None
    b = rng.standard_normal(n).astype(np.float32) if affine else None
    y, mean, rstd = ops.layer_norm(x, w, b, 1e-5, return_stats=True)
    want, want_mean, want_rstd, xhat = ln_reference(x, w, b, 1e-5)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(mean, want_mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rstd, want_rstd, rtol=1e-4)
    g = rng.standard_normal(shape).astype(np.float32)
    dx, dw, db = ops.layer_norm_backward(g, x, mean, rstd, w)
    gw = g * (1 if w is None else w)
    r = want_rstd[..., None]
    want_dx = r * (gw - gw.mean(-1, keepdims=True) - xhat * (gw * xhat).mean(-1, keepdims=True))
    np.testing.assert_allclose(dx, want_dx, rtol=1e-3, atol=1e-4)
    axes = tuple(range(x.ndim - 1))
    if affine:
        np.testing.assert_allclose(dw, (g * xhat).sum(axis=axes), rtol=1e-4, atol=1e-3)
    else:
        assert dw is None
    np.testing.assert_allclose(db, g.sum(axis=axes), rtol=1e-4, atol=1e-3)


def test_layer_norm_grads_do_not_depend_on_threads(rng):
    x = rng.standard_normal((1000, 96)).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    w = rng.standard_normal(96).astype(np.float32)
    _, mean, rstd = ops.layer_norm(x, w, None, return_stats=True)
    saved = fusegrad._backend._cpu.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            fusegrad._backend._cpu.set_num_threads(threads)
            results.append(ops.layer_norm_backward(g, x, mean, rstd, w))
    finally:
        fusegrad._backend._cpu.set_num_threads(saved)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert np.array_equal(a, b)


def test_layer_norm_module_grads(rng):
    from gradcheck import numeric_grad

    m = nn.LayerNorm(6)
    m.weight.data[...] = rng.standard_normal(6)
    m.bias.data[...] = rng.standard_normal(6)
    x = rng.standard_normal((3, 6)).astype(np.float32)
    w = rng.standard_normal((3, 6))
    t = Tensor(x, requires_grad=True)
    (m(t) * Tensor(w.astype(np.float32))).sum().backward()

    def loss(xa, wa, ba):
        y, *_ = ln_reference(xa, wa, ba, 1e-5)
        return float((y * w).sum())
    want = numeric_grad(loss, [x.astype(np.float64), m.weight.numpy().astype(np.float64),
                               m.bias.numpy().astype(np.float64)])
    for got, expected in zip((t.grad, m.weight.grad, m.bias.grad), want):
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-3, atol=1e-4)
    m3 = nn.LayerNorm((2, 3))  # several normalised axes flatten onto the kernel
    y = m3(Tensor(x.reshape(3, 2, 3)))
    np.testing.assert_allclose(y.numpy().reshape(3, 6), ln_reference(x, None, None, 1e-5)[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("padding_idx", [None, 3])
def test_embedding_backward(rng, isa, padding_idx):
    idx = rng.integers(0, 11, (4, 37))
    g = rng.standard_normal((4, 37, 19)).astype(np.float32)
    got = ops.embedding_backward(idx, g, 11, padding_idx)
    want = np.zeros((11, 19))
    np.add.at(want, idx.reshape(-1), g.reshape(-1, 19).astype(np.float64))
    if padding_idx is not None:
        want[padding_idx] = 0
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    saved = fusegrad._backend._cpu.get_num_threads()
    try:
        fusegrad._backend._cpu.set_num_threads(1)
        assert np.array_equal(ops.embedding_backward(idx, g, 11, padding_idx), got)
    finally:
        fusegrad._backend._cpu.set_num_threads(saved)
    emb = nn.Embedding(11, 19, padding_idx=padding_idx)
    out = emb(idx)
    out.backward(g)
    np.testing.assert_allclose(emb.weight.grad.numpy(), want, rtol=1e-5, atol=1e-5)


def test_errors(rng):
    x = rng.standard_normal((2, 4)).astype(np.float32)
    with pytest.raises(TypeError, match="x: expected dtype float32"):
        ops.layer_norm(x.astype(np.float64))
    with pytest.raises(ValueError, match="weight must have shape"):
        ops.layer_norm(x, np.ones(3, np.float32))
    with pytest.raises(ValueError, match=r"indices must be in \[0, 5\)"):
        ops.embedding_backward(np.array([5]), np.ones((1, 2), np.float32), 5)
    with pytest.raises(TypeError, match="indices: expected integers"):
        ops.embedding_backward(np.array([0.5]), np.ones((1, 2), np.float32), 5)
