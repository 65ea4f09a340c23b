"""Scaled dot-product attention on float32 (B, H, S, D) arrays, PyTorch's layout and semantics
(torch.nn.functional.scaled_dot_product_attention), flash-attention style: the (Sq, Sk) score
matrix is never materialised; the forward saves the log-sum-exp of each query's scores, from
which attention_backward recomputes the probabilities block by block (cpp/attention/).

    out = softmax(q @ k^T * scale + mask) @ v

mask: boolean (True = attend, as in PyTorch) or additive float32, broadcasting against
(B, H, Sq, Sk) (e.g. key padding (B, 1, 1, Sk), or a full (Sq, Sk) / (B or 1, H or 1, Sq, Sk)).
causal=True lets query i attend to keys j <= i (top-left aligned when Sq != Sk, as PyTorch's
is_causal); it combines with a mask. A query that may attend to nothing gets zeros (and lse -inf).

Dropout runs inside the kernel: each probability is kept with probability 1 - dropout_p (and
scaled by 1 / (1 - dropout_p)) by a counter-based generator (Philox4x32-10, keyed by `seed` and
(b, h, i, j); cpp/attention/philox.h), so the same seed gives the same mask on every device and
in the backward pass. With dropout_p > 0 and seed=None a seed is drawn from fusegrad's generator;
pass it explicitly (see draw_seed) to be able to run attention_backward.

CUDA arrays (CuPy, anything with __cuda_array_interface__ or DLPack, and the emulated device's
arrays) run the CUDA kernels (cuda/attention/: the same tiling idea on the GPU, the same Philox
dropout mask) on the caller's current CuPy stream unless `stream=` is given; there the head
dimension D may be at most 256, and the mask must be on the same device as q.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .. import _backend, _cpu
from .._backend import array_module, device_of, native, to_kind
from ..random import default_generator
from ._common import (check_dtype, check_out, check_same_device, cpu_output, finish_output, flag,
                      float32_input, real)

# The CUDA kernels keep a head's D-vector spread over a warp's lanes, at most 8 floats a lane.
CUDA_MAX_HEAD_DIM = 256


def draw_seed() -> int:
    """A 64-bit dropout seed from fusegrad's generator (fusegrad.manual_seed makes it repeatable)."""
    return int(default_generator().integers(0, 2**63 - 1))


def _qkv(q, k, v, fn: str):
    (q, kind), (k, _), (v, _) = (float32_input(a, n) for a, n in ((q, "q"), (k, "k"), (v, "v")))
    check_same_device(q=q, k=k, v=v)
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"{fn}: q, k, v must be 4-D (B, H, S, D), got shapes {q.shape}, {k.shape}, {v.shape}")
    b, h, _, d = q.shape
    if k.shape[:2] != (b, h) or k.shape[3] != d or v.shape != k.shape:
        raise ValueError(f"{fn}: expected q (B, H, Sq, D) and k, v (B, H, Sk, D) with the same B, H, D, got "
                         f"q {q.shape}, k {k.shape}, v {v.shape}")
    if device_of(q) != "cpu" and d > CUDA_MAX_HEAD_DIM:
        raise ValueError(f"{fn}: the CUDA kernels take a head dimension D up to {CUDA_MAX_HEAD_DIM}, got {d}")
    xp = array_module(q)
    return [xp.ascontiguousarray(a) for a in (q, k, v)], kind


def _cuda_call(kernel: str, arrays: list, written: tuple, stream, *args):
    """Runs compiled kernel `kernel` on the arrays' addresses, args, the stream and the device."""
    with _backend.device_call(arrays, written=written, stream=stream) as call:
        getattr(call.module, kernel)(*call.pointers, *args, call.stream, call.device)


def _cuda_output(out, shape: tuple, like, inputs: list):
    """(array a CUDA kernel writes, caller's out or None), as cpu_output for device arrays."""
    xp = array_module(like)
    if out is None:
        with _backend.on_device(like):
            return xp.empty(shape, np.float32), None
    arr = check_out(out, shape, device_of(like))
    if arr.flags.c_contiguous and not any(xp.may_share_memory(arr, a) for a in inputs if a is not None):
        return arr, arr
    with _backend.on_device(like):
        return xp.empty(shape, np.float32), arr


