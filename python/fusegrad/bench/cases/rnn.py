"""Recurrent layers (cpp/rnn/) against PyTorch eager with the same weights and inputs.

Kernel cases: one-layer LSTM and GRU, batch 64, input size = hidden size, hidden 128 and 512, T = 28
and 128; "forward" runs under no_grad on both sides, "train" is forward + backward of y.sum() into
the weight and input gradients. Work: 2·T·B·G·H·(I + H) flops forward (G = 4 gates for the LSTM,
3 for the GRU), three times that forward + backward, bound by the FMA peak.

Training steps: a 28-step sequence of 28 features (an MNIST image read row by row), batch 64, an
LSTM(128) or GRU(128) and a linear head on h_n, cross-entropy and Adam: samples per second.

Overhead: the Python time of one layer call on a tiny sequence (T = 1, B = 1, H = 8): calls per
second, so 1e6 / rate is microseconds per call.

CUDA (cuda/rnn/; skipped without a GPU): the LSTM(512), T = 128, batch 64 forward + backward and the
LSTM(128) and GRU(128) training steps, with inputs, parameters and optimizer state on the device,
against PyTorch's cuDNN RNNs on the same GPU with TF32 off (fusegrad's GEMMs compute in fp32).

On the CPU every sample is preceded by SPINNING_BASELINE_SETTLE_S of untimed calls of the same
candidate (see bench/timer.py): PyTorch's OpenMP workers spin for milliseconds after its call,
and a fusegrad sample taken right after one shares the two cores with them (and the other way
round); a program runs one library's training loop at a time, not both interleaved.
"""
from __future__ import annotations

import numpy as np

from ... import nn, optim, tensor
from ...autograd import no_grad
from ...random import manual_seed
from ..case import SPINNING_BASELINE_SETTLE_S, Case, optional_import

BATCH = 64


def _models(kind: str, inp: int, hidden: int, device: str = "cpu"):
    """Our layer and PyTorch's with the same weights, both on `device` (PyTorch's None, and its
    module too, when it is not installed or has no GPU there)."""
    manual_seed(0)
    ours = (nn.LSTM if kind == "lstm" else nn.GRU)(inp, hidden, batch_first=True)
    torch = optional_import("torch")
    if torch is not None and device == "cuda" and not torch.cuda.is_available():
        torch = None
    theirs = None
    if torch is not None:
        theirs = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(inp, hidden, batch_first=True)
        theirs.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in ours.state_dict().items()})
        theirs = theirs.to(device)
    return ours.to(device), theirs, torch


def _inputs(arrays: list, device: str, torch):
    """The host arrays on `device`: ours (CuPy on a GPU) and PyTorch's."""
    if device == "cuda":
        import cupy as cp

        ours = [cp.asarray(a) for a in arrays]
    else:
        ours = list(arrays)
    theirs = [torch.from_numpy(a).to(device) for a in arrays] if torch is not None else None
    return ours, theirs


def _torch_fp32(torch, device: str):
    """PyTorch on the GPU in true fp32, as fusegrad's kernels compute (set in each call)."""
    if device == "cuda":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False


def _settle(device: str) -> float:
    return SPINNING_BASELINE_SETTLE_S if device == "cpu" else 0.0


def _suffix(device: str) -> str:
    return "/cuda" if device == "cuda" else ""


