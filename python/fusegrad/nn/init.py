"""Parameter initialisation, in place, with PyTorch's names and formulas. All draws come from
fusegrad's generator (fusegrad.manual_seed)."""
from __future__ import annotations

import math

import numpy as np

from .._backend import to_device
from ..random import default_generator
from ..tensor import Tensor


def _fans(t: Tensor):
    """(fan_in, fan_out). Linear weights are (out, in); conv weights are HWIO (KH, KW, in, out)."""
    shape = t.shape
    if len(shape) < 2:
        raise ValueError(f"fan in/out need a tensor of at least 2 dimensions, got shape {shape}")
    if len(shape) == 2:
        return shape[1], shape[0]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def _fill(t: Tensor, values: np.ndarray) -> Tensor:
    t.data[...] = to_device(values.astype(np.float32), t.device)
    return t


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    if nonlinearity in ("linear", "sigmoid", "conv2d"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"unknown nonlinearity {nonlinearity!r}")


def uniform_(t: Tensor, a: float = 0.0, b: float = 1.0) -> Tensor:
    return _fill(t, default_generator().uniform(a, b, t.shape))


def normal_(t: Tensor, mean: float = 0.0, std: float = 1.0) -> Tensor:
    return _fill(t, default_generator().normal(mean, std, t.shape))


def zeros_(t: Tensor) -> Tensor:
    t.data[...] = 0
    return t


def ones_(t: Tensor) -> Tensor:
    t.data[...] = 1
    return t


def constant_(t: Tensor, value: float) -> Tensor:
    t.data[...] = value
    return t


def xavier_uniform_(t: Tensor, gain: float = 1.0) -> Tensor:
    fan_in, fan_out = _fans(t)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(t, -bound, bound)


def xavier_normal_(t: Tensor, gain: float = 1.0) -> Tensor:
    fan_in, fan_out = _fans(t)
    return normal_(t, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def _kaiming_std(t, a, mode, nonlinearity):
    fan_in, fan_out = _fans(t)
    fan = {"fan_in": fan_in, "fan_out": fan_out}.get(mode)
    if fan is None:
        raise ValueError(f"mode: expected 'fan_in' or 'fan_out', got {mode!r}")
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform_(t: Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu") -> Tensor:
    bound = math.sqrt(3.0) * _kaiming_std(t, a, mode, nonlinearity)
    return uniform_(t, -bound, bound)


def kaiming_normal_(t: Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu") -> Tensor:
    return normal_(t, 0.0, _kaiming_std(t, a, mode, nonlinearity))
