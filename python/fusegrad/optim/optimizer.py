"""Optimizer base: parameter groups, per-parameter state, zero_grad, state_dict.

Steps run the fused multi-tensor kernels of fusegrad.ops: every parameter of a group (on one device,
at one step count) is updated by one kernel call, not one per tensor.
"""
from __future__ import annotations

import copy

import numpy as np

from ..tensor import Tensor, _to_device, _xp


class Optimizer:
    def __init__(self, params, defaults: dict):
        self.defaults = defaults
        self.param_groups: list[dict] = []
        self.state: dict[int, dict] = {}  # id(param) -> state
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

    def _check_group(self, group: dict) -> None:
        if group["lr"] < 0:
            raise ValueError(f"lr must be >= 0, got {group['lr']}")

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    def _trainable(self, group: dict):
        """Parameters of a group that take a step: they require grad and have one."""
        return [p for p in group["params"] if p.requires_grad and p.grad is not None]

    def _state(self, p: Tensor, *names: str) -> dict:
        """The state of p, creating zero buffers named `names` and a step count of 0 if new."""
        state = self.state.get(id(p))
        if state is None:
            state = {"step": 0}
            for name in names:
                state[name] = _xp(p.data).zeros_like(p.data)
            self.state[id(p)] = state
        return state

    @staticmethod
    def _batches(params, states):
        """Groups parameters by (device, step count) so each batch is one fused kernel call."""
        batches: dict = {}
        for p, s in zip(params, states):
            batches.setdefault((p.device, s["step"]), []).append((p, s))
        return batches.items()

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
                if id(p) in self.state:
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
                        value = _to_device(np.asarray(value, np.float32) if isinstance(value, np.ndarray)
                                           else value, p.device).copy()
                    restored[name] = int(value) if name == "step" else value
                new_state[id(p)] = restored
        self.state = new_state
        for saved, own in zip(groups, self.param_groups):
            own.update({k: copy.deepcopy(v) for k, v in saved.items() if k != "params"})

    def __repr__(self):
        lines = [type(self).__name__ + " ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params"]
        return "\n".join(lines) + "\n)"
