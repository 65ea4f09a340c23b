"""Functional forms of the layers and losses, on tensors. The heavy ones are single autograd
Functions on the fused kernels: linear with its bias and activation in the GEMM's store, conv with
its own, cross-entropy as one pass of softmax + loss + gradient."""
from __future__ import annotations

import numpy as np

from .. import ops
from .._backend import array_module, on_host
from ..autograd import is_grad_enabled
from ..autograd.functions import attention as attention_fn
from ..autograd.functions import conv as conv_fn
from ..autograd.functions import gemm as gemm_fn
from ..autograd.functions import pool as pool_fn
from ..autograd.functions import softmax as softmax_fn
from ..autograd.functions.dropout import Dropout
from ..ops.activation import COMMUTES_WITH_MAX, DERIVATIVE_FROM_OUTPUT, EPILOGUE
from ..ops.conv import conv_geometry
from ..ops._common import pair
from ..tensor import Tensor


def _activate(x: Tensor, activation: str, negative_slope: float = 0.01) -> Tensor:
    """x.<activation>() for an activation name of the table (gelu_tanh: gelu(approximate="tanh"))."""
    if activation == "leaky_relu":
        return x.leaky_relu(negative_slope)
    if activation == "gelu_tanh":
        return x.gelu("tanh")
    return getattr(x, activation)()


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None,
           negative_slope: float = 0.01) -> Tensor:
    """act(x @ weight.T + bias); an activation whose derivative comes from its output
    (ops.activation.DERIVATIVE_FROM_OUTPUT) runs in the GEMM's store, any other after it."""
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input has {x.shape[-1]} features but weight is {weight.shape} (out, in)")
    if activation is not None and activation not in DERIVATIVE_FROM_OUTPUT:
        tensors = (x, weight) if bias is None else (x, weight, bias)
        if (activation in EPILOGUE and all(t.dtype == np.float32 for t in tensors)
                and not (is_grad_enabled() and any(t.requires_grad for t in tensors))):
            # Nothing to differentiate (inference): the activation (e.g. GELU) runs in the GEMM's store.
            y = ops.matmul(x.data.reshape(-1, x.shape[-1]), weight.data.T, bias=None if bias is None else bias.data,
                           activation=activation)
            return Tensor._wrap(y.reshape(*x.shape[:-1], weight.shape[0]))
        return _activate(linear(x, weight, bias), activation, negative_slope)
    args = (x, weight) if bias is None else (x, weight, bias)
    return gemm_fn.Linear.apply(*args, activation=activation, param=negative_slope)


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0, dilation=1,
           activation: str | None = None) -> Tensor:
    """2-D convolution of NHWC x with HWIO weight; padding an int, a pair, "valid" or "same"."""
    stride, dilation = pair(stride, "stride", "conv2d"), pair(dilation, "dilation", "conv2d")
    _, _, geometry = conv_geometry(x.shape, weight.shape, stride, padding, dilation, "conv2d")
    pads = ((geometry.pt, geometry.pb), (geometry.pl, geometry.pr))
    # Fused only where the activation kernels can run on the output (float32); other dtypes (the
    # float64 of gradient checks) apply it as its own op.
    if activation is not None and (activation not in DERIVATIVE_FROM_OUTPUT or x.dtype != np.float32):
        return _activate(conv2d(x, weight, bias, stride, padding, dilation), activation)
    args = (x, weight) if bias is None else (x, weight, bias)
    return conv_fn.Conv2d.apply(*args, stride=stride, pads=pads, dilation=dilation, activation=activation)


def conv2d_max_pool2d(x: Tensor, weight: Tensor, bias: Tensor | None, pool: int, stride=1, padding=0,
                      dilation=1, activation: str | None = None, negative_slope: float = 0.01) -> Tensor:
    """max_pool2d(act(conv2d(x, weight) + bias), pool) through the fused kernel (float32 CPU
    tensors); activation None or one that commutes with max (ops.activation.COMMUTES_WITH_MAX)."""
    if activation is not None and activation not in COMMUTES_WITH_MAX:
        raise ValueError(f"conv2d_max_pool2d: activation {activation!r} does not commute with max")
    stride, dilation = pair(stride, "stride", "conv2d"), pair(dilation, "dilation", "conv2d")
    _, _, geometry = conv_geometry(x.shape, weight.shape, stride, padding, dilation, "conv2d")
    pads = ((geometry.pt, geometry.pb), (geometry.pl, geometry.pr))
    args = (x, weight) if bias is None else (x, weight, bias)
    return conv_fn.Conv2dMaxPool.apply(*args, stride=stride, pads=pads, dilation=dilation, pool=pool,
                                       activation=activation, negative_slope=negative_slope)


def max_pool2d(x: Tensor, kernel_size, stride=None, padding=0) -> Tensor:
    return pool_fn.MaxPool2d.apply(x, kernel_size=kernel_size, stride=stride, padding=padding)


def avg_pool2d(x: Tensor, kernel_size, stride=None, padding=0, count_include_pad=True) -> Tensor:
    return pool_fn.AvgPool2d.apply(x, kernel_size=kernel_size, stride=stride, padding=padding,
                                   count_include_pad=count_include_pad)


def global_avg_pool2d(x: Tensor) -> Tensor:
    return pool_fn.GlobalAvgPool2d.apply(x)


