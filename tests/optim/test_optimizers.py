"""Optimizers and schedulers: parameters and states against torch.optim over several steps, and
against plain NumPy transcriptions where PyTorch is absent; freezing; state_dict round trips."""
import math

import numpy as np
import pytest

import fusegrad as fg
from fusegrad import nn, optim


def make_params(rng, shapes=((5, 3), (3,), (1,), (17,))):
    return [nn.Parameter(rng.standard_normal(s).astype(np.float32)) for s in shapes]


def set_grads(params, rng):
    grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
    for p, g in zip(params, grads):
        p.grad = fg.tensor(g)
    return grads


def adam_reference(p, grads, lr, b1, b2, eps, wd, decoupled):
    """torch.optim.Adam / AdamW, transcribed from their documentation, in float64."""
    p = p.astype(np.float64)
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float64)
        if decoupled:
            p = p * (1 - lr * wd)
        else:
            g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p, m, v


@pytest.mark.parametrize("cls,decoupled", [(optim.Adam, False), (optim.AdamW, True)])
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_adam_against_reference(cls, decoupled, wd, rng):
    params = make_params(rng)
    start = [p.numpy().copy() for p in params]
    opt = cls(params, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=wd)
    history = [[] for _ in params]
    for _ in range(10):
        for h, g in zip(history, set_grads(params, rng)):
            h.append(g)
        opt.step()
    for p, p0, h in zip(params, start, history):
        ref_p, ref_m, ref_v = adam_reference(p0, h, 0.01, 0.8, 0.99, 1e-6, wd, decoupled)
        np.testing.assert_allclose(p.numpy(), ref_p, rtol=1e-5, atol=1e-6)
        state = opt.state[id(p)]
        assert state["step"] == 10
        np.testing.assert_allclose(state["exp_avg"], ref_m, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state["exp_avg_sq"], ref_v, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kwargs", [
    {}, {"momentum": 0.9}, {"momentum": 0.9, "dampening": 0.3}, {"momentum": 0.9, "nesterov": True},
    {"momentum": 0.5, "weight_decay": 0.01}, {"momentum": 0.9, "maximize": True},
])
def test_sgd_against_torch(kwargs, rng):
    torch = pytest.importorskip("torch")
    params = make_params(rng)
    theirs = [torch.tensor(p.numpy().copy(), requires_grad=True) for p in params]
    ours_opt = optim.SGD(params, lr=0.05, **kwargs)
    their_opt = torch.optim.SGD(theirs, lr=0.05, **kwargs)
    for _ in range(5):
        for t, g in zip(theirs, set_grads(params, rng)):
            t.grad = torch.tensor(g)
        ours_opt.step()
        their_opt.step()
    for p, t in zip(params, theirs):
        np.testing.assert_allclose(p.numpy(), t.detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_adam_against_torch(name, rng):
    torch = pytest.importorskip("torch")
    params = make_params(rng)
    theirs = [torch.tensor(p.numpy().copy(), requires_grad=True) for p in params]
    ours_opt = getattr(optim, name)(params, lr=0.003, weight_decay=0.05)
    their_opt = getattr(torch.optim, name)(theirs, lr=0.003, weight_decay=0.05)
    for _ in range(6):
        for t, g in zip(theirs, set_grads(params, rng)):
            t.grad = torch.tensor(g)
        ours_opt.step()
        their_opt.step()
    for p, t in zip(params, theirs):
        np.testing.assert_allclose(p.numpy(), t.detach().numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ours_opt.state[id(p)]["exp_avg_sq"], their_opt.state[t]["exp_avg_sq"].numpy(),
                                   rtol=1e-5, atol=1e-9)


def test_frozen_and_gradless_parameters_are_left_alone(rng):
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    model[0].requires_grad_(False)
    before = model[0].weight.numpy().copy()
    opt = optim.Adam(model.parameters(), lr=0.1)
    model(fg.randn(5, 4)).sum().backward()
    opt.step()
    np.testing.assert_array_equal(model[0].weight.numpy(), before)
    assert id(model[0].weight) not in opt.state
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_param_groups_and_state_dict_round_trip(rng):
    a, b = make_params(rng, ((4,), (3, 2)))
    opt = optim.AdamW([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.01)
    assert opt.param_groups[1]["lr"] == 0.5 and opt.param_groups[0]["weight_decay"] == 1e-2
    set_grads([a, b], rng)
    opt.step()
    saved = opt.state_dict()
    assert saved["param_groups"][1]["params"] == [1] and saved["state"][0]["step"] == 1
    a2, b2 = nn.Parameter(a.numpy().copy()), nn.Parameter(b.numpy().copy())
    opt2 = optim.AdamW([{"params": [a2]}, {"params": [b2]}], lr=0.01)
    opt2.load_state_dict(saved)
    assert opt2.param_groups[1]["lr"] == 0.5
    grads = set_grads([a, b], rng)
    for p, g in zip([a2, b2], grads):
        p.grad = fg.tensor(g)
    opt.step()
    opt2.step()
    np.testing.assert_array_equal(a.numpy(), a2.numpy())
    np.testing.assert_array_equal(b.numpy(), b2.numpy())
    with pytest.raises(ValueError, match="parameter groups"):
        optim.AdamW([a2], lr=0.01).load_state_dict(saved)


def test_optimizer_errors(rng):
    p = make_params(rng)
    with pytest.raises(ValueError, match="lr must be >= 0"):
        optim.SGD(p, lr=-1)
    with pytest.raises(ValueError, match="betas"):
        optim.Adam(p, betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.SGD([{"params": p}, {"params": p[:1]}], lr=0.1)


def test_clip_grad_norm(rng):
    params = make_params(rng)
    grads = set_grads(params, rng)
    total = math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads))
    norm = nn.utils.clip_grad_norm_(params, 1.0)
    assert float(norm) == pytest.approx(total, rel=1e-5)
    clipped = math.sqrt(sum(float((p.grad.numpy().astype(np.float64) ** 2).sum()) for p in params))
    assert clipped == pytest.approx(1.0, rel=1e-4)


def sched_values(make, steps, lr=0.1, opt_cls=optim.SGD, **opt_kw):
    p = nn.Parameter(np.zeros(1, np.float32))
    opt = opt_cls([p], lr=lr, **opt_kw)
    sched = make(opt)
    values = []
    for _ in range(steps):
        values.append(opt.param_groups[0]["lr"])
        sched.step()
    return values


@pytest.mark.parametrize("name,kwargs,steps", [
    ("StepLR", {"step_size": 3, "gamma": 0.5}, 10),
    ("CosineAnnealingLR", {"T_max": 7, "eta_min": 0.001}, 7),
    ("LinearLR", {"start_factor": 0.1, "total_iters": 4}, 8),
    ("OneCycleLR", {"max_lr": 1.0, "total_steps": 20}, 19),
])
def test_schedulers_against_torch(name, kwargs, steps):
    torch = pytest.importorskip("torch")
    ours = sched_values(lambda o: getattr(optim.lr_scheduler, name)(o, **kwargs), steps, momentum=0.9)
    tp = torch.zeros(1, requires_grad=True)
    topt = torch.optim.SGD([tp], lr=0.1, momentum=0.9)
    tsched = getattr(torch.optim.lr_scheduler, name)(topt, **kwargs)
    theirs = []
    for _ in range(steps):
        theirs.append(topt.param_groups[0]["lr"])
        topt.step()
        tsched.step()
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)


