"""Pruning by masks, as torch.nn.utils.prune: pruning `weight` of a module moves the Parameter to
`weight_orig` (still the one trained), adds a buffer `weight_mask` (1 keeps an entry, 0 prunes
it) and recomputes `weight = weight_orig * weight_mask` in a forward pre-hook before every
forward. Pruned entries therefore stay zero through training (their gradient is zero through the
product), and state_dict holds `weight_orig` and `weight_mask` as PyTorch's does.

amount: an int is a count of entries (or channels); a float in [0, 1] a fraction, rounded with
Python's round() as PyTorch does. Pruning a tensor again composes the masks: the new amount
applies to the entries (channels) still unpruned. remove() makes the pruning permanent.

Layouts: fusegrad's Conv2d weight is HWIO (KH, KW, C_in, C_out), so ln_structured(conv, "weight",
amount, n, dim=3) (or dim=-1) prunes output channels (PyTorch's dim=0 of its OIHW weight) and
dim=2 input channels. Linear's weight is (out_features, in_features), as in PyTorch.

prune_channels (in channel_pruning.py) is different: it removes channels physically and returns
a smaller dense model."""
from __future__ import annotations

import numbers

import numpy as np

from ..._backend import to_device, to_host
from ...random import default_generator
from ...tensor import Tensor
from ..modules.module import Module, Parameter
from ._amount import check_amount as _check_amount
from ._amount import count_to_prune as _count_to_prune
from .channel_pruning import prune_channels  # noqa: F401 - part of this namespace


def _norms(t, n, dim: int):
    """The Ln norm of each slice of t along `dim` (over all its other axes), as torch.norm(p=n)."""
    axes = tuple(a for a in range(t.ndim) if a != dim)
    a = np.abs(t.astype(np.float64))
    if n == "fro":
        n = 2
    if not isinstance(n, numbers.Real) or isinstance(n, bool):
        raise ValueError(f"ln_structured: n must be a number, inf, -inf or 'fro', got {n!r}")
    if n == float("inf"):
        return a.max(axis=axes)
    if n == float("-inf"):
        return a.min(axis=axes)
    if n == 0:
        return (a != 0).sum(axis=axes).astype(np.float64)
    return (a ** n).sum(axis=axes) ** (1.0 / n)


# -- methods: each computes a mask from a tensor and the mask it starts from ---------------------
class BasePruningMethod:
    """A way to compute a mask (on the host: NumPy arrays in and out, whatever the module's
    device; the mask buffer then goes where the tensor is). Once applied, the method object is
    the module's forward pre-hook that sets `<name> = <name>_orig * <name>_mask`."""

    PRUNING_TYPE = "unstructured"  # "unstructured", "structured" or "global" (how masks compose)
    _tensor_name: str

    def compute_mask(self, t, default_mask):
        """The new mask (an array like t) given the scores t and the current mask."""
        raise NotImplementedError(f"{type(self).__name__} does not define compute_mask")

    def apply_mask(self, module: Module) -> Tensor:
        orig = getattr(module, self._tensor_name + "_orig")
        mask = getattr(module, self._tensor_name + "_mask")
        return orig * mask  # through autograd: the gradient reaches orig only where mask is 1

    def __call__(self, module, inputs):
        setattr(module, self._tensor_name, self.apply_mask(module))

    @classmethod
    def apply(cls, module: Module, name: str, *args, importance_scores=None, **kwargs):
        """Prunes module.<name> with cls(*args, **kwargs), composing with an earlier pruning."""
        _check_target(module, name)
        method = cls(*args, **kwargs)
        method._tensor_name = name
        old_key, old = _pruning_hook(module, name)
        if old is not None:  # a new container, so that a failure below leaves the old one as it was
            method = PruningContainer(*(old if isinstance(old, PruningContainer) else (old,)), method)
        # Scored by the values in use: orig * mask when pruned before (recomputed, not the copy
        # the last forward left, which predates the last optimizer step).
        current = getattr(module, name) if old is None else old.apply_mask(module).detach()
        scores = to_host(current.data if importance_scores is None else _array(importance_scores))
        if scores.shape != current.shape:
            raise ValueError(f"importance_scores of shape {scores.shape} must match {name} of shape {current.shape}")
        if old is None:
            default_mask = np.ones(current.shape, current.dtype)
        else:
            default_mask = to_host(getattr(module, name + "_mask").data).copy()
        mask = method.compute_mask(scores, default_mask)  # raises before the module is touched
        if old is None:
            orig = module._parameters.pop(name)
            module._parameters[name + "_orig"] = orig
        else:
            del module._forward_pre_hooks[old_key]
        module.register_buffer(name + "_mask", Tensor._wrap(to_device(mask.astype(current.dtype), current.device)))
        setattr(module, name, method.apply_mask(module))
        module.register_forward_pre_hook(method)
        return method

    def remove(self, module: Module) -> None:
        """Makes the pruning permanent: <name> becomes a Parameter holding orig * mask."""
        weight = self.apply_mask(module).data
        module.__dict__.pop(self._tensor_name, None)
        orig = module._parameters.pop(self._tensor_name + "_orig")
        del module._buffers[self._tensor_name + "_mask"]
        orig.data = weight
        setattr(module, self._tensor_name, orig)


