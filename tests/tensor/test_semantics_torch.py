"""The expressions that used to give silently wrong answers, each against PyTorch (issue 16,
"Wrong today"): comparisons, dtype promotion, squeeze/unsqueeze/sum dims, matmul shapes, pow
gradients at special points, max/min(dim), mixed advanced indexing, relu_backward at NaN."""
import numpy as np
import pytest

import fusegrad as fg
from fusegrad import ops

torch = pytest.importorskip("torch")


def same(f, t, exact_dtype=True):
    """fusegrad tensor f equals torch tensor t: values, shape and dtype."""
    t = t.detach()
    assert f.shape == tuple(t.shape)
    if exact_dtype:
        assert f.dtype == np.dtype(str(t.dtype).replace("torch.", "")), (f.dtype, t.dtype)
    rtol = 1e-3 if f.dtype == np.float16 else 1e-5  # PyTorch divides float16 by a scalar as a * (1 / b)
    np.testing.assert_allclose(f.numpy().astype(np.float64), t.numpy().astype(np.float64), rtol=rtol, atol=1e-6,
                               equal_nan=True)


A = np.array([[1.0, 2.0, np.nan], [-1.0, 2.0, 3.0]], np.float32)
B = np.array([[1.0, 0.0, np.nan], [2.0, 2.0, -3.0]], np.float32)


@pytest.mark.parametrize("op", ["==", "!=", "<", "<=", ">", ">="])
@pytest.mark.parametrize("other", ["tensor", 2, 2.0, "int_tensor"])
def test_comparisons_are_elementwise_bool_tensors(op, other):
    fa, ta = fg.tensor(A), torch.tensor(A)
    if other == "tensor":
        fo, to = fg.tensor(B), torch.tensor(B)
    elif other == "int_tensor":
        fo, to = fg.tensor([1, 2, 3], dtype="int32"), torch.tensor([1, 2, 3], dtype=torch.int32)
    else:
        fo = to = other
    fr, tr = eval(f"fa {op} fo"), eval(f"ta {op} to")
    assert isinstance(fr, fg.Tensor)
    same(fr, tr)
    # reflected: a scalar on the left
    if not isinstance(fo, fg.Tensor):
        same(eval(f"fo {op} fa"), eval(f"to {op} ta"))


@pytest.mark.parametrize("op", ["&", "|", "^"])
def test_logical_operators_on_bool_tensors(op):
    x, y = np.array([True, True, False, False]), np.array([True, False, True, False])
    same(eval(f"fg.tensor(x) {op} fg.tensor(y)"), eval(f"torch.tensor(x) {op} torch.tensor(y)"))
    same(eval(f"fg.tensor(x) {op} True"), eval(f"torch.tensor(x) {op} True"))
    same(~fg.tensor(x), ~torch.tensor(x))
    i = np.array([3, 5, -2], np.int32)
    same(eval(f"fg.tensor(i) {op} fg.tensor(i[::-1].copy())"), eval(f"torch.tensor(i) {op} torch.tensor(i[::-1].copy())"))
    with pytest.raises(RuntimeError):
        eval(f"fg.tensor([1.0]) {op} fg.tensor([2.0])")


def test_truth_value_of_a_tensor():
    assert bool(fg.tensor([2.0]) == 2.0) is True
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(fg.tensor([1.0, 2.0]) == 1.0)
    assert (fg.tensor([1.0]) == None) is False  # noqa: E711 - as in PyTorch


DTYPES = ["bool", "uint8", "int32", "int64", "float16", "float32", "float64"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["+", "-", "*", "/", "**", "//", "%"])
@pytest.mark.parametrize("scalar", [2, 2.5, True])
def test_promotion_with_python_scalars(dtype, op, scalar):
    data = np.array([1, 2, 3]).astype(dtype)
    ft, tt = fg.tensor(data, dtype=data.dtype), torch.tensor(data)
    try:
        expected = eval(f"tt {op} scalar")
    except RuntimeError:
        with pytest.raises((RuntimeError, TypeError)):
            eval(f"ft {op} scalar")
        return
    same(eval(f"ft {op} scalar"), expected)
    try:
        expected = eval(f"scalar {op} tt")
    except RuntimeError:
        return
    same(eval(f"scalar {op} ft"), expected)


@pytest.mark.parametrize("left", DTYPES)
@pytest.mark.parametrize("right", DTYPES)
@pytest.mark.parametrize("right_ndim", [0, 1])
def test_promotion_between_tensors(left, right, right_ndim):
    a = np.array([1, 2, 3]).astype(left)
    b = (np.array(2) if right_ndim == 0 else np.array([1, 2, 1])).astype(right)
    for op in ["+", "*", "/"]:
        ta, tb = torch.tensor(a), torch.tensor(b)
        try:
            expected = eval(f"ta {op} tb")
        except RuntimeError:
            continue
        same(eval(f"fg.tensor(a, dtype=a.dtype) {op} fg.tensor(b, dtype=b.dtype)"), expected)


