"""The int8 kernels of the gemm family: quantized_matmul (uint8 activations × int8 weights, exact
int32 sums, a requantizing epilogue), the weight packing it reuses, and the uint8 quantization in
front of it; the checks and epilogue arguments quantized_conv2d and quantized_max_pool2d share.

On NumPy arrays they run the CPU kernels (cpp/gemm/int8_*: AMX tiles, AVX-512 VNNI or portable
C++); on CUDA arrays the kernels of cuda/gemm/gemm_int8.cu (tensor cores, or dp4a where the rows
are not 16-byte aligned), on the caller's stream. A
weight is packed for one device, the one of the array it was packed from.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .. import _backend, _cpu
from .._backend import array_module, device_of, native
from ._common import check_dtype, finish_output, integer, real
from .gemm import epilogue_code

INT8_MAX_K = _cpu.int8_max_k()
_OUT_RANGES = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127)}


def int8_operand(x, name: str):
    """(native array, caller's kind, whether it is on a CUDA device) for an int8-kernel argument."""
    arr, kind = native(x, name)
    return arr, kind, device_of(arr) != "cpu"


class DeviceInt8Weight:
    """The CUDA kernels' form of a packed int8 weight (cuda/gemm/int8.cuh): B^T as an (N, K) int8
    array, k contiguous, and the int32 column sums, on B's device."""

    __slots__ = ("bt", "colsum", "k", "n", "device")

    def __init__(self, bt, colsum, device: str):
        self.bt, self.colsum, self.device = bt, colsum, device
        self.n, self.k = bt.shape

    def column_sums(self) -> np.ndarray:
        return _backend.to_host(self.colsum)


class QuantizedWeight:
    """An int8 weight packed once for quantized_matmul (and quantized_conv2d), with its column
    sums: reuse it across calls, as a quantized Linear or Conv2d layer does.

    shape: the (K, N) matrix it multiplies by; kernel_shape: (KH, KW, C_in, C_out) for a packed
    convolution weight, else None; device: "cpu" (packed for the CPU kernels) or the CUDA device
    of the array it was packed from. scale, bias: the per-channel weight scales (float64) and bias
    (float32) packed with it, checked once, as host copies (or None); a CUDA weight also keeps them
    on its device, so that a call reads nothing back from the GPU and copies nothing to it.
    """

    __slots__ = ("packed", "shape", "kernel_shape", "scale", "bias", "_on_device")

    def __init__(self, packed, kernel_shape=None, scale=None, bias=None):
        self.packed = packed
        self.shape = (packed.k, packed.n)
        self.kernel_shape = kernel_shape
        self.scale, self.bias = scale, bias
        self._on_device = {}  # "scale" / "bias" -> (host values, their copy on the weight's device)

    @property
    def device(self) -> str:
        return self.packed.device if isinstance(self.packed, DeviceInt8Weight) else "cpu"

    def column_sums(self) -> np.ndarray:
        """int32 (N,): the sum of each column of B (the factor of the zero-point correction)."""
        return self.packed.column_sums()

    def __repr__(self) -> str:
        kernel = f", kernel_shape={self.kernel_shape}" if self.kernel_shape else ""
        device = f", device={self.device!r}" if self.device != "cpu" else ""
        return f"QuantizedWeight(shape={self.shape}{kernel}{device})"


def pack_quantized_weight(b, *, layout: str = "kn", scale=None, bias=None) -> QuantizedWeight:
    """Packs an int8 weight for the int8 GEMM, once.

    b: int8 (K, N) with layout="kn" (the default: out = a @ b); (N, K) with layout="nk" (a
    PyTorch Linear weight: out = a @ b.T); or a 4-D HWIO convolution weight (KH, KW, C_in, C_out),
    packed as the (KH·KW·C_in, C_out) matrix quantized_conv2d multiplies by. Any strides. A CUDA
    array gives a weight for the CUDA kernels, on its device.
    scale (a number or (N,) floats) and bias ((N,) float32), on b's device, are the weight's
    per-channel scales and bias, checked here once: the calls then take them from the weight (and
    must not pass b_scale / w_scale or bias again), which on a GPU spares each call reading them
    back to check them and copying them over again.
    """
    fn = "pack_quantized_weight"
    arr, _, cuda = int8_operand(b, "b")
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
    n, device = arr.shape[1], device_of(arr)
    scale = None if scale is None else _checked_scale(scale, n, "scale", fn, device)
    bias = None if bias is None else _checked_bias(bias, n, fn, device)
    if cuda:
        xp = array_module(arr)
        with _backend.on_device(arr):
            bt = xp.ascontiguousarray(arr.T)
            colsum = xp.ascontiguousarray(arr.astype(xp.int32).sum(axis=0, dtype=xp.int32))
        return QuantizedWeight(DeviceInt8Weight(bt, colsum, device), kernel_shape, scale, bias)
    return QuantizedWeight(_cpu.int8_pack_weight(arr), kernel_shape, scale, bias)


def as_quantized_weight(b, fn: str, device: str = "cpu") -> QuantizedWeight:
    """b packed (if it is not already), checked to be packed for `device`."""
    w = b if isinstance(b, QuantizedWeight) else pack_quantized_weight(b)
    if w.device != device:
        raise ValueError(f"{fn}: the weight is packed for {w.device} but the input is on {device} "
                         "(pack the weight from an array on the input's device)")
    return w


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


def _host_vector(x, name: str, fn: str, device: str) -> np.ndarray:
    """A per-channel argument (scales, bias) as a NumPy array, after checking it is on `device`,
    the input's (host and device arrays are not mixed)."""
    arr, _ = native(x, name)
    if device_of(arr) != device:
        raise ValueError(f"{fn}: {name} is on {device_of(arr)} but the input is on {device}")
    return _backend.to_host(arr)


def _checked_scale(value, n: int, name: str, fn: str, device: str) -> np.ndarray:
    """A weight scale (a number, or one per output channel) as float64 (n,), each finite and > 0."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]  # a 0-d array is a number
    if isinstance(value, (numbers.Real, np.generic)) and not isinstance(value, (bool, np.bool_)):
        return np.full(n, _positive(value, name, fn), np.float64)
    vec = _host_vector(value, name, fn, device)
    if vec.dtype.kind != "f":
        raise TypeError(f"{name}: expected a real number or a float array, got dtype {vec.dtype}")
    if vec.shape != (n,):
        raise ValueError(f"{fn}: {name} must be a number or have shape ({n},) (one per output channel), "
                         f"got {vec.shape}")
    if not ((vec > 0).all() and (vec < np.inf).all()):  # NaN fails the first
        raise ValueError(f"{fn}: {name} must be finite and > 0")
    return vec.astype(np.float64)


def _checked_bias(bias, n: int, fn: str, device: str) -> np.ndarray:
    bias = _host_vector(bias, "bias", fn, device)
    check_dtype(bias, "bias")
    if bias.shape != (n,):
        raise ValueError(f"{fn}: bias must have shape ({n},), got {bias.shape}")
    return np.ascontiguousarray(bias)


def requant_args(fn: str, n: int, a_scale, a_zero_point, b_scale, bias, activation, out_dtype, out_scale,
                 out_zero_point, a_name: str = "a", b_name: str = "b", device: str = "cpu", weight=None):
    """The checked epilogue of an int8 product with N output channels: (a_zero_point, out dtype,
    scale vector or None, bias or None, activation code (none or relu), inverse out scale, out zero
    point), the vectors as NumPy arrays (array arguments on `device`, the input's). A packed
    `weight` that carries its scales or bias supplies them, and then they must not be given."""
    carried_scale = weight is not None and weight.scale is not None
    carried_bias = weight is not None and weight.bias is not None
    if carried_scale:
        if b_scale is not None:
            raise ValueError(f"{fn}: the packed weight carries its scales; leave {b_name}_scale out")
        if a_scale is None:
            raise ValueError(f"{fn}: the packed weight carries its scales: give {a_name}_scale")
        b_scale = weight.scale
    if carried_bias:
        if bias is not None:
            raise ValueError(f"{fn}: the packed weight carries its bias; leave bias out")
        bias = weight.bias
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
    b_vec = b_scale if carried_scale else _checked_scale(b_scale, n, f"{b_name}_scale", fn, device)
    scale = (b_vec * np.float64(a_scale)).astype(np.float32)  # the product in float64, rounded once
    dtype = np.dtype(np.float32 if out_dtype is None else out_dtype)
    if dtype not in (np.float32, np.uint8, np.int8):
        raise ValueError(f"{fn}: out_dtype must be float32, uint8 or int8 with scales, got {dtype.name}")
    if bias is not None and not carried_bias:
        bias = _checked_bias(bias, n, fn, device)
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


def int8_output(out, shape: tuple, dtype, like, fn: str):
    """(array the kernel writes, caller's out or None) on like's device: out itself when it is
    C-contiguous and shares no memory with like, else a fresh array finish_output copies into out."""
    xp = array_module(like)
    if out is None:
        with _backend.on_device(like):
            return xp.empty(shape, dtype), None
    arr, _ = native(out, "out")
    if device_of(arr) != device_of(like):
        raise ValueError(f"{fn}: out is on {device_of(arr)} but the inputs are on {device_of(like)}")
    check_dtype(arr, "out", dtype)
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{fn}: out must have shape {tuple(shape)}, got {tuple(arr.shape)}")
    if isinstance(arr, np.ndarray) and not arr.flags.writeable:
        raise ValueError(f"{fn}: out is read-only")
    if arr.flags.c_contiguous and not xp.may_share_memory(arr, like):
        return arr, arr
    with _backend.on_device(like):
        return xp.empty(shape, dtype), arr


def quantized_matmul(a, b, *, a_scale=None, a_zero_point=0, b_scale=None, bias=None, activation=None,
                     out_dtype=None, out_scale=None, out_zero_point=0, out=None, stream=None):
    """The int8 GEMM: uint8 activations times int8 weights, summed exactly in int32.

    a: uint8 (..., K), leading dimensions flattened into the M rows (rows read in place when
    contiguous). b: int8 (K, N), or a QuantizedWeight from pack_quantized_weight (packed once;
    pass that for repeated calls; packed with its scales and bias, it supplies b_scale and bias).
    Result (..., N):
      * no scales: the exact int32 product (a − a_zero_point) @ b (activation="relu": max(·, 0));
      * a_scale and b_scale (a number, or (N,) per output channel): the real product
        a_scale · b_scale[n] · ((a − a_zero_point) @ b)[:, n] + bias[n] (bias float32 (N,)),
        then relu, as float32, or with out_dtype=np.uint8 / np.int8 requantized:
        clamp(round_half_even(real / out_scale) + out_zero_point).
    On the CPU the path is the best the CPU has: AMX-INT8 tiles, AVX-512 VNNI, or portable C++. On
    CUDA arrays (a weight packed from a CUDA array) it is cuda/gemm/gemm_int8.cu's tensor-core
    kernel where K and a's row stride are multiples of 16, else its dp4a kernel, on the caller's
    stream.
    """
    fn = "quantized_matmul"
    a_arr, kind, cuda = int8_operand(a, "a")
    check_dtype(a_arr, "a", np.uint8)
    if a_arr.ndim < 2:
        raise ValueError(f"{fn}: a must be (M, K) or (..., M, K), got shape {a_arr.shape}")
    device = device_of(a_arr)
    w = as_quantized_weight(b, fn, device)
    k, n = w.shape
    if a_arr.shape[-1] != k:
        raise ValueError(f"{fn}: inner sizes differ: a {a_arr.shape} has K = {a_arr.shape[-1]}, b is (K, N) = {w.shape}")
    a_zp, dtype, scale, bias, act, inv, out_zp = requant_args(
        fn, n, a_scale, a_zero_point, b_scale, bias, activation, out_dtype, out_scale, out_zero_point, device=device,
        weight=w)
    shape = a_arr.shape[:-1] + (n,)
    if cuda:
        return quantized_matmul_cuda(a_arr, w, shape, a_zp, dtype, scale, bias, act, inv, out_zp, out, kind, stream, fn)
    target, result = int8_output(out, shape, dtype, a_arr, fn)
    if target.size:
        rows = a_arr.reshape(math.prod(a_arr.shape[:-1]), k)
        if (k > 1 and rows.strides[1] != 1) or (rows.shape[0] > 1 and rows.strides[0] < k):
            rows = np.ascontiguousarray(rows)
        _cpu.int8_gemm(rows, w.packed, target.reshape(-1, n), a_zp, scale, bias, act, inv, out_zp, _INT8_PATH)
    return finish_output(target, result, out, kind)


# The CUDA int8 GEMM kernel: "auto" (tensor cores where the operands allow, else dp4a), "mma" or
# "dp4a" (tests force each).
_CUDA_INT8_KERNEL = "auto"

# Output type codes of the int8 kernels (cpp/gemm/int8_gemm.h, cuda/gemm/int8.cuh).
_INT8_OUT_CODES = {np.dtype(np.int32): 0, np.dtype(np.float32): 1, np.dtype(np.uint8): 2, np.dtype(np.int8): 3}


def _kept_on_device(weight: QuantizedWeight, key: str, host, like):
    """A small epilogue vector (the combined scales, the bias) on like's device: the copy the weight
    kept from an earlier call when the values are the same, as a layer's are from call to call."""
    if host is None:
        return None
    kept = weight._on_device.get(key)
    if kept is not None and kept[0].shape == host.shape and np.array_equal(kept[0], host):
        return kept[1]
    with _backend.on_device(like):
        copy = array_module(like).asarray(host)
    weight._on_device[key] = (np.array(host), copy)
    return copy


def quantized_matmul_cuda(a, weight: QuantizedWeight, shape, a_zp, dtype, scale, bias, act, inv, out_zp, out, kind,
                          stream, fn):
    xp = array_module(a)
    w = weight.packed
    k, n = w.k, w.n
    target, result = int8_output(out, shape, dtype, a, fn)
    if target.size:
        rows = a.reshape(-1, k) if a.ndim != 2 else a
        if (k > 1 and rows.strides[1] != 1) or (rows.shape[0] > 1 and rows.strides[0] < k):
            rows = xp.ascontiguousarray(rows)
        scale_d = _kept_on_device(weight, "scale", scale, a)
        bias_d = _kept_on_device(weight, "bias", bias, a)
        with _backend.device_call([rows, w.bt, w.colsum, target, scale_d, bias_d], written=(3,), stream=stream) as call:
            pa, pb, pc, po, ps, pbias = call.pointers
            call.module.int8_gemm(pa, rows.strides[0] if rows.shape[0] > 1 else k, rows.shape[0], k, pb, pc, n, po, n,
                                  _INT8_OUT_CODES[np.dtype(dtype)], a_zp, ps, pbias, act, inv, out_zp, _CUDA_INT8_KERNEL,
                                  call.stream, call.device)
    return finish_output(target, result, out, kind)


# The int8 path: 0 the best usable (automatic); 1 generic, 2 vnni, 3 amx force one (benchmarks).
_INT8_PATH = 0


def quantize_uint8(x, scale, zero_point=0, *, out=None, stream=None):
    """uint8 q = clamp(round_half_even(x / scale) + zero_point, 0, 255) of a float32 array (the
    quantization in front of an int8 layer; NaN gives 0), in one threaded pass on the CPU or one
    kernel on a CUDA array's device."""
    fn = "quantize_uint8"
    arr, kind, cuda = int8_operand(x, "x")
    check_dtype(arr, "x")
    scale = _positive(scale, "scale", fn)
    zero_point = _zero_point(zero_point, "zero_point", fn, 0, 255)
    inv = np.float32(1.0) / np.float32(scale)
    arr = array_module(arr).ascontiguousarray(arr)
    target, result = int8_output(out, arr.shape, np.uint8, arr, fn)
    if target.size and cuda:
        with _backend.device_call([arr, target], written=(1,), stream=stream) as call:
            call.module.quantize_uint8(call.pointers[0], arr.size, call.pointers[1], float(inv), zero_point,
                                       call.stream, call.device)
    elif target.size:
        _cpu.quantize_uint8(arr, target, inv, zero_point)
    return finish_output(target, result, out, kind)
