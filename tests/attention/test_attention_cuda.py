"""The CUDA attention family (cuda/attention/), on the host SIMT emulator every run and on a GPU where
there is one (the cuda_device fixture), against the float64 references (attention_reference.py) and
the CPU kernels: forward (out, lse) and backward (dq, dk, dv) for odd shapes (S not a multiple of
the 64-query / 32-key tiles, D = 1..256 across the kernels' column counts, B·H > 1, Sq != Sk), every
mask kind and causal; dropout masks identical to the CPU's for the same seed; LayerNorm and the
embedding backward; a tiny BERT forward + backward on the device equal to the CPU's. Shapes stay
small: the emulator runs every thread as a fiber."""
import numpy as np
import pytest

import fusegrad as fg
from fusegrad import ops

import attention_reference as ref
from attention_reference import make, make_mask

# (B, H, Sq, Sk, D): one tile and less, S one past a tile, Sq != Sk both ways, D = 32/64/80 (two and
# three columns a lane) and 256 (the widest), D odd.
SHAPES = [(1, 1, 1, 1, 1), (2, 3, 17, 29, 13), (1, 2, 65, 33, 32), (2, 1, 40, 70, 64), (1, 1, 33, 65, 80),
          (1, 1, 9, 37, 256)]
MASKS = ["none", "key_padding", "full_bool", "additive", "square_2d", "causal", "causal_padding"]


def ran(dev, *names):
    """Asserts the emulator launched kernels with these names since the last call (nothing on a GPU)."""
    if dev.emulation is None:
        return
    kernels = dev.kernels()
    for name in names:
        assert any(name in k for k in kernels), f"{name} not in {kernels}"
    dev.emulation.clear()


def on(dev, *arrays):
    return [None if a is None else dev.array(a) for a in arrays]


