"""Softmax and fused-loss cases (family "activation"). CPU: the ImageNet-sized classifier head
(4096 x 1000) and the MNIST one (128 x 10). CUDA: heads big enough to measure bandwidth (16384 x
1000, 64 MB) and a language-model head (4096 x 32000, 512 MB: the long-row kernels), long rows kept
in shared memory (8192 x 8192), and a softmax over the first axis (the strided kernels), against
PyTorch's F.softmax / F.cross_entropy on the same memory.

Work is bytes moved through memory: the fused losses read the logits once and, with the
gradient, write it once. PyTorch's cross_entropy + backward runs as a user writes it, through
autograd ("torch"), and as the bare aten calls autograd makes ("torch_aten": log_softmax,
nll_loss and their backward functions), so neither the autograd overhead nor its absence decides
the comparison.
"""
from __future__ import annotations

import numpy as np

from ... import ops
from ..case import Case, optional_import

THREADS = 2


def _logits(n, c, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, c), dtype=np.float32) * 3).astype(np.float32), rng.integers(0, c, n)


def _numpy_xent(x, labels, backward):
    rows = np.arange(x.shape[0])

    def run():
        m = x.max(axis=1, keepdims=True)
        e = np.exp(x - m)
        s = e.sum(axis=1, keepdims=True)
        loss = float(np.mean(np.log(s[:, 0]) + m[:, 0] - x[rows, labels]))
        if not backward:
            return loss
        e /= s
        e[rows, labels] -= 1
        e /= x.shape[0]
        return loss, e
    return run


def _torch_xent(torch, xt, lt, backward: bool) -> dict:
    """PyTorch's cross-entropy on its own tensors: through autograd ("torch") and, for forward +
    backward, as the bare aten calls autograd makes ("torch_aten")."""
    F, aten = torch.nn.functional, torch.ops.aten
    if not backward:
        return {"torch": lambda: F.cross_entropy(xt, lt)}

    def autograd():
        xr = xt.detach().requires_grad_()
        F.cross_entropy(xr, lt).backward()
        return xr.grad

    def bare():
        lsm = aten._log_softmax(xt, 1, False)
        loss, total = aten.nll_loss_forward(lsm, lt, None, 1, -100)
        one = torch.ones((), dtype=torch.float32, device=xt.device)
        g = aten.nll_loss_backward(one, lsm, lt, None, 1, -100, total)
        return loss, aten._log_softmax_backward_data(g, lsm, 1, torch.float32)
    return {"torch": autograd, "torch_aten": bare}


def _xent_case(n, c, backward: bool) -> Case:
    def setup():
        x, labels = _logits(n, c)
        ours = lambda: ops.softmax_cross_entropy(x, labels, return_grad=backward)  # noqa: E731
        base = {"numpy": _numpy_xent(x, labels, backward)}
        torch = optional_import("torch")
        if torch is not None:
            base.update(_torch_xent(torch, torch.from_numpy(x), torch.from_numpy(labels), backward))
        return ours, base

    kind = "fwd_bwd" if backward else "fwd"
    return Case(f"activation/softmax_xent_{kind}/{n}x{c}", "activation", "cpu", "GB/s",
                4 * n * c * (2 if backward else 1), setup, limit="copy_GBps", threads=THREADS)


def _bce_case(n, c) -> Case:
    def setup():
        x, _ = _logits(n, c)
        t = np.random.default_rng(1).random((n, c), dtype=np.float32)
        ours = lambda: ops.bce_with_logits(x, t, return_grad=True)  # noqa: E731

        def numpy_bce():
            e = np.exp(-np.abs(x))
            loss = float(np.mean(np.maximum(x, 0) - x * t + np.log1p(e)))
            sig = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
            return loss, (sig - t) / x.size
        base = {"numpy": numpy_bce}
        torch = optional_import("torch")
        if torch is not None:
            xt, tt = torch.from_numpy(x), torch.from_numpy(t)

            def autograd():
                xr = xt.detach().requires_grad_()
                torch.nn.functional.binary_cross_entropy_with_logits(xr, tt).backward()
                return xr.grad
            base["torch"] = autograd
        return ours, base

    return Case(f"activation/bce_logits_fwd_bwd/{n}x{c}", "activation", "cpu", "GB/s", 12 * n * c, setup,
                limit="copy_GBps", threads=THREADS)


def _softmax_case(n, c, kind: str, axis: int = -1) -> Case:
    """kind: softmax, log_softmax, softmax_backward."""
    def setup():
        x, _ = _logits(n, c)
        o = np.empty_like(x)
        base = {}
        torch = optional_import("torch")
        if kind == "softmax_backward":
            y = ops.softmax(x, axis)
            g = np.random.default_rng(2).standard_normal(x.shape, dtype=np.float32)
            ours = lambda: ops.softmax_backward(g, y, axis, out=o)  # noqa: E731
            base["numpy"] = lambda: np.multiply(y, g - (g * y).sum(axis=axis, keepdims=True), out=o)
            if torch is not None:
                yt, gt, ot = torch.from_numpy(y), torch.from_numpy(g), torch.from_numpy(o)
                base["torch"] = lambda: torch.ops.aten._softmax_backward_data.out(
                    gt, yt, axis, torch.float32, grad_input=ot)
        else:
            fn = getattr(ops, kind)
            ours = lambda: fn(x, axis, out=o)  # noqa: E731

            def numpy_softmax():
                e = np.exp(x - x.max(axis=axis, keepdims=True))
                s = e.sum(axis=axis, keepdims=True)
                return np.log(e / s, out=o) if kind == "log_softmax" else np.divide(e, s, out=o)
            base["numpy"] = numpy_softmax
            if torch is not None:
                xt, ot = torch.from_numpy(x), torch.from_numpy(o)
                op = torch.ops.aten._log_softmax if kind == "log_softmax" else torch.ops.aten._softmax
                base["torch"] = lambda: op.out(xt, axis, False, out=ot)
        return ours, base

    where = "" if axis == -1 else f"_axis{axis}"
    work = 4 * n * c * (3 if kind == "softmax_backward" else 2)
    return Case(f"activation/{kind}{where}/{n}x{c}", "activation", "cpu", "GB/s", work, setup,
                limit="copy_GBps", threads=THREADS)


