from __future__ import annotations

from .. import ops
from .optimizer import Optimizer


class SGD(Optimizer):
    """torch.optim.SGD: momentum, dampening, Nesterov, L2 weight decay, maximize."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, maximize: bool = False):
        if momentum < 0 or weight_decay < 0:
            raise ValueError(f"momentum and weight_decay must be >= 0, got {momentum}, {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum needs momentum > 0 and dampening = 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov, maximize=maximize))

    def step(self) -> None:
        for group in self.param_groups:
            params = self._trainable(group)
            buffers = ("momentum_buffer",) if group["momentum"] else ()
            states = [self._state(p, *buffers) for p in params]
            for (_, step), items in self._batches(params, states):
                ps = [p for p, _ in items]
                ops.sgd_step(
                    [p.data for p in ps], [p.grad.data for p in ps],
                    [s["momentum_buffer"] for _, s in items] if buffers else None,
                    step=step + 1, lr=group["lr"], momentum=group["momentum"], dampening=group["dampening"],
                    nesterov=group["nesterov"], weight_decay=group["weight_decay"], maximize=group["maximize"])
                for _, s in items:
                    s["step"] = step + 1
