"""fusegrad.ops conv2d, its backward passes and the fused conv + max-pool on CUDA arrays
(cuda/conv/) against float64 NumPy references written as loops over the kernel taps: strides,
paddings (asymmetric, "same"), dilations, 1x1 and first layers (C_in 1 and 3: the scalar gathers),
C_out and pixel counts one below and above each tile, both tile configurations, the split-K weight
gradient, empty shapes. Each test runs on the host SIMT emulator every run and on a GPU where there
is one (the `cuda_device` fixture); on the emulator the launch log says which kernels ran.
"""
import math

import numpy as np
import pytest

import fusegrad
import fusegrad.ops as ops
from fusegrad.ops import conv as conv_ops
from fusegrad.ops.conv import conv_padding


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def host(x):
    return fusegrad._backend.to_host(x)


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


# --- float64 references ---------------------------------------------------------------------------


def _taps(i, j, oh, ow, stride, dilation):
    (sh, sw), (dh, dw) = stride, dilation
    return (slice(None), slice(i * dh, i * dh + sh * (oh - 1) + 1, sh), slice(j * dw, j * dw + sw * (ow - 1) + 1, sw),
            slice(None))


def ref_forward(x, w, bias, stride, pads, dilation):
    stride, dilation = _pair(stride), _pair(dilation)
    x = np.pad(x.astype(np.float64), ((0, 0), pads[0], pads[1], (0, 0)))
    kh, kw = w.shape[:2]
    oh = (x.shape[1] - (kh - 1) * dilation[0] - 1) // stride[0] + 1
    ow = (x.shape[2] - (kw - 1) * dilation[1] - 1) // stride[1] + 1
    y = np.zeros((x.shape[0], oh, ow, w.shape[3]))
    for i in range(kh):
        for j in range(kw):
            y += x[_taps(i, j, oh, ow, stride, dilation)] @ w[i, j].astype(np.float64)
    return y if bias is None else y + bias


def ref_backward_input(g, w, x_shape, stride, pads, dilation):
    stride, dilation = _pair(stride), _pair(dilation)
    n, h, wd, c = x_shape
    (pt, pb), (pl, pr) = pads
    gx = np.zeros((n, h + pt + pb, wd + pl + pr, c))
    oh, ow = g.shape[1:3]
    for i in range(w.shape[0]):
        for j in range(w.shape[1]):
            gx[_taps(i, j, oh, ow, stride, dilation)] += g.astype(np.float64) @ w[i, j].T.astype(np.float64)
    return gx[:, pt:pt + h, pl:pl + wd]


def ref_backward_weight(x, g, w_shape, stride, pads, dilation):
    stride, dilation = _pair(stride), _pair(dilation)
    x = np.pad(x.astype(np.float64), ((0, 0), pads[0], pads[1], (0, 0)))
    oh, ow = g.shape[1:3]
    gw = np.zeros(w_shape)
    for i in range(w_shape[0]):
        for j in range(w_shape[1]):
            patch = x[_taps(i, j, oh, ow, stride, dilation)].reshape(-1, w_shape[2])
            gw[i, j] = patch.T @ g.reshape(-1, w_shape[3]).astype(np.float64)
    return gw


def ref_max_pool(y, pool):
    """(pooled, indices into each (OH, OW) plane): the first maximum in window order, NaN first."""
    n, oh, ow, c = y.shape
    ph, pw = oh // pool, ow // pool
    win = y[:, :ph * pool, :pw * pool].reshape(n, ph, pool, pw, pool, c).transpose(0, 1, 3, 2, 4, 5)
    win = win.reshape(n, ph, pw, pool * pool, c)
    arg = win.argmax(axis=3)
    rows = np.arange(ph)[None, :, None, None] * pool + arg // pool
    cols = np.arange(pw)[None, None, :, None] * pool + arg % pool
    return win.max(axis=3), rows * ow + cols


