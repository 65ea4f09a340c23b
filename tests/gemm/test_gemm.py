"""fusegrad.ops.matmul against float64 NumPy, on shapes that hit every edge of the blocked GEMM.

Edge shapes are derived from the active level's own micro-tile and cache blocks (_cpu.gemm_config),
so each forced ISA level is tested at its own boundaries.
"""
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import fusegrad.ops as ops
from fusegrad import _cpu
from fusegrad.ops.activation import CODES

TANH = CODES["tanh"]

from conftest import SUPPORTED_ISAS as SUPPORTED




@pytest.fixture(params=[1, 2, 3], ids=["1thread", "2threads", "3threads"])
def threads(request):
    before = _cpu.get_num_threads()
    _cpu.set_num_threads(request.param)
    yield request.param
    _cpu.set_num_threads(before)


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def reference(a, b, bias=None, activation=None):
    c = np.matmul(a.astype(np.float64), b.astype(np.float64))
    if bias is not None:
        c = c + bias.astype(np.float64)
    return ACTIVATIONS[activation](c)


def _gelu(x):
    erf = np.vectorize(math.erf)
    return x * 0.5 * (1.0 + erf(x / math.sqrt(2.0)))


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


ACTIVATIONS = {
    None: lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
    "silu": lambda x: x / (1.0 + np.exp(-x)),
    "gelu": _gelu,
    "gelu_tanh": _gelu_tanh,
}


def assert_close(got, want, k):
    # float32 accumulation error grows like sqrt(K) times the size of the terms (standard normal
    # inputs: products of size ~1, sums of size ~sqrt(K)).
    tol = 2e-6 * max(k, 1) ** 0.5 * 8
    assert got.dtype == np.float32
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=tol)


def edge_shapes():
    cfg = _cpu.gemm_config()
    mr, nr, mc, kc = cfg["mr"], cfg["nr"], cfg["mc"], cfg["kc"]
    # The size heuristic sends most of these to the in-place path; test_edge_shapes_each_path
    # forces each loop nest on all of them.
    big_m, big_n = 3 * mr + 1, 3 * nr + 1
    shapes = [
        (1, 1, 1), (2, 3, 5), (7, 13, 31), (37, 41, 43), (97, 89, 101),
        (mr - 1, nr - 1, 7), (mr, nr, 8), (mr + 1, nr + 1, 9),
        (2 * mr + 1, 3 * nr - 1, 17), (2 * mr, 2 * nr, 300), (2 * mr + 1, 2 * nr + 1, 300),
        (big_m, big_n, kc - 1), (big_m, big_n, kc), (big_m, big_n, kc + 1), (big_m, big_n, 2 * kc + 3),
        (19, 23, kc + 1), (5, 70, 2 * kc + 3),
        (mc - 1, big_n, 33), (mc, big_n, 33), (mc + 1, big_n, 33), (2 * mc + 5, 2 * nr + 3, kc + 7),
        (61, 67, 1),                       # K = 1
        (1000, 3, 5), (1000, 1, 300),      # tall-skinny
        (3, 1000, 5), (1, 1000, 300),      # short-wide
        (64, 64, 64), (65, 64, 64),
        (128, 128, 128), (200, 300, 500),
    ]
    return shapes


def test_edge_shapes(isa, threads):
    rng = np.random.default_rng(1)
    for m, n, k in edge_shapes():
        a, b = rand(rng, m, k), rand(rng, k, n)
        assert_close(ops.matmul(a, b), reference(a, b), k)


