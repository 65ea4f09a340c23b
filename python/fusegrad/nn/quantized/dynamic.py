"""PyTorch's spelling of the dynamically quantized Linear: nn.quantized.dynamic.Linear."""
from .modules import DynamicLinear as Linear

__all__ = ["Linear"]
