"""ZeroRedundancyOptimizer: ZeRO stage 1, the optimizer state sharded over the ranks.

All trainable parameters are laid end to end in one flat vector (padded to a multiple of the world
size) and cut into world_size equal slices; rank r keeps optimizer state for slice r only. A step
takes the (already all-reduced, e.g. by DistributedDataParallel) gradients' slice, steps it with
the wrapped optimizer's fused kernel as one flat array, and all-gathers the updated slices into
every parameter. Element-wise optimizers (Adam, AdamW, SGD) therefore take exactly the step they
would take unsharded, with 1/world_size of the state memory per rank.

state_dict() gathers the whole state (a collective: every rank must call it) in the plain
optimizer's format, per parameter; load_state_dict() takes such a state, from any world size.
"""
from __future__ import annotations

import numpy as np

from .. import distributed as dist
from .._backend import array_module, on_host, to_device
from ..tensor import Tensor


class ZeroRedundancyOptimizer:
    """optimizer_class (e.g. optim.AdamW) over this rank's slice of `params`; **defaults go to it."""

    state_dict_is_collective = True

    def __init__(self, params, optimizer_class, **defaults):
        params = list(params)
        if not params or isinstance(params[0], dict):
            raise ValueError("ZeroRedundancyOptimizer takes a non-empty list of parameters (one group)")
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer params must be Tensors, got {type(p).__name__}")
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise ValueError("ZeroRedundancyOptimizer: no parameter requires a gradient")
        dtypes = {p.dtype for p in self.params} | {p.device for p in self.params}
        if len(dtypes) != 2:
            raise TypeError("ZeroRedundancyOptimizer: all trainable parameters must share one dtype and device")
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.sizes = [p.data.size for p in self.params]
        self.total = sum(self.sizes)
        self.shard_size = -(-self.total // self.world_size)
        xp = array_module(self.params[0].data)
        self._xp = xp
        self._flat = xp.zeros(self.shard_size * self.world_size, self.params[0].dtype)
        self._pack([p.data for p in self.params], self._flat)
        lo = self.rank * self.shard_size
        self._shard = Tensor._wrap(self._flat[lo:lo + self.shard_size].copy(), True)
        self._shard.grad = Tensor._wrap(xp.zeros_like(self._shard.data), False)
        self.optimizer_class = optimizer_class
        self.optim = optimizer_class([self._shard], **defaults)
        self.param_groups = self.optim.param_groups  # lr schedulers edit these
        self.defaults = self.optim.defaults

    def _pack(self, arrays, flat):
        off = 0
        for a, n in zip(arrays, self.sizes):
            flat[off:off + n] = a.reshape(-1)
            off += n
        flat[off:] = 0

    def _unpack(self, flat):
        off, out = 0, []
        for p, n in zip(self.params, self.sizes):
            out.append(flat[off:off + n].reshape(p.shape))
            off += n
        return out

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def step(self) -> None:
        lo, n = self.rank * self.shard_size, self.shard_size
        # this rank's slice of the flat gradient, gathered straight from the parameters it touches
        g = self._shard.grad.data
        g[...] = 0
        off = 0
        for p, size in zip(self.params, self.sizes):
            a, b = max(off, lo), min(off + size, lo + n)
            if a < b and p.grad is not None:
                g[a - lo:b - lo] = p.grad.data.reshape(-1)[a - off:b - off]
            off += size
        self.optim.step()
        if self.world_size > 1:
            gathered = dist.all_gather(self._shard.data, out=self._flat.reshape(self.world_size, n))
            flat = gathered.reshape(-1)
        else:
            flat = self._flat
            flat[:n] = self._shard.data
        for p, value in zip(self.params, self._unpack(flat)):
            p.data[...] = value

    def local_state_elements(self) -> int:
        """Elements of optimizer state this rank holds (falls as 1/world_size)."""
        state = self.optim.state.get(id(self._shard), {})
        return int(sum(v.size for v in state.values() if hasattr(v, "size") and getattr(v, "ndim", 0) > 0))

    def _names(self):
        return self.optim._state_names(self.optim.param_groups[0])

    def state_dict(self) -> dict:
        """The whole state in the wrapped optimizer's format (a collective)."""
        s = self.optim.state.get(id(self._shard))
        step = int(s["step"]) if s else 0
        state = {}
        if step > 0:
            per_param = [{"step": step} for _ in self.params]
            for name in self._names():
                local = s[name]
                full = (dist.all_gather(local).reshape(-1) if self.world_size > 1 else local)
                for entry, value in zip(per_param, self._unpack(full)):
                    entry[name] = value.copy()
            state = dict(enumerate(per_param))
        groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": list(range(len(self.params)))}
                  for g in self.optim.param_groups]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """The whole state (as state_dict() or the plain optimizer gives it), sliced for this rank."""
        groups = state_dict["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(self.params):
            raise ValueError(f"optimizer state has {sum(len(g['params']) for g in groups)} parameters in "
                             f"{len(groups)} groups; this ZeroRedundancyOptimizer has {len(self.params)} in one")
        entries = [state_dict["state"].get(i) for i in groups[0]["params"]]
        lo, n = self.rank * self.shard_size, self.shard_size
        if all(e is None for e in entries):
            self.optim.state = {}
        else:
            steps = {int(e["step"]) for e in entries if e is not None}
            if len(steps) != 1 or any(e is None for e in entries):
                raise ValueError("ZeroRedundancyOptimizer: every parameter's state must be at one step count")
            new = {"step": steps.pop()}
            for name in self._names():
                arrays = []
                for i, (e, p) in enumerate(zip(entries, self.params)):
                    value = e[name]
                    if tuple(value.shape) != p.shape:
                        raise ValueError(f"optimizer state '{name}' of parameter {i} has shape "
                                         f"{tuple(value.shape)}, the parameter has {p.shape}")
                    arrays.append(to_device(np.asarray(value, np.float32), p.device) if on_host(value) else value)
                full = self._xp.zeros_like(self._flat)
                self._pack(arrays, full)
                new[name] = full[lo:lo + n].copy()
            self.optim.state = {id(self._shard): new}
        self.optim.param_groups[0].update({k: v for k, v in groups[0].items() if k != "params"})

    def __repr__(self):
        return (f"ZeroRedundancyOptimizer({self.optimizer_class.__name__}, rank {self.rank} of {self.world_size}, "
                f"{self.shard_size} of {self.total} elements)")
