from __future__ import annotations

from .. import ops
from .optimizer import Optimizer


class SGD(Optimizer):
    """torch.optim.SGD: momentum, dampening, Nesterov, L2 weight decay, maximize. flat=True keeps
    the parameters, gradients and momentum buffers in contiguous arenas (see Optimizer)."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, maximize: bool = False, flat: bool = False):
        if momentum < 0 or weight_decay < 0:
            raise ValueError(f"momentum and weight_decay must be >= 0, got {momentum}, {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum needs momentum > 0 and dampening = 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov, maximize=maximize), flat)

    def _state_names(self, group):
        return ("momentum_buffer",) if group["momentum"] else ()

    def step(self) -> None:
        for i, group in enumerate(self.param_groups):
            for step, arrays, states in self._batches(i):
                ops.sgd_step(
                    arrays["params"], arrays["grads"], arrays.get("momentum_buffer"),
                    step=step + 1, lr=group["lr"], momentum=group["momentum"], dampening=group["dampening"],
                    nesterov=group["nesterov"], weight_decay=group["weight_decay"], maximize=group["maximize"])
                for s in states:
                    s["step"] = step + 1
