"""Matrix products: C = act(A @ B + bias), or C += A @ B, plain or batched, with fused epilogues.

`matmul` is the kernel behind Linear layers and (as an implicit GEMM) convolutions. The bias and
the activation are applied by the GEMM kernel while it stores C, not as passes over the result.
Which operand layouts are read in place and which are copied is the compiled side's policy
(cpp/gemm/gemm_layout.cpp): row- and column-major matrices with any leading dimension are read
where they are. CUDA arrays take the same rule (cuda/gemm/), here in _matmul_cuda.

precision: "fp32" (the default, fp32 FMAs everywhere), "bf16" on both devices, or "tf32" on CUDA
arrays. tf32/bf16 round A and B to tf32 (10-bit mantissa) or bf16 (7-bit, round to nearest even)
and sum the exact products in fp32 (errors of ~3e-4 and ~3e-3 of the result's size on random
data); C, bias and the epilogue stay fp32. On CUDA they run on tensor cores. On the CPU, bf16 runs
on AMX-BF16 tiles where the CPU has them, else on AVX-512 BF16 (vdpbf16ps), else rounds the
operands and runs the fp32 kernel (cpp/gemm/bf16_gemm.h); `bf16_path()` says which. With
precision="bf16" a CPU operand may also be an `ml_dtypes.bfloat16` array, used as it is. The CPU
refuses tf32 rather than silently computing something else.
"""
from __future__ import annotations

import numpy as np

from .. import _backend, _cpu, _emulated
from .._backend import array_module, device_of, native, to_kind
from ._common import check_dtype, check_out, check_same_device, flag
from .activation import EPILOGUE, activation_code


def epilogue_code(activation) -> int:
    """The code of an activation a GEMM or convolution applies while storing (None: none)."""
    if activation is not None and activation not in EPILOGUE:
        known = ", ".join(repr(a) for a in [None, *sorted(EPILOGUE)])
        raise ValueError(f"activation: unknown activation {activation!r}; expected one of {known}")
    return activation_code(activation)


_EPILOGUE_CODES = {None: activation_code(None), **{name: activation_code(name) for name in EPILOGUE}}


def is_bf16_array(x) -> bool:
    """Whether x is a NumPy array of ml_dtypes.bfloat16 (found by its dtype's name, so fusegrad
    needs ml_dtypes only where its arrays are passed in)."""
    return isinstance(x, np.ndarray) and x.dtype.name == "bfloat16" and x.dtype.itemsize == 2


def _operand(x, name: str, precision: str = "fp32"):
    arr, kind = native(x, name)
    if is_bf16_array(arr) and device_of(arr) == "cpu":  # the CUDA kernels read float32 only
        if precision != "bf16":
            raise TypeError(f"{name}: dtype bfloat16 is taken only with precision='bf16' (got precision="
                            f"{precision!r}); expected float32")
    else:
        check_dtype(arr, name)
    if arr.ndim not in (2, 3):
        raise ValueError(f"{name}: expected a 2-D (M, K)/(K, N) or 3-D batched array, got shape {arr.shape}")
    return arr, kind


PRECISIONS = ("fp32", "tf32", "bf16")


def matmul(a, b, *, bias=None, activation=None, out=None, accumulate=False, precision="fp32", stream=None):
    """act(a @ b + bias) in float32, or out += a @ b with accumulate=True.

    a: (M, K) or (B, M, K); b: (K, N) or (B, K, N); a 2-D operand is shared by every item of a
    batched other one. Row-major arrays and transposed (column-major) views are read in place;
    other layouts are copied once. bias: (N,), added to every row. activation: None, "relu",
    "gelu", "gelu_tanh", "sigmoid", "tanh" or "silu", applied after the bias. out: where to
    write the (M, N) / (B, M, N) result; with accumulate=True the product is added into out
    (gradient accumulation), and bias/activation are not allowed. precision: "fp32", "bf16" (a and b
    rounded to bf16, or given as ml_dtypes.bfloat16 arrays on the CPU; fp32 sums and result), or
    for CUDA arrays "tf32" (see the module docstring). stream: the CUDA
    stream to run on (default: CuPy's current stream).
    """
    # The compiled side takes the common call (NumPy float32 operands that fit) in a fraction of a
    # microsecond and returns None for anything else, which then gets the full checks below and
    # their error messages. At MLP sizes a few microseconds of Python would cost as much as the
    # product itself.
    code = _EPILOGUE_CODES.get(activation, -1) if activation is None or type(activation) is str else -1
    if type(accumulate) is not bool or _backend.emulating or type(precision) is not str or precision != "fp32":
        code = -1  # the checked path reads or refuses it, or dispatches to the emulated device
    result = _cpu.gemm(a, b, out, bias, code, accumulate is True)
    if result is not None:
        return result
    return _matmul_checked(a, b, bias, activation, out, accumulate, precision, stream)


