"""nn.utils.prune: masks, the forward pre-hook, composition, global pruning and remove, on their
own and against torch.nn.utils.prune on the same weights (fusegrad's conv weight is HWIO, so
PyTorch's OIHW weight is ours transposed by (3, 2, 0, 1), and its dim 0 is our dim 3)."""
import numpy as np
import pytest

import fusegrad as fg
from fusegrad import io, nn, optim
from fusegrad.nn.utils import prune

R = np.random.default_rng(11)


def linear(in_features=7, out_features=5):
    layer = nn.Linear(in_features, out_features)
    layer.weight.data[...] = R.standard_normal(layer.weight.shape).astype(np.float32)
    return layer


def conv(cin=3, cout=6):
    layer = nn.Conv2d(cin, cout, 3)
    layer.weight.data[...] = R.standard_normal(layer.weight.shape).astype(np.float32)
    return layer


def zeros(module, name="weight"):
    return int((getattr(module, name + "_mask").numpy() == 0).sum())


# -- the pruned form ---------------------------------------------------------------------------------
def test_l1_unstructured_prunes_the_smallest_entries_into_orig_and_mask():
    layer = linear()
    w = layer.weight.numpy().copy()
    weight_param = layer.weight
    prune.l1_unstructured(layer, "weight", amount=0.4)
    n = round(0.4 * w.size)
    smallest = np.argsort(np.abs(w).ravel())[:n]
    expected = np.ones(w.size, np.float32)
    expected[smallest] = 0
    np.testing.assert_array_equal(layer.weight_mask.numpy().ravel(), expected)
    assert layer.weight_orig is weight_param and isinstance(layer.weight_orig, nn.Parameter)
    np.testing.assert_array_equal(layer.weight_orig.numpy(), w)  # the trained tensor is unchanged
    assert "weight" not in layer._parameters and "weight_mask" in layer._buffers
    np.testing.assert_array_equal(layer.weight.numpy(), w * layer.weight_mask.numpy())
    assert [name for name, _ in layer.named_parameters()] == ["bias", "weight_orig"]
    assert list(layer.state_dict()) == ["bias", "weight_orig", "weight_mask"]
    assert prune.is_pruned(layer) and prune.is_pruned(nn.Sequential(layer))


def test_amount_as_a_count_and_zero():
    layer = linear()
    prune.l1_unstructured(layer, "weight", amount=3)
    assert zeros(layer) == 3
    other = linear()
    prune.l1_unstructured(other, "weight", amount=0.0)
    assert zeros(other) == 0
    prune.identity(other, "bias")
    assert other.bias_mask.numpy().tolist() == [1.0] * 5


def test_the_pre_hook_recomputes_the_weight_and_training_keeps_pruned_entries_zero():
    # Conv2d -> ReLU -> MaxPool2d is a chain nn.fusion runs as one kernel, which reads conv.weight
    # without calling the conv: a pruned conv must not be fused, or it would use a stale weight.
    fg.manual_seed(3)
    model = nn.Sequential(conv(1, 4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(9 * 4, 3))
    opt = optim.SGD(model.parameters(), lr=0.1)  # made before pruning: holds the same Parameter
    prune.l1_unstructured(model[0], "weight", amount=0.5)
    prune.l1_unstructured(model[4], "weight", amount=10)
    masks = [model[0].weight_mask.numpy().copy(), model[4].weight_mask.numpy().copy()]
    pruned_orig = [model[0].weight_orig.numpy()[masks[0] == 0], model[4].weight_orig.numpy()[masks[1] == 0]]
    x = R.standard_normal((8, 8, 8, 1)).astype(np.float32)
    y = R.integers(0, 3, 8)
    before = model[0].weight_orig.numpy().copy()
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        assert np.all(model[0].weight_orig.grad.numpy()[masks[0] == 0] == 0)
        opt.step()
    assert not np.allclose(model[0].weight_orig.numpy(), before)  # the unpruned entries trained
    out = model(x)
    for layer, mask, orig in zip((model[0], model[4]), masks, pruned_orig):
        assert np.all(layer.weight.numpy()[mask == 0] == 0)
        np.testing.assert_array_equal(layer.weight_orig.numpy()[mask == 0], orig)
    # The output is that of the same model with the masked weights written in.
    plain = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 3))
    for i in (0, 4):
        plain[i].weight.data[...] = model[i].weight_orig.numpy() * model[i].weight_mask.numpy()
        plain[i].bias.data[...] = model[i].bias.numpy()
    np.testing.assert_allclose(out.numpy(), plain(x).numpy(), rtol=1e-5, atol=1e-6)


