"""Post-training int8 quantization: quantize_dynamic, and static prepare → calibrate → convert.

Static quantization in three steps, as in PyTorch's eager mode:
    prepared = quantization.prepare(model)     # a copy with an observer on every Linear/Conv2d input
    for x in calibration_batches: prepared(x)  # the observers record the ranges the layers see
    qmodel = quantization.convert(prepared)    # int8 layers (nn.quantized) with those ranges
convert fuses a ReLU that follows a layer into the layer's store, and inside an nn.Sequential it
keeps the data in uint8 from one int8 layer to the next when only max-pooling, flattening,
dropout or identities stand between them (the next layer's calibrated input range is then this
layer's output range), so a CNN runs in int8 from its first conv to its last Linear, which returns
float32 logits. Layers it cannot run in int8 (other activations in their store, groups) or that
int8 would not speed up (depth below MIN_INT8_DEPTH, like a first conv on grey images) stay float32.
quantize_dynamic needs no calibration: its Linear layers quantize each input from its own
range. Weights are int8 per output channel; the models save and load with fusegrad.save / load
(int8 weights, scales and zero points are buffers): build the structure again with
convert(prepare(model), calibrated=False) and load_state_dict into it.
"""
from __future__ import annotations

import copy

from .. import nn
from ..nn import quantized as nnq
from ..nn.fusion import role
from .observer import MinMaxObserver

__all__ = ["MinMaxObserver", "convert", "prepare", "quantize_dynamic"]

_STATIC = {nn.Linear: nnq.Linear, nn.Conv2d: nnq.Conv2d}
# Modules that carry uint8 data through unchanged in value (max-pooling is monotone; dropout is
# the identity at inference): they may stand between two int8 layers.
_PASS_THROUGH = (nn.MaxPool2d, nn.Flatten, nn.Dropout, nn.Identity)


# Layers shallower than this (products of fewer terms: a first conv on one-channel images has
# 3·3·1 = 9) stay float32. Their cost is in reading and writing the activations, not in the
# multiply-adds int8 speeds up, and the float kernels fuse what follows them (the MNIST CNN's
# first conv, ReLU and pool run as one float call in 2.5 ms against 7 ms as int8 conv + pool, at
# batch 512 on the reference Xeon); the next int8 layer quantizes their output.
MIN_INT8_DEPTH = 32


def _depth(module) -> int:
    if type(module) is nn.Linear:
        return module.in_features
    kh, kw = module.kernel_size
    return kh * kw * module.in_channels


def _quantizable(module) -> bool:
    if type(module) not in _STATIC or getattr(module, "activation", None) not in (None, "relu"):
        return False
    if type(module) is nn.Conv2d and getattr(module, "groups", 1) != 1:
        return False
    return _depth(module) >= MIN_INT8_DEPTH


def prepare(model: nn.Module, inplace: bool = False) -> nn.Module:
    """A copy of model (or model itself with inplace=True) with a MinMaxObserver recording the input
    range of every nn.Linear and nn.Conv2d it can run in int8. Run calibration batches through it,
    then convert."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"prepare: expected an nn.Module, got {type(model).__name__}")
    model = model if inplace else copy.deepcopy(model)
    for module in model.modules():
        if _quantizable(module) and _observer(module) is None:
            module.register_forward_pre_hook(MinMaxObserver())
    return model


def _observer(module) -> MinMaxObserver | None:
    hooks = module.__dict__.get("_forward_pre_hooks", {})
    return next((h for h in hooks.values() if isinstance(h, MinMaxObserver)), None)


def _drop_observers(model) -> None:
    for module in model.modules():
        hooks = module.__dict__.get("_forward_pre_hooks", {})
        for key in [k for k, h in hooks.items() if isinstance(h, MinMaxObserver)]:
            del hooks[key]


def convert(model: nn.Module, inplace: bool = False, calibrated: bool = True) -> nn.Module:
    """The int8 model of a prepared, calibrated model (a copy unless inplace=True), in eval mode.

    calibrated=False builds the structure from observers that saw nothing (every range [0, 0]),
    to load a saved quantized state_dict into."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert: expected an nn.Module, got {type(model).__name__}")
    model = model if inplace else copy.deepcopy(model)
    observed = [m for m in model.modules() if _observer(m) is not None]
    if not observed:
        raise ValueError("convert: the model has no observers; call quantization.prepare(model) and run "
                         "calibration batches through it first")
    if calibrated:
        idle = [type(m).__name__ for m in observed if not _observer(m).calibrated]
        if idle:
            raise ValueError(f"convert: {len(idle)} observed layer(s) ({', '.join(idle[:3])}, ...) saw no data; "
                             "run calibration batches through the prepared model before convert")
    _convert_children(model)
    _drop_observers(model)
    return model.eval()


