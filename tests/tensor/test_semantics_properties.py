"""Property test against PyTorch: any binary operator on tensors or scalars of any supported
dtype, with broadcasting, gives PyTorch's dtype and values, or an error where PyTorch raises one."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fusegrad as fg

torch = pytest.importorskip("torch")

DTYPES = ["bool", "uint8", "int16", "int32", "int64", "float16", "float32", "float64"]
OPS = ["+", "-", "*", "/", "//", "%", "**", "==", "<", ">=", "&", "|", "^"]


def operand(draw, shape):
    kind = draw(st.sampled_from(["tensor", "tensor", "int", "float", "bool"]))
    if kind == "int":
        return draw(st.integers(-3, 3))
    if kind == "float":
        return draw(st.sampled_from([-1.5, 0.5, 2.0, 3.25]))
    if kind == "bool":
        return draw(st.booleans())
    dtype = draw(st.sampled_from(DTYPES))
    data = np.array(draw(st.lists(st.integers(-3, 3), min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))))
    return data.reshape(shape).astype(dtype)


@st.composite
def cases(draw):
    shape = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=3)))
    other = tuple(n if draw(st.booleans()) else 1 for n in shape)[draw(st.integers(0, len(shape))):]
    a = operand(draw, shape)
    if not isinstance(a, np.ndarray):
        a = np.array([1, -2, 3][:max(1, len(shape))]).astype(draw(st.sampled_from(DTYPES)))
    return a, operand(draw, other), draw(st.sampled_from(OPS)), draw(st.booleans())


def as_lib(x, lib):
    if not isinstance(x, np.ndarray):
        return x
    return fg.tensor(x, dtype=x.dtype) if lib is fg else torch.tensor(x)


@settings(max_examples=300)
@given(cases())
def test_binary_operators_match_torch(case):
    a, b, op, reflected = case
    left, right = (b, a) if reflected and not isinstance(b, np.ndarray) else (a, b)
    try:
        expected = eval(f"l {op} r", {"l": as_lib(left, torch), "r": as_lib(right, torch)})
    except (RuntimeError, TypeError, ZeroDivisionError):
        with pytest.raises((RuntimeError, TypeError, ZeroDivisionError)):
            eval(f"l {op} r", {"l": as_lib(left, fg), "r": as_lib(right, fg)})
        return
    with np.errstate(all="ignore"):
        got = eval(f"l {op} r", {"l": as_lib(left, fg), "r": as_lib(right, fg)})
    assert got.dtype == np.dtype(str(expected.dtype).replace("torch.", "")), (left, op, right)
    assert got.shape == tuple(expected.shape)
    exp = expected.numpy().astype(np.float64)
    ok = np.isclose(got.numpy().astype(np.float64), exp, rtol=2e-3, atol=1e-6, equal_nan=True)
    # integer overflow and integer division by zero are undefined in PyTorch; compare the rest
    if got.dtype.kind in "iu":
        ok |= np.abs(exp) > 2**15
        if op in ("//", "%"):
            ok |= np.broadcast_to(np.asarray(right if not isinstance(right, np.ndarray) else right) == 0, ok.shape)
    assert ok.all(), (left, op, right, got, expected)
