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

import math
import numbers

import numpy as np

from .. import _backend, _cpu, _emulated
from .._backend import array_module, device_of, native, to_kind
from ._common import check_dtype, check_out, check_same_device, finish_output, flag, integer, real
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


# --- int8 ---------------------------------------------------------------------------------------

INT8_MAX_K = _cpu.int8_max_k()
_OUT_RANGES = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127)}


def cpu_only(x, name: str, fn: str):
    """(NumPy array, caller's kind) for an int8-kernel argument: NotImplementedError for arrays
    on a CUDA device, which have no int8 kernels yet."""
    if isinstance(x, np.ndarray) and not _backend.is_emulated(x):
        return x, "numpy"
    arr, kind = native(x, name)
    if _backend.device_of(arr) != "cpu" or _backend.is_emulated(arr):
        raise NotImplementedError(f"{fn}: the int8 kernels run on the CPU only; {name} is a CUDA array "
                                  "(move it to the host, e.g. with .get() or .cpu())")
    return arr, kind


class QuantizedWeight:
    """An int8 weight packed once for quantized_matmul (and quantized_conv2d), with its column
    sums: reuse it across calls, as a quantized Linear or Conv2d layer does.

    shape: the (K, N) matrix it multiplies by; kernel_shape: (KH, KW, C_in, C_out) for a packed
    convolution weight, else None.
    """

    __slots__ = ("packed", "shape", "kernel_shape")

    def __init__(self, packed, kernel_shape=None):
        self.packed = packed
        self.shape = (packed.k, packed.n)
        self.kernel_shape = kernel_shape

    def column_sums(self) -> np.ndarray:
        """int32 (N,): the sum of each column of B (the factor of the zero-point correction)."""
        return self.packed.column_sums()

    def __repr__(self) -> str:
        kernel = f", kernel_shape={self.kernel_shape}" if self.kernel_shape else ""
        return f"QuantizedWeight(shape={self.shape}{kernel})"


def pack_quantized_weight(b, *, layout: str = "kn") -> QuantizedWeight:
    """Packs an int8 weight for the int8 GEMM, once.

    b: int8 (K, N) with layout="kn" (the default: out = a @ b); (N, K) with layout="nk" (a
    PyTorch Linear weight: out = a @ b.T); or a 4-D HWIO convolution weight (KH, KW, C_in, C_out),
    packed as the (KH·KW·C_in, C_out) matrix quantized_conv2d multiplies by. Any strides.
    """
    fn = "pack_quantized_weight"
    arr, _ = cpu_only(b, "b", fn)
    check_dtype(arr, "b", np.int8)
    if layout not in ("kn", "nk"):
        raise ValueError(f"{fn}: layout must be 'kn' (K, N) or 'nk' (N, K), got {layout!r}")
    kernel_shape = None
    if arr.ndim == 4:
        if layout != "kn":
            raise ValueError(f"{fn}: a 4-D weight is HWIO (KH, KW, C_in, C_out); layout='nk' is for 2-D weights")
        kernel_shape = tuple(arr.shape)
        arr = arr.reshape(-1, arr.shape[3])
    elif arr.ndim != 2:
        raise ValueError(f"{fn}: b must be 2-D (K, N) / (N, K) or 4-D HWIO, got shape {arr.shape}")
    if layout == "nk":
        arr = arr.T
    if arr.shape[0] > INT8_MAX_K:
        raise ValueError(f"{fn}: K = {arr.shape[0]} is too deep: int32 sums are exact only up to K = {INT8_MAX_K}")
    return QuantizedWeight(_cpu.int8_pack_weight(arr), kernel_shape)


def as_quantized_weight(b, fn: str) -> QuantizedWeight:
    return b if isinstance(b, QuantizedWeight) else pack_quantized_weight(b)


def _positive(value, name: str, fn: str) -> float:
    value = real(value, name, fn)
    if not value > 0:
        raise ValueError(f"{fn}: {name} must be > 0, got {value}")
    return value


def _zero_point(value, name: str, fn: str, lo: int, hi: int) -> int:
    value = integer(value, name, fn)
    if not lo <= value <= hi:
        raise ValueError(f"{fn}: {name} must be in [{lo}, {hi}], got {value}")
    return value