def close(got, want, tol=2e-5, err=""):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = max(1.0, float(np.nanmax(np.abs(want), initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale, err_msg=err)


@pytest.mark.parametrize("shape", SHAPES)
def test_forward_and_backward_match_the_reference(cuda_device, rng, shape):
    q, k, v = make(rng, shape)
    g = rng.standard_normal(q.shape).astype(np.float32)
    for kind in ("none", "causal"):
        mask, causal = make_mask(rng, kind, shape)
        want, want_lse, _ = ref.attention(q, k, v, mask, causal)
        out, lse = ops.attention(*on(cuda_device, q, k, v), mask=mask, causal=causal, return_lse=True)
        ran(cuda_device, "attention_forward_kernel")
        close(cuda_device.host(out), want, err=kind)
        close(cuda_device.host(lse), want_lse, err=kind)
        grads = ops.attention_backward(*on(cuda_device, g, q, k, v), out, lse, mask=mask, causal=causal)
        ran(cuda_device, "attention_backward_rowdot", "attention_backward_dq", "attention_backward_dkdv")
        for name, got, w in zip("qkv", grads, ref.attention_grad(g, q, k, v, mask, causal)):
            close(cuda_device.host(got), w, 1e-4, err=f"d{name} {kind}")


@pytest.mark.parametrize("kind", MASKS)
def test_every_mask_kind_equals_the_cpu_kernels(cuda_device, rng, kind):
    shape = (2, 2, 21, 45, 24)
    q, k, v = make(rng, shape, scale=2.0)
    g = rng.standard_normal(q.shape).astype(np.float32)
    mask, causal = make_mask(rng, kind, shape)
    with cuda_device.cpu():
        cpu_out, cpu_lse = ops.attention(q, k, v, mask=mask, causal=causal, return_lse=True)
        cpu_grads = ops.attention_backward(g, q, k, v, cpu_out, cpu_lse, mask=mask, causal=causal)
    dmask = None if mask is None else cuda_device.array(np.asarray(mask))
    out, lse = ops.attention(*on(cuda_device, q, k, v), mask=dmask, causal=causal, return_lse=True)
    close(cuda_device.host(out), cpu_out)
    close(cuda_device.host(lse), cpu_lse)
    grads = ops.attention_backward(*on(cuda_device, g, q, k, v), out, lse, mask=dmask, causal=causal)
    for got, want in zip(grads, cpu_grads):
        close(cuda_device.host(got), want, 1e-4)


def test_queries_that_attend_to_nothing_get_zeros(cuda_device, rng):
    shape = (1, 1, 6, 40, 16)
    q, k, v = make(rng, shape)
    mask = np.ones((6, 40), bool)
    mask[2] = False  # query 2 may attend to no key
    out, lse = ops.attention(*on(cuda_device, q, k, v), mask=cuda_device.array(mask), return_lse=True)
    out, lse = cuda_device.host(out), cuda_device.host(lse)
    assert np.all(out[0, 0, 2] == 0) and lse[0, 0, 2] == -np.inf
    g = np.ones_like(q)
    dq, dk, dv = (cuda_device.host(a) for a in ops.attention_backward(
        *on(cuda_device, g, q, k, v), cuda_device.array(out), cuda_device.array(lse), mask=cuda_device.array(mask)))
    assert np.all(np.isfinite(dq)) and np.all(dq[0, 0, 2] == 0)
    want = ref.attention_grad(g, q, k, v, mask)
    close(dk, want[1], 1e-4)
    close(dv, want[2], 1e-4)


@pytest.mark.parametrize("causal", [False, True])
def test_dropout_mask_is_the_cpus_for_the_same_seed(cuda_device, rng, causal):
    shape, p, seed = (2, 2, 37, 43, 16), 0.3, 2**40 + 12345
    q, k, v = make(rng, shape)
    g = rng.standard_normal(q.shape).astype(np.float32)
    keep = ref.philox_keep(seed, (2, 2, 37, 43), p)
    want, want_lse, _ = ref.attention(q, k, v, None, causal, keep=keep, p=p)
    with cuda_device.cpu():
        cpu_out = ops.attention(q, k, v, causal=causal, dropout_p=p, seed=seed)
    out, lse = ops.attention(*on(cuda_device, q, k, v), causal=causal, dropout_p=p, seed=seed, return_lse=True)
    close(cuda_device.host(out), want)
    close(cuda_device.host(out), cpu_out)
    close(cuda_device.host(lse), want_lse)  # lse is that of the softmax before dropout
    grads = ops.attention_backward(*on(cuda_device, g, q, k, v), out, lse, causal=causal, dropout_p=p, seed=seed)
    for got, w in zip(grads, ref.attention_grad(g, q, k, v, None, causal, keep=keep, p=p)):
        close(cuda_device.host(got), w, 1e-4)
    # With V the identity (Sk = D), out_ij = P_ij Z_ij / (1 - p): the mask itself, bit for bit
    kk = rng.standard_normal((2, 2, 16, 16)).astype(np.float32)
    vv = np.ascontiguousarray(np.broadcast_to(np.eye(16, dtype=np.float32), (2, 2, 16, 16)))
    got = cuda_device.host(ops.attention(*on(cuda_device, q[..., :16], kk, vv), dropout_p=p, seed=seed))
    assert np.array_equal(got != 0, ref.philox_keep(seed, (2, 2, 37, 16), p))


@pytest.mark.parametrize("shape", [(1, 1, 0, 5, 8), (1, 1, 4, 0, 8), (1, 1, 3, 4, 0), (0, 2, 3, 4, 8)])
def test_empty_sizes_equal_the_cpu(cuda_device, rng, shape):
    q, k, v = make(rng, shape)
    g = np.ones_like(q)
    with cuda_device.cpu():
        cpu_out, cpu_lse = ops.attention(q, k, v, return_lse=True)
        cpu_grads = ops.attention_backward(g, q, k, v, cpu_out, cpu_lse)
    out, lse = ops.attention(*on(cuda_device, q, k, v), return_lse=True)
    assert np.array_equal(cuda_device.host(out), cpu_out) and np.array_equal(cuda_device.host(lse), cpu_lse)
    grads = ops.attention_backward(*on(cuda_device, g, q, k, v), out, lse)
    for got, want in zip(grads, cpu_grads):
        assert np.array_equal(cuda_device.host(got), want)


def test_out_and_stream_arguments(cuda_device, rng):
    q, k, v = make(rng, (1, 2, 10, 12, 8))
    out = cuda_device.array(np.zeros(q.shape, np.float32))
    result = ops.attention(*on(cuda_device, q, k, v), out=out)
    assert result is out
    close(cuda_device.host(out), ref.attention(q, k, v)[0])
    with pytest.raises(ValueError, match="D up to 256"):
        ops.attention(*on(cuda_device, *make(rng, (1, 1, 2, 2, 257))))


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (5, 33), (2, 4, 100), (300, 40)])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_forward_and_backward(cuda_device, rng, shape, affine):
    n = shape[-1]
    x = (rng.standard_normal(shape) * 3 + 5).astype(np.float32)
    w = rng.standard_normal(n).astype(np.float32) if affine else None
    b = rng.standard_normal(n).astype(np.float32) if affine else None
    g = rng.standard_normal(shape).astype(np.float32)
    with cuda_device.cpu():
        cpu = ops.layer_norm(x, w, b, 1e-5, return_stats=True)
        cpu_grads = ops.layer_norm_backward(g, x, cpu[1], cpu[2], w)
    y, mean, rstd = ops.layer_norm(*on(cuda_device, x, w, b), 1e-5, return_stats=True)
    ran(cuda_device, "layer_norm_forward_kernel")
    for got, want in zip((y, mean, rstd), cpu):
        close(cuda_device.host(got), want, 1e-5)
    grads = ops.layer_norm_backward(*on(cuda_device, g, x), mean, rstd, None if w is None else cuda_device.array(w))
    ran(cuda_device, "layer_norm_backward_dx", "layer_norm_backward_params")
    for got, want in zip(grads, cpu_grads):
        assert (got is None) == (want is None)
        if want is not None:
            close(cuda_device.host(got), want, 1e-4)


