"""nn modules and losses: against PyTorch with copied weights where importable, float64 finite
differences otherwise; Module bookkeeping (parameters, state_dict, freezing, train/eval)."""
import numpy as np
import pytest

import fusegrad as fg
from fusegrad.autograd.functions import conv as conv_functions
from fusegrad.autograd.functions import gemm as gemm_functions
from fusegrad import nn
from fusegrad.nn import functional as F


def test_linear_forward_backward_against_numpy(rng):
    m = nn.Linear(7, 5)
    x = rng.standard_normal((3, 4, 7)).astype(np.float32)
    w, b = m.weight.numpy().astype(np.float64), m.bias.numpy().astype(np.float64)
    t = fg.tensor(x, requires_grad=True)
    y = m(t)
    np.testing.assert_allclose(y.numpy(), x @ w.T + b, rtol=1e-5, atol=1e-6)
    g = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(g)
    g2, x2 = g.reshape(-1, 5).astype(np.float64), x.reshape(-1, 7).astype(np.float64)
    np.testing.assert_allclose(t.grad.numpy(), (g2 @ w).reshape(x.shape), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(m.weight.grad.numpy(), g2.T @ x2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(m.bias.grad.numpy(), g2.sum(0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("act", ["relu", "leaky_relu", "sigmoid", "tanh", "silu", "gelu"])
def test_linear_with_activation_matches_unfused(act, rng):
    fg.manual_seed(0)
    m = nn.Linear(6, 4, activation=act)
    x = rng.standard_normal((9, 6)).astype(np.float32)
    a, b = fg.tensor(x, requires_grad=True), fg.tensor(x, requires_grad=True)
    fused = m(a)
    plain = getattr(F.linear(b, m.weight, m.bias), act)()
    np.testing.assert_allclose(fused.numpy(), plain.numpy(), rtol=1e-6, atol=1e-6)
    g = rng.standard_normal(fused.shape).astype(np.float32)
    fused.backward(g)
    w_grad = m.weight.grad.numpy().copy()
    m.zero_grad()
    plain.backward(g)
    np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(w_grad, m.weight.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_sequential_fuses_linear_and_activation(rng):
    fg.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3), nn.GELU())
    x = fg.tensor(rng.standard_normal((4, 5)), requires_grad=True)
    y = model(x)
    h = x
    for m in model:
        h = m(h)  # module by module, no fusion
    np.testing.assert_allclose(y.numpy(), h.numpy(), rtol=1e-6, atol=1e-6)
    fused = nn.Sequential(nn.Linear(5, 8), nn.ReLU())(x)
    assert type(fused._ctx) is gemm_functions.Linear  # one op: the ReLU ran in the GEMM's store
    assert len(model) == 6 and isinstance(model[1], nn.ReLU) and len(model[:2]) == 2


@pytest.mark.parametrize("act, pool, bias", [(nn.ReLU(), 2, True), (nn.LeakyReLU(0.1), 3, False),
                                            (nn.GELU(), 2, True)], ids=["relu", "leaky_relu_pool3", "gelu"])
def test_sequential_conv_act_pool_matches_module_by_module(act, pool, bias, rng):
    # Conv -> ReLU/LeakyReLU -> MaxPool runs as one fused kernel (activation after the max, the
    # conv output never written); outputs and every gradient must be those of the three modules
    # run one by one (negative pre-activations make zero ties). GELU does not commute with max
    # and must be left alone.
    fg.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=bias), act, nn.MaxPool2d(pool), nn.Flatten())
    xs = rng.standard_normal((2, 9, 10, 3)).astype(np.float32)
    grads = []
    for fused in (True, False):
        model.zero_grad()
        x = fg.tensor(xs, requires_grad=True)
        if fused:
            y = model(x)
        else:
            y = x
            for m in model:
                y = m(y)
        (y * y).sum().backward()
        grads.append([y.numpy(), x.grad.numpy()] + [p.grad.numpy() for p in model.parameters()])
    for got, want in zip(*grads):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    pooled = model[:3](fg.tensor(xs))
    fused_op = type(pooled._ctx) is conv_functions.Conv2dMaxPool
    assert fused_op == (type(act) is not nn.GELU)
    with fg.no_grad():  # inference: the fused kernel skips the pool indices, same values
        np.testing.assert_allclose(model(fg.tensor(xs)).numpy(), grads[1][0], rtol=1e-5, atol=1e-6)


def test_module_bookkeeping():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
            self.head = nn.Linear(4, 2, bias=False)
            self.scale = 2.0

        def forward(self, x):
            return self.head(self.body(x)) * self.scale

    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["body.0.weight", "body.0.bias", "head.weight"]
    assert [n for n, _ in net.named_modules()] == ["", "body", "body.0", "body.1", "head"]
    assert len(list(net.children())) == 2
    assert net.head.bias is None
    net.eval()
    assert not net.training and not net.body[0].training
    net.train()
    assert net.body[1].training
    assert "Linear(in_features=3, out_features=4, bias=True)" in repr(net)
    seen = []
    net.apply(lambda m: seen.append(type(m).__name__))
    assert seen[-1] == "Net"


def test_state_dict_round_trip_and_errors():
    fg.manual_seed(0)
    a = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    b = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    b.load_state_dict(a.state_dict())
    x = fg.randn(5, 3)
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())
    state = a.state_dict()
    state.pop("2.bias")
    before = b[2].bias.numpy().copy()
    with pytest.raises(KeyError, match=r"missing keys: \['2.bias'\]"):
        b.load_state_dict(state)
    state["2.bias"] = np.zeros(2, np.float32)
    state["extra"] = np.zeros(1, np.float32)
    with pytest.raises(KeyError, match=r"unexpected keys: \['extra'\]"):
        b.load_state_dict(state)
    assert b.load_state_dict(state, strict=False) == ([], ["extra"])
    state = a.state_dict()
    state["0.weight"] = np.zeros((4, 4), np.float32)
    with pytest.raises(ValueError, match=r"'0.weight' has shape \(4, 4\) in the state dict but \(4, 3\)"):
        b.load_state_dict(state)
    np.testing.assert_array_equal(b[2].bias.numpy(), np.zeros(2))  # from the strict=False load
    assert before.shape == (2,)