def test_repeated_pruning_applies_to_the_unpruned_entries():
    layer = linear(10, 4)  # 40 entries
    prune.l1_unstructured(layer, "weight", amount=0.5)
    first = layer.weight_mask.numpy().copy()
    prune.l1_unstructured(layer, "weight", amount=0.5)  # half of the 20 left
    assert zeros(layer) == 30
    assert np.all(layer.weight_mask.numpy()[first == 0] == 0)  # an earlier pruning is never undone
    kept = np.abs(layer.weight_orig.numpy())[layer.weight_mask.numpy() == 1]
    dropped_now = np.abs(layer.weight_orig.numpy())[(first == 1) & (layer.weight_mask.numpy() == 0)]
    assert kept.min() > dropped_now.max()
    assert len(layer._forward_pre_hooks) == 1 and len(next(iter(layer._forward_pre_hooks.values()))) == 2
    with pytest.raises(ValueError, match="smaller than the number"):
        prune.l1_unstructured(layer, "weight", 41)
    hook = next(iter(layer._forward_pre_hooks.values()))
    assert len(hook) == 2 and zeros(layer) == 30  # the failed pruning left no trace


def test_ln_structured_prunes_whole_output_channels_of_a_conv():
    layer = conv(3, 6)
    w = layer.weight.numpy().copy()
    prune.ln_structured(layer, "weight", amount=2, n=2, dim=3)  # HWIO: dim 3 is C_out
    norms = np.sqrt((w.astype(np.float64) ** 2).sum(axis=(0, 1, 2)))
    dropped = sorted(np.argsort(norms)[:2])
    mask = layer.weight_mask.numpy()
    assert sorted(np.flatnonzero(mask.sum(axis=(0, 1, 2)) == 0)) == dropped
    assert np.all(mask[..., [c for c in range(6) if c not in dropped]] == 1)
    # Then another channel, chosen among the four left.
    prune.ln_structured(layer, "weight", amount=1, n=1, dim=-1)
    assert (layer.weight_mask.numpy().sum(axis=(0, 1, 2)) == 0).sum() == 3


def test_global_unstructured_ranks_all_tensors_together():
    a, b = linear(6, 4), linear(5, 3)
    b.weight.data[...] *= 10  # b's weights are larger, so a loses more
    everything = np.concatenate([np.abs(a.weight.numpy()).ravel(), np.abs(b.weight.numpy()).ravel()])
    prune.global_unstructured([(a, "weight"), (b, "weight")], pruning_method=prune.L1Unstructured, amount=0.5)
    threshold = np.sort(everything)[round(0.5 * everything.size) - 1]
    assert zeros(a) + zeros(b) == round(0.5 * everything.size) and zeros(a) > zeros(b)
    for layer in (a, b):
        pruned = np.abs(layer.weight_orig.numpy())[layer.weight_mask.numpy() == 0]
        assert np.all(pruned <= threshold)
    prune.global_unstructured([(a, "weight"), (b, "weight")], amount=3)  # composes with the masks
    assert zeros(a) + zeros(b) == round(0.5 * everything.size) + 3


def test_random_unstructured_counts_and_follows_the_seed():
    masks = []
    for _ in range(2):
        fg.manual_seed(7)
        layer = linear(8, 8)
        prune.random_unstructured(layer, "weight", amount=0.25)
        masks.append(layer.weight_mask.numpy())
    assert (masks[0] == 0).sum() == 16
    np.testing.assert_array_equal(masks[0], masks[1])


def test_remove_makes_it_permanent_and_training_goes_on():
    layer = linear()
    opt = optim.SGD(layer.parameters(), lr=0.1)
    prune.l1_unstructured(layer, "weight", amount=0.5)
    masked = layer.weight.numpy().copy()
    prune.remove(layer, "weight")
    assert isinstance(layer.weight, nn.Parameter) and not prune.is_pruned(layer)
    assert set(layer.state_dict()) == {"weight", "bias"} and not layer._forward_pre_hooks
    np.testing.assert_array_equal(layer.weight.numpy(), masked)
    layer(R.standard_normal((4, 7)).astype(np.float32)).sum().backward()
    opt.step()  # the optimizer's Parameter is the module's weight again
    assert not np.array_equal(layer.weight.numpy(), masked)


def test_state_dict_round_trips_through_a_file(tmp_path):
    layer = linear()
    prune.l1_unstructured(layer, "weight", amount=0.3)
    io.save(layer.state_dict(), tmp_path / "pruned.safetensors")
    other = linear()
    prune.identity(other, "weight")  # the same pruned form, so the keys match
    other.load_state_dict(io.load(tmp_path / "pruned.safetensors"))
    x = R.standard_normal((3, 7)).astype(np.float32)
    other(x)  # the hook recomputes weight from the loaded orig and mask
    np.testing.assert_array_equal(other.weight.numpy(), layer.weight.numpy())
    np.testing.assert_array_equal(other(x).numpy(), layer(x).numpy())


