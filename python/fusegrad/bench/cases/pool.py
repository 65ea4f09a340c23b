"""Pooling cases. CPU: the feature maps that follow the conv layers of the MNIST CNN (batch 128),
the CIFAR CNN (batch 64) and ResNet-style blocks (batch 64), pooled 2x2 with stride 2. CUDA:
ImageNet-sized maps (64-256 MB each) so a pass takes long enough to measure bandwidth: the ResNet
stem's overlapping 3x3 stride-2 max pool, 2x2 pools, and the global average pool before the head;
PyTorch runs on the same memory as channels_last tensors (NHWC data seen as NCHW).

PyTorch runs twice, on its default NCHW tensors ("torch") and on channels_last ones
("torch_channels_last"), the same data. Work is bytes moved through memory: a forward reads x and
writes y; forward+backward also writes and reads the int32 indices (PyTorch's are int64, which
only makes its traffic larger than counted) and reads grad_out and writes grad_input.
"""
from __future__ import annotations

import numpy as np

from ... import ops
from ..case import Case, optional_import

THREADS = 2  # the setting for the CPU pooling targets

# (name, N, H, W, C): the conv outputs that the networks pool.
SHAPES = [
    ("mnist1", 128, 26, 26, 32),
    ("mnist2", 128, 11, 11, 64),
    ("cifar1", 64, 30, 30, 32),
    ("cifar2", 64, 13, 13, 64),
    ("cifar3", 64, 4, 4, 128),
    ("resnet1", 64, 32, 32, 64),
    ("resnet2", 64, 16, 16, 128),
]


def _data(n, h, w, c):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, h, w, c), dtype=np.float32)
    oh, ow = h // 2, w // 2
    g = rng.standard_normal((n, oh, ow, c), dtype=np.float32)
    return x, g


def _torch_pair(torch, x, g):
    """{variant: (x, grad_out)} as NCHW-contiguous and channels_last tensors."""
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)
    gt = torch.from_numpy(g).permute(0, 3, 1, 2)
    cl = torch.channels_last
    return {
        "torch": (xt.contiguous(), gt.contiguous()),
        "torch_channels_last": (xt.contiguous(memory_format=cl), gt.contiguous(memory_format=cl)),
    }


