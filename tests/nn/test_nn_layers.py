"""Convolution, pooling, normalisation, embedding and recurrent layers against PyTorch with copied
weights (NHWC <-> NCHW transposed) and against float64 finite differences."""
import numpy as np
import pytest

import fusegrad as fg
from fusegrad import nn
from fusegrad.nn import functional as F

from gradcheck import check_grad

def to_nchw(a):
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def conv_reference(x, w, b, stride, pads, dilation):
    """Direct float64 convolution, NHWC x, HWIO w."""
    x = np.pad(x.astype(np.float64), ((0, 0), pads[0], pads[1], (0, 0)))
    n, h, wd, c = x.shape
    kh, kw, _, co = w.shape
    oh = (h - (kh - 1) * dilation[0] - 1) // stride[0] + 1
    ow = (wd - (kw - 1) * dilation[1] - 1) // stride[1] + 1
    out = np.zeros((n, oh, ow, co))
    for i in range(oh):
        for j in range(ow):
            for a in range(kh):
                for bb in range(kw):
                    pix = x[:, i * stride[0] + a * dilation[0], j * stride[1] + bb * dilation[1], :]
                    out[:, i, j, :] += pix @ w[a, bb]
    return out + (0 if b is None else b)


@pytest.mark.parametrize("case", [
    dict(shape=(2, 7, 9, 3), k=3, stride=1, padding=0, dilation=1),
    dict(shape=(1, 8, 8, 1), k=3, stride=2, padding=1, dilation=1),
    dict(shape=(2, 9, 7, 4), k=(3, 2), stride=(2, 1), padding=(1, 0), dilation=1),
    dict(shape=(1, 10, 10, 2), k=3, stride=1, padding=2, dilation=2),
    dict(shape=(2, 7, 8, 3), k=3, stride=2, padding="same", dilation=1),
    dict(shape=(1, 6, 6, 5), k=3, stride=1, padding="valid", dilation=1),
])
def test_conv2d_against_direct_reference(case, rng):
    fg.manual_seed(0)
    c_in = case["shape"][3]
    conv = nn.Conv2d(c_in, 6, case["k"], case["stride"], case["padding"], case["dilation"])
    x = rng.standard_normal(case["shape"]).astype(np.float32)
    y = conv(fg.tensor(x))
    from fusegrad.ops._common import pair
    from fusegrad.ops.conv import conv_padding

    stride, dilation = pair(case["stride"], "s", "test"), pair(case["dilation"], "d", "test")
    pads = conv_padding(case["padding"], x.shape[1:3], conv.weight.shape[:2], stride, dilation)
    ref = conv_reference(x, conv.weight.numpy().astype(np.float64), conv.bias.numpy(), stride, pads, dilation)
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-4, atol=1e-5)
    if case["padding"] == "same":
        assert y.shape[1:3] == (-(-x.shape[1] // stride[0]), -(-x.shape[2] // stride[1]))


@pytest.mark.parametrize("stride,padding,dilation", [(1, 1, 1), (2, 0, 1), (1, 2, 2)])
def test_conv2d_gradients(stride, padding, dilation, rng):
    fg.manual_seed(0)
    w = rng.standard_normal((3, 3, 2, 3))
    b = rng.standard_normal(3)
    check_grad(lambda x, w_, b_: F.conv2d(x, w_, b_, stride, padding, dilation), (2, 6, 7, 2), w.shape, b.shape,
               rng=rng)


def test_conv2d_with_fused_relu_matches(rng):
    fg.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    x = fg.tensor(rng.standard_normal((2, 5, 5, 3)), requires_grad=True)
    fused = nn.Sequential(conv, nn.ReLU())(x)
    assert type(fused._ctx).__name__ == "Conv2d" and type(fused._ctx).__module__.startswith("fusegrad.autograd")
    np.testing.assert_allclose(fused.numpy(), conv(x).relu().numpy(), rtol=1e-6, atol=1e-6)


def test_conv2d_errors():
    x = fg.randn(1, 5, 5, 3)
    with pytest.raises(ValueError, match=r"input \(1, 5, 5, 3\) has 3 channels"):
        nn.Conv2d(4, 2, 3)(x)
    with pytest.raises(ValueError, match="larger than the padded input"):
        nn.Conv2d(3, 2, 7)(x)
    with pytest.raises(ValueError, match="input must be 4-D NHWC"):
        nn.Conv2d(3, 2, 3)(fg.randn(5, 5, 3))
    with pytest.raises(ValueError, match="stride must be >= 1"):
        nn.Conv2d(3, 2, 3, stride=0)(x)
    with pytest.raises(ValueError, match="padding"):
        nn.Conv2d(3, 2, 3, padding="full")(x)


def test_conv_and_pool_against_torch(rng):
    t = pytest.importorskip("torch")
    fg.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, stride=1, padding=1)
    tconv = t.nn.Conv2d(3, 8, 3, stride=1, padding=1)
    with t.no_grad():
        tconv.weight.copy_(t.from_numpy(conv.weight.numpy().transpose(3, 2, 0, 1).copy()))
        tconv.bias.copy_(t.from_numpy(conv.bias.numpy()))
    x = rng.standard_normal((2, 10, 9, 3)).astype(np.float32)
    ours = fg.tensor(x, requires_grad=True)
    theirs = t.tensor(to_nchw(x), requires_grad=True)
    y = nn.MaxPool2d(2)(conv(ours).relu())
    ty = t.nn.functional.max_pool2d(t.relu(tconv(theirs)), 2)
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy().transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)
    g = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(g)
    ty.backward(t.from_numpy(to_nchw(g)))
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(conv.weight.grad.numpy(), tconv.weight.grad.numpy().transpose(2, 3, 1, 0),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("module,kwargs", [("AvgPool2d", {"kernel_size": 2}), ("AvgPool2d", {"kernel_size": 3, "stride": 2, "padding": 1}),
                                           ("MaxPool2d", {"kernel_size": 3, "stride": 2})])
def test_pool_layers_gradients(module, kwargs, rng):
    layer = getattr(nn, module)(**kwargs)
    check_grad(lambda x: layer(x), (2, 7, 6, 3), rng=rng, dtype=np.float32, rtol=2e-2, atol=2e-3)


def test_global_avg_pool(rng):
    x = rng.standard_normal((3, 4, 5, 6)).astype(np.float32)
    t = fg.tensor(x, requires_grad=True)
    y = nn.GlobalAvgPool2d()(t)
    np.testing.assert_allclose(y.numpy(), x.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    y.sum().backward()
    np.testing.assert_allclose(t.grad.numpy(), np.full_like(x, 1 / 20), rtol=1e-6)


@pytest.mark.parametrize("kind", ["1d", "2d"])
def test_batchnorm_against_torch(kind, rng):
    t = pytest.importorskip("torch")
    if kind == "1d":
        ours, theirs = nn.BatchNorm1d(5), t.nn.BatchNorm1d(5)
        x = rng.standard_normal((8, 5)).astype(np.float32) * 3 + 1
        tx = x
    else:
        ours, theirs = nn.BatchNorm2d(5), t.nn.BatchNorm2d(5)
        x = rng.standard_normal((4, 3, 3, 5)).astype(np.float32) * 3 + 1
        tx = to_nchw(x)
    with t.no_grad():
        theirs.weight.copy_(t.linspace(0.5, 1.5, 5))
        theirs.bias.copy_(t.linspace(-1, 1, 5))
    ours.weight.data[...] = np.linspace(0.5, 1.5, 5, dtype=np.float32)
    ours.bias.data[...] = np.linspace(-1, 1, 5, dtype=np.float32)
    a, b = fg.tensor(x, requires_grad=True), t.tensor(tx, requires_grad=True)
    for _ in range(2):
        ya, yb = ours(a), theirs(b)
    back = (lambda v: v.transpose(0, 2, 3, 1)) if kind == "2d" else (lambda v: v)
    np.testing.assert_allclose(ya.numpy(), back(yb.detach().numpy()), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours.running_mean.numpy(), theirs.running_mean.numpy(), rtol=1e-5)
    np.testing.assert_allclose(ours.running_var.numpy(), theirs.running_var.numpy(), rtol=1e-5)
    g = rng.standard_normal(ya.shape).astype(np.float32)
    ya.backward(g)
    yb.backward(t.from_numpy(to_nchw(g) if kind == "2d" else g))
    np.testing.assert_allclose(a.grad.numpy(), back(b.grad.numpy()), rtol=1e-3, atol=1e-4)
    ours.eval()
    theirs.eval()
    np.testing.assert_allclose(ours(a).numpy(), back(theirs(b).detach().numpy()), rtol=1e-4, atol=1e-5)
    assert "running_mean" in ours.state_dict()


def test_layernorm_against_torch(rng):
    t = pytest.importorskip("torch")
    x = rng.standard_normal((3, 4, 6)).astype(np.float32)
    ours, theirs = nn.LayerNorm(6), t.nn.LayerNorm(6)
    a, b = fg.tensor(x, requires_grad=True), t.tensor(x, requires_grad=True)
    ya, yb = ours(a), theirs(b)
    np.testing.assert_allclose(ya.numpy(), yb.detach().numpy(), rtol=1e-4, atol=1e-5)
    g = rng.standard_normal(x.shape).astype(np.float32)
    ya.backward(g)
    yb.backward(t.from_numpy(g))
    np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-3, atol=1e-4)


def test_embedding(rng):
    emb = nn.Embedding(10, 4, padding_idx=0)
    idx = np.array([[1, 0, 3], [3, 3, 9]])
    y = emb(idx)
    assert y.shape == (2, 3, 4)
    np.testing.assert_array_equal(y.numpy()[0, 1], np.zeros(4))
    y.sum().backward()
    grad = emb.weight.grad.numpy()
    np.testing.assert_array_equal(grad[3], np.full(4, 3.0))  # three lookups accumulate
    np.testing.assert_array_equal(grad[0], np.zeros(4))
    with pytest.raises(ValueError, match=r"indices must be in \[0, 10\)"):
        emb(np.array([10]))
    with pytest.raises(TypeError, match="integers"):
        emb(np.array([1.0]))


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@pytest.mark.parametrize("layers", [1, 2])
def test_rnn_against_torch(kind, layers, rng):
    t = pytest.importorskip("torch")
    fg.manual_seed(0)
    ours = getattr(nn, kind)(5, 7, num_layers=layers)
    theirs = getattr(t.nn, kind)(5, 7, num_layers=layers, batch_first=True)
    theirs.load_state_dict({k: t.from_numpy(v.numpy().copy()) for k, v in ours.state_dict().items()})
    x = rng.standard_normal((3, 6, 5)).astype(np.float32)
    a, b = fg.tensor(x, requires_grad=True), t.tensor(x, requires_grad=True)
    ya, state_a = ours(a)
    yb, state_b = theirs(b)
    np.testing.assert_allclose(ya.numpy(), yb.detach().numpy(), rtol=1e-4, atol=1e-5)
    ha = state_a[0] if kind == "LSTM" else state_a
    hb = state_b[0] if kind == "LSTM" else state_b
    np.testing.assert_allclose(ha.numpy(), hb.detach().numpy(), rtol=1e-4, atol=1e-5)
    g = rng.standard_normal(ya.shape).astype(np.float32)
    (ya * fg.tensor(g)).sum().backward()
    (yb * t.from_numpy(g)).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-3, atol=1e-5)
    for (name, p), tp in zip(ours.named_parameters(), theirs.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-3, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_rnn_gradients_by_finite_differences(kind, rng):
    fg.manual_seed(1)
    rnn = getattr(nn, kind)(3, 4)
    # the gates run on the float32 kernels: float32 differences with a large step
    check_grad(lambda x: rnn(x)[0], (2, 4, 3), rng=rng, dtype=np.float32, rtol=3e-2, atol=3e-3)


def test_rnn_errors():
    with pytest.raises(ValueError, match="input_size=5"):
        nn.LSTM(5, 3)(fg.randn(2, 4, 6))
    with pytest.raises(ValueError, match=r"h0 must have shape \(1, 2, 3\)"):
        nn.GRU(5, 3)(fg.randn(2, 4, 5), fg.zeros(1, 3, 3))
