"""Grouped convolution (groups=, depthwise at groups = C_in) in ops.conv2d and its backward
passes: the CPU kernels at every ISA level and the CUDA kernels (host SIMT emulator every run, a
GPU where there is one) against float64 references that convolve each group on its own; nn.Conv2d,
Conv1d and ConvTranspose2d with groups against PyTorch, forward and gradients; the errors."""
import numpy as np
import pytest

import fusegrad as fg
import fusegrad.ops as ops
from fusegrad import nn
from fusegrad.nn import functional as F
from fusegrad.ops import conv as conv_ops
from fusegrad.ops.conv import conv_padding

from test_conv_cuda import _pair, assert_close, ran, rand, ref_backward_input, ref_backward_weight, ref_forward


def per_group(groups, c_in, c_out):
    """(input channel slice, output channel slice) of each group."""
    ci, co = c_in // groups, c_out // groups
    return [(slice(g * ci, (g + 1) * ci), slice(g * co, (g + 1) * co)) for g in range(groups)]


def grouped_forward(x, w, b, groups, stride, pads, dilation):
    parts = [ref_forward(x[..., i], w[..., o], None, stride, pads, dilation)
             for i, o in per_group(groups, x.shape[3], w.shape[3])]
    y = np.concatenate(parts, axis=3)
    return y if b is None else y + b