def _mask_strides(m) -> tuple:
    """Element strides (b, h, i) of a C-contiguous 4-D mask whose size-1 axes broadcast."""
    if m is None:
        return ()
    _, h, sq, sk = m.shape
    return (h * sq * sk if m.shape[0] > 1 else 0, sq * sk if h > 1 else 0, sk if sq > 1 else 0)


def _cuda_mask(m, q_shape, sk: int, fn: str):
    """The mask as a C-contiguous float32 additive device array of 4 dimensions, each 1 or full, the
    key axis full (the kernels take it with _mask_strides)."""
    xp = array_module(m)
    if m.dtype != np.bool_ and m.dtype != np.float32:
        raise TypeError(f"mask: expected dtype bool or float32, got {m.dtype}")
    full = (q_shape[0], q_shape[1], q_shape[2], sk)
    if m.ndim > 4 or any(s not in (1, f) for s, f in zip(m.shape[::-1], full[::-1])):
        raise ValueError(f"{fn}: mask of shape {m.shape} does not broadcast to (B, H, Sq, Sk) = {full}")
    m = m.reshape((1,) * (4 - m.ndim) + tuple(m.shape))
    if m.dtype == np.bool_:
        with _backend.on_device(m):
            m = xp.where(m, np.float32(0), np.float32(-np.inf)).astype(np.float32)
    if m.shape[3] != sk:
        m = xp.broadcast_to(m, tuple(m.shape[:3]) + (sk,))
    return xp.ascontiguousarray(m)


def _mask(mask, q_shape, sk: int, fn: str, device: str = "cpu"):
    """The mask as a float32 additive array of 4 dimensions, each 1 or full, keys unit-strided."""
    if mask is None:
        return None
    m = native(mask, "mask")[0] if hasattr(mask, "dtype") else np.asarray(mask)
    if device_of(m) != device:
        raise ValueError(f"{fn}: mask is on {device_of(m)} but q, k, v are on {device}")
    if device != "cpu":
        return _cuda_mask(m, q_shape, sk, fn)
    if m.dtype != np.bool_ and m.dtype != np.float32:
        raise TypeError(f"mask: expected dtype bool or float32, got {m.dtype}")
    full = (q_shape[0], q_shape[1], q_shape[2], sk)
    if m.ndim > 4 or any(s not in (1, f) for s, f in zip(m.shape[::-1], full[::-1])):
        raise ValueError(f"{fn}: mask of shape {m.shape} does not broadcast to (B, H, Sq, Sk) = {full}")
    m = m.reshape((1,) * (4 - m.ndim) + m.shape)
    if m.dtype == np.bool_:
        m = np.where(m, np.float32(0), np.float32(-np.inf))
    if m.shape[3] != sk:
        m = np.broadcast_to(m, m.shape[:3] + (sk,))
    if (sk > 1 and m.strides[3] != 4) or any(st < 0 for st in m.strides):
        m = np.ascontiguousarray(m)
    return m


def _options(causal, scale, dropout_p, seed, d: int, fn: str):
    causal = flag(causal, "causal", fn)
    scale = 1.0 / math.sqrt(d) if scale is None and d > 0 else (1.0 if scale is None else real(scale, "scale", fn))
    dropout_p = real(dropout_p, "dropout_p", fn, minimum=0.0)
    if dropout_p >= 1.0:
        raise ValueError(f"{fn}: dropout_p must be in [0, 1), got {dropout_p}")
    if seed is None:
        seed = draw_seed() if dropout_p > 0 else 0
    elif isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= int(seed) < 2**64:
        raise TypeError(f"{fn}: seed must be an int in [0, 2**64), got {seed!r}")
    return causal, scale, dropout_p, int(seed)


def _d0_lse(m, b, h, sq, sk, causal):
    """lse of attention without features (D = 0): every score is the mask alone."""
    lse = np.empty((b, h, sq), np.float32)
    if b * h * sq:
        s = np.zeros((b, h, sq, sk), np.float32) + (0 if m is None else m)
        if causal:
            s = np.where(np.tril(np.ones((sq, sk), bool)), s, -np.inf)
        with np.errstate(divide="ignore"):
            lse[...] = np.log(np.exp(s).sum(axis=-1))
    return lse


