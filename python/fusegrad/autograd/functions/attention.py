"""Scaled dot-product attention: one Function on the flash-attention kernels (ops.attention),
which saves the output and the log-sum-exp so backward recomputes the probabilities."""
from __future__ import annotations

import numpy as np

from ... import ops
from ..._backend import array_module, on_device
from ..engine import Function


class Attention(Function):
    """softmax(q k^T * scale + mask) v, with optional causal masking and in-kernel dropout; the
    mask (an array, not a tensor) gets no gradient."""

    def forward(self, q, k, v, mask=None, causal=False, scale=None, dropout_p=0.0, seed=None):
        if dropout_p and seed is None:
            seed = ops.attention_draw_seed()
        out, lse = ops.attention(q, k, v, mask=mask, causal=causal, scale=scale, dropout_p=dropout_p, seed=seed,
                                 return_lse=True)
        self.save(q, k, v, out, lse, mask, causal, scale, dropout_p, seed)
        return out

    def backward(self, g):
        q, k, v, out, lse, mask, causal, scale, dropout_p, seed = self.saved
        return ops.attention_backward(g, q, k, v, out, lse, mask=mask, causal=causal, scale=scale,
                                      dropout_p=dropout_p, seed=seed)


def _heads(x, heads: int):
    """(N, L, E) -> contiguous (N, heads, L, E / heads)."""
    n, length, e = x.shape
    return array_module(x).ascontiguousarray(x.reshape(n, length, heads, e // heads).transpose(0, 2, 1, 3))


def _merge(x):
    """(N, H, L, hd) -> contiguous (N, L, H * hd)."""
    n, h, length, hd = x.shape
    return array_module(x).ascontiguousarray(x.transpose(0, 2, 1, 3)).reshape(n, length, h * hd)


class MultiHeadAttention(Function):
    """Attention of the projected q (N, L, E) against k, v (N, S, E), split into `heads` heads and
    merged back to (N, L, E); or, with packed=True, of one tensor qkv (N, L, 3E) holding the
    three projections side by side (the self-attention in-projection's output), whose gradient is
    then one (N, L, 3E) array. The head split and merge are copies inside this one op."""

    def forward(self, *arrays, heads=1, packed=False, mask=None, causal=False, dropout_p=0.0, seed=None):
        if packed:
            qkv = arrays[0]
            n, length, e3 = qkv.shape
            e = e3 // 3
            split = qkv.reshape(n, length, 3, heads, e // heads).transpose(2, 0, 3, 1, 4)
            q, k, v = (array_module(qkv).ascontiguousarray(split[i]) for i in range(3))
        else:
            q, k, v = (_heads(a, heads) for a in arrays)
        if dropout_p and seed is None:
            seed = ops.attention_draw_seed()
        out, lse = ops.attention(q, k, v, mask=mask, causal=causal, dropout_p=dropout_p, seed=seed, return_lse=True)
        self.save(q, k, v, out, lse, mask, causal, dropout_p, seed, packed)
        return _merge(out)

    def backward(self, g):
        q, k, v, out, lse, mask, causal, dropout_p, seed, packed = self.saved
        dq, dk, dv = ops.attention_backward(_heads(g, q.shape[1]), q, k, v, out, lse, mask=mask, causal=causal,
                                            dropout_p=dropout_p, seed=seed)
        if packed:
            n, h, length, hd = q.shape
            with on_device(q):
                grad = array_module(q).empty((n, length, 3, h, hd), np.float32)
            for i, d in enumerate((dq, dk, dv)):
                grad[:, :, i] = d.transpose(0, 2, 1, 3)
            return (grad.reshape(n, length, 3 * h * hd),)
        return _merge(dq), _merge(dk), _merge(dv)


class LayerNorm(Function):
    """LayerNorm over the last axis on the fused kernels: forward keeps each row's mean and rstd,
    backward is one pass for dx and deterministic row sums for the weight and bias."""

    def forward(self, x, weight=None, bias=None, eps=1e-5):
        y, mean, rstd = ops.layer_norm(x, weight, bias, eps, return_stats=True)
        self.save(x, mean, rstd, weight, bias is not None)
        return y

    def backward(self, g):
        x, mean, rstd, weight, has_bias = self.saved
        dx, dw, db = ops.layer_norm_backward(g, x, mean, rstd, weight, param_grads=any(self.needs_grad[1:]))
        grads = (dx,) + ((dw,) if weight is not None else ()) + ((db,) if has_bias else ())
        return grads


class Embedding(Function):
    """weight[indices] (a row gather), and its backward as a deterministic scatter-add kernel."""

    def forward(self, weight, indices=None, padding_idx=None):
        self.save(indices, weight.shape[0], padding_idx)
        return weight[indices]

    def backward(self, g):
        indices, rows, padding_idx = self.saved
        return (ops.embedding_backward(indices, g, rows, padding_idx),)
