"""nn.functional.pad / one_hot / interpolate / einsum, cross-entropy with class probabilities and
label lists, and the nn containers, hooks and sizes, against PyTorch (issue 16)."""
import numpy as np
import pytest

import fusegrad as fg
from fusegrad import nn
from fusegrad.nn import functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional

R = np.random.default_rng(5)


def check(f_out, t_out, f_inputs=(), t_inputs=(), rtol=1e-5, atol=1e-6):
    """Outputs equal; then the gradients of sum(out * w) equal."""
    t_out = t_out.detach() if not t_out.requires_grad else t_out
    assert f_out.shape == tuple(t_out.shape)
    np.testing.assert_allclose(f_out.numpy(), t_out.detach().numpy(), rtol=rtol, atol=atol)
    if f_inputs:
        w = R.standard_normal(f_out.shape)
        (f_out * fg.tensor(w, dtype=f_out.dtype)).sum().backward()
        (t_out * torch.tensor(w, dtype=t_out.dtype)).sum().backward()
        for f, t in zip(f_inputs, t_inputs):
            np.testing.assert_allclose(f.grad.numpy(), t.grad.numpy(), rtol=rtol, atol=atol)


def pair(shape):
    x = R.standard_normal(shape)
    return fg.tensor(x, dtype=np.float64, requires_grad=True), torch.tensor(x, requires_grad=True)


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("pads", [(1, 2), (2, 0, 1, 1), (0, 0, 1, 2, 2, 1)])
def test_pad(mode, pads):
    f, t = pair((2, 4, 5, 3))
    if mode == "constant":
        check(F.pad(f, pads, value=1.5), TF.pad(t, pads, value=1.5), [f], [t])
        return
    # PyTorch pads the last 1-3 dims of a batched input in these modes
    tt = t if len(pads) == 6 else t.reshape(8, 5, 3) if len(pads) == 4 else t.reshape(40, 3)
    ft = f if len(pads) == 6 else f.reshape(8, 5, 3) if len(pads) == 4 else f.reshape(40, 3)
    if len(pads) == 6:
        tt, ft = t[None], f[None]
    tout, fout = TF.pad(tt, pads, mode=mode), F.pad(ft, pads, mode=mode)
    check(fout, tout, [f], [t])


def test_pad_negative_and_errors():
    f, t = pair((3, 6))
    check(F.pad(f, (-1, 2, 1, -2)), TF.pad(t, (-1, 2, 1, -2)), [f], [t])
    with pytest.raises(RuntimeError):
        F.pad(fg.tensor(np.ones((1, 3, 3))), (3, 3), mode="reflect")
    with pytest.raises(ValueError):
        F.pad(fg.tensor(np.ones((3,))), (1,))


def test_one_hot():
    for labels, n in [([0, 2, 1, 2], -1), ([[1, 0], [3, 3]], 5), ([], 3)]:
        f = F.one_hot(fg.tensor(np.array(labels, np.int64)), n)
        t = TF.one_hot(torch.tensor(labels, dtype=torch.int64), n)
        assert f.dtype == np.int64 and f.shape == tuple(t.shape)
        np.testing.assert_array_equal(f.numpy(), t.numpy())
    assert F.one_hot([1, 0], 2).tolist() == [[0, 1], [1, 0]]
    for bad in [([3], 2), ([-1], 3)]:
        with pytest.raises(RuntimeError):
            F.one_hot(fg.tensor(np.array(bad[0])), bad[1])
    with pytest.raises(RuntimeError):
        F.one_hot(fg.tensor([1.0]), 2)


@pytest.mark.parametrize("mode,align", [("nearest", None), ("bilinear", False), ("bilinear", True)])
@pytest.mark.parametrize("how", [{"size": (7, 4)}, {"scale_factor": 2}, {"size": 3}, {"scale_factor": (0.5, 1.5)}])
def test_interpolate_nhwc(mode, align, how):
    f, t = pair((2, 5, 6, 3))  # NHWC for fusegrad; PyTorch gets the NCHW permutation
    fo = F.interpolate(f, mode=mode, align_corners=align, **how)
    to = TF.interpolate(t.permute(0, 3, 1, 2), mode=mode, align_corners=align, **how).permute(0, 2, 3, 1)
    check(fo, to, [f], [t])


def test_interpolate_1d_and_errors():
    f, t = pair((2, 7, 3))
    check(F.interpolate(f, size=4, mode="linear"), TF.interpolate(t.permute(0, 2, 1), size=4, mode="linear").permute(0, 2, 1), [f], [t])
    with pytest.raises(ValueError):
        F.interpolate(f, size=3, scale_factor=2)
    with pytest.raises(NotImplementedError):
        F.interpolate(f, size=3, mode="bicubic")


EINSUMS = [("ij,jk->ik", [(3, 4), (4, 5)]), ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]), ("ij,kj->ik", [(3, 4), (5, 4)]),
           ("i,i->", [(4,), (4,)]), ("i,j->ij", [(3,), (4,)]), ("ij->ji", [(3, 4)]), ("ii->i", [(4, 4)]),
           ("ij->", [(3, 4)]), ("bhqd,bhkd->bhqk", [(2, 3, 4, 5), (2, 3, 6, 5)]), ("...ij,...jk", [(2, 3, 4), (2, 4, 5)]),
           ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]), ("ijk,ik->j", [(2, 3, 4), (2, 4)]), ("ij,j", [(3, 4), (4,)]),
           ("bn,anm,bm->ba", [(2, 3), (4, 3, 5), (2, 5)]),
           # repeated subscripts: the gradient lands on the diagonal
           ("ii", [(4, 4)]), ("iij->j", [(3, 3, 5)]), ("ii,i->i", [(4, 4), (4,)]), ("iji->j", [(3, 2, 3)]),
           ("bii->bi", [(2, 3, 3)]), ("ij,jj->ij", [(2, 3), (3, 3)])]