def _attention_cuda(q, k, v, m, causal, scale, dropout_p, seed, out, kind, stream):
    b, h, sq, d = q.shape
    sk = k.shape[2]
    xp = array_module(q)
    target, result = _cuda_output(out, q.shape, q, [q, k, v])
    with _backend.on_device(q):
        lse = xp.empty((b, h, sq), np.float32)
    if d == 0:
        host_mask = None if m is None else _backend.to_host(m)
        with _backend.on_device(q):
            lse = xp.asarray(_d0_lse(host_mask, b, h, sq, sk, causal))
    elif b * h * sq:
        _cuda_call("attention_forward", [q, k, v, m, target, lse], (4, 5), stream, _mask_strides(m), b, h, sq, sk, d,
                   scale, causal, dropout_p, seed)
    o = finish_output(target, result, out, kind)
    return o, to_kind(lse, kind)


def attention(q, k, v, *, mask=None, causal=False, scale=None, dropout_p=0.0, seed=None, return_lse=False, out=None,
              stream=None):
    """softmax(q k^T * scale + mask) v for q (B, H, Sq, D), k and v (B, H, Sk, D); scale defaults to
    1/sqrt(D). Returns out (B, H, Sq, D), or (out, lse) with lse (B, H, Sq) when return_lse."""
    (q, k, v), kind = _qkv(q, k, v, "attention")
    b, h, sq, d = q.shape
    sk = k.shape[2]
    m = _mask(mask, q.shape, sk, "attention", device_of(q))
    causal, scale, dropout_p, seed = _options(causal, scale, dropout_p, seed, d, "attention")
    if device_of(q) != "cpu":
        o, lse = _attention_cuda(q, k, v, m, causal, scale, dropout_p, seed, out, kind, stream)
        return (o, lse) if return_lse else o
    target, result = cpu_output(out, q.shape, (q, k, v))
    lse = np.empty((b, h, sq), np.float32)
    if d == 0 and b * h * sq:  # no features: every score is the mask alone
        s = np.zeros((b, h, sq, sk), np.float32) + (0 if m is None else m)
        if causal:
            s = np.where(np.tril(np.ones((sq, sk), bool)), s, -np.inf)
        with np.errstate(divide="ignore"):
            lse[...] = np.log(np.exp(s).sum(axis=-1))
    else:
        _cpu.attention_forward(q, k, v, m, scale, causal, dropout_p, seed, target, lse)
    o = finish_output(target, result, out, kind)
    return (o, to_kind(lse, kind)) if return_lse else o


def attention_backward(grad_out, q, k, v, out, lse, *, mask=None, causal=False, scale=None, dropout_p=0.0,
                       seed=None, stream=None):
    """(dq, dk, dv) of attention(q, k, v, ...) for the upstream gradient grad_out, given the forward's
    out and lse (attention(..., return_lse=True)) and the same mask, causal, scale, dropout_p and
    seed."""
    (q, k, v), kind = _qkv(q, k, v, "attention_backward")
    b, h, sq, d = q.shape
    sk = k.shape[2]
    device, xp = device_of(q), array_module(q)
    arrays = {}
    for name, a, shape in (("grad_out", grad_out, q.shape), ("out", out, q.shape), ("lse", lse, (b, h, sq))):
        a, _ = float32_input(a, name)
        check_dtype(a, name)
        if tuple(a.shape) != tuple(shape):
            raise ValueError(f"attention_backward: {name} must have shape {tuple(shape)}, got {tuple(a.shape)}")
        if device_of(a) != device:
            raise ValueError(f"attention_backward: {name} is on {device_of(a)} but q is on {device}")
        arrays[name] = xp.ascontiguousarray(a)
    m = _mask(mask, q.shape, sk, "attention_backward", device)
    if seed is None and not (isinstance(dropout_p, numbers.Real) and dropout_p == 0):
        raise ValueError("attention_backward: dropout needs the seed the forward pass used")
    causal, scale, dropout_p, seed = _options(causal, scale, dropout_p, seed, d, "attention_backward")
    if device != "cpu":
        with _backend.on_device(q):
            dq, dk, dv = xp.empty_like(q), xp.empty_like(k), xp.empty_like(v)
            work = xp.empty(b * h * sq, np.float32)
        if d and b * h and sq + sk:
            _cuda_call("attention_backward", [q, k, v, m, arrays["out"], arrays["lse"], arrays["grad_out"], dq, dk, dv,
                                              work], (7, 8, 9, 10), stream, _mask_strides(m), b, h, sq, sk, d, scale,
                       causal, dropout_p, seed)
        return tuple(to_kind(g, kind) for g in (dq, dk, dv))
    dq, dk, dv = np.empty_like(q), np.empty_like(k), np.empty_like(v)
    _cpu.attention_backward(q, k, v, m, scale, causal, dropout_p, seed, arrays["out"], arrays["lse"],
                            arrays["grad_out"], dq, dk, dv)
    return tuple(to_kind(g, kind) for g in (dq, dk, dv))


