"""MultiheadAttention, with PyTorch's parameter names (in_proj_weight, in_proj_bias, out_proj) and
call signature, on the flash-attention kernels: self-attention runs as one in-projection GEMM,
one attention op over all heads (ops.attention) and the out-projection GEMM."""
from __future__ import annotations

import numpy as np

from ..._backend import array_module, device_of, is_cupy, to_device
from ...tensor import Tensor
from .. import functional as F
from .. import init
from .linear import Linear
from .module import Module, Parameter


def _array(x):
    return x.data if isinstance(x, Tensor) else x


def _host_or_device(x):
    """x as a NumPy or CUDA array (lists become NumPy)."""
    x = _array(x)
    return x if isinstance(x, np.ndarray) or is_cupy(x) else np.asarray(x)


def _additive(mask, true_means_masked: bool):
    """A PyTorch MHA mask as an additive float32 array (bool: True = not allowed)."""
    if mask.dtype == np.bool_:
        blocked = mask if true_means_masked else ~mask
        return array_module(mask).where(blocked, np.float32(-np.inf), np.float32(0)).astype(np.float32)
    if mask.dtype != np.float32:
        raise TypeError(f"MultiheadAttention: masks must be bool or float32, got {mask.dtype}")
    return mask


def attention_mask(n: int, heads: int, length: int, source: int, key_padding_mask=None, attn_mask=None,
                   device: str | None = None):
    """The combined mask for ops.attention (additive float32, broadcasting against
    (N, heads, L, S)) of PyTorch's key_padding_mask (N, S) and attn_mask ((L, S) or (N*heads, L, S)),
    both of which are True (or -inf) where attending is *not* allowed; None when neither is given.
    With `device`, the masks are moved there first (the attention kernels take the mask on q's device)."""
    mask = None
    move = (lambda a: a) if device is None else (lambda a: to_device(a, device) if device_of(a) != device else a)
    if key_padding_mask is not None:
        kpm = move(_host_or_device(key_padding_mask))
        if kpm.shape != (n, source):
            raise ValueError(f"key_padding_mask: expected shape (N, S) = {(n, source)}, got {kpm.shape}")
        mask = _additive(kpm, True)[:, None, None, :]
    if attn_mask is not None:
        am = move(_host_or_device(attn_mask))
        if am.shape == (length, source):
            am = am[None, None]
        elif am.shape == (n * heads, length, source):
            am = am.reshape(n, heads, length, source)
        else:
            raise ValueError(f"attn_mask: expected shape (L, S) = {(length, source)} or (N*num_heads, L, S) = "
                             f"{(n * heads, length, source)}, got {am.shape}")
        am = _additive(am, True)
        mask = am if mask is None else mask + am
    return mask


class MultiheadAttention(Module):
    """Multi-head attention as torch.nn.MultiheadAttention (batch_first defaults to True here).
    forward returns (attn_output, attn_weights), the weights only with need_weights=True (averaged
    over heads unless average_attn_weights=False; computed aside, no gradient)."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 batch_first: bool = True):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"MultiheadAttention: embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads, self.dropout, self.batch_first = embed_dim, num_heads, dropout, batch_first
        self.head_dim = embed_dim // num_heads
        self.in_proj_weight = Parameter(np.empty((3 * embed_dim, embed_dim), np.float32))
        if bias:
            self.in_proj_bias = Parameter(np.zeros(3 * embed_dim, np.float32))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias)
        init.xavier_uniform_(self.in_proj_weight)
        if bias:
            init.zeros_(self.out_proj.bias)

    def forward(self, query, key, value, key_padding_mask=None, need_weights: bool = False, attn_mask=None,
                average_attn_weights: bool = True, is_causal: bool = False):
        if not self.batch_first:
            query, key, value = (x.permute(1, 0, 2) for x in (query, key, value))
        n, length, e = query.shape
        if e != self.embed_dim or key.shape[-1] != e or value.shape[-1] != e or key.shape[:2] != value.shape[:2]:
            raise ValueError(f"MultiheadAttention({self.embed_dim}): got query {query.shape}, key {key.shape}, "
                             f"value {value.shape}")
        source = key.shape[1]
        mask = attention_mask(n, self.num_heads, length, source, key_padding_mask, attn_mask,
                              device_of(_array(query)))
        causal = bool(is_causal) and attn_mask is None
        p = self.dropout if self.training else 0.0
        w, b = self.in_proj_weight, self.in_proj_bias
        if query is key and key is value:
            qkv = F.linear(query, w, b)
            out = F.multi_head_attention(qkv, None, None, self.num_heads, mask=mask, causal=causal, dropout_p=p)
        else:
            q, k, v = (F.linear(x, w[i * e:(i + 1) * e], None if b is None else b[i * e:(i + 1) * e])
                       for i, x in enumerate((query, key, value)))
            out = F.multi_head_attention(q, k, v, self.num_heads, mask=mask, causal=causal, dropout_p=p)
        out = self.out_proj(out)
        if not self.batch_first:
            out = out.permute(1, 0, 2)
        weights = None
        if need_weights:
            weights = self._weights(query, key, mask, causal, average_attn_weights)
        return out, weights

    def _weights(self, query, key, mask, causal, average):
        """softmax(q k^T / sqrt(hd) + mask) per head, from the projections (no gradient)."""
        e, h = self.embed_dim, self.num_heads
        w = self.in_proj_weight.data
        xp = array_module(w)
        b = self.in_proj_bias.data if self.in_proj_bias is not None else xp.zeros(3 * e, np.float32)
        q = _array(query) @ w[:e].T + b[:e]
        k = _array(key) @ w[e:2 * e].T + b[e:2 * e]
        n, length, source = q.shape[0], q.shape[1], k.shape[1]
        q = q.reshape(n, length, h, -1).transpose(0, 2, 1, 3)
        k = k.reshape(n, source, h, -1).transpose(0, 2, 1, 3)
        s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(self.head_dim)
        if mask is not None:
            s = s + mask
        if causal:
            s = xp.where(xp.tril(xp.ones((length, source), bool)), s, -np.inf)
        s = xp.exp(s - s.max(axis=-1, keepdims=True))
        s = s / s.sum(axis=-1, keepdims=True)
        return Tensor._wrap((s.mean(axis=1) if average else s).astype(np.float32))

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}"
