"""fusegrad.ops.matmul on CUDA arrays (cuda/gemm/) against float64 NumPy: every kernel (fp32 SIMT,
TF32 and BF16 tensor cores) and tile configuration, on shapes one below and above each tile size,
every layout of A and B (vector and scalar loads), bias and each activation, batches, accumulate
and empty shapes. Each test runs on the host SIMT emulator every run and on a GPU where there is
one (the `cuda_device` fixture); on the emulator the launch log says which kernel ran.

Tolerances: an elementwise bound from the inputs' rounding (none for fp32, 2^-11 relative for
tf32, 2^-8 for bf16) and fp32 accumulation over K, both scaled by |A|·|B|; and the norm-wise
errors the precisions are known for (3e-4 of ‖A·B‖ for tf32, 3e-3 for bf16 on random data).
"""
import math

import numpy as np
import pytest

import fusegrad
import fusegrad.ops as ops
from fusegrad.ops import gemm as gemm_ops

PRECISIONS = ["fp32", "tf32", "bf16"]
# Tile sizes (BM = BN) of each configuration and K step of each kernel: cuda/gemm/simt.cuh
# (SimtLarge, SimtSmall, kBK = 8), mma.cuh (MmaLarge, MmaSmall, kBK = 32) and gemm_bf16.cu
# (Bf16Large, Bf16Small, kBK = 32).
TILE = {"large": 128, "small": 64}
THREADS = {"large": 256, "small": 128}
K_STEP = {"fp32": 8, "tf32": 32, "bf16": 32}
KERNEL = {"fp32": "simt_gemm_kernel<", "tf32": "mma_gemm_kernel<Tf32Mma", "bf16": "bf16_gemm_kernel<"}
INPUT_ROUNDING = {"fp32": 0.0, "tf32": 2.0**-11, "bf16": 2.0**-8}
NORM_TOLERANCE = {"fp32": 1e-6, "tf32": 6e-4, "bf16": 1e-2}


def _gelu(x):
    return x * 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


ACTIVATIONS = {
    None: lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
    "silu": lambda x: x / (1.0 + np.exp(-x)),
    "gelu": _gelu,
    "gelu_tanh": lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3))),
}


@pytest.fixture
def tiles(monkeypatch):
    """Forces a tile configuration of the CUDA kernels: tiles("large") or tiles("small")."""
    return lambda name: monkeypatch.setattr(gemm_ops, "_CUDA_TILES", name)


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def host(x):
    return fusegrad._backend.to_host(x).astype(np.float64)


def assert_gemm_close(got, a, b, precision, bias=None, activation=None, base=None):
    """got == act(a @ b + bias) (+ base), within what the precision's rounding allows."""
    a, b = host(a), host(b)
    ref = a @ b + (0.0 if bias is None else host(bias))
    scale = np.abs(a) @ np.abs(b) + (0.0 if bias is None else np.abs(host(bias)))
    k = a.shape[-1]
    bound = (2 * INPUT_ROUNDING[precision] + (k + 2) * 2.0**-23) * scale + 1e-30
    if base is not None:
        ref, bound = ref + base, bound + np.abs(base) * 2.0**-23
    out = ACTIVATIONS[activation](ref)
    if activation is not None:  # |f'| <= 1.13 for these; and the fp32 evaluation of f itself
        bound = 1.2 * bound + 2e-6 * (1.0 + np.abs(out))
    got = host(got)
    assert got.shape == out.shape
    excess = np.abs(got - out) - bound
    assert excess.max(initial=-1.0) <= 0, f"{precision}: max error beyond the bound {excess.max():.3g}"
    if out.size and precision != "fp32":
        assert np.linalg.norm(got - out) <= NORM_TOLERANCE[precision] * np.linalg.norm(out) + 1e-30


