"""Optimizer base: parameter groups, per-parameter state, zero_grad, state_dict.

Steps run the fused multi-tensor kernels of fusegrad.ops: every parameter of a group (on one device,
at one step count) is updated by one kernel call, not one per tensor.

With flat=True the optimizer also moves each group's trainable parameters (per dtype and device)
into one contiguous arena: every Parameter's .data becomes a view into it, its .grad a Tensor over a
view of a matching gradient arena, and its state buffers views of state arenas. A step then updates
the whole arena as one flat array, with no per-tensor work at all. Whenever a parameter of an arena
has left that arrangement (its .grad replaced or None, frozen after construction, .data re-bound),
that group's step falls back to the per-tensor path over the same state views, so the numbers are
the same either way. Caveats: zero_grad() zeroes the gradient arena and leaves the grads allocated
(set_to_none is ignored for arena parameters), so, as with zero_grad(set_to_none=False), a parameter
that got no gradient in a backward still takes a step with a zero gradient (momentum and weight decay
act on it); moving the model (Module.to) after building a flat optimizer is an error at the next
zero_grad or step: build the optimizer after moving the model; parameters that shared storage
before are no longer tied after flattening.
"""
from __future__ import annotations

import copy

import numpy as np

from .. import ops
from .._backend import array_module, on_host, to_device
from ..tensor import Tensor


class _Arena:
    """One group's trainable parameters of one dtype on one device, in contiguous buffers."""

    def __init__(self, params, state_names):
        self.params = params
        self.ids = frozenset(id(p) for p in params)
        self.device = params[0].device
        datas = [p.data for p in params]
        self.data, self.data_views = ops.flatten_params(datas)
        self.grad, grad_views = ops.flatten_params(datas, zeros=True)
        self.state = {}  # name -> (flat, views)
        for name in state_names:
            self.state[name] = ops.flatten_params(datas, zeros=True)
        self.grads = []  # the Tensor each parameter's .grad is while the arena is intact
        for p, view, grad_view in zip(params, self.data_views, grad_views):
            if p.grad is not None:  # keep a gradient computed before the optimizer was built
                grad_view[...] = p.grad.data
            p.data = view
            p.grad = Tensor._wrap(grad_view, False)
            self.grads.append(p.grad)
        self.grad_views = grad_views

    def batch(self, all_state: dict, names):
        """(step, arrays, states) for one kernel call over the whole arena, or None when some
        parameter has left the arena's arrangement (the per-tensor path must take this step)."""
        if any(name not in self.state for name in names):
            return None
        # Identity checks only, in plain loops (no generator per parameter): this runs per
        # parameter per step, and is all the Python work a flat step does.
        state_views = [(name, self.state[name][1]) for name in names]
        get, states = all_state.get, []
        for i, (p, data_view, g, grad_view) in enumerate(zip(self.params, self.data_views, self.grads,
                                                               self.grad_views)):
            s = get(id(p))
            if (s is None or not p.requires_grad or p.data is not data_view or p.grad is not g
                    or g.data is not grad_view):
                return None
            for name, views in state_views:
                if s.get(name) is not views[i]:
                    return None
            states.append(s)
        step = states[0]["step"]
        for s in states:
            if s["step"] != step:
                return None
        arrays = {"params": [self.data], "grads": [self.grad]}
        arrays.update({name: [self.state[name][0]] for name in names})
        return step, arrays, states

    def check_device(self) -> None:
        for p in self.params:
            if p.device != self.device:
                raise RuntimeError(
                    f"a parameter of shape {p.shape} moved from {self.device} to {p.device} after this flat "
                    "optimizer was built (Module.to?); build the optimizer after moving the model")

    def bind_state(self, all_state: dict) -> None:
        """Makes each parameter's state buffers the arena's views, copying in any values it had."""
        for i, p in enumerate(self.params):
            s = all_state.setdefault(id(p), {"step": 0})
            for name, (_, views) in self.state.items():
                view, value = views[i], s.get(name)
                if value is None:
                    view[...] = 0
                elif value is not view:
                    view[...] = value
                s[name] = view

    def zero_grad(self) -> None:
        for p, view in zip(self.params, self.data_views):
            if p.data is not view:  # re-bound: fail here, not in backward with a mixed-device error
                self.check_device()
        self.grad[...] = 0  # one pass over every gradient, padding included
        for p, g, view in zip(self.params, self.grads, self.grad_views):
            g.data = view
            p.grad = g


