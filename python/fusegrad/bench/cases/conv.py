"""Convolution cases (CPU): the conv layers of the MNIST CNN (batch 128), the CIFAR CNN (batch 64)
and ResNet-style 3x3 blocks (batch 64, padding 1), forward and forward + both backwards.

Work is 2·N·OH·OW·KH·KW·C_in·C_out flops per pass (forward, backward-input, backward-weight are
one pass each; the bias gradient is not counted), bound by the FMA peak. PyTorch runs twice on
the same data: on its default NCHW tensors ("torch") and on channels_last ones
("torch_channels_last"); its backward is aten.convolution_backward with all three gradients,
the call autograd makes, and fusegrad's is its counterpart ops.conv2d_backward (the call
nn.Conv2d makes). fusegrad writes into preallocated outputs; PyTorch allocates its own.

Grouped cases ("conv/grouped/...", "conv/depthwise/..."): ResNeXt- and MobileNet-style layers
with groups=G; work counts C_in/G input channels per output channel. fusegrad regroups each array
once per call and runs each group on the ungrouped kernels (cpp/conv/grouped.h), which suits
grouped layers with tens of channels a group (a few channels a group leave the micro-tiles mostly
empty); depthwise layers (one channel a group) run on direct kernels along the channel vector
(cpp/conv/depthwise.h).

CUDA cases: the same layers on the GPU, fusegrad's implicit GEMMs (cuda/conv/) on CuPy arrays
against cuDNN through PyTorch on channels_last tensors (NHWC in memory, as fusegrad's), in fp32
with TF32 off (torch.backends.cudnn.allow_tf32 = False, set in the call), bound by cuBLAS's SGEMM
rate.
"""
from __future__ import annotations

import numpy as np

from ... import ops
from ..case import Case, optional_import

THREADS = 2  # the setting for the CPU convolution targets

# (tag, N, H, W, C_in, C_out, K, padding)
LAYERS = [
    ("mnist1", 128, 28, 28, 1, 32, 3, 0),
    ("mnist2", 128, 13, 13, 32, 64, 3, 0),
    ("cifar1", 64, 32, 32, 3, 32, 3, 0),
    ("cifar2", 64, 15, 15, 32, 64, 3, 0),
    ("cifar3", 64, 6, 6, 64, 128, 3, 0),
    ("resnet1", 64, 32, 32, 64, 64, 3, 1),
    ("resnet2", 64, 16, 16, 128, 128, 3, 1),
]


# (tag, N, H, W, C_in, C_out, K, padding, groups)
GROUPED = [
    ("grouped", 64, 16, 16, 128, 128, 3, 1, 4),     # ResNeXt-style: 32 channels a group
    ("grouped", 64, 16, 16, 128, 128, 3, 1, 32),    # ResNeXt 32x4d: 4 channels a group
    ("depthwise", 64, 32, 32, 32, 32, 3, 1, 32),    # MobileNet's depthwise 3x3
    ("depthwise", 64, 16, 16, 128, 128, 3, 1, 128),
]


def _case(tag, n, h, w, ci, co, k, pad, backward: bool, groups: int = 1) -> Case:
    oh, ow = h + 2 * pad - k + 1, w + 2 * pad - k + 1
    cig = ci // groups
    flops = 2.0 * n * oh * ow * k * k * cig * co

    def setup():
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, h, w, ci), dtype=np.float32)
        wt = (rng.standard_normal((k, k, cig, co), dtype=np.float32) / np.sqrt(k * k * cig)).astype(np.float32)
        b = rng.standard_normal(co, dtype=np.float32)
        g = rng.standard_normal((n, oh, ow, co), dtype=np.float32)
        y = np.empty((n, oh, ow, co), np.float32)
        gx, gw, gb = np.empty_like(x), np.empty_like(wt), np.empty_like(b)

        if backward:
            def ours():
                ops.conv2d(x, wt, b, padding=pad, groups=groups, out=y)
                return ops.conv2d_backward(g, x, wt, padding=pad, groups=groups, out=(gx, gw, gb))
        else:
            def ours():
                return ops.conv2d(x, wt, b, padding=pad, groups=groups, out=y)

        base = {}
        torch = optional_import("torch")
        if torch is not None:
            xt0 = torch.from_numpy(x).permute(0, 3, 1, 2)
            wt0 = torch.from_numpy(wt).permute(3, 2, 0, 1)
            gt0 = torch.from_numpy(g).permute(0, 3, 1, 2)
            bt = torch.from_numpy(b)
            aten = torch.ops.aten
            for name, fmt in (("torch", torch.contiguous_format), ("torch_channels_last", torch.channels_last)):
                xt, wtt, gt = (t.contiguous(memory_format=fmt) for t in (xt0, wt0, gt0))
                if backward:
                    def fb(xt=xt, wtt=wtt, gt=gt):
                        with torch.no_grad():
                            torch.nn.functional.conv2d(xt, wtt, bt, padding=pad, groups=groups)
                            return aten.convolution_backward(gt, xt, wtt, [co], [1, 1], [pad, pad], [1, 1],
                                                             False, [0, 0], groups, [True, True, True])
                    base[name] = fb
                else:
                    def f(xt=xt, wtt=wtt):
                        with torch.no_grad():
                            return torch.nn.functional.conv2d(xt, wtt, bt, padding=pad, groups=groups)
                    base[name] = f
        return ours, base

    kind = "fwd_bwd" if backward else "fwd"
    shape = f"{n}x{h}x{w}x{ci}->{co}_k{k}p{pad}"
    name = f"conv/{kind}/{tag}/{shape}" if groups == 1 else f"conv/{tag}/{kind}/{shape}_g{groups}"
    return Case(name, "conv", "cpu", "GFLOP/s", flops * (3 if backward else 1), setup, limit="fma_GFLOPs",
                threads=THREADS)


