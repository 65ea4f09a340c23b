"""Functional forms of the layers and losses. The heavy ones are single Functions that call the
fused kernels: linear with its bias and activation in the GEMM store, cross-entropy as one pass of
softmax + loss + gradient."""
from __future__ import annotations

import numpy as np

from .. import ops
from ..tensor import Function, Tensor, _xp, default_generator, matmul

# Activations whose derivative can be computed from their output alone can be fused into the
# store of a matmul: autograd then keeps only the output. (relu and leaky_relu with a positive
# slope: y > 0 exactly where x > 0.)
FUSABLE_ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh")


def _matmul_bias_act(x, w, bias, activation, param):
    """act(x @ w.T + bias) over 2-D x: one GEMM with bias and activation in its store (the
    transposed weight is read in place); leaky_relu, which needs its slope, as a second pass."""
    if activation == "leaky_relu":
        return ops.leaky_relu(ops.matmul(x, w.T, bias=bias), param, out=None)
    return ops.matmul(x, w.T, bias=bias, activation=activation)


class LinearFunction(Function):
    """y = act(x @ weight.T + bias) for x (..., in), weight (out, in), bias (out,)."""

    def forward(self, x, weight, bias=None, activation=None, param=0.01):
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])
        y = _matmul_bias_act(x2, weight, bias, activation, param)
        self.save(x2, weight, y if activation else None, activation, param, lead)
        return y.reshape(*lead, weight.shape[0])

    def backward(self, g):
        x2, weight, y, activation, param, lead = self.saved
        g2 = g.reshape(-1, weight.shape[0])
        if activation == "leaky_relu":
            g2 = ops.leaky_relu_backward(g2, y, param)
        elif activation is not None:
            g2 = getattr(ops, f"{activation}_backward")(g2, y)
        gx = matmul(g2, weight).reshape(*lead, weight.shape[1]) if self.needs_grad[0] else None
        gw = matmul(g2.T, x2) if self.needs_grad[1] else None
        gb = g2.sum(axis=0) if len(self.needs_grad) > 2 and self.needs_grad[2] else None
        return gx, gw, gb


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None,
           negative_slope: float = 0.01) -> Tensor:
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input has {x.shape[-1]} features but weight is {weight.shape} (out, in)")
    if activation is not None and activation not in FUSABLE_ACTIVATIONS:
        out = linear(x, weight, bias)
        return getattr(out, activation)()
    args = (x, weight) if bias is None else (x, weight, bias)
    return LinearFunction.apply(*args, activation=activation, param=negative_slope)


def relu(x: Tensor) -> Tensor: return x.relu()
def leaky_relu(x: Tensor, negative_slope: float = 0.01) -> Tensor: return x.leaky_relu(negative_slope)
def sigmoid(x: Tensor) -> Tensor: return x.sigmoid()
def tanh(x: Tensor) -> Tensor: return x.tanh()
def silu(x: Tensor) -> Tensor: return x.silu()
def gelu(x: Tensor, approximate: str = "none") -> Tensor: return x.gelu(approximate)
def softmax(x: Tensor, axis: int = -1) -> Tensor: return x.softmax(axis)
def log_softmax(x: Tensor, axis: int = -1) -> Tensor: return x.log_softmax(axis)


class DropoutFunction(Function):
    def forward(self, x, p=0.5):
        keep = (default_generator().random(x.shape) >= p)
        mask = (keep / (1.0 - p)).astype(x.dtype)
        if not isinstance(x, np.ndarray):
            mask = _xp(x).asarray(mask)
        self.save(mask)
        return x * mask

    def backward(self, g):
        return (g * self.saved[0],)


