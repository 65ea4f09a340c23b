"""Functional forms of the layers and losses, on tensors. The heavy ones are single autograd
Functions on the fused kernels: linear with its bias and activation in the GEMM's store, conv with
its own, cross-entropy as one pass of softmax + loss + gradient."""
from __future__ import annotations

import numbers

import numpy as np

from .. import ops
from .._backend import array_module, on_host, to_device
from .._tensor.einsum import einsum  # noqa: F401 - nn.functional.einsum, as in PyTorch
from .._tensor.promote import dim_arg
from ..autograd import is_grad_enabled
from ..autograd.autocast import gemm_precision
from ..autograd.functions import attention as attention_fn
from ..autograd.functions import conv as conv_fn
from ..autograd.functions import gemm as gemm_fn
from ..autograd.functions import pool as pool_fn
from ..autograd.functions import shape as pad_fn
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
                           activation=activation, precision=gemm_precision(x.device))
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


def conv1d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: int = 1, padding=0,
           dilation: int = 1) -> Tensor:
    """1-D convolution of channels-last x (N, L, C_in) with weight (K, C_in, C_out), on the 2-D
    conv kernels (as a convolution of height 1); padding an int, "valid" or "same"."""
    if x.ndim != 3 or weight.ndim != 3:
        raise ValueError(f"conv1d: expected input (N, L, C_in) and weight (K, C_in, C_out), got {x.shape} and "
                         f"{weight.shape}")
    pad2 = padding if isinstance(padding, str) else (0, padding)
    y = conv2d(x.unsqueeze(1), weight.unsqueeze(0), bias, (1, stride), pad2, (1, dilation))
    return y.squeeze(1)


def conv_transpose2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0,
                     output_padding=0, dilation=1) -> Tensor:
    """Transposed 2-D convolution of NHWC x (N, H, W, C_in) with weight (KH, KW, C_out, C_in) (the
    HWIO weight of the convolution it transposes; PyTorch's (C_in, C_out, KH, KW) permuted by
    (2, 3, 1, 0)); output size (H - 1) * stride - 2 * padding + dilation * (KH - 1) +
    output_padding + 1, as PyTorch's."""
    fn = "conv_transpose2d"
    stride, dilation = pair(stride, "stride", fn), pair(dilation, "dilation", fn)
    ph, pw = pair(padding, "padding", fn)
    oph, opw = pair(output_padding, "output_padding", fn)
    if x.ndim != 4 or weight.ndim != 4 or weight.shape[3] != x.shape[3]:
        raise ValueError(f"{fn}: expected NHWC input (N, H, W, C_in) and weight (KH, KW, C_out, C_in), got "
                         f"{x.shape} and {weight.shape}")
    if min(ph, pw, oph, opw) < 0 or oph >= max(stride[0], dilation[0]) or opw >= max(stride[1], dilation[1]):
        raise ValueError(f"{fn}: output_padding must be smaller than either stride or dilation, got "
                         f"{(oph, opw)} for stride {stride} and dilation {dilation}")
    kh, kw = weight.shape[:2]
    oh = (x.shape[1] - 1) * stride[0] - 2 * ph + dilation[0] * (kh - 1) + oph + 1
    ow = (x.shape[2] - 1) * stride[1] - 2 * pw + dilation[1] * (kw - 1) + opw + 1
    if oh <= 0 or ow <= 0:
        raise ValueError(f"{fn}: the output size ({oh}, {ow}) is too small for input {x.shape}")
    args = (x, weight) if bias is None else (x, weight, bias)
    return conv_fn.ConvTranspose2d.apply(*args, out_shape=(x.shape[0], oh, ow, weight.shape[2]), stride=stride,
                                         pads=((ph, ph), (pw, pw)), dilation=dilation)


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


