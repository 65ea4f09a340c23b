"""Tensor ops against NumPy, and their gradients against central finite differences in float64."""
import numpy as np
import pytest

import fusegrad as fg
from fusegrad import Tensor
from gradcheck import check_grad, numeric_grad


BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "pow": lambda a, b: a**b,
    "maximum": lambda a, b: fg.maximum(a, b),
    "minimum": lambda a, b: fg.minimum(a, b),
}


@pytest.mark.parametrize("name", list(BINARY))
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((3, 1), (1, 5)), ((), (2, 3))])
def test_binary_grad_with_broadcasting(name, shapes, rng):
    check_grad(BINARY[name], *shapes, rng=rng, positive=name in ("pow", "div"))


@pytest.mark.parametrize("name", list(BINARY))
def test_binary_forward(name, rng):
    a, b = np.abs(rng.standard_normal((5, 6))) + 0.5, np.abs(rng.standard_normal((6,))) + 0.5
    ref = {"add": a + b, "sub": a - b, "mul": a * b, "div": a / b, "pow": a**b,
           "maximum": np.maximum(a, b), "minimum": np.minimum(a, b)}[name]
    out = BINARY[name](fg.tensor(a), fg.tensor(b))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-6, atol=1e-6)  # inputs rounded to float32


def test_reflected_operators_and_scalars(rng):
    a = rng.standard_normal((3, 2))
    t = fg.tensor(a, requires_grad=True)
    out = 2 - t * 3 + 1 / (t * t + 1) + 2**t - t**2 / 4
    ref = 2 - a * 3 + 1 / (a * a + 1) + 2**a - a**2 / 4
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5)
    out.sum().backward()
    dref = -3 - 2 * a / (a * a + 1) ** 2 + np.log(2) * 2**a - a / 2
    np.testing.assert_allclose(t.grad.numpy(), dref, rtol=1e-4, atol=1e-5)
    # NumPy on the left defers to Tensor
    assert isinstance(np.float32(2) * t, Tensor)


UNARY = {
    "neg": (lambda t: -t, False),
    "exp": (lambda t: t.exp(), False),
    "log": (lambda t: t.log(), True),
    "sqrt": (lambda t: t.sqrt(), True),
    "abs": (lambda t: t.abs(), False),
    "clamp": (lambda t: t.clamp(-0.5, 0.7), False),
    "clamp_min": (lambda t: t.clamp(min=0.1), False),
}


@pytest.mark.parametrize("name", list(UNARY))
def test_unary_grad(name, rng):
    fn, positive = UNARY[name]
    check_grad(fn, (4, 5), rng=rng, positive=positive)


REDUCTIONS = {
    "sum": lambda t: t.sum(),
    "sum_axis": lambda t: t.sum(axis=1),
    "sum_axes_keep": lambda t: t.sum(axis=(0, 2), keepdims=True),
    "mean": lambda t: t.mean(axis=-1),
    "var": lambda t: t.var(axis=0),
    "var_all": lambda t: t.var(),
    "max": lambda t: t.max(axis=1).values,
    "min_keep": lambda t: t.min(axis=2, keepdims=True)[0],
    "max_all": lambda t: t.max(),
}


@pytest.mark.parametrize("name", list(REDUCTIONS))
def test_reduction_grad(name, rng):
    check_grad(REDUCTIONS[name], (3, 4, 5), rng=rng)


