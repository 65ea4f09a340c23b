"""fusegrad.ops conv2d and its backward passes against a float64 NumPy direct convolution, finite
differences and (where importable) PyTorch; error cases; every ISA level."""
import os
import subprocess
import sys

import numpy as np
import pytest

from fusegrad import _cpu, ops
from fusegrad.ops.conv import conv_geometry, conv_padding

from conftest import SUPPORTED_ISAS as SUPPORTED




def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def pads_of(padding, x_shape, w_shape, stride, dilation):
    s = (stride, stride) if isinstance(stride, int) else stride
    d = (dilation, dilation) if isinstance(dilation, int) else dilation
    return conv_padding(padding, x_shape[1:3], w_shape[:2], s, d)


# --- float64 references, written as plain loops over the kernel taps ---------------------------


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _tap_slices(i, j, oh, ow, stride, dilation):
    (sh, sw), (dh, dw) = stride, dilation
    return (slice(None), slice(i * dh, i * dh + sh * (oh - 1) + 1, sh),
            slice(j * dw, j * dw + sw * (ow - 1) + 1, sw), slice(None))


def ref_forward(x, w, bias=None, stride=1, pads=((0, 0), (0, 0)), dilation=1, activation=None):
    stride, dilation = _pair(stride), _pair(dilation)
    x = np.pad(x.astype(np.float64), ((0, 0), pads[0], pads[1], (0, 0)))
    w = w.astype(np.float64)
    kh, kw = w.shape[:2]
    oh = (x.shape[1] - (kh - 1) * dilation[0] - 1) // stride[0] + 1
    ow = (x.shape[2] - (kw - 1) * dilation[1] - 1) // stride[1] + 1
    y = np.zeros((x.shape[0], oh, ow, w.shape[3]))
    for i in range(kh):
        for j in range(kw):
            y += x[_tap_slices(i, j, oh, ow, stride, dilation)] @ w[i, j]
    if bias is not None:
        y += bias
    return ACTS[activation](y)


def ref_backward_input(g, w, x_shape, stride=1, pads=((0, 0), (0, 0)), dilation=1):
    stride, dilation = _pair(stride), _pair(dilation)
    n, h, wd, c = x_shape
    (pt, pb), (pl, pr) = pads
    gx = np.zeros((n, h + pt + pb, wd + pl + pr, c))
    g, w = g.astype(np.float64), w.astype(np.float64)
    oh, ow = g.shape[1:3]
    for i in range(w.shape[0]):
        for j in range(w.shape[1]):
            gx[_tap_slices(i, j, oh, ow, stride, dilation)] += g @ w[i, j].T
    return gx[:, pt:pt + h, pl:pl + wd]


def ref_backward_weight(x, g, w_shape, stride=1, pads=((0, 0), (0, 0)), dilation=1):
    stride, dilation = _pair(stride), _pair(dilation)
    x = np.pad(x.astype(np.float64), ((0, 0), pads[0], pads[1], (0, 0)))
    g = g.astype(np.float64)
    oh, ow = g.shape[1:3]
    gw = np.zeros(w_shape)
    for i in range(w_shape[0]):
        for j in range(w_shape[1]):
            patch = x[_tap_slices(i, j, oh, ow, stride, dilation)]
            gw[i, j] = patch.reshape(-1, w_shape[2]).T @ g.reshape(-1, w_shape[3])
    return gw


def _sigmoid(y):
    return 1 / (1 + np.exp(-y))


def _gelu(y):
    from math import erf, sqrt
    return y * 0.5 * (1 + np.vectorize(erf)(y / sqrt(2)))


ACTS = {
    None: lambda y: y,
    "relu": lambda y: np.maximum(y, 0),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "silu": lambda y: y * _sigmoid(y),
    "gelu": _gelu,
    "gelu_tanh": lambda y: 0.5 * y * (1 + np.tanh(np.sqrt(2 / np.pi) * (y + 0.044715 * y ** 3))),
}


def assert_close(got, want, k):
    # float32 sums of k products of standard-normal terms: error ~ sqrt(k) ulps of the sum.
    assert got.dtype == np.float32
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5 * max(k, 1) ** 0.5)


