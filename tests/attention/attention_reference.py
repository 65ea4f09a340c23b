"""Float64 references for the attention tests: plain softmax attention, its gradient, and the
Philox4x32-10 dropout mask of cpp/attention/philox.h written out in NumPy."""
import numpy as np

MASK32 = np.uint64(0xFFFFFFFF)


def additive(mask):
    if mask is None:
        return 0.0
    mask = np.asarray(mask)
    return np.where(mask, 0.0, -np.inf) if mask.dtype == bool else mask.astype(np.float64)


def philox_keep(seed, shape, p):
    """The keep mask (B, H, Sq, Sk) of the kernels' dropout for `seed` and probability p."""
    b, h, sq, sk = shape
    groups = (sk + 3) // 4
    c0, c1, c2, c3 = [np.broadcast_to(x, (b, h, sq, groups)).astype(np.uint64) for x in (
        np.arange(groups)[None, None, None, :], np.arange(sq)[None, None, :, None], np.arange(h)[None, :, None, None],
        np.arange(b)[:, None, None, None])]
    k0, k1 = np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32)
    for _ in range(10):
        p0 = np.uint64(0xD2511F53) * c0
        p1 = np.uint64(0xCD9E8D57) * c2
        c0, c1, c2, c3 = (p1 >> np.uint64(32)) ^ c1 ^ k0, p1 & MASK32, (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & MASK32
        k0 = (k0 + np.uint64(0x9E3779B9)) & MASK32
        k1 = (k1 + np.uint64(0xBB67AE85)) & MASK32
    words = np.stack([c0, c1, c2, c3], axis=-1).reshape(b, h, sq, groups * 4)[..., :sk]
    return words >= np.uint64(int(p * 2**32))


def attention(q, k, v, mask=None, causal=False, scale=None, keep=None, p=0.0):
    """(out, lse, probabilities) in float64."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    scale = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ np.swapaxes(k, -1, -2) * scale + additive(mask)
    if causal:
        s = np.where(np.tril(np.ones(s.shape[-2:], bool)), s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    total = e.sum(axis=-1, keepdims=True)
    probs = np.where(total > 0, e / np.where(total > 0, total, 1), 0.0)
    with np.errstate(divide="ignore"):
        lse = (np.log(total) + m)[..., 0]
    dropped = probs if keep is None else probs * keep / (1 - p)
    return dropped @ v, lse, probs


def attention_grad(g, q, k, v, mask=None, causal=False, scale=None, keep=None, p=0.0):
    q, k, v, g = (np.asarray(a, np.float64) for a in (q, k, v, g))
    scale = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    _, _, probs = attention(q, k, v, mask, causal, scale)
    z = 1.0 if keep is None else keep / (1 - p)
    dv = np.swapaxes(probs * z, -1, -2) @ g
    dp = (g @ np.swapaxes(v, -1, -2)) * z
    ds = probs * (dp - (dp * probs).sum(axis=-1, keepdims=True))
    return ds @ k * scale, np.swapaxes(ds, -1, -2) @ q * scale, dv


def make(rng, shape, scale=1.0):
    b, h, sq, sk, d = shape
    q = (rng.standard_normal((b, h, sq, d)) * scale).astype(np.float32)
    k = (rng.standard_normal((b, h, sk, d)) * scale).astype(np.float32)
    v = rng.standard_normal((b, h, sk, d)).astype(np.float32)
    return q, k, v


def make_mask(rng, kind, shape):
    """(mask, causal) of a kind; every query keeps at least one key."""
    b, h, sq, sk, _ = shape
    if kind in ("none", "causal"):
        return None, kind == "causal"
    if kind in ("key_padding", "causal_padding"):
        lengths = rng.integers(1, sk + 1, b)
        lengths[0] = sk
        return (np.arange(sk)[None, :] < lengths[:, None])[:, None, None, :], kind == "causal_padding"
    if kind == "full_bool":
        m = rng.random((b, h, sq, sk)) < 0.7
        m[..., 0] = True
        return m, False
    if kind == "additive":
        return (rng.standard_normal((1, h, sq, sk)) * 2).astype(np.float32), False
    m = np.where(rng.random((sq, sk)) < 0.2, -np.inf, 0.5).astype(np.float32)
    m[:, 0] = 0.5
    return m, False
