"""The tensor ops a PyTorch user reaches for first (issue 16, "Missing"), each against PyTorch on
the same inputs: forward values and dtypes, and gradients in float64 where PyTorch has them."""
import numpy as np
import pytest

import fusegrad as fg

torch = pytest.importorskip("torch")


def same(f, t, rtol=1e-6, atol=1e-8):
    if isinstance(t, (tuple, list)):
        assert len(f) == len(t)
        for a, b in zip(f, t):
            same(a, b, rtol, atol)
        return
    if not isinstance(t, torch.Tensor):
        assert f == t
        return
    t = t.detach()
    assert f.shape == tuple(t.shape), (f.shape, t.shape)
    assert f.dtype == np.dtype(str(t.dtype).replace("torch.", "")), (f.dtype, t.dtype)
    np.testing.assert_allclose(f.numpy().astype(np.float64), t.numpy().astype(np.float64), rtol=rtol, atol=atol,
                               equal_nan=True)


def flat(x):
    return [y for item in x for y in flat(item)] if isinstance(x, (tuple, list)) else [x]


def compare(fn, *arrays, grad=True, rtol=1e-6, atol=1e-8, module=False):
    """fn(tensor, ...) on fusegrad and torch tensors (module=True: fn(lib, tensor, ...) with lib
    fusegrad or torch); compares the outputs and, with grad, the gradients of sum(out * w)."""
    grad = grad and all(a.dtype.kind == "f" for a in arrays)
    fts = [fg.tensor(a, dtype=a.dtype, requires_grad=grad) for a in arrays]
    tts = [torch.tensor(a, requires_grad=grad) for a in arrays]
    fo = fn(fg, *fts) if module else fn(*fts)
    to = fn(torch, *tts) if module else fn(*tts)
    same(fo, to, rtol, atol)
    floating = [t for t in flat(to) if t.dtype.is_floating_point]
    if grad and floating:
        outs = list(zip(flat(fo), flat(to)))
        w = [np.random.default_rng(1).standard_normal(tuple(t.shape)) for _, t in outs if t.dtype.is_floating_point]
        floats = [(f, t) for f, t in outs if t.dtype.is_floating_point]
        sum(((f * fg.tensor(wi, dtype=np.float64)).sum() for (f, _), wi in zip(floats, w)), fg.tensor(0.0, dtype=np.float64)).backward()
        sum((t * torch.tensor(wi)).sum() for (_, t), wi in zip(floats, w)).backward()
        for f, t in zip(fts, tts):
            if t.grad is None:
                assert f.grad is None or not np.any(f.grad.numpy())
            else:
                same(f.grad, t.grad, rtol=1e-5, atol=1e-7)


R = np.random.default_rng(0)
X = R.standard_normal((3, 4))
U = R.uniform(0.1, 0.9, (3, 4))   # in (0, 1): asin, acos, log ...
P = R.uniform(0.5, 3.0, (3, 4))   # positive

UNARY = {"sin": X, "cos": X, "tan": U, "asin": U, "acos": U, "atan": X, "sinh": X, "cosh": X, "floor": X * 3,
         "ceil": X * 3, "round": X * 3, "trunc": X * 3, "frac": X * 3, "sign": X, "rsqrt": P, "erf": X,
         "reciprocal": P, "log2": P, "log10": P, "log1p": P, "expm1": X, "sqrt": P, "square": X, "exp": X,
         "log": P, "abs": X, "neg": X}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_math(name):
    compare(lambda t: getattr(t, name)(), UNARY[name])
    compare(lambda lib, t: getattr(lib, name)(t), UNARY[name], module=True)
    compare(lambda t: getattr(t, name)(), UNARY[name].astype(np.float32), grad=False, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["sin", "sqrt", "exp", "log1p", "floor", "round", "abs", "square", "sign", "neg"])
def test_unary_math_on_integers_has_torch_dtype(name):
    compare(lambda t: getattr(t, name)(), np.array([1, 2, 3], np.int32), rtol=1e-6, atol=1e-6)


def test_round_decimals_atan2():
    compare(lambda t: t.round(decimals=2), X * 10, grad=False)
    compare(lambda a, b: a.atan2(b), X, P - 1)
    compare(lambda lib, a, b: lib.atan2(a, b), X, P - 1, module=True)


BINARY = ["add", "sub", "mul", "div", "true_divide", "floor_divide", "remainder", "fmod", "pow", "maximum", "minimum"]