@pytest.mark.parametrize("path", [1, 2], ids=["packed", "in_place"])
def test_edge_shapes_each_path(isa, threads, path):
    # Both loop nests on every edge shape, whichever the size heuristic would pick, plus bias,
    # activation and accumulation across K blocks.
    rng = np.random.default_rng(17)
    for m, n, k in edge_shapes():
        a, b, bias = rand(rng, m, k), rand(rng, k, n), rand(rng, n)
        out = np.empty((m, n), np.float32)
        assert _cpu.gemm(a, b, out, None, 0, False, path) is out
        assert_close(out, reference(a, b), k)
        assert _cpu.gemm(a, b, out, bias, TANH, False, path) is out
        assert_close(out, reference(a, b, bias, "tanh"), k)
        c0 = rand(rng, m, n)
        out[...] = c0
        assert _cpu.gemm(a.T.copy().T, b, out, None, 0, True, path) is out
        assert_close(out, c0 + reference(a, b), k)
    bt = rand(rng, 90, 1000).T  # column-major B, packed whole by the in-place path
    a = rand(rng, 50, 1000)
    out = np.empty((50, 90), np.float32)
    assert _cpu.gemm(a, bt, out, None, 0, False, path) is out
    assert_close(out, reference(a, bt), 1000)


@pytest.mark.parametrize("ta", [False, True])
def test_narrow_outputs(isa, threads, ta):
    # C at most MR columns wide is computed transposed (C^T = B^T A^T); every width up to MR + 1,
    # A row- and column-major, with bias + activation and with accumulation.
    rng = np.random.default_rng(18)
    mr = _cpu.gemm_config()["mr"]
    for n in range(1, mr + 2):
        for m, k in [(n + 1, 3), (97, 50), (300, 300)]:
            a = rand(rng, k, m).T if ta else rand(rng, m, k)
            b, bias = rand(rng, k, n), rand(rng, n)
            assert_close(ops.matmul(a, b), reference(a, b), k)
            assert_close(ops.matmul(a, b, bias=bias, activation="silu"), reference(a, b, bias, "silu"), k)
            c0 = rand(rng, m, n)
            out = c0.copy()
            ops.matmul(a, b, out=out, accumulate=True)
            assert_close(out, c0 + reference(a, b), k)
    a, b = rand(rng, 4, 60, 30), rand(rng, 4, 30, 10)   # batched
    assert_close(ops.matmul(a, b), reference(a, b), 30)
    bt = rand(rng, 10, 30).T                            # B a transposed view
    assert_close(ops.matmul(a[0], bt), reference(a[0], bt), 30)


def test_n_past_the_nc_block(isa, threads):
    cfg = _cpu.gemm_config()
    rng = np.random.default_rng(2)
    for n in (cfg["nc"] - 1, cfg["nc"] + 1):
        a, b = rand(rng, 13, 20), rand(rng, 20, n)
        assert_close(ops.matmul(a, b), reference(a, b), 20)


def test_large_square(threads):
    rng = np.random.default_rng(3)
    a, b = rand(rng, 517, 611), rand(rng, 611, 523)
    assert_close(ops.matmul(a, b), reference(a, b), 611)
    a, b = rand(rng, 1100, 700), rand(rng, 700, 301)  # A past L2: the packed path by size
    assert_close(ops.matmul(a, b), reference(a, b), 700)


@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize("shape", [(5, 6, 7), (50, 70, 90), (150, 170, 410)])
def test_transposed_views(isa, threads, ta, tb, shape):
    m, n, k = shape
    rng = np.random.default_rng(4)
    a = rand(rng, k, m).T if ta else rand(rng, m, k)
    b = rand(rng, n, k).T if tb else rand(rng, k, n)
    assert a.flags.f_contiguous == ta or m == 1
    assert_close(ops.matmul(a, b), reference(a, b), k)