def _pool_case(tag, n, h, w, ci, co, k, pad) -> Case:
    """Conv -> ReLU -> MaxPool2d(2) forward, as the CNNs run it: the fused kernel against the
    separate fusegrad ops (conv, then pool, then ReLU on the pooled tensor) and PyTorch's three
    ops in both layouts. Work counts the conv's flops only."""
    oh, ow = h + 2 * pad - k + 1, w + 2 * pad - k + 1

    def setup():
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, h, w, ci), dtype=np.float32)
        wt = (rng.standard_normal((k, k, ci, co), dtype=np.float32) / np.sqrt(k * k * ci)).astype(np.float32)
        b = rng.standard_normal(co, dtype=np.float32)
        y = np.empty((n, oh, ow, co), np.float32)

        def ours():
            return ops.conv2d_max_pool2d(x, wt, b, padding=pad, pool=2, activation="relu")

        def separate():
            pooled, _ = ops.max_pool2d(ops.conv2d(x, wt, b, padding=pad, out=y), 2, return_indices=True)
            return ops.relu(pooled, out=pooled)

        base = {"fusegrad_separate": separate}
        torch = optional_import("torch")
        if torch is not None:
            fn = torch.nn.functional
            xt0, wt0, bt = torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(wt).permute(3, 2, 0, 1), \
                torch.from_numpy(b)
            for name, fmt in (("torch", torch.contiguous_format), ("torch_channels_last", torch.channels_last)):
                xt, wtt = xt0.contiguous(memory_format=fmt), wt0.contiguous(memory_format=fmt)

                def f(xt=xt, wtt=wtt):
                    with torch.no_grad():
                        return fn.max_pool2d(fn.relu(fn.conv2d(xt, wtt, bt, padding=pad)), 2, return_indices=True)
                base[name] = f
        return ours, base

    return Case(f"conv/fwd_relu_pool/{tag}/{n}x{h}x{w}x{ci}->{co}_k{k}p{pad}", "conv", "cpu", "GFLOP/s",
                2.0 * n * oh * ow * k * k * ci * co, setup, limit="fma_GFLOPs", threads=THREADS)


def cases():
    return ([_case(*layer, backward) for backward in (False, True) for layer in LAYERS] +
            [_case(*layer[:-1], backward, layer[-1]) for backward in (False, True) for layer in GROUPED] +
            [_pool_case(*layer) for layer in LAYERS if layer[0] in ("mnist1", "mnist2", "cifar1", "cifar2")] +
            _cuda_cases())


# --- CUDA ---------------------------------------------------------------------------------------

CUDA_FWD_BWD = ("mnist2", "cifar2", "resnet1", "resnet2")  # the backward of the others is alike


def _cuda_case(tag, n, h, w, ci, co, k, pad, backward: bool) -> Case:
    oh, ow = h + 2 * pad - k + 1, w + 2 * pad - k + 1
    flops = 2.0 * n * oh * ow * k * k * ci * co

    def setup():
        import cupy as cp

        x = cp.random.standard_normal((n, h, w, ci), dtype=cp.float32)
        wt = (cp.random.standard_normal((k, k, ci, co), dtype=cp.float32) / np.sqrt(k * k * ci)).astype(cp.float32)
        b = cp.random.standard_normal(co, dtype=cp.float32)
        g = cp.random.standard_normal((n, oh, ow, co), dtype=cp.float32)
        y = cp.empty((n, oh, ow, co), cp.float32)
        gx, gw, gb = cp.empty_like(x), cp.empty_like(wt), cp.empty_like(b)

        if backward:
            def ours():
                ops.conv2d(x, wt, b, padding=pad, out=y)
                return ops.conv2d_backward(g, x, wt, padding=pad, out=(gx, gw, gb))
        else:
            def ours():
                return ops.conv2d(x, wt, b, padding=pad, out=y)

        base = {}
        torch = optional_import("torch")
        if torch is not None and torch.cuda.is_available():
            cl = torch.channels_last
            xt = torch.from_dlpack(x).permute(0, 3, 1, 2)  # NHWC memory: already channels_last
            wtt = torch.from_dlpack(wt).permute(3, 2, 0, 1).contiguous(memory_format=cl)
            gt = torch.from_dlpack(g).permute(0, 3, 1, 2)
            bt = torch.from_dlpack(b)
            aten = torch.ops.aten

            def cudnn():
                torch.backends.cudnn.allow_tf32 = False
                with torch.no_grad():
                    out = torch.nn.functional.conv2d(xt, wtt, bt, padding=pad)
                    if backward:
                        out = aten.convolution_backward(gt, xt, wtt, [co], [1, 1], [pad, pad], [1, 1], False, [0, 0],
                                                        1, [True, True, True])
                return out

            base["torch_channels_last"] = cudnn
        return ours, base

    kind = "fwd_bwd" if backward else "fwd"
    return Case(f"conv/cuda_{kind}_tf32off/{tag}/{n}x{h}x{w}x{ci}->{co}_k{k}p{pad}", "conv", "cuda", "GFLOP/s",
                flops * (3 if backward else 1), setup, limit="cublas_fp32_TFLOPs",
                note="vs cuDNN channels_last, TF32 off")


def _cuda_cases() -> list:
    return ([_cuda_case(*layer, False) for layer in LAYERS] +
            [_cuda_case(*layer, True) for layer in LAYERS if layer[0] in CUDA_FWD_BWD])