@pytest.mark.parametrize("name", BINARY)
def test_binary_methods_and_functions(name):
    a, b = (P, X[0] + 2.5) if name == "pow" else (X * 3, P)
    compare(lambda x, y: getattr(x, name)(y), a, b, grad=name != "floor_divide")
    compare(lambda lib, x, y: getattr(lib, name)(x, y), a, b, module=True, grad=name != "floor_divide")
    if name == "floor_divide":  # no derivative in PyTorch: backward raises
        x = fg.tensor(a, requires_grad=True)
        with pytest.raises(RuntimeError, match="derivative for aten::floor_divide is not implemented"):
            (x // 2).sum().backward()
    if name not in ("maximum", "minimum"):  # torch.maximum takes tensors only
        compare(lambda x: getattr(x, name)(2), a, grad=name != "floor_divide")
    ai, bi = np.array([7, -7, 5, -5], np.int64), np.array([2, 2, -3, -3], np.int64)
    bi = np.abs(bi) if name == "pow" else bi
    compare(lambda x, y: getattr(x, name)(y), ai, bi)


def test_operators_mod_floordiv_and_alpha_rounding():
    compare(lambda a, b: (a % b, a % 2.5), X * 5, P)
    compare(lambda a, b: 5 % b, X * 5, P, grad=False)  # PyTorch has no derivative of scalar % tensor
    compare(lambda a, b: (a // b, 7 // b, a // -2), X * 5, P, grad=False)
    compare(lambda a, b: a.add(b, alpha=2) - a.sub(b, alpha=0.5), X, P)
    for mode in ("trunc", "floor"):
        compare(lambda a, b: a.div(b, rounding_mode=mode), X * 5, P, grad=False)
        compare(lambda a, b: a.div(b, rounding_mode=mode), np.array([7, -7, 5]), np.array([2, 2, -3]))
    with pytest.raises(RuntimeError):
        fg.tensor([1, 2]) // fg.tensor([0, 1])
    compare(lambda a: (-a, abs(a), a.matmul(a.T)), X)


def test_where_masked_fill_clamp():
    c = X > 0
    compare(lambda a, b: a.where(torch.tensor(c) if isinstance(a, torch.Tensor) else fg.tensor(c), b), X, P)
    compare(lambda lib, a, b: lib.where(lib.tensor(c), a, b), X, P, module=True)
    compare(lambda lib, a: lib.where(lib.tensor(c), a, 0.5), X, module=True)
    compare(lambda lib, a: lib.where(lib.tensor(c), 2.0, a), X, module=True)
    compare(lambda lib, a: lib.where(lib.tensor(c[0]), a, a * 2), X, module=True)  # broadcast condition
    compare(lambda lib, a: lib.where(a > 0), X, module=True)
    compare(lambda lib, a: a.masked_fill(lib.tensor(c), -1.5), X, module=True)
    compare(lambda lib, a: a.masked_fill(lib.tensor(c[:, :1]), float("-inf")), X, module=True)
    compare(lambda a, lo, hi: a.clamp(lo, hi), X, X[0] - 0.3, X[:, :1] + 0.2)
    compare(lambda a, lo: a.clamp(min=lo), X, X[0])
    compare(lambda a, hi: a.clip(max=hi), X, X[0])
    compare(lambda a: (a.clamp(-0.5, 0.5), a.clamp(min=0.1), a.clamp_max(0.2)), X)
    compare(lambda a: a.clamp(0, 2), np.array([-1, 1, 3]))
    with pytest.raises(RuntimeError):
        fg.tensor(X).masked_fill(fg.tensor([1, 0, 1]), 0.0)  # not a bool mask
    with pytest.raises(RuntimeError):
        fg.tensor(X).where(fg.tensor(X), 0.0)
    with pytest.raises(RuntimeError):
        fg.tensor(X).clamp()


def test_isclose_allclose_isnan_isinf_isfinite_nan_to_num():
    a = np.array([1.0, np.nan, np.inf, -np.inf, 1e-9, 2.0])
    b = np.array([1.0 + 1e-7, np.nan, np.inf, np.inf, 0.0, 2.1])
    compare(lambda x, y: (x.isclose(y), x.isclose(y, equal_nan=True), x.isclose(y, rtol=0.1)), a, b)
    compare(lambda lib, x, y: lib.isclose(x, y, atol=1e-3), a, b, module=True)
    for fa, fb in [(a, b), (a[:1], b[:1]), (X, X + 1e-9)]:
        assert fg.allclose(fg.tensor(fa, dtype=fa.dtype), fg.tensor(fb, dtype=fb.dtype)) == torch.allclose(
            torch.tensor(fa), torch.tensor(fb))
    compare(lambda x: (x.isnan(), x.isinf(), x.isfinite()), a)
    compare(lambda x: (x.nan_to_num(), x.nan_to_num(nan=1.0, posinf=5.0, neginf=-5.0)), a)
    compare(lambda lib, x: (lib.isnan(x), lib.isfinite(x), lib.nan_to_num(x, 2.0)), a.astype(np.float32), module=True)
    compare(lambda x: x.isnan(), np.array([1, 2]))


@pytest.mark.parametrize("name", ["float", "double", "half", "int", "long", "bool", "short", "byte"])
def test_dtype_conversions(name):
    data = np.array([-1.7, 0.0, 2.5, 3.0])
    compare(lambda t: getattr(t, name)(), data, grad=name in ("float", "double", "half"), rtol=1e-3)
    compare(lambda t: t.to(getattr(torch, {'byte': 'uint8'}.get(name, name)) if isinstance(t, torch.Tensor) else getattr(fg, name)), data,
            grad=False, rtol=1e-3)


def test_to_type_and_dtype_spellings():
    t = fg.tensor([1.5, 2.5], requires_grad=True)
    d = t.to(fg.float64)
    assert d.dtype == np.float64 and t.to("float64").dtype == np.float64 and t.to(torch.float64).dtype == np.float64
    assert t.to(dtype=np.int32).dtype == np.int32 and t.to("cpu", fg.float16).dtype == np.float16
    assert t.type() == "fusegrad.FloatTensor" and t.type(fg.long).dtype == np.int64
    assert t.to(fg.tensor([1], dtype="int64")).dtype == np.int64
    (d * d).sum().backward()  # the cast is differentiable
    np.testing.assert_allclose(t.grad.numpy(), [3.0, 5.0])
    assert t.grad.dtype == np.float32
    with pytest.raises(TypeError):
        t.to(dtype="float128")


REDUCTIONS = [
    ("sum", {}), ("sum", {"dim": 1}), ("sum", {"dim": (0, 1), "keepdim": True}), ("mean", {"dim": -1, "keepdim": True}),
    ("var", {"dim": 0}), ("var", {"dim": 1, "correction": 0}), ("std", {}), ("std", {"dim": 1, "correction": 2}),
    ("std", {"dim": 0, "unbiased": False}), ("prod", {}), ("prod", {"dim": 1}), ("prod", {"dim": 0, "keepdim": True}),
    ("cumsum", {"dim": 1}), ("cumprod", {"dim": 0}), ("cumprod", {"dim": 1}), ("logsumexp", {"dim": 1}),
    ("logsumexp", {"dim": (0, 1), "keepdim": True}), ("norm", {}), ("norm", {"dim": 1}), ("norm", {"p": 1, "dim": 0}),
    ("norm", {"p": float("inf"), "dim": 1, "keepdim": True}), ("norm", {"p": 3, "dim": 1}), ("amax", {"dim": 1}),
    ("amin", {"dim": (0, 1)}), ("amax", {}), ("argmax", {}), ("argmax", {"dim": 1, "keepdim": True}),
    ("argmin", {"dim": 0}), ("max", {"dim": 1}), ("min", {"dim": 0, "keepdim": True}), ("any", {"dim": 1}),
    ("all", {}), ("any", {}), ("all", {"dim": 0, "keepdim": True}), ("count_nonzero", {"dim": 1}),
]


@pytest.mark.parametrize("name,kwargs", REDUCTIONS, ids=[f"{n}-{k}" for n, k in REDUCTIONS])
def test_reductions(name, kwargs):
    data = X.copy()
    data[1, 2] = 0.0  # a zero for prod/cumprod's gradient and for any/all
    data[2] = data[0]  # ties
    if name in ("any", "all"):
        data = data > 0.2
    compare(lambda t: getattr(t, name)(**kwargs), data)
    compare(lambda lib, t: getattr(lib, name)(t, **kwargs), data, module=True)
    if "dim" in kwargs and name not in ("cumsum", "cumprod", "logsumexp", "norm", "count_nonzero"):
        numpy_kw = {"axis": kwargs["dim"], **({"keepdims": kwargs["keepdim"]} if "keepdim" in kwargs else {})}
        numpy_kw.update({k: v for k, v in kwargs.items() if k not in ("dim", "keepdim")})
        f = getattr(fg.tensor(data, dtype=data.dtype), name)(**numpy_kw)
        same(f, getattr(torch.tensor(data), name)(**kwargs))


def test_reductions_on_integers_and_errors():
    i = np.array([[1, 2, 3], [4, 5, 6]], np.int32)
    compare(lambda t: (t.sum(), t.sum(1), t.prod(0), t.cumsum(1), t.amax(0), t.max(1)), i)
    with pytest.raises(RuntimeError):
        fg.tensor(i).mean()
    with pytest.raises(TypeError):
        fg.tensor(X).sum(dim=0, axis=1)
    with pytest.raises(IndexError):
        fg.tensor(X).sum(2)
    with pytest.raises(IndexError):
        fg.tensor(X).argmax(dim=-3)
