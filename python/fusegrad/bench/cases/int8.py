"""Int8 cases of the gemm and conv families: quantized inference as a quantized Linear / Conv2d
layer runs it, weights packed once, against our own fp32 kernels and PyTorch's quantized ones.

Work is 2·M·N·K integer operations per call (GOP/s). No machine limit is shown: the suite probes
the fp32 FMA peak, which int8 exceeds many times over.

gemm/int8/<n>: u8 (n×n) activations × s8 (n×n) weights, per-channel weight scales, bias, float32
output (a quantized Linear feeding a float layer). Baselines: fusegrad_fp32 (ops.matmul on float32
arrays of the same shape: the speed-up int8 buys) and, where PyTorch is installed, its quantized
Linear (torch.ops.quantized.linear on prepacked weights) with the fbgemm and onednn engines, which
requantize to quint8 (a quarter of our output bytes). NumPy has no fast integer product (no BLAS),
so it is left out.

gemm/int8_u8out/<n>: the same requantized to uint8 (out_scale, out_zero_point), the output
PyTorch's quantized Linear gives: the like-for-like comparison with it (an fp32 output writes four
times the bytes).

gemm/int8_1thread/1024, gemm/int8_u8out_1thread/1024: on one core (every library at one thread).

gemm/int8_vnni/<n>, conv/int8_vnni/<layer>: the same on the AVX-512 VNNI path, forced, on machines
whose automatic choice is AMX.

gemm/cuda_int8/<n>: u8 × s8 -> exact int32 on CuPy arrays (cuda/gemm/gemm_int8.cu), against
torch._int_mm where PyTorch has CUDA.

conv/int8/<layer>: u8 NHWC × s8 HWIO, per-channel scales, bias, relu, uint8 output (a conv layer
of a quantized CNN). Baselines: fusegrad_fp32 (ops.conv2d with bias and relu) and PyTorch's
quantized conv2d on a channels-last input (its fast layout) with each engine.
"""
from __future__ import annotations

import contextlib
import warnings

import numpy as np

from ... import _cpu, ops
from ...ops import gemm_int8
from ..case import SPINNING_BASELINE_SETTLE_S, Case, optional_import

SQUARES = (1024, 2048, 4096)
# (name, N, H, W, C_in, C_out, kernel, padding): the second conv of an MNIST CNN, and a 3×3 64→64
# layer of a CIFAR-sized ResNet at batch 32.
CONVS = (("mnist_3x3_32x64_14x14_b128", 128, 14, 14, 32, 64, 3, 1),
         ("3x3_64x64_32x32_b32", 32, 32, 32, 64, 64, 3, 1))
ENGINES = ("fbgemm", "onednn")


def _torch_engines(torch):
    return [e for e in ENGINES if torch is not None and e in torch.backends.quantized.supported_engines]



