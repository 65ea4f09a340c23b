"""Gradient utilities (clip_grad_norm_) and pruning (nn.utils.prune)."""
from __future__ import annotations

from ... import ops
from ...tensor import Tensor
from . import prune  # noqa: F401 - nn.utils.prune, as in PyTorch


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0):
    """Scales the gradients of `parameters` in place so their total norm is at most max_norm;
    returns the total norm before clipping (as torch.nn.utils.clip_grad_norm_)."""
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    grads = [p.grad.data for p in params if p.grad is not None]
    if not grads:
        return 0.0
    return ops.clip_grad_norm(grads, max_norm, norm_type)