def requant_args(fn: str, n: int, a_scale, a_zero_point, b_scale, bias, activation, out_dtype, out_scale,
                 out_zero_point, a_name: str = "a", b_name: str = "b"):
    """The checked epilogue of an int8 product with N output channels: (a_zero_point, out dtype,
    scale vector or None, bias or None, activation code (none or relu), inverse out scale, out zero
    point)."""
    a_zp = _zero_point(a_zero_point, f"{a_name}_zero_point", fn, 0, 255)
    if activation not in (None, "relu"):
        raise ValueError(f"{fn}: activation must be None or 'relu', got {activation!r}")
    act = epilogue_code(activation)
    if (a_scale is None) != (b_scale is None):
        raise ValueError(f"{fn}: give both {a_name}_scale and {b_name}_scale (a real result) or neither "
                         "(the exact int32 product)")
    if a_scale is None:
        if out_dtype is not None and np.dtype(out_dtype) != np.int32:
            raise ValueError(f"{fn}: out_dtype={np.dtype(out_dtype).name} needs {a_name}_scale and {b_name}_scale; "
                             "without them the result is the exact int32 product")
        if bias is not None or out_scale is not None:
            raise ValueError(f"{fn}: bias and out_scale need {a_name}_scale and {b_name}_scale")
        return a_zp, np.dtype(np.int32), None, None, act, 1.0, 0
    a_scale = _positive(a_scale, f"{a_name}_scale", fn)
    if isinstance(b_scale, np.ndarray) and b_scale.ndim == 0:
        b_scale = b_scale[()]  # a 0-d array is a number
    if isinstance(b_scale, (numbers.Real, np.generic)) and not isinstance(b_scale, (bool, np.bool_)):
        b_vec = np.full(n, _positive(b_scale, f"{b_name}_scale", fn), np.float64)
    else:
        b_vec, _ = cpu_only(b_scale, f"{b_name}_scale", fn)
        if b_vec.dtype.kind != "f":
            raise TypeError(f"{b_name}_scale: expected a real number or a float array, got dtype {b_vec.dtype}")
        if b_vec.shape != (n,):
            raise ValueError(f"{fn}: {b_name}_scale must be a number or have shape ({n},) (one per output channel), "
                             f"got {b_vec.shape}")
        if not ((b_vec > 0).all() and (b_vec < np.inf).all()):  # NaN fails the first
            raise ValueError(f"{fn}: {b_name}_scale must be finite and > 0")
    scale = (b_vec * np.float64(a_scale)).astype(np.float32)  # the product in float64, rounded once
    dtype = np.dtype(np.float32 if out_dtype is None else out_dtype)
    if dtype not in (np.float32, np.uint8, np.int8):
        raise ValueError(f"{fn}: out_dtype must be float32, uint8 or int8 with scales, got {dtype.name}")
    if bias is not None:
        bias, _ = cpu_only(bias, "bias", fn)
        check_dtype(bias, "bias")
        if bias.shape != (n,):
            raise ValueError(f"{fn}: bias must have shape ({n},), got {bias.shape}")
        bias = np.ascontiguousarray(bias)
    if dtype == np.float32:
        if out_scale is not None:
            raise ValueError(f"{fn}: out_scale is for out_dtype uint8 or int8; the float32 result is not requantized")
        return a_zp, dtype, scale, bias, act, 1.0, 0
    if out_scale is None:
        raise ValueError(f"{fn}: out_dtype={dtype.name} needs out_scale (and out_zero_point)")
    inv = np.float32(1.0 / _positive(out_scale, "out_scale", fn))
    if not np.isfinite(inv):
        raise ValueError(f"{fn}: out_scale {out_scale} is too small")
    if bias is not None and not np.isfinite(bias).all():
        raise ValueError(f"{fn}: bias must be finite for a requantized output")
    out_zp = _zero_point(out_zero_point, "out_zero_point", fn, *_OUT_RANGES[dtype])
    return a_zp, dtype, scale, bias, act, float(inv), out_zp


