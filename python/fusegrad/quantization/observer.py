"""Observers: what a layer's input ranged over during calibration, and the uint8 quantization of it."""
from __future__ import annotations

import numpy as np

from ..nn.quantized.tensor import choose_qparams
from ..tensor import Tensor


class MinMaxObserver:
    """A forward pre-hook keeping the running min and max of the module's first input. Min/max
    (not a percentile) because the uint8 range then never clips a value seen in calibration, and
    a CNN's post-ReLU activations have no long tails for a percentile to cut."""

    def __init__(self):
        self.low, self.high = np.inf, -np.inf

    @property
    def calibrated(self) -> bool:
        return self.low <= self.high

    def __call__(self, module, args):
        x = args[0]
        data = x.data if isinstance(x, Tensor) else x
        if data.size:
            self.low = min(self.low, float(data.min()))
            self.high = max(self.high, float(data.max()))

    def qparams(self) -> tuple[float, int]:
        """(scale, zero_point) of the observed range (of [0, 0] before any data)."""
        return choose_qparams(self.low, self.high) if self.calibrated else (1.0, 0)

    def __repr__(self):
        return f"MinMaxObserver(low={self.low}, high={self.high})"