# (N, H, W, C_in, C_out, KH, KW, stride, padding, dilation)
CASES = [
    (2, 7, 9, 5, 6, 3, 3, 1, 0, 1),             # odd sizes, valid
    (1, 5, 5, 1, 1, 1, 1, 1, 0, 1),             # 1x1, single channel
    (3, 28, 28, 1, 32, 3, 3, 1, 0, 1),          # MNIST first layer (C_in 1)
    (2, 13, 11, 3, 33, 3, 3, 1, 1, 1),          # C_in 3, C_out one above a 32-wide panel
    (2, 8, 8, 16, 31, 3, 3, 1, 1, 1),           # C_out one below the panel
    (1, 6, 6, 130, 129, 3, 3, 1, 1, 1),         # C >= 128, batch 1
    (2, 9, 10, 7, 12, 3, 3, 2, 0, 1),           # stride 2
    (2, 9, 10, 20, 12, 3, 3, 2, 1, 1),          # stride 2, padding (phase path of backward-input)
    (2, 9, 8, 20, 12, 3, 3, 2, "same", 1),      # "same" with stride 2: asymmetric padding
    (2, 8, 8, 3, 5, 4, 4, 2, "same", 1),        # even kernel, "same", stride 2, C_in 3
    (1, 7, 7, 9, 17, 3, 3, 1, "same", 1),       # "same", stride 1
    (2, 11, 12, 6, 8, 3, 3, 1, 2, 2),           # dilation 2
    (1, 12, 13, 24, 8, 3, 2, (2, 1), ((0, 2), (1, 0)), (2, 1)),  # asymmetric everything
    (2, 5, 5, 40, 7, 5, 5, 1, 2, 1),            # 5x5 with padding, C_in straddling micro-tiles
    (1, 4, 4, 18, 9, 1, 1, 2, 0, 1),            # 1x1 stride 2: some input pixels get no gradient
    (1, 3, 3, 2, 3, 3, 3, 1, 0, 1),             # kernel as large as the input
    (20, 3, 3, 5, 7, 3, 3, 1, 0, 1),            # 1x1 outputs: one tile spans many images
    # Runs a whole number of panels long: backward-input's scatter form adds straight into gx.
    (2, 7, 8, 32, 20, 3, 3, 1, 1, 1),           # runs of C_in = 32, some on the padding
    (3, 9, 9, 32, 40, 3, 3, 1, 0, 1),           # merged runs of 3 * 32
    (13, 4, 4, 2, 9, 3, 3, 2, 1, 1),            # 2x2 outputs on padding, tiles across images
    (5, 6, 6, 4, 64, 2, 2, 3, 1, 1),            # stride > kernel
    # C_in <= 4 takes backward-weight's direct form (on a zero-padded copy where there is padding).
    (2, 11, 12, 2, 40, 3, 3, 1, 2, 2),          # dilation 2, C_out over one panel
    (1, 12, 13, 4, 8, 3, 2, (2, 1), ((0, 2), (1, 0)), (2, 1)),  # asymmetric everything
    (3, 9, 7, 3, 17, 5, 5, 2, "same", 1),       # 5x5: K = 75, several K groups
    # C_in <= 4 at stride 1 takes backward-input's gather form (on bands of a zero-bordered gy).
    (2, 40, 37, 4, 70, 3, 3, 1, 3, 1),          # padding past the kernel's reach, three bands
    (1, 30, 9, 1, 8, 5, 3, 1, ((4, 0), (0, 2)), 1),  # asymmetric padding, C_out under a vector
    (2, 9, 7, 3, 16, 2, 4, 1, "same", (3, 1)),  # even kernel, "same", dilation along one axis
    # Batch 1 and wide C_in: backward-input takes its phase form (the cases above mostly take
    # the scatter form; cpp/conv chooses by the useful fraction of FMAs).
    (1, 10, 9, 64, 20, 3, 3, 2, "same", 1),     # phases with stride 2, asymmetric padding
    (1, 12, 11, 64, 16, 3, 3, 1, 2, 2),         # phases with dilation 2
    (1, 9, 9, 33, 40, 3, 3, (1, 2), 1, 1),      # phases along one axis only
    # Stride 1 with most gx pixels in the interior: backward-input runs as a forward convolution
    # of gy, whose tiles take one pixel class (same taps inside gy) at a time, across images.
    (3, 7, 7, 64, 48, 3, 3, 1, 1, 1),           # 9 classes, a few pixels per image in most
    (2, 9, 10, 64, 24, 4, 4, 1, "same", 1),     # even kernel: padding 1 before, 2 after
    (2, 9, 8, 20, 12, 3, 3, 1, 3, 1),           # padding past the kernel's reach: not a forward
]


def _case(rng, case):
    n, h, w, ci, co, kh, kw, stride, padding, dilation = case
    x, wt = rand(rng, n, h, w, ci), rand(rng, kh, kw, ci, co)
    pads = pads_of(padding, x.shape, wt.shape, stride, dilation)
    return x, wt, dict(stride=stride, padding=padding, dilation=dilation), pads


@pytest.mark.parametrize("case", CASES, ids=str)
def test_forward(case, isa):
    rng = np.random.default_rng(1)
    x, w, kw, pads = _case(rng, case)
    got = ops.conv2d(x, w, **kw)
    want = ref_forward(x, w, None, kw["stride"], pads, kw["dilation"])
    assert_close(got, want, w.shape[0] * w.shape[1] * w.shape[2])


@pytest.mark.parametrize("case", CASES, ids=str)
def test_backward_input(case, isa):
    rng = np.random.default_rng(2)
    x, w, kw, pads = _case(rng, case)
    y_shape = ops.conv2d(x, w, **kw).shape
    g = rand(rng, *y_shape)
    got = ops.conv2d_backward_input(g, w, x.shape, **kw)
    want = ref_backward_input(g, w, x.shape, kw["stride"], pads, kw["dilation"])
    assert_close(got, want, w.shape[0] * w.shape[1] * w.shape[3])