def test_freezing_gives_no_gradient():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    model[0].requires_grad_(False)
    loss = model(fg.randn(6, 3)).sum()
    loss.backward()
    assert model[0].weight.grad is None and model[0].bias.grad is None
    assert model[2].weight.grad is not None


def test_default_init_matches_pytorch_bounds():
    fg.manual_seed(0)
    m = nn.Linear(400, 300)
    bound = 1 / np.sqrt(400)
    w = m.weight.numpy()
    assert w.shape == (300, 400) and np.abs(w).max() <= bound
    assert np.abs(w).max() > 0.95 * bound and abs(w.std() - bound / np.sqrt(3)) < 0.01 * bound * 3


def test_init_functions():
    fg.manual_seed(0)
    t = nn.Parameter(np.zeros((256, 512), np.float32))
    nn.init.kaiming_normal_(t, nonlinearity="relu")
    assert abs(t.numpy().std() - np.sqrt(2 / 512)) < 0.003
    nn.init.xavier_uniform_(t)
    assert np.abs(t.numpy()).max() <= np.sqrt(6 / (256 + 512))
    nn.init.zeros_(t)
    assert not t.numpy().any()
    conv = nn.Parameter(np.zeros((3, 3, 16, 32), np.float32))  # HWIO: fan_in = 3*3*16
    nn.init.kaiming_uniform_(conv, nonlinearity="relu")
    assert np.abs(conv.numpy()).max() <= np.sqrt(6 / (9 * 16))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        nn.init.xavier_uniform_(nn.Parameter(np.zeros(3, np.float32)))


def test_dropout_train_and_eval():
    fg.manual_seed(0)
    d = nn.Dropout(0.25)
    x = fg.ones(1000, 100, requires_grad=True)
    y = d(x)
    kept = y.numpy() != 0
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_allclose(y.numpy()[kept], 1 / 0.75, rtol=1e-6)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy() != 0, kept)
    d.eval()
    assert d(x) is x
    with pytest.raises(ValueError, match="dropout probability"):
        nn.Dropout(1.0)


# --- losses -------------------------------------------------------------------------------------


def log_softmax64(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_against_float64(reduction, smoothing, rng):
    z = (rng.standard_normal((7, 5)) * 3).astype(np.float32)
    labels = rng.integers(0, 5, 7)
    t = fg.tensor(z, requires_grad=True)
    loss = nn.CrossEntropyLoss(reduction, smoothing)(t, labels)
    lp = log_softmax64(z.astype(np.float64))
    target = np.full((7, 5), smoothing / 5)
    target[np.arange(7), labels] += 1 - smoothing
    rows = -(target * lp).sum(1)
    expected = rows.mean() if reduction == "mean" else rows.sum() if reduction == "sum" else rows
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)
    g = np.ones(7) if reduction == "none" else 1.0
    loss.backward(np.asarray(g, np.float32) if reduction == "none" else None)
    grad = np.exp(lp) - target
    if reduction == "mean":
        grad /= 7
    np.testing.assert_allclose(t.grad.numpy(), grad, rtol=1e-5, atol=1e-7)