def _numpy_max(x):
    n, h, w, c = x.shape
    v = x[:, : h // 2 * 2, : w // 2 * 2]
    return lambda: v.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _numpy_avg(x):
    n, h, w, c = x.shape
    v = x[:, : h // 2 * 2, : w // 2 * 2]
    return lambda: v.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def _numpy_max_fwd_bwd(x, g):
    """Max pool 2x2 and its backward as a NumPy user writes them: argmax over the four window
    positions, then the gradient routed by a one-hot mask."""
    n, h, w, c = x.shape
    oh, ow = h // 2, w // 2

    def run():
        win = x[:, : 2 * oh, : 2 * ow].reshape(n, oh, 2, ow, 2, c).transpose(0, 1, 3, 5, 2, 4).reshape(n, oh, ow, c, 4)
        arg = win.argmax(axis=-1)
        y = np.take_along_axis(win, arg[..., None], axis=-1)[..., 0]
        routed = (arg[..., None] == np.arange(4)) * g[..., None]
        gx = np.zeros_like(x)
        gx[:, : 2 * oh, : 2 * ow] = routed.reshape(n, oh, ow, c, 2, 2).transpose(0, 1, 4, 2, 5, 3).reshape(
            n, 2 * oh, 2 * ow, c)
        return y, gx
    return run


def _numpy_avg_fwd_bwd(x, g):
    n, h, w, c = x.shape
    oh, ow = h // 2, w // 2

    def run():
        y = x[:, : 2 * oh, : 2 * ow].reshape(n, oh, 2, ow, 2, c).mean(axis=(2, 4))
        gx = np.zeros_like(x)
        gx[:, : 2 * oh, : 2 * ow] = np.repeat(np.repeat(g * 0.25, 2, axis=1), 2, axis=2)
        return y, gx
    return run


def _max_case(tag, n, h, w, c, backward: bool) -> Case:
    def setup():
        x, g = _data(n, h, w, c)
        y = np.empty((n, h // 2, w // 2, c), np.float32)
        if backward:
            def ours():
                _, ind = ops.max_pool2d(x, 2, return_indices=True, out=y)
                return ops.max_pool2d_backward(g, ind, x.shape, 2)
            base = {"numpy": _numpy_max_fwd_bwd(x, g)}
        else:
            def ours():
                return ops.max_pool2d(x, 2, out=y)
            base = {"numpy": _numpy_max(x)}
        torch = optional_import("torch")
        if torch is not None:
            aten = torch.ops.aten
            for name, (xt, gt) in _torch_pair(torch, x, g).items():
                if backward:
                    def fb(xt=xt, gt=gt):
                        yt, it = aten.max_pool2d_with_indices(xt, [2, 2], [2, 2])
                        return aten.max_pool2d_with_indices_backward(gt, xt, [2, 2], [2, 2], [0, 0], [1, 1],
                                                                     False, it)
                    base[name] = fb
                else:
                    base[name] = lambda xt=xt: torch.nn.functional.max_pool2d(xt, 2)
        return ours, base

    nin, nout = n * h * w * c, n * (h // 2) * (w // 2) * c
    work = 4 * (nin + nout) if not backward else 4 * (2 * nin + 4 * nout)
    kind = "fwd_bwd" if backward else "fwd"
    return Case(f"pool/max2x2_{kind}/{tag}/{n}x{h}x{w}x{c}", "pool", "cpu", "GB/s", work, setup,
                limit="copy_GBps", threads=THREADS)


def _avg_case(tag, n, h, w, c, backward: bool) -> Case:
    def setup():
        x, g = _data(n, h, w, c)
        y = np.empty((n, h // 2, w // 2, c), np.float32)
        if backward:
            def ours():
                ops.avg_pool2d(x, 2, out=y)
                return ops.avg_pool2d_backward(g, x.shape, 2)
            base = {"numpy": _numpy_avg_fwd_bwd(x, g)}
        else:
            def ours():
                return ops.avg_pool2d(x, 2, out=y)
            base = {"numpy": _numpy_avg(x)}
        torch = optional_import("torch")
        if torch is not None:
            aten = torch.ops.aten
            for name, (xt, gt) in _torch_pair(torch, x, g).items():
                if backward:
                    def fb(xt=xt, gt=gt):
                        aten.avg_pool2d(xt, [2, 2], [2, 2])
                        return aten.avg_pool2d_backward(gt, xt, [2, 2], [2, 2], [0, 0], False, True, None)
                    base[name] = fb
                else:
                    base[name] = lambda xt=xt: torch.nn.functional.avg_pool2d(xt, 2)
        return ours, base

    nin, nout = n * h * w * c, n * (h // 2) * (w // 2) * c
    work = 4 * (nin + nout) * (2 if backward else 1)
    kind = "fwd_bwd" if backward else "fwd"
    return Case(f"pool/avg2x2_{kind}/{tag}/{n}x{h}x{w}x{c}", "pool", "cpu", "GB/s", work, setup,
                limit="copy_GBps", threads=THREADS)


def _global_case(tag, n, h, w, c, backward: bool) -> Case:
    def setup():
        x, _ = _data(n, h, w, c)
        g = np.random.default_rng(1).standard_normal((n, c), dtype=np.float32)
        if backward:
            def ours():
                ops.global_avg_pool2d(x)
                return ops.global_avg_pool2d_backward(g, x.shape)
            base = {"numpy": lambda: (x.mean(axis=(1, 2)),
                                      np.broadcast_to((g / (h * w))[:, None, None, :], x.shape).copy())}
        else:
            def ours():
                return ops.global_avg_pool2d(x)
            base = {"numpy": lambda: x.mean(axis=(1, 2))}
        torch = optional_import("torch")
        if torch is not None:
            aten = torch.ops.aten
            xt0 = torch.from_numpy(x).permute(0, 3, 1, 2)
            gt = torch.from_numpy(g).reshape(n, c, 1, 1)
            for name, xt in (("torch", xt0.contiguous()),
                             ("torch_channels_last", xt0.contiguous(memory_format=torch.channels_last))):
                if backward:
                    def fb(xt=xt):
                        aten._adaptive_avg_pool2d(xt, [1, 1])
                        return aten._adaptive_avg_pool2d_backward(gt, xt)
                    base[name] = fb
                else:
                    base[name] = lambda xt=xt: torch.nn.functional.adaptive_avg_pool2d(xt, 1)
        return ours, base

    nin, nout = n * h * w * c, n * c
    work = 4 * (nin + nout) * (2 if backward else 1)
    kind = "fwd_bwd" if backward else "fwd"
    return Case(f"pool/global_avg_{kind}/{tag}/{n}x{h}x{w}x{c}", "pool", "cpu", "GB/s", work, setup,
                limit="copy_GBps", threads=THREADS)


# (name, N, H, W, C, kernel, stride, padding) on the GPU.
GPU_SHAPES = [
    ("resnet_stem", 64, 112, 112, 64, 3, 2, 1),
    ("resnet_56", 256, 56, 56, 64, 2, 2, 0),
    ("vgg_56", 64, 56, 56, 256, 2, 2, 0),
]
GPU_GLOBAL_SHAPES = [("resnet50_head", 256, 7, 7, 2048), ("resnet_56", 64, 56, 56, 256)]


def _cuda_data(n, h, w, c, oh, ow):
    import cupy as cp

    cp.random.seed(0)
    return (cp.random.standard_normal((n, h, w, c), dtype=cp.float32),
            cp.random.standard_normal((n, oh, ow, c), dtype=cp.float32))


def _torch_cuda():
    torch = optional_import("torch")
    return torch if torch is not None and torch.cuda.is_available() else None


def _cuda_pool_case(kind: str, tag, n, h, w, c, k, s, p, backward: bool) -> Case:
    """kind "max" or "avg"; forward, or forward + backward (PyTorch's pair of aten calls)."""
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1

    def setup():
        import cupy as cp

        x, g = _cuda_data(n, h, w, c, oh, ow)
        y = cp.empty((n, oh, ow, c), cp.float32)
        if kind == "max" and backward:
            def ours():
                _, ind = ops.max_pool2d(x, k, s, p, return_indices=True, out=y)
                return ops.max_pool2d_backward(g, ind, x.shape, k, s, p)
        elif kind == "max":
            def ours():
                return ops.max_pool2d(x, k, s, p, out=y)
        elif backward:
            def ours():
                ops.avg_pool2d(x, k, s, p, out=y)
                return ops.avg_pool2d_backward(g, x.shape, k, s, p)
        else:
            def ours():
                return ops.avg_pool2d(x, k, s, p, out=y)
        base = {}
        torch = _torch_cuda()
        if torch is not None:
            aten = torch.ops.aten
            xt = torch.from_dlpack(x).permute(0, 3, 1, 2)  # channels_last NCHW views of the same data
            gt = torch.from_dlpack(g).permute(0, 3, 1, 2)
            if kind == "max" and backward:
                def theirs():
                    _, it = aten.max_pool2d_with_indices(xt, [k, k], [s, s], [p, p])
                    return aten.max_pool2d_with_indices_backward(gt, xt, [k, k], [s, s], [p, p], [1, 1], False, it)
            elif kind == "max":
                def theirs():
                    return torch.nn.functional.max_pool2d(xt, k, s, p)
            elif backward:
                def theirs():
                    aten.avg_pool2d(xt, [k, k], [s, s], [p, p])
                    return aten.avg_pool2d_backward(gt, xt, [k, k], [s, s], [p, p], False, True, None)
            else:
                def theirs():
                    return torch.nn.functional.avg_pool2d(xt, k, s, p)
            base["torch_channels_last"] = theirs
        return ours, base

    nin, nout = n * h * w * c, n * oh * ow * c
    if kind == "max":  # backward: indices written and read (int32), grad_out read, grad_input written
        work = 4 * (2 * nin + 4 * nout) if backward else 4 * (nin + nout)
    else:
        work = 4 * (nin + nout) * (2 if backward else 1)
    what = f"{kind}{k}x{k}s{s}" + (f"p{p}" if p else "")
    return Case(f"pool/{what}_{'fwd_bwd' if backward else 'fwd'}/{tag}/{n}x{h}x{w}x{c}", "pool", "cuda", "GB/s",
                work, setup, limit="cuda_copy_GBps")


def _cuda_global_case(tag, n, h, w, c, backward: bool) -> Case:
    def setup():
        import cupy as cp

        x, _ = _cuda_data(n, h, w, c, 1, 1)
        g = cp.random.standard_normal((n, c), dtype=cp.float32)
        y = cp.empty((n, c), cp.float32)
        if backward:
            def ours():
                ops.global_avg_pool2d(x, out=y)
                return ops.global_avg_pool2d_backward(g, x.shape)
        else:
            def ours():
                return ops.global_avg_pool2d(x, out=y)
        base = {}
        torch = _torch_cuda()
        if torch is not None:
            aten = torch.ops.aten
            xt = torch.from_dlpack(x).permute(0, 3, 1, 2)
            gt = torch.from_dlpack(g).reshape(n, c, 1, 1)
            if backward:
                def theirs():
                    aten._adaptive_avg_pool2d(xt, [1, 1])
                    return aten._adaptive_avg_pool2d_backward(gt, xt)
            else:
                def theirs():
                    return torch.nn.functional.adaptive_avg_pool2d(xt, 1)
            base["torch_channels_last"] = theirs
        return ours, base

    nin, nout = n * h * w * c, n * c
    work = 4 * (nin + nout) * (2 if backward else 1)
    return Case(f"pool/global_avg_{'fwd_bwd' if backward else 'fwd'}/{tag}/{n}x{h}x{w}x{c}", "pool", "cuda",
                "GB/s", work, setup, limit="cuda_copy_GBps")


def cases():
    out = []
    for backward in (False, True):
        out += [_max_case(*s, backward) for s in SHAPES]
    for backward in (False, True):
        out += [_avg_case(*s, backward) for s in SHAPES[:3]]
    for backward in (False, True):
        out += [_global_case(*s, backward) for s in SHAPES[5:]]
    for backward in (False, True):
        out += [_cuda_pool_case("max", *s, backward) for s in GPU_SHAPES]
        out += [_cuda_pool_case("avg", *s, backward) for s in GPU_SHAPES[1:]]
        out += [_cuda_global_case(*s, backward) for s in GPU_GLOBAL_SHAPES]
    return out
