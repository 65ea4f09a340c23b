"""GEMM cases: squares, the layers of a 784-500-300-10 MLP forward and backward, fused bias+relu.

Work is 2·M·N·K flops per call, bound by the FMA peak. Every candidate writes into a preallocated
output where its library allows one, so allocation is not what is measured.

bf16 on the CPU (gemm/bf16/N, 1024-4096 squares): ops.matmul(precision="bf16") on fp32 arrays
(rounded to bf16 while packing) beside our own fp32 GEMM ("fusegrad_fp32"), NumPy's fp32 and
PyTorch's bf16 matmul on bf16 tensors ("torch_bf16": its inputs are bf16 already and its output is
bf16, so it moves fewer bytes). gemm/bf16_inputs/N takes ml_dtypes.bfloat16 arrays, as torch does.
gemm/bf16_avx512/N switches AMX off for the call, timing the vdpbf16ps path against fp32. No
limit column: the suite probes the fp32 FMA peak only, and AMX-BF16's peak is 1024 flops per cycle
per core (16 times the fp32 FMA rate), far above it.

CUDA cases (2048-8192 squares): each precision of ops.matmul against cuBLAS through CuPy and
PyTorch. fp32 compares with TF32 off (CuPy's default; torch.backends.cuda.matmul.allow_tf32 =
False, set in the call): true fp32 on both sides, bound by cuBLAS's SGEMM rate. tf32 compares
with PyTorch's TF32 cuBLAS (allow_tf32 = True). bf16 takes fp32 arrays and rounds them to bf16
in the kernel; PyTorch's baseline multiplies bf16 tensors (half the bytes read), bound by
cuBLAS's bf16 rate.
"""
from __future__ import annotations

import os

import numpy as np

from ... import _backend, ops
from ...ops import gemm as gemm_ops
from ..case import SPINNING_BASELINE_SETTLE_S, Case, optional_import

SQUARES = (64, 128, 256, 512, 1024, 2048, 4096)
MLP = (784, 500, 300, 10)
MLP_BATCHES = (32, 128)


def _rand(rng, *shape):
    return rng.standard_normal(shape, dtype=np.float32)


def _product_case(name: str, m: int, n: int, k: int, *, ta: bool = False, tb: bool = False,
                  threads: int | None = None, note: str = "") -> Case:
    """C (m×n) = A (m×k) · B (k×n); ta/tb: that operand is a transposed view of a row-major array."""

    def setup():
        rng = np.random.default_rng(0)
        a = _rand(rng, k, m).T if ta else _rand(rng, m, k)
        b = _rand(rng, n, k).T if tb else _rand(rng, k, n)
        o = np.empty((m, n), np.float32)
        base = {"numpy": lambda: np.matmul(a, b, out=o)}
        torch = optional_import("torch")
        if torch is not None:
            ta_, tb_, to_ = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(o.copy())
            base["torch"] = lambda: torch.matmul(ta_, tb_, out=to_)
        return (lambda: ops.matmul(a, b, out=o)), base

    return Case(name, "gemm", "cpu", "GFLOP/s", 2.0 * m * n * k, setup, limit="fma_GFLOPs",
                threads=threads, note=note, settle_s=SPINNING_BASELINE_SETTLE_S)




def _bias_relu_case(m: int, n: int, k: int) -> Case:
    def setup():
        rng = np.random.default_rng(0)
        a, b, bias = _rand(rng, m, k), _rand(rng, k, n), _rand(rng, n)
        o = np.empty((m, n), np.float32)

        def numpy_inplace():
            np.matmul(a, b, out=o)
            np.add(o, bias, out=o)
            np.maximum(o, 0, out=o)

        base = {"numpy": lambda: np.maximum(a @ b + bias, 0), "numpy_inplace": numpy_inplace}
        torch = optional_import("torch")
        if torch is not None:
            ta, tb, tbias, to = (torch.from_numpy(x) for x in (a, b, bias, o.copy()))
            base["torch"] = lambda: torch.relu_(torch.addmm(tbias, ta, tb, out=to))
        return (lambda: ops.matmul(a, b, bias=bias, activation="relu", out=o)), base

    return Case(f"gemm/bias_relu/{m}x{k}x{n}", "gemm", "cpu", "GFLOP/s", 2.0 * m * n * k, setup,
                limit="fma_GFLOPs", note="act(x·W + b) fused vs NumPy np.maximum(a @ b + bias, 0)",
                settle_s=SPINNING_BASELINE_SETTLE_S)


