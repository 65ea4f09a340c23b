"""nn.LSTM, nn.GRU, nn.LSTMCell and nn.GRUCell against PyTorch with the same weights (outputs, final
states and every gradient), against finite differences, and their errors."""
import numpy as np
import pytest

import fusegrad as fg
from fusegrad import nn
from gradcheck import check_grad


def _torch_copy(t, ours, theirs):
    theirs.load_state_dict({k: t.from_numpy(v.numpy().copy()) for k, v in ours.state_dict().items()})


def _run_torch(t, theirs, x, states, lengths, batch_first, T):
    if lengths is not None:
        x = t.nn.utils.rnn.pack_padded_sequence(x, t.tensor(lengths), batch_first=batch_first, enforce_sorted=False)
    y, state = theirs(x, states) if states is not None else theirs(x)
    if lengths is not None:
        y, _ = t.nn.utils.rnn.pad_packed_sequence(y, batch_first=batch_first, total_length=T)
    return y, state


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (1, True), (2, False), (2, True)])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("with_state,with_lengths", [(False, False), (True, False), (True, True)])
def test_against_torch(kind, layers, bidirectional, batch_first, with_state, with_lengths, rng):
    t = pytest.importorskip("torch")
    fg.manual_seed(0)
    T, B, I, H = 6, 5, 4, 7
    D = 2 if bidirectional else 1
    ours = getattr(nn, kind)(I, H, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first)
    theirs = getattr(t.nn, kind)(I, H, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first)
    _torch_copy(t, ours, theirs)
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I)).astype(np.float32)
    h0 = rng.standard_normal((layers * D, B, H)).astype(np.float32)
    c0 = rng.standard_normal((layers * D, B, H)).astype(np.float32)
    lengths = [6, 1, 3, 6, 2] if with_lengths else None
    a = fg.tensor(x, requires_grad=True)
    b = t.tensor(x, requires_grad=True)
    ah0, ac0 = fg.tensor(h0, requires_grad=True), fg.tensor(c0, requires_grad=True)
    bh0, bc0 = t.tensor(h0, requires_grad=True), t.tensor(c0, requires_grad=True)
    lstm = kind == "LSTM"
    if with_state:
        ya, sa = ours(a, (ah0, ac0) if lstm else ah0, lengths=lengths)
        yb, sb = _run_torch(t, theirs, b, (bh0, bc0) if lstm else bh0, lengths, batch_first, T)
    else:
        ya, sa = ours(a, lengths=lengths)
        yb, sb = _run_torch(t, theirs, b, None, lengths, batch_first, T)
    sa, sb = (list(sa), list(sb)) if lstm else ([sa], [sb])
    np.testing.assert_allclose(ya.numpy(), yb.detach().numpy(), rtol=1e-5, atol=1e-6)
    for p, q in zip(sa, sb):
        np.testing.assert_allclose(p.numpy(), q.detach().numpy(), rtol=1e-5, atol=1e-6)
    gy = rng.standard_normal(ya.shape).astype(np.float32)
    gs = [rng.standard_normal(s.shape).astype(np.float32) for s in sa]
    loss_a = (ya * fg.tensor(gy)).sum()
    loss_b = (yb * t.from_numpy(gy)).sum()
    for p, q, g in zip(sa, sb, gs):
        loss_a = loss_a + (p * fg.tensor(g)).sum()
        loss_b = loss_b + (q * t.from_numpy(g)).sum()
    loss_a.backward()
    loss_b.backward()
    np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-4, atol=1e-5)
    if with_state:
        np.testing.assert_allclose(ah0.grad.numpy(), bh0.grad.numpy(), rtol=1e-4, atol=1e-5)
        if lstm:
            np.testing.assert_allclose(ac0.grad.numpy(), bc0.grad.numpy(), rtol=1e-4, atol=1e-5)
    theirs_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), theirs_params[name].grad.numpy(), rtol=1e-4, atol=1e-5,
                                   err_msg=name)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_only_final_state_used(kind, rng):
    """A classifier on h_n alone: the gradient reaches the layer through h_n only."""
    t = pytest.importorskip("torch")
    ours, theirs = getattr(nn, kind)(3, 5, num_layers=2), getattr(t.nn, kind)(3, 5, num_layers=2, batch_first=True)
    _torch_copy(t, ours, theirs)
    x = rng.standard_normal((4, 9, 3)).astype(np.float32)
    a, b = fg.tensor(x, requires_grad=True), t.tensor(x, requires_grad=True)
    ha = ours(a)[1][0] if kind == "LSTM" else ours(a)[1]
    hb = theirs(b)[1][0] if kind == "LSTM" else theirs(b)[1]
    (ha[-1] * 3.0).sum().backward()
    (hb[-1] * 3.0).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours.weight_hh_l0.grad.numpy(), theirs.weight_hh_l0.grad.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", ["LSTMCell", "GRUCell"])