def test_no_float64_unless_asked():
    i = fg.tensor([1, 2, 3], dtype="int32")
    assert (i / 2).dtype == np.float32 and (i / i).dtype == np.float32
    assert (i ** 2).dtype == np.int32 and (i + 1).dtype == np.int32 and (i * 1.5).dtype == np.float32
    assert i.sqrt().dtype == np.float32 and i.float().mean().dtype == np.float32
    assert fg.arange(0, 1, 0.25).dtype == np.float32 and fg.arange(3).dtype == np.int64


@pytest.mark.parametrize("shape", [(), (1,), (3, 1, 4), (1, 1)])
def test_squeeze_unsqueeze_dims(shape):
    x = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    n = len(shape)
    for d in range(-n - 3, n + 3):
        for name, low, high in [("squeeze", -max(n, 1), max(n, 1)), ("unsqueeze", -n - 1, n + 1)]:
            if low <= d < high:
                same(getattr(fg.tensor(x), name)(d), getattr(torch.tensor(x), name)(d))
            else:
                with pytest.raises(IndexError, match="Dimension out of range"):
                    getattr(fg.tensor(x), name)(d)
                with pytest.raises(IndexError):
                    getattr(torch.tensor(x), name)(d)


def test_zero_dim_reductions():
    f, t = fg.tensor(3.0), torch.tensor(3.0)
    for d in (0, -1):
        same(f.sum(d), t.sum(d))
        same(f.squeeze(d), t.squeeze(d))
        same(f.mean(d), t.mean(d))
        same(f.max(d).values, t.max(d).values)
        same(f.argmax(d), t.argmax(d))
    with pytest.raises(IndexError):
        f.sum(1)


MATMUL_SHAPES = [((4,), (4,)), ((3, 4), (4,)), ((4,), (4, 5)), ((3, 4), (4, 5)), ((2, 3, 4), (4,)),
                 ((4,), (2, 4, 5)), ((2, 3, 4), (2, 4, 5)), ((2, 1, 3, 4), (5, 4, 2)), ((3, 4), (2, 4, 5)),
                 ((2, 3, 4), (4, 5))]


