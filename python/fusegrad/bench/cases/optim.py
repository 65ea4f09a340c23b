"""Optimizer cases: one AdamW or SGD-momentum step over a whole parameter list.

Work is counted as the bytes a step must move through memory, each array touched once:
  AdamW:        read p, g, m, v and write p, m, v      = 28 bytes per float32 parameter;
  SGD momentum: read p, g, buf and write p, buf        = 20 bytes per parameter.
So the fraction of copy_GBps reported is how close a step comes to the byte floor (bytes moved
divided by the measured copy bandwidth). Lists: 1M and 30M parameters in 10 tensors, 300 tensors
of 10k (many small tensors: the launch/fork-join cost per tensor shows there), and on the GPU 100M
in 10 tensors. Baselines: torch.optim's own AdamW/SGD with fused=True and with foreach=True, built
over torch tensors of the same sizes with .grad set, timing opt.step().
optim/adamw_flat_step times the whole Python optimizer, optim.AdamW(flat=True).step() (one arena),
against optim.AdamW(flat=False).step() (per-tensor lists) and torch.optim.AdamW on 300 x 10k.
"""
from __future__ import annotations

import numpy as np

from ... import ops
from ..case import Case, optional_import

BYTES_PER_PARAM = {"adamw": 28, "sgd_momentum": 20}
LR, WEIGHT_DECAY, MOMENTUM = 1e-3, 0.01, 0.9

CPU_LISTS = {"1M_10t": [100_000] * 10, "30M_10t": [3_000_000] * 10, "300t_10k": [10_000] * 300}
GPU_LISTS = {"30M_10t": [3_000_000] * 10, "100M_10t": [10_000_000] * 10, "300t_10k": [10_000] * 300}


def _fusegrad_step(kind: str, xp, sizes):
    rng = np.random.default_rng(0)

    def arr(scale=1.0):
        return [xp.asarray((rng.standard_normal(n, dtype=np.float32) * scale)) for n in sizes]

    params, grads = arr(), arr(1e-2)
    state = {"step": 0}
    if kind == "adamw":
        m, v = [xp.zeros(n, dtype=np.float32) for n in sizes], [xp.zeros(n, dtype=np.float32) for n in sizes]

        def step():
            state["step"] += 1
            ops.adam_step(params, grads, m, v, step=state["step"], lr=LR, weight_decay=WEIGHT_DECAY,
                          decoupled_weight_decay=True)
    else:
        bufs = [xp.zeros(n, dtype=np.float32) for n in sizes]

        def step():
            state["step"] += 1
            ops.sgd_step(params, grads, bufs, step=state["step"], lr=LR, momentum=MOMENTUM)
    return step


def _torch_steps(torch, kind: str, sizes, device: str) -> dict:
    """{"torch_fused": step, "torch_foreach": step}, leaving out what this torch cannot build."""
    out = {}
    for variant in ("fused", "foreach"):
        gen = torch.Generator(device="cpu").manual_seed(0)
        params = []
        for n in sizes:
            p = torch.randn(n, generator=gen).to(device).requires_grad_(True)
            p.grad = (torch.randn(n, generator=gen) * 1e-2).to(device)
            params.append(p)
        flag = {variant: True}
        try:
            if kind == "adamw":
                opt = torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY, **flag)
            else:
                opt = torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, **flag)
            opt.step()  # creates the state (and fails here if this device has no such kernel)
        except (RuntimeError, ValueError, TypeError):
            continue
        out[f"torch_{variant}"] = opt.step
    return out


def _case(kind: str, list_name: str, sizes, device: str) -> Case:
    def setup():
        torch = optional_import("torch")
        if device == "cpu":
            ours = _fusegrad_step(kind, np, sizes)
            base = _torch_steps(torch, kind, sizes, "cpu") if torch is not None else {}
        else:
            import cupy as cp

            ours = _fusegrad_step(kind, cp, sizes)
            base = (_torch_steps(torch, kind, sizes, "cuda")
                    if torch is not None and torch.cuda.is_available() else {})
        ours()  # first step outside the timing (SGD's first step does not read the buffer)
        return ours, base

    total = sum(sizes)
    return Case(f"optim/{kind}/{list_name}/{device}", "optim", device, "GB/s", BYTES_PER_PARAM[kind] * total, setup,
                limit="copy_GBps" if device == "cpu" else "cuda_copy_GBps",
                note=f"{len(sizes)} tensors, {total / 1e6:g}M params, {BYTES_PER_PARAM[kind]} B/param")