def test_views_reach_the_kernel_as_given(monkeypatch):
    # Transposed views, slices with a longer leading dimension and views with no unit stride all
    # reach the compiled GEMM as the caller's own arrays, in one call: what it reads in place and
    # what it copies first is its own policy (cpp/gemm/gemm_layout.cpp), not the Python layer's.
    calls = []
    kernel = _cpu.gemm

    def spy(a, b, *args):
        result = kernel(a, b, *args)
        calls.append((a, b, result is not None))
        return result

    monkeypatch.setattr(_cpu, "gemm", spy)
    rng = np.random.default_rng(5)
    at, bt, wide = rand(rng, 40, 30), rand(rng, 50, 40), rand(rng, 30, 100)
    for a, b in [(at.T, bt.T), (wide[:, :40], at), (wide[:, ::3][:, :20], bt[:20])]:
        calls.clear()
        assert_close(ops.matmul(a, b), reference(a, b), a.shape[1])
        assert len(calls) == 1 and calls[0][0] is a and calls[0][1] is b and calls[0][2]


def test_strided_views(isa, threads):
    rng = np.random.default_rng(6)
    a = rand(rng, 60, 90)[::2, ::3]      # (30, 30), no unit stride: copied
    b = rand(rng, 30, 80)[:, ::2]        # (30, 40)
    assert_close(ops.matmul(a, b), reference(a, b), 30)
    a2 = rand(rng, 33, 40)[:, 3:37]      # unit column stride, row stride 40
    b2 = rand(rng, 34, 50)[:, 5:45]
    assert_close(ops.matmul(a2, b2), reference(a2, b2), 34)
    a3 = rand(rng, 40, 30)[::-1]         # negative stride: copied
    b3 = rand(rng, 30, 20)
    assert_close(ops.matmul(a3, b3), reference(a3, b3), 30)


@pytest.mark.parametrize("batch", [1, 3, 64])
def test_batched(isa, threads, batch):
    rng = np.random.default_rng(7)
    for m, n, k in [(5, 7, 9), (33, 65, 70), (100, 90, 80)]:
        a, b = rand(rng, batch, m, k), rand(rng, batch, k, n)
        assert_close(ops.matmul(a, b), reference(a, b), k)
        shared = rand(rng, k, n)
        assert_close(ops.matmul(a, shared), reference(a, shared), k)
        single = rand(rng, m, k)
        assert_close(ops.matmul(single, b), reference(single, b), k)


def test_batched_transposed_views(threads):
    rng = np.random.default_rng(8)
    a = np.swapaxes(rand(rng, 4, 30, 20), 1, 2)    # each matrix column-major
    b = np.swapaxes(rand(rng, 4, 40, 30), 1, 2)
    assert_close(ops.matmul(a, b), reference(a, b), 30)
    a2 = rand(rng, 6, 4, 30).transpose(1, 0, 2)    # batch not outermost in memory
    assert_close(ops.matmul(a2, b), reference(a2, b), 30)


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_bias_and_activation(isa, threads, activation):
    rng = np.random.default_rng(9)
    kc = _cpu.gemm_config()["kc"]
    for m, n, k in [(1, 1, 1), (13, 37, 20), (130, 75, 2 * kc + 5), (64, 500, 784)]:
        a, b, bias = rand(rng, m, k), rand(rng, k, n), rand(rng, n)
        got = ops.matmul(a, b, bias=bias, activation=activation)
        assert_close(got, reference(a, b, bias, activation), k)
        got = ops.matmul(a, b, activation=activation)
        assert_close(got, reference(a, b, None, activation), k)


def test_bias_and_activation_batched(threads):
    rng = np.random.default_rng(10)
    a, b, bias = rand(rng, 5, 40, 30), rand(rng, 30, 50), rand(rng, 50)
    assert_close(ops.matmul(a, b, bias=bias, activation="gelu"), reference(a, b, bias, "gelu"), 30)


def test_accumulate(isa, threads):
    rng = np.random.default_rng(11)
    kc = _cpu.gemm_config()["kc"]
    for m, n, k in [(1, 1, 1), (7, 9, 11), (100, 130, 2 * kc + 1), (300, 70, 50)]:
        a, b, c0 = rand(rng, m, k), rand(rng, k, n), rand(rng, m, n)
        out = c0.copy()
        result = ops.matmul(a, b, out=out, accumulate=True)
        assert result is out
        assert_close(out, c0.astype(np.float64) + reference(a, b), k)
    a, b, c0 = rand(rng, 3, 20, 30), rand(rng, 3, 30, 40), rand(rng, 3, 20, 40)
    out = c0.copy()
    ops.matmul(a, b, out=out, accumulate=True)
    assert_close(out, c0 + reference(a, b), 30)