def _input_qparams(module):
    return _observer(module).qparams()


def _convert_children(parent) -> None:
    if isinstance(parent, nn.Sequential):
        _convert_sequence(parent)
    for name, child in list(parent.named_children()):
        if _observer(child) is not None:
            parent._modules[name] = _STATIC[type(child)].from_float(child, _input_qparams(child),
                                                                    activation=child.activation)
        else:
            _convert_children(child)


def _is_relu(module) -> bool:
    return getattr(type(module), "fusion_role", None) == "activation" and module.kind == "relu"


def _convert_sequence(seq) -> None:
    """Converts the observed layers of a Sequential in place: ReLU fused into the layer before it,
    and uint8 output where the next module that computes anything is an int8 layer too."""
    names = list(seq._modules)
    items = [seq._modules[n] for n in names]
    i = 0
    while i < len(items):
        layer = items[i]
        if _observer(layer) is None:
            i += 1
            continue
        activation = layer.activation
        after = i + 1
        if activation is None and after < len(items) and _is_relu(items[after]):
            activation = "relu"
            seq._modules[names[after]] = nn.Identity()
            after += 1
        j = after
        while j < len(items) and isinstance(items[j], _PASS_THROUGH) and not getattr(items[j], "ceil_mode", False):
            j += 1
        chained = j < len(items) and _observer(items[j]) is not None
        output_qparams = _input_qparams(items[j]) if chained else (1.0, 0)
        seq._modules[names[i]] = _STATIC[type(layer)].from_float(layer, _input_qparams(layer), output_qparams,
                                                                 activation, quantized_output=chained)
        if chained:
            for k in range(after, j):
                if isinstance(items[k], nn.MaxPool2d):
                    seq._modules[names[k]] = nnq.MaxPool2d.from_float(items[k])
                elif isinstance(items[k], nn.Dropout):
                    seq._modules[names[k]] = nn.Identity()
        i = j


def quantize_dynamic(model: nn.Module, qconfig_spec=None, dtype: str = "int8", inplace: bool = False) -> nn.Module:
    """model (a copy unless inplace=True) with its nn.Linear layers (the module types or the
    qualified names in qconfig_spec; default {nn.Linear}) replaced by nn.quantized.dynamic.Linear:
    int8 weights, each input quantized from its own range, float32 output."""
    if dtype not in ("int8", "qint8"):
        raise ValueError(f"quantize_dynamic: dtype must be 'int8', got {dtype!r}")
    spec = {nn.Linear} if qconfig_spec is None else set(qconfig_spec)
    unknown = [s for s in spec if not (isinstance(s, str) or s is nn.Linear)]
    if unknown:
        raise ValueError(f"quantize_dynamic: only nn.Linear (or module names) can be quantized dynamically, got "
                         f"{unknown}")
    model = model if inplace else copy.deepcopy(model)
    for qualified, module in list(model.named_modules()):
        for name, child in list(module.named_children()):
            full = f"{qualified}.{name}" if qualified else name
            if type(child) is nn.Linear and (nn.Linear in spec or full in spec) and \
                    getattr(child, "activation", None) in (None, "relu"):
                module._modules[name] = nnq.DynamicLinear.from_float(child)
    return model
