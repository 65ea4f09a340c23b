"""Layer fusion: which chains of modules run as one kernel call, written out as rewrite rules.

plan(named_modules) turns a list of (name, module) pairs into the steps that compute the same
function:
  - Conv2d (groups=1) -> ReLU or LeakyReLU(slope > 0) -> MaxPool2d(k) with k×k windows, stride k and no
    padding becomes one fused conv + max-pool kernel call (float32 tensors, CPU or CUDA; elsewhere the three
    modules run in turn). The activation never decreases and is exact on ties, so it commutes
    with max and runs on the pooled tensor, a quarter of the data; the conv output is never
    written.
  - Linear or Conv2d -> an activation whose derivative comes from its output (ReLU, Sigmoid,
    Tanh, LeakyReLU with a positive slope; for Conv2d only those its store applies without a
    parameter) becomes the layer with the activation applied while it stores its output:
    one pass less over memory, and autograd keeps only the output.
A module takes part by its class declaring `fusion_role` ("linear", "conv", "max_pool",
"activation") in its own body; a subclass that does not declare it again is left alone, since it
may compute something else. A layer is fused only when it has no activation of its own, and
only when the modules whose forward the fused call skips have no hooks.
"""
from __future__ import annotations

import re

import numpy as np

from ..ops.activation import COMMUTES_WITH_MAX, DERIVATIVE_FROM_OUTPUT, EPILOGUE, TABLE
from ..tensor import Tensor
from . import functional as F


def role(module) -> str | None:
    """The fusion role its class declares in its own body, or None."""
    return type(module).__dict__.get("fusion_role")


def _activation_of(module):
    """(kind, param) when module is an activation a layer may apply in its store (its derivative
    comes from its output), else None."""
    if role(module) != "activation":
        return None
    kind, param = module.kind, module.param
    if kind not in DERIVATIVE_FROM_OUTPUT or (TABLE[kind]["takes_param"] and not param > 0):
        return None
    return kind, param


def _pool_size(pool):
    """k when pool is a MaxPool2d with k×k windows, stride k and no padding, else None."""
    if role(pool) != "max_pool":
        return None
    k = pool.kernel_size
    if not isinstance(k, (int, np.integer)):
        k = tuple(k)
        if len(k) != 2 or k[0] != k[1]:
            return None
        k = k[0]
    if (pool.stride if pool.stride is not None else k) not in (k, (k, k), [k, k]):
        return None
    if (pool.padding not in (0, (0, 0), [0, 0]) or getattr(pool, "ceil_mode", False)
            or getattr(pool, "dilation", 1) not in (1, (1, 1), [1, 1]) or getattr(pool, "return_indices", False)):
        return None
    return int(k)


class FusedStep:
    """Several modules run as one kernel call. An error raised inside names the user's modules
    (e.g. "Sequential[0] Conv2d, fused with [1] ReLU, [2] MaxPool2d"), not a kernel they never
    called."""

    def __init__(self, owner: str, named: list):
        self.names = [name for name, _ in named]
        self.modules = [module for _, module in named]
        first, *rest = named
        self.label = f"{owner}[{first[0]}] {type(first[1]).__name__}"
        if rest:
            self.label += ", fused with " + ", ".join(f"[{n}] {type(m).__name__}" for n, m in rest)

    def __call__(self, x):
        try:
            return self.run(x)
        except (ValueError, TypeError) as err:
            # Drop the kernel's own name ("conv2d_max_pool2d: ..."): the label says where it ran.
            message = re.sub(r"^\w+: ", "", str(err))
            raise type(err)(f"{self.label}: {message}") from err

    def run(self, x):
        raise NotImplementedError


class ConvActivationPool(FusedStep):
    """conv -> activation -> max-pool(k) as the fused kernel where it runs (float32 tensors)."""

    def __init__(self, owner, named, kind, param, k):
        super().__init__(owner, named)
        self.kind, self.param, self.k = kind, param, k

    def run(self, x):
        conv, activation, pool = self.modules
        if isinstance(x, Tensor) and x.dtype == np.float32:
            return F.conv2d_max_pool2d(x, conv.weight, conv.bias, self.k, conv.stride, conv.padding, conv.dilation,
                                       self.kind, self.param)
        return pool(activation(conv(x)))


class LayerActivation(FusedStep):
    """A Linear or Conv2d with the activation after it applied in its store."""

    def __init__(self, owner, named, kind, param):
        super().__init__(owner, named)
        self.kind, self.param = kind, param

    def run(self, x):
        layer = self.modules[0]
        if role(layer) == "linear":
            return layer(x, activation=self.kind, negative_slope=self.param)
        return layer(x, activation=self.kind)


def _hooked(modules) -> bool:
    """Whether any of the modules has hooks: a fused kernel call would skip them (a pruned layer's
    forward pre-hook is what recomputes its weight from weight_orig * weight_mask)."""
    return any(m.__dict__.get(table) for m in modules
               for table in ("_forward_pre_hooks", "_forward_hooks", "_backward_hooks"))


def _conv_activation_pool(owner, named, i):
    items = [m for _, m in named[i:i + 3]]
    # The fused conv + max-pool kernel has no groups.
    if (len(items) < 3 or role(items[0]) != "conv" or items[0].activation is not None
            or getattr(items[0], "groups", 1) != 1 or _hooked(items)):
        return None
    found, k = _activation_of(items[1]), _pool_size(items[2])
    if found is None or k is None or found[0] not in COMMUTES_WITH_MAX:
        return None
    return ConvActivationPool(owner, named[i:i + 3], *found, k)


def _layer_activation(owner, named, i):
    items = [m for _, m in named[i:i + 2]]
    if len(items) < 2 or role(items[0]) not in ("linear", "conv") or items[0].activation is not None \
            or _hooked(items[1:]):
        return None
    found = _activation_of(items[1])
    if found is None or (role(items[0]) == "conv" and found[0] not in EPILOGUE):
        return None
    return LayerActivation(owner, named[i:i + 2], *found)


RULES = (_conv_activation_pool, _layer_activation)  # tried in this order at each position


def plan(named_modules: list, owner: str = "Sequential") -> list:
    """The steps (callables of one input) that compute the modules of (name, module) pairs in
    turn; `owner` names the container in error messages."""
    steps, i = [], 0
    while i < len(named_modules):
        for rule in RULES:
            step = rule(owner, named_modules, i)
            if step is not None:
                steps.append(step)
                i += len(step.modules)
                break
        else:
            steps.append(named_modules[i][1])
            i += 1
    return steps
