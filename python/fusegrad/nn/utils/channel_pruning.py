"""Channel pruning that shrinks a model: the conv filters of smallest norm are taken out, with the
input channels of whatever reads them, and what is left is a smaller dense nn.Sequential (fewer
numbers, less work per image), not a masked one.

Why the result computes what the original would with those channels cut: a removed channel is
absent from every per-channel layer after its conv (activations, pools, dropout, BatchNorm2d's
slice for it) and from the weights of the next Conv2d or Linear, which is the only place it would
have been mixed with the others. Removing it is therefore the same as zeroing that consumer's
input weights for it in the original model."""
from __future__ import annotations

import copy

import numpy as np

from ..._backend import to_device, to_host
from ..modules.activation import GELU, LeakyReLU, ReLU, Sigmoid, SiLU, Tanh
from ..modules.container import Sequential
from ..modules.conv import Conv2d
from ..modules.dropout import Dropout
from ..modules.flatten import Flatten
from ..modules.linear import Identity, Linear
from ..modules.module import Parameter
from ..modules.normalization import BatchNorm2d
from ..modules.pooling import AdaptiveAvgPool2d, AvgPool2d, GlobalAvgPool2d, MaxPool2d
from ._amount import check_amount, count_to_prune

# Layers that treat every channel alone, so a channel can vanish from their input and output.
# Exact types: a subclass may compute something else.
PER_CHANNEL = (ReLU, LeakyReLU, GELU, Sigmoid, Tanh, SiLU, Dropout, Identity, MaxPool2d, AvgPool2d,
               AdaptiveAvgPool2d, GlobalAvgPool2d)


def prune_channels(model: Sequential, amount, norm: int = 1) -> Sequential:
    """A smaller copy of `model` (an nn.Sequential CNN such as models.mnist_cnn or cifar_cnn)
    in which each Conv2d keeps only its output channels whose filters have the largest Ln norm
    (norm 1 or 2, over the filter's KH x KW x C_in weights, of the input channels it keeps
    once the conv before it has been pruned; the bias is not counted).

    amount: the channels each conv loses, a fraction in [0, 1] (round(amount * C_out)) or a
    count. The layers after the conv follow: a BatchNorm2d keeps those channels' parameters and
    running statistics, the next Conv2d those input channels, and a Linear after Flatten (or
    after GlobalAvgPool2d) those input features. Flatten of an NHWC tensor puts feature
    (h * W + w) * C + c at position (h, w), channel c, so the Linear keeps every position's
    columns for the kept channels. Activations, pools, dropout and Identity are passed through.

    A Conv2d whose channels reach the model's output unchanged keeps them (its output shape is
    the model's). The original model is not changed. Raises ValueError for anything else
    between a conv and its consumer (a nested container, a branch, LayerNorm, ...), and for a
    tensor pruned by masks (call prune.remove first)."""
    if not isinstance(model, Sequential):
        raise TypeError(f"prune_channels: expected an nn.Sequential, got {type(model).__name__}")
    check_amount(amount)
    if norm not in (1, 2):
        raise ValueError(f"prune_channels: norm must be 1 or 2, got {norm!r}")
    layers = list(copy.deepcopy(model))
    for i, layer in enumerate(layers):
        if any(name.endswith("_orig") for name in layer._parameters):
            raise ValueError(f"prune_channels: layer {i} ({type(layer).__name__}) is pruned by a mask; call "
                             "prune.remove on it first")
    for i in range(len(layers)):
        if type(layers[i]) is not Conv2d:
            continue
        found = _readers(layers, i)
        if found is None:
            continue
        norms, consumer = found
        conv = layers[i]
        keep = _strongest(conv, amount, norm, i)
        layers[i] = _conv_slice(conv, out_keep=keep)
        for j in norms:
            layers[j] = _batch_norm_slice(layers[j], keep)
        if type(layers[consumer]) is Conv2d:
            layers[consumer] = _conv_slice(layers[consumer], in_keep=keep)
        else:
            layers[consumer] = _linear_slice(layers[consumer], keep, conv.out_channels, consumer)
    return Sequential(*layers).train(model.training)