class Optimizer:
    def __init__(self, params, defaults: dict, flat: bool = False):
        self.defaults = defaults
        self.flat = bool(flat)
        self.param_groups: list[dict] = []
        self.state: dict[int, dict] = {}  # id(param) -> state
        self._arenas: list[list[_Arena]] = []  # per group (empty unless flat)
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: dict) -> None:
        group = dict(group)
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer params must be Tensors, got {type(p).__name__}")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        group["params"] = params
        self._check_group(group)
        self.param_groups.append(group)
        arenas = []
        if self.flat:
            # Frozen parameters stay out: they take no step, and their memory stays where it is.
            trainable = [p for p in params if p.requires_grad]
            names = self._state_names(group)
            for index in ops.group_by_dtype_device([p.data for p in trainable]).values():
                arena = _Arena([trainable[i] for i in index], names)
                arena.bind_state(self.state)
                arenas.append(arena)
        self._arenas.append(arenas)

    def _state_names(self, group: dict) -> tuple:
        """Names of the per-parameter state buffers a step of this group uses."""
        return ()

    def _check_group(self, group: dict) -> None:
        if group["lr"] < 0:
            raise ValueError(f"lr must be >= 0, got {group['lr']}")

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clears the gradients. Parameters in a flat arena keep their gradient views (zeroed in
        one pass), whatever set_to_none says, so the next step is again one flat update."""
        in_arena = set()
        for arenas in self._arenas:
            for arena in arenas:
                arena.zero_grad()
                in_arena |= arena.ids
        for group in self.param_groups:
            for p in group["params"]:
                if id(p) in in_arena:
                    continue
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    def _state(self, p: Tensor, *names: str) -> dict:
        """The state of p, creating zero buffers named `names` and a step count of 0 if new."""
        state = self.state.get(id(p))
        if state is None:
            state = {"step": 0}
            for name in names:
                state[name] = array_module(p.data).zeros_like(p.data)
            self.state[id(p)] = state
        return state

    def _batches(self, group_index: int):
        """[(step, arrays, states)]: the kernel calls of one group's step, each over the arrays
        {"params": [...], "grads": [...], state name: [...]} of parameters at one step count on one
        device; `states` are the states whose step count the caller advances after the call.
        An intact flat arena is one call on its whole buffers; other parameters go tensor by tensor."""
        group = self.param_groups[group_index]
        names = self._state_names(group)
        batches, done = [], set()
        for arena in self._arenas[group_index]:
            batch = arena.batch(self.state, names)
            if batch is None:
                arena.check_device()
            else:
                batches.append(batch)
                done |= arena.ids
        keyed: dict = {}
        for p in group["params"] if len(done) < len(group["params"]) else ():
            if id(p) in done or not p.requires_grad or p.grad is None:
                continue
            s = self._state(p, *names)
            arrays, states = keyed.setdefault((p.device, s["step"]), ({"params": [], "grads": [],
                                                                     **{n: [] for n in names}}, []))
            arrays["params"].append(p.data)
            arrays["grads"].append(p.grad.data)
            for n in names:
                arrays[n].append(s[n])
            states.append(s)
        batches += [(step, arrays, states) for (_, step), (arrays, states) in keyed.items()]
        return batches

    def step(self):
        raise NotImplementedError

    # -- state_dict ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """{"state": {index: {name: array or int}}, "param_groups": [{..., "params": [indices]}]}
        with parameters numbered in group order, as PyTorch does."""
        index, groups = {}, []
        for group in self.param_groups:
            ids = []
            for p in group["params"]:
                index.setdefault(id(p), len(index))
                ids.append(index[id(p)])
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
        state = {}
        for group in self.param_groups:
            for p in group["params"]:
                # A flat optimizer holds a state (step 0, zero buffers) for every parameter from
                # the start; a never-stepped one is left out, as the per-tensor path never made it.
                if id(p) in self.state and self.state[id(p)]["step"] > 0:
                    state[index[id(p)]] = {k: (v.copy() if hasattr(v, "copy") and not isinstance(v, int) else v)
                                           for k, v in self.state[id(p)].items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"optimizer state has {len(groups)} parameter groups, this optimizer has "
                             f"{len(self.param_groups)}")
        for i, (saved, own) in enumerate(zip(groups, self.param_groups)):
            if len(saved["params"]) != len(own["params"]):
                raise ValueError(f"parameter group {i} has {len(saved['params'])} parameters in the state, "
                                 f"{len(own['params'])} in this optimizer")
        new_state = {}
        for saved, own in zip(groups, self.param_groups):
            for index, p in zip(saved["params"], own["params"]):
                entry = state_dict["state"].get(index)
                if entry is None:
                    continue
                restored = {}
                for name, value in entry.items():
                    if hasattr(value, "shape") and value.shape != ():
                        if tuple(value.shape) != p.shape:
                            raise ValueError(f"optimizer state '{name}' of parameter {index} has shape "
                                             f"{tuple(value.shape)}, the parameter has {p.shape}")
                        value = to_device(np.asarray(value, np.float32) if on_host(value)
                                           else value, p.device).copy()
                    restored[name] = int(value) if name == "step" else value
                new_state[id(p)] = restored
        self.state = new_state
        for arenas in self._arenas:  # flat: copy the loaded buffers into the arena views
            for arena in arenas:
                arena.bind_state(self.state)
        for saved, own in zip(groups, self.param_groups):
            own.update({k: copy.deepcopy(v) for k, v in saved.items() if k != "params"})

    def __repr__(self):
        lines = [type(self).__name__ + " ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params"]
        return "\n".join(lines) + "\n)"
