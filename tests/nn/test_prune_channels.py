"""prune.prune_channels: the smaller model computes what the original computes with the removed
channels cut out (their input weights in the next Conv2d or Linear zeroed), on the classic CNNs
and with BatchNorm2d, Dropout and GlobalAvgPool2d in between."""
import copy

import numpy as np
import pytest

import fusegrad as fg
from fusegrad import models, nn, optim
from fusegrad.nn.utils import prune

R = np.random.default_rng(2)


def removed_channels(conv, amount, norm=1):
    """The output channels prune_channels should drop, computed plainly: the smallest norms."""
    w = np.abs(conv.weight.numpy().astype(np.float64)).reshape(-1, conv.out_channels)
    scores = w.sum(0) if norm == 1 else np.sqrt((w * w).sum(0))
    count = amount if isinstance(amount, int) else round(amount * conv.out_channels)
    return np.sort(np.argsort(scores)[:count])


def with_channels_cut(model, amount, norm=1):
    """A copy of model whose consumers ignore the channels prune_channels removes."""
    cut = copy.deepcopy(model)
    removed, channels = None, None
    for layer in cut:
        if isinstance(layer, nn.Conv2d):
            if removed is not None:
                layer.weight.data[:, :, removed, :] = 0
            removed, channels = removed_channels(layer, amount, norm), layer.out_channels
        elif isinstance(layer, nn.Linear) and removed is not None:
            columns = np.isin(np.arange(layer.in_features) % channels, removed)
            layer.weight.data[:, columns] = 0
            removed = None
    return cut


def bn_cnn():
    """Conv -> BatchNorm2d -> ReLU -> pool blocks, then Flatten -> Dropout -> Linear."""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.3), nn.Linear(2 * 2 * 12, 5))
    for layer in model:  # running statistics and affine parameters that are not the defaults
        if isinstance(layer, nn.BatchNorm2d):
            n = layer.num_features
            layer.running_mean.data[...] = R.standard_normal(n)
            layer.running_var.data[...] = R.uniform(0.5, 2.0, n)
            layer.weight.data[...] = R.uniform(0.5, 1.5, n)
            layer.bias.data[...] = R.standard_normal(n)
    return model


CASES = {
    "mnist_cnn": (lambda: models.mnist_cnn(), (3, 28, 28, 1)),
    "cifar_cnn": (lambda: models.cifar_cnn(), (2, 32, 32, 3)),
    "bn_cnn": (bn_cnn, (3, 8, 8, 3)),
    "global_pool": (lambda: nn.Sequential(nn.Conv2d(2, 10, 3), nn.SiLU(), nn.GlobalAvgPool2d(), nn.Linear(10, 4)),
                    (2, 6, 6, 2)),
}