def _cuda_logits(n, c, seed=0):
    import cupy as cp

    cp.random.seed(seed)
    return (cp.random.standard_normal((n, c), dtype=cp.float32) * 3, cp.random.randint(0, c, n, dtype=cp.int64))


def _torch_cuda():
    torch = optional_import("torch")
    return torch if torch is not None and torch.cuda.is_available() else None


def _cuda_xent_case(n, c, backward: bool) -> Case:
    def setup():
        x, labels = _cuda_logits(n, c)
        ours = lambda: ops.softmax_cross_entropy(x, labels, return_grad=backward)  # noqa: E731
        base = {}
        torch = _torch_cuda()
        if torch is not None:
            base.update(_torch_xent(torch, torch.from_dlpack(x), torch.from_dlpack(labels), backward))
        return ours, base

    kind = "fwd_bwd" if backward else "fwd"
    return Case(f"activation/softmax_xent_{kind}/{n}x{c}", "activation", "cuda", "GB/s",
                4 * n * c * (2 if backward else 1), setup, limit="cuda_copy_GBps")


def _cuda_bce_case(n, c) -> Case:
    def setup():
        import cupy as cp

        x, _ = _cuda_logits(n, c)
        t = cp.random.random((n, c), dtype=cp.float32)
        ours = lambda: ops.bce_with_logits(x, t, return_grad=True)  # noqa: E731
        base = {}
        torch = _torch_cuda()
        if torch is not None:
            xt, tt = torch.from_dlpack(x), torch.from_dlpack(t)

            def autograd():
                xr = xt.detach().requires_grad_()
                torch.nn.functional.binary_cross_entropy_with_logits(xr, tt).backward()
                return xr.grad
            base["torch"] = autograd
        return ours, base

    return Case(f"activation/bce_logits_fwd_bwd/{n}x{c}", "activation", "cuda", "GB/s", 12 * n * c, setup,
                limit="cuda_copy_GBps")


def _cuda_softmax_case(n, c, kind: str, axis: int = -1) -> Case:
    """kind: softmax, log_softmax, softmax_backward."""
    def setup():
        import cupy as cp

        x, _ = _cuda_logits(n, c)
        o = cp.empty_like(x)
        base = {}
        torch = _torch_cuda()
        if kind == "softmax_backward":
            y = ops.softmax(x, axis)
            g = cp.random.standard_normal(x.shape, dtype=cp.float32)
            ours = lambda: ops.softmax_backward(g, y, axis, out=o)  # noqa: E731
            if torch is not None:
                yt, gt, ot = torch.from_dlpack(y), torch.from_dlpack(g), torch.from_dlpack(o)
                base["torch"] = lambda: torch.ops.aten._softmax_backward_data.out(
                    gt, yt, axis, torch.float32, grad_input=ot)
        else:
            fn = getattr(ops, kind)
            ours = lambda: fn(x, axis, out=o)  # noqa: E731
            if torch is not None:
                xt, ot = torch.from_dlpack(x), torch.from_dlpack(o)
                op = torch.ops.aten._log_softmax if kind == "log_softmax" else torch.ops.aten._softmax
                base["torch"] = lambda: op.out(xt, axis, False, out=ot)
        return ours, base

    where = "" if axis == -1 else f"_axis{axis}"
    work = 4 * n * c * (3 if kind == "softmax_backward" else 2)
    return Case(f"activation/{kind}{where}/{n}x{c}", "activation", "cuda", "GB/s", work, setup,
                limit="cuda_copy_GBps")


def cases():
    return [
        _xent_case(4096, 1000, False),
        _xent_case(4096, 1000, True),
        _xent_case(128, 10, True),
        _bce_case(4096, 1000),
        _softmax_case(4096, 1000, "softmax"),
        _softmax_case(4096, 1000, "log_softmax"),
        _softmax_case(4096, 1000, "softmax_backward"),
        _softmax_case(1000, 4096, "softmax", axis=0),
        _cuda_xent_case(16384, 1000, False),
        _cuda_xent_case(16384, 1000, True),
        _cuda_xent_case(4096, 32000, True),
        _cuda_bce_case(16384, 1000),
        _cuda_softmax_case(16384, 1000, "softmax"),
        _cuda_softmax_case(16384, 1000, "log_softmax"),
        _cuda_softmax_case(16384, 1000, "softmax_backward"),
        _cuda_softmax_case(8192, 8192, "softmax"),
        _cuda_softmax_case(4096, 32000, "log_softmax"),
        _cuda_softmax_case(4096, 16384, "softmax", axis=0),
    ]
