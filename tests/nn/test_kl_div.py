"""nn.KLDivLoss / F.kl_div: values against a float64 reference written here, gradients against
finite differences, and both against torch.nn.KLDivLoss for every reduction and log_target."""
import warnings

import numpy as np
import pytest

import fusegrad as fg
from fusegrad import nn
from fusegrad.nn import functional as F
from gradcheck import check_grad

R = np.random.default_rng(8)
REDUCTIONS = ["mean", "batchmean", "sum", "none"]


def reference(log_q, p, reduction, log_target):
    """KL pointwise: p * (log p - log q), with 0 * log 0 = 0."""
    if log_target:
        pointwise = np.exp(p) * (p - log_q)
    else:
        pointwise = np.where(p == 0, 0.0, p * np.log(np.where(p == 0, 1.0, p))) - p * log_q
    return {"mean": pointwise.mean(), "batchmean": pointwise.sum() / log_q.shape[0], "sum": pointwise.sum(),
            "none": pointwise}[reduction]


def distributions(shape, zeros=False):
    logits = R.standard_normal(shape)
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    if zeros:
        p[0, :2] = 0.0  # classes the target rules out: their terms are 0, not NaN
        p[0] /= p[0].sum()
    log_q = R.standard_normal(shape)
    return log_q - np.log(np.exp(log_q).sum(-1, keepdims=True)), p


@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_values_against_the_reference(reduction, log_target):
    log_q, p = distributions((5, 7), zeros=not log_target)
    target = np.log(p) if log_target else p
    for dtype in (np.float64, np.float32):
        got = nn.KLDivLoss(reduction, log_target)(fg.tensor(log_q, dtype=dtype), fg.tensor(target, dtype=dtype))
        assert got.dtype == dtype and np.all(np.isfinite(got.numpy()))
        np.testing.assert_allclose(got.numpy(), reference(log_q, target, reduction, log_target),
                                   rtol=1e-12 if dtype == np.float64 else 1e-5, atol=1e-7)


def test_batchmean_is_the_kl_divergence_per_sample():
    log_q, p = distributions((4, 6))
    per_row = (p * (np.log(p) - log_q)).sum(-1)
    got = F.kl_div(fg.tensor(log_q, dtype=np.float64), fg.tensor(p, dtype=np.float64), reduction="batchmean")
    np.testing.assert_allclose(got.item(), per_row.mean(), rtol=1e-12)
    same = F.kl_div(fg.tensor(np.log(p)), fg.tensor(p), reduction="batchmean")
    assert abs(same.item()) < 1e-6


@pytest.mark.parametrize("log_target", [False, True])
def test_gradients_against_finite_differences(log_target):
    rng = np.random.default_rng(3)
    # positive=True keeps the probability targets away from 0 (where the log's derivative blows up)
    check_grad(lambda q, p: F.kl_div(q, p, "none", log_target), (3, 4), (3, 4), rng=rng, positive=True)
    check_grad(lambda q, p: F.kl_div(q, p, "batchmean", log_target), (3, 4), (3, 4), rng=rng, positive=True)


def test_errors():
    with pytest.raises(ValueError, match="'mean', 'batchmean', 'sum' or 'none'"):
        nn.KLDivLoss("average")
    with pytest.raises(ValueError, match="'mean', 'batchmean', 'sum' or 'none'"):
        F.kl_div(fg.zeros(2, 3), fg.zeros(2, 3), reduction="batch_mean")
    with pytest.raises(ValueError, match=r"input shape \(2, 3\) and target shape \(2, 4\) differ"):
        F.kl_div(fg.zeros(2, 3), fg.zeros(2, 4))
    assert repr(nn.KLDivLoss("batchmean", log_target=True)) == "KLDivLoss(reduction='batchmean', log_target=True)"


@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_against_torch(reduction, log_target):
    torch = pytest.importorskip("torch")
    logits, p = R.standard_normal((6, 5)), distributions((6, 5), zeros=not log_target)[1]
    target = np.log(p) if log_target else p
    f_in, f_t = fg.tensor(logits, dtype=np.float64, requires_grad=True), fg.tensor(target, dtype=np.float64,
                                                                                   requires_grad=True)
    t_in, t_t = torch.tensor(logits, requires_grad=True), torch.tensor(target, requires_grad=True)
    ours = nn.KLDivLoss(reduction, log_target)(F.log_softmax(f_in, -1), f_t)
    with warnings.catch_warnings():  # PyTorch's note that "mean" is not the KL divergence
        warnings.simplefilter("ignore", UserWarning)
        theirs = torch.nn.KLDivLoss(reduction=reduction, log_target=log_target)(torch.log_softmax(t_in, -1), t_t)
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-12, atol=1e-14)
    w = R.standard_normal(ours.shape)
    (ours * fg.tensor(w, dtype=np.float64)).sum().backward()
    (theirs * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(f_in.grad.numpy(), t_in.grad.numpy(), rtol=1e-10, atol=1e-12)
    # The target's gradient where the target is positive (at 0, PyTorch's is NaN).
    positive = target != 0
    np.testing.assert_allclose(f_t.grad.numpy()[positive], t_t.grad.numpy()[positive], rtol=1e-10, atol=1e-12)