@contextlib.contextmanager
def _quiet():
    """PyTorch warns that its quantized tensor constructors are deprecated; they are still what its
    quantized Linear and conv take."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.quantize_per_tensor")
        yield


def _engine_call(torch, engine, fn):
    """fn under `engine` (the quantized ops dispatch on the engine set when they run)."""
    def call():
        torch.backends.quantized.engine = engine
        return fn()
    return call


# int8 path codes (ops.gemm_int8._INT8_PATH): 0 the best the CPU has, 2 AVX-512 VNNI.
AUTOMATIC, VNNI = 0, 2


def _on_path(path: int, fn):
    """fn run on one int8 path (the VNNI cases on a machine whose automatic choice is AMX)."""
    def call():
        saved, gemm_int8._INT8_PATH = gemm_int8._INT8_PATH, path
        try:
            return fn()
        finally:
            gemm_int8._INT8_PATH = saved
    return call


def _gemm_case(n: int, path: int = AUTOMATIC, threads: int | None = None, requant: bool = False) -> Case:
    def setup():
        rng = np.random.default_rng(0)
        a = rng.integers(0, 256, (n, n), dtype=np.uint8)
        b = rng.integers(-128, 128, (n, n), dtype=np.int8)  # (K, N)
        w_scale = rng.uniform(0.001, 0.01, n).astype(np.float32)
        bias = rng.standard_normal(n).astype(np.float32)
        w = ops.pack_quantized_weight(b)
        out = np.empty((n, n), np.float32)
        af, bf, of = a.astype(np.float32), b.astype(np.float32), np.empty((n, n), np.float32)
        if requant:  # uint8 out, as PyTorch's quantized Linear gives
            out = np.empty((n, n), np.uint8)
            extra = dict(out_dtype=np.uint8, out_scale=0.5)
        else:
            extra = {}
        ours = _on_path(path, lambda: ops.quantized_matmul(a, w, a_scale=0.02, a_zero_point=128, b_scale=w_scale,
                                                           bias=bias, out=out, **extra))
        base = {"fusegrad_fp32": lambda: ops.matmul(af, bf, bias=bias, out=of)}
        torch = optional_import("torch")
        for engine in _torch_engines(torch):
            with _quiet():
                torch.backends.quantized.engine = engine
                xq = torch._make_per_tensor_quantized_tensor(torch.from_numpy(a), 0.02, 128)
                wq = torch._make_per_channel_quantized_tensor(torch.from_numpy(np.ascontiguousarray(b.T)),
                                                              torch.from_numpy(w_scale.astype(np.float64)),
                                                              torch.zeros(n, dtype=torch.int64), 0)
                packed = torch.ops.quantized.linear_prepack(wq, torch.from_numpy(bias))
            base[f"torch_{engine}"] = _engine_call(
                torch, engine, lambda xq=xq, packed=packed: torch.ops.quantized.linear(xq, packed, 0.5, 0))
        return ours, base

    variant = _variant(path) + ("_u8out" if requant else "") + ("_1thread" if threads == 1 else "")
    return Case(f"gemm/{variant}/{n}", "gemm", "cpu", "GOP/s", 2.0 * n**3, setup, threads=threads,
                note=f"u8×s8 prepacked, {'u8' if requant else 'fp32'} out; int8 path: {_path_name(path)}",
                settle_s=SPINNING_BASELINE_SETTLE_S)


def _conv_case(name, n, h, w_, ci, co, k, pad, path: int = AUTOMATIC) -> Case:
    def setup():
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (n, h, w_, ci), dtype=np.uint8)
        w = rng.integers(-128, 128, (k, k, ci, co), dtype=np.int8)
        w_scale = rng.uniform(0.001, 0.01, co).astype(np.float32)
        bias = rng.standard_normal(co).astype(np.float32)
        packed = ops.pack_quantized_weight(w)
        out = np.empty((n, h, w_, co), np.uint8)
        xf, wf, of = x.astype(np.float32), w.astype(np.float32), np.empty((n, h, w_, co), np.float32)
        ours = _on_path(path, lambda: ops.quantized_conv2d(x, packed, padding=pad, x_scale=0.02, x_zero_point=128,
                                                           w_scale=w_scale, bias=bias, activation="relu",
                                                           out_dtype=np.uint8, out_scale=0.1, out=out))
        base = {"fusegrad_fp32": lambda: ops.conv2d(xf, wf, bias, padding=pad, activation="relu", out=of)}
        torch = optional_import("torch")
        for engine in _torch_engines(torch):
            with _quiet():
                torch.backends.quantized.engine = engine
                xq = torch._make_per_tensor_quantized_tensor(torch.from_numpy(x).permute(0, 3, 1, 2), 0.02, 128)
                wq = torch._make_per_channel_quantized_tensor(torch.from_numpy(w).permute(3, 2, 0, 1).contiguous(),
                                                              torch.from_numpy(w_scale.astype(np.float64)),
                                                              torch.zeros(co, dtype=torch.int64), 0)
                packed_t = torch.ops.quantized.conv2d_prepack(wq, torch.from_numpy(bias), [1, 1], [pad, pad],
                                                              [1, 1], 1)
            base[f"torch_{engine}"] = _engine_call(
                torch, engine, lambda xq=xq, p=packed_t: torch.ops.quantized.conv2d_relu(xq, p, 0.1, 0))
        return ours, base

    work = 2.0 * n * h * w_ * co * k * k * ci
    return Case(f"conv/{_variant(path)}/{name}", "conv", "cpu", "GOP/s", work, setup,
                note=f"u8 NHWC, relu, u8 out; int8 path: {_path_name(path)}", settle_s=SPINNING_BASELINE_SETTLE_S)


def _path_name(path: int) -> str:
    return (_cpu.int8_gemm_path(path) or _cpu.int8_gemm_path(AUTOMATIC))["name"]


def _variant(path: int) -> str:
    return "int8" if path == AUTOMATIC else "int8_vnni"


def _cuda_gemm_case(n: int) -> Case:
    """u8 (n×n) × s8 (n×n) -> exact int32 on the GPU (the tensor-core kernel, weight packed once), against
    PyTorch's int8 matrix product (torch._int_mm, cuBLASLt: s8 × s8 -> s32, the same work)."""
    def setup():
        import cupy as cp

        a = cp.random.randint(0, 256, (n, n), dtype=cp.uint8)
        b = cp.random.randint(-128, 128, (n, n), dtype=cp.int8)
        w = ops.pack_quantized_weight(b)
        out = cp.empty((n, n), cp.int32)
        ours = lambda: ops.quantized_matmul(a, w, a_zero_point=128, out=out)  # noqa: E731
        base = {}
        torch = optional_import("torch")
        if torch is not None and torch.cuda.is_available() and hasattr(torch, "_int_mm"):
            ta = torch.from_dlpack((a.astype(cp.int16) - 128).astype(cp.int8))
            tb = torch.from_dlpack(b)
            base["torch_int_mm"] = lambda: torch._int_mm(ta, tb)
        return ours, base

    return Case(f"gemm/cuda_int8/{n}", "gemm", "cuda", "GOP/s", 2.0 * n**3, setup,
                note="u8 × s8 -> s32, mma.sync m16n8k32; vs torch._int_mm (cuBLASLt s8 × s8)")


def cases():
    out = [_gemm_case(n) for n in SQUARES] + [_gemm_case(n, requant=True) for n in SQUARES[:2]]
    out += [_cuda_gemm_case(n) for n in (2048, 4096)]
    out += [_gemm_case(1024, threads=1), _gemm_case(1024, threads=1, requant=True)]
    out += [_conv_case(*c) for c in CONVS]
    # Where the automatic choice is AMX, the VNNI path is measured too (forced).
    if _path_name(AUTOMATIC) == "amx" and _cpu.int8_gemm_path(VNNI) is not None:
        out += [_gemm_case(n, VNNI) for n in SQUARES[:2]] + [_conv_case(*CONVS[1], path=VNNI)]
    return out
