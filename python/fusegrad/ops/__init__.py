"""The kernel API: plain functions on raw arrays (NumPy in, NumPy out; CuPy in, CuPy out)."""
from .activation import (
    gelu,
    gelu_backward,
    leaky_relu,
    leaky_relu_backward,
    relu,
    relu_backward,
    sigmoid,
    sigmoid_backward,
    silu,
    silu_backward,
    tanh,
    tanh_backward,
)
from .optim import adam_step, clip_grad_norm, grad_norm, sgd_step

__all__ = [
    "relu", "leaky_relu", "sigmoid", "tanh", "silu", "gelu",
    "relu_backward", "leaky_relu_backward", "sigmoid_backward", "tanh_backward", "silu_backward",
    "gelu_backward",
    "adam_step", "sgd_step", "clip_grad_norm", "grad_norm",
]
