"""The CUDA recurrent kernels (cuda/rnn/) through fusegrad.ops.rnn, against the CPU op on the same
inputs: forward outputs and every gradient of the backward, on odd sizes (hidden not a multiple of
32, T = 1 and T = 0, lengths with zeros and short rows, reverse, batch-first, no biases), on the
emulated GPU every run and on a real one where present. Sizes are small: the emulator is slow."""
import numpy as np
import pytest

from fusegrad import ops

# mode, T, B, I, H, reverse, lengths, batch_first, bias
CASES = [
    ("lstm", 1, 3, 5, 37, False, None, False, True),
    ("lstm", 5, 4, 2, 7, True, [5, 1, 0, 3], True, True),
    ("lstm", 4, 3, 3, 33, False, [2, 4, 0], False, False),
    ("gru", 4, 5, 3, 33, True, [4, 0, 2, 1, 4], False, True),
    ("gru", 3, 2, 6, 9, False, None, True, True),
    ("gru", 2, 3, 1, 5, False, [1, 2, 0], False, False),
    ("lstm", 0, 2, 3, 4, False, None, False, True),
]


def _inputs(rng, mode, T, B, I, H, batch_first, bias):
    G = 4 if mode == "lstm" else 3
    s = 1 / np.sqrt(H)
    f32 = lambda *shape, scale=1.0: (rng.standard_normal(shape) * scale).astype(np.float32)  # noqa: E731
    x = f32(B, T, I) if batch_first else f32(T, B, I)
    w_ih, w_hh = f32(G * H, I, scale=s), f32(G * H, H, scale=s)
    b_ih, b_hh = (f32(G * H), f32(G * H)) if bias else (None, None)
    h0, c0 = f32(B, H), f32(B, H)
    return x, w_ih, w_hh, b_ih, b_hh, h0, (c0 if mode == "lstm" else None)


def _close(got, want, what, rtol=2e-4, atol=2e-5):
    if want is None:
        assert got is None, what
        return
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)


@pytest.mark.parametrize("mode,T,B,I,H,reverse,lengths,batch_first,bias", CASES)
def test_forward_and_backward_equal_the_cpu_op(cuda_device, rng, mode, T, B, I, H, reverse, lengths, batch_first,
                                               bias):
    host = _inputs(rng, mode, T, B, I, H, batch_first, bias)
    kw = dict(lengths=lengths, reverse=reverse, batch_first=batch_first)
    with cuda_device.cpu():
        y, h_n, c_n, saved = ops.rnn_forward(mode, *host, **kw)
        gy, gh, gc = [rng.standard_normal(shape).astype(np.float32) for shape in (y.shape, h_n.shape, h_n.shape)]
        grads = ops.rnn_backward(saved, gy, gh, gc if mode == "lstm" else None)
    dev = [None if a is None else cuda_device.array(a) for a in host]

    dy, dh, dc, dsaved = ops.rnn_forward(mode, *dev, **kw)
    for got, want, what in [(dy, y, "y"), (dh, h_n, "h_n"), (dc, c_n, "c_n")]:
        _close(None if got is None else cuda_device.host(got), want, what)
    # What backward reads: the same activations as the CPU saves (gates only at the steps a row
    # runs: neither device writes them past its length).
    ran = np.arange(T)[:, None] < (np.array(lengths) if lengths is not None else np.full(B, T))[None, :]
    _close(cuda_device.host(dsaved.gates)[ran], saved.gates[ran], "gates")
    for name in ("hs", "cs"):
        want = getattr(saved, name)
        _close(None if want is None else cuda_device.host(getattr(dsaved, name)), want, name)
    dgrads = ops.rnn_backward(dsaved, cuda_device.array(gy), cuda_device.array(gh),
                              cuda_device.array(gc) if mode == "lstm" else None)
    for got, want, what in zip(dgrads, grads, ("dx", "dw_ih", "dw_hh", "db_ih", "db_hh", "dh0", "dc0")):
        _close(None if got is None else cuda_device.host(got), want, what, rtol=1e-3, atol=1e-4)
    if cuda_device.kind == "emulated" and T:
        names, cell = cuda_device.kernels(), mode.capitalize()  # one pointwise kernel per step each way
        assert names.count(f"forward_step<{cell}>") == T and names.count(f"backward_step<{cell}>") == T, names


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_partial_gradients_and_output_views(cuda_device, rng, mode):
    """Gradients reaching only h_n (dy None) or only y, need_dx=False, and y written into one half
    of a wider device array (a bidirectional output's layout)."""
    T, B, I, H = 3, 2, 4, 6
    host = _inputs(rng, mode, T, B, I, H, False, True)
    dev = [None if a is None else cuda_device.array(a) for a in host]
    with cuda_device.cpu():
        y, h_n, c_n, saved = ops.rnn_forward(mode, *host, lengths=[3, 1])
        gh = rng.standard_normal(h_n.shape).astype(np.float32)
        gy = rng.standard_normal(y.shape).astype(np.float32)
        want_h = ops.rnn_backward(saved, None, gh, need_dx=False)
        want_y = ops.rnn_backward(saved, gy)
    wide = cuda_device.array(np.full((T, B, 2 * H), 7.0, np.float32))
    dsaved = ops.rnn_forward(mode, *dev, lengths=np.array([3, 1]), y=wide[..., H:])[3]
    out = cuda_device.host(wide)
    _close(out[..., H:], y, "y view")
    assert np.all(out[..., :H] == 7.0)
    got = ops.rnn_backward(dsaved, None, cuda_device.array(gh), need_dx=False)
    assert got[0] is None
    for g, w, what in zip(got[1:], want_h[1:], ("dw_ih", "dw_hh", "db_ih", "db_hh", "dh0", "dc0")):
        _close(None if g is None else cuda_device.host(g), w, what, rtol=1e-3, atol=1e-4)
    got = ops.rnn_backward(dsaved, cuda_device.array(gy))
    for g, w, what in zip(got, want_y, ("dx", "dw_ih", "dw_hh", "db_ih", "db_hh", "dh0", "dc0")):
        _close(None if g is None else cuda_device.host(g), w, what, rtol=1e-3, atol=1e-4)


def test_device_errors(cuda_device):
    x = cuda_device.array(np.zeros((2, 3, 4), np.float32))
    w_ih, w_hh = np.zeros((12, 4), np.float32), np.zeros((12, 3), np.float32)
    if cuda_device.kind == "gpu":  # (while emulating, NumPy arrays are on the emulated device too)
        with pytest.raises(ValueError, match="w_ih is on cpu but x is on cuda:0"):
            ops.lstm(x, w_ih, cuda_device.array(w_hh))
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 2\]"):
        ops.lstm(x, cuda_device.array(w_ih), cuda_device.array(w_hh), lengths=[1, 3, 0])
    with pytest.raises(TypeError, match="x: expected dtype float32, got float64"):
        ops.lstm(cuda_device.array(np.zeros((2, 3, 4))), w_ih, w_hh)