def dropout(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    return DropoutFunction.apply(x, p=p)


# --- losses ----------------------------------------------------------------------------------------

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction: expected 'mean', 'sum' or 'none', got {reduction!r}")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    _check_reduction(reduction)
    return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss


def _labels(target, n_classes: int, n_rows: int):
    labels = target.data if isinstance(target, Tensor) else target
    if labels.dtype.kind not in "iu":
        raise TypeError(f"target: expected integer class labels, got dtype {labels.dtype}")
    if labels.shape != (n_rows,):
        raise ValueError(f"target: expected shape ({n_rows},) for logits of {n_rows} rows, got {labels.shape}")
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise ValueError(f"target: labels must be in [0, {n_classes}), got values in "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    return labels


class SoftmaxCrossEntropy(Function):
    """Cross-entropy of softmax(logits) against integer labels: the fused kernel computes the loss
    and d loss / d logits in one pass, so backward is one multiply."""

    def forward(self, logits, labels=None, reduction="mean", label_smoothing=0.0):
        loss, grad = ops.softmax_cross_entropy(logits, labels, reduction=reduction,
                                               label_smoothing=label_smoothing, return_grad=True)
        self.save(grad, reduction)
        return loss

    def backward(self, g):
        grad, reduction = self.saved
        return (grad * (g[:, None] if reduction == "none" else g),)


def cross_entropy(logits: Tensor, target, reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    _check_reduction(reduction)
    if logits.ndim != 2:
        raise ValueError(f"cross_entropy: expected logits of shape (N, C), got {logits.shape}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    labels = _labels(target, logits.shape[1], logits.shape[0])
    return SoftmaxCrossEntropy.apply(logits, labels=labels, reduction=reduction,
                                     label_smoothing=float(label_smoothing))


def nll_loss(log_probs: Tensor, target, reduction: str = "mean") -> Tensor:
    if log_probs.ndim != 2:
        raise ValueError(f"nll_loss: expected log-probabilities of shape (N, C), got {log_probs.shape}")
    labels = _labels(target, log_probs.shape[1], log_probs.shape[0])
    picked = log_probs[np.arange(log_probs.shape[0]) if isinstance(labels, np.ndarray)
                       else _xp(labels).arange(log_probs.shape[0]), labels]
    return _reduce(-picked, reduction)


def _same_shape(a: Tensor, b: Tensor, name: str) -> Tensor:
    b = b if isinstance(b, Tensor) else Tensor(b)
    if a.shape != b.shape:
        raise ValueError(f"{name}: input shape {a.shape} and target shape {b.shape} differ")
    return b


def mse_loss(input: Tensor, target, reduction: str = "mean") -> Tensor:  # noqa: A002
    target = _same_shape(input, target, "mse_loss")
    diff = input - target
    return _reduce(diff * diff, reduction)


def l1_loss(input: Tensor, target, reduction: str = "mean") -> Tensor:  # noqa: A002
    target = _same_shape(input, target, "l1_loss")
    return _reduce((input - target).abs(), reduction)


def binary_cross_entropy(input: Tensor, target, reduction: str = "mean") -> Tensor:  # noqa: A002
    """On probabilities; the logs are clamped at -100 as PyTorch does, so 0 and 1 stay finite."""
    target = _same_shape(input, target, "binary_cross_entropy")
    log_p = input.log().clamp(min=-100.0)
    log_q = (1 - input).log().clamp(min=-100.0)
    return _reduce(-(target * log_p + (1 - target) * log_q), reduction)


class BCEWithLogits(Function):
    """Binary cross-entropy on logits, loss and d loss / d logits in one fused pass."""

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


def binary_cross_entropy_with_logits(input: Tensor, target, reduction: str = "mean") -> Tensor:  # noqa: A002
    _check_reduction(reduction)
    target = _same_shape(input, target, "binary_cross_entropy_with_logits")
    return BCEWithLogits.apply(input, target.float(), reduction=reduction)


from .conv import avg_pool2d, conv2d, global_avg_pool2d, max_pool2d  # noqa: E402 - conv needs the names above

__all__ = [
    "conv2d", "max_pool2d", "avg_pool2d", "global_avg_pool2d",
    "linear", "relu", "leaky_relu", "sigmoid", "tanh", "silu", "gelu", "softmax", "log_softmax", "dropout",
    "cross_entropy", "nll_loss", "mse_loss", "l1_loss", "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
]