def _optimizer_step(flat: bool, xp, sizes):
    """A whole fusegrad optim.AdamW step over Parameters with their .grad set, per-tensor or flat."""
    from ... import nn, optim
    from ...tensor import Tensor

    rng = np.random.default_rng(0)
    params = [nn.Parameter(xp.asarray(rng.standard_normal(n, dtype=np.float32))) for n in sizes]
    grads = [xp.asarray(rng.standard_normal(n, dtype=np.float32) * 1e-2) for n in sizes]
    for p, g in zip(params, grads):
        p.grad = Tensor._wrap(g, False)
    # flat=True copies each .grad into the gradient arena and re-points p.grad at its view
    opt = optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY, flat=flat)
    return opt.step


def _optimizer_case(list_name: str, sizes, device: str) -> Case:
    """optim.AdamW(flat=True).step() against the per-tensor optim.AdamW step and torch.optim's:
    what one arena saves over per-tensor lists once the Python optimizer's own work is counted."""

    def setup():
        torch = optional_import("torch")
        if device == "cpu":
            xp, torch_device = np, "cpu"
        else:
            import cupy as xp

            torch_device = "cuda"
        ours = _optimizer_step(True, xp, sizes)
        base = {"fusegrad_per_tensor": _optimizer_step(False, xp, sizes)}
        if torch is not None and (device == "cpu" or torch.cuda.is_available()):
            base.update(_torch_steps(torch, "adamw", sizes, torch_device))
        ours()
        base["fusegrad_per_tensor"]()
        return ours, base

    total = sum(sizes)
    return Case(f"optim/adamw_flat_step/{list_name}/{device}", "optim", device, "GB/s",
                BYTES_PER_PARAM["adamw"] * total, setup, limit="copy_GBps" if device == "cpu" else "cuda_copy_GBps",
                note=f"optim.AdamW(flat=True).step(), {len(sizes)} tensors, {total / 1e6:g}M params")


def _subnormal_state_case() -> Case:
    """One AdamW step over 4M parameters whose running averages are all subnormal (what Adam's
    state of small gradients drifts into), against the same step on normal state: with the
    kernels flushing subnormals (fusegrad.set_flush_denormal, on by default) the two must run at
    the same speed; without, each subnormal operand costs a microcode assist."""
    n = 4_000_000

    def stepper(scale):
        rng = np.random.default_rng(0)
        p = rng.standard_normal(n, dtype=np.float32)
        g = (rng.standard_normal(n, dtype=np.float32) * scale).astype(np.float32)
        m = np.full(n, scale, np.float32)
        v = np.full(n, scale * scale if scale > 1e-30 else 1e-40, np.float32)
        state = {"step": 0}

        def step():
            state["step"] += 1
            # Refill the state so that every step sees it (the step itself would flush it).
            m.fill(scale)
            v.fill(1e-40 if scale < 1e-30 else scale * scale)
            ops.adam_step(p, g, m, v, step=state["step"], lr=LR, weight_decay=WEIGHT_DECAY,
                          decoupled_weight_decay=True)
        return step

    def setup():
        return stepper(1e-39), {"normal_state": stepper(1e-3)}

    return Case("optim/adamw_subnormal_state/4M", "optim", "cpu", "GB/s", (BYTES_PER_PARAM["adamw"] + 8) * n, setup,
                limit="copy_GBps", note="state refilled each step (+8 bytes/param); speedup vs normal_state ~1.0")


def cases():
    out = [_subnormal_state_case()]
    for kind in ("adamw", "sgd_momentum"):
        out += [_case(kind, name, sizes, "cpu") for name, sizes in CPU_LISTS.items()]
    out.append(_optimizer_case("300t_10k", CPU_LISTS["300t_10k"], "cpu"))
    for kind in ("adamw", "sgd_momentum"):
        out += [_case(kind, name, sizes, "cuda") for name, sizes in GPU_LISTS.items()]
    out.append(_optimizer_case("300t_10k", GPU_LISTS["300t_10k"], "cuda"))
    return out
