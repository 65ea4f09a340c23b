"""Dropout: zero each element with probability p and scale the rest by 1 / (1 - p)."""
from __future__ import annotations

import numpy as np

from ..._backend import array_module, on_host
from ...random import default_generator
from ..engine import Function


class Dropout(Function):
    def forward(self, x, p=0.5):
        keep = default_generator().random(x.shape) >= p
        mask = (keep / (1.0 - p)).astype(x.dtype)
        if not on_host(x):
            mask = array_module(x).asarray(mask)
        self.save(mask)
        return x * mask

    def backward(self, g):
        return (g * self.saved[0],)
