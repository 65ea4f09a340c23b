"""Reverse-mode automatic differentiation: the engine (Function, grad mode, backward) and, in
functions/, one Function per op with its forward and backward side by side."""
from .autocast import autocast, is_autocast_enabled
from .engine import Function, backward, enable_grad, is_grad_enabled, no_grad

__all__ = ["Function", "autocast", "backward", "enable_grad", "is_autocast_enabled", "is_grad_enabled", "no_grad"]
