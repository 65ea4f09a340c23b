"""nn.functional.scaled_dot_product_attention, nn.MultiheadAttention, nn.TransformerEncoderLayer and
nn.TransformerEncoder against PyTorch: a PyTorch module's state_dict, converted to NumPy, loads
into ours, and outputs and gradients (inputs and parameters) agree."""
import numpy as np
import pytest

import fusegrad
from fusegrad import Tensor, nn
from fusegrad.nn import functional as F

torch = pytest.importorskip("torch")


def to_numpy_state(module):
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def close(a, b, rtol=2e-4, atol=2e-5):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


@pytest.mark.parametrize("shape", [(2, 3, 10, 12, 8), (3, 7, 5, 16)])  # (N, H, L, S, E) and 3-D (N, L, S, E)
def test_sdpa_functional(rng, shape):
    *lead, length, source, e = shape
    q = rng.standard_normal((*lead, length, e)).astype(np.float32)
    k = rng.standard_normal((*lead, source, e)).astype(np.float32)
    v = rng.standard_normal((*lead, source, e)).astype(np.float32)
    mask = rng.random((*lead[:1], *([1] * (len(lead) - 1)), length, source)) < 0.8
    mask[..., 0] = True
    ours = [Tensor(a, requires_grad=True) for a in (q, k, v)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
    out = F.scaled_dot_product_attention(*ours, attn_mask=mask)
    ref = torch.nn.functional.scaled_dot_product_attention(*theirs, attn_mask=torch.from_numpy(mask))
    close(out.numpy(), ref.detach().numpy())
    g = rng.standard_normal(out.shape).astype(np.float32)
    out.backward(g)
    ref.backward(torch.from_numpy(g))
    for a, b in zip(ours, theirs):
        close(a.grad.numpy(), b.grad.numpy(), rtol=1e-3, atol=1e-4)
    causal = F.scaled_dot_product_attention(*ours, is_causal=True, scale=0.3)
    close(causal.numpy(), torch.nn.functional.scaled_dot_product_attention(*theirs, is_causal=True, scale=0.3)
          .detach().numpy())


def _compare_module(ours, theirs, inputs, rng, call, rtol=5e-4, atol=5e-5):
    """Runs call(module, *inputs) on both, backward of a random projection of the output, and
    compares output, input gradients and parameter gradients."""
    ours.load_state_dict(to_numpy_state(theirs))
    xs = [Tensor(a, requires_grad=True) for a in inputs]
    ts = [torch.tensor(a, requires_grad=True) for a in inputs]
    out = call(ours, xs, fusegrad)
    ref = call(theirs, ts, torch)
    close(out.numpy(), ref.detach().numpy(), rtol, atol)
    g = rng.standard_normal(out.shape).astype(np.float32)
    out.backward(g)
    ref.backward(torch.from_numpy(g))
    for a, b in zip(xs, ts):
        close(a.grad.numpy(), b.grad.numpy(), 10 * rtol, 10 * atol)
    params = dict(ours.named_parameters())
    for name, p in theirs.named_parameters():
        close(params[name].grad.numpy(), p.grad.numpy(), 10 * rtol, 10 * atol)


def _masks(rng, n, length, lib):
    kpm = np.zeros((n, length), bool)
    kpm[0, length - 3:] = True  # True = padding, as PyTorch's MHA wants it
    causal = np.triu(np.full((length, length), -np.inf, np.float32), 1)
    conv = (lambda a: torch.from_numpy(a)) if lib is torch else (lambda a: a)
    return conv(kpm), conv(causal)


def test_multihead_self_attention(rng):
    torch.manual_seed(0)
    n, length, e, h = 2, 11, 24, 4
    theirs = torch.nn.MultiheadAttention(e, h, batch_first=True)
    theirs.in_proj_bias.data.normal_()
    ours = nn.MultiheadAttention(e, h, batch_first=True)
    x = rng.standard_normal((n, length, e)).astype(np.float32)

    def call(m, xs, lib):
        kpm, causal = _masks(rng, n, length, lib)
        return m(xs[0], xs[0], xs[0], key_padding_mask=kpm, attn_mask=causal, need_weights=False)[0]
    _compare_module(ours, theirs, [x], rng, call)
    # need_weights: the averaged probabilities
    ow = ours(Tensor(x), Tensor(x), Tensor(x), need_weights=True)[1]
    tw = theirs(*(torch.from_numpy(x),) * 3, need_weights=True)[1]
    close(ow.numpy(), tw.detach().numpy())


def test_multihead_cross_attention_and_seq_first(rng):
    torch.manual_seed(1)
    n, length, source, e, h = 3, 5, 9, 16, 2
    theirs = torch.nn.MultiheadAttention(e, h, batch_first=False)
    ours = nn.MultiheadAttention(e, h, batch_first=False)
    q = rng.standard_normal((length, n, e)).astype(np.float32)
    kv = rng.standard_normal((source, n, e)).astype(np.float32)
    kv2 = rng.standard_normal((source, n, e)).astype(np.float32)

    def call(m, xs, lib):
        pad = np.zeros((n, source), bool)
        pad[1, -4:] = True
        pad = torch.from_numpy(pad) if lib is torch else pad
        return m(xs[0], xs[1], xs[2], key_padding_mask=pad)[0]
    _compare_module(ours, theirs, [q, kv, kv2], rng, call)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_layer(rng, norm_first, activation):
    torch.manual_seed(2)
    n, length, e, h, ff = 2, 13, 32, 4, 48
    theirs = torch.nn.TransformerEncoderLayer(e, h, ff, dropout=0.0, activation=activation, batch_first=True,
                                              norm_first=norm_first)
    ours = nn.TransformerEncoderLayer(e, h, ff, dropout=0.0, activation=activation, norm_first=norm_first)
    x = rng.standard_normal((n, length, e)).astype(np.float32)

    def call(m, xs, lib):
        kpm, _ = _masks(rng, n, length, lib)
        return m(xs[0], src_key_padding_mask=kpm)
    _compare_module(ours, theirs, [x], rng, call)


def test_encoder_stack(rng):
    torch.manual_seed(3)
    n, length, e, h = 2, 9, 16, 2
    layer = torch.nn.TransformerEncoderLayer(e, h, 40, dropout=0.0, batch_first=True)
    theirs = torch.nn.TransformerEncoder(layer, 2, norm=torch.nn.LayerNorm(e), enable_nested_tensor=False)
    ours = nn.TransformerEncoder(nn.TransformerEncoderLayer(e, h, 40, dropout=0.0), 2, norm=nn.LayerNorm(e))
    assert set(dict(ours.named_parameters())) == set(dict(theirs.named_parameters()))
    x = rng.standard_normal((n, length, e)).astype(np.float32)

    def call(m, xs, lib):
        kpm, causal = _masks(rng, n, length, lib)
        return m(xs[0], mask=causal, src_key_padding_mask=kpm)
    _compare_module(ours, theirs, [x], rng, call)


def test_dropout_in_training_only(rng):
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.5)
    x = Tensor(rng.standard_normal((2, 7, 16)).astype(np.float32))
    a, b = layer(x).numpy(), layer(x).numpy()
    assert not np.allclose(a, b)
    layer.eval()
    np.testing.assert_array_equal(layer(x).numpy(), layer(x).numpy())


def test_errors():
    with pytest.raises(ValueError, match="divisible"):
        nn.MultiheadAttention(10, 3)
    m = nn.MultiheadAttention(8, 2)
    x = Tensor(np.zeros((2, 3, 8), np.float32))
    with pytest.raises(ValueError, match="key_padding_mask"):
        m(x, x, x, key_padding_mask=np.zeros((2, 4), bool))
    with pytest.raises(ValueError, match="activation"):
        nn.TransformerEncoderLayer(8, 2, activation="swish")


def test_linear_gelu_in_the_gemm_store_when_nothing_needs_a_gradient(rng):
    layer = nn.Linear(12, 7)
    x = Tensor(rng.standard_normal((3, 5, 12)).astype(np.float32))
    with_graph = layer(x, activation="gelu").numpy()
    with fusegrad.no_grad():
        fused = layer(x, activation="gelu").numpy()
    np.testing.assert_allclose(fused, with_graph, rtol=1e-5, atol=1e-6)