@pytest.mark.parametrize("bias", [True, False])
def test_cells_against_torch(kind, bias, rng):
    t = pytest.importorskip("torch")
    ours, theirs = getattr(nn, kind)(4, 6, bias=bias), getattr(t.nn, kind)(4, 6, bias=bias)
    _torch_copy(t, ours, theirs)
    xs = rng.standard_normal((5, 3, 4)).astype(np.float32)
    a, b = fg.tensor(xs, requires_grad=True), t.tensor(xs, requires_grad=True)
    lstm = kind == "LSTMCell"
    sa = sb = None
    outs_a, outs_b = [], []
    for step in range(5):  # a hand-written loop, states carried
        sa = ours(a[step], sa)
        sb = theirs(b[step], sb)
        outs_a.append(sa[0] if lstm else sa)
        outs_b.append(sb[0] if lstm else sb)
    for p, q in zip(outs_a, outs_b):
        np.testing.assert_allclose(p.numpy(), q.detach().numpy(), rtol=1e-5, atol=1e-6)
    g = rng.standard_normal((3, 6)).astype(np.float32)
    loss_a = sum(((o * fg.tensor(g)).sum() for o in outs_a), fg.tensor(0.0))
    sum((o * t.from_numpy(g)).sum() for o in outs_b).backward()
    if lstm:
        loss_a = loss_a + (sa[1] * 2.0).sum()
    loss_a.backward()
    if lstm:
        a2 = t.tensor(xs, requires_grad=True)
        theirs.zero_grad()
        st = None
        loss = 0
        for step in range(5):
            st = theirs(a2[step], st)
            loss = loss + (st[0] * t.from_numpy(g)).sum()
        (loss + (st[1] * 2.0).sum()).backward()
        b = a2
    np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-4, atol=1e-5)
    theirs_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), theirs_params[name].grad.numpy(), rtol=1e-4, atol=1e-5,
                                   err_msg=name)
    h1 = ours(fg.tensor(xs[0, 0]))  # unbatched input
    assert (h1[0] if lstm else h1).shape == (6,)


def test_dropout_between_layers():
    fg.manual_seed(0)
    rnn = nn.LSTM(3, 4, num_layers=3, dropout=0.5)
    x = fg.randn(2, 5, 3)
    rnn.eval()
    y1, y2 = rnn(x)[0].numpy(), rnn(x)[0].numpy()
    np.testing.assert_array_equal(y1, y2)  # off in eval mode
    rnn.train()
    assert not np.allclose(rnn(x)[0].numpy(), y1)  # on in training: the layers' inputs are masked
    with pytest.raises(ValueError, match="dropout"):
        nn.GRU(3, 4, dropout=1.5)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_finite_differences(kind, rng):
    fg.manual_seed(1)
    rnn = getattr(nn, kind)(3, 4, num_layers=2, bidirectional=True)

    def f(x):
        y, state = rnn(x, lengths=[4, 2])
        h = state[0] if kind == "LSTM" else state
        return y.sum(axis=2) + h.sum()

    # the kernels are float32: float32 differences with a large step
    check_grad(f, (2, 4, 3), rng=rng, dtype=np.float32, rtol=3e-2, atol=3e-3)


@pytest.mark.parametrize("kind", ["LSTMCell", "GRUCell"])
def test_cell_finite_differences(kind, rng):
    fg.manual_seed(2)
    cell = getattr(nn, kind)(3, 4)
    check_grad(lambda x, h: cell(x, (h, h) if kind == "LSTMCell" else h)[0] if kind == "LSTMCell" else cell(x, h),
               (2, 3), (2, 4), rng=rng, dtype=np.float32, rtol=3e-2, atol=3e-3)


def test_no_grad_and_empty_sequences():
    rnn = nn.GRU(3, 4)
    with fg.no_grad():
        y, h = rnn(fg.randn(2, 5, 3))
    assert y.shape == (2, 5, 4) and h.shape == (1, 2, 4) and not y.requires_grad
    y, (h, c) = nn.LSTM(3, 4)(fg.randn(2, 0, 3))  # T = 0: the initial states come back
    assert y.shape == (2, 0, 4) and np.all(h.numpy() == 0) and np.all(c.numpy() == 0)
    y, h = nn.GRU(3, 4, bidirectional=True)(fg.randn(0, 5, 3))
    assert y.shape == (0, 5, 8) and h.shape == (2, 0, 4)


def test_module_errors():
    with pytest.raises(ValueError, match="input_size=5"):
        nn.LSTM(5, 3)(fg.randn(2, 4, 6))
    with pytest.raises(ValueError, match=r"h0 must have shape \(2, 2, 3\)"):
        nn.GRU(5, 3, bidirectional=True)(fg.randn(2, 4, 5), fg.zeros(1, 2, 3))
    with pytest.raises(ValueError, match=r"c0 must have shape \(1, 2, 3\)"):
        nn.LSTM(5, 3)(fg.randn(2, 4, 5), (fg.zeros(1, 2, 3), fg.zeros(1, 3, 3)))
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 4\]"):
        nn.LSTM(5, 3)(fg.randn(2, 4, 5), lengths=[5, 1])
    with pytest.raises(ValueError, match="one per batch row"):
        nn.GRU(5, 3)(fg.randn(2, 4, 5), lengths=[1, 2, 3])
    with pytest.raises(ValueError, match="input_size=4"):
        nn.LSTMCell(4, 3)(fg.randn(2, 5))
    with pytest.raises(ValueError, match=r"h must have shape \(2, 3\)"):
        nn.GRUCell(4, 3)(fg.randn(2, 4), fg.zeros(3, 3))