# --- the other per-token kernels of a Transformer block ------------------------------------------------


def layer_norm(x, weight=None, bias=None, eps: float = 1e-5, *, return_stats: bool = False, out=None, stream=None):
    """LayerNorm over the last axis of float32 x: (x - mean) / sqrt(var + eps) * weight + bias
    (biased variance, as PyTorch; weight and bias (n,) or None). With return_stats, returns
    (y, mean, rstd), the per-row statistics (x.shape[:-1]) that layer_norm_backward takes."""
    x, kind = float32_input(x, "x")
    if x.ndim < 1:
        raise ValueError("layer_norm: x must have at least one dimension")
    device, xp = device_of(x), array_module(x)
    n = x.shape[-1]
    params = []
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None:
            p, _ = float32_input(p, name)
            if p.shape != (n,):
                raise ValueError(f"layer_norm: {name} must have shape ({n},) for x of shape {x.shape}, got {p.shape}")
            if device_of(p) != device:
                raise ValueError(f"layer_norm: {name} is on {device_of(p)} but x is on {device}")
            p = xp.ascontiguousarray(p)
        params.append(p)
    eps = real(eps, "eps", "layer_norm", minimum=0.0)
    x = xp.ascontiguousarray(x)
    if device != "cpu":
        target, result = _cuda_output(out, x.shape, x, [x])
        with _backend.on_device(x):
            mean, rstd = xp.empty(x.shape[:-1], np.float32), xp.empty(x.shape[:-1], np.float32)
        rows = int(np.prod(x.shape[:-1], dtype=np.int64))
        if rows and n == 0:
            mean[...], rstd[...] = np.float32(np.nan), np.float32(np.nan)
        elif rows:
            _cuda_call("layer_norm_forward", [x, params[0], params[1], target, mean, rstd], (3, 4, 5), stream, rows, n,
                       eps)
        y = finish_output(target, result, out, kind)
        return (y, to_kind(mean, kind), to_kind(rstd, kind)) if return_stats else y
    target, result = cpu_output(out, x.shape, (x,))
    mean = np.empty(x.shape[:-1], np.float32)
    rstd = np.empty(x.shape[:-1], np.float32)
    _cpu.layer_norm_forward(x, params[0], params[1], eps, target, mean.reshape(-1), rstd.reshape(-1))
    y = finish_output(target, result, out, kind)
    return (y, to_kind(mean, kind), to_kind(rstd, kind)) if return_stats else y


