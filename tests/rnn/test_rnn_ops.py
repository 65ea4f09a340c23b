"""fusegrad.ops.rnn against a float64 NumPy reference written plainly here, on shapes around the
GEMM's micro-tile (batch rows split between threads, hidden sizes one off a vector), and its errors."""
import numpy as np
import pytest

from fusegrad import _cpu, ops


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


def reference(mode, x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, reverse):
    """(T, B, I) float64 loop over time, row by row."""
    T, B, _ = x.shape
    H = w_hh.shape[1]
    y = np.zeros((T, B, H))
    h_n, c_n = h0.copy(), c0.copy()
    for b in range(B):
        h, c = h0[b].copy(), c0[b].copy()
        L = T if lengths is None else lengths[b]
        for t in (range(L - 1, -1, -1) if reverse else range(L)):
            gx, gh = w_ih @ x[t, b] + b_ih, w_hh @ h + b_hh
            if mode == "lstm":
                i, f, g, o = np.split(gx + gh, 4)
                c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
                h = _sigmoid(o) * np.tanh(c)
            else:
                r = _sigmoid(gx[:H] + gh[:H])
                z = _sigmoid(gx[H:2 * H] + gh[H:2 * H])
                n = np.tanh(gx[2 * H:] + r * gh[2 * H:])
                h = (1 - z) * n + z * h
            y[t, b] = h
        h_n[b], c_n[b] = h, c
    return y, h_n, c_n


MR = _cpu.gemm_config()["mr"]


def random_layer(rng, mode, T, B, I, H, scale):
    """x (T, B, I) and a layer's weights (times `scale`) and biases, float32."""
    G = 4 if mode == "lstm" else 3
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    w_ih, w_hh = [(rng.standard_normal((G * H, n)) * scale).astype(np.float32) for n in (I, H)]
    b_ih, b_hh = [rng.standard_normal(G * H).astype(np.float32) for _ in range(2)]
    return x, w_ih, w_hh, b_ih, b_hh


@pytest.mark.parametrize("mode", ["lstm", "gru"])
# The last LSTM shape's stacked weights [W_ih | W_hh] pass 1 MiB: its input projection is a GEMM of
# its own (rnn_forward.cpp, stacked_input); on the others the step's GEMM does it.
@pytest.mark.parametrize("T,B,I,H", [(1, 1, 1, 1), (3, MR + 1, 5, 17), (7, 2 * MR - 1, 3, 33), (4, 40, 2, 16),
                                     (0, 3, 2, 4), (3, MR + 1, 5, 260)])