@pytest.mark.parametrize("case", CASES, ids=str)
def test_backward_weight(case, isa):
    rng = np.random.default_rng(3)
    x, w, kw, pads = _case(rng, case)
    g = rand(rng, *ops.conv2d(x, w, **kw).shape)
    got = ops.conv2d_backward_weight(x, g, w.shape, **kw)
    want = ref_backward_weight(x, g, w.shape, kw["stride"], pads, kw["dilation"])
    assert_close(got, want, g.shape[0] * g.shape[1] * g.shape[2])


MASKS = [(True, True, True), (True, False, False), (False, True, False), (False, False, True),
         (False, True, True), (True, True, False)]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_backward_all_in_one_call(case, isa):
    # conv2d_backward gives what the three single-gradient calls give, for every output mask: first
    # layers (C_in <= 4) take the image-by-image form whenever the weight gradient is asked for.
    rng = np.random.default_rng(10)
    x, w, kw, pads = _case(rng, case)
    g = rand(rng, *ops.conv2d(x, w, **kw).shape)
    want = (ref_backward_input(g, w, x.shape, kw["stride"], pads, kw["dilation"]),
            ref_backward_weight(x, g, w.shape, kw["stride"], pads, kw["dilation"]),
            g.astype(np.float64).sum(axis=(0, 1, 2)))
    depth = (w.shape[0] * w.shape[1] * w.shape[3], g.shape[0] * g.shape[1] * g.shape[2], g.shape[0] * g.shape[1] * g.shape[2])
    for mask in MASKS:
        got = ops.conv2d_backward(g, x, w, input_grad=mask[0], weight_grad=mask[1], bias_grad=mask[2], **kw)
        for asked, grad, ref, k in zip(mask, got, want, depth):
            if asked:
                assert_close(grad, ref, k)
            else:
                assert grad is None


def test_backward_all_in_one_call_batch_and_out():
    # A batch large enough for both threads (their gw and gb partials are summed), writing into
    # out arrays, one of them a strided view.
    rng = np.random.default_rng(11)
    x, w = rand(rng, 9, 17, 15, 3), rand(rng, 3, 3, 3, 40)
    g = rand(rng, 9, 17, 15, 40)
    gx, gb = np.full(x.shape, np.nan, np.float32), np.full(80, np.nan, np.float32)[::2]
    res = ops.conv2d_backward(g, x, w, padding="same", out=(gx, None, gb))
    assert res[0] is gx and res[2] is gb
    assert_close(gx, ref_backward_input(g, w, x.shape, 1, ((1, 1), (1, 1))), 9 * 40)
    assert_close(res[1], ref_backward_weight(x, g, w.shape, 1, ((1, 1), (1, 1))), 9 * 17 * 15)
    np.testing.assert_allclose(gb, g.astype(np.float64).sum(axis=(0, 1, 2)), rtol=1e-5, atol=1e-3)


def test_backward_all_in_one_call_errors():
    x, w = np.ones((2, 8, 8, 3), np.float32), np.ones((3, 3, 3, 4), np.float32)
    g = np.ones((2, 6, 6, 4), np.float32)
    with pytest.raises(ValueError, match=r"grad_out has shape \(2, 6, 6, 4\), expected \(2, 8, 8, 4\)"):
        ops.conv2d_backward(g, x, w, padding=1)
    with pytest.raises(ValueError, match="out must be None or a triple"):
        ops.conv2d_backward(g, x, w, out=np.empty_like(x))
    with pytest.raises(ValueError, match=r"out: expected shape \(3, 3, 3, 4\), got \(3, 3, 3, 5\)"):
        ops.conv2d_backward(g, x, w, out=(None, np.empty((3, 3, 3, 5), np.float32), None))
    with pytest.raises(TypeError, match="x: expected dtype float32, got float64"):
        ops.conv2d_backward(g, x.astype(np.float64), w)
    with pytest.raises(ValueError, match="has 3 channels but weight"):
        ops.conv2d_backward(g, x, np.ones((3, 3, 2, 4), np.float32))


def test_backward_all_in_one_call_empty():
    w = np.ones((3, 3, 2, 5), np.float32)
    gx, gw, gb = ops.conv2d_backward(np.ones((0, 3, 3, 5), np.float32), np.ones((0, 5, 5, 2), np.float32), w)
    assert gx.shape == (0, 5, 5, 2)
    np.testing.assert_array_equal(gw, 0)
    np.testing.assert_array_equal(gb, 0)


@pytest.mark.parametrize("c_in", [32, 3], ids=["separate", "first_layer_fused"])
def test_large_batch_backward_weight_threads_reduce(c_in):
    # Enough pixels that both threads take a share of the work and their partial sums are reduced,
    # in backward-weight on its own and in the image-by-image backward of first layers (C_in <= 4).
    rng = np.random.default_rng(4)
    x, w = rand(rng, 16, 20, 20, c_in), rand(rng, 3, 3, c_in, 48)
    g = rand(rng, 16, 18, 18, 48)
    got = ops.conv2d_backward_weight(x, g, w.shape)
    assert_close(got, ref_backward_weight(x, g, w.shape), 16 * 18 * 18)