def int8_output(out, shape: tuple, dtype, inputs, fn: str):
    """(array the kernel writes, caller's out or None): out itself when its rows are contiguous and
    it shares no memory with an input, else a fresh array finish_output copies into out."""
    if out is None:
        return np.empty(shape, dtype), None
    arr, _ = cpu_only(out, "out", fn)
    check_dtype(arr, "out", dtype)
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{fn}: out must have shape {tuple(shape)}, got {tuple(arr.shape)}")
    if not arr.flags.writeable:
        raise ValueError(f"{fn}: out is read-only")
    if arr.flags.c_contiguous and not any(np.may_share_memory(arr, x) for x in inputs if x is not None):
        return arr, arr
    return np.empty(shape, dtype), arr


def quantized_matmul(a, b, *, a_scale=None, a_zero_point=0, b_scale=None, bias=None, activation=None,
                     out_dtype=None, out_scale=None, out_zero_point=0, out=None):
    """The int8 GEMM: uint8 activations times int8 weights, summed exactly in int32.

    a: uint8 (..., K), leading dimensions flattened into the M rows (rows read in place when
    contiguous). b: int8 (K, N), or a QuantizedWeight from pack_quantized_weight (packed once;
    pass that for repeated calls). Result (..., N):
      * no scales: the exact int32 product (a − a_zero_point) @ b (activation="relu": max(·, 0));
      * a_scale and b_scale (a number, or (N,) per output channel): the real product
        a_scale · b_scale[n] · ((a − a_zero_point) @ b)[:, n] + bias[n] (bias float32 (N,)),
        then relu, as float32, or with out_dtype=np.uint8 / np.int8 requantized:
        clamp(round_half_even(real / out_scale) + out_zero_point).
    The path is the best the CPU has: AMX-INT8 tiles, AVX-512 VNNI, or portable C++. CPU arrays only.
    """
    fn = "quantized_matmul"
    a_arr, kind = cpu_only(a, "a", fn)
    check_dtype(a_arr, "a", np.uint8)
    if a_arr.ndim < 2:
        raise ValueError(f"{fn}: a must be (M, K) or (..., M, K), got shape {a_arr.shape}")
    w = as_quantized_weight(b, fn)
    k, n = w.shape
    if a_arr.shape[-1] != k:
        raise ValueError(f"{fn}: inner sizes differ: a {a_arr.shape} has K = {a_arr.shape[-1]}, b is (K, N) = {w.shape}")
    a_zp, dtype, scale, bias, act, inv, out_zp = requant_args(
        fn, n, a_scale, a_zero_point, b_scale, bias, activation, out_dtype, out_scale, out_zero_point)
    shape = a_arr.shape[:-1] + (n,)
    target, result = int8_output(out, shape, dtype, (a_arr,), fn)
    if target.size:
        rows = a_arr.reshape(math.prod(a_arr.shape[:-1]), k)
        if (k > 1 and rows.strides[1] != 1) or (rows.shape[0] > 1 and rows.strides[0] < k):
            rows = np.ascontiguousarray(rows)
        _cpu.int8_gemm(rows, w.packed, target.reshape(-1, n), a_zp, scale, bias, act, inv, out_zp, _INT8_PATH)
    return finish_output(target, result, out, kind)


# The int8 path: 0 the best usable (automatic); 1 generic, 2 vnni, 3 amx force one (benchmarks).
_INT8_PATH = 0


def quantize_uint8(x, scale, zero_point=0, *, out=None):
    """uint8 q = clamp(round_half_even(x / scale) + zero_point, 0, 255) of a float32 array (the
    quantization in front of an int8 layer; NaN gives 0), in one threaded pass. CPU arrays only."""
    fn = "quantize_uint8"
    arr, kind = cpu_only(x, "x", fn)
    check_dtype(arr, "x")
    scale = _positive(scale, "scale", fn)
    zero_point = _zero_point(zero_point, "zero_point", fn, 0, 255)
    arr = np.ascontiguousarray(arr)
    target, result = int8_output(out, arr.shape, np.uint8, (arr,), fn)
    if target.size:
        _cpu.quantize_uint8(arr, target, np.float32(1.0) / np.float32(scale), zero_point)
    return finish_output(target, result, out, kind)