ACTS = {
    None: lambda y: y,
    "relu": lambda y: np.maximum(y, 0.0),
    "sigmoid": lambda y: 1.0 / (1.0 + np.exp(-y)),
    "tanh": np.tanh,
    "silu": lambda y: y / (1.0 + np.exp(-y)),
    "gelu": lambda y: y * 0.5 * (1.0 + np.vectorize(math.erf)(y / math.sqrt(2.0))),
    "gelu_tanh": lambda y: 0.5 * y * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (y + 0.044715 * y**3))),
}


def assert_close(got, want, k):
    # float32 sums of k products of standard-normal terms: error ~ sqrt(k) ulps of the sum.
    got = host(got)
    assert got.dtype == np.float32
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5 * max(k, 1) ** 0.5)


@pytest.fixture
def tiles(monkeypatch):
    """Forces the implicit GEMMs' tile configuration ("large", "small") or K splits."""
    def force(name="auto", splits=0):
        monkeypatch.setattr(conv_ops, "_CUDA_TILES", name)
        monkeypatch.setattr(conv_ops, "_CUDA_WGRAD_SPLITS", splits)
    return force


def ran(cuda_device) -> list:
    """The kernels launched since the last call (emulator), or None on a GPU."""
    if cuda_device.emulation is None:
        return None
    names = cuda_device.emulation.kernels()
    cuda_device.emulation.clear()
    return names


# --- geometry ------------------------------------------------------------------------------------

# (N, H, W, C_in, C_out, KH, KW, stride, padding, dilation)
CASES = [
    (2, 7, 9, 5, 6, 3, 3, 1, 0, 1),             # odd sizes, valid, C_in 5: scalar gathers
    (1, 5, 5, 1, 1, 1, 1, 1, 0, 1),             # 1x1, single channel
    (2, 12, 12, 1, 8, 3, 3, 1, 0, 1),           # first layer, C_in 1
    (2, 11, 10, 3, 65, 3, 3, 1, 1, 1),          # first layer, C_in 3; C_out one above a small tile
    (1, 8, 8, 8, 63, 3, 3, 1, 1, 1),            # C_in 8: vector gathers; C_out one below a small tile
    (1, 6, 6, 8, 129, 3, 3, 1, 1, 1),           # C_out one above a large tile
    (1, 3, 43, 4, 8, 1, 1, 1, 0, 1),            # 129 output pixels: one above a large tile
    (1, 3, 21, 4, 8, 1, 3, 1, (0, 1), 1),       # 63 output pixels: one below a small tile
    (2, 9, 10, 8, 12, 3, 3, 2, 1, 1),           # stride 2, padding 1
    (2, 9, 8, 12, 16, 3, 3, 2, "same", 1),      # "same" with stride 2: asymmetric padding
    (2, 8, 8, 3, 5, 4, 4, 2, "same", 1),        # even kernel, "same", stride 2, C_in 3
    (2, 11, 12, 4, 8, 3, 3, 1, 2, 2),           # dilation 2
    (1, 12, 13, 4, 8, 3, 2, (2, 1), ((0, 2), (1, 0)), (2, 1)),  # asymmetric everything
    (1, 4, 4, 16, 9, 1, 1, 2, 0, 1),            # 1x1 stride 2: some pixels get no gradient
    (1, 3, 3, 2, 3, 3, 3, 1, 0, 1),             # kernel as large as the input
    (5, 6, 6, 4, 20, 2, 2, 3, 1, 1),            # stride > kernel
    (1, 9, 9, 8, 4, 3, 3, 1, 3, 1),             # padding past the kernel's reach
]


def _case(rng, case):
    n, h, w, ci, co, kh, kw, stride, padding, dilation = case
    x, wt = rand(rng, n, h, w, ci), rand(rng, kh, kw, ci, co)
    pads = conv_padding(padding, (h, w), (kh, kw), _pair(stride), _pair(dilation))
    return x, wt, dict(stride=stride, padding=padding, dilation=dilation), pads


