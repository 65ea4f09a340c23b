"""In-place ops (add_ sub_ mul_ div_ clamp_ fmod_ remainder_ zero_ fill_) against PyTorch:
values, gradients through tensors changed in place, and PyTorch's errors (a leaf that requires
grad, a result of another shape or of a dtype the tensor cannot hold)."""
import numpy as np
import pytest

import fusegrad as fg

torch = pytest.importorskip("torch")

R = np.random.default_rng(5)
A, B = R.standard_normal((3, 4)), R.uniform(0.5, 2.0, (4,))

OPS = {
    "add_": lambda t, o: t.add_(o, alpha=0.5),
    "sub_": lambda t, o: t.sub_(o),
    "mul_": lambda t, o: t.mul_(o),
    "div_": lambda t, o: t.div_(o),
    "fmod_": lambda t, o: t.fmod_(o),
    "remainder_": lambda t, o: t.remainder_(o),
    "clamp_": lambda t, o: t.clamp_(-0.3, 0.4),
    "fill_": lambda t, o: t.fill_(1.5),
    "zero_": lambda t, o: t.zero_(),
}


def run(lib, name, other_grad):
    """A leaf x, y = x * 2 changed in place by `name`, then used: (x, other, out)."""
    x = lib.tensor(A, dtype=lib.float64, requires_grad=True)
    other = lib.tensor(B, dtype=lib.float64, requires_grad=other_grad)
    y = x * 2
    same = OPS[name](y, other)
    assert same is y
    out = (y * y).sum() + x.sum()
    out.backward()
    return x, other, y


@pytest.mark.parametrize("other_grad", [False, True])
@pytest.mark.parametrize("name", sorted(OPS))
def test_in_place_on_a_graph_matches_torch(name, other_grad):
    fx, fo, fy = run(fg, name, other_grad)
    tx, to, ty = run(torch, name, other_grad)
    np.testing.assert_allclose(fy.detach().numpy(), ty.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(fx.grad.numpy(), tx.grad.numpy(), rtol=1e-12)
    if other_grad and to.grad is not None:
        np.testing.assert_allclose(fo.grad.numpy(), to.grad.numpy(), rtol=1e-12)
    assert fy.requires_grad and not fy.is_leaf


def test_a_plain_tensor_takes_a_gradient_from_the_other_operand():
    acc, w = fg.zeros(3, dtype=fg.float64), fg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    acc.add_(w).mul_(w)
    acc.sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), [2.0, 4.0, 6.0])


def test_leaf_that_requires_grad_raises_unless_no_grad():
    p = fg.tensor([1.0, 2.0], requires_grad=True)
    for op in (lambda: p.add_(1), lambda: p.mul_(2), lambda: p.zero_(), lambda: p.fill_(3), lambda: p.clamp_(0, 1)):
        with pytest.raises(RuntimeError, match="a leaf Variable that requires grad is being used in an in-place"):
            op()
    data = p.data
    with fg.no_grad():
        p.sub_(fg.tensor([0.5, 0.5]), alpha=2)
    assert p.tolist() == [0.0, 1.0] and p.data is data and p.is_leaf


def test_without_a_graph_the_array_is_written_in_place():
    t = fg.tensor(np.arange(6.0).reshape(2, 3))
    view = t.data[0]
    t.mul_(10).add_(fg.tensor([1.0, 2.0, 3.0]))
    assert view.tolist() == [1.0, 12.0, 23.0]
    assert not t.requires_grad
    i = fg.tensor([7, -7, 5], dtype=fg.int64)
    i.fmod_(3).add_(1)
    assert i.tolist() == torch.tensor([7, -7, 5]).fmod_(3).add_(1).tolist() and i.dtype == np.int64


def test_errors_match_torch():
    t = fg.zeros(3)
    with pytest.raises(RuntimeError, match=r"output with shape \[3\] doesn't match the broadcast shape \[2, 3\]"):
        t.add_(fg.ones(2, 3))
    with pytest.raises(RuntimeError):
        torch.zeros(3).add_(torch.ones(2, 3))
    i = fg.tensor([1, 2], dtype=fg.int64)
    with pytest.raises(RuntimeError, match="can't be cast to the desired output type int64"):
        i.add_(0.5)
    with pytest.raises(RuntimeError, match="can't be cast to the desired output type int64"):
        i.div_(2)
    with pytest.raises(RuntimeError):
        torch.tensor([1, 2]).div_(2)
    i.mul_(3)
    assert i.tolist() == [3, 6]


def test_fmod_matches_torch():
    a, b = R.standard_normal(7) * 5, np.array([2.0, -2.0, 3.0, -1.5, 0.7, 4.0, -3.0])
    fa, fb = fg.tensor(a, dtype=fg.float64, requires_grad=True), fg.tensor(b, dtype=fg.float64, requires_grad=True)
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    fo, to = fg.fmod(fa, fb), torch.fmod(ta, tb)
    np.testing.assert_allclose(fo.numpy(), to.detach().numpy())
    fo.sum().backward()
    to.sum().backward()
    np.testing.assert_allclose(fa.grad.numpy(), ta.grad.numpy())
    np.testing.assert_allclose(fb.grad.numpy(), tb.grad.numpy())