def test_schedulers_closed_forms():
    assert sched_values(lambda o: optim.lr_scheduler.StepLR(o, 2, 0.1), 5) == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001])
    cos = sched_values(lambda o: optim.lr_scheduler.CosineAnnealingLR(o, T_max=4), 5)
    assert cos[0] == pytest.approx(0.1) and cos[2] == pytest.approx(0.05) and cos[4] == pytest.approx(0.0)
    one = sched_values(lambda o: optim.lr_scheduler.OneCycleLR(o, max_lr=1.0, total_steps=10), 10,
                       opt_cls=optim.Adam)
    assert one[0] == pytest.approx(1.0 / 25) and max(one) == pytest.approx(1.0) and one[-1] < 1e-4
    with pytest.raises(ValueError, match="T_max"):
        optim.lr_scheduler.CosineAnnealingLR(optim.SGD([nn.Parameter(np.zeros(1, np.float32))], lr=1), T_max=0)


def test_training_reduces_loss(rng):
    fg.manual_seed(0)
    x = rng.standard_normal((256, 2)).astype(np.float32)
    y = (x[:, 0] * x[:, 1] > 0).astype(np.int64)  # XOR of signs: not linearly separable
    model = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2))
    opt = optim.Adam(model.parameters(), lr=0.02)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(200):
        opt.zero_grad()
        loss = loss_fn(model(fg.tensor(x)), y)
        loss.backward()
        opt.step()
    accuracy = (model(fg.tensor(x)).numpy().argmax(1) == y).mean()
    assert accuracy > 0.95