def test_accumulate_transposed_gradient_shapes(threads):
    # The weight gradient of a Linear layer: dW += x^T g, with x^T a view.
    rng = np.random.default_rng(12)
    x, g = rand(rng, 128, 784), rand(rng, 128, 500)
    dw = rand(rng, 784, 500)
    want = dw.astype(np.float64) + reference(x.T, g)
    ops.matmul(x.T, g, out=dw, accumulate=True)
    assert_close(dw, want, 128)


def test_out(threads):
    rng = np.random.default_rng(13)
    a, b = rand(rng, 30, 40), rand(rng, 40, 50)
    out = np.full((30, 50), np.nan, np.float32)
    assert ops.matmul(a, b, out=out) is out
    assert_close(out, reference(a, b), 40)
    # A column-major out, and a strided one: written through a temporary.
    out_f = np.asfortranarray(np.zeros((30, 50), np.float32))
    ops.matmul(a, b, out=out_f, bias=rand(rng, 50) * 0)
    assert_close(out_f, reference(a, b), 40)
    big = np.zeros((30, 100), np.float32)
    ops.matmul(a, b, out=big[:, ::2])
    assert_close(big[:, ::2], reference(a, b), 40)
    assert not big[:, 1::2].any()


def test_out_aliasing_an_input(threads):
    rng = np.random.default_rng(14)
    a, b = rand(rng, 40, 40), rand(rng, 40, 40)
    want = reference(a, b)
    ops.matmul(a, b, out=a)
    assert_close(a, want, 40)
    c0 = rand(rng, 40, 40)
    c = c0.copy()
    want = c0.astype(np.float64) + reference(c0, b)
    ops.matmul(c, b, out=c, accumulate=True)
    assert_close(c, want, 40)


def test_k_zero(isa):
    rng = np.random.default_rng(15)
    a, b = np.zeros((5, 0), np.float32), np.zeros((0, 7), np.float32)
    np.testing.assert_array_equal(ops.matmul(a, b), np.zeros((5, 7), np.float32))
    bias = rand(rng, 7)
    assert_close(ops.matmul(a, b, bias=bias, activation="sigmoid"), reference(a, b, bias, "sigmoid"), 0)
    out = rand(rng, 5, 7)
    before = out.copy()
    ops.matmul(a, b, out=out, accumulate=True)
    np.testing.assert_array_equal(out, before)
    np.testing.assert_array_equal(ops.matmul(np.zeros((3, 4, 0), np.float32), np.zeros((0, 2), np.float32)),
                                  np.zeros((3, 4, 2), np.float32))


def test_empty_results():
    assert ops.matmul(np.zeros((0, 5), np.float32), np.ones((5, 7), np.float32)).shape == (0, 7)
    assert ops.matmul(np.ones((4, 5), np.float32), np.ones((5, 0), np.float32)).shape == (4, 0)
    assert ops.matmul(np.ones((0, 4, 5), np.float32), np.ones((5, 3), np.float32)).shape == (0, 4, 3)
    assert ops.matmul(np.ones((0, 4, 5), np.float32), np.ones((0, 5, 3), np.float32)).shape == (0, 4, 3)


def test_nan_propagates():
    a = np.ones((3, 4), np.float32)
    a[1, 2] = np.nan
    c = ops.matmul(a, np.ones((4, 5), np.float32), activation="relu")
    assert np.isnan(c[1]).all() and not np.isnan(c[[0, 2]]).any()


# --- errors ---------------------------------------------------------------------------------


def test_error_inner_sizes():
    with pytest.raises(ValueError, match="inner sizes differ"):
        ops.matmul(np.ones((3, 4), np.float32), np.ones((5, 6), np.float32))