def test_cross_entropy_large_logits_are_stable():
    z = np.array([[1000.0, 0.0, -1000.0], [0.0, 1e4, 0.0]], np.float32)
    loss = F.cross_entropy(fg.tensor(z), np.array([0, 2]), reduction="none")
    np.testing.assert_allclose(loss.numpy(), [0.0, 1e4], rtol=1e-6)


def test_cross_entropy_errors():
    z = fg.randn(3, 4)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\)"):
        F.cross_entropy(z, np.array([0, 4, 1]))
    with pytest.raises(TypeError, match="integer class labels"):
        F.cross_entropy(z, np.array([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"expected shape \(3,\)"):
        F.cross_entropy(z, np.array([0, 1]))
    with pytest.raises(ValueError, match="reduction"):
        nn.CrossEntropyLoss(reduction="avg")


LOSSES = ["mse", "l1", "bce", "bce_logits", "nll"]


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_losses_against_torch(name, reduction, rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((6, 4)).astype(np.float32)
    if name == "bce":
        x = 1 / (1 + np.exp(-x))
    target = rng.random((6, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 6)
    ours_in, theirs_in = fg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    tt = torch.tensor(target)
    if name == "mse":
        a, b = nn.MSELoss(reduction)(ours_in, target), torch.nn.MSELoss(reduction=reduction)(theirs_in, tt)
    elif name == "l1":
        a, b = nn.L1Loss(reduction)(ours_in, target), torch.nn.L1Loss(reduction=reduction)(theirs_in, tt)
    elif name == "bce":
        a, b = nn.BCELoss(reduction)(ours_in, target), torch.nn.BCELoss(reduction=reduction)(theirs_in, tt)
    elif name == "bce_logits":
        a = nn.BCEWithLogitsLoss(reduction)(ours_in, target)
        b = torch.nn.BCEWithLogitsLoss(reduction=reduction)(theirs_in, tt)
    else:
        a = nn.NLLLoss(reduction)(ours_in.log_softmax(), labels)
        b = torch.nn.NLLLoss(reduction=reduction)(theirs_in.log_softmax(-1), torch.tensor(labels))
    np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-5, atol=1e-6)
    g = rng.standard_normal(a.shape).astype(np.float32)
    a.backward(g if a.ndim else None)
    b.backward(torch.tensor(g) if b.ndim else None)
    np.testing.assert_allclose(ours_in.grad.numpy(), theirs_in.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_mlp_against_torch_with_copied_weights(rng):
    torch = pytest.importorskip("torch")
    fg.manual_seed(0)
    ours = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 8), nn.Sigmoid(), nn.Linear(8, 3))
    theirs = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8),
                                 torch.nn.Sigmoid(), torch.nn.Linear(8, 3))
    theirs.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in ours.state_dict().items()})
    x = rng.standard_normal((12, 10)).astype(np.float32)
    y = rng.integers(0, 3, 12)
    loss = nn.CrossEntropyLoss(label_smoothing=0.05)(ours(fg.tensor(x)), y)
    tloss = torch.nn.CrossEntropyLoss(label_smoothing=0.05)(theirs(torch.tensor(x)), torch.tensor(y))
    loss.backward()
    tloss.backward()
    assert loss.item() == pytest.approx(tloss.item(), rel=1e-5)
    for (name, p), tp in zip(ours.named_parameters(), theirs.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-4, atol=1e-6, err_msg=name)


def test_errors_in_fused_layers_name_the_users_modules():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 2), nn.ReLU())
    with pytest.raises(ValueError, match=r"^Sequential\[0\] Conv2d, fused with \[1\] ReLU, \[2\] MaxPool2d: input "
                                         r"\(2, 9, 9, 4\) has 4 channels"):
        model(fg.randn(2, 9, 9, 4))
    with pytest.raises(ValueError, match=r"^Sequential\[4\] Linear, fused with \[5\] ReLU: input has 128 features"):
        model(fg.randn(2, 10, 10, 3))


def test_nchw_input_gets_a_hint():
    with pytest.raises(ValueError, match=r"looks like NCHW: use x.transpose\(0, 2, 3, 1\)"):
        nn.Conv2d(3, 8, 3)(fg.randn(2, 3, 16, 16))
    with pytest.raises(ValueError, match=r"looks like NCHW: use x.permute\(0, 2, 3, 1\)"):
        nn.BatchNorm2d(3)(fg.randn(2, 3, 16, 16))