# -- errors -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("amount, error, fragment", [
    (-1, ValueError, "non-negative integer"), (1.5, ValueError, "range [0, 1]"), ("half", TypeError, "Invalid type"),
    (True, TypeError, "Invalid type"), (36, ValueError, "smaller than the number of parameters to prune=35"),
])
def test_bad_amounts(amount, error, fragment):
    layer = linear()
    with pytest.raises(error, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        prune.l1_unstructured(layer, "weight", amount)
    assert isinstance(layer.weight, nn.Parameter) and not prune.is_pruned(layer)  # left as it was


def test_other_errors():
    layer = linear()
    with pytest.raises(AttributeError, match="has no parameter 'kernel'"):
        prune.l1_unstructured(layer, "kernel", 0.2)
    with pytest.raises(ValueError, match="has to be pruned before"):
        prune.remove(layer, "weight")
    with pytest.raises(ValueError, match="multidimensional"):
        prune.ln_structured(layer, "bias", 1, n=1, dim=0)
    with pytest.raises(IndexError, match="Invalid index 2"):
        prune.ln_structured(layer, "weight", 1, n=1, dim=2)
    with pytest.raises(ValueError, match="n must be a number"):
        prune.ln_structured(layer, "weight", 1, n="nuc", dim=0)
    with pytest.raises(TypeError, match="unstructured"):
        prune.global_unstructured([(layer, "weight")], pruning_method=prune.LnStructured, amount=1, n=1, dim=0)
    with pytest.raises(TypeError, match="iterable of"):
        prune.global_unstructured(layer, amount=0.2)
    with pytest.raises(ValueError, match="must match"):
        prune.custom_from_mask(layer, "weight", np.ones((2, 2)))
    with pytest.raises(TypeError, match="nn.Module"):
        prune.l1_unstructured("layer", "weight", 0.2)
    assert not prune.is_pruned(layer)


# -- against PyTorch -----------------------------------------------------------------------------------
def torch_twin(layer):
    torch = pytest.importorskip("torch")
    w = layer.weight.numpy()
    if isinstance(layer, nn.Conv2d):
        twin = torch.nn.Conv2d(w.shape[2], w.shape[3], w.shape[:2])
        w = w.transpose(3, 2, 0, 1)
    else:
        twin = torch.nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        twin.weight.copy_(torch.tensor(w))
    return twin


def as_torch_layout(layer, mask):
    return mask.transpose(3, 2, 0, 1) if isinstance(layer, nn.Conv2d) else mask


TORCH_DIM = {0: 3, 1: 2, -1: 1}  # PyTorch's dim of a conv weight -> fusegrad's (HWIO)


@pytest.mark.parametrize("make", [linear, conv])
def test_masks_equal_torchs_through_a_sequence_of_prunings(make):
    tp = pytest.importorskip("torch.nn.utils.prune")
    layer = make()
    twin = torch_twin(layer)
    steps = [("l1", 0.3), ("ln", (1, 2, 0)), ("l1", 4), ("ln", (0.34, float("inf"), 0)), ("ln", (1, 1, 1)),
             ("l1", 0.5), ("ln", (1, float("-inf"), 0))]
    for kind, args in steps:
        if kind == "l1":
            prune.l1_unstructured(layer, "weight", args)
            tp.l1_unstructured(twin, "weight", args)
        else:
            amount, n, dim = args
            prune.ln_structured(layer, "weight", amount, n, TORCH_DIM[dim] if isinstance(layer, nn.Conv2d) else dim)
            tp.ln_structured(twin, "weight", amount, n, dim)
        np.testing.assert_array_equal(as_torch_layout(layer, layer.weight_mask.numpy()), twin.weight_mask.numpy())
    assert set(layer.state_dict()) == set(twin.state_dict())
    prune.remove(layer, "weight")
    tp.remove(twin, "weight")
    np.testing.assert_array_equal(as_torch_layout(layer, layer.weight.numpy()), twin.weight.detach().numpy())
    assert set(layer.state_dict()) == set(twin.state_dict())


def test_global_masks_equal_torchs():
    tp = pytest.importorskip("torch.nn.utils.prune")
    layers = [conv(2, 4), linear(6, 5), conv(4, 3)]
    twins = [torch_twin(layer) for layer in layers]
    prune.l1_unstructured(layers[1], "weight", 0.2)  # one already pruned: the global pass composes
    tp.l1_unstructured(twins[1], "weight", 0.2)
    prune.global_unstructured([(m, "weight") for m in layers], pruning_method=prune.L1Unstructured, amount=0.45)
    tp.global_unstructured([(m, "weight") for m in twins], pruning_method=tp.L1Unstructured, amount=0.45)
    for layer, twin in zip(layers, twins):
        np.testing.assert_array_equal(as_torch_layout(layer, layer.weight_mask.numpy()), twin.weight_mask.numpy())