def assert_ran(cuda_device, precision, tiles=None, grid=None):
    """On the emulator: the kernel of `precision` ran, with the threads of `tiles` and `grid` blocks."""
    launches = cuda_device.emulation.launches if cuda_device.emulation is not None else None
    if launches is None:
        return
    assert launches, "no kernel ran"
    last = launches[-1]
    assert last["kernel"].startswith(KERNEL[precision]), last["kernel"]
    if tiles is not None:
        assert last["block"] == (THREADS[tiles], 1, 1)
    if grid is not None:
        assert last["grid"][:2] == grid
    cuda_device.emulation.clear()


def tail_shapes(precision, tile):
    t, bk = TILE[tile], K_STEP[precision]
    return [(1, 1, 1), (t - 1, t + 1, bk - 1), (t + 1, t - 1, bk + 1), (t, t, bk), (2 * t + 1, 5, 2 * bk - 1),
            (7, t + 3, 3), (37, 41, 9 * bk + 5)]


# --- every kernel and tile configuration, on the edges of its tiles ---------------------------


@pytest.mark.parametrize("tile", ["large", "small"])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_tails_of_each_kernel_and_tile(cuda_device, precision, tile, tiles, rng):
    tiles(tile)
    t = TILE[tile]
    for m, n, k in tail_shapes(precision, tile):
        a, b = rand(rng, m, k), rand(rng, k, n)
        got = ops.matmul(cuda_device.array(a), cuda_device.array(b), precision=precision)
        assert_ran(cuda_device, precision, tile, (-(-m // t) * -(-n // t), 1))
        assert_gemm_close(got, a, b, precision)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_automatic_tiles_pick_small_ones_for_small_problems(cuda_device, precision, rng):
    a, b = rand(rng, 100, 30), rand(rng, 30, 90)
    got = ops.matmul(cuda_device.array(a), cuda_device.array(b), precision=precision)
    assert_ran(cuda_device, precision, "small")  # 1 large tile for 132 SMs
    assert_gemm_close(got, a, b, precision)


@pytest.mark.parametrize("tile", ["large", "small"])
@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_tensor_cores_are_exact_on_inputs_they_represent(cuda_device, precision, tile, tiles, rng):
    # Multiples of 1/4 below 4 have 4 significant bits: tf32 and bf16 hold them exactly, their
    # products are exact and the sums exact in fp32, so any misplaced fragment element shows.
    tiles(tile)
    a = rng.integers(-16, 16, (70, 75)).astype(np.float32) / 4
    b = rng.integers(-16, 16, (75, 66)).astype(np.float32) / 4
    got = ops.matmul(cuda_device.array(a), cuda_device.array(b), precision=precision)
    assert_ran(cuda_device, precision, tile)
    np.testing.assert_array_equal(host(got), a.astype(np.float64) @ b)


def _round_tf32(x):  # cvt.rna.tf32.f32: to nearest, ties away from zero
    bits = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x1000) & 0xFFFFE000).astype(np.uint32).view(np.float32)


def _round_bf16(x):  # to nearest even
    bits = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).astype(np.uint32).view(np.float32)


@pytest.mark.parametrize("precision, rounding", [("tf32", _round_tf32), ("bf16", _round_bf16)])
def test_tensor_cores_round_inputs_to_nearest(cuda_device, precision, rounding, rng):
    # Against the product of the rounded inputs only fp32 accumulation error is left: this holds
    # the kernels to rounding (not truncating) A and B.
    a, b = rand(rng, 40, 96), rand(rng, 96, 48)
    got = host(ops.matmul(cuda_device.array(a), cuda_device.array(b), precision=precision))
    ra, rb = rounding(a).astype(np.float64), rounding(b).astype(np.float64)
    assert np.all(np.abs(got - ra @ rb) <= (96 + 2) * 2.0**-23 * (np.abs(ra) @ np.abs(rb)))


# --- the Hopper wgmma kernel (bf16, opt-in with tiles "wgmma" or "wgmma_wide") -------------------
# gemm_bf16.cu's WgmmaTile: 128×128 or 128×256 block tiles of two warpgroups, 64 of k per stage. On
# the emulator it runs every time; on a GPU only where the module has sm_90a code and the device is
# a Hopper.
WGMMA_BN = {"wgmma": 128, "wgmma_wide": 256}


