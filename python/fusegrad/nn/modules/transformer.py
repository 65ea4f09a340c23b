"""TransformerEncoderLayer and TransformerEncoder as in PyTorch (same sub-module names, so a
PyTorch state_dict converted to NumPy loads as is); batch_first defaults to True here."""
from __future__ import annotations

import copy

from ...ops.activation import NAMES
from .attention import MultiheadAttention
from .container import ModuleList
from .dropout import Dropout
from .linear import Linear
from .module import Module
from .normalization import LayerNorm


class TransformerEncoderLayer(Module):
    """Self-attention and a feed-forward block (linear1 -> activation -> linear2), each with a
    residual connection and a LayerNorm, after the residual (norm_first=False, the original
    Transformer's post-norm) or before the block (norm_first=True). activation: PyTorch's "relu"
    (applied in linear1's GEMM store) or "gelu", or any other name of ops.activation.NAMES."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation: str = "relu", layer_norm_eps: float = 1e-5, batch_first: bool = True,
                 norm_first: bool = False, bias: bool = True):
        super().__init__()
        if activation not in NAMES:
            raise ValueError(f"TransformerEncoderLayer: activation must be one of {NAMES}, got {activation!r}")
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=True)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias)
        self.norm_first, self.batch_first, self.activation = norm_first, batch_first, activation
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)

    def _sa(self, x, src_mask, key_padding_mask, is_causal):
        out, _ = self.self_attn(x, x, x, key_padding_mask=key_padding_mask, attn_mask=src_mask, is_causal=is_causal)
        return self.dropout1(out)

    def _ff(self, x):
        return self.dropout2(self.linear2(self.dropout(self.linear1(x, activation=self.activation))))

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal: bool = False):
        x = src if self.batch_first else src.permute(1, 0, 2)
        if self.norm_first:
            x = x + self._sa(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            x = x + self._ff(self.norm2(x))
        else:
            x = self.norm1(x + self._sa(x, src_mask, src_key_padding_mask, is_causal))
            x = self.norm2(x + self._ff(x))
        return x if self.batch_first else x.permute(1, 0, 2)


class TransformerEncoder(Module):
    """num_layers copies of encoder_layer (layers.0, layers.1, ...), then the optional norm."""

    def __init__(self, encoder_layer: TransformerEncoderLayer, num_layers: int, norm: Module | None = None):
        super().__init__()
        self.layers = ModuleList([copy.deepcopy(encoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers
        self.norm = norm

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal: bool = False):
        x = src
        for layer in self.layers:
            x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=is_causal)
        return self.norm(x) if self.norm is not None else x
