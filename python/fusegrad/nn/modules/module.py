"""Module and Parameter, as in PyTorch: attributes that are Parameters or Modules are registered,
so parameters(), state_dict(), to(), train()/eval() walk the whole tree."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ... import _backend
from ..._backend import normalise_device, to_device
from ...autograd.engine import Function, is_grad_enabled
from ...tensor import Tensor


class Parameter(Tensor):
    """A Tensor that is a module's learnable state; requires grad unless told otherwise."""

    __slots__ = ()

    def __init__(self, data, requires_grad: bool = True):
        super().__init__(data.data if isinstance(data, Tensor) else data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class Module:
    training: bool

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_forward_pre_hooks", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())
        object.__setattr__(self, "_backward_hooks", OrderedDict())

    # -- registration --------------------------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() before "
                                 "assigning attributes")
        for table in (self._parameters, self._buffers, self._modules):
            table.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        d = self.__dict__
        for table in ("_parameters", "_buffers", "_modules"):
            if table in d and name in d[table]:
                return d[table][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for table in (self._parameters, self._buffers, self._modules):
            if name in table:
                del table[name]
                return
        object.__delattr__(self, name)

    def register_buffer(self, name: str, value) -> None:
        """State that is saved and moved with the module but not trained (e.g. running means)."""
        self.__dict__.pop(name, None)
        self._buffers[name] = value if value is None or isinstance(value, Tensor) else Tensor(value)

    def register_parameter(self, name: str, value: Parameter | None) -> None:
        if value is None:
            self._parameters[name] = None
        else:
            setattr(self, name, value)

    def add_module(self, name: str, module: Module) -> None:
        self._modules[name] = module

    # -- traversal --------------------------------------------------------------------------------
    def named_modules(self, prefix: str = ""):
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        yield from ((n, m) for n, m in self._modules.items() if m is not None)

    def children(self):
        for _, m in self.named_children():
            yield m

    def named_parameters(self, prefix: str = "", recurse: bool = True):
        seen = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mod_prefix, module in modules:
            for name, p in module._parameters.items():
                if p is not None and id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{mod_prefix}.{name}" if mod_prefix else name), p

    def parameters(self, recurse: bool = True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = ""):
        for mod_prefix, module in self.named_modules(prefix):
            for name, b in module._buffers.items():
                if b is not None:
                    yield (f"{mod_prefix}.{name}" if mod_prefix else name), b

    def buffers(self):
        for _, b in self.named_buffers():
            yield b

    # -- modes and state ----------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> Module:
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def apply(self, fn) -> Module:
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    def to(self, device) -> Module:
        """Moves every parameter and buffer to `device` in place (the same objects, new storage);
        state derived from their storage (e.g. a packed int8 weight) is rebuilt on next use."""
        device = normalise_device(device)
        for t in list(self.parameters()) + list(self.buffers()):
            t.data = to_device(t.data, device)
            if t.grad is not None:
                t.grad.data = to_device(t.grad.data, device)
        for module in self.modules():
            reset = getattr(module, "_reset_derived_state", None)
            if reset is not None:
                reset()
        return self

    def cpu(self) -> Module:
        return self.to("cpu")

    def cuda(self, device: int = 0) -> Module:
        return self.to(f"cuda:{device}")

    def state_dict(self) -> OrderedDict:
        """Name -> Tensor (sharing storage) for every parameter and buffer."""
        state = OrderedDict()
        for name, p in self.named_parameters():
            state[name] = p.detach()
        for name, b in self.named_buffers():
            state[name] = b.detach()
        return state

    def load_state_dict(self, state: dict, strict: bool = True):
        """Copies values into the existing parameters and buffers (their devices are kept).

        With strict=True, missing or unexpected keys raise KeyError naming them; a shape mismatch
        always raises ValueError naming the entry. Nothing is changed unless every check passes.
        Returns (missing_keys, unexpected_keys).
        """
        own = dict(self.named_parameters())
        own.update(dict(self.named_buffers()))
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append(f"missing keys: {missing}")
            if unexpected:
                parts.append(f"unexpected keys: {unexpected}")
            raise KeyError(f"load_state_dict for {type(self).__name__}: " + "; ".join(parts))
        values = {}
        for name, target in own.items():
            if name not in state:
                continue
            value = state[name]
            arr = value.data if isinstance(value, Tensor) else value
            if tuple(arr.shape) != target.shape:
                raise ValueError(f"load_state_dict: '{name}' has shape {tuple(arr.shape)} in the state dict "
                                 f"but {target.shape} in the model")
            values[name] = arr
        for name, arr in values.items():
            target = own[name]
            target.data[...] = to_device(arr if isinstance(arr, np.ndarray) else _backend.native(arr)[0],
                                          target.device)
        for module in self.modules():  # what a module computed from its state is stale now
            reset = getattr(module, "_reset_derived_state", None)
            if reset is not None:
                reset()
        return missing, unexpected

    # -- calling ------------------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        # NumPy (and other) arrays are converted once, as fusegrad.tensor converts them.
        args = tuple(Tensor(a) if isinstance(a, np.ndarray) or _backend.is_cupy(a) else a for a in args)
        hooks = self.__dict__
        for hook in tuple(hooks.get("_forward_pre_hooks", {}).values()):
            result = hook(self, args)
            if result is not None:
                args = result if isinstance(result, tuple) else (result,)
        backward_hooks = tuple(hooks.get("_backward_hooks", {}).values())
        if backward_hooks:
            args, state = _hooked_inputs(self, args, backward_hooks)
        out = self.forward(*args, **kwargs)
        for hook in tuple(hooks.get("_forward_hooks", {}).values()):
            result = hook(self, args, out)
            if result is not None:
                out = result
        if backward_hooks:
            out = _hooked_output(out, state)
        return out

    # -- hooks ---------------------------------------------------------------------------------------
    def register_forward_pre_hook(self, hook) -> RemovableHandle:
        """hook(module, args) before forward; it may return new args (a tuple or one value)."""
        return RemovableHandle(self._forward_pre_hooks, hook)

    def register_forward_hook(self, hook) -> RemovableHandle:
        """hook(module, args, output) after forward; it may return a replacement output."""
        return RemovableHandle(self._forward_hooks, hook)

    def register_full_backward_hook(self, hook) -> RemovableHandle:
        """hook(module, grad_input, grad_output) once the gradients of the module's tensor inputs
        are known (grad_input is (None,) ... for inputs that need none; with no input needing one,
        the hook runs when grad_output is known). It may return a tuple replacing grad_input."""
        return RemovableHandle(self._backward_hooks, hook)

    # -- size ------------------------------------------------------------------------------------------
    def num_parameters(self, trainable_only: bool = False) -> int:
        """How many numbers the parameters hold (trainable_only: those that require grad)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def summary(self, print_fn=print) -> str:
        """A table of the submodules with their parameter counts and the totals (Keras's
        model.summary()); printed with print_fn (None: not printed) and returned."""
        rows = [(name or type(self).__name__, type(m).__name__,
                 sum(p.numel() for p in m.parameters(recurse=False))) for name, m in self.named_modules()]
        width = max(len(r[0]) for r in rows) + 2
        lines = [f"{'Layer':<{width}}{'Type':<20}{'Params':>12}", "-" * (width + 32)]
        lines += [f"{n:<{width}}{t:<20}{c:>12,}" for n, t, c in rows]
        total, trainable = self.num_parameters(), self.num_parameters(trainable_only=True)
        lines += ["-" * (width + 32), f"Total params: {total:,}", f"Trainable params: {trainable:,}",
                  f"Non-trainable params: {total - trainable:,}"]
        text = "\n".join(lines)
        if print_fn is not None:
            print_fn(text)
        return text

    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        lines = [f"({name}): " + repr(m).replace("\n", "\n  ") for name, m in self.named_children()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"


class RemovableHandle:
    """What register_*_hook returns: remove() unregisters the hook."""

    _next_id = 0

    def __init__(self, table, hook):
        RemovableHandle._next_id += 1
        self.id, self._table = RemovableHandle._next_id, table
        table[self.id] = hook

    def remove(self) -> None:
        self._table.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


class _HookState:
    def __init__(self, module, hooks, n_inputs):
        self.module, self.hooks = module, hooks
        self.grad_input = [None] * n_inputs
        self.pending = 0
        self.grad_output = None

    def run(self):
        grad_input = tuple(None if g is None else Tensor._wrap(g, False) for g in self.grad_input)
        grad_output = tuple(None if g is None else Tensor._wrap(g, False) for g in self.grad_output)
        for hook in self.hooks:
            result = hook(self.module, grad_input, grad_output)
            if result is not None:
                grad_input = tuple(result)
        return grad_input


class _HookInput(Function):
    """Identity on one tensor input of a module with backward hooks: collects its gradient; the
    last one to arrive runs the hooks."""

    def forward(self, a, state=None, position=0):
        self.state, self.position = state, position
        return a

    def backward(self, g):
        state = self.state
        state.grad_input[self.position] = g
        state.pending -= 1
        if state.pending == 0:
            replaced = state.run()
            g = replaced[self.position].data if replaced[self.position] is not None else g
        return (g,)


class _HookOutput(Function):
    def forward(self, a, state=None):
        self.state = state
        return a

    def backward(self, g):
        self.state.grad_output = (g,)
        if self.state.pending == 0:  # no input needs a gradient: the hooks run now
            self.state.run()
        return (g,)


def _hooked_inputs(module, args, hooks):
    state = _HookState(module, hooks, len(args))
    wrapped = []
    for i, a in enumerate(args):
        if isinstance(a, Tensor) and a.requires_grad and is_grad_enabled():
            state.pending += 1
            a = _HookInput.apply(a, state=state, position=i)
        wrapped.append(a)
    return tuple(wrapped), state


def _hooked_output(out, state):
    if isinstance(out, Tensor) and out.requires_grad:
        return _HookOutput.apply(out, state=state)
    return out
