"""QuantizedTensor: uint8 activations with one scale and zero point, passed between int8 layers.

real ≈ scale · (q − zero_point), q in [0, 255]. The int8 layers of a converted model hand these to
each other, so a quantized CNN runs conv → pool → conv → linear without returning to float32
between layers (max-pooling and flattening act on q directly: the mapping is monotone). The first
int8 layer quantizes its float input with the scale calibrated for it; a layer whose consumer is
not an int8 layer returns float32.
"""
from __future__ import annotations

import numpy as np

from ... import ops
from ...tensor import Tensor

QMIN, QMAX = 0, 255  # uint8 activations (the A operand of vpdpbusd / tdpbusd is unsigned)


def choose_qparams(low: float, high: float) -> tuple[float, int]:
    """(scale, zero_point) mapping [low, high] ∪ {0} onto [0, 255], so that real 0 (padding, ReLU's
    floor) is exactly representable."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError(f"cannot quantize the range [{low}, {high}]: it is not finite")
    scale = (high - low) / (QMAX - QMIN)
    if scale == 0.0:  # an all-zero range: any scale represents it
        return 1.0, 0
    zero_point = int(np.clip(round(QMIN - low / scale), QMIN, QMAX))
    return float(scale), zero_point


def quantize(x, scale: float, zero_point: int) -> np.ndarray:
    """uint8 q = clamp(round_half_even(x / scale) + zero_point) of a float32 array (or Tensor)."""
    data = x.data if isinstance(x, Tensor) else x
    return ops.quantize_uint8(np.asarray(data, np.float32) if isinstance(data, (list, tuple)) else data, scale,
                              zero_point)


class QuantizedTensor:
    """uint8 data with its (scale, zero_point). Not a Tensor: it carries no gradient."""

    __slots__ = ("data", "scale", "zero_point")

    def __init__(self, data: np.ndarray, scale: float, zero_point: int):
        if data.dtype != np.uint8:
            raise TypeError(f"QuantizedTensor: data must be uint8, got {data.dtype}")
        self.data, self.scale, self.zero_point = data, float(scale), int(zero_point)

    @classmethod
    def from_float(cls, x, scale: float, zero_point: int) -> QuantizedTensor:
        return cls(quantize(x, scale, zero_point), scale, zero_point)

    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    def dequantize(self) -> Tensor:
        real = (self.data.astype(np.float32) - np.float32(self.zero_point)) * np.float32(self.scale)
        return Tensor(real)

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> QuantizedTensor:
        shape = self.data.shape
        start, end = start_dim % len(shape), end_dim % len(shape)
        merged = int(np.prod(shape[start:end + 1]))
        return QuantizedTensor(self.data.reshape(shape[:start] + (merged,) + shape[end + 1:]),
                               self.scale, self.zero_point)

    def __repr__(self):
        return f"QuantizedTensor(shape={self.shape}, scale={self.scale:.6g}, zero_point={self.zero_point})"
