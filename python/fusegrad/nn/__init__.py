"""Neural-network modules, PyTorch's names and conventions (images NHWC, conv weights HWIO)."""
from . import functional, init, utils
from .conv import AvgPool2d, Conv2d, GlobalAvgPool2d, MaxPool2d
from .layers import (
    GELU,
    Embedding,
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
from .normalization import BatchNorm1d, BatchNorm2d, LayerNorm
from .rnn import GRU, LSTM

__all__ = [
    "Module", "Parameter", "Sequential", "ModuleList", "Identity", "Linear", "ReLU", "LeakyReLU", "GELU",
    "Sigmoid", "Tanh", "SiLU", "Softmax", "LogSoftmax", "Flatten", "Dropout", "CrossEntropyLoss", "NLLLoss",
    "Conv2d", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "BatchNorm1d", "BatchNorm2d", "LayerNorm", "Embedding",
    "LSTM", "GRU", "MSELoss", "L1Loss", "BCELoss", "BCEWithLogitsLoss", "functional", "init", "utils",
]
