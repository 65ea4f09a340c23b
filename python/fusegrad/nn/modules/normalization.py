"""Batch and layer normalisation. LayerNorm of float32 tensors (CPU and CUDA) runs on the fused
kernels (ops.layer_norm); the rest is composed from Tensor ops (autograd derives their backward)."""
from __future__ import annotations

import numpy as np

from ..._backend import array_module
from ...autograd import no_grad
from ...autograd.functions import attention as attention_fn
from ...tensor import Tensor
from .. import functional as F
from .module import Module, Parameter


class _BatchNorm(Module):
    """Normalises over every axis but the channel axis; running statistics as PyTorch keeps them
    (momentum-weighted, the variance unbiased), used in eval mode."""

    channel_axis = -1

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True,
                 track_running_stats: bool = True):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = Parameter(np.ones(num_features, np.float32))
            self.bias = Parameter(np.zeros(num_features, np.float32))
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, np.float32))
            self.register_buffer("running_var", np.ones(num_features, np.float32))
            self.register_buffer("num_batches_tracked", np.zeros((), np.int64))

    def _check(self, x: Tensor):
        raise NotImplementedError

    def _shape(self, x: Tensor) -> tuple:
        """Shape that broadcasts a per-channel vector against x."""
        shape = [1] * x.ndim
        shape[self._axis(x)] = self.num_features
        return tuple(shape)

    def _axis(self, x: Tensor) -> int:
        return self.channel_axis % x.ndim

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        axis = self._axis(x)
        axes = tuple(a for a in range(x.ndim) if a != axis)
        shape = self._shape(x)
        if self.training or not self.track_running_stats:
            count = x.numel() // self.num_features
            if count < 2 and self.training:
                raise ValueError(f"{type(self).__name__}: training needs more than one value per channel, "
                                 f"got input of shape {x.shape}")
            mean = x.mean(axis=axes, keepdims=True)
            centred = x - mean
            var = (centred * centred).mean(axis=axes, keepdims=True)
            if self.training and self.track_running_stats:
                with no_grad():
                    m = self.momentum
                    unbiased = var.data.reshape(-1) * (count / (count - 1))
                    self.running_mean.data[...] = (1 - m) * self.running_mean.data + m * mean.data.reshape(-1)
                    self.running_var.data[...] = (1 - m) * self.running_var.data + m * unbiased
                    self.num_batches_tracked.data[...] += 1
            y = centred / (var + self.eps).sqrt()
        else:
            mean = self.running_mean.data.reshape(shape)
            inv_std = 1.0 / array_module(mean).sqrt(self.running_var.data.reshape(shape) + self.eps)
            y = (x - Tensor._wrap(mean)) * Tensor._wrap(inv_std.astype(np.float32))
        if self.affine:
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        return y

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"


class BatchNorm1d(_BatchNorm):
    """Input (N, C) or (N, C, L), as PyTorch."""

    def _axis(self, x):
        return 1

    def _check(self, x):
        if x.ndim not in (2, 3) or x.shape[1] != self.num_features:
            raise ValueError(f"BatchNorm1d({self.num_features}): expected (N, {self.num_features}) or "
                             f"(N, {self.num_features}, L), got {x.shape}")


class BatchNorm2d(_BatchNorm):
    """Input NHWC (N, H, W, C): the channels are the last axis."""

    def _check(self, x):
        if x.ndim != 4 or x.shape[3] != self.num_features:
            hint = ""
            if x.ndim == 4 and x.shape[1] == self.num_features:
                hint = "; fusegrad images are NHWC, and this looks like NCHW: use x.permute(0, 2, 3, 1)"
            raise ValueError(f"BatchNorm2d({self.num_features}): expected NHWC input (N, H, W, "
                             f"{self.num_features}), got {x.shape}{hint}")


class LayerNorm(Module):
    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.normalized_shape, self.eps = shape, eps
        if elementwise_affine:
            self.weight = Parameter(np.ones(shape, np.float32))
            self.bias = Parameter(np.zeros(shape, np.float32))
        self.elementwise_affine = elementwise_affine

    def forward(self, x: Tensor) -> Tensor:
        k = len(self.normalized_shape)
        if x.shape[x.ndim - k:] != self.normalized_shape:
            raise ValueError(f"LayerNorm{self.normalized_shape}: input's trailing shape is {x.shape[x.ndim - k:]}")
        if x.dtype == np.float32:  # the fused kernel (CPU or CUDA), over the flattened trailing axes
            n = int(np.prod(self.normalized_shape))
            flat = x if k == 1 else x.reshape(*x.shape[:x.ndim - k], n)
            params = ()
            if self.elementwise_affine:
                params = (self.weight, self.bias) if k == 1 else (self.weight.reshape(n), self.bias.reshape(n))
            y = attention_fn.LayerNorm.apply(flat, *params, eps=self.eps)
            return y if k == 1 else y.reshape(*x.shape)
        axes = tuple(range(x.ndim - k, x.ndim))
        centred = x - x.mean(axis=axes, keepdims=True)
        y = centred / ((centred * centred).mean(axis=axes, keepdims=True) + self.eps).sqrt()
        return y * self.weight + self.bias if self.elementwise_affine else y

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class GroupNorm(Module):
    """Normalises channels-last input (N, ..., C) over groups of C / num_groups channels (the last
    axis), with a per-channel scale and shift; PyTorch's GroupNorm for NHWC tensors."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        if num_groups < 1 or num_channels % num_groups:
            raise ValueError(f"GroupNorm: num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        self.num_groups, self.num_channels, self.eps, self.affine = num_groups, num_channels, eps, affine
        if affine:
            self.weight = Parameter(np.ones(num_channels, np.float32))
            self.bias = Parameter(np.zeros(num_channels, np.float32))

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.num_channels:
            raise ValueError(f"GroupNorm: expected {self.num_channels} channels in the last axis, got shape {x.shape}")
        weight, bias = (self.weight, self.bias) if self.affine else (None, None)
        return F.group_norm(x, self.num_groups, weight, bias, self.eps)

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"