def _kernel_case(kind: str, hidden: int, steps: int, train: bool, device: str = "cpu") -> Case:
    gates = 4 if kind == "lstm" else 3

    def setup():
        ours, theirs, torch = _models(kind, hidden, hidden, device)
        x = np.random.default_rng(0).standard_normal((BATCH, steps, hidden), dtype=np.float32)
        (xd,), tx = _inputs([x], device, torch)
        xa = tensor(xd, requires_grad=train)
        if train:
            def fusegrad_call():
                ours.zero_grad()
                xa.grad = None
                ours(xa)[0].sum().backward()
        else:
            def fusegrad_call():
                with no_grad():
                    ours(xa)
        base = {}
        if theirs is not None:
            xb = tx[0].requires_grad_(train)
            if train:
                def torch_call():
                    _torch_fp32(torch, device)
                    theirs.zero_grad()
                    xb.grad = None
                    theirs(xb)[0].sum().backward()
            else:
                def torch_call():
                    _torch_fp32(torch, device)
                    with torch.no_grad():
                        theirs(xb)
            base["torch"] = torch_call
        return fusegrad_call, base

    flops = 2.0 * steps * BATCH * gates * hidden * (2 * hidden) * (3 if train else 1)
    what = "train" if train else "forward"
    return Case(f"rnn/{kind}_{what}/T{steps}_B{BATCH}_H{hidden}{_suffix(device)}", "rnn", device, "GFLOP/s", flops,
                setup, limit="fma_GFLOPs" if device == "cpu" else "cublas_fp32_TFLOPs", settle_s=_settle(device))


def _step_case(kind: str, device: str = "cpu") -> Case:
    def setup():
        rng = np.random.default_rng(0)
        x = rng.random((BATCH, 28, 28), dtype=np.float32)
        y = rng.integers(0, 10, BATCH)
        rnn, theirs_rnn, torch = _models(kind, 28, 128, device)
        head = nn.Linear(128, 10)
        head_state = {k: v.numpy().copy() for k, v in head.state_dict().items()}
        head = head.to(device)
        params = list(rnn.parameters()) + list(head.parameters())
        opt, loss_fn = optim.Adam(params, lr=1e-3), nn.CrossEntropyLoss()
        (xd, yd), theirs_xy = _inputs([x, y], device, torch)

        def step():
            opt.zero_grad()
            state = rnn(tensor(xd))[1]
            h = state[0] if kind == "lstm" else state
            loss_fn(head(h[0]), yd).backward()
            opt.step()

        base = {}
        if torch is not None:
            theirs_head = torch.nn.Linear(128, 10)
            theirs_head.load_state_dict({k: torch.from_numpy(v) for k, v in head_state.items()})
            theirs_head = theirs_head.to(device)
            topt = torch.optim.Adam(list(theirs_rnn.parameters()) + list(theirs_head.parameters()), lr=1e-3,
                                    **({"fused": True} if device == "cuda" else {}))
            tloss, (tx, ty) = torch.nn.CrossEntropyLoss(), theirs_xy

            def torch_step():
                _torch_fp32(torch, device)
                topt.zero_grad()
                state = theirs_rnn(tx)[1]
                h = state[0] if kind == "lstm" else state
                tloss(theirs_head(h[0]), ty).backward()
                topt.step()

            base["torch"] = torch_step
        return step, base

    return Case(f"rnn/{kind}_adam_step/seq28x28_H128/batch{BATCH}{_suffix(device)}", "rnn", device, "samples/s",
                BATCH, setup, settle_s=_settle(device))


def _overhead_case(kind: str) -> Case:
    def setup():
        ours, theirs, torch = _models(kind, 8, 8)
        x = np.random.default_rng(0).standard_normal((1, 1, 8), dtype=np.float32)
        xa = tensor(x)
        base = {}
        if theirs is not None:
            xb = torch.from_numpy(x)
            base["torch"] = lambda: theirs(xb)
        return (lambda: ours(xa)), base

    return Case(f"rnn/{kind}_call_overhead/T1_B1_H8", "rnn", "cpu", "samples/s", 1, setup,
                note="calls/s of one layer call (forward, grad mode on); 1e6 / rate = microseconds per call",
                settle_s=SPINNING_BASELINE_SETTLE_S)


def cases():
    out = [_kernel_case("lstm", 512, 128, True, "cuda"), _step_case("lstm", "cuda"), _step_case("gru", "cuda")]
    for kind in ("lstm", "gru"):
        out.append(_step_case(kind))
        for hidden in (128, 512):
            for steps in (28, 128):
                for train in (False, True):
                    out.append(_kernel_case(kind, hidden, steps, train))
        out.append(_overhead_case(kind))
    return out