def layer_norm_backward(grad_out, x, mean, rstd, weight=None, *, param_grads: bool = True, stream=None):
    """(dx, dweight, dbias) of layer_norm for the upstream gradient; dweight is None without a weight,
    and both are None with param_grads=False. Parameter gradients are summed over rows in a fixed
    order (the same bits at any thread count)."""
    arrays = {}
    g0, kind = float32_input(grad_out, "grad_out")
    device, xp = device_of(g0), array_module(g0)
    for name, a in (("grad_out", grad_out), ("x", x), ("mean", mean), ("rstd", rstd)):
        a, _ = float32_input(a, name)
        if device_of(a) != device:
            raise ValueError(f"layer_norm_backward: {name} is on {device_of(a)} but grad_out is on {device}")
        arrays[name] = xp.ascontiguousarray(a)
    x, g = arrays["x"], arrays["grad_out"]
    if g.shape != x.shape or arrays["mean"].shape != x.shape[:-1] or arrays["rstd"].shape != x.shape[:-1]:
        raise ValueError(f"layer_norm_backward: expected grad_out {x.shape} and mean, rstd {x.shape[:-1]}, got "
                         f"{g.shape}, {arrays['mean'].shape}, {arrays['rstd'].shape}")
    n = x.shape[-1]
    w = None
    if weight is not None:
        w, _ = float32_input(weight, "weight")
        if w.shape != (n,):
            raise ValueError(f"layer_norm_backward: weight must have shape ({n},), got {w.shape}")
        if device_of(w) != device:
            raise ValueError(f"layer_norm_backward: weight is on {device_of(w)} but grad_out is on {device}")
        w = xp.ascontiguousarray(w)
    with _backend.on_device(g):
        dx = xp.empty_like(x)
        dw = xp.empty(n, np.float32) if param_grads and w is not None else None
        db = xp.empty(n, np.float32) if param_grads else None
    if device != "cpu":
        rows = int(np.prod(x.shape[:-1], dtype=np.int64))
        if n:
            with _backend.device_call([g, x, arrays["mean"], arrays["rstd"], w, dx, dw, db], written=(5, 6, 7),
                                      stream=stream) as call:
                work = 0
                if dw is not None or db is not None:  # the per-chunk partial sums of dw, db
                    with _backend.on_device(g):
                        buffer = xp.empty(call.module.layer_norm_backward_workspace(rows, n), np.float32)
                    work = _backend.device_pointer(buffer)
                call.module.layer_norm_backward(*call.pointers, work, rows, n, call.stream, call.device)
        return tuple(None if a is None else to_kind(a, kind) for a in (dx, dw, db))
    _cpu.layer_norm_backward(g, x, arrays["mean"].reshape(-1), arrays["rstd"].reshape(-1), w, dx, dw, db)
    return tuple(None if a is None else to_kind(a, kind) for a in (dx, dw, db))


def embedding_backward(indices, grad_out, num_embeddings: int, padding_idx: int | None = None, *, stream=None):
    """The gradient (num_embeddings, dim) of weight[indices] for grad_out (*indices.shape, dim): the
    rows of grad_out summed by index, in a fixed order (deterministic); padding_idx's row is 0. On a
    CUDA device the indices may be on the host or the device (their range check reads two
    numbers back)."""
    g, kind = float32_input(grad_out, "grad_out")
    if device_of(g) != "cpu":
        return _embedding_backward_cuda(indices, g, kind, num_embeddings, padding_idx, stream)
    idx = np.asarray(indices)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"indices: expected integers, got dtype {idx.dtype}")
    if g.shape[:-1] != idx.shape:
        raise ValueError(f"embedding_backward: grad_out {g.shape} does not match indices {idx.shape} + (dim,)")
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= num_embeddings):
        raise ValueError(f"embedding_backward: indices must be in [0, {num_embeddings})")
    dw = np.empty((num_embeddings, g.shape[-1]), np.float32)
    _cpu.embedding_backward(np.ascontiguousarray(idx.reshape(-1), np.int64),
                            np.ascontiguousarray(g.reshape(-1, g.shape[-1])),
                            -1 if padding_idx is None else int(padding_idx), dw)
    return to_kind(dw, kind)


def _embedding_backward_cuda(indices, g, kind, num_embeddings: int, padding_idx, stream):
    xp = array_module(g)
    idx = native(indices, "indices")[0] if hasattr(indices, "dtype") else np.asarray(indices)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"indices: expected integers, got dtype {idx.dtype}")
    if tuple(g.shape[:-1]) != tuple(idx.shape):
        raise ValueError(f"embedding_backward: grad_out {g.shape} does not match indices {idx.shape} + (dim,)")
    with _backend.on_device(g):
        idx = xp.ascontiguousarray(xp.asarray(idx).reshape(-1), dtype=np.int64)
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= num_embeddings):
            raise ValueError(f"embedding_backward: indices must be in [0, {num_embeddings})")
        dim = g.shape[-1]
        g = xp.ascontiguousarray(g.reshape(-1, dim))
        dw = xp.empty((num_embeddings, dim), np.float32)
    if num_embeddings * dim:
        _cuda_call("embedding_backward", [idx, g, dw], (2,), stream, idx.size, dim, num_embeddings,
                   -1 if padding_idx is None else int(padding_idx))
    return to_kind(dw, kind)
