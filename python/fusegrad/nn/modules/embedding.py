"""Embedding: a lookup table of rows; for float32 weights, on the CPU and on CUDA devices, its
backward is the deterministic scatter-add kernel (ops.embedding_backward)."""
from __future__ import annotations

import numpy as np

from ..._backend import device_of, is_cupy, to_device
from ...autograd.functions import attention as attention_fn
from ...tensor import Tensor
from .. import init
from .module import Module, Parameter


class Embedding(Module):
    """A lookup table: integer indices (any shape) -> rows of weight (num_embeddings, embedding_dim)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.weight = Parameter(np.empty((num_embeddings, embedding_dim), np.float32))
        init.normal_(self.weight)
        if padding_idx is not None:
            self.weight.data[padding_idx] = 0

    def forward(self, indices):
        idx = indices.data if isinstance(indices, Tensor) else indices
        idx = idx if isinstance(idx, np.ndarray) or is_cupy(idx) else np.asarray(idx)
        if device_of(idx) != device_of(self.weight.data):  # e.g. host positions for a table on a GPU
            idx = to_device(idx, device_of(self.weight.data))
        if idx.dtype.kind not in "iu":
            raise TypeError(f"Embedding: indices must be integers, got dtype {idx.dtype}")
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= self.num_embeddings):
            raise ValueError(f"Embedding: indices must be in [0, {self.num_embeddings}), got values in "
                             f"[{int(idx.min())}, {int(idx.max())}]")
        if self.weight.dtype == np.float32:  # the scatter-add kernel backward
            pad = None if self.padding_idx is None else self.padding_idx % self.num_embeddings
            return attention_fn.Embedding.apply(self.weight, indices=idx, padding_idx=pad)
        out = self.weight[idx]
        if self.padding_idx is not None and self.weight.requires_grad:
            keep = (idx != self.padding_idx)[..., None].astype(np.float32)  # no gradient to the padding row
            out = out * Tensor(keep)
        return out

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"