def test_reductions_forward(rng):
    a = rng.standard_normal((3, 4, 5)).astype(np.float32)
    t = fg.tensor(a)
    np.testing.assert_allclose(t.sum(axis=1).numpy(), a.sum(axis=1), rtol=1e-6)
    np.testing.assert_allclose(t.mean(axis=(0, 2), keepdims=True).numpy(), a.mean(axis=(0, 2), keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(t.var(axis=1).numpy(), a.var(axis=1, ddof=1), rtol=1e-5)
    np.testing.assert_allclose(t.var(axis=1, correction=0).numpy(), a.var(axis=1), rtol=1e-5)
    np.testing.assert_array_equal(t.max(axis=2).values.numpy(), a.max(axis=2))
    np.testing.assert_array_equal(t.argmax(axis=1).numpy(), a.argmax(axis=1))


def test_max_splits_gradient_among_ties():
    t = fg.tensor([1.0, 3.0, 3.0, 2.0], requires_grad=True)
    t.max().backward()
    np.testing.assert_array_equal(t.grad.numpy(), [0, 0.5, 0.5, 0])


SHAPE_OPS = {
    "reshape": lambda t: t.reshape(6, 10),
    "view": lambda t: t.view(-1),
    "permute": lambda t: t.permute(2, 0, 1),
    "transpose": lambda t: t.transpose(0, 2),
    "T": lambda t: t.T,
    "flatten": lambda t: t.flatten(1),
    "unsqueeze_squeeze": lambda t: t.unsqueeze(1).squeeze(1) * t,
    "index": lambda t: t[1:, ::2, -1],
    "int_index": lambda t: t[1] * t[np.int64(2)],
    "ellipsis_none": lambda t: t[..., None, 0] + t[None, 0, ..., 1:3].sum(),
    "fancy_index": lambda t: t[np.array([0, 2, 0]), 1],
    "bool_mask": lambda t: t[np.arange(60).reshape(3, 4, 5) % 3 == 0],
    "cat": lambda t: fg.cat([t, t * 2, t[:, :1]], axis=1),
    "stack": lambda t: fg.stack([t, t.exp()], axis=-1),
}


@pytest.mark.parametrize("name", list(SHAPE_OPS))
def test_shape_op_grad(name, rng):
    check_grad(SHAPE_OPS[name], (3, 4, 5), rng=rng)


def test_shape_ops_forward(rng):
    a = rng.standard_normal((3, 4, 5)).astype(np.float32)
    t = fg.tensor(a)
    assert t.reshape(4, 15).shape == (4, 15)
    np.testing.assert_array_equal(t.permute(2, 0, 1).numpy(), a.transpose(2, 0, 1))
    np.testing.assert_array_equal(t.T.numpy(), a.T)
    np.testing.assert_array_equal(t[1, :, 2:4].numpy(), a[1, :, 2:4])
    np.testing.assert_array_equal(fg.cat([t, t], axis=2).numpy(), np.concatenate([a, a], axis=2))
    np.testing.assert_array_equal(fg.stack([t, t], axis=1).numpy(), np.stack([a, a], axis=1))
    assert t.flatten().shape == (60,) and t.flatten(1).shape == (3, 20)


@pytest.mark.parametrize("shapes", [((4, 5), (5, 3)), ((2, 4, 5), (5, 3)), ((2, 4, 5), (2, 5, 3)),
                                    ((5,), (5, 3)), ((4, 5), (5,)), ((3, 1, 4, 5), (2, 5, 6))])
def test_matmul_grad(shapes, rng):
    check_grad(lambda a, b: a @ b, *shapes, rng=rng)


@pytest.mark.parametrize("name,kwargs", [("relu", {}), ("leaky_relu", {"negative_slope": 0.2}),
                                         ("sigmoid", {}), ("tanh", {}), ("silu", {}), ("gelu", {}),
                                         ("gelu", {"approximate": "tanh"})])
def test_activation_grad_float32(name, kwargs, rng):
    # the kernels are float32: finite differences in float32 with a large step, looser tolerances
    check_grad(lambda t: getattr(t, name)(**kwargs), (6, 7), rng=rng, dtype=np.float32, rtol=2e-2, atol=2e-3)


@pytest.mark.parametrize("fn", [lambda t: t.softmax(axis=0), lambda t: t.softmax(), lambda t: t.log_softmax(),
                                lambda t: t.log_softmax(axis=0)], ids=["softmax0", "softmax", "log_softmax",
                                                                      "log_softmax0"])
def test_softmax_grad_float32(fn, rng):
    check_grad(fn, (4, 5), rng=rng, dtype=np.float32, rtol=2e-2, atol=2e-3)


def test_gradients_accumulate_across_backward_calls():
    t = fg.tensor([1.0, 2.0], requires_grad=True)
    (t * 3).sum().backward()
    (t * t).sum().backward()
    np.testing.assert_allclose(t.grad.numpy(), [3 + 2, 3 + 4])


def test_shared_subexpression_sums_paths():
    x = fg.tensor(2.0, requires_grad=True)
    y = x * x
    z = y * y + y  # x^4 + x^2
    z.backward()
    assert x.grad.item() == pytest.approx(4 * 8 + 2 * 2)


def test_leaf_gradients_never_alias(rng):
    # Leaves adopt a gradient array only when nothing else holds it: an Add hands the same array
    # to both parents, and backward(grad=...) starts from the caller's own array.
    a = fg.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    b = fg.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    g = np.ones((3, 4))
    (a + b).backward(g)
    assert not np.shares_memory(a.grad.data, b.grad.data)
    assert not np.shares_memory(a.grad.data, g) and not np.shares_memory(b.grad.data, g)
    a.grad.data += 1
    np.testing.assert_array_equal(b.grad.numpy(), np.ones((3, 4)))
    np.testing.assert_array_equal(g, np.ones((3, 4)))
    w = fg.tensor(rng.standard_normal((4, 2)), requires_grad=True)
    out = a @ w
    out.backward(np.ones((3, 2)))
    assert not np.shares_memory(w.grad.data, a.data) and not np.shares_memory(w.grad.data, out.data)
    np.testing.assert_allclose(w.grad.numpy(), a.data.T @ np.ones((3, 2)))


def test_long_chain_is_iterative():
    x = fg.tensor(1.0, requires_grad=True)
    y = x
    for _ in range(5000):
        y = y * 1.0001
    y.backward()
    assert x.grad.item() == pytest.approx(1.0001**5000, rel=1e-3)


def test_graph_is_freed_after_backward():
    x = fg.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="already been freed"):
        y.backward()


def test_retain_graph_allows_a_second_backward():
    x = fg.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [4.0, 8.0])