def test_error_batch_sizes():
    with pytest.raises(ValueError, match="batch sizes differ"):
        ops.matmul(np.ones((2, 3, 4), np.float32), np.ones((3, 4, 5), np.float32))


def test_error_bias_length():
    with pytest.raises(ValueError, match="bias: expected shape"):
        ops.matmul(np.ones((3, 4), np.float32), np.ones((4, 5), np.float32), bias=np.ones(4, np.float32))
    with pytest.raises(ValueError, match="bias: expected shape"):
        ops.matmul(np.ones((3, 4), np.float32), np.ones((4, 5), np.float32), bias=np.ones((1, 5), np.float32))


def test_error_unknown_activation():
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        ops.matmul(np.ones((3, 4), np.float32), np.ones((4, 5), np.float32), activation="swish")
    with pytest.raises(ValueError, match="unknown activation 'leaky_relu'"):
        ops.matmul(np.ones((3, 4), np.float32), np.ones((4, 5), np.float32), activation="leaky_relu")


def test_error_out_shape():
    with pytest.raises(ValueError, match=r"out: expected shape \(3, 5\)"):
        ops.matmul(np.ones((3, 4), np.float32), np.ones((4, 5), np.float32), out=np.zeros((5, 3), np.float32))
    with pytest.raises(ValueError, match=r"out: expected shape \(2, 3, 5\)"):
        ops.matmul(np.ones((2, 3, 4), np.float32), np.ones((4, 5), np.float32), out=np.zeros((3, 5), np.float32))


def test_error_out_read_only():
    out = np.zeros((3, 5), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        ops.matmul(np.ones((3, 4), np.float32), np.ones((4, 5), np.float32), out=out)


def test_error_dtypes():
    f32 = np.ones((3, 4), np.float32)
    with pytest.raises(TypeError, match="a: expected dtype float32, got float64"):
        ops.matmul(np.ones((3, 4)), np.ones((4, 5), np.float32))
    with pytest.raises(TypeError, match="b: expected dtype float32, got int32"):
        ops.matmul(f32, np.ones((4, 5), np.int32))
    with pytest.raises(TypeError, match="bias: expected dtype float32, got float16"):
        ops.matmul(f32, np.ones((4, 5), np.float32), bias=np.ones(5, np.float16))
    with pytest.raises(TypeError, match="out: expected dtype float32, got float64"):
        ops.matmul(f32, np.ones((4, 5), np.float32), out=np.zeros((3, 5)))
    with pytest.raises(TypeError, match="a: expected a NumPy array"):
        ops.matmul([[1.0]], np.ones((1, 1), np.float32))


def test_error_ranks():
    with pytest.raises(ValueError, match="a: expected a 2-D"):
        ops.matmul(np.ones(4, np.float32), np.ones((4, 5), np.float32))
    with pytest.raises(ValueError, match="b: expected a 2-D"):
        ops.matmul(np.ones((3, 4), np.float32), np.ones((1, 1, 4, 5), np.float32))


def test_error_accumulate_misuse():
    a, b = np.ones((3, 4), np.float32), np.ones((4, 5), np.float32)
    with pytest.raises(ValueError, match="out must be given"):
        ops.matmul(a, b, accumulate=True)
    with pytest.raises(ValueError, match="no bias or activation"):
        ops.matmul(a, b, out=np.zeros((3, 5), np.float32), accumulate=True, bias=np.ones(5, np.float32))
    with pytest.raises(ValueError, match="no bias or activation"):
        ops.matmul(a, b, out=np.zeros((3, 5), np.float32), accumulate=True, activation="relu")


def test_accumulate_truthy_values():
    a, b = np.ones((3, 4), np.float32), np.ones((4, 5), np.float32)
    out = np.ones((3, 5), np.float32)
    ops.matmul(a, b, out=out, accumulate=1)
    np.testing.assert_array_equal(out, np.full((3, 5), 5.0, np.float32))


# --- forced ISA through the environment, and PyTorch -------------------------------------------


@pytest.mark.parametrize("level", SUPPORTED)
def test_fusegrad_isa_environment(level, tmp_path):
    script = (
        "import numpy as np, fusegrad.ops as ops\n"
        "from fusegrad import _cpu\n"
        "rng = np.random.default_rng(0)\n"
        "a = rng.standard_normal((131, 257)).astype(np.float32)\n"
        "b = rng.standard_normal((257, 67)).astype(np.float32)\n"
        "bias = rng.standard_normal(67).astype(np.float32)\n"
        "c = ops.matmul(a, b, bias=bias, activation='tanh')\n"
        "ref = np.tanh(a.astype(np.float64) @ b + bias)\n"
        "print(_cpu.isa(), float(np.abs(c - ref).max()))\n"
    )
    env = dict(os.environ, FUSEGRAD_ISA=level)
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         check=True, cwd=tmp_path)
    name, err = res.stdout.split()
    assert name == level
    assert float(err) < 1e-4