def _mlp_cases() -> list:
    out = []
    for batch in MLP_BATCHES:
        for fan_in, fan_out in zip(MLP[:-1], MLP[1:]):
            shape = f"b{batch}_{fan_in}x{fan_out}"
            # forward y = x·W, W stored (in, out)
            out.append(_product_case(f"gemm/mlp_fwd/{shape}", batch, fan_out, fan_in,
                                     note="x·W"))
            # weight gradient gᵀ·x: (out × batch)·(batch × in), gᵀ a transposed view
            out.append(_product_case(f"gemm/mlp_dw/{shape}", fan_out, fan_in, batch, ta=True,
                                     note="gᵀ·x"))
            # input gradient g·Wᵀ: (batch × out)·(out × in), Wᵀ a transposed view
            out.append(_product_case(f"gemm/mlp_dx/{shape}", batch, fan_in, fan_out, tb=True,
                                     note="g·Wᵀ"))
    return out


BF16_SQUARES = (1024, 2048, 4096)


def _bf16_case(n: int, kind: str) -> Case:
    """C (n×n) = A·B with precision="bf16". kind: "fp32" inputs, "bf16" inputs (ml_dtypes), or
    "avx512" (fp32 inputs, the AMX path switched off for the call)."""
    from ... import _cpu

    def setup():
        rng = np.random.default_rng(0)
        a, b = _rand(rng, n, n), _rand(rng, n, n)
        o, o32 = np.empty((n, n), np.float32), np.empty((n, n), np.float32)
        if kind == "bf16":
            import ml_dtypes

            a, b = a.astype(ml_dtypes.bfloat16), b.astype(ml_dtypes.bfloat16)
        a32, b32 = a.astype(np.float32), b.astype(np.float32)
        base = {"fusegrad_fp32": lambda: ops.matmul(a32, b32, out=o32), "numpy": lambda: np.matmul(a32, b32, out=o32)}
        torch = optional_import("torch")
        if torch is not None:
            ta, tb = torch.from_numpy(a32).bfloat16(), torch.from_numpy(b32).bfloat16()
            to = torch.empty((n, n), dtype=torch.bfloat16)
            base["torch_bf16"] = lambda: torch.matmul(ta, tb, out=to)

        def ours():
            return ops.matmul(a, b, out=o, precision="bf16")

        if kind == "avx512":
            def ours():  # noqa: F811 - the same call with AMX switched off for its duration
                amx = _cpu.cpu_features()["amx_bf16"]
                _cpu.set_cpu_feature("amx_bf16", False)
                try:
                    return ops.matmul(a, b, out=o, precision="bf16")
                finally:
                    if amx:
                        _cpu.set_cpu_feature("amx_bf16", True)

        return ours, base

    name = {"fp32": "gemm/bf16", "bf16": "gemm/bf16_inputs", "avx512": "gemm/bf16_avx512"}[kind]
    note = {"fp32": "fp32 arrays rounded to bf16 in packing; path: " + ops.gemm.bf16_path(),
            "bf16": "ml_dtypes.bfloat16 arrays; path: " + ops.gemm.bf16_path(),
            "avx512": "AMX off: vdpbf16ps"}[kind]
    return Case(f"{name}/{n}", "gemm", "cpu", "GFLOP/s", 2.0 * n**3, setup, note=note, settle_s=SPINNING_BASELINE_SETTLE_S)


def _bf16_cases() -> list:
    from ... import _cpu

    out = [_bf16_case(n, "fp32") for n in BF16_SQUARES]
    if optional_import("ml_dtypes") is not None:
        out += [_bf16_case(n, "bf16") for n in BF16_SQUARES]
    if _cpu.cpu_features()["avx512_bf16"]:
        out += [_bf16_case(n, "avx512") for n in (1024, 2048)]
    return out


def cases():
    out = [_product_case(f"gemm/square/{n}", n, n, n) for n in SQUARES]
    out.append(_product_case("gemm/square_1thread/1024", 1024, 1024, 1024, threads=1,
                             note="one core; the limit is one core's FMA peak"))
    out += _mlp_cases()
    out.append(_bias_relu_case(128, 500, 784))
    return out + _bf16_cases() + _cuda_cases()