# Images large enough that backward-weight splits them into several segments of output rows
# (cpp/conv: kPatchSegmentBytes), each with its own zero-padded copy of the input rows under it,
# and the threads' shares of the rows begin and end inside an image. C_out 72: the wide tile and a
# one-vector tail.
@pytest.mark.parametrize(
    "case",
    [
        (3, 70, 66, 16, 72, 3, 3, 1, 1, 1),
        (2, 121, 128, 12, 40, 3, 3, 2, "same", 1),  # bottom and right padding only
        (3, 57, 52, 8, 96, 3, 3, 1, 0, 2),          # no padding: read in place
    ],
    ids=str,
)
def test_backward_weight_segments(case, isa):
    rng = np.random.default_rng(6)
    x, w, kw, pads = _case(rng, case)
    g = rand(rng, *ops.conv2d(x, w, **kw).shape)
    got = ops.conv2d_backward_weight(x, g, w.shape, **kw)
    assert_close(got, ref_backward_weight(x, g, w.shape, kw["stride"], pads, kw["dilation"]), g.shape[0] * g.shape[1] * g.shape[2])


@pytest.mark.parametrize("co", [37, 300], ids=["one_block", "column_blocks"])
@pytest.mark.parametrize("rows", [1, 63, 64, 65, 1000, 50_000])
def test_backward_bias(rows, co, isa):
    rng = np.random.default_rng(5)
    g = rand(rng, 1, rows, 1, co)
    got = ops.conv2d_backward_bias(g)
    want = g.astype(np.float64).sum(axis=(0, 1, 2))
    assert got.dtype == np.float32 and got.shape == (co,)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * rows ** 0.5)


@pytest.mark.parametrize("activation", list(ACTS))
def test_bias_and_activation_fused(activation, isa):
    rng = np.random.default_rng(6)
    for case in [(2, 9, 9, 3, 33, 3, 3, 1, 1, 1), (2, 7, 6, 20, 40, 3, 3, 2, "same", 1)]:
        x, w, kw, pads = _case(rng, case)
        bias = rand(rng, w.shape[3])
        got = ops.conv2d(x, w, bias, activation=activation, **kw)
        want = ref_forward(x, w, bias, kw["stride"], pads, kw["dilation"], activation)
        assert_close(got, want, w.shape[0] * w.shape[1] * w.shape[2])


def test_same_padding_rule():
    # TensorFlow: output ceil(in / stride), odd padding pixel at the bottom/right.
    assert conv_padding("same", (9, 8), (3, 3), (2, 2), (1, 1)) == ((1, 1), (0, 1))
    assert conv_padding("same", (8, 8), (4, 4), (2, 2), (1, 1)) == ((1, 1), (1, 1))
    assert conv_padding("same", (7, 7), (3, 3), (1, 1), (2, 2)) == ((2, 2), (2, 2))
    assert conv_padding("same", (5, 5), (2, 2), (1, 1), (1, 1)) == ((0, 1), (0, 1))
    x, w = np.ones((1, 9, 8, 2), np.float32), np.ones((3, 3, 2, 4), np.float32)
    assert ops.conv2d(x, w, stride=2, padding="same").shape == (1, 5, 4, 4)
    assert ops.conv2d(x, w, padding="valid").shape == (1, 7, 6, 4)


def test_out_argument_and_views():
    rng = np.random.default_rng(7)
    big = rand(rng, 2, 10, 10, 8)
    x = big[:, 1:9, ::2, :5]  # a strided view: copied once, same result
    w = rand(rng, 3, 3, 5, 6)
    out = np.full((2, 6, 3, 6), np.nan, np.float32)
    res = ops.conv2d(x, w, out=out)
    assert res is out
    assert_close(out, ref_forward(x, w), 45)
    strided_out = np.zeros((2, 6, 3, 12), np.float32)[..., ::2]
    ops.conv2d(x, w, out=strided_out)
    assert_close(strided_out, ref_forward(x, w), 45)


def test_empty_sizes():
    w = np.ones((3, 3, 4, 5), np.float32)
    assert ops.conv2d(np.ones((0, 5, 5, 4), np.float32), w).shape == (0, 3, 3, 5)
    assert ops.conv2d(np.ones((2, 5, 5, 4), np.float32), np.ones((3, 3, 4, 0), np.float32)).shape == (2, 3, 3, 0)
    # C_in = 0: the sum over no channels is 0, plus the bias, activated.
    bias = np.array([1.0, -2.0], np.float32)
    y = ops.conv2d(np.ones((1, 4, 4, 0), np.float32), np.ones((3, 3, 0, 2), np.float32), bias, activation="relu")
    np.testing.assert_array_equal(y, np.broadcast_to([1.0, 0.0], (1, 2, 2, 2)))
    g = np.ones((2, 3, 3, 0), np.float32)
    np.testing.assert_array_equal(ops.conv2d_backward_input(g, np.ones((3, 3, 4, 0), np.float32), (2, 5, 5, 4)), 0)
    gw = ops.conv2d_backward_weight(np.ones((0, 5, 5, 4), np.float32), np.ones((0, 3, 3, 5), np.float32), w.shape)
    np.testing.assert_array_equal(gw, 0)
    np.testing.assert_array_equal(ops.conv2d_backward_bias(np.ones((0, 3, 3, 5), np.float32)), 0)