class PruningContainer(BasePruningMethod):
    """Successive prunings of one tensor: each new method sees only what the earlier left."""

    def __init__(self, *methods):
        self._pruning_methods = ()
        for m in methods:
            self.add_pruning_method(m)

    def add_pruning_method(self, method: BasePruningMethod) -> None:
        if not isinstance(method, BasePruningMethod):
            raise TypeError(f"{type(method).__name__} is not a BasePruningMethod subclass")
        if self._pruning_methods and method._tensor_name != self._tensor_name:
            raise ValueError(f"cannot add pruning of {method._tensor_name!r} to a container for {self._tensor_name!r}")
        self._tensor_name = method._tensor_name
        self._pruning_methods += (method,)

    def __len__(self):
        return len(self._pruning_methods)

    def __iter__(self):
        return iter(self._pruning_methods)

    def compute_mask(self, t, default_mask):
        # The newest method runs on the part the mask still keeps: the unpruned entries
        # (unstructured), the channels with any entry left (structured), or all (global).
        method = self._pruning_methods[-1]
        new_mask = default_mask.astype(t.dtype, copy=True)
        if method.PRUNING_TYPE == "unstructured":
            keep = default_mask == 1
        elif method.PRUNING_TYPE == "structured":
            dim = method.dim % t.ndim
            alive = default_mask.sum(axis=tuple(a for a in range(t.ndim) if a != dim)) != 0
            keep = tuple(alive if a == dim else slice(None) for a in range(t.ndim))
        else:
            keep = tuple(slice(None) for _ in range(t.ndim))
        new_mask[keep] = method.compute_mask(t[keep], default_mask[keep])
        return new_mask


class Identity(BasePruningMethod):
    """Prunes nothing: the mask is all ones (useful to give a module the pruned form)."""

    def compute_mask(self, t, default_mask):
        return default_mask


class _Unstructured(BasePruningMethod):
    """Prunes `amount` entries, those that choose(t, count) names (indices into t flattened)."""

    def __init__(self, amount):
        _check_amount(amount)
        self.amount = amount

    def choose(self, t, count):
        raise NotImplementedError

    def compute_mask(self, t, default_mask):
        count = _count_to_prune(self.amount, t.size)
        mask = default_mask.copy()
        if count:
            mask.reshape(-1)[self.choose(t, count)] = 0
        return mask


class L1Unstructured(_Unstructured):
    """Prunes the `amount` entries of smallest absolute value."""

    def choose(self, t, count):
        return np.argsort(np.abs(t).reshape(-1), kind="stable")[:count]


class RandomUnstructured(_Unstructured):
    """Prunes `amount` entries chosen at random (fusegrad's generator: fusegrad.manual_seed)."""

    def choose(self, t, count):
        return default_generator().permutation(t.size)[:count]


class LnStructured(BasePruningMethod):
    """Prunes the `amount` slices along `dim` of smallest Ln norm (n: a number, inf, -inf, 'fro')."""

    PRUNING_TYPE = "structured"

    def __init__(self, amount, n, dim: int = -1):
        _check_amount(amount)
        self.amount, self.n, self.dim = amount, n, dim

    def compute_mask(self, t, default_mask):
        if t.ndim < 2:
            raise ValueError(f"Structured pruning can only be applied to multidimensional tensors. Found tensor "
                             f"of shape {t.shape} with {t.ndim} dims")
        if not -t.ndim <= self.dim < t.ndim:
            raise IndexError(f"Invalid index {self.dim} for tensor of size {t.shape}")
        dim = self.dim % t.ndim
        count = _count_to_prune(self.amount, t.shape[dim])
        norms = _norms(t, self.n, dim)
        if count == 0:
            return default_mask
        keep = np.argsort(-norms, kind="stable")[:t.shape[dim] - count]  # the largest norms stay
        mask = np.zeros_like(default_mask)
        mask[tuple(keep if a == dim else slice(None) for a in range(t.ndim))] = 1
        return mask * default_mask


class CustomFromMask(BasePruningMethod):
    """Prunes where a given mask is 0."""

    PRUNING_TYPE = "global"

    def __init__(self, mask):
        self.mask = mask

    def compute_mask(self, t, default_mask):
        if self.mask.shape != default_mask.shape:
            raise ValueError(f"mask of shape {self.mask.shape} must match the tensor's shape {default_mask.shape}")
        return default_mask * self.mask.astype(default_mask.dtype)