@pytest.mark.parametrize("reverse,with_lengths", [(False, False), (True, False), (True, True), (False, True)])
def test_against_float64_reference(mode, T, B, I, H, reverse, with_lengths, rng):
    x, w_ih, w_hh, b_ih, b_hh = random_layer(rng, mode, T, B, I, H, 1 / np.sqrt(H))
    h0, c0 = [rng.standard_normal((B, H)).astype(np.float32) for _ in range(2)]
    lengths = rng.integers(0, T + 1, B) if with_lengths else None
    y, h_n, c_n, _ = ops.rnn_forward(mode, x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths=lengths, reverse=reverse)
    f64 = [a.astype(np.float64) for a in (x, w_ih, w_hh, b_ih, b_hh, h0, c0)]
    ry, rh, rc = reference(mode, *f64, lengths, reverse)
    np.testing.assert_allclose(y, ry, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(h_n, rh, rtol=1e-4, atol=2e-5)
    if mode == "lstm":
        np.testing.assert_allclose(c_n, rc, rtol=1e-4, atol=2e-5)
    else:
        assert c_n is None


@pytest.mark.parametrize("mode", ["lstm", "gru"])
@pytest.mark.parametrize("biases", ["ih", "hh", "none"])
def test_missing_biases_count_as_zero(mode, biases, rng):
    T, B, I, H = 4, 5, 3, 16
    G = 4 if mode == "lstm" else 3
    x, w_ih, w_hh, b_ih, b_hh = random_layer(rng, mode, T, B, I, H, 0.3)
    if biases != "ih":
        b_ih = None
    if biases != "hh":
        b_hh = None
    y, h_n, _, _ = ops.rnn_forward(mode, x, w_ih, w_hh, b_ih, b_hh)
    zeros = np.zeros(G * H)
    f64 = [a.astype(np.float64) if a is not None else zeros for a in (x, w_ih, w_hh, b_ih, b_hh)]
    ry, rh, _ = reference(mode, *f64, np.zeros((B, H)), np.zeros((B, H)), None, False)
    np.testing.assert_allclose(y, ry, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(h_n, rh, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("mode", ["lstm", "gru"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_empty_rows_in_reverse(mode, batch_first, rng):
    # A row of length 0 runs no step, so its state stays h0 and its outputs zero; the other rows are
    # unaffected. (The step GEMM of a small LSTM still reads some x row for it: one inside x.)
    T, B, I, H = 4, 3, 2, 8
    x, w_ih, w_hh, b_ih, b_hh = random_layer(rng, mode, T, B, I, H, 0.3)
    h0, c0 = [rng.standard_normal((B, H)).astype(np.float32) for _ in range(2)]
    lengths = np.array([0, T, 2])
    xs = np.ascontiguousarray(x.transpose(1, 0, 2)) if batch_first else x
    y, h_n, c_n, _ = ops.rnn_forward(mode, xs, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths=lengths, reverse=True,
                                     batch_first=batch_first)
    if batch_first:
        y = y.transpose(1, 0, 2)
    f64 = [a.astype(np.float64) for a in (x, w_ih, w_hh, b_ih, b_hh, h0, c0)]
    ry, rh, rc = reference(mode, *f64, lengths, True)
    np.testing.assert_allclose(y, ry, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(h_n, rh, rtol=1e-4, atol=2e-5)
    assert np.all(y[:, 0] == 0) and np.array_equal(h_n[0], h0[0])
    if mode == "lstm":
        np.testing.assert_allclose(c_n, rc, rtol=1e-4, atol=2e-5)


def test_batch_first_and_output_views(rng):
    x = rng.standard_normal((6, 5, 3)).astype(np.float32)  # (T, B, I)
    w_ih, w_hh = rng.standard_normal((16, 3)).astype(np.float32), rng.standard_normal((16, 4)).astype(np.float32)
    y, h, c = ops.lstm(x, w_ih, w_hh)
    yb, hb, cb = ops.lstm(np.ascontiguousarray(x.transpose(1, 0, 2)), w_ih, w_hh, batch_first=True)
    np.testing.assert_allclose(yb.transpose(1, 0, 2), y, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(hb, h, rtol=1e-6, atol=1e-7)
    wide = np.full((6, 5, 8), 7.0, np.float32)  # write into the right half of a wider array
    ops.rnn_forward("lstm", x, w_ih, w_hh, y=wide[..., 4:])
    np.testing.assert_allclose(wide[..., 4:], y, rtol=1e-6, atol=1e-7)
    assert np.all(wide[..., :4] == 7.0)
    y_gru, h_gru = ops.gru(x, w_ih[:12], w_hh[:12])
    assert y_gru.shape == (6, 5, 4) and h_gru.shape == (5, 4)


@pytest.mark.parametrize("mode", ["lstm", "gru"])
@pytest.mark.parametrize("reverse,batch_first", [(False, False), (True, False), (False, True), (True, True)])
def test_backward_matches_differences(mode, reverse, batch_first, rng):
    """rnn_backward against float64 central differences of the reference, one weight at a time,
    with rows of different lengths; each order of steps and rows (the LSTM's by-step gradients
    reach dx in place or scattered to x's rows)."""
    T, B, I, H = 3, 3, 2, 3
    G = 4 if mode == "lstm" else 3
    lengths = [3, 1, 2]
    x = rng.standard_normal((T, B, I))
    w_ih, w_hh = rng.standard_normal((G * H, I)) * 0.5, rng.standard_normal((G * H, H)) * 0.5
    b_ih, b_hh = rng.standard_normal(G * H), rng.standard_normal(G * H)
    h0, c0 = rng.standard_normal((B, H)), rng.standard_normal((B, H))
    gy = rng.standard_normal((T, B, H))
    for t in range(T):  # no gradient reaches y past a row's length
        gy[t, [b for b in range(B) if t >= lengths[b]]] = 0
    f32 = [a.astype(np.float32) for a in (x, w_ih, w_hh, b_ih, b_hh, h0, c0 if mode == "lstm" else None)
           if a is not None]
    order = (lambda a: np.ascontiguousarray(a.transpose(1, 0, 2))) if batch_first else (lambda a: a)
    f32[0] = order(f32[0])
    _, _, _, saved = ops.rnn_forward(mode, *f32, lengths=lengths, reverse=reverse, batch_first=batch_first)
    dx, dw_ih, dw_hh, db_ih, db_hh, dh0, dc0 = ops.rnn_backward(saved, order(gy.astype(np.float32)))
    args = [x, w_ih, w_hh, b_ih, b_hh, h0, c0]

    def loss(k, idx, eps):
        a = [v.copy() for v in args]
        a[k][idx] += eps
        return (reference(mode, *a, lengths, reverse)[0] * gy).sum()

    grads = [(0, order(dx) if batch_first else dx), (1, dw_ih), (2, dw_hh), (3, db_ih), (4, db_hh), (5, dh0)]
    grads += [(6, dc0)] if mode == "lstm" else []
    for k, got in grads:
        num = np.zeros(args[k].shape)
        for idx in np.ndindex(args[k].shape):
            num[idx] = (loss(k, idx, 1e-6) - loss(k, idx, -1e-6)) / 2e-6
        np.testing.assert_allclose(got, num, rtol=1e-3, atol=1e-4, err_msg=str(k))
    assert not (dx[1, 1:] if batch_first else dx[1:, 1]).any()  # row 1 has one step: no dx past it


def test_errors(rng):
    x = np.zeros((4, 2, 3), np.float32)
    w_ih, w_hh = np.zeros((12, 3), np.float32), np.zeros((12, 4), np.float32)
    with pytest.raises(ValueError, match="mode must be 'lstm' or 'gru'"):
        ops.rnn_forward("rnn", x, w_ih, w_hh)
    with pytest.raises(TypeError, match="x: expected dtype float32, got float64"):
        ops.gru(x.astype(np.float64), w_ih, w_hh)
    with pytest.raises(ValueError, match=r"x must be 3-D \(T, B, I\), got shape \(4, 2\)"):
        ops.gru(x[..., 0], w_ih, w_hh)
    with pytest.raises(ValueError, match=r"w_hh must have shape \(4\*H, H\), got \(12, 4\)"):
        ops.lstm(x, w_ih, w_hh)
    with pytest.raises(ValueError, match=r"w_ih must have shape \(12, 3\), got \(12, 2\)"):
        ops.gru(x, w_ih[:, :2], w_hh)
    with pytest.raises(ValueError, match=r"h0 must have shape \(2, 4\)"):
        ops.gru(x, w_ih, w_hh, h0=np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match=r"b_hh must have shape \(12,\)"):
        ops.gru(x, w_ih, w_hh, b_hh=np.zeros(11, np.float32))
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 4\]"):
        ops.gru(x, w_ih, w_hh, lengths=[1, 5])
    with pytest.raises(TypeError, match="lengths must be integers"):
        ops.gru(x, w_ih, w_hh, lengths=[1.0, 2.0])
    with pytest.raises(ValueError, match="y is read-only"):
        y = np.zeros((4, 2, 4), np.float32)
        y.flags.writeable = False
        ops.rnn_forward("gru", x, w_ih, w_hh, y=y)
    with pytest.raises(TypeError, match="saved must be"):
        ops.rnn_backward(None)
    with pytest.raises(TypeError, match="batch_first must be True or False"):
        ops.gru(x, w_ih, w_hh, batch_first="yes")


def test_saved_activations_return_to_the_pool_only_when_free(rng):
    """The large host activations of a released RnnSaved serve the next forward (ops.rnn._pool);
    one the caller still holds is never handed out again, and reuse leaves the results unchanged."""
    from fusegrad.ops import rnn as rnn_ops

    T, B, I, H = 64, 32, 8, 128  # hs 65·32·128 floats, gates 64·32·512: both over 1 MiB, pooled
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    w_ih, w_hh = (rng.standard_normal((4 * H, n)).astype(np.float32) * 0.1 for n in (I, H))
    y0, _, _, saved = ops.rnn_forward("lstm", x, w_ih, w_hh)
    grads0 = ops.rnn_backward(saved, np.ones_like(y0))
    held = saved.gates
    held_copy = held.copy()
    del saved
    assert not any(a is held for free in rnn_ops._pool.values() for a in free)
    pooled = list(rnn_ops._pool[(T + 1, B, H)])
    assert pooled
    y1, _, _, saved = ops.rnn_forward("lstm", x, w_ih, w_hh)
    assert any(saved.hs is a for a in pooled) and saved.gates is not held
    np.testing.assert_array_equal(held, held_copy)  # the held array was not written again
    np.testing.assert_array_equal(y1, y0)
    for g0, g1 in zip(grads0, ops.rnn_backward(saved, np.ones_like(y1))):
        if g0 is not None:
            np.testing.assert_array_equal(g1, g0)