# --- finite differences: conv is linear in x and in w, so central differences are exact up to
# rounding for any step; a step of 1 keeps float32 rounding far below the tolerance -------------


@pytest.mark.parametrize("case", [(1, 5, 6, 2, 3, 3, 3, 2, "same", 1), (2, 6, 5, 3, 2, 2, 3, 1, 1, 2)], ids=str)
def test_gradients_by_finite_differences(case):
    rng = np.random.default_rng(8)
    x, w, kw, _ = _case(rng, case)
    bias = rand(rng, w.shape[3])
    g = rand(rng, *ops.conv2d(x, w, **kw).shape)

    def loss(xx, ww, bb):
        return float((ops.conv2d(xx, ww, bb, **kw).astype(np.float64) * g).sum())

    def numeric(arr, which):
        grad = np.zeros(arr.shape)
        for idx in np.ndindex(arr.shape):
            plus, minus = arr.copy(), arr.copy()
            plus[idx] += 1.0
            minus[idx] -= 1.0
            args = {"x": (x, w, bias), "w": (x, w, bias), "b": (x, w, bias)}[which]
            sub = {"x": 0, "w": 1, "b": 2}[which]
            a_plus, a_minus = list(args), list(args)
            a_plus[sub], a_minus[sub] = plus, minus
            grad[idx] = (loss(*a_plus) - loss(*a_minus)) / 2.0
        return grad

    np.testing.assert_allclose(ops.conv2d_backward_input(g, w, x.shape, **kw), numeric(x, "x"), atol=2e-4, rtol=1e-4)
    np.testing.assert_allclose(ops.conv2d_backward_weight(x, g, w.shape, **kw), numeric(w, "w"), atol=2e-4,
                               rtol=1e-4)
    np.testing.assert_allclose(ops.conv2d_backward_bias(g), numeric(bias, "b"), atol=2e-4, rtol=1e-4)


# --- PyTorch ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
def test_against_torch(case):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    x, w, kw, pads = _case(rng, case)
    bias = rand(rng, w.shape[3])
    (pt, pb), (pl, pr) = pads
    xt = torch.from_numpy(np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))).double().permute(0, 3, 1, 2)
    xt.requires_grad_(True)
    wt = torch.from_numpy(w).double().permute(3, 2, 0, 1).requires_grad_(True)
    bt = torch.from_numpy(bias).double().requires_grad_(True)
    yt = torch.nn.functional.conv2d(xt, wt, bt, stride=_pair(kw["stride"]), dilation=_pair(kw["dilation"]))
    y = ops.conv2d(x, w, bias, **kw)
    k = w.shape[0] * w.shape[1] * w.shape[2]
    assert_close(y, yt.detach().permute(0, 2, 3, 1).numpy(), k)
    g = rand(rng, *y.shape)
    yt.backward(torch.from_numpy(g).double().permute(0, 3, 1, 2))
    gx_pad = xt.grad.permute(0, 2, 3, 1).numpy()
    gx_want = gx_pad[:, pt:pt + x.shape[1], pl:pl + x.shape[2]]
    assert_close(ops.conv2d_backward_input(g, w, x.shape, **kw), gx_want, w.shape[0] * w.shape[1] * w.shape[3])
    assert_close(ops.conv2d_backward_weight(x, g, w.shape, **kw), wt.grad.permute(2, 3, 1, 0).numpy(),
                 g.shape[0] * g.shape[1] * g.shape[2])
    np.testing.assert_allclose(ops.conv2d_backward_bias(g), bt.grad.numpy(), rtol=1e-5, atol=1e-4)


# --- errors -----------------------------------------------------------------------------------


