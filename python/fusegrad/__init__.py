"""fusegrad: a deep-learning engine whose hot paths are compiled C++/CUDA kernels."""
import builtins as _builtins

from . import _backend, autograd, cuda, data, models, nn, ops, optim, quantization, train
from ._cpu import __version__
from ._info import info
from .autograd import autocast, enable_grad, is_autocast_enabled, is_grad_enabled, no_grad
from .io import load, save
from .random import manual_seed
from ._tensor import functional as _functional
from ._tensor.functional import METHODS as _METHODS
from ._tensor.einsum import einsum
from ._tensor.functional import as_tensor, is_tensor, nonzero, numel, where
from ._tensor.promote import DTYPE_NAMES as _DTYPE_NAMES
from ._tensor.reduce import MaxResult, MinResult
from .tensor import (
    Tensor,
    arange,
    cat,
    concatenate,
    eye,
    from_dlpack,
    full,
    full_like,
    linspace,
    maximum,
    minimum,
    ones,
    ones_like,
    rand,
    randn,
    stack,
    tensor,
    zeros,
    zeros_like,
)

# torch.X function forms of the tensor methods (fusegrad.add, fusegrad.sin, fusegrad.gather, ...)
globals().update({name: getattr(_functional, name) for name in _METHODS})


def set_num_threads(n: int) -> None:
    """Threads the CPU kernels use (OpenMP); n >= 1. OMP_NUM_THREADS sets the default."""
    if isinstance(n, _builtins.bool) or not isinstance(n, _builtins.int):
        raise TypeError(f"set_num_threads: n must be an int, got {type(n).__name__}")
    _backend._cpu.set_num_threads(n)


def get_num_threads() -> int:
    return _backend._cpu.get_num_threads()


def set_flush_denormal(mode: bool) -> None:
    """Whether the CPU kernels flush subnormal floats (|x| < 1.2e-38) to zero, on by default:
    subnormals cost a microcode assist per operation on x86 (they doubled an MLP's Adam step once
    its running averages drifted into that range), and GPUs flush them too. PyTorch's name;
    FUSEGRAD_FLUSH_DENORMALS=0 sets the default off."""
    if not isinstance(mode, _builtins.bool):
        raise TypeError(f"set_flush_denormal: mode must be True or False, got {mode!r}")
    _backend._cpu.set_flush_denormals(mode)


import numpy as _np  # noqa: E402

# dtypes by PyTorch's names, as NumPy dtypes: fusegrad.float32, fusegrad.long, fusegrad.bool ...
globals().update({name: _np.dtype(t) for name, t in _DTYPE_NAMES.items()})

__all__ = [
    "as_tensor", "einsum", "eye", "full_like", "is_tensor", "linspace", "nonzero", "numel", "where", "MaxResult", "MinResult",
    *_METHODS, *_DTYPE_NAMES,
    "Tensor", "__version__", "arange", "autocast", "autograd", "cat", "concatenate", "cuda", "data", "enable_grad", "from_dlpack", "full",
    "get_num_threads", "info", "set_flush_denormal", "is_autocast_enabled", "is_grad_enabled", "load", "manual_seed", "maximum", "minimum", "models", "nn", "no_grad",
    "ones", "ones_like", "ops", "optim", "rand", "randn", "save", "set_num_threads", "stack", "tensor", "train",
    "zeros", "zeros_like",
]