def _readers(layers, i):
    """(indices of the BatchNorm2d layers, index of the Conv2d or Linear) that read the output
    channels of the Conv2d at i; None when they reach the model's output."""
    channels, norms = layers[i].out_channels, []
    for j in range(i + 1, len(layers)):
        layer = layers[j]
        kind = type(layer)
        if kind is BatchNorm2d:
            if layer.num_features != channels:
                raise ValueError(f"prune_channels: layer {j} BatchNorm2d({layer.num_features}) follows a conv of "
                                 f"{channels} channels")
            norms.append(j)
        elif kind in (Conv2d, Linear):
            return norms, j
        elif kind not in PER_CHANNEL and not (kind is Flatten and layer.start_dim == 1 and layer.end_dim == -1):
            raise ValueError(f"prune_channels: cannot follow the channels of layer {i} (Conv2d) through layer {j} "
                             f"({kind.__name__}); between a Conv2d and the next Conv2d or Linear only BatchNorm2d, "
                             f"Flatten() and per-channel layers ({', '.join(t.__name__ for t in PER_CHANNEL)}) "
                             "are supported")
    return None


def _strongest(conv, amount, norm, index):
    """The sorted indices of the output channels to keep: those of the largest filter norms."""
    w = to_host(conv.weight.data)  # a few numbers per channel: ranked on the host
    a = np.abs(w.astype(np.float64)).reshape(-1, w.shape[3])
    scores = a.sum(axis=0) if norm == 1 else np.sqrt((a * a).sum(axis=0))
    count = count_to_prune(amount, conv.out_channels)
    if count >= conv.out_channels:
        raise ValueError(f"prune_channels: amount={amount} would remove all {conv.out_channels} channels of layer "
                         f"{index} (Conv2d)")
    return np.sort(np.argsort(-scores, kind="stable")[:conv.out_channels - count])


def _on(indices, tensor):
    """Host indices moved to the tensor's device, to index its array there."""
    return to_device(indices, tensor.device)


def _conv_slice(conv, out_keep=None, in_keep=None):
    """A new Conv2d with the kept output channels (filters and bias) and/or input channels."""
    w = conv.weight.data
    if in_keep is not None:
        w = w[:, :, _on(in_keep, conv.weight), :]
    if out_keep is not None:
        w = w[..., _on(out_keep, conv.weight)]
    has_bias = conv.bias is not None
    new = Conv2d(w.shape[2], w.shape[3], conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                 bias=has_bias, activation=conv.activation)
    new.weight = Parameter(w.copy(), requires_grad=conv.weight.requires_grad)
    if has_bias:
        bias = conv.bias.data if out_keep is None else conv.bias.data[_on(out_keep, conv.bias)]
        new.bias = Parameter(bias.copy(), requires_grad=conv.bias.requires_grad)
    return new


def _batch_norm_slice(bn, keep):
    new = BatchNorm2d(len(keep), bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    for name in ("weight", "bias"):
        if bn.affine:
            old = getattr(bn, name)
            setattr(new, name, Parameter(old.data[_on(keep, old)], requires_grad=old.requires_grad))
    if bn.track_running_stats:
        new.running_mean.data = bn.running_mean.data[_on(keep, bn.running_mean)]
        new.running_var.data = bn.running_var.data[_on(keep, bn.running_var)]
        new.num_batches_tracked.data = bn.num_batches_tracked.data.copy()
    return new


def _linear_slice(linear, keep, channels, index):
    """A new Linear reading only the kept channels' features of a flattened NHWC input."""
    if linear.in_features % channels:
        raise ValueError(f"prune_channels: layer {index} Linear has {linear.in_features} input features, not a "
                         f"multiple of the {channels} channels before it")
    positions = linear.in_features // channels  # H * W after Flatten, 1 after GlobalAvgPool2d
    columns = (np.arange(positions)[:, None] * channels + keep[None, :]).reshape(-1)
    new = Linear(len(columns), linear.out_features, bias=linear.bias is not None, activation=linear.activation)
    weight = linear.weight
    new.weight = Parameter(weight.data[:, _on(columns, weight)], requires_grad=weight.requires_grad)
    if linear.bias is not None:
        new.bias = Parameter(linear.bias.data.copy(), requires_grad=linear.bias.requires_grad)
    return new