def test_errors():
    x, w = np.ones((2, 8, 8, 3), np.float32), np.ones((3, 3, 3, 4), np.float32)
    with pytest.raises(ValueError, match=r"3 channels but weight \(3, 3, 4, 4\) expects C_in = 4"):
        ops.conv2d(x, np.ones((3, 3, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"larger than the padded input \(8, 8\)"):
        ops.conv2d(x, np.ones((9, 3, 3, 4), np.float32))
    with pytest.raises(ValueError, match="larger than the padded input"):
        ops.conv2d(x, w, dilation=4)
    ops.conv2d(x, np.ones((9, 3, 3, 4), np.float32), padding=(1, 0))  # padded to 10: fits
    with pytest.raises(ValueError, match=r"input must be 4-D NHWC .* shape \(8, 8, 3\)"):
        ops.conv2d(x[0], w)
    with pytest.raises(ValueError, match=r"weight must be 4-D HWIO .* shape \(3, 3, 4\)"):
        ops.conv2d(x, w[0])
    with pytest.raises(ValueError, match="stride must be >= 1"):
        ops.conv2d(x, w, stride=0)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        ops.conv2d(x, w, stride=(1, -1))
    with pytest.raises(ValueError, match="dilation must be >= 1"):
        ops.conv2d(x, w, dilation=0)
    with pytest.raises(ValueError, match="padding must be >= 0"):
        ops.conv2d(x, w, padding=-1)
    with pytest.raises(ValueError, match="padding must be an int, a pair, 'valid' or 'same'"):
        ops.conv2d(x, w, padding="full")
    with pytest.raises(TypeError, match="stride must be an int or a pair"):
        ops.conv2d(x, w, stride=1.5)
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\)"):
        ops.conv2d(x, w, np.ones(3, np.float32))
    with pytest.raises(ValueError, match="unknown activation"):
        ops.conv2d(x, w, activation="softplus")
    with pytest.raises(ValueError, match=r"out: expected shape \(2, 6, 6, 4\)"):
        ops.conv2d(x, w, out=np.empty((2, 6, 6, 5), np.float32))
    with pytest.raises(ValueError, match="read-only"):
        out = np.empty((2, 6, 6, 4), np.float32)
        out.flags.writeable = False
        ops.conv2d(x, w, out=out)


@pytest.mark.parametrize("bad", ["x", "w", "bias"])
def test_dtype_errors(bad):
    args = {"x": np.ones((1, 5, 5, 2), np.float32), "w": np.ones((3, 3, 2, 3), np.float32),
            "bias": np.ones(3, np.float32)}
    args[bad] = args[bad].astype(np.float64)
    with pytest.raises(TypeError, match=f"{bad}: expected dtype float32, got float64"):
        ops.conv2d(args["x"], args["w"], args["bias"])


def test_backward_errors():
    x, w = np.ones((2, 8, 8, 3), np.float32), np.ones((3, 3, 3, 4), np.float32)
    g = np.ones((2, 6, 6, 4), np.float32)
    with pytest.raises(ValueError, match=r"grad_out has shape \(2, 6, 6, 4\), expected \(2, 8, 8, 4\)"):
        ops.conv2d_backward_input(g, w, x.shape, padding=1)
    with pytest.raises(ValueError, match=r"grad_out has shape \(2, 6, 6, 4\), expected \(2, 3, 3, 4\)"):
        ops.conv2d_backward_weight(x, g, w.shape, stride=2)
    with pytest.raises(ValueError, match=r"\(2, 8, 8, 5\) has 5 channels but weight"):
        ops.conv2d_backward_input(g, w, (2, 8, 8, 5))
    with pytest.raises(ValueError, match="input_shape must be 4 sizes"):
        ops.conv2d_backward_input(g, w, (2, 8, 8))
    with pytest.raises(ValueError, match=r"weight_shape must be 4 sizes >= 0, got \(3, 3, 3\)"):
        ops.conv2d_backward_weight(x, g, (3, 3, 3))
    with pytest.raises(ValueError, match="larger than the padded input"):
        ops.conv2d_backward_weight(x, g, (9, 9, 3, 4))
    with pytest.raises(ValueError, match="dilation must be >= 1"):
        ops.conv2d_backward_input(g, w, x.shape, dilation=0)
    with pytest.raises(ValueError, match=r"grad_out must be 4-D .* shape \(6, 4\)"):
        ops.conv2d_backward_bias(g[0, 0])
    with pytest.raises(TypeError, match="grad_out: expected dtype float32, got float64"):
        ops.conv2d_backward_input(g.astype(np.float64), w, x.shape)
    with pytest.raises(TypeError, match="w: expected dtype float32, got int64"):
        ops.conv2d_backward_input(g, w.astype(np.int64), x.shape)
    with pytest.raises(TypeError, match="x: expected dtype float32, got float16"):
        ops.conv2d_backward_weight(x.astype(np.float16), g, w.shape)
    with pytest.raises(TypeError, match="grad_out: expected dtype float32, got float64"):
        ops.conv2d_backward_bias(g.astype(np.float64))


# --- every ISA level through FUSEGRAD_ISA, in a fresh interpreter --------------------------------

_ISA_SCRIPT = """
import numpy as np, fusegrad.ops as ops
from fusegrad import _cpu
rng = np.random.default_rng(0)
res = {"isa": np.array(_cpu.isa())}
for name, (shape, wshape, kw) in {
    "first": ((3, 28, 28, 1), (3, 3, 1, 32), dict()),
    "rgb": ((2, 15, 15, 3), (3, 3, 3, 33), dict(stride=2, padding="same")),
    "deep": ((2, 9, 9, 64), (3, 3, 64, 40), dict(padding=1, dilation=2)),
}.items():
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal(wshape).astype(np.float32)
    b = rng.standard_normal(wshape[3]).astype(np.float32)
    y = ops.conv2d(x, w, b, activation="silu", **kw)
    g = rng.standard_normal(y.shape).astype(np.float32)
    res[name + "_y"] = y
    res[name + "_gx"] = ops.conv2d_backward_input(g, w, x.shape, **kw)
    res[name + "_gw"] = ops.conv2d_backward_weight(x, g, w.shape, **kw)
    res[name + "_gb"] = ops.conv2d_backward_bias(g)
np.savez("out.npz", **res)
"""


def test_fusegrad_isa_environment_levels_agree(tmp_path):
    results = {}
    for level in SUPPORTED:
        d = tmp_path / level
        d.mkdir()
        env = dict(os.environ, FUSEGRAD_ISA=level)
        subprocess.run([sys.executable, "-c", _ISA_SCRIPT], env=env, check=True, cwd=d, capture_output=True)
        with np.load(d / "out.npz") as f:
            results[level] = dict(f)
        assert str(results[level]["isa"]) == level
    base = results[SUPPORTED[0]]
    for level in SUPPORTED[1:]:
        for key, value in results[level].items():
            if key != "isa":
                np.testing.assert_allclose(value, base[key], rtol=1e-4, atol=1e-3, err_msg=f"{level} {key}")


@pytest.mark.parametrize("case", [CASES[2], CASES[7], CASES[-3], (4, 12, 12, 32, 48, 3, 3, 1, 1, 1)], ids=str)
def test_one_thread_paths(case):
    # One thread changes which backward-input form is chosen and skips the partial-sum reduction
    # of backward-weight; the results must not change.
    rng = np.random.default_rng(10)
    x, w, kw, pads = _case(rng, case)
    before = _cpu.get_num_threads()
    _cpu.set_num_threads(1)
    try:
        y = ops.conv2d(x, w, **kw)
        g = rand(rng, *y.shape)
        gx = ops.conv2d_backward_input(g, w, x.shape, **kw)
        gw = ops.conv2d_backward_weight(x, g, w.shape, **kw)
    finally:
        _cpu.set_num_threads(before)
    st, dil = kw["stride"], kw["dilation"]
    assert_close(y, ref_forward(x, w, None, st, pads, dil), w.shape[0] * w.shape[1] * w.shape[2])
    assert_close(gx, ref_backward_input(g, w, x.shape, st, pads, dil), w.shape[0] * w.shape[1] * w.shape[3])
    assert_close(gw, ref_backward_weight(x, g, w.shape, st, pads, dil), g.shape[0] * g.shape[1] * g.shape[2])


# --- the fused conv + max-pool (what Sequential runs for Conv2d -> ReLU -> MaxPool2d) ---------------

def ref_max_pool(y, pool):
    """(pooled, indices into each (OH, OW) plane), first maximum in window order, float64."""
    n, oh, ow, c = y.shape
    ph, pw = oh // pool, ow // pool
    win = y[:, :ph * pool, :pw * pool].reshape(n, ph, pool, pw, pool, c).transpose(0, 1, 3, 2, 4, 5)
    win = win.reshape(n, ph, pw, pool * pool, c)
    arg = win.argmax(axis=3)
    rows = np.arange(ph)[None, :, None, None] * pool + arg // pool
    cols = np.arange(pw)[None, None, :, None] * pool + arg % pool
    return win.max(axis=3), rows * ow + cols


# (N, H, W, C_in, C_out, K, stride, padding, dilation, pool, activation)
POOL_CASES = [
    (3, 28, 28, 1, 32, 3, 1, 0, 1, 2, "relu"),        # the MNIST CNN's first layer
    (2, 13, 13, 32, 64, 3, 1, 0, 1, 2, "relu"),       # its second: odd conv output, last row dropped
    (2, 9, 11, 3, 17, 3, 1, 1, 1, 3, None),           # pool 3, no activation, C_out past a panel
    (1, 8, 8, 4, 40, 2, 2, "same", 1, 2, "leaky_relu"),
    (2, 12, 13, 6, 8, 3, 1, 2, 2, 2, "relu"),         # dilation 2
    (1, 5, 5, 2, 3, 3, 1, 0, 1, 1, "relu"),           # pool 1: the conv itself
    (1, 70, 70, 3, 128, 3, 1, 0, 1, 2, "relu"),       # large rows: several bands per image
]


@pytest.mark.parametrize("case", POOL_CASES, ids=str)
@pytest.mark.parametrize("with_bias", [True, False])
def test_conv2d_max_pool2d(case, with_bias, isa, rng):
    n, h, w, ci, co, k, stride, padding, dilation, pool, act = case
    x, wt = rand(rng, n, h, w, ci), rand(rng, k, k, ci, co)
    b = rand(rng, co) if with_bias else None
    geo = dict(stride=stride, padding=padding, dilation=dilation)
    y, ind = ops.conv2d_max_pool2d(x, wt, b, pool=pool, activation=act, negative_slope=0.2, **geo)
    conv = ops.conv2d(x, wt, b, **geo)  # the kernel's own conv: same float sums, so exact ties agree
    want, want_ind = ref_max_pool(conv.astype(np.float64), pool)
    want = want.astype(np.float32)  # a max is exact; the activation rounds as the kernel's does
    if act == "relu":
        want = np.maximum(want, 0)
    elif act == "leaky_relu":
        want = np.where(want > 0, want, np.float32(0.2) * want)
    assert y.dtype == np.float32 and ind.dtype == np.int32
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(ind, want_ind)
    # Inference: the same values without the indices.
    alone = ops.conv2d_max_pool2d(x, wt, b, pool=pool, activation=act, negative_slope=0.2, return_indices=False, **geo)
    assert isinstance(alone, np.ndarray)
    np.testing.assert_array_equal(alone, want)
    pads = pads_of(padding, x.shape, wt.shape, stride, dilation)
    assert_close(conv, ref_forward(x, wt, b, stride, pads, dilation), k * k * ci)
    # The indices route the gradient back as max_pool2d's do.
    g = rand(rng, *y.shape)
    np.testing.assert_array_equal(ops.max_pool2d_backward(g, ind, conv.shape, pool),
                                  ops.max_pool2d_backward(g, ops.max_pool2d(conv, pool, return_indices=True)[1],
                                                          conv.shape, pool))


def test_conv2d_max_pool2d_errors(rng):
    x, wt = rand(rng, 1, 6, 6, 2), rand(rng, 3, 3, 2, 4)
    with pytest.raises(ValueError, match="commute with max"):
        ops.conv2d_max_pool2d(x, wt, activation="gelu")
    with pytest.raises(ValueError, match="negative_slope > 0"):
        ops.conv2d_max_pool2d(x, wt, activation="leaky_relu", negative_slope=0.0)
    with pytest.raises(ValueError, match="pool must be an int >= 1"):
        ops.conv2d_max_pool2d(x, wt, pool=0)
    with pytest.raises(ValueError, match="larger than the convolution's output"):
        ops.conv2d_max_pool2d(x, wt, pool=5)
    with pytest.raises(ValueError, match="channels"):
        ops.conv2d_max_pool2d(x, rand(rng, 3, 3, 3, 4))
    with pytest.raises(TypeError, match="float32"):
        ops.conv2d_max_pool2d(x.astype(np.float64), wt)
    with pytest.raises(ValueError, match="bias"):
        ops.conv2d_max_pool2d(x, wt, rand(rng, 5))
    y = np.empty((1, 2, 2, 4), np.float32)
    geo = conv_geometry(x.shape, wt.shape, 1, 0, 1, "t")[2]
    with pytest.raises(TypeError, match="indices must be an int32 NumPy array or None"):
        _cpu.conv2d_forward_max_pool(x, wt, None, y, [0] * 16, 2, geo, 0)


def test_layout_conversions(rng):
    x = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)  # NCHW
    nhwc = ops.to_nhwc(x)
    assert nhwc.shape == (2, 5, 4, 3) and nhwc.flags.c_contiguous
    np.testing.assert_array_equal(ops.to_nchw(nhwc), x)
    w = rng.standard_normal((8, 3, 3, 2)).astype(np.float32)  # OIHW
    np.testing.assert_array_equal(ops.weight_to_oihw(ops.weight_to_hwio(w)), w)
    assert ops.weight_to_hwio(w).shape == (3, 2, 3, 8)
    with pytest.raises(ValueError, match="to_nhwc: x must be 4-D"):
        ops.to_nhwc(x[0])
    with pytest.raises(ValueError, match=r"this looks like NCHW: use x.transpose\(0, 2, 3, 1\)"):
        ops.conv2d(x, np.ones((3, 3, 3, 4), np.float32))