@pytest.fixture(params=list(WGMMA_BN))
def wgmma(request, cuda_device, tiles):
    tiles(request.param)
    cuda_device.wgmma_bn = WGMMA_BN[request.param]
    if cuda_device.emulation is None:
        try:
            ops.matmul(cuda_device.array(np.ones((1, 1), np.float32)), cuda_device.array(np.ones((1, 1), np.float32)),
                       precision="bf16")
        except ValueError as e:  # built without sm_90a, or not a Hopper: nothing of this kernel to run
            pytest.skip(str(e))
    return cuda_device


def assert_wgmma_ran(cuda_device, grid=None):
    launches = cuda_device.emulation.launches if cuda_device.emulation is not None else None
    if launches is None:
        return
    last = launches[-1]
    assert last["kernel"].startswith("bf16_wgmma_kernel"), last["kernel"]
    assert last["block"] == (256, 1, 1)
    if grid is not None:
        assert last["grid"][:2] == grid
    cuda_device.emulation.clear()


def test_wgmma_tails(wgmma, rng):
    bn = wgmma.wgmma_bn
    for m, n, k in [(1, 1, 1), (127, bn + 1, 63), (129, bn - 1, 65), (128, bn, 64), (257, 5, 127), (7, 131, 3),
                    (37, 41, 9 * 64 + 5), (130, 2 * bn + 3, 3 * 64)]:
        a, b = rand(rng, m, k), rand(rng, k, n)
        got = ops.matmul(wgmma.array(a), wgmma.array(b), precision="bf16")
        assert_wgmma_ran(wgmma, (-(-m // 128) * -(-n // bn), 1))
        assert_gemm_close(got, a, b, "bf16")


def test_wgmma_is_exact_on_inputs_bf16_represents(wgmma, rng):
    # Every element of A and B lands in one product: a misplaced core matrix, a wrong descriptor
    # offset or a misread accumulator register changes the exact result.
    a = rng.integers(-16, 16, (200, 150)).astype(np.float32) / 4
    b = rng.integers(-16, 16, (150, 140)).astype(np.float32) / 4
    got = ops.matmul(wgmma.array(a), wgmma.array(b), precision="bf16")
    assert_wgmma_ran(wgmma)
    np.testing.assert_array_equal(host(got), a.astype(np.float64) @ b)


def test_wgmma_epilogue_layouts_and_batches(wgmma, rng):
    a, b, bias = rand(rng, 3, 70, 90), rand(rng, 100, 90), rand(rng, 100)  # b used transposed, shared
    got = ops.matmul(wgmma.array(a), wgmma.array(b).T, bias=wgmma.array(bias), activation="gelu", precision="bf16")
    assert_wgmma_ran(wgmma, (1, 3))
    assert_gemm_close(got, a, np.broadcast_to(b.T, (3, 90, 100)), "bf16", bias=bias, activation="gelu")
    base = rand(rng, 70, 100)
    out = wgmma.array(base)
    ops.matmul(wgmma.array(a[0]), wgmma.array(b).T, out=out, accumulate=True, precision="bf16")
    assert_gemm_close(out, a[0], b.T, "bf16", base=base.astype(np.float64))


def test_wgmma_is_for_bf16_only(wgmma, rng):
    for precision in ("fp32", "tf32"):
        with pytest.raises(ValueError, match="tiles 'wgmma' are for precision 'bf16'"):
            ops.matmul(wgmma.array(rand(rng, 4, 4)), wgmma.array(rand(rng, 4, 4)), precision=precision)


# --- layouts: row/column-major, leading dimensions, vector and scalar loads -------------------


def stored(cuda_device, rng, rows, cols, transposed, variant):
    """A rows×cols float32 device matrix, row-major or a transposed view of a row-major array,
    whose leading dimension allows 16-byte loads ("aligned"), is odd ("odd_ld"), or whose base is
    one float past an aligned address ("offset"): the last two take the scalar loads."""
    inner, outer = (rows, cols) if transposed else (cols, rows)
    ld = -(-inner // 4) * 4 + (1 if variant == "odd_ld" else 4)
    skip = 1 if variant == "offset" else 0
    flat = cuda_device.array(rand(rng, outer * ld + skip))
    matrix = flat[skip:skip + outer * ld].reshape(outer, ld)[:, :inner]
    return matrix.T if transposed else matrix


@pytest.mark.parametrize("variant", ["aligned", "odd_ld", "offset"])
@pytest.mark.parametrize("ta, tb", [(False, False), (True, False), (False, True), (True, True)],
                         ids=["nn", "tn", "nt", "tt"])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_layouts_are_read_in_place(cuda_device, precision, ta, tb, variant, rng):
    a = stored(cuda_device, rng, 67, 45, ta, variant)
    b = stored(cuda_device, rng, 45, 38, tb, variant)
    got = ops.matmul(a, b, precision=precision)
    assert_ran(cuda_device, precision)
    assert_gemm_close(got, a, b, precision)


def test_other_strides_are_copied_first(cuda_device, rng):
    a = cuda_device.array(rand(rng, 30, 40))[:, ::2]  # neither stride unit: copied, then read
    b = cuda_device.array(rand(rng, 20, 17))
    got = ops.matmul(a, b)
    assert_gemm_close(got, a, b, "fp32")


# --- epilogue: bias, activations, accumulate ----------------------------------------------------


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("precision", PRECISIONS)
def test_bias_and_each_activation(cuda_device, precision, activation, rng):
    a, b, bias = rand(rng, 33, 21), rand(rng, 21, 42), rand(rng, 42)
    got = ops.matmul(cuda_device.array(a), cuda_device.array(b), bias=cuda_device.array(bias),
                     activation=activation, precision=precision)
    assert_ran(cuda_device, precision)
    assert_gemm_close(got, a, b, precision, bias=bias, activation=activation)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_accumulate_adds_into_out(cuda_device, precision, rng):
    a, b, base = rand(rng, 45, 30), rand(rng, 30, 50), rand(rng, 45, 50)
    out = cuda_device.array(base)
    assert ops.matmul(cuda_device.array(a), cuda_device.array(b), out=out, accumulate=True,
                      precision=precision) is out
    assert_gemm_close(out, a, b, precision, base=base.astype(np.float64))


@pytest.mark.parametrize("precision", PRECISIONS)
def test_out_views_that_cannot_be_stored_along_rows(cuda_device, precision, rng):
    # A column-major out and one aliasing an input are computed aside and copied in.
    a, b, base = rand(rng, 20, 24), rand(rng, 24, 20), rand(rng, 20, 20)
    out = cuda_device.array(base.T.copy()).T
    ops.matmul(cuda_device.array(a), cuda_device.array(b), out=out, accumulate=True, precision=precision)
    assert_gemm_close(out, a, b, precision, base=base.astype(np.float64))
    a20, b20 = a[:, :20].copy(), b[:20].copy()
    square = cuda_device.array(a20)
    ops.matmul(square, cuda_device.array(b20), out=square, precision=precision)
    assert_gemm_close(square, a20, b20, precision)


# --- batches and empty shapes -------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 3, 40])
@pytest.mark.parametrize("dims", ["3d_3d", "3d_2d", "2d_3d"])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_batches_and_shared_operands(cuda_device, precision, dims, batch, rng):
    a = rand(rng, batch, 19, 23) if dims.startswith("3d") else rand(rng, 19, 23)
    b = rand(rng, batch, 23, 29) if dims.endswith("3d") else rand(rng, 23, 29)
    bias = rand(rng, 29)
    got = ops.matmul(cuda_device.array(a), cuda_device.array(b), bias=cuda_device.array(bias), activation="relu",
                     precision=precision)
    assert_ran(cuda_device, precision, grid=(1, batch))
    assert got.shape == (batch, 19, 29)
    assert_gemm_close(got, np.broadcast_to(a, (batch, 19, 23)), np.broadcast_to(b, (batch, 23, 29)), precision,
                      bias=bias, activation="relu")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_batched_transposed_views(cuda_device, precision, rng):
    a = cuda_device.array(rand(rng, 4, 30, 18)).transpose(0, 2, 1)  # (4, 18, 30), column-major items
    b = cuda_device.array(rand(rng, 30, 4, 11)).transpose(1, 0, 2)  # batch stride 11, rows 44 apart
    got = ops.matmul(a, b, precision=precision)
    assert_gemm_close(got, a, b, precision)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_empty_shapes(cuda_device, precision, rng):
    dev = cuda_device.array
    for m, n in ((0, 5), (5, 0)):
        got = ops.matmul(dev(rand(rng, m, 3)), dev(rand(rng, 3, n)), precision=precision)
        assert got.shape == (m, n)
    assert ops.matmul(dev(rand(rng, 0, 4, 3)), dev(rand(rng, 0, 3, 6)), precision=precision).shape == (0, 4, 6)
    # K = 0: the product is zero, so the result is act(bias), and accumulate leaves out unchanged
    bias = rand(rng, 6)
    got = ops.matmul(dev(rand(rng, 4, 0)), dev(rand(rng, 0, 6)), bias=dev(bias), activation="sigmoid",
                     precision=precision)
    np.testing.assert_allclose(host(got), np.broadcast_to(1 / (1 + np.exp(-bias.astype(np.float64))), (4, 6)),
                               rtol=1e-6)
    base = rand(rng, 4, 6)
    out = dev(base)
    ops.matmul(dev(rand(rng, 4, 0)), dev(rand(rng, 0, 6)), out=out, accumulate=True, precision=precision)
    np.testing.assert_array_equal(host(out), base)


# --- the emulated device, and errors -----------------------------------------------------------


@pytest.mark.cuda_emulated
@pytest.mark.parametrize("precision", PRECISIONS)
def test_each_kernel_under_other_thread_orders(precision, rng):
    # Each barrier phase runs the block's threads in an order the seed picks: a missing barrier
    # or cp.async wait shows under some of them.
    a, b = rand(rng, 131, 70), rand(rng, 70, 129)
    for seed in (1, 2, 3):
        with fusegrad.cuda.emulate(seed=seed):
            for tile in ("large", "small"):
                gemm_ops._CUDA_TILES = tile
                try:
                    got = ops.matmul(a, b, precision=precision)
                finally:
                    gemm_ops._CUDA_TILES = "auto"
                assert_gemm_close(got, a, b, precision)


@pytest.mark.cuda_emulated
def test_numpy_arrays_run_the_cuda_kernel_while_emulating(rng):
    a, b = rand(rng, 9, 10), rand(rng, 10, 11)
    with fusegrad.cuda.emulate() as emu:
        got = ops.matmul(a, b, precision="tf32")
    assert type(got) is np.ndarray
    assert emu.kernels()[-1].startswith(KERNEL["tf32"])
    assert_gemm_close(got, a, b, "tf32")


def test_precision_is_checked(cuda_device, rng):
    a, b = cuda_device.array(rand(rng, 3, 4)), cuda_device.array(rand(rng, 4, 5))
    with pytest.raises(ValueError, match="precision must be one of 'fp32', 'tf32', 'bf16'"):
        ops.matmul(a, b, precision="fp16")


def test_cpu_refuses_tf32(rng):
    # bf16 has CPU kernels (tests/gemm/test_bf16_matmul.py); tf32 has none and is refused.
    a, b = rand(rng, 3, 4), rand(rng, 4, 5)
    with pytest.raises(ValueError, match="runs on CUDA tensor cores only"):
        ops.matmul(a, b, precision="tf32")


def test_host_and_device_arrays_do_not_mix(cuda_device, rng):
    if cuda_device.kind == "emulated":
        pytest.skip("while emulating, NumPy arrays are on the emulated device too")
    with pytest.raises(ValueError, match="same device"):
        ops.matmul(cuda_device.array(rand(rng, 3, 4)), rand(rng, 4, 5))
