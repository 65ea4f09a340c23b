"""Matrix products: C = act(A @ B + bias), or C += A @ B, plain or batched, with fused epilogues.

`matmul` is the kernel behind Linear layers and (as an implicit GEMM) convolutions. The bias and
the activation are applied by the GEMM kernel while it stores C, not as passes over the result.
Which operand layouts are read in place and which are copied is the compiled side's policy
(cpp/gemm/gemm_layout.cpp): row- and column-major matrices with any leading dimension are read
where they are.
"""
from __future__ import annotations

from .. import _backend, _cpu
from .._backend import native, to_kind
from ._common import check_dtype, check_out, check_same_device, flag
from .activation import EPILOGUE, activation_code


def epilogue_code(activation) -> int:
    """The code of an activation a GEMM or convolution applies while storing (None: none)."""
    if activation is not None and activation not in EPILOGUE:
        known = ", ".join(repr(a) for a in [None, *sorted(EPILOGUE)])
        raise ValueError(f"activation: unknown activation {activation!r}; expected one of {known}")
    return activation_code(activation)


_EPILOGUE_CODES = {None: activation_code(None), **{name: activation_code(name) for name in EPILOGUE}}


def _operand(x, name: str):
    arr, kind = native(x, name)
    check_dtype(arr, name)
    if arr.ndim not in (2, 3):
        raise ValueError(f"{name}: expected a 2-D (M, K)/(K, N) or 3-D batched array, got shape {arr.shape}")
    return arr, kind


def matmul(a, b, *, bias=None, activation=None, out=None, accumulate=False, stream=None):
    """act(a @ b + bias) in float32, or out += a @ b with accumulate=True.

    a: (M, K) or (B, M, K); b: (K, N) or (B, K, N); a 2-D operand is shared by every item of a
    batched other one. Row-major arrays and transposed (column-major) views are read in place;
    other layouts are copied once. bias: (N,), added to every row. activation: None, "relu",
    "gelu", "gelu_tanh", "sigmoid", "tanh" or "silu", applied after the bias. out: where to
    write the (M, N) / (B, M, N) result; with accumulate=True the product is added into out
    (gradient accumulation), and bias/activation are not allowed.
    """
    # The compiled side takes the common call (NumPy float32 operands that fit) in a fraction of a
    # microsecond and returns None for anything else, which then gets the full checks below and
    # their error messages. At MLP sizes a few microseconds of Python would cost as much as the
    # product itself.
    code = _EPILOGUE_CODES.get(activation, -1) if activation is None or type(activation) is str else -1
    if type(accumulate) is not bool or _backend.emulating:
        code = -1  # the checked path reads or refuses it, or dispatches to the emulated device
    result = _cpu.gemm(a, b, out, bias, code, accumulate is True)
    if result is not None:
        return result
    return _matmul_checked(a, b, bias, activation, out, accumulate)


def _matmul_checked(a, b, bias, activation, out, accumulate):
    a_arr, kind = _operand(a, "a")
    b_arr, _ = _operand(b, "b")
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
        # The CUDA GEMM is its own piece of work (cuda/gemm/); until it lands, say so plainly.
        raise RuntimeError(
            "fusegrad.ops.matmul: the CUDA GEMM is not built yet; pass NumPy arrays (CPU) for now"
        )
    result = _cpu.gemm(a_arr, b_arr, out_arr, bias_arr, code, accumulate)
    if result is None:
        raise RuntimeError(f"matmul: internal error, the kernel refused checked operands {a_arr.shape}, {b_arr.shape}")
    return out if out is not None else to_kind(result, kind)
