"""int8 inference modules (built by fusegrad.quantization) and the QuantizedTensor they pass."""
from . import dynamic
from .modules import Conv2d, DynamicLinear, Linear, MaxPool2d, quantize_weight
from .tensor import QuantizedTensor, choose_qparams, quantize

__all__ = ["dynamic", "Conv2d", "DynamicLinear", "Linear", "MaxPool2d", "QuantizedTensor", "choose_qparams", "quantize",
           "quantize_weight"]