# -- the functions ---------------------------------------------------------------------------------
def _array(x):
    """The array of a Tensor, a NumPy or CuPy array, or a nested list."""
    return x.data if isinstance(x, Tensor) else x if hasattr(x, "shape") else np.asarray(x)


def _check_target(module, name):
    if not isinstance(module, Module):
        raise TypeError(f"prune: expected an nn.Module, got {type(module).__name__}")
    if _pruning_hook(module, name)[1] is None and not isinstance(module._parameters.get(name), Parameter):
        names = [n for n, p in module._parameters.items() if p is not None]
        raise AttributeError(f"prune: {type(module).__name__} has no parameter {name!r} (it has {names})")


def _pruning_hook(module, name):
    """(key, method) of the pruning hook of module.<name>, or (None, None)."""
    for key, hook in module._forward_pre_hooks.items():
        if isinstance(hook, BasePruningMethod) and hook._tensor_name == name:
            return key, hook
    return None, None


def identity(module: Module, name: str) -> Module:
    Identity.apply(module, name)
    return module


def l1_unstructured(module: Module, name: str, amount, importance_scores=None) -> Module:
    """Prunes the `amount` entries of module.<name> of smallest |value| (or importance score)."""
    L1Unstructured.apply(module, name, amount, importance_scores=importance_scores)
    return module


def random_unstructured(module: Module, name: str, amount) -> Module:
    RandomUnstructured.apply(module, name, amount)
    return module


def ln_structured(module: Module, name: str, amount, n, dim: int, importance_scores=None) -> Module:
    """Prunes the `amount` slices along `dim` with the smallest Ln norms (dim in fusegrad's
    layout: 3 or -1 is a Conv2d's output channels, 0 a Linear's output features)."""
    LnStructured.apply(module, name, amount, n, dim, importance_scores=importance_scores)
    return module


def custom_from_mask(module: Module, name: str, mask) -> Module:
    """Prunes module.<name> where `mask` (an array or Tensor of its shape) is 0."""
    CustomFromMask.apply(module, name, to_host(_array(mask)))
    return module


def global_unstructured(parameters, pruning_method=L1Unstructured, importance_scores=None, **kwargs) -> None:
    """Prunes the (module, name) pairs together: pruning_method(**kwargs) (an unstructured method,
    e.g. amount=0.2 for L1Unstructured) chooses among all their unpruned entries at once, so a
    layer whose weights are small loses more than one whose weights are large."""
    if isinstance(parameters, (str, Module)) or not hasattr(parameters, "__iter__"):
        raise TypeError("global_unstructured(): parameters must be an iterable of (module, name) pairs")
    parameters = list(parameters)
    if any(not (isinstance(p, tuple) and len(p) == 2) for p in parameters):
        raise TypeError("global_unstructured(): parameters must be an iterable of (module, name) pairs")
    for module, name in parameters:
        _check_target(module, name)
    if not parameters:
        return
    importance_scores = importance_scores or {}
    tensors = [getattr(module, name) for module, name in parameters]
    scores = np.concatenate([to_host(_array(importance_scores.get((m, n), t))).reshape(-1)
                             for (m, n), t in zip(parameters, tensors)])
    masks = np.concatenate([(to_host(getattr(m, n + "_mask").data) if _pruning_hook(m, n)[1] is not None
                             else np.ones(t.shape, t.dtype)).reshape(-1)
                            for (m, n), t in zip(parameters, tensors)])
    method = pruning_method(**kwargs)
    if method.PRUNING_TYPE != "unstructured":
        raise TypeError(f'Only "unstructured" PRUNING_TYPE supported for the `pruning_method`. Found method '
                        f"{pruning_method} of type {method.PRUNING_TYPE}")
    method._tensor_name = "global"
    final = PruningContainer(method).compute_mask(scores, masks)
    start = 0
    for (module, name), t in zip(parameters, tensors):
        custom_from_mask(module, name, final[start:start + t.numel()].reshape(t.shape))
        start += t.numel()


def remove(module: Module, name: str) -> Module:
    """Makes the pruning of module.<name> permanent: weight_orig and weight_mask go, and
    module.<name> is again a Parameter (holding the pruned values, zeros included)."""
    key, method = _pruning_hook(module, name)
    if method is None:
        raise ValueError(f"Parameter '{name}' of module {type(module).__name__} has to be pruned before pruning "
                         "can be removed")
    method.remove(module)
    del module._forward_pre_hooks[key]
    return module


def is_pruned(module: Module) -> bool:
    """Whether any submodule of `module` (itself included) has a pruned tensor."""
    return any(isinstance(h, BasePruningMethod) for m in module.modules() for h in m._forward_pre_hooks.values())


__all__ = [
    "BasePruningMethod", "PruningContainer", "Identity", "L1Unstructured", "RandomUnstructured", "LnStructured",
    "CustomFromMask", "identity", "l1_unstructured", "random_unstructured", "ln_structured", "custom_from_mask",
    "global_unstructured", "remove", "is_pruned", "prune_channels",
]
