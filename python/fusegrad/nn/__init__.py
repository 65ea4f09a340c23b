"""Neural-network modules, PyTorch's names and conventions (images NHWC, conv weights HWIO)."""
from . import functional, init, utils
from .layers import (
    GELU,
    Dropout,
    Flatten,
    Identity,
    LeakyReLU,
    Linear,
    LogSoftmax,
    ModuleList,
    ReLU,
    Sequential,
    Sigmoid,
    SiLU,
    Softmax,
    Tanh,
)
from .loss import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, L1Loss, MSELoss, NLLLoss
from .module import Module, Parameter

__all__ = [
    "Module", "Parameter", "Sequential", "ModuleList", "Identity", "Linear", "ReLU", "LeakyReLU", "GELU",
    "Sigmoid", "Tanh", "SiLU", "Softmax", "LogSoftmax", "Flatten", "Dropout", "CrossEntropyLoss", "NLLLoss",
    "MSELoss", "L1Loss", "BCELoss", "BCEWithLogitsLoss", "functional", "init", "utils",
]
