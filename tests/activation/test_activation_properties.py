"""Property test: every activation and its backward on random float32 data, extremes included,
against float64 formulas (seeded, bounded)."""
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fusegrad.ops import activation

SLOPE = 0.05
PHI = np.vectorize(lambda v: 0.5 * math.erfc(-v / math.sqrt(2)), otypes=[np.float64])


def sigmoid(x):
    return 0.5 * (1 + np.tanh(x / 2))


def forward(kind, x):
    if kind == "relu":
        return np.maximum(x, 0)
    if kind == "leaky_relu":
        return np.where(x > 0, x, SLOPE * x)
    if kind == "sigmoid":
        return sigmoid(x)
    if kind == "tanh":
        return np.tanh(x)
    if kind == "silu":
        return x * sigmoid(x)
    if kind == "gelu":
        return x * PHI(x)
    assert kind == "gelu_tanh"
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def derivative(kind, x):
    h = 1e-6  # central differences of the float64 formula
    return (forward(kind, x + h) - forward(kind, x - h)) / (2 * h)


floats = st.floats(-60, 60, width=32, allow_subnormal=False)


@settings(max_examples=500)
@given(kind=st.sampled_from(activation.NAMES), x=hnp.arrays(np.float32, st.integers(0, 70), elements=floats),
       g=st.floats(-3, 3, width=32))
def test_forward_and_backward_match_float64(kind, x, g):
    param = SLOPE if activation.TABLE[kind]["takes_param"] else 0.0
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(activation.forward(kind, x, param=param), forward(kind, x64), rtol=2e-5, atol=2e-6)
    saved = activation.forward(kind, x, param=param) if kind in activation.BACKWARD_FROM_OUTPUT else x
    grad = np.full_like(x, g)
    away_from_kink = np.abs(x64) > 1e-3  # relu-like kinks have no derivative at 0
    got = activation.backward(kind, grad, saved, param=param)
    np.testing.assert_allclose(got[away_from_kink], (g * derivative(kind, x64))[away_from_kink], rtol=1e-4, atol=2e-5)