# --- CUDA ---------------------------------------------------------------------------------------

CUDA_SQUARES = {"fp32": (2048, 4096, 8192), "tf32": (4096, 8192), "bf16": (4096, 8192)}
CUDA_LIMITS = {"fp32": "cublas_fp32_TFLOPs", "tf32": None, "bf16": "cublas_bf16_TFLOPs"}  # no TF32 probe


def _torch_cuda():
    torch = optional_import("torch")
    return torch if torch is not None and torch.cuda.is_available() else None


def _cuda_product_case(n: int, precision: str, *, tb: bool = False, bias_relu: bool = False,
                       tiles: str = "auto") -> Case:
    """C (n×n) = act(A·B + bias) on the GPU; tb: B is a transposed view of a row-major array;
    tiles: the kernel configuration (ops.gemm._CUDA_TILES), "wgmma"/"wgmma_wide" for the Hopper bf16
    kernel on 128×128/128×256 tiles."""

    def setup():
        import cupy as cp

        a = cp.random.standard_normal((n, n), dtype=cp.float32)
        b = cp.random.standard_normal((n, n), dtype=cp.float32)
        b = b.T if tb else b
        bias = cp.random.standard_normal(n, dtype=cp.float32) if bias_relu else None
        act = "relu" if bias_relu else None
        o, o2 = cp.empty((n, n), cp.float32), cp.empty((n, n), cp.float32)
        def ours():
            saved, gemm_ops._CUDA_TILES = gemm_ops._CUDA_TILES, tiles
            try:
                return ops.matmul(a, b, bias=bias, activation=act, out=o, precision=precision)
            finally:
                gemm_ops._CUDA_TILES = saved
        base = {}
        if precision == "fp32":
            if bias_relu:
                base["cupy"] = lambda: cp.maximum(cp.add(cp.matmul(a, b, out=o2), bias, out=o2), 0, out=o2)
            else:
                base["cupy"] = lambda: cp.matmul(a, b, out=o2)
        torch = _torch_cuda()
        if torch is not None:
            ta, tb_, to = torch.from_dlpack(a), torch.from_dlpack(b), torch.from_dlpack(o2)
            tbias = torch.from_dlpack(bias) if bias_relu else None
            if precision == "bf16":
                ta, tb_, to = ta.bfloat16(), tb_.bfloat16(), to.bfloat16()
                tbias = tbias.bfloat16() if bias_relu else None
            tf32 = precision == "tf32"

            def torch_call():
                torch.backends.cuda.matmul.allow_tf32 = tf32
                if bias_relu:
                    return torch.relu_(torch.addmm(tbias, ta, tb_, out=to))
                return torch.matmul(ta, tb_, out=to)

            base["torch"] = torch_call
        return ours, base

    what = "bias_relu" if bias_relu else "nt" if tb else "square"
    variant = precision + ("_tf32off" if precision == "fp32" else "") + ("_" + tiles if tiles.startswith("wgmma") else "")
    name = f"gemm/cuda_{variant}/{what}/{n}"
    note = {"fp32": "cuBLAS with TF32 off", "tf32": "vs cuBLAS TF32",
            "bf16": "fp32 inputs rounded in-kernel vs torch bf16 tensors"}[precision]
    return Case(name, "gemm", "cuda", "GFLOP/s", 2.0 * n**3, setup, limit=CUDA_LIMITS[precision], note=note)


def _cuda_cases() -> list:
    out = [_cuda_product_case(n, p) for p, sizes in CUDA_SQUARES.items() for n in sizes]
    out.append(_cuda_product_case(4096, "fp32", tb=True))
    out.append(_cuda_product_case(4096, "fp32", bias_relu=True))
    # The wgmma kernel has run only on the emulator so far: timed apart (bench/gpu_check.sh, step
    # wgmma), so that a fault in it cannot spoil the other cases' run.
    cuda = _backend.cuda_module()
    if (os.environ.get("FUSEGRAD_BENCH_WGMMA") == "1" and cuda is not None and _torch_cuda() is not None
            and cuda.gemm_wgmma_usable(0)):
        out += [_cuda_product_case(n, "bf16", tiles=t) for t in ("wgmma", "wgmma_wide") for n in CUDA_SQUARES["bf16"]]
    return out
