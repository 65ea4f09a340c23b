from __future__ import annotations

from .. import ops
from .optimizer import Optimizer


class Adam(Optimizer):
    """torch.optim.Adam (weight_decay is L2, added to the gradient); AdamW decouples it."""

    decoupled_weight_decay = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, maximize: bool = False):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      maximize=maximize))

    def _check_group(self, group):
        super()._check_group(group)
        b1, b2 = group["betas"]
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"betas must be in [0, 1), got {group['betas']}")
        if group["eps"] <= 0:
            raise ValueError(f"eps must be > 0, got {group['eps']}")

    def step(self) -> None:
        for group in self.param_groups:
            params = self._trainable(group)
            states = [self._state(p, "exp_avg", "exp_avg_sq") for p in params]
            beta1, beta2 = group["betas"]
            for (_, step), items in self._batches(params, states):
                ps = [p for p, _ in items]
                ops.adam_step(
                    [p.data for p in ps], [p.grad.data for p in ps],
                    [s["exp_avg"] for _, s in items], [s["exp_avg_sq"] for _, s in items],
                    step=step + 1, lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
                    weight_decay=group["weight_decay"], decoupled_weight_decay=self.decoupled_weight_decay,
                    maximize=group["maximize"])
                for _, s in items:
                    s["step"] = step + 1


class AdamW(Adam):
    """torch.optim.AdamW: weight decay applied to the parameter, not added to the gradient."""

    decoupled_weight_decay = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, maximize: bool = False):
        super().__init__(params, lr, betas, eps, weight_decay, maximize)
