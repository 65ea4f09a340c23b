"""Softmax and log-softmax, and the fused losses: softmax cross-entropy and binary cross-entropy
with logits, whose kernels return the gradient with the loss so backward is one multiply."""
from __future__ import annotations

import numpy as np

from ... import ops
from ..._backend import array_module
from ..engine import Function


class Softmax(Function):
    """softmax(a) along axis, or log_softmax with log=True."""

    def forward(self, a, axis=-1, log=False):
        if a.dtype != np.float32:  # the kernels are float32; other dtypes (float64) on the array module
            xp = array_module(a)
            shifted = a - a.max(axis=axis, keepdims=True) if a.size else a
            log_out = shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))
            out = log_out if log else xp.exp(log_out)
        else:
            out = ops.log_softmax(a, axis) if log else ops.softmax(a, axis)
        self.save(out, axis, log)
        return out

    def backward(self, g):
        out, axis, log = self.saved
        if out.dtype != np.float32:
            xp = array_module(g)
            if log:
                return (g - xp.exp(out) * g.sum(axis=axis, keepdims=True),)
            return (out * (g - (g * out).sum(axis=axis, keepdims=True)),)
        return (ops.log_softmax_backward(g, out, axis) if log else ops.softmax_backward(g, out, axis),)


class SoftmaxCrossEntropy(Function):
    """Cross-entropy of softmax(logits) against integer labels."""

    def forward(self, logits, labels=None, reduction="mean", label_smoothing=0.0):
        loss, grad = ops.softmax_cross_entropy(logits, labels, reduction=reduction,
                                               label_smoothing=label_smoothing, return_grad=True)
        self.save(grad, reduction)
        return loss

    def backward(self, g):
        grad, reduction = self.saved
        return (grad * (g[:, None] if reduction == "none" else g),)


class BCEWithLogits(Function):
    """Binary cross-entropy on logits x against targets t."""

    def forward(self, x, t, reduction="mean"):
        loss, grad = ops.bce_with_logits(x, t, reduction=reduction, return_grad=True)
        self.save(grad, reduction, x, t)
        return loss

    def backward(self, g):
        grad, reduction, x, t = self.saved
        gx = grad * g if self.needs_grad[0] else None
        gt = None
        if self.needs_grad[1]:  # d loss / d t = -x per element (scaled like the loss)
            gt = -x * g / (x.size if reduction == "mean" else 1)
        return gx, gt