def grouped_backward_input(g, w, x_shape, groups, stride, pads, dilation):
    shape_g = (*x_shape[:3], x_shape[3] // groups)
    return np.concatenate([ref_backward_input(g[..., o], w[..., o], shape_g, stride, pads, dilation)
                           for _, o in per_group(groups, x_shape[3], w.shape[3])], axis=3)


def grouped_backward_weight(x, g, w_shape, groups, stride, pads, dilation):
    shape_g = (*w_shape[:3], w_shape[3] // groups)
    return np.concatenate([ref_backward_weight(x[..., i], g[..., o], shape_g, stride, pads, dilation)
                           for i, o in per_group(groups, x.shape[3], w_shape[3])], axis=3)


# (N, H, W, C_in, C_out, groups, KH, KW, stride, padding, dilation)
CASES = [
    (2, 7, 9, 6, 4, 2, 3, 3, 1, 1, 1),            # two groups, odd image
    (1, 8, 8, 8, 8, 8, 3, 3, 1, 1, 1),            # depthwise
    (2, 9, 10, 5, 10, 5, 3, 3, 2, 1, 1),          # depthwise with multiplier 2, stride 2
    (1, 11, 7, 12, 18, 3, 3, 2, 1, "same", 1),    # four channels a group: vector loads on the GPU
    (2, 10, 11, 6, 9, 3, 5, 5, 1, 2, 2),          # dilation 2
    (1, 6, 6, 16, 32, 4, 1, 1, 1, 0, 1),          # 1x1 grouped (ShuffleNet's)
    (1, 12, 13, 3, 3, 3, 3, 2, (2, 1), ((0, 2), (1, 0)), (2, 1)),  # asymmetric everything
    (3, 5, 5, 7, 7, 7, 5, 5, 1, 2, 1),            # depthwise 5x5, prime channels
]


def _case(rng, case):
    n, h, w, ci, co, groups, kh, kw, stride, padding, dilation = case
    x, wt = rand(rng, n, h, w, ci), rand(rng, kh, kw, ci // groups, co)
    pads = conv_padding(padding, (h, w), (kh, kw), _pair(stride), _pair(dilation))
    return x, wt, rand(rng, co), dict(stride=stride, padding=padding, dilation=dilation, groups=groups), pads


def _check_all(x, wt, b, geo, pads, device=None):
    dev = device or (lambda a: a)
    groups, st, dil = geo["groups"], geo["stride"], geo["dilation"]
    k = wt.shape[0] * wt.shape[1] * wt.shape[2]
    want = grouped_forward(x, wt, b, groups, st, pads, dil)
    assert_close(ops.conv2d(dev(x), dev(wt), dev(b), **geo), want, k)
    assert_close(ops.conv2d(dev(x), dev(wt), dev(b), activation="relu", **geo), np.maximum(want, 0), k)
    g = rand(np.random.default_rng(5), *want.shape)
    want_gx = grouped_backward_input(g, wt, x.shape, groups, st, pads, dil)
    want_gw = grouped_backward_weight(x, g, wt.shape, groups, st, pads, dil)
    rows = g.shape[0] * g.shape[1] * g.shape[2]
    assert_close(ops.conv2d_backward_input(dev(g), dev(wt), x.shape, **geo), want_gx, k)
    assert_close(ops.conv2d_backward_weight(dev(x), dev(g), wt.shape, **geo), want_gw, rows)
    gx, gw, gb = ops.conv2d_backward(dev(g), dev(x), dev(wt), **geo)
    assert_close(gx, want_gx, k)
    assert_close(gw, want_gw, rows)
    assert_close(gb, g.astype(np.float64).sum(axis=(0, 1, 2)), rows)
    gx, gw, gb = ops.conv2d_backward(dev(g), dev(x), dev(wt), input_grad=False, bias_grad=False, **geo)
    assert gx is None and gb is None
    assert_close(gw, want_gw, rows)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_grouped_cpu(case, isa, rng):
    x, wt, b, geo, pads = _case(rng, case)
    _check_all(x, wt, b, geo, pads)


def test_grouped_cpu_reads_views_and_writes_out(rng):
    x, wt, b, geo, pads = _case(rng, CASES[0])
    want = grouped_forward(x, wt, b, 2, 1, pads, 1)
    out = np.full(want.shape, np.nan, np.float32)
    ops.conv2d(np.asfortranarray(x), wt[..., ::1], b, out=out, **geo)
    assert_close(out, want, 18)


@pytest.mark.parametrize("cig", [2, 1])  # the regrouping driver; the depthwise kernels
def test_grouped_empty_batch(rng, cig):
    x, wt = rand(rng, 0, 5, 5, 4), rand(rng, 3, 3, cig, 6 if cig == 2 else 8)
    groups = 4 // cig
    y = ops.conv2d(x, wt, groups=groups)
    assert y.shape == (0, 3, 3, wt.shape[3])
    gw = ops.conv2d_backward_weight(x, np.zeros(y.shape, np.float32), wt.shape, groups=groups)
    assert gw.shape == wt.shape and not gw.any()


@pytest.mark.parametrize("activation", ["gelu", "sigmoid"])
def test_depthwise_applies_the_activation(rng, activation):
    # The depthwise kernels have no store epilogue: the activation runs as a pass over y.
    x, wt, b = rand(rng, 2, 6, 6, 5), rand(rng, 3, 3, 1, 5), rand(rng, 5)
    plain = ops.conv2d(x, wt, b, padding=1, groups=5)
    want = ops.activation.forward(activation, plain)
    np.testing.assert_allclose(ops.conv2d(x, wt, b, padding=1, groups=5, activation=activation), want, rtol=1e-6)


@pytest.mark.parametrize("tile", ["large", "small"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_grouped_cuda(cuda_device, case, tile, rng, monkeypatch):
    monkeypatch.setattr(conv_ops, "_CUDA_TILES", tile)
    x, wt, b, geo, pads = _case(rng, case)
    _check_all(x, wt, b, geo, pads, cuda_device.array)


@pytest.mark.parametrize("splits", [1, 3])
def test_grouped_cuda_weight_gradient_split_k(cuda_device, splits, rng, monkeypatch):
    # Groups run one after another, each split over K into a workspace, then interleaved.
    monkeypatch.setattr(conv_ops, "_CUDA_WGRAD_SPLITS", splits)
    x, wt, b, geo, pads = _case(rng, (2, 16, 16, 6, 9, 3, 3, 3, 1, 0, 1))
    g = rand(rng, 2, 14, 14, 9)
    gw = ops.conv2d_backward_weight(cuda_device.array(x), cuda_device.array(g), wt.shape, **geo)
    kernels = ran(cuda_device)
    assert kernels is None or kernels[-1] == "merge_groups_kernel"
    assert_close(gw, grouped_backward_weight(x, g, wt.shape, 3, 1, pads, 1), 2 * 14 * 14)


def test_grouped_cuda_forward_is_one_launch(cuda_device, rng):
    x, wt, b, geo, pads = _case(rng, CASES[0])
    ran(cuda_device)
    ops.conv2d(cuda_device.array(x), cuda_device.array(wt), cuda_device.array(b), **geo)
    kernels = ran(cuda_device)
    assert kernels is None or kernels == ["simt_gemm_kernel<SimtSmall, Im2colOperand, WeightOperand>"]


def test_depthwise_cuda_runs_the_direct_kernels(cuda_device, rng):
    # Multiplier 2, stride 2; the weight gradient's pixels split over blocks (forced by size here).
    x, wt, b, geo, pads = _case(rng, (3, 33, 31, 4, 8, 4, 3, 3, 2, 1, 1))
    dev = cuda_device.array
    ran(cuda_device)
    y = ops.conv2d(dev(x), dev(wt), dev(b), activation="gelu", **geo)
    g = rand(rng, *y.shape)
    gx = ops.conv2d_backward_input(dev(g), dev(wt), x.shape, **geo)
    gw = ops.conv2d_backward_weight(dev(x), dev(g), wt.shape, **geo)
    kernels = ran(cuda_device)
    assert kernels is None or kernels[:3] == ["depthwise_forward_kernel", "depthwise_backward_input_kernel",
                                              "depthwise_backward_weight_kernel"]
    want = grouped_forward(x, wt, b, 4, 2, pads, 1)
    with cuda_device.cpu():
        want_y = ops.activation.forward("gelu", want.astype(np.float32))
    assert_close(y, want_y, 9)
    assert_close(gx, grouped_backward_input(g, wt, x.shape, 4, 2, pads, 1), 18)
    assert_close(gw, grouped_backward_weight(x, g, wt.shape, 4, 2, pads, 1), g.shape[0] * g.shape[1] * g.shape[2])


# --- errors ---------------------------------------------------------------------------------------


def test_groups_must_divide_the_channels(rng):
    x = rand(rng, 1, 5, 5, 6)
    with pytest.raises(ValueError, match=r"in_channels \(6\) must be divisible by groups \(4\)"):
        ops.conv2d(x, rand(rng, 3, 3, 1, 8), groups=4)
    with pytest.raises(ValueError, match=r"out_channels \(5\) must be divisible by groups \(2\)"):
        ops.conv2d(x, rand(rng, 3, 3, 3, 5), groups=2)
    with pytest.raises(ValueError, match=r"with groups=2 expects C_in = 4"):
        ops.conv2d(x, rand(rng, 3, 3, 2, 4), groups=2)
    with pytest.raises(ValueError, match="groups must be an int >= 1"):
        ops.conv2d(x, rand(rng, 3, 3, 6, 4), groups=0)
    with pytest.raises(TypeError, match="groups must be an int"):
        ops.conv2d(x, rand(rng, 3, 3, 3, 4), groups=2.0)
    with pytest.raises(ValueError, match="must be divisible by groups"):
        ops.conv2d_backward_weight(x, rand(rng, 1, 3, 3, 4), (3, 3, 2, 4), groups=3)
    with pytest.raises(ValueError, match=r"in_channels \(6\) must be divisible by groups \(4\)"):
        nn.Conv2d(6, 8, 3, groups=4)
    with pytest.raises(ValueError, match=r"out_channels \(6\) must be divisible by groups \(4\)"):
        nn.Conv1d(8, 6, 3, groups=4)
    with pytest.raises(ValueError, match=r"in_channels \(6\) must be divisible by groups \(4\)"):
        nn.ConvTranspose2d(6, 8, 3, groups=4)


def test_the_compiled_binding_checks_groups_too(rng):
    geo = fg._backend._cpu.ConvGeometry(1, 1, 1, 1, 0, 0, 0, 0)
    x, w, y = rand(rng, 1, 4, 4, 6), rand(rng, 3, 3, 3, 4), np.empty((1, 2, 2, 4), np.float32)
    with pytest.raises(ValueError, match="groups must be >= 1 and divide"):
        fg._backend._cpu.conv2d_forward(x, w, None, y, geo, 0, 4)
    with pytest.raises(ValueError, match="do not fit"):
        fg._backend._cpu.conv2d_forward(x, rand(rng, 3, 3, 2, 4), None, y, geo, 0, 2)


# --- modules against PyTorch ---------------------------------------------------------------------

TOL = {np.float32: (2e-4, 2e-4), np.float64: (1e-9, 1e-9)}


def run_both(f_fn, t_fn, arrays, dtype):
    torch = pytest.importorskip("torch")
    rtol, atol = TOL[dtype]
    fts = [fg.tensor(a, dtype=dtype, requires_grad=True) for a in arrays]
    tts = [torch.tensor(a.astype(dtype), requires_grad=True) for a in arrays]
    fo, to = f_fn(*fts), t_fn(torch, *tts)
    assert fo.shape == tuple(to.shape)
    np.testing.assert_allclose(fo.numpy(), to.detach().numpy(), rtol=rtol, atol=atol)
    w = np.random.default_rng(3).standard_normal(fo.shape).astype(dtype)
    (fo * fg.tensor(w, dtype=dtype)).sum().backward()
    (to * torch.tensor(w)).sum().backward()
    for f, t in zip(fts, tts):
        np.testing.assert_allclose(f.grad.numpy(), t.grad.numpy(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ci,co,groups,stride,padding,dilation", [
    (4, 6, 2, 1, 1, 1), (6, 6, 6, 2, 1, 1), (3, 9, 3, 1, 2, 2), (8, 4, 4, (2, 1), (0, 1), 1)])
def test_conv2d_groups_against_torch(dtype, ci, co, groups, stride, padding, dilation):
    rng = np.random.default_rng(7)
    x, w, b = rng.standard_normal((2, 9, 8, ci)), rng.standard_normal((3, 3, ci // groups, co)), rng.standard_normal(co)
    run_both(lambda x, w, b: F.conv2d(x, w, b, stride, padding, dilation, groups),
             lambda torch, x, w, b: torch.nn.functional.conv2d(
                 x.permute(0, 3, 1, 2), w.permute(3, 2, 0, 1), b, stride, padding, dilation, groups).permute(0, 2, 3, 1),
             [x, w, b], dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv1d_groups_against_torch(dtype):
    rng = np.random.default_rng(8)
    x, w, b = rng.standard_normal((2, 13, 6)), rng.standard_normal((3, 2, 9)), rng.standard_normal(9)
    run_both(lambda x, w, b: F.conv1d(x, w, b, 2, 1, 1, 3),
             lambda torch, x, w, b: torch.nn.functional.conv1d(
                 x.permute(0, 2, 1), w.permute(2, 1, 0), b, 2, 1, 1, 3).permute(0, 2, 1),
             [x, w, b], dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ci,co,groups", [(4, 6, 2), (6, 6, 6)])
def test_conv_transpose2d_groups_against_torch(dtype, ci, co, groups):
    rng = np.random.default_rng(9)
    x, w, b = rng.standard_normal((2, 5, 4, ci)), rng.standard_normal((3, 3, co // groups, ci)), rng.standard_normal(co)
    run_both(lambda x, w, b: F.conv_transpose2d(x, w, b, 2, 1, 1, groups),
             lambda torch, x, w, b: torch.nn.functional.conv_transpose2d(
                 x.permute(0, 3, 1, 2), w.permute(3, 2, 0, 1), b, 2, 1, 1, groups).permute(0, 2, 3, 1),
             [x, w, b], dtype)


def test_modules_hold_pytorch_shaped_weights():
    torch = pytest.importorskip("torch")
    m = nn.Conv2d(8, 12, 3, padding=1, groups=4)
    assert m.weight.shape == (3, 3, 2, 12) and "groups=4" in repr(m)
    t = torch.nn.Conv2d(8, 12, 3, padding=1, groups=4)
    with torch.no_grad():
        t.weight.copy_(torch.tensor(m.weight.numpy()).permute(3, 2, 0, 1))
        t.bias.copy_(torch.tensor(m.bias.numpy()))
    x = np.random.default_rng(1).standard_normal((2, 6, 5, 8)).astype(np.float32)
    want = t(torch.tensor(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).detach().numpy()
    np.testing.assert_allclose(m(fg.tensor(x)).numpy(), want, rtol=1e-4, atol=1e-5)
    assert nn.Conv1d(6, 3, 5, groups=3).weight.shape == (5, 2, 3)
    assert nn.ConvTranspose2d(6, 4, 3, groups=2).weight.shape == (3, 3, 2, 6)