def test_backward_on_non_scalar_needs_grad():
    x = fg.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError, match="scalar output"):
        y.backward()
    y.backward(np.array([1.0, -1.0], np.float32))
    np.testing.assert_allclose(x.grad.numpy(), [2.0, -2.0])
    with pytest.raises(ValueError, match=r"grad has shape \(3,\), expected \(2,\)"):
        (x * 2).backward(np.ones(3, np.float32))


def test_backward_without_graph():
    with pytest.raises(RuntimeError, match="does not require grad"):
        fg.tensor([1.0]).sum().backward()


def test_no_grad_context_and_decorator():
    x = fg.tensor([1.0], requires_grad=True)
    with fg.no_grad():
        y = x * 2
    assert not y.requires_grad and y.is_leaf

    @fg.no_grad()
    def double(t):
        return t * 2

    assert not double(x).requires_grad
    assert fg.is_grad_enabled()
    assert (x * 2).requires_grad


def test_non_leaf_gets_no_grad_and_detach_cuts():
    x = fg.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    z = (y.detach() * y).sum()
    z.backward()
    assert y.grad is None
    np.testing.assert_allclose(x.grad.numpy(), [4.0, 8.0])  # only through the second factor


def test_requires_grad_rules():
    with pytest.raises(TypeError, match="floating-point"):
        fg.tensor([1, 2], requires_grad=True)
    t = fg.tensor([1.0]).requires_grad_()
    assert t.requires_grad
    assert fg.tensor([1, 2]).dtype == np.int64
    assert fg.tensor([1.5]).dtype == np.float32
    assert fg.tensor(np.zeros(2)).dtype == np.float32


def test_creation_and_seed():
    fg.manual_seed(3)
    a = fg.randn(2, 3)
    fg.manual_seed(3)
    b = fg.randn((2, 3))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert fg.zeros(2, 3).shape == (2, 3) and fg.ones(4).numpy().sum() == 4
    assert fg.full((2,), 7.0).numpy().tolist() == [7.0, 7.0]
    assert fg.arange(5).tolist() == [0, 1, 2, 3, 4]
    assert fg.zeros_like(a).shape == a.shape and fg.ones_like(a).numpy().all()
    assert 0 <= fg.rand(100).numpy().min() and fg.rand(100).numpy().max() < 1


def test_conversions_and_dlpack():
    t = fg.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert np.asarray(t).shape == (2, 2)
    assert fg.tensor(5.0).item() == 5.0
    with pytest.raises(ValueError, match="one element"):
        t.item()
    u = fg.from_dlpack(np.arange(3, dtype=np.float32))
    assert u.tolist() == [0, 1, 2]
    assert t.to("cpu") is t and t.cpu() is t and t.device == "cpu"
    with pytest.raises(ValueError, match="device"):
        t.to("tpu")
    assert "tensor(" in repr(t)


def test_from_and_to_torch_zero_copy():
    torch = pytest.importorskip("torch")
    src = torch.arange(6, dtype=torch.float32)
    t = fg.from_dlpack(src)
    src[0] = 42
    assert t.numpy()[0] == 42
    back = torch.from_dlpack(t)
    assert back.data_ptr() == src.data_ptr()


def test_zero_and_setitem():
    t = fg.tensor([1.0, 2.0])
    t[0] = 5.0
    assert t.tolist() == [5.0, 2.0]
    assert t.zero_().tolist() == [0.0, 0.0]
    p = fg.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="in-place"):
        p[0] = 2.0


def test_against_torch_composite(rng):
    torch = pytest.importorskip("torch")
    a = rng.standard_normal((4, 6)).astype(np.float32)
    w = rng.standard_normal((6, 3)).astype(np.float32)
    ta, tw = torch.tensor(a, requires_grad=True), torch.tensor(w, requires_grad=True)
    fa, fw = fg.tensor(a, requires_grad=True), fg.tensor(w, requires_grad=True)
    (torch.log_softmax(torch.tanh(ta @ tw) * 2, dim=-1).max(dim=1).values.mean()).backward()
    ((fa @ fw).tanh() * 2).log_softmax().max(axis=1).values.mean().backward()
    np.testing.assert_allclose(fa.grad.numpy(), ta.grad.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fw.grad.numpy(), tw.grad.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.cuda
def test_tensor_on_gpu_round_trip(rng):
    a = rng.standard_normal((8, 5)).astype(np.float32)
    t = fg.tensor(a, requires_grad=True)
    g = t.cuda()
    assert g.device == "cuda:0"
    ((g.relu() * 2).sum()).backward()
    assert t.grad.device == "cpu"
    np.testing.assert_allclose(t.grad.numpy(), 2 * (a > 0))