def relu(x: Tensor) -> Tensor: return x.relu()
def leaky_relu(x: Tensor, negative_slope: float = 0.01) -> Tensor: return x.leaky_relu(negative_slope)
def sigmoid(x: Tensor) -> Tensor: return x.sigmoid()
def tanh(x: Tensor) -> Tensor: return x.tanh()
def silu(x: Tensor) -> Tensor: return x.silu()
def gelu(x: Tensor, approximate: str = "none") -> Tensor: return x.gelu(approximate)
def softmax(x: Tensor, axis: int = -1) -> Tensor: return x.softmax(axis)
def log_softmax(x: Tensor, axis: int = -1) -> Tensor: return x.log_softmax(axis)


def dropout(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    return Dropout.apply(x, p=p)


# --- attention ---------------------------------------------------------------------------------


def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor, attn_mask=None, dropout_p: float = 0.0,
                                 is_causal: bool = False, scale: float | None = None, seed: int | None = None) -> Tensor:
    """PyTorch's F.scaled_dot_product_attention on the flash-attention kernels: query (..., L, E),
    key and value (..., S, E) with 0-2 leading dims ((N, H, L, E) is the native layout); attn_mask
    boolean (True = attend) or additive, broadcasting against (..., L, S). Dropout is applied
    whenever dropout_p > 0, as in PyTorch (pass 0.0 in evaluation)."""
    if query.ndim not in (2, 3, 4) or key.ndim != query.ndim or value.ndim != query.ndim:
        raise ValueError(f"scaled_dot_product_attention: expected query, key, value of 2-4 dims alike, got "
                         f"{query.shape}, {key.shape}, {value.shape}")
    lead = 4 - query.ndim
    shape = query.shape[:-1] + value.shape[-1:]
    mask = attn_mask.data if isinstance(attn_mask, Tensor) else attn_mask
    if lead:
        query, key, value = (t.reshape(*((1,) * lead), *t.shape) if lead == 2 else t.unsqueeze(1)
                             for t in (query, key, value))
        if mask is not None and mask.ndim == 3:
            mask = mask[:, None]
    out = attention_fn.Attention.apply(query, key, value, mask=mask, causal=is_causal, scale=scale,
                                       dropout_p=dropout_p, seed=seed)
    return out.reshape(*shape) if lead else out


def multi_head_attention(query: Tensor, key: Tensor | None, value: Tensor | None, heads: int, mask=None,
                         causal: bool = False, dropout_p: float = 0.0) -> Tensor:
    """Attention of already projected (N, L, E) tensors split into `heads` heads, merged back to
    (N, L, E); key=value=None: query is the packed (N, L, 3E) self-attention projection."""
    args = (query,) if key is None else (query, key, value)
    return attention_fn.MultiHeadAttention.apply(*args, heads=heads, packed=key is None, mask=mask, causal=causal,
                                                 dropout_p=dropout_p)


# --- losses ----------------------------------------------------------------------------------------

_REDUCTIONS = ("mean", "sum", "none")


def check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction: expected 'mean', 'sum' or 'none', got {reduction!r}")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    check_reduction(reduction)
    return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss


def _labels(target, n_classes: int, n_rows: int):
    """The label array after checking its dtype and shape, and on the host its range. Labels on a
    GPU are range-checked by the kernel instead (a bad row's loss is NaN), which needs no
    device-to-host copy inside a training step."""
    labels = target.data if isinstance(target, Tensor) else target
    if labels.dtype.kind not in "iu":
        raise TypeError(f"target: expected integer class labels, got dtype {labels.dtype}")
    if labels.shape != (n_rows,):
        raise ValueError(f"target: expected shape ({n_rows},) for logits of {n_rows} rows, got {labels.shape}")
    if on_host(labels) and labels.size and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise ValueError(f"target: labels must be in [0, {n_classes}), got values in "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    return labels


def cross_entropy(logits: Tensor, target, reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    check_reduction(reduction)
    if logits.ndim != 2:
        raise ValueError(f"cross_entropy: expected logits of shape (N, C), got {logits.shape}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    labels = _labels(target, logits.shape[1], logits.shape[0])
    return softmax_fn.SoftmaxCrossEntropy.apply(logits, labels=labels, reduction=reduction,
                                                label_smoothing=float(label_smoothing))


def nll_loss(log_probs: Tensor, target, reduction: str = "mean") -> Tensor:
    if log_probs.ndim != 2:
        raise ValueError(f"nll_loss: expected log-probabilities of shape (N, C), got {log_probs.shape}")
    labels = _labels(target, log_probs.shape[1], log_probs.shape[0])
    picked = log_probs[array_module(labels).arange(log_probs.shape[0]), labels]
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


def binary_cross_entropy_with_logits(input: Tensor, target, reduction: str = "mean") -> Tensor:  # noqa: A002
    check_reduction(reduction)
    target = _same_shape(input, target, "binary_cross_entropy_with_logits")
    return softmax_fn.BCEWithLogits.apply(input, target.float(), reduction=reduction)


__all__ = [
    "conv2d", "conv2d_max_pool2d", "max_pool2d", "avg_pool2d", "global_avg_pool2d",
    "linear", "relu", "leaky_relu", "sigmoid", "tanh", "silu", "gelu", "softmax", "log_softmax", "dropout",
    "scaled_dot_product_attention", "multi_head_attention",
    "cross_entropy", "nll_loss", "mse_loss", "l1_loss", "binary_cross_entropy",
    "binary_cross_entropy_with_logits", "check_reduction",
]
