"""Conv1d, ConvTranspose2d, dilation on Conv2d, AdaptiveAvgPool2d and GroupNorm against PyTorch
(fusegrad channels-last, PyTorch channels-first: inputs and weights are permuted), forward and
gradients, float32 on the kernels and float64 on the reference path."""
import numpy as np
import pytest

import fusegrad as fg
from fusegrad import nn
from fusegrad.nn import functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional
R = np.random.default_rng(11)


def run_both(f_fn, t_fn, arrays, dtype, rtol, atol):
    """f_fn(*fusegrad tensors) and t_fn(*torch tensors) on the same arrays; outputs equal, and the
    gradients of sum(out * w) (t_fn's output is permuted back by the caller)."""
    fts = [fg.tensor(a, dtype=dtype, requires_grad=True) for a in arrays]
    tts = [torch.tensor(a.astype(dtype), requires_grad=True) for a in arrays]
    fo, to = f_fn(*fts), t_fn(*tts)
    assert fo.shape == tuple(to.shape)
    np.testing.assert_allclose(fo.numpy(), to.detach().numpy(), rtol=rtol, atol=atol)
    w = R.standard_normal(fo.shape).astype(dtype)
    (fo * fg.tensor(w, dtype=dtype)).sum().backward()
    (to * torch.tensor(w)).sum().backward()
    for f, t in zip(fts, tts):
        np.testing.assert_allclose(f.grad.numpy(), t.grad.numpy(), rtol=rtol, atol=atol)


TOL = {np.float32: (2e-4, 2e-4), np.float64: (1e-9, 1e-9)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stride,padding,dilation", [(1, 0, 1), (2, 1, 1), (1, 2, 2), (3, 0, 2)])
def test_conv1d(dtype, stride, padding, dilation):
    x, w, b = R.standard_normal((2, 11, 3)), R.standard_normal((3, 3, 4)), R.standard_normal(4)
    run_both(lambda x, w, b: F.conv1d(x, w, b, stride, padding, dilation),
             lambda x, w, b: TF.conv1d(x.permute(0, 2, 1), w.permute(2, 1, 0), b, stride, padding, dilation)
             .permute(0, 2, 1), [x, w, b], dtype, *TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stride,padding,output_padding,dilation", [(1, 0, 0, 1), (2, 1, 1, 1), (2, 0, 0, 2),
                                                                    (3, 2, 2, 1), ((2, 1), (1, 0), (1, 0), 1)])
def test_conv_transpose2d(dtype, stride, padding, output_padding, dilation):
    x, w, b = R.standard_normal((2, 5, 4, 3)), R.standard_normal((3, 2, 6, 3)), R.standard_normal(6)
    run_both(lambda x, w, b: F.conv_transpose2d(x, w, b, stride, padding, output_padding, dilation=dilation),
             lambda x, w, b: TF.conv_transpose2d(x.permute(0, 3, 1, 2), w.permute(3, 2, 0, 1), b, stride, padding,
                                                 output_padding, 1, dilation).permute(0, 2, 3, 1),
             [x, w, b], dtype, *TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_dilation(dtype):
    x, w = R.standard_normal((2, 9, 8, 3)), R.standard_normal((3, 2, 3, 4))
    run_both(lambda x, w: F.conv2d(x, w, None, 1, 2, (2, 3)),
             lambda x, w: TF.conv2d(x.permute(0, 3, 1, 2), w.permute(3, 2, 0, 1), None, 1, 2, (2, 3)).permute(0, 2, 3, 1),
             [x, w], dtype, *TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [1, (2, 3), (3, 5), (4, None), 7])
def test_adaptive_avg_pool2d(dtype, size):
    x = R.standard_normal((2, 6, 9, 3))
    run_both(lambda x: nn.AdaptiveAvgPool2d(size)(x),
             lambda x: torch.nn.AdaptiveAvgPool2d(size)(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1),
             [x], dtype, *TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("groups", [1, 2, 6])
def test_group_norm(dtype, groups):
    x, w, b = R.standard_normal((2, 4, 5, 6)), R.standard_normal(6), R.standard_normal(6)
    run_both(lambda x, w, b: F.group_norm(x, groups, w, b),
             lambda x, w, b: TF.group_norm(x.permute(0, 3, 1, 2), groups, w, b).permute(0, 2, 3, 1),
             [x, w, b], dtype, *TOL[dtype])
    assert nn.GroupNorm(groups, 6)(fg.tensor(x.astype(np.float32))).shape == x.shape


def test_modules_and_their_errors():
    assert nn.Conv1d(3, 4, 3)(fg.randn(2, 10, 3)).shape == (2, 8, 4)
    assert nn.ConvTranspose2d(3, 5, 4, stride=2, padding=1)(fg.randn(1, 7, 7, 3)).shape == (1, 14, 14, 5)
    tconv = torch.nn.ConvTranspose2d(3, 5, 4, stride=2, padding=1)
    assert tconv(torch.randn(1, 3, 7, 7)).shape == (1, 5, 14, 14)
    # groups= runs in the conv kernels (tests/conv/test_conv_groups.py); channel counts it does not
    # divide are PyTorch's ValueError.
    assert nn.Conv2d(4, 4, 3, groups=2)(fg.randn(1, 5, 5, 4)).shape == (1, 3, 3, 4)
    for make in (lambda: nn.Conv2d(4, 4, 3, groups=3), lambda: nn.Conv1d(4, 6, 3, groups=4),
                 lambda: nn.ConvTranspose2d(6, 4, 3, groups=4)):
        with pytest.raises(ValueError, match="divisible by groups"):
            make()
    with pytest.raises(ValueError):
        nn.GroupNorm(4, 6)
    with pytest.raises(ValueError):
        F.conv_transpose2d(fg.randn(1, 3, 3, 2), fg.randn(3, 3, 4, 2), output_padding=1)


@pytest.mark.parametrize("k,s,p,hw", [(2, 2, 0, (5, 7)), (3, 2, 1, (6, 9)), (3, 3, 0, (7, 8)), (2, 1, 0, (4, 4)),
                                      ((3, 2), (2, 3), (1, 0), (8, 7))])
def test_max_pool_ceil_mode(k, s, p, hw):
    x = R.standard_normal((2, *hw, 3))
    run_both(lambda x: nn.MaxPool2d(k, s, p, ceil_mode=True)(x),
             lambda x: torch.nn.MaxPool2d(k, s, p, ceil_mode=True)(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1),
             [x], np.float32, 1e-6, 1e-6)


def test_pools_and_convs_the_fused_kernel_cannot_run_are_not_fused():
    # The fused conv + max-pool kernel floors, has no dilation, indices output or groups: such a
    # chain runs module by module (the pool options themselves: tests/pool/test_pool_options.py).
    fg.manual_seed(0)
    x = fg.randn(1, 7, 7, 4)
    for conv, pool, shape in [(nn.Conv2d(4, 4, 3), nn.MaxPool2d(2, ceil_mode=True), (1, 3, 3, 4)),
                              (nn.Conv2d(4, 4, 3), nn.MaxPool2d(2, dilation=2), (1, 2, 2, 4)),
                              (nn.Conv2d(4, 6, 3, groups=2), nn.MaxPool2d(2), (1, 2, 2, 6))]:
        model = nn.Sequential(conv, nn.ReLU(), pool)
        assert model(x).shape == shape
        np.testing.assert_array_equal(model(x).numpy(), model[2](model[1](model[0](x))).numpy())
