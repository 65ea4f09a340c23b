"""Helpers of the int8 kernel tests (tests/gemm/test_quantized_matmul*.py, tests/conv/
test_quantized_conv*.py): the paths this machine has, and the integer and float64 references."""
import numpy as np
import pytest

from fusegrad import _cpu
from conftest import SUPPORTED_ISAS

FEATURES = ("amx_int8", "avx512_vnni")
# path name -> (ISA level, features left on); "generic" also runs at every lower level.
PATHS = {"amx": ("avx512", {"amx_int8", "avx512_vnni"}), "vnni": ("avx512", {"avx512_vnni"}),
         "generic": ("avx512", set())}
PATHS.update({f"generic_{level}": (level, set()) for level in SUPPORTED_ISAS if level != "avx512"})


def _available(name: str) -> bool:
    level, features = PATHS[name]
    return level in SUPPORTED_ISAS and features <= set(_cpu.supported_cpu_features())


@pytest.fixture(params=[p if _available(p) else pytest.param(p, marks=pytest.mark.skip(reason=f"no {p} here"))
                        for p in PATHS])
def int8_path(request):
    """Runs a test on one int8 path: the faster features switched off as needed, restored after;
    checks that the path asked for is the one that runs."""
    level, keep = PATHS[request.param]
    saved_isa = _cpu.isa()
    saved = {f: _cpu.cpu_features()[f] for f in FEATURES}
    _cpu.set_isa(level)
    for f in FEATURES:
        if f in _cpu.supported_cpu_features():
            _cpu.set_cpu_feature(f, f in keep)
    assert _cpu.int8_gemm_path(0)["name"] == request.param.split("_")[0]
    yield request.param
    _cpu.set_isa(saved_isa)
    for f, on in saved.items():
        if f in _cpu.supported_cpu_features():
            _cpu.set_cpu_feature(f, on)


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    before = _cpu.get_num_threads()
    _cpu.set_num_threads(request.param)
    yield request.param
    _cpu.set_num_threads(before)


def u8(rng, *shape):
    return rng.integers(0, 256, shape, dtype=np.uint8)


def s8(rng, *shape):
    return rng.integers(-128, 128, shape, dtype=np.int8)


def real_result(acc, scale, bias=None, relu=False):
    """float64 a_scale · b_scale[n] · acc + bias[n] (then relu) from the exact int64 sums."""
    v = acc.astype(np.float64) * np.asarray(scale, np.float64)
    if bias is not None:
        v = v + bias.astype(np.float64)
    return np.maximum(v, 0.0) if relu else v


def assert_requantized(got, real, out_scale, zero_point, dtype):
    """got equals clamp(round_half_even(real / out_scale) + zero_point) exactly, except where
    real / out_scale lies so close to a rounding tie that the kernel's float32 arithmetic may fall
    on the other side: there it may differ by one."""
    lo, hi = (0, 255) if dtype == np.uint8 else (-128, 127)
    x = real / out_scale
    want = np.clip(np.rint(x) + zero_point, lo, hi)
    assert got.dtype == dtype and got.shape == want.shape
    diff = np.abs(got.astype(np.int64) - want)
    near_tie = np.abs(np.abs(x - np.floor(x)) - 0.5) < 1e-3 + 1e-5 * np.abs(x)
    assert diff.max(initial=0) <= 1
    assert not np.any((diff == 1) & ~near_tie), "a requantized value is off by one away from a rounding tie"


def conv_reference(x, w, zp, stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1)):
    """Exact int64 sums of (x − zp) · w over each window, padding positions holding zp."""
    xp = np.pad(x.astype(np.int64) - zp, ((0, 0), padding[0], padding[1], (0, 0)))
    kh, kw, _, co = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    oh = (xp.shape[1] - dh * (kh - 1) - 1) // sh + 1
    ow = (xp.shape[2] - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((x.shape[0], oh, ow, co), np.int64)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw]
            out += patch @ w[i, j].astype(np.int64)
    return out


def pool_reference(x, k, s, p):
    lo = np.iinfo(x.dtype).min
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=lo)
    oh, ow = (xp.shape[1] - k) // s + 1, (xp.shape[2] - k) // s + 1
    out = np.full((x.shape[0], oh, ow, x.shape[3]), lo, x.dtype)
    for i in range(k):
        for j in range(k):
            out = np.maximum(out, xp[:, i: i + s * (oh - 1) + 1: s, j: j + s * (ow - 1) + 1: s])
    return out