@pytest.mark.parametrize("amount", [0.5, 3])
@pytest.mark.parametrize("case", sorted(CASES))
def test_the_smaller_model_equals_the_original_with_those_channels_cut(case, amount):
    fg.manual_seed(4)
    make, shape = CASES[case]
    model = make().eval()
    x = R.standard_normal(shape).astype(np.float32)
    original_out = model(x).numpy()
    small = prune.prune_channels(model, amount)
    assert not small.training
    cut = with_channels_cut(model, amount)
    np.testing.assert_allclose(small(x).numpy(), cut(x).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(model(x).numpy(), original_out)  # the original is untouched
    # A conv's filters are ranked on the input channels it keeps (those of `cut`).
    convs = [(a, b) for a, b in zip(cut, small) if isinstance(a, nn.Conv2d)]
    for before, after in convs:
        lost = amount if isinstance(amount, int) else round(amount * before.out_channels)
        assert after.out_channels == after.weight.shape[3] == before.out_channels - lost
        kept = np.setdiff1d(np.arange(before.out_channels), removed_channels(before, amount))
        np.testing.assert_array_equal(after.bias.numpy(), before.bias.numpy()[kept])
    assert small.num_parameters() < model.num_parameters()


def test_shapes_and_parameter_count_of_mnist_cnn():
    small = prune.prune_channels(models.mnist_cnn(), 0.25, norm=2)
    assert [tuple(p.shape) for p in small.parameters()] == [
        (3, 3, 1, 24), (24,), (3, 3, 24, 48), (48,), (64, 5 * 5 * 48), (64,), (10, 64), (10,)]
    assert small.num_parameters() == 9 * 24 + 24 + 9 * 24 * 48 + 48 + 1200 * 64 + 64 + 64 * 10 + 10
    assert [type(m) for m in small] == [type(m) for m in models.mnist_cnn()]


def test_batch_norm_keeps_its_channels_statistics():
    model = bn_cnn()
    small = prune.prune_channels(model, 0.5)
    kept = np.setdiff1d(np.arange(8), removed_channels(model[0], 0.5))
    for name in ("running_mean", "running_var", "weight", "bias"):
        np.testing.assert_array_equal(getattr(small[1], name).numpy(), getattr(model[1], name).numpy()[kept])
    assert small[1].num_features == 4 and small[4].in_channels == 4


def test_a_conv_whose_channels_are_the_output_keeps_them_and_the_result_trains():
    model = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 1))
    small = prune.prune_channels(model, 0.5)
    assert (small[0].out_channels, small[2].in_channels, small[2].out_channels) == (3, 3, 4)
    x = R.standard_normal((2, 5, 5, 2)).astype(np.float32)
    opt = optim.SGD(small.parameters(), lr=0.1)
    before = small[0].weight.numpy().copy()
    (small(x) ** 2).mean().backward()
    opt.step()
    assert not np.array_equal(small[0].weight.numpy(), before)
    np.testing.assert_array_equal(model[0].weight.numpy()[..., removed_channels(model[0], 0.5)].shape, (3, 3, 2, 3))


def test_errors():
    with pytest.raises(TypeError, match="nn.Sequential"):
        prune.prune_channels(nn.Conv2d(1, 2, 3), 0.5)
    between = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Softmax(-1), nn.Conv2d(4, 2, 3))
    with pytest.raises(ValueError, match=r"through layer 1 \(Softmax\)"):
        prune.prune_channels(between, 0.5)
    nested = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Sequential(nn.ReLU()), nn.Conv2d(4, 2, 3))
    with pytest.raises(ValueError, match="Sequential"):
        prune.prune_channels(nested, 0.5)
    with pytest.raises(ValueError, match="remove all 32 channels"):
        prune.prune_channels(models.mnist_cnn(), 1.0)
    with pytest.raises(ValueError, match="norm must be 1 or 2"):
        prune.prune_channels(models.mnist_cnn(), 0.5, norm=3)
    with pytest.raises(ValueError, match="range"):
        prune.prune_channels(models.mnist_cnn(), 1.5)
    masked = models.mnist_cnn()
    prune.l1_unstructured(masked[0], "weight", 0.5)
    with pytest.raises(ValueError, match="prune.remove"):
        prune.prune_channels(masked, 0.5)
    wrong = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(10, 2))
    with pytest.raises(ValueError, match="not a multiple of the 4 channels"):
        prune.prune_channels(wrong, 0.5)


@pytest.mark.cuda_emulated
def test_on_the_emulated_gpu_masks_and_channels_stay_on_the_device():
    cpu = nn.Sequential(nn.Conv2d(2, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6, 3)).eval()
    x = R.standard_normal((2, 4, 4, 2)).astype(np.float32)
    expected_small = prune.prune_channels(cpu, 0.5)(x).numpy()
    plain = copy.deepcopy(cpu)
    prune.l1_unstructured(cpu[4], "weight", 0.5)
    expected_masked = cpu(x).numpy()
    with fg.cuda.emulate():
        small = prune.prune_channels(copy.deepcopy(plain).to("cuda"), 0.5)
        assert all(p.device == "cuda:0" for p in small.parameters())
        np.testing.assert_allclose(small(fg.tensor(x, device="cuda")).numpy(), expected_small, rtol=1e-4, atol=1e-5)
        gpu = copy.deepcopy(cpu).to("cuda")  # weight_orig and weight_mask move with the module
        prune.l1_unstructured(gpu[0], "weight", 0)  # pruning on the device: the mask is made there
        assert gpu[0].weight_mask.device == gpu[4].weight_mask.device == "cuda:0"
        np.testing.assert_allclose(gpu(fg.tensor(x, device="cuda")).numpy(), expected_masked, rtol=1e-4, atol=1e-5)