@pytest.mark.parametrize("activation,fn", [("relu", "relu"), ("gelu", "gelu"), ("silu", "silu"),
                                           ("sigmoid", "sigmoid"), ("tanh", "tanh")])
def test_against_torch_linear(activation, fn):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(16)
    x, w, bias = rand(rng, 128, 784), rand(rng, 500, 784), rand(rng, 500)
    got = ops.matmul(x, w.T, bias=bias, activation=activation)
    want = getattr(torch.nn.functional, fn)(
        torch.nn.functional.linear(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                                   torch.from_numpy(bias).double())
    ).numpy()
    assert_close(got, want, 784)


# --- long reductions and empty views --------------------------------------------------------------


@pytest.mark.parametrize("m, n", [(1, 1), (3, 1), (40, 3), (64, 64)], ids=["in_place", "in_place_tall", "narrow", "packed"])
def test_long_k_is_summed_in_blocks(m, n):
    # A single running float32 sum over K loses digits (2e7 ones summed to 2^24); the kernels sum
    # K in cache blocks, so the error grows like a blocked sum's, as PyTorch's does.
    rng = np.random.default_rng(21)
    k = 1_000_000
    a, b = rng.random((m, k), dtype=np.float32), rng.random((k, n), dtype=np.float32)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    assert np.abs(ops.matmul(a, b) - ref).max() / np.abs(ref).max() < 1e-5


def test_twenty_million_ones():
    k = 20_000_000
    assert ops.matmul(np.ones((1, k), np.float32), np.ones((k, 1), np.float32))[0, 0] == k


@pytest.mark.parametrize("view", ["cols", "reversed_rows"])
def test_zero_size_views(view):
    # Views with no elements and odd strides are valid inputs: empty results, or K = 0 products
    # (bias and activation of nothing).
    z = np.zeros((3, 5), np.float32)[:, :0] if view == "cols" else np.zeros((5, 3), np.float32)[::-1, :0]
    m = z.shape[0]
    np.testing.assert_array_equal(ops.matmul(z, np.ones((0, 4), np.float32)), np.zeros((m, 4), np.float32))
    bias = np.arange(4, dtype=np.float32) - 1
    np.testing.assert_array_equal(ops.matmul(z, np.ones((0, 4), np.float32), bias=bias, activation="relu"),
                                  np.broadcast_to(np.maximum(bias, 0), (m, 4)))
    assert ops.matmul(z.T, np.ones((m, 2), np.float32)).shape == (0, 2)


def test_argument_types_are_checked():
    a = np.ones((2, 2), np.float32)
    with pytest.raises(TypeError, match="accumulate must be True or False"):
        ops.matmul(a, a, out=a.copy(), accumulate="no")
    with pytest.raises(TypeError, match="b: expected a NumPy array"):
        ops.matmul(a, None)