@pytest.mark.parametrize("padding_idx", [None, 3])
def test_embedding_backward(cuda_device, rng, padding_idx):
    vocab, dim = 150, 37
    idx = rng.integers(0, vocab, (4, 50))
    idx[0, :20] = 3  # a frequent row (padding, or not)
    g = rng.standard_normal((4, 50, dim)).astype(np.float32)
    with cuda_device.cpu():
        want = ops.embedding_backward(idx, g, vocab, padding_idx)
    got = ops.embedding_backward(cuda_device.array(idx), cuda_device.array(g), vocab, padding_idx)
    ran(cuda_device, "embedding_backward_kernel")
    close(cuda_device.host(got), want, 1e-5)
    again = ops.embedding_backward(cuda_device.array(idx), cuda_device.array(g), vocab, padding_idx)
    assert np.array_equal(cuda_device.host(again), cuda_device.host(got))  # deterministic
    with pytest.raises(ValueError, match="indices must be in"):
        ops.embedding_backward(cuda_device.array(idx + vocab), cuda_device.array(g), vocab)


def _tiny_bert():
    from fusegrad import models

    cfg = models.BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=40, hidden_dropout_prob=0.0,
                            attention_probs_dropout_prob=0.0, num_labels=3)
    fg.manual_seed(0)
    return models.BertForSequenceClassification(cfg)


def _bert_step(model, ids, mask, labels, device):
    model.zero_grad()
    out = model(fg.tensor(ids, device=device), attention_mask=fg.tensor(mask, device=device),
                labels=fg.tensor(labels, device=device))
    out.loss.backward()
    return out, {name: p.grad.numpy() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.cuda_emulated
def test_tiny_bert_forward_and_backward_on_the_emulated_gpu_equal_the_cpus(rng):
    ids = rng.integers(1, 60, (2, 19))
    mask = np.ones((2, 19), np.int64)
    mask[1, 11:] = 0
    ids[1, 11:] = 0
    labels = np.array([0, 2])
    cpu_out, cpu_grads = _bert_step(_tiny_bert(), ids, mask, labels, "cpu")
    with fg.cuda.emulate() as emu:
        model = _tiny_bert().to("cuda")
        out, grads = _bert_step(model, ids, mask, labels, "cuda")
        kernels = emu.kernels()
    for name in ("attention_forward_kernel", "attention_backward_dkdv", "layer_norm_forward_kernel",
                 "layer_norm_backward_dx", "embedding_backward_kernel"):
        assert any(name in k for k in kernels), name
    close(out.logits.numpy(), cpu_out.logits.numpy(), 1e-4)
    close(out.loss.numpy(), cpu_out.loss.numpy(), 1e-4)
    assert grads.keys() == cpu_grads.keys()
    for name, want in cpu_grads.items():
        close(grads[name], want, 1e-3, err=name)


def _encoder_step(layer, x, kpm, device):
    layer.zero_grad()
    xt = fg.tensor(x, device=device, requires_grad=True)
    y = layer(xt, src_key_padding_mask=None if kpm is None else fg.tensor(kpm, device=device))
    (y * y).sum().backward()
    grads = {name: p.grad.numpy() for name, p in layer.named_parameters()}
    return y.numpy(), xt.grad.numpy(), grads


@pytest.mark.cuda_emulated
@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_encoder_layer_on_the_emulated_gpu_equals_the_cpu(rng, norm_first):
    from fusegrad import nn

    x = rng.standard_normal((2, 13, 32)).astype(np.float32)
    kpm = np.zeros((2, 13), bool)
    kpm[1, 9:] = True  # True = padding, as PyTorch

    def make():
        fg.manual_seed(1)
        return nn.TransformerEncoderLayer(32, 4, dim_feedforward=48, dropout=0.0, activation="gelu",
                                          norm_first=norm_first)

    want = _encoder_step(make(), x, kpm, "cpu")
    with fg.cuda.emulate():
        got = _encoder_step(make().to("cuda"), x, kpm, "cuda")
    close(got[0], want[0], 1e-4)
    close(got[1], want[1], 1e-3)
    for name, w in want[2].items():
        close(got[2][name], w, 1e-3, err=name)
