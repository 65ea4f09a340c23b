"""LSTM, GRU and their cells on a CUDA device run the CUDA recurrent kernels (cuda/rnn/, one call
per layer direction over the whole sequence) and give the CPU kernels' outputs and gradients,
lengths= and dropout between layers included. Runs on the emulated GPU on every run (the kernels'
own tests against the CPU op are in test_rnn_kernels_cuda.py)."""
import numpy as np
import pytest

import fusegrad as fg
from fusegrad import nn


def _run(module_cls, device, x, states, lengths=None, **kwargs):
    fg.manual_seed(0)
    module = module_cls(5, 6, **kwargs).to(device)
    xt = fg.tensor(x, requires_grad=True, device=device)
    st = [fg.tensor(s, requires_grad=True, device=device) for s in states]
    more = {} if lengths is None else {"lengths": lengths}
    if module_cls is nn.LSTM:
        y, (h, c) = module(xt, tuple(st) if st else None, **more)
        loss = (y * y).sum() + (h * 3).sum() + (c * c).sum()
    elif module_cls is nn.GRU:
        y, h = module(xt, st[0] if st else None, **more)
        loss = (y * y).sum() + (h * 3).sum()
    elif module_cls is nn.LSTMCell:
        h, c = module(xt, tuple(st) if st else None)
        loss = (h * h).sum() + (c * 3).sum()
    else:
        h = module(xt, st[0] if st else None)
        loss = (h * h).sum()
    loss.backward()
    grads = [xt.grad.numpy()] + [s.grad.numpy() for s in st] + [p.grad.numpy() for p in module.parameters()]
    return loss.item(), grads


@pytest.mark.cuda_emulated
@pytest.mark.parametrize("module_cls,kwargs,with_state", [
    (nn.LSTM, dict(num_layers=2, bidirectional=True), True),
    (nn.LSTM, dict(batch_first=False), False),
    (nn.GRU, dict(num_layers=2, bidirectional=True), True),
    (nn.GRU, dict(bias=False), False),
    (nn.LSTMCell, {}, True),
    (nn.GRUCell, {}, False),
])
def test_rnn_on_the_emulated_gpu_equals_the_cpu_kernels(module_cls, kwargs, with_state):
    rng = np.random.default_rng(1)
    cell = module_cls in (nn.LSTMCell, nn.GRUCell)
    x = rng.standard_normal((3, 5) if cell else (3, 4, 5), dtype=np.float32)
    layers = kwargs.get("num_layers", 1) * (2 if kwargs.get("bidirectional") else 1)
    shape = (3, 6) if cell else (layers, 3, 6)
    count = (2 if module_cls in (nn.LSTM, nn.LSTMCell) else 1) if with_state else 0
    states = [rng.standard_normal(shape, dtype=np.float32) for _ in range(count)]
    cpu_loss, cpu_grads = _run(module_cls, "cpu", x, states, **kwargs)
    with fg.cuda.emulate():
        gpu_loss, gpu_grads = _run(module_cls, "cuda", x, states, **kwargs)
    np.testing.assert_allclose(gpu_loss, cpu_loss, rtol=1e-4)
    for a, b in zip(gpu_grads, cpu_grads):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


@pytest.mark.cuda_emulated
@pytest.mark.parametrize("module_cls,kwargs", [
    (nn.LSTM, dict(bidirectional=True)),
    (nn.GRU, dict(num_layers=2, batch_first=False)),
])
def test_lengths_on_the_emulated_gpu_equal_the_cpu_kernels(module_cls, kwargs):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4, 5), dtype=np.float32)
    lengths = [4, 0, 2]
    if not kwargs.get("batch_first", True):
        x = np.ascontiguousarray(x.transpose(1, 0, 2))
    cpu_loss, cpu_grads = _run(module_cls, "cpu", x, [], lengths=lengths, **kwargs)
    with fg.cuda.emulate() as emu:
        gpu_loss, gpu_grads = _run(module_cls, "cuda", x, [], lengths=lengths, **kwargs)
        names = emu.kernels()
    cell = "Lstm" if module_cls is nn.LSTM else "Gru"
    assert f"forward_step<{cell}>" in names and f"backward_step<{cell}>" in names  # the kernels, not a fallback
    np.testing.assert_allclose(gpu_loss, cpu_loss, rtol=1e-4)
    for a, b in zip(gpu_grads, cpu_grads):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


@pytest.mark.cuda_emulated
def test_dropout_between_layers_runs_on_the_emulated_gpu():
    with fg.cuda.emulate():
        fg.manual_seed(0)
        lstm = nn.LSTM(5, 6, num_layers=2, dropout=0.5).to("cuda")
        y, (h, c) = lstm(fg.randn(2, 3, 5, device="cuda"))
        (y.sum() + h.sum()).backward()
        assert y.shape == (2, 3, 6) and h.shape == c.shape == (2, 2, 6)
        assert lstm.weight_ih_l1.grad.shape == (24, 6)