# --- hostile geometry ---------------------------------------------------------------------------


@pytest.mark.parametrize("stride, padding", [((1, 2**62), ((0, 0), (1, 2**62))), ((2**61, 1), ((2**61, 2**61), (0, 0))),
                                             (1, 2**40)])
def test_geometry_too_large_for_the_kernels_is_refused(stride, padding):
    # Sizes whose padded rows or tables could not exist are a ValueError naming the geometry,
    # before anything is allocated (they once segfaulted in backward-weight).
    x, w = np.ones((1, 4, 4, 1), np.float32), np.ones((1, 3, 1, 1), np.float32)
    with pytest.raises(ValueError, match="positions per axis the kernels index"):
        ops.conv2d(x, w, stride=stride, padding=padding)
    with pytest.raises(ValueError, match="positions per axis the kernels index"):
        ops.conv2d_backward_weight(x, np.ones((1, 4, 2, 1), np.float32), w.shape, stride=stride, padding=padding)


def test_backward_input_with_a_stride_larger_than_the_image_is_quick():
    # Only the stride phases that hit the image are visited: visiting all 10^18 would never end (10^10
    # took minutes).
    import time

    start = time.perf_counter()
    gx = ops.conv2d_backward_input(np.full((1, 1, 1, 1), 2, np.float32), np.full((1, 1, 1, 1), 3, np.float32),
                                   (1, 1, 1, 1), stride=10**9)
    assert gx[0, 0, 0, 0] == 6.0
    assert time.perf_counter() - start < 5.0