@pytest.mark.parametrize("tile", ["large", "small"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_forward_and_backward_passes(cuda_device, case, tile, tiles, rng):
    tiles(tile)
    x, wt, geo, pads = _case(rng, case)
    b = rand(rng, wt.shape[3])
    st, dil = geo["stride"], geo["dilation"]
    dev = cuda_device.array
    y = ops.conv2d(dev(x), dev(wt), dev(b), activation="relu", **geo)
    assert ran(cuda_device) in (None, ["simt_gemm_kernel<SimtLarge, Im2colOperand, WeightOperand>"
                                       if tile == "large" else
                                       "simt_gemm_kernel<SimtSmall, Im2colOperand, WeightOperand>"])
    want = ref_forward(x, wt, b, st, pads, dil)
    assert_close(y, np.maximum(want, 0), wt.shape[0] * wt.shape[1] * wt.shape[2])
    g = rand(rng, *want.shape)
    gx = ops.conv2d_backward_input(dev(g), dev(wt), x.shape, **geo)
    gw = ops.conv2d_backward_weight(dev(x), dev(g), wt.shape, **geo)
    gb = ops.conv2d_backward_bias(dev(g))
    kernels = ran(cuda_device)
    assert kernels is None or (kernels[0].startswith("simt_gemm_kernel<Simt") and "DgradOperand" in kernels[0]
                               and "WgradOperand" in kernels[1] and kernels[-1] in ("bias_grad_kernel",
                                                                                    "sum_splits_kernel"))
    assert_close(gx, ref_backward_input(g, wt, x.shape, st, pads, dil), wt.shape[0] * wt.shape[1] * wt.shape[3])
    assert_close(gw, ref_backward_weight(x, g, wt.shape, st, pads, dil), g.shape[0] * g.shape[1] * g.shape[2])
    assert_close(gb, g.astype(np.float64).sum(axis=(0, 1, 2)), g.shape[0] * g.shape[1] * g.shape[2])


@pytest.mark.parametrize("splits", [1, 3, 7])
def test_backward_weight_split_k(cuda_device, splits, tiles, rng):
    # N·OH·OW = 2·14·14 = 392 rows of K, cut into `splits` ranges summed by sum_splits_kernel.
    tiles("small", splits)
    x, wt, geo, pads = _case(rng, (2, 16, 16, 4, 12, 3, 3, 1, 0, 1))
    g = rand(rng, 2, 14, 14, 12)
    gw = ops.conv2d_backward_weight(cuda_device.array(x), cuda_device.array(g), wt.shape, **geo)
    kernels = ran(cuda_device)
    assert kernels is None or kernels == ["simt_gemm_kernel<Tile, WgradOperand, StridedOperand<false>>"] + \
        (["sum_splits_kernel"] if splits > 1 else [])
    assert_close(gw, ref_backward_weight(x, g, wt.shape, 1, pads, 1), 2 * 14 * 14)


def test_backward_weight_splits_long_reductions_by_size(cuda_device, rng):
    x, wt, geo, pads = _case(rng, (8, 20, 20, 3, 5, 3, 3, 1, 1, 1))  # K = 3200 rows: split by size
    g = rand(rng, 8, 20, 20, 5)
    gw = ops.conv2d_backward_weight(cuda_device.array(x), cuda_device.array(g), wt.shape, **geo)
    kernels = ran(cuda_device)
    assert kernels is None or kernels[-1] == "sum_splits_kernel"
    assert_close(gw, ref_backward_weight(x, g, wt.shape, 1, pads, 1), 3200)


@pytest.mark.parametrize("cols", [1, 33, 70])
@pytest.mark.parametrize("rows", [1, 255, 1000])
def test_backward_bias(cuda_device, rows, cols, rng):
    g = rand(rng, 1, rows, 1, cols)
    gb = ops.conv2d_backward_bias(cuda_device.array(g))
    kernels = ran(cuda_device)
    assert kernels is None or kernels == ["bias_grad_kernel"] + (["sum_splits_kernel"] if rows >= 512 else [])
    assert_close(gb, g.astype(np.float64).sum(axis=(0, 1, 2)), rows)


@pytest.mark.parametrize("activation", list(ACTS))
def test_bias_and_each_activation(cuda_device, activation, rng):
    x, wt, geo, pads = _case(rng, (2, 7, 6, 4, 9, 3, 3, 1, 1, 1))
    b = rand(rng, 9)
    y = ops.conv2d(cuda_device.array(x), cuda_device.array(wt), cuda_device.array(b), activation=activation, **geo)
    assert_close(y, ACTS[activation](ref_forward(x, wt, b, 1, pads, 1)), 36)


def test_backward_in_one_call_with_out_and_mask(cuda_device, rng):
    x, wt, geo, pads = _case(rng, (2, 8, 7, 3, 6, 3, 3, 2, "same", 1))
    dev = cuda_device.array
    g = rand(rng, 2, 4, 4, 6)
    outs = (dev(np.zeros(x.shape, np.float32)), None, dev(np.zeros(6, np.float32)))
    gx, gw, gb = ops.conv2d_backward(dev(g), dev(x), dev(wt), out=outs, **geo)
    assert gx is outs[0] and gb is outs[2] and gw is not None
    assert_close(gx, ref_backward_input(g, wt, x.shape, 2, pads, 1), 54)
    assert_close(gw, ref_backward_weight(x, g, wt.shape, 2, pads, 1), 32)
    assert_close(gb, g.astype(np.float64).sum(axis=(0, 1, 2)), 32)
    gx, gw, gb = ops.conv2d_backward(dev(g), dev(x), dev(wt), input_grad=False, bias_grad=False, **geo)
    assert gx is None and gb is None
    assert_close(gw, ref_backward_weight(x, g, wt.shape, 2, pads, 1), 32)


def test_views_out_and_numpy_while_emulating(cuda_device, rng):
    # A transposed (NCHW-stored) input is copied to NHWC first; out= receives the result.
    x_nchw = rand(rng, 2, 3, 8, 9)
    wt = rand(rng, 3, 3, 3, 4)
    x = cuda_device.array(x_nchw).transpose(0, 2, 3, 1)
    out = cuda_device.array(np.zeros((2, 6, 7, 4), np.float32))
    assert ops.conv2d(x, cuda_device.array(wt), out=out) is out
    assert_close(out, ref_forward(x_nchw.transpose(0, 2, 3, 1), wt, None, 1, ((0, 0), (0, 0)), 1), 27)
    if cuda_device.kind == "emulated":  # NumPy in, NumPy out, computed by the CUDA kernels
        y = ops.conv2d(x_nchw.transpose(0, 2, 3, 1), wt)
        assert type(y) is np.ndarray and ran(cuda_device)[0].startswith("simt_gemm_kernel")
        gx, gw, gb = ops.conv2d_backward(rand(rng, 2, 6, 7, 4), x_nchw.transpose(0, 2, 3, 1), wt)
        assert all(type(t) is np.ndarray for t in (gx, gw, gb))


@pytest.mark.parametrize("stride", [7, 10**9, 2**40])
def test_strides_past_the_image(cuda_device, stride, rng):
    # One output row: only input rows hit by a tap get a gradient (the stride's divisor is capped
    # below 2^31 inside the kernels without changing any quotient they use).
    x, wt, g = rand(rng, 2, 5, 4, 4), rand(rng, 2, 1, 4, 3), rand(rng, 2, 1, 4, 3)
    geo = dict(stride=(stride, 1), padding=((1, 0), (0, 0)))
    pads = ((1, 0), (0, 0))
    dev = cuda_device.array
    assert_close(ops.conv2d(dev(x), dev(wt), **geo), ref_forward(x, wt, None, (stride, 1), pads, 1), 8)
    assert_close(ops.conv2d_backward_input(dev(g), dev(wt), x.shape, **geo),
                 ref_backward_input(g, wt, x.shape, (min(stride, 8), 1), pads, 1), 6)
    assert_close(ops.conv2d_backward_weight(dev(x), dev(g), wt.shape, **geo),
                 ref_backward_weight(x, g, wt.shape, (min(stride, 8), 1), pads, 1), 8)


def test_misaligned_views_take_the_scalar_gathers(cuda_device, rng):
    # Channels a multiple of 4, but every array one float past a 16-byte boundary: contiguous
    # views read in place, through the element-wise gathers and stores.
    def misaligned(host_array):
        flat = cuda_device.array(np.concatenate([[0.0], host_array.ravel()]).astype(np.float32))
        return flat[1:].reshape(host_array.shape)

    x, wt, geo, pads = _case(rng, (2, 7, 8, 8, 12, 3, 3, 2, 1, 1))
    b, g = rand(rng, 12), rand(rng, 2, 4, 4, 12)
    out = misaligned(np.zeros((2, 4, 4, 12), np.float32))
    ops.conv2d(misaligned(x), misaligned(wt), misaligned(b), out=out, **geo)
    assert_close(out, ref_forward(x, wt, b, 2, pads, 1), 72)
    gx = misaligned(np.zeros(x.shape, np.float32))
    gw = misaligned(np.zeros(wt.shape, np.float32))
    ops.conv2d_backward_input(misaligned(g), misaligned(wt), x.shape, out=gx, **geo)
    ops.conv2d_backward_weight(misaligned(x), misaligned(g), wt.shape, out=gw, **geo)
    assert_close(gx, ref_backward_input(g, wt, x.shape, 2, pads, 1), 108)
    assert_close(gw, ref_backward_weight(x, g, wt.shape, 2, pads, 1), 32)


def test_empty_sizes(cuda_device, rng):
    dev = cuda_device.array
    x, wt = dev(rand(rng, 0, 5, 5, 3)), dev(rand(rng, 3, 3, 3, 4))
    assert ops.conv2d(x, wt).shape == (0, 3, 3, 4)
    gw = ops.conv2d_backward_weight(x, dev(rand(rng, 0, 3, 3, 4)), (3, 3, 3, 4))
    np.testing.assert_array_equal(host(gw), 0)
    np.testing.assert_array_equal(host(ops.conv2d_backward_bias(dev(rand(rng, 0, 3, 3, 4)))), 0)
    assert ops.conv2d(dev(rand(rng, 1, 5, 5, 3)), dev(rand(rng, 3, 3, 3, 0))).shape == (1, 3, 3, 0)
    b = rand(rng, 4)  # no input channels: K = 0, the output is the bias
    y = ops.conv2d(dev(rand(rng, 1, 5, 5, 0)), dev(rand(rng, 3, 3, 0, 4)), dev(b))
    np.testing.assert_array_equal(host(y), np.broadcast_to(b, (1, 3, 3, 4)))


# --- the fused conv + max-pool -------------------------------------------------------------------

# (N, H, W, C_in, C_out, K, stride, padding, dilation, pool, activation)
POOL_CASES = [
    (2, 12, 12, 1, 8, 3, 1, 0, 1, 2, "relu"),         # a first layer
    (2, 9, 9, 8, 16, 3, 1, 0, 1, 2, "relu"),          # odd conv output: the last row dropped
    (2, 9, 11, 3, 17, 3, 1, 1, 1, 3, None),           # pool 3, no activation
    (1, 8, 8, 4, 40, 2, 2, "same", 1, 2, "leaky_relu"),
    (1, 5, 5, 2, 3, 3, 1, 0, 1, 1, "relu"),           # pool 1: the conv itself
]


@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_conv2d_max_pool2d(cuda_device, case, rng):
    n, h, w, ci, co, k, stride, padding, dilation, pool, act = case
    x, wt, b = rand(rng, n, h, w, ci), rand(rng, k, k, ci, co), rand(rng, co)
    geo = dict(stride=stride, padding=padding, dilation=dilation)
    dev = cuda_device.array
    y, ind = ops.conv2d_max_pool2d(dev(x), dev(wt), dev(b), pool=pool, activation=act, negative_slope=0.2, **geo)
    kernels = ran(cuda_device)
    assert kernels is None or (kernels[0].startswith("simt_gemm_kernel") and kernels[1] == "conv_max_pool_kernel")
    conv = host(ops.conv2d(dev(x), dev(wt), dev(b), **geo))  # the same sums: ties agree exactly
    want, want_ind = ref_max_pool(conv, pool)
    if act == "relu":
        want = np.maximum(want, 0)
    elif act == "leaky_relu":
        want = np.where(want > 0, want, np.float32(0.2) * want)
    assert host(y).dtype == np.float32 and host(ind).dtype == np.int32
    np.testing.assert_array_equal(host(y), want)
    np.testing.assert_array_equal(host(ind), want_ind)
    alone = ops.conv2d_max_pool2d(dev(x), dev(wt), dev(b), pool=pool, activation=act, negative_slope=0.2,
                                  return_indices=False, **geo)
    np.testing.assert_array_equal(host(alone), want)
    pads = conv_padding(padding, (h, w), (k, k), _pair(stride), _pair(dilation))
    assert_close(conv, ref_forward(x, wt, b, stride, pads, dilation), k * k * ci)
    # The indices route the gradient back as max_pool2d's do (cuda/pool's backward on the device).
    g, conv_dev = dev(rand(rng, *want.shape)), dev(conv)
    routed = ops.max_pool2d_backward(g, ind, conv.shape, pool)
    _, pool_ind = ops.max_pool2d(conv_dev, pool, return_indices=True)
    np.testing.assert_array_equal(host(routed), host(ops.max_pool2d_backward(g, pool_ind, conv.shape, pool)))


def test_conv2d_max_pool2d_ties_and_nan(cuda_device, rng):
    # Zero input: every conv output is its bias, so each window ties and takes its first pixel;
    # a NaN pixel makes the windows it reaches NaN, at the first NaN of the window.
    x = np.zeros((1, 8, 8, 2), np.float32)
    wt, b = rand(rng, 3, 3, 2, 4), rand(rng, 4)
    y, ind = ops.conv2d_max_pool2d(cuda_device.array(x), cuda_device.array(wt), cuda_device.array(b), pool=2,
                                   activation="relu")
    np.testing.assert_array_equal(host(y), np.broadcast_to(np.maximum(b, 0), (1, 3, 3, 4)))
    np.testing.assert_array_equal(host(ind), np.broadcast_to((np.arange(3)[:, None] * 12 + np.arange(3) * 2)[
        None, :, :, None], (1, 3, 3, 4)))
    x[0, 3, 4, 1] = np.nan
    y, ind = ops.conv2d_max_pool2d(cuda_device.array(x), cuda_device.array(wt), cuda_device.array(b), pool=2)
    conv = host(ops.conv2d(cuda_device.array(x), cuda_device.array(wt), cuda_device.array(b)))
    want, want_ind = ref_max_pool(conv, 2)
    np.testing.assert_array_equal(host(y), want)
    np.testing.assert_array_equal(host(ind), want_ind)
    assert np.isnan(host(y)).any()


def test_host_and_device_arrays_do_not_mix(cuda_device, rng):
    if cuda_device.kind == "emulated":
        pytest.skip("while emulating, NumPy arrays are on the emulated device too")
    with pytest.raises(ValueError, match="same device"):
        ops.conv2d(cuda_device.array(rand(rng, 1, 5, 5, 2)), rand(rng, 3, 3, 2, 4))


@pytest.mark.cuda_emulated
def test_index_range_is_checked_before_any_launch():
    # 2^31 output pixels: beyond the 32-bit index splits of the gathers, refused up front.
    module = fusegrad._emulated.require_module()
    dims = (2**31, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0)
    module.clear_launches()
    with pytest.raises(ValueError, match="more than the CUDA kernels index"):
        module.conv2d_forward(16, 16, 0, 16, dims, 0, 0.0, "auto", 0, 0)
    assert module.launches() == []