def _matmul_checked(a, b, bias, activation, out, accumulate, precision="fp32", stream=None):
    if type(precision) is not str or precision not in PRECISIONS:
        raise ValueError(f"matmul: precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    a_arr, kind = _operand(a, "a", precision)
    b_arr, _ = _operand(b, "b", precision)
    bias_arr = out_arr = None
    if bias is not None:
        bias_arr, _ = native(bias, "bias")
        check_dtype(bias_arr, "bias")
    if out is not None:
        out_arr, _ = native(out, "out")
    device = check_same_device(a=a_arr, b=b_arr, bias=bias_arr, out=out_arr)
    code = epilogue_code(activation)
    accumulate = flag(accumulate, "accumulate", "matmul")

    m, k = a_arr.shape[-2:]
    k_b, n = b_arr.shape[-2:]
    if k != k_b:
        raise ValueError(f"matmul: inner sizes differ: a {a_arr.shape} has K = {k}, b {b_arr.shape} has K = {k_b}")
    batched = a_arr.ndim == 3 or b_arr.ndim == 3
    if a_arr.ndim == 3 and b_arr.ndim == 3 and a_arr.shape[0] != b_arr.shape[0]:
        raise ValueError(f"matmul: batch sizes differ: a {a_arr.shape}, b {b_arr.shape}")
    batch = a_arr.shape[0] if a_arr.ndim == 3 else b_arr.shape[0] if b_arr.ndim == 3 else None
    shape = (batch, m, n) if batched else (m, n)
    if bias_arr is not None and (bias_arr.ndim != 1 or bias_arr.shape[0] != n):
        raise ValueError(f"bias: expected shape ({n},) for a result of shape {shape}, got {bias_arr.shape}")
    if accumulate:
        if out is None:
            raise ValueError("matmul: accumulate=True adds into out, so out must be given")
        if bias_arr is not None or code != 0:
            raise ValueError("matmul: accumulate=True takes no bias or activation (they would apply to the sum)")
    if out is not None:
        out_arr = check_out(out, shape, device)

    if device != "cpu":
        result = _matmul_cuda(a_arr, b_arr, bias_arr, out_arr, code, accumulate, precision, shape, stream)
        return out if out is not None else to_kind(result, kind)
    if precision == "bf16":
        return _matmul_bf16_cpu(a_arr, b_arr, bias_arr, out_arr, code, accumulate, shape, out, kind)
    if precision != "fp32":
        raise ValueError(f"matmul: precision={precision!r} runs on CUDA tensor cores only; the CPU GEMM computes "
                         "in fp32 or bf16 (precision='fp32' or 'bf16')")
    result = _cpu.gemm(a_arr, b_arr, out_arr, bias_arr, code, accumulate)
    if result is None:
        raise RuntimeError(f"matmul: internal error, the kernel refused checked operands {a_arr.shape}, {b_arr.shape}")
    return out if out is not None else to_kind(result, kind)


# --- bf16 on the CPU -----------------------------------------------------------------------------


def bf16_path() -> str:
    """The path matmul(precision="bf16") takes on the CPU now: "amx_bf16", "avx512_bf16" or
    "generic" (see the module docstring; fusegrad._cpu.set_cpu_feature switches the fast ones off)."""
    return _cpu.gemm_bf16_path()


def _bf16_kernel_operand(x):
    """x as the bf16 kernel takes it: float32, or bfloat16 as its uint16 bits; any strides of
    whole elements are read in place (the packing rounds and rearranges anyway)."""
    if any(s % x.itemsize for s, d in zip(x.strides, x.shape) if d > 1):
        x = np.ascontiguousarray(x)
    return x.view(np.uint16) if is_bf16_array(x) else x


def _matmul_bf16_cpu(a, b, bias, out_arr, code, accumulate, shape, out, kind):
    inputs = [x for x in (a, b, bias) if x is not None]
    if out_arr is not None and out_arr.flags.c_contiguous and not any(np.may_share_memory(out_arr, x) for x in inputs):
        target = out_arr
    else:
        target = np.empty(shape, np.float32)
        if accumulate:
            target[...] = out_arr
    if bias is not None and not bias.flags.c_contiguous:
        bias = np.ascontiguousarray(bias)
    if target.size:
        _cpu.gemm_bf16(_bf16_kernel_operand(a), _bf16_kernel_operand(b), target, bias, code, accumulate)
    if out_arr is not None and target is not out_arr:
        out_arr[...] = target
    return out if out is not None else to_kind(target, kind)


# --- CUDA ---------------------------------------------------------------------------------------

# Tile configuration of the CUDA kernels: "auto" (by size), "large" or "small"; fixed by tests to
# cover each configuration.
_CUDA_TILES = "auto"


def _on_emulator(x):
    """x itself, or for an emulated array outside the emulator's guarded memory (a view of NumPy
    memory while emulating) a guarded copy: device_call would stage it as a C-contiguous copy,
    so the strides the kernel is given must be those of the copy."""
    if x is not None and _backend.is_emulated(x) and not _emulated.is_guarded(x):
        return _emulated.to_device(x)
    return x


def _matrix_strides(x):
    """(row, column, batch) strides in elements of a 2-D or 3-D float32 array whose matrices the
    kernels read in place (row- or column-major, any leading dimension, strides >= 0), else None.
    The stride of a dimension of size 1 is free, and taken as 1; an empty operand is never read."""
    if x.size == 0:
        return 1, 1, 0
    if any(s < 0 or s % 4 for s in x.strides):
        return None
    rs, cs = x.strides[-2] // 4, x.strides[-1] // 4
    if x.shape[-1] == 1:
        cs = 1
    elif x.shape[-2] == 1:
        rs = 1
    if rs != 1 and cs != 1:
        return None
    bs = x.strides[0] // 4 if x.ndim == 3 and x.shape[0] > 1 else 0
    return rs, cs, bs


def _operand_for_cuda(x, xp):
    x = _on_emulator(x)
    strides = _matrix_strides(x)
    if strides is None:  # other layouts are copied once, as on the CPU
        x = xp.ascontiguousarray(x)
        strides = _matrix_strides(x)
    return x, strides


def _writable_in_place(out, inputs, xp) -> bool:
    """Whether the kernel can store into out itself: unit column stride, rows and batch items
    that do not overlap, guarded memory on the emulator, and no memory shared with an input."""
    if _backend.is_emulated(out) and not _emulated.is_guarded(out):
        return False
    m, n = out.shape[-2:]
    s = out.strides
    if any(v < 0 or v % 4 for v in s) or (n > 1 and s[-1] != 4) or (m > 1 and s[-2] < 4 * n):
        return False
    if out.ndim == 3 and out.shape[0] > 1 and s[0] < s[-2] * (m - 1) + 4 * n:
        return False
    return not any(x is not None and x.size and xp.may_share_memory(out, x) for x in inputs)


def _matmul_cuda(a, b, bias, out, code, accumulate, precision, shape, stream):
    """The product on the device of the operands (checked), into out or a new array."""
    xp = array_module(a)
    a, (a_rs, a_cs, a_bs) = _operand_for_cuda(a, xp)
    b, (b_rs, b_cs, b_bs) = _operand_for_cuda(b, xp)
    if bias is not None and not bias.flags.c_contiguous:
        bias = xp.ascontiguousarray(bias)
    if out is not None and _writable_in_place(out, (a, b, bias), xp):
        target = out
    else:
        target = xp.empty(shape, np.float32)
        if accumulate:
            target[...] = out
    if target.size:
        m, n = shape[-2:]
        k = a.shape[-1]
        batch = shape[0] if len(shape) == 3 else 1
        c_rs = target.strides[-2] // 4 if m > 1 else n
        c_bs = target.strides[0] // 4 if len(shape) == 3 and batch > 1 else 0
        with _backend.device_call([a, b, target, bias], written=(2,), stream=stream) as call:
            call.module.gemm(*call.pointers, batch, m, n, k, a_rs, a_cs, a_bs, b_rs, b_cs, b_bs, c_rs, c_bs, code,
                             accumulate, precision, _CUDA_TILES, call.stream, call.device)
    if out is not None and target is not out:
        out[...] = target
    return target