@pytest.mark.parametrize("sa,sb", MATMUL_SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_shapes_forward_and_backward(sa, sb, dtype, rng):
    a, b = rng.standard_normal(sa).astype(dtype), rng.standard_normal(sb).astype(dtype)
    fa, fb = fg.tensor(a, requires_grad=True, dtype=dtype), fg.tensor(b, requires_grad=True, dtype=dtype)
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    fo, to = fa @ fb, ta @ tb
    same(fo, to)
    (fo * fo).sum().backward()
    (to * to).sum().backward()
    same(fa.grad, ta.grad)
    same(fb.grad, tb.grad)


def test_matmul_errors():
    with pytest.raises((RuntimeError, ValueError)):
        fg.tensor(np.ones((3, 4), np.float32)) @ fg.tensor(np.ones((5, 2), np.float32))
    with pytest.raises((RuntimeError, ValueError)):
        fg.tensor(2.0) @ fg.tensor([1.0])


def _grads(fn, *arrays):
    fts = [fg.tensor(a, requires_grad=True, dtype=np.float64) for a in arrays]
    tts = [torch.tensor(a, requires_grad=True, dtype=torch.float64) for a in arrays]
    fn(*fts).sum().backward()
    fn(*tts).sum().backward()
    for f, t in zip(fts, tts):
        same(f.grad, t.grad)


def test_pow_gradients_at_special_points():
    x = np.array([0.0, -2.0, 1.5, -0.0, 3.0])
    y = np.array([0.0, 0.5, 2.0, 3.0, -1.0])
    _grads(lambda a: a ** 0, x)
    _grads(lambda a: a ** 0.0, x)
    _grads(lambda a: a ** 2, x)
    _grads(lambda a: a ** 1, x)
    _grads(lambda a: a ** 3.5, np.abs(x))
    _grads(lambda a, b: a ** b, x, y)
    _grads(lambda b: (-2) ** b, y)
    _grads(lambda b: 0 ** b, y)
    _grads(lambda b: 2.0 ** b, y)


def test_integer_power_errors_like_torch():
    with pytest.raises(RuntimeError, match="negative integer powers"):
        fg.tensor([2, 3]) ** -1
    with pytest.raises(RuntimeError):
        torch.tensor([2, 3]) ** -1


@pytest.mark.parametrize("name", ["max", "min"])
def test_max_min_with_dim_return_values_and_indices(name, rng):
    x = rng.integers(0, 3, (4, 5)).astype(np.float64)  # ties
    f, t = fg.tensor(x, requires_grad=True, dtype=np.float64), torch.tensor(x, requires_grad=True)
    for dim in (0, 1, -1):
        for keepdim in (False, True):
            fr, tr = getattr(f, name)(dim, keepdim), getattr(t, name)(dim, keepdim)
            same(fr.values, tr.values)
            same(fr.indices, tr.indices)
            fv, fi = fr
            assert fv is fr[0] and fi is fr[1]
            same(getattr(f, name)(dim=dim, keepdim=keepdim)[0], tr[0])
    getattr(f, name)(1).values.sum().backward()
    getattr(t, name)(1).values.sum().backward()
    same(f.grad, t.grad)  # to the index only
    f.grad = None
    t.grad = None
    getattr(f, name)().backward()
    getattr(t, name)().backward()
    same(f.grad, t.grad)  # split among ties
    assert getattr(f, name)().ndim == 0


INDEXES = [
    lambda L: (0, slice(None), L([0, 2, 1])),
    lambda L: (slice(None), 1, L([0, 2])),
    lambda L: (L([0, 1]), slice(None), L([1, 2])),
    lambda L: (L([0, 1]), L([1, 2])),
    lambda L: (1, L([0, 2]), slice(1, 3)),
    lambda L: (slice(None), L([1, 0]), 2),
    lambda L: (Ellipsis, 1, L([0, 3])),
    lambda L: (0, None, slice(None), L([1, 1])),
    lambda L: (L([[0, 1], [1, 0]]), 0, slice(None)),
]


@pytest.mark.parametrize("k", range(len(INDEXES)))
def test_advanced_indexing_follows_torch(k, rng):
    x = rng.standard_normal((2, 3, 4))
    f, t = fg.tensor(x, requires_grad=True, dtype=np.float64), torch.tensor(x, requires_grad=True)
    fo = f[INDEXES[k](lambda v: fg.tensor(np.array(v)))]
    to = t[INDEXES[k](lambda v: torch.tensor(v))]
    same(fo, to)
    same(f[INDEXES[k](list)], to)  # Python lists as index arrays too
    w = rng.standard_normal(to.shape)
    (fo * fg.tensor(w, dtype=np.float64)).sum().backward()
    (to * torch.tensor(w)).sum().backward()
    same(f.grad, t.grad)
    with pytest.raises(IndexError):
        f[0, :, [7]]


def test_relu_backward_passes_the_gradient_at_nan():
    x = np.array([np.nan, -1.0, 0.0, -0.0, 2.0] * 7, np.float32)
    g = np.arange(35, dtype=np.float32) + 1
    t = torch.tensor(x, requires_grad=True)
    torch.relu(t).backward(torch.tensor(g))
    np.testing.assert_array_equal(ops.relu_backward(g, x), t.grad.numpy())
    f = fg.tensor(x, requires_grad=True)
    f.relu().backward(g)
    np.testing.assert_array_equal(f.grad.numpy(), t.grad.numpy())


def test_iteration_membership_format_and_std_of_a_constant():
    assert [x.item() for x in fg.tensor([1, 2])] == [x.item() for x in torch.tensor([1, 2])]
    with pytest.raises(TypeError):
        list(fg.tensor(1.0))
    assert (2 in fg.tensor([1, 2])) is True and (5 in fg.tensor([1, 2])) is False
    assert f"{fg.tensor(2.5):.2f}" == f"{torch.tensor(2.5):.2f}" == "2.50"
    f = fg.tensor(np.ones((2, 3)), dtype=np.float64, requires_grad=True)
    t = torch.ones(2, 3, dtype=torch.float64, requires_grad=True)
    f.std(1).sum().backward()
    t.std(1).sum().backward()
    same(f.grad, t.grad)


def test_integer_scalars_wrap_and_mixed_index_assignment():
    a, t = fg.tensor(np.array([1, 2, 250], np.uint8)), torch.tensor([1, 2, 250], dtype=torch.uint8)
    for op in ("+ 10", "- 3", "* 300"):
        same(eval(f"a {op}"), eval(f"t {op}"))
    x = np.arange(24.0).reshape(2, 3, 4)
    f, t = fg.tensor(x, dtype=np.float64), torch.tensor(x)
    f[0, :, [1, 2]] = fg.tensor(np.array([[-1.0, -2.0]] * 3), dtype=np.float64)
    t[0, :, [1, 2]] = torch.tensor([[-1.0, -2.0]] * 3, dtype=torch.float64)
    same(f, t)
