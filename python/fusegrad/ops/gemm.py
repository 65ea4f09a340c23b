"""Matrix products: C = act(A @ B + bias), or C += A @ B, plain or batched, with fused epilogues.

`matmul` is the kernel behind Linear layers and (as an implicit GEMM) convolutions. The bias and
the activation are applied by the GEMM kernel while it stores C, not as passes over the result.
"""
from __future__ import annotations

import numpy as np

from .. import _cpu
from .._backend import native, to_kind
from ._common import check_dtype, check_out, check_same_device
from .activation import activation_code

# Activations the GEMM epilogue offers (leaky_relu needs a slope and is not part of this API).
GEMM_ACTIVATIONS = (None, "relu", "gelu", "gelu_tanh", "sigmoid", "tanh", "silu")


def _epilogue_code(activation) -> int:
    if activation not in GEMM_ACTIVATIONS:
        known = ", ".join(repr(a) for a in GEMM_ACTIVATIONS)
        raise ValueError(f"activation: unknown activation {activation!r}; expected one of {known}")
    return activation_code(activation)


def _operand(x, name: str):
    arr, kind = native(x, name)
    check_dtype(arr, name)
    if arr.ndim not in (2, 3):
        raise ValueError(f"{name}: expected a 2-D (M, K)/(K, N) or 3-D batched array, got shape {arr.shape}")
    return arr, kind


_ND = np.ndarray
_F32 = np.dtype(np.float32)
_FAST_CODES = {a: activation_code(a) for a in GEMM_ACTIVATIONS}
# Bits the kernel returns when it could not run in place (cpp/bindings.cpp).
_COPY_A, _COPY_B, _OUT_ASIDE = 1, 2, 4


def matmul(a, b, *, bias=None, activation=None, out=None, accumulate=False, stream=None):
    """act(a @ b + bias) in float32, or out += a @ b with accumulate=True.

    a: (M, K) or (B, M, K); b: (K, N) or (B, K, N); a 2-D operand is shared by every item of a
    batched other one. Row-major arrays and transposed (column-major) views are read in place;
    other layouts are copied once. bias: (N,), added to every row. activation: None, "relu",
    "gelu", "gelu_tanh", "sigmoid", "tanh" or "silu", applied after the bias. out: where to
    write the (M, N) / (B, M, N) result; with accumulate=True the product is added into out
    (gradient accumulation), and bias/activation are not allowed.
    """
    # Fast path for the common call (2-D NumPy float32, valid arguments): the same checks in
    # straight-line code, since at MLP sizes a few microseconds of Python would cost more than
    # the product. Anything unusual goes to the general path, which also words the errors.
    if (type(a) is _ND and type(b) is _ND and a.dtype is _F32 and b.dtype is _F32
            and a.ndim == 2 and b.ndim == 2 and a.shape[1] == b.shape[0]):
        code = _FAST_CODES.get(activation) if isinstance(activation, (str, type(None))) else None
        m, n = a.shape[0], b.shape[1]
        if (code is not None
                and (bias is None or (type(bias) is _ND and bias.dtype is _F32 and bias.shape == (n,)
                                      and bias.flags.c_contiguous and not accumulate))
                and (out is None or (type(out) is _ND and out.dtype is _F32 and out.shape == (m, n)
                                     and out.flags.writeable))
                and (not accumulate or (out is not None and code == 0))):
            target = np.empty((m, n), _F32) if out is None else out
            if target.size == 0 or _cpu.gemm(a, b, target, bias, code, bool(accumulate)) == 0:
                return target
    return _matmul_general(a, b, bias, activation, out, accumulate)


def _matmul_general(a, b, bias, activation, out, accumulate):
    a_arr, kind = _operand(a, "a")
    b_arr, _ = _operand(b, "b")
    bias_arr = out_arr = None
    if bias is not None:
        bias_arr, _ = native(bias, "bias")
        check_dtype(bias_arr, "bias")
    if out is not None:
        out_arr, _ = native(out, "out")
    device = check_same_device(a=a_arr, b=b_arr, bias=bias_arr, out=out_arr)
    code = _epilogue_code(activation)

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
        # The CUDA GEMM is its own piece of work (cuda/gemm/); until it lands, say so plainly.
        raise RuntimeError(
            "fusegrad.ops.matmul: the CUDA GEMM is not built yet; pass NumPy arrays (CPU) for now"
        )

    if bias_arr is not None and not bias_arr.flags.c_contiguous:
        bias_arr = np.ascontiguousarray(bias_arr)
    result = np.empty(shape, dtype=np.float32) if out_arr is None else out_arr
    if result.size == 0:
        return out if out is not None else to_kind(result, kind)
    status = _cpu.gemm(a_arr, b_arr, result, bias_arr, code, bool(accumulate))
    if status:
        # Copy only what the kernel cannot take in place, then run once more.
        if status & _COPY_A:
            a_arr = np.ascontiguousarray(a_arr)
        if status & _COPY_B:
            b_arr = np.ascontiguousarray(b_arr)
        target = result
        if status & _OUT_ASIDE:  # an odd layout, or out overlapping an input
            target = result.copy(order="C") if accumulate else np.empty(shape, dtype=np.float32)
        if _cpu.gemm(a_arr, b_arr, target, bias_arr, code, bool(accumulate)):
            raise RuntimeError("matmul: internal error, operands still unusable after copying")
        if target is not result:
            result[...] = target
    return out if out is not None else to_kind(result, kind)
