"""fusegrad: a deep-learning engine whose hot paths are compiled C++/CUDA kernels."""
from . import _backend, autograd, cuda, data, models, nn, ops, optim, train
from ._cpu import __version__
from ._info import info
from .autograd import enable_grad, is_grad_enabled, no_grad
from .io import load, save
from .random import manual_seed
from .tensor import (
    Tensor,
    arange,
    cat,
    concatenate,
    from_dlpack,
    full,
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


def set_num_threads(n: int) -> None:
    """Threads the CPU kernels use (OpenMP); n >= 1. OMP_NUM_THREADS sets the default."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"set_num_threads: n must be an int, got {type(n).__name__}")
    _backend._cpu.set_num_threads(n)


def get_num_threads() -> int:
    return _backend._cpu.get_num_threads()


def set_flush_denormal(mode: bool) -> None:
    """Whether the CPU kernels flush subnormal floats (|x| < 1.2e-38) to zero, on by default:
    subnormals cost a microcode assist per operation on x86 (they doubled an MLP's Adam step once
    its running averages drifted into that range), and GPUs flush them too. PyTorch's name;
    FUSEGRAD_FLUSH_DENORMALS=0 sets the default off."""
    if not isinstance(mode, bool):
        raise TypeError(f"set_flush_denormal: mode must be True or False, got {mode!r}")
    _backend._cpu.set_flush_denormals(mode)


__all__ = [
    "Tensor", "__version__", "arange", "autograd", "cat", "concatenate", "cuda", "data", "enable_grad", "from_dlpack", "full",
    "get_num_threads", "info", "set_flush_denormal", "is_grad_enabled", "load", "manual_seed", "maximum", "minimum", "models", "nn", "no_grad",
    "ones", "ones_like", "ops", "optim", "rand", "randn", "save", "set_num_threads", "stack", "tensor", "train",
    "zeros", "zeros_like",
]