def _pool_options(fn, dilation, ceil_mode, return_indices=False):
    if pair(dilation, "dilation", fn) != (1, 1):
        raise NotImplementedError(f"{fn}: dilation={dilation} is not supported yet (the pool kernels have no "
                                  "dilation option)")
    if return_indices:
        raise NotImplementedError(f"{fn}: return_indices=True is not supported (fusegrad.ops.max_pool2d returns "
                                  "the kernel's own indices)")


def _ceil_extra(n, k, s, p):
    """Rows to add after the input so a floor-mode pool gives PyTorch's ceil_mode output size."""
    out = -(-(n + 2 * p - k) // s) + 1
    if (out - 1) * s >= n + p:  # the last window must start inside the input or its left padding
        out -= 1
    return max((out - 1) * s + k - (n + 2 * p), 0)


def max_pool2d(x: Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False) -> Tensor:
    """Max pooling of NHWC x; ceil_mode pads the bottom and right with -inf for the last windows."""
    _pool_options("max_pool2d", dilation, ceil_mode, return_indices)
    if ceil_mode:
        (kh, kw), (ph, pw) = pair(kernel_size, "kernel_size", "max_pool2d"), pair(padding, "padding", "max_pool2d")
        sh, sw = pair(kernel_size if stride is None else stride, "stride", "max_pool2d")
        extra_h, extra_w = _ceil_extra(x.shape[1], kh, sh, ph), _ceil_extra(x.shape[2], kw, sw, pw)
        if extra_h or extra_w:
            x = pad(x, (0, 0, 0, extra_w, 0, extra_h), value=float("-inf"))
    return pool_fn.MaxPool2d.apply(x, kernel_size=kernel_size, stride=stride, padding=padding)


def avg_pool2d(x: Tensor, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True) -> Tensor:
    _pool_options("avg_pool2d", 1, ceil_mode)
    if ceil_mode:
        raise NotImplementedError("avg_pool2d: ceil_mode=True is not supported yet (the pool kernels would need "
                                  "PyTorch's divisor for the partial last windows)")
    return pool_fn.AvgPool2d.apply(x, kernel_size=kernel_size, stride=stride, padding=padding,
                                   count_include_pad=count_include_pad)


def global_avg_pool2d(x: Tensor) -> Tensor:
    return pool_fn.GlobalAvgPool2d.apply(x)


def adaptive_avg_pool2d(x: Tensor, output_size) -> Tensor:
    """Average pooling of NHWC x to output_size (an int or a pair; None keeps that size) with
    PyTorch's windows [floor(i * in / out), ceil((i + 1) * in / out)): the avg-pool kernel where
    the sizes divide, else two products with averaging matrices (GEMMs)."""
    if x.ndim != 4:
        raise ValueError(f"adaptive_avg_pool2d: expected NHWC input (N, H, W, C), got {x.shape}")
    sizes = (output_size, output_size) if output_size is None or isinstance(output_size, numbers.Integral) \
        else tuple(output_size)
    oh, ow = (n if o is None else int(o) for o, n in zip(sizes, x.shape[1:3]))
    h, w = x.shape[1:3]
    if min(oh, ow) <= 0:
        raise ValueError(f"adaptive_avg_pool2d: output size must be positive, got {(oh, ow)}")
    if h % oh == 0 and w % ow == 0 and x.dtype == np.float32:
        return avg_pool2d(x, (h // oh, w // ow), (h // oh, w // ow))

    def averaging(n, m):
        mat = np.zeros((m, n), x.dtype)
        for i in range(m):
            lo, hi = (i * n) // m, -(-((i + 1) * n) // m)
            mat[i, lo:hi] = 1.0 / (hi - lo)
        return Tensor._wrap(to_device(mat, x.device), False)

    rows = averaging(h, oh) @ x.permute(1, 0, 2, 3).reshape(h, -1)          # (oh, N*W*C)
    rows = rows.reshape(oh, x.shape[0], w, x.shape[3]).permute(2, 1, 0, 3).reshape(w, -1)
    cols = averaging(w, ow) @ rows                                          # (ow, N*oh*C)
    return cols.reshape(ow, x.shape[0], oh, x.shape[3]).permute(1, 2, 0, 3)


def group_norm(x: Tensor, num_groups: int, weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5) -> Tensor:
    """Normalises channels-last x (N, ..., C) over each group of C / num_groups channels and all
    positions, then scales and shifts per channel, as torch.nn.functional.group_norm on NCHW."""
    c = x.shape[-1]
    if x.ndim < 2 or c % num_groups:
        raise ValueError(f"group_norm: {c} channels (the last axis) do not split into {num_groups} groups")
    grouped = x.reshape(x.shape[0], -1, num_groups, c // num_groups)
    centred = grouped - grouped.mean(dim=(1, 3), keepdim=True)
    y = (centred / ((centred * centred).mean(dim=(1, 3), keepdim=True) + eps).sqrt()).reshape(x.shape)
    if weight is not None:
        y = y * weight
    return y + bias if bias is not None else y


def relu(x: Tensor) -> Tensor: return x.relu()
def leaky_relu(x: Tensor, negative_slope: float = 0.01) -> Tensor: return x.leaky_relu(negative_slope)
def sigmoid(x: Tensor) -> Tensor: return x.sigmoid()
def tanh(x: Tensor) -> Tensor: return x.tanh()
def silu(x: Tensor) -> Tensor: return x.silu()
def gelu(x: Tensor, approximate: str = "none") -> Tensor: return x.gelu(approximate)
def softmax(x: Tensor, dim: int = -1, *, axis=None) -> Tensor: return x.softmax(dim_arg(dim, axis, "softmax", -1))
def log_softmax(x: Tensor, dim: int = -1, *, axis=None) -> Tensor:
    return x.log_softmax(dim_arg(dim, axis, "log_softmax", -1))


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
    if isinstance(labels, (list, tuple)):  # a Python list of labels, as PyTorch accepts a tensor
        labels = np.asarray(labels)
        labels = labels.astype(np.int64) if labels.size == 0 else labels
    if labels.dtype.kind not in "iu":
        raise TypeError(f"target: expected integer class labels, got dtype {labels.dtype}")
    if labels.shape != (n_rows,):
        raise ValueError(f"target: expected shape ({n_rows},) for logits of {n_rows} rows, got {labels.shape}")
    if on_host(labels) and labels.size and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise ValueError(f"target: labels must be in [0, {n_classes}), got values in "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    return labels


def cross_entropy(logits: Tensor, target, reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """On logits (N, C) and integer labels (N,) (a tensor, an array or a list), or class
    probabilities (N, C) as PyTorch accepts them."""
    check_reduction(reduction)
    if logits.ndim != 2:
        raise ValueError(f"cross_entropy: expected logits of shape (N, C), got {logits.shape}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    if isinstance(target, Tensor) and target.dtype.kind == "f":
        if target.shape != logits.shape:
            raise ValueError(f"cross_entropy: class-probability targets must have the logits' shape {logits.shape}, "
                             f"got {target.shape}")
        probs = target * (1 - label_smoothing) + label_smoothing / logits.shape[1] if label_smoothing else target
        return _reduce(-(probs * logits.log_softmax(-1)).sum(-1), reduction)
    labels = _labels(target, logits.shape[1], logits.shape[0])
    if not on_host(logits.data) and on_host(labels):
        labels = to_device(labels, logits.device)
    return softmax_fn.SoftmaxCrossEntropy.apply(logits, labels=labels, reduction=reduction,
                                                label_smoothing=float(label_smoothing))


def nll_loss(log_probs: Tensor, target, reduction: str = "mean") -> Tensor:
    if log_probs.ndim != 2:
        raise ValueError(f"nll_loss: expected log-probabilities of shape (N, C), got {log_probs.shape}")
    labels = _labels(target, log_probs.shape[1], log_probs.shape[0])
    if not on_host(log_probs.data) and on_host(labels):
        labels = to_device(labels, log_probs.device)
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


def kl_div(input: Tensor, target, reduction: str = "mean", log_target: bool = False) -> Tensor:  # noqa: A002
    """PyTorch's KL divergence loss: input holds log-probabilities, target probabilities (or
    log-probabilities with log_target=True); pointwise target * (log target - input), taking
    0 * log 0 as 0. reduction "batchmean" (sum / batch size) is the true KL divergence per
    sample; "mean" averages over every element, as PyTorch's does."""
    if reduction not in ("mean", "batchmean", "sum", "none"):
        raise ValueError(f"kl_div: reduction must be 'mean', 'batchmean', 'sum' or 'none', got {reduction!r}")
    target = _same_shape(input, target, "kl_div")
    if log_target:
        pointwise = target.exp() * (target - input)
    else:  # log of 1 where target is 0, so that term is 0 * (0 - input) (torch.xlogy's rule)
        pointwise = target * (target.where(target.data != 0, 1.0).log() - input)
    if reduction == "batchmean":
        return pointwise.sum() / (input.shape[0] if input.ndim else 1)
    return pointwise.mean() if reduction == "mean" else pointwise.sum() if reduction == "sum" else pointwise


# --- padding, one-hot, resizing -------------------------------------------------------------------


def pad(x: Tensor, pad, mode: str = "constant", value: float = 0.0) -> Tensor:
    """torch.nn.functional.pad: `pad` is (before, after) pairs from the last dimension backwards
    (for an NHWC image, pad=(0, 0, left, right, top, bottom)); modes constant (negative pads
    crop), reflect, replicate and circular."""
    pad = tuple(pad)
    if len(pad) % 2 or len(pad) // 2 > x.ndim or not all(isinstance(p, numbers.Integral) for p in pad):
        raise ValueError(f"pad: expected an even number of ints, at most 2 per dimension ({2 * x.ndim}), got {pad}")
    if mode not in ("constant", "reflect", "replicate", "circular"):
        raise NotImplementedError(f"pad: mode {mode!r} is not supported (constant, reflect, replicate, circular)")
    xp = array_module(x.data)
    out = x
    for k in range(len(pad) // 2):
        dim, before, after = x.ndim - 1 - k, int(pad[2 * k]), int(pad[2 * k + 1])
        n = out.shape[dim]
        if mode == "constant":
            if before < 0 or after < 0:
                out = out.narrow(dim, max(-before, 0), n - max(-before, 0) - max(-after, 0))
            widths = [(0, 0)] * x.ndim
            widths[dim] = (max(before, 0), max(after, 0))
            if any(widths[dim]):
                out = pad_fn.PadConstant.apply(out, widths=tuple(widths), value=value)
            continue
        if min(before, after) < 0 or (mode == "reflect" and max(before, after) >= n) or \
                (mode == "circular" and max(before, after) > n) or n == 0:
            raise RuntimeError(f"pad: padding ({before}, {after}) is invalid for {mode} mode on dimension {dim} "
                               f"of size {n}")
        positions = xp.arange(-before, n + after)
        if mode == "reflect":
            period = 2 * (n - 1) if n > 1 else 1
            positions = xp.abs(positions) % period
            positions = xp.where(positions >= n, period - positions, positions)
        elif mode == "replicate":
            positions = xp.clip(positions, 0, n - 1)
        else:
            positions = positions % n
        out = out.index_select(dim, Tensor._wrap(positions.astype(np.int64), False))
    return out


def one_hot(tensor, num_classes: int = -1) -> Tensor:
    """int64 one-hot rows of integer class labels (a tensor, array or list), as PyTorch's."""
    labels = tensor.data if isinstance(tensor, Tensor) else np.asarray(tensor)
    if labels.dtype.kind not in "iu":
        raise RuntimeError("one_hot is only applicable to index tensor of type LongTensor.")
    xp = array_module(labels)
    if labels.size and int(labels.min()) < 0:
        raise RuntimeError("Class values must be non-negative.")
    top = int(labels.max()) + 1 if labels.size else 0
    if num_classes == -1:
        if not labels.size:
            raise RuntimeError("Can not infer total number of classes from empty tensor.")
        num_classes = top
    elif top > num_classes:
        raise RuntimeError("Class values must be smaller than num_classes.")
    return Tensor._wrap((labels[..., None] == xp.arange(num_classes)).astype(np.int64), False)


def interpolate(x: Tensor, size=None, scale_factor=None, mode: str = "nearest", align_corners=None) -> Tensor:
    """Resizes the spatial dimensions of a channels-last tensor (N, L, C) or NHWC (N, H, W, C):
    modes nearest (PyTorch's index rule), linear and bilinear (align_corners as in PyTorch)."""
    spatial = x.ndim - 2
    if spatial not in (1, 2):
        raise ValueError(f"interpolate: expected (N, L, C) or NHWC (N, H, W, C) input, got shape {x.shape}")
    if mode not in ("nearest", "linear", "bilinear"):
        raise NotImplementedError(f"interpolate: mode {mode!r} is not supported (nearest, linear, bilinear)")
    if mode != "nearest" and {"linear": 1, "bilinear": 2}[mode] != spatial:
        raise ValueError(f"interpolate: mode {mode!r} needs a {3 if mode == 'linear' else 4}-D input, got {x.ndim}-D")
    if mode == "nearest" and align_corners is not None:
        raise ValueError("align_corners option can only be set with the interpolating modes: linear | bilinear")
    if (size is None) == (scale_factor is None):
        raise ValueError("only one of size or scale_factor should be defined")
    ins = x.shape[1:1 + spatial]
    if size is not None:
        outs = (size,) * spatial if isinstance(size, numbers.Integral) else tuple(size)
        scales = [n / m for n, m in zip(ins, outs)]
    else:
        factors = (scale_factor,) * spatial if isinstance(scale_factor, numbers.Real) else tuple(scale_factor)
        outs = tuple(int(n * f) for n, f in zip(ins, factors))
        scales = [1.0 / f for f in factors]
    if len(outs) != spatial or min(outs) <= 0:
        raise ValueError(f"interpolate: bad output size {outs} for input {x.shape}")
    xp = array_module(x.data)
    out = x
    for k, (n, m, scale) in enumerate(zip(ins, outs, scales)):
        dim = 1 + k
        dst = np.arange(m, dtype=np.float64)
        if mode == "nearest":
            src = np.minimum(np.floor(dst * scale).astype(np.int64), n - 1)
            out = out.index_select(dim, Tensor._wrap(to_device(src, out.device), False))
            continue
        if align_corners:
            src = dst * ((n - 1) / (m - 1)) if m > 1 else np.zeros(m)
        else:
            src = np.maximum((dst + 0.5) * scale - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(np.int64), n - 1)
        i1 = np.minimum(i0 + 1, n - 1)
        lam = (src - i0).astype(x.dtype)
        shape = [1] * x.ndim
        shape[dim] = m
        w = Tensor._wrap(to_device(lam.reshape(shape), out.device), False)
        lo = out.index_select(dim, Tensor._wrap(to_device(i0, out.device), False))
        hi = out.index_select(dim, Tensor._wrap(to_device(i1, out.device), False))
        out = lo * (1 - w) + hi * w
    return out


__all__ = [
    "pad", "one_hot", "interpolate", "einsum", "conv1d", "conv_transpose2d", "adaptive_avg_pool2d", "group_norm",
    "conv2d", "conv2d_max_pool2d", "max_pool2d", "avg_pool2d", "global_avg_pool2d",
    "linear", "relu", "leaky_relu", "sigmoid", "tanh", "silu", "gelu", "softmax", "log_softmax", "dropout",
    "scaled_dot_product_attention", "multi_head_attention",
    "cross_entropy", "nll_loss", "mse_loss", "l1_loss", "binary_cross_entropy",
    "binary_cross_entropy_with_logits", "kl_div", "check_reduction",
]
