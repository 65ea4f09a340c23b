from __future__ import annotations

from .. import ops
from .optimizer import Optimizer


class Adam(Optimizer):
    """torch.optim.Adam (weight_decay is L2, added to the gradient); AdamW decouples it. flat=True
    keeps the parameters, gradients and moments in contiguous arenas (see Optimizer)."""

    decoupled_weight_decay = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, maximize: bool = False, flat: bool = False):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      maximize=maximize), flat)

    def _check_group(self, group):
        super()._check_group(group)
        b1, b2 = group["betas"]
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"betas must be in [0, 1), got {group['betas']}")
        if group["eps"] <= 0:
            raise ValueError(f"eps must be > 0, got {group['eps']}")

    def _state_names(self, group):
        return ("exp_avg", "exp_avg_sq")

    def step(self) -> None:
        for i, group in enumerate(self.param_groups):
            beta1, beta2 = group["betas"]
            for step, arrays, states in self._batches(i):
                ops.adam_step(
                    arrays["params"], arrays["grads"], arrays["exp_avg"], arrays["exp_avg_sq"],
                    step=step + 1, lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
                    weight_decay=group["weight_decay"], decoupled_weight_decay=self.decoupled_weight_decay,
                    maximize=group["maximize"])
                for s in states:
                    s["step"] = step + 1


class AdamW(Adam):
    """torch.optim.AdamW: weight decay applied to the parameter, not added to the gradient."""

    decoupled_weight_decay = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, maximize: bool = False, flat: bool = False):
        super().__init__(params, lr, betas, eps, weight_decay, maximize, flat)