@pytest.mark.parametrize("eq,shapes", EINSUMS)
def test_einsum(eq, shapes):
    pairs = [pair(s) for s in shapes]
    fo = F.einsum(eq, *[p[0] for p in pairs])
    to = torch.einsum(eq, *[p[1] for p in pairs])
    check(fo, to, [p[0] for p in pairs], [p[1] for p in pairs])
    assert fg.einsum is not None


def test_einsum_uses_the_gemm_where_it_is_a_matrix_product():
    a, b = fg.randn(3, 4, requires_grad=True), fg.randn(4, 5)
    out = F.einsum("ij,jk->ik", a, b)
    assert out.dtype == np.float32 and type(out._ctx).__name__ in ("MatMul", "Reshape", "Permute")


def test_cross_entropy_probability_targets_and_label_lists():
    logits = R.standard_normal((4, 5))
    probs = R.uniform(size=(4, 5))
    probs /= probs.sum(1, keepdims=True)
    for ls in (0.0, 0.2):
        for reduction in ("mean", "sum", "none"):
            f, t = pair((4, 5))
            check(nn.CrossEntropyLoss(reduction=reduction, label_smoothing=ls)(f, fg.tensor(probs, dtype=np.float64)),
                  torch.nn.CrossEntropyLoss(reduction=reduction, label_smoothing=ls)(t, torch.tensor(probs)), [f], [t])
    labels = [1, 0, 4, 2]
    ft = fg.tensor(logits.astype(np.float32), requires_grad=True)
    tt = torch.tensor(logits.astype(np.float32), requires_grad=True)
    check(F.cross_entropy(ft, labels), TF.cross_entropy(tt, torch.tensor(labels)), [ft], [tt])
    check(F.nll_loss(ft.log_softmax(1), labels), TF.nll_loss(tt.log_softmax(1), torch.tensor(labels)))
    with pytest.raises(ValueError):
        F.cross_entropy(ft, [0, 5, 1, 1])


def test_module_dict_list_identity():
    d = nn.ModuleDict({"a": nn.Linear(2, 3), "b": nn.Identity(54, unused=1)})
    d["c"] = nn.Linear(3, 1)
    assert list(d) == ["a", "b", "c"] and "a" in d and len(d) == 3
    assert len(list(d.parameters())) == 4
    lst = nn.ModuleList([nn.Linear(2, 2)])
    lst.extend([nn.ReLU(), nn.Linear(2, 1)])
    lst.insert(1, nn.Identity())
    assert [type(m).__name__ for m in lst] == ["Linear", "Identity", "ReLU", "Linear"]
    assert len(list(lst.parameters())) == 4 and isinstance(lst[1:], nn.ModuleList)
    with pytest.raises(TypeError):
        lst.append(3)
    with pytest.raises(TypeError):
        d["x"] = "not a module"


def test_parameter_count_and_summary():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    tmodel = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    assert model.num_parameters() == sum(p.numel() for p in tmodel.parameters()) == 58
    model[2].requires_grad_(False)
    assert model.num_parameters(trainable_only=True) == 40
    text = model.summary(print_fn=None)
    assert "Total params: 58" in text and "Trainable params: 40" in text and "Linear" in text


def test_model_accepts_numpy_arrays():
    model = nn.Sequential(nn.Linear(3, 2))
    x = R.standard_normal((4, 3))  # float64, converted once as fusegrad.tensor does (float32)
    out = model(x)
    assert isinstance(out, fg.Tensor) and out.dtype == np.float32
    np.testing.assert_allclose(out.numpy(), model(fg.tensor(x)).numpy())


def test_forward_and_backward_hooks_match_torch():
    w = R.standard_normal((3, 2)).astype(np.float32)
    x = R.standard_normal((4, 2)).astype(np.float32)
    results = {}
    for lib, mod in (("fg", nn), ("torch", torch.nn)):
        layer = mod.Linear(2, 3)
        tensor = (lambda a, **k: fg.tensor(a, **k)) if lib == "fg" else (lambda a, **k: torch.tensor(a, **k))
        with (fg.no_grad() if lib == "fg" else torch.no_grad()):
            layer.weight[...] = tensor(w) if lib == "fg" else torch.tensor(w)
            layer.bias[...] = 0.5
        seen = []
        h1 = layer.register_forward_hook(lambda m, args, out: out * 2)
        h2 = layer.register_full_backward_hook(
            lambda m, gin, gout: seen.append((gin[0].numpy().copy(), gout[0].numpy().copy())) or (gin[0] * 3,))
        xi = tensor(x, requires_grad=True)
        out = layer(xi)
        out.sum().backward()
        results[lib] = (out.detach().numpy(), xi.grad.numpy(), seen[0][0], seen[0][1])
        h1.remove()
        h2.remove()
        assert np.allclose(layer(tensor(x)).detach().numpy(), results[lib][0] / 2, rtol=1e-5, atol=1e-6)
    for a, b in zip(results["fg"], results["torch"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_backward_hook_without_input_grad_and_pre_hook():
    layer = nn.Linear(2, 1)
    calls = []
    layer.register_full_backward_hook(lambda m, gin, gout: calls.append((gin, gout[0].shape)))
    layer.register_forward_pre_hook(lambda m, args: (args[0] * 0,))
    out = layer(fg.ones(3, 2))
    np.testing.assert_allclose(out.numpy(), np.broadcast_to(layer.bias.numpy(), (3, 1)))
    out.sum().backward()
    assert calls == [((None,), (3, 1))]
