"""The host SIMT emulator (fusegrad._cuda_emulated), through the self-test kernels of
cuda/common/emulator/selftest.cu and selftest_tensor_cores.cu: every emulated feature against a
plain reference, every class of kernel bug the emulator must report (with the message it must
give), and the real kernels of _cuda running on it.

FUSEGRAD_SELFTEST_MODULE names another module exposing the same selftest_* functions (the
self-tests built with nvcc, see gpu_check.sh): then the tests that need the emulator itself skip
and the rest check the GPU against the same references.
"""
import ctypes
import importlib
import math
import os
import re
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ptx_reference as ref

MODULE = os.environ.get("FUSEGRAD_SELFTEST_MODULE", "fusegrad._cuda_emulated")
emu = importlib.import_module(MODULE)
EMULATED = getattr(emu, "emulated", False)

pytestmark = pytest.mark.cuda_emulated
emulator_only = pytest.mark.skipif(not EMULATED, reason=f"{MODULE} is not the emulator")
EmulatorError = getattr(emu, "EmulatorError", RuntimeError)
POISON32 = 0xFFFFFFFF
FULL = 0xFFFFFFFF


@pytest.fixture
def rng():
    """As tests/conftest.py's; repeated so that gpu_check.sh can run this folder without it."""
    return np.random.default_rng(int(os.environ.get("FUSEGRAD_TEST_SEED", "0")))


@pytest.fixture(autouse=True)
def fixed_schedule():
    """Every test starts from schedule seed 0, so a failure replays."""
    if EMULATED:
        emu.set_schedule_seed(0)
    yield


# --- block barriers and shared memory ---------------------------------------------------------------


@pytest.mark.parametrize("threads", [32, 64, 256, 1024])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shared_memory_reduction_is_right_with_its_barrier(threads, seed, rng):
    if EMULATED:
        emu.set_schedule_seed(seed)
    x = rng.standard_normal(5 * threads + 3).astype(np.float32)
    sums = np.array(emu.selftest_block_sum(x.tolist(), threads, True))
    padded = np.concatenate([x, np.zeros(-len(x) % threads, np.float32)]).astype(np.float64)
    np.testing.assert_allclose(sums, padded.reshape(-1, threads).sum(axis=1), rtol=1e-5, atol=1e-4)


@emulator_only
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_missing_syncthreads_changes_the_result(seed, rng):
    # Without the barrier between the store and the tree, some phase order lets a thread read a
    # slot its owner has not written yet (0xFF bytes: NaN), whatever the seed.
    emu.set_schedule_seed(seed)
    x = rng.standard_normal(6 * 256).astype(np.float32)
    sums = np.array(emu.selftest_block_sum(x.tolist(), 256, False))
    expected = x.astype(np.float64).reshape(-1, 256).sum(axis=1)
    assert not np.allclose(sums, expected, rtol=1e-5, atol=1e-4, equal_nan=False)


@emulator_only
def test_thread_order_changes_from_phase_to_phase_and_replays_by_seed():
    def orders(seed):
        emu.set_schedule_seed(seed)
        return np.array(emu.selftest_schedule_order(9, 64)).reshape(9, 64)

    first = orders(0)
    for block in first:
        assert sorted(block) == list(range(64))
    kinds = {tuple(b) for b in first}
    assert tuple(range(64)) in kinds and tuple(range(63, -1, -1)) in kinds and len(kinds) >= 3
    np.testing.assert_array_equal(orders(0), first)
    assert not np.array_equal(orders(12345), first)


def test_transpose_through_a_padded_2d_shared_tile(rng):
    n = 70
    x = rng.standard_normal((n, n)).astype(np.float32)
    out = np.array(emu.selftest_transpose(x.ravel().tolist(), n), dtype=np.float32).reshape(n, n)
    np.testing.assert_array_equal(out, x.T)


def test_syncthreads_count_and_or(rng):
    for predicate in (rng.integers(0, 2, 96), np.ones(96, int), np.zeros(96, int)):
        out = np.array(emu.selftest_barrier_reduce(predicate.tolist())).reshape(96, 3)
        count = int(predicate.astype(bool).sum())
        np.testing.assert_array_equal(out[:, 0], count)
        np.testing.assert_array_equal(out[:, 1], int(count == 96))
        np.testing.assert_array_equal(out[:, 2], int(count > 0))


@pytest.mark.parametrize("grid,block", [((3, 2, 2), (4, 3, 2)), ((1, 1, 1), (1, 1, 1)), ((5, 1, 1), (33, 1, 1))])
def test_builtin_coordinates(grid, block):
    out = np.array(emu.selftest_coordinates(list(grid), list(block))).reshape(-1, 12)
    rows = []
    for bz in range(grid[2]):
        for by in range(grid[1]):
            for bx in range(grid[0]):
                for tz in range(block[2]):
                    for ty in range(block[1]):
                        for tx in range(block[0]):
                            rows.append([tx, ty, tz, bx, by, bz, *block, *grid])
    np.testing.assert_array_equal(out, np.array(rows))


# --- warp intrinsics ---------------------------------------------------------------------------------

SHUFFLE_ARGS = {
    "idx": [0, 1, 5, 17, 31],
    "up": [0, 1, 2, 3, 8, 16, 31],
    "down": [0, 1, 2, 3, 8, 16, 31],
    "xor": [1, 2, 4, 8, 16, 3, 31],
}


@pytest.mark.parametrize("mode", ["idx", "up", "down", "xor"])
@pytest.mark.parametrize("width", [32, 16, 8, 4, 2, 1])
@pytest.mark.parametrize("wide", [False, True])
def test_shuffles_match_the_programming_guide(mode, width, wide, rng):
    values = rng.integers(0, 2**63 if wide else 2**32, 64, dtype=np.uint64)
    for arg in SHUFFLE_ARGS[mode]:
        if mode == "xor" and arg >= width:
            continue
        out = np.array(emu.selftest_shuffle(mode, values.tolist(), [arg] * 64, width, FULL, wide), dtype=np.uint64)
        expected = [values[t - t % 32 + ref.shuffle_guide(mode, t % 32, arg, width)] for t in range(64)]
        np.testing.assert_array_equal(out, expected, err_msg=f"{mode} arg={arg} width={width}")


@pytest.mark.parametrize("mode", ["idx", "up", "down", "xor"])
@pytest.mark.parametrize("width", [32, 8, 2])
def test_shuffles_with_per_lane_arguments_follow_ptx(mode, width, rng):
    values = rng.integers(0, 2**32, 64, dtype=np.uint64)
    args = rng.integers(-40, 40, 64)  # negative, >= width and >= 32 included
    out = np.array(emu.selftest_shuffle(mode, values.tolist(), args.tolist(), width, FULL, False), dtype=np.uint64)
    expected = [values[t - t % 32 + ref.shuffle_ptx(mode, t % 32, int(args[t]), width)] for t in range(64)]
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("mode", ["idx", "down", "xor"])
def test_shuffles_with_a_partial_mask(mode, rng):
    mask = 0x0F0FF0F0
    values = rng.integers(0, 2**32, 32, dtype=np.uint64)
    args = rng.integers(0, 32, 32)
    out = np.array(emu.selftest_shuffle(mode, values.tolist(), args.tolist(), 32, mask, False), dtype=np.uint64)
    for lane in range(32):
        if not mask >> lane & 1:
            assert out[lane] == values[lane]  # lanes outside the mask do not take part
            continue
        src = ref.shuffle_ptx(mode, lane, int(args[lane]), 32)
        if mask >> src & 1:
            assert out[lane] == values[src]
        elif EMULATED:
            assert out[lane] == POISON32  # undefined on a GPU; made visible here


@pytest.mark.parametrize("mask", [FULL, 0x0000FFFF, 0xAAAAAAAA, 0x00000001])
def test_votes(mask, rng):
    predicate = rng.integers(0, 2, 32)
    out = np.array(emu.selftest_vote(predicate.tolist(), mask), dtype=np.uint64).reshape(32, 4)
    ballot = sum(1 << l for l in range(32) if mask >> l & 1 and predicate[l])
    for lane in range(32):
        if mask >> lane & 1:
            assert out[lane, 0] == ballot
            assert out[lane, 1] == int(ballot != 0)
            assert out[lane, 2] == int(ballot == mask)
            assert int(out[lane, 3]) & mask == mask  # __activemask() includes the lanes of the mask
        else:
            assert list(out[lane]) == [0, 0, 0, 0]


def test_warp_reduce_and_match(rng):
    values = rng.integers(0, 2**32, 64, dtype=np.uint64)
    out = np.array(emu.selftest_warp_reduce(values.tolist()), dtype=np.uint64).reshape(64, 8)
    for w in range(2):
        v = [int(x) for x in values[32 * w: 32 * w + 32]]
        red = [sum(v) % 2**32, min(v), max(v), np.bitwise_and.reduce(v), np.bitwise_or.reduce(v),
               np.bitwise_xor.reduce(v)]
        for lane in range(32):
            row = out[32 * w + lane]
            assert [int(x) for x in row[:6]] == [int(r) for r in red]
            same = sum(1 << k for k in range(32) if v[k] % 4 == v[lane] % 4)
            assert row[6] == same
            assert row[7] == (FULL if len({x % 4 for x in v}) == 1 else 0)


# --- atomics -----------------------------------------------------------------------------------------


def test_atomics_under_contention_across_blocks():
    blocks, threads = 64, 256
    n = blocks * threads
    r = emu.selftest_atomics(blocks, threads)
    assert (r["i32"], r["u32"], r["u64"]) == (n, 2 * n, 3 * n)
    assert r["f32"] == float(n) and r["f64"] == 0.5 * n
    assert (r["imax"], r["imin"], r["umax"], r["umin"]) == (n - 1, -(n - 1), n - 1, 5)
    assert (r["cas"], r["cas64"], r["inc"]) == (n, 2 * n, n)
    # atomicExch hands each value on exactly once: the old values and the final one are a permutation.
    assert sorted(r["exchanged"] + [r["exchange"]]) == [-1] + list(range(n))
    assert r["histogram"] == [n // 16] * 16


# --- tensor cores, ldmatrix, cp.async ----------------------------------------------------------------


def _lowp(kind, shape, rng):
    """Random values exactly representable in `kind`, with their bits (or fp32 for tf32)."""
    x = (rng.standard_normal(shape) * 2).astype(np.float32)
    if kind == "bf16":
        bits = ref.bf16_bits(x)
        return ref.bf16_value(bits), bits
    if kind == "f16":
        bits = ref.f16_bits(x)
        return bits.view(np.float16).astype(np.float32), bits
    return x, None


def _check_mma(d, a, b, c):
    expected = a.astype(np.float64) @ b.astype(np.float64) + c
    scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64) + np.abs(c)
    assert np.all(np.abs(d - expected) <= 2.0**-20 * scale + 1e-30), np.max(np.abs(d - expected))


@pytest.mark.parametrize("kind", ["bf16", "f16"])
def test_mma_m16n8k16_against_float64(kind, rng):
    for _ in range(3):
        a, a_bits = _lowp(kind, (16, 16), rng)
        b, b_bits = _lowp(kind, (16, 8), rng)
        c = rng.standard_normal((16, 8)).astype(np.float32)
        a_regs = ref.pack16(a_bits, ref.a_16816, 8)
        b_regs = ref.pack16(b_bits, ref.b_16816, 4)
        c_regs = ref.pack32(c, ref.c_16x8, 4)
        d_regs = np.array(emu.selftest_mma(kind, a_regs.ravel().tolist(), b_regs.ravel().tolist(),
                                           c_regs.ravel().tolist()), dtype=np.float32).reshape(32, 4)
        _check_mma(ref.unpack_c(d_regs), a, b, c)


def test_mma_m16n8k8_tf32_rounds_its_inputs(rng):
    for _ in range(3):
        a = rng.standard_normal((16, 8)).astype(np.float32)
        b = rng.standard_normal((8, 8)).astype(np.float32)
        c = rng.standard_normal((16, 8)).astype(np.float32)
        a_regs = ref.pack32(a, ref.a_1688_tf32, 4).view(np.uint32)
        b_regs = ref.pack32(b, ref.b_1688_tf32, 2).view(np.uint32)
        c_regs = ref.pack32(c, ref.c_16x8, 4)
        d_regs = np.array(emu.selftest_mma("tf32", ref.tf32_round(a_regs.view(np.float32)).view(np.uint32).ravel().tolist(),
                                           ref.tf32_round(b_regs.view(np.float32)).view(np.uint32).ravel().tolist(),
                                           c_regs.ravel().tolist()), dtype=np.float32).reshape(32, 4)
        _check_mma(ref.unpack_c(d_regs), ref.tf32_round(a), ref.tf32_round(b), c)


@emulator_only
def test_mma_tf32_rounds_unrounded_fp32_registers(rng):
    a = rng.standard_normal((16, 8)).astype(np.float32)
    b = rng.standard_normal((8, 8)).astype(np.float32)
    c = np.zeros((16, 8), np.float32)
    d = np.array(emu.selftest_mma("tf32", ref.pack32(a, ref.a_1688_tf32, 4).view(np.uint32).ravel().tolist(),
                                  ref.pack32(b, ref.b_1688_tf32, 2).view(np.uint32).ravel().tolist(),
                                  c.ravel().tolist()), dtype=np.float32).reshape(32, 4)
    _check_mma(ref.unpack_c(d), ref.tf32_round(a), ref.tf32_round(b), c)


@pytest.mark.parametrize("count", [1, 2, 4])
@pytest.mark.parametrize("trans", [False, True])
@pytest.mark.parametrize("row_stride", [8, 24])
def test_ldmatrix_against_the_layout_table(count, trans, row_stride, rng):
    matrices = rng.integers(0, 2**16, (count, 8, 8), dtype=np.uint64)
    out = np.array(emu.selftest_ldmatrix(count, trans, matrices.ravel().tolist(), row_stride), dtype=np.uint32)
    np.testing.assert_array_equal(out.reshape(32, 4), ref.ldmatrix_expected(matrices, count, trans))


@pytest.mark.parametrize("kind", ["bf16", "f16"])
def test_ldmatrix_feeds_mma_as_a_gemm_does(kind, rng):
    a, a_bits = _lowp(kind, (16, 16), rng)
    b, b_bits = _lowp(kind, (16, 8), rng)
    d = np.array(emu.selftest_ldmatrix_mma(kind, a_bits.ravel().tolist(), b_bits.ravel().tolist()),
                 dtype=np.float32).reshape(16, 8)
    _check_mma(d, a, b, np.zeros((16, 8)))


def test_ldmatrix_feeds_the_int8_mma_as_the_int8_gemm_does(rng):
    """mma.sync m16n8k32 u8 × s8 -> s32 from ldmatrix'd 16-byte rows: exact, the extremes included."""
    for _ in range(3):
        a = rng.integers(0, 256, (16, 32), dtype=np.uint8)
        b = rng.integers(-128, 128, (32, 8), dtype=np.int8)
        a[0], b[:, 0] = 255, -128
        d = np.array(emu.selftest_ldmatrix_mma_int8(a.ravel().tolist(), np.ascontiguousarray(b.T).view(np.uint8).ravel()
                                                    .tolist()), dtype=np.int64).reshape(16, 8)
        np.testing.assert_array_equal(d, a.astype(np.int64) @ b.astype(np.int64))


# (leading, stride) byte offsets of the core matrices: k groups adjacent then row groups (the
# tightest), row groups 1 KiB apart (the GEMM's stages), and row groups adjacent with k groups far.
WGMMA_LAYOUTS = [(128, 256), (128, 1024), (4096, 128)]


@pytest.mark.parametrize("n", [128, 256])
@pytest.mark.parametrize("lbo, sbo", WGMMA_LAYOUTS, ids=[f"lbo{lb}_sbo{sb}" for lb, sb in WGMMA_LAYOUTS])
def test_wgmma_against_float64(n, lbo, sbo, rng):
    """wgmma m64nNk16 bf16 of operands laid out by descriptors: on a GPU, this holds the descriptor
    fields and the accumulator layout the emulator reads to the hardware."""
    a, a_bits = _lowp("bf16", (64, 16), rng)
    b, b_bits = _lowp("bf16", (n, 16), rng)  # B as N×K
    b_offset = -(-(7 * sbo + lbo + 128) // 128) * 128  # past A's last core matrix
    try:
        d = emu.selftest_wgmma(n, a_bits.ravel().tolist(), b_bits.ravel().tolist(), lbo, sbo, b_offset)
    except RuntimeError as e:
        if "sm_90a" in str(e):
            pytest.skip(str(e))
        raise
    _check_mma(np.array(d, dtype=np.float32).reshape(64, n), a, b.T, np.zeros((64, n)))


@pytest.mark.parametrize("stages", [2, 3, 4])
@pytest.mark.parametrize("n", [0, 1, 5, 127, 512, 1000, 4099])
def test_cp_async_pipeline(stages, n, rng):
    src = rng.standard_normal(n).astype(np.float32)
    out = np.array(emu.selftest_cp_async_pipeline(src.tolist(), stages, 64), dtype=np.float32)
    np.testing.assert_array_equal(out, 2 * src)


@pytest.mark.parametrize("nbytes", [4, 8, 16])
@pytest.mark.parametrize("n", [0, 3, 37, 64])
def test_cp_async_sizes_zero_fill_past_the_source(nbytes, n, rng):
    threads = 32
    src = rng.standard_normal(n).astype(np.float32)
    out = np.array(emu.selftest_cp_async_size(src.tolist(), nbytes, threads), dtype=np.float32)
    tile = threads * nbytes // 4
    expected = np.zeros(tile, np.float32)
    expected[: min(n, tile)] = src[:tile]
    np.testing.assert_array_equal(out, expected)


# --- low precision --------------------------------------------------------------------------------------


def test_bf16_fp16_tf32_conversions_round_as_the_gpu(rng):
    special = np.array([0.0, -0.0, 1.0, 1 + 2.0**-8, 1 + 3 * 2.0**-8, 1 + 2.0**-11, 1 + 3 * 2.0**-11, 65504.0, 65519.0,
                        65520.0, 1e-8, 2.0**-24, 2.0**-25, 3 * 2.0**-26, 2.0**-14 - 2.0**-25, 1e30, -1e30, np.inf,
                        -np.inf, np.nan, 3.4e38, 1.0 + 2.0**-14, 1.0 + 3 * 2.0**-14], dtype=np.float32)
    x = np.concatenate([special, rng.standard_normal(500).astype(np.float32) * 1000,
                        rng.integers(0, 2**32, 500, dtype=np.uint64).astype(np.uint32).view(np.float32)])
    r = emu.selftest_convert(x.tolist())
    finite = ~np.isnan(x)
    np.testing.assert_array_equal(np.array(r["bf16_bits"], np.uint16), ref.bf16_bits(x))
    np.testing.assert_array_equal(np.array(r["f16_bits"], np.uint16)[finite], ref.f16_bits(x)[finite])
    assert np.all(np.isnan(np.array(r["f16"])[~finite]))
    np.testing.assert_array_equal(np.array(r["bf16"], np.float32)[finite], ref.bf16_value(ref.bf16_bits(x))[finite])
    np.testing.assert_array_equal(np.array(r["f16"], np.float32)[finite], ref.f16_bits(x[finite]).view(np.float16).astype(np.float32))
    tf = np.array(r["tf32"], np.float32)
    np.testing.assert_array_equal(tf[finite], ref.tf32_round(x)[finite])


# --- device memory ---------------------------------------------------------------------------------------


def to_device(array, placement="end"):
    address = emu.alloc(array.nbytes, placement)
    ctypes.memmove(address, array.ctypes.data, array.nbytes)
    return address


def from_device(address, count, dtype=np.float32):
    nbytes = count * np.dtype(dtype).itemsize
    return np.frombuffer((ctypes.c_char * nbytes).from_address(address), dtype=dtype).copy()


@emulator_only
@pytest.mark.parametrize("placement,alignment", [("start", 4096), ("end_aligned", 256)])
def test_alloc_placement_alignment(placement, alignment):
    address = emu.alloc(1000, placement)
    assert address % alignment == 0
    info = emu.allocation_of(address + 10)
    assert info["address"] == address and info["nbytes"] == 1000 and info["offset"] == 10
    assert info["placement"] == placement and info["live"]
    assert np.all(from_device(address, 1000, np.uint8) == 0xFF)  # device memory starts as garbage (NaN)
    emu.free(address)
    assert not emu.allocation_of(address)["live"]
    with pytest.raises(ValueError, match="not the start of a live emulator allocation"):
        emu.free(address)
    with pytest.raises(ValueError, match="placement"):
        emu.alloc(16, "middle")


@emulator_only
def test_alloc_end_touches_the_guard_page():
    address = emu.alloc(37 * 4, "end")
    assert (address + 37 * 4) % 4096 == 0
    assert emu.allocation_of(address + 37 * 4)["offset"] == 37 * 4
    assert emu.allocation_of(1) is None


@emulator_only
@pytest.mark.parametrize("n", [1, 37, 1024, 5000])
def test_copy_kernel_in_bounds(n, rng):
    x = rng.standard_normal(n).astype(np.float32)
    src, dst = to_device(x), emu.alloc(4 * n)
    emu.selftest_copy(src, dst, n, 0)
    np.testing.assert_array_equal(from_device(dst, n), x)


@emulator_only
def test_reading_one_float_past_an_array_names_kernel_block_thread_and_allocation(rng):
    n = 37
    src, dst = to_device(rng.standard_normal(n).astype(np.float32), "end"), emu.alloc(4 * n)
    with pytest.raises(EmulatorError) as e:
        emu.selftest_copy(src, dst, n, 1)
    msg = str(e.value)
    assert "kernel copy_kernel (grid (1,1,1), block (128,1,1)" in msg
    assert "block (0,0,0) thread (36,0,0)" in msg
    assert f"read of address {hex(src + 4 * n)}" in msg
    assert f"byte offset {4 * n}, past the end of allocation" in msg and f"({4 * n} bytes at {hex(src)}" in msg
    assert isinstance(e.value, RuntimeError)


@emulator_only
def test_reading_one_float_before_an_array_is_caught():
    n = 64
    src, dst = to_device(np.ones(n, np.float32), "start"), emu.alloc(4 * n)
    with pytest.raises(EmulatorError, match=r"thread \(0,0,0\): read of address .*: 4 bytes before the start of allocation"):
        emu.selftest_copy(src, dst, n, -1)


@emulator_only
def test_writing_past_an_array_is_caught():
    n = 100
    end = emu.alloc(4 * n, "end")
    with pytest.raises(EmulatorError, match=r"fill_kernel .*thread \(100,0,0\): write to address .*past the end of allocation"):
        emu.selftest_fill(end, n + 1)
    # With the array at the start of its pages the overrun lands in slack bytes: their canary is
    # checked after the launch.
    start = emu.alloc(4 * n, "start")
    with pytest.raises(EmulatorError, match=r"fill_kernel .*a write landed up to 4 bytes past the end of allocation"):
        emu.selftest_fill(start, n + 1)
    emu.selftest_fill(start, n)  # the canary was restored: a correct launch passes


@emulator_only
def test_use_after_free_and_null_pointers_are_caught():
    n = 32
    src, dst = to_device(np.ones(n, np.float32)), emu.alloc(4 * n)
    emu.free(src)
    with pytest.raises(EmulatorError, match="already freed"):
        emu.selftest_copy(src, dst, n, 0)
    with pytest.raises(EmulatorError, match=r"read of address 0x0, which is not inside any emulator allocation"):
        emu.selftest_broken("null_read")


# --- broken kernels: each must be reported, naming where ---------------------------------------------


BROKEN = [
    ("static_shared_off_by_one", 0,
     r"static_shared_off_by_one_kernel .*thread \(31,0,0\): static shared array 'tile' \[32\]: index 32 is out of range \[0, 32\)"),
    ("dynamic_shared_out_of_range", 1,
     r"dynamic_shared_kernel .*512 bytes of dynamic shared memory\): block \(0,0,0\) thread \(127,0,0\): 'smem' \(512 bytes "
     r"of dynamic shared memory\): access of 4 bytes at byte offset 512 \(element 128 of 128\) is out of range"),
    ("dynamic_shared_out_of_range", -1, r"thread \(0,0,0\): 'smem' .*byte offset -4 .*is out of range"),
    ("dynamic_shared_raw_overrun", 1,
     r"thread \(127,0,0\): write to address .*: byte offset 512 of the dynamic shared memory \(512 bytes\), past its end"),
    ("divergent_barrier", 0,
     r"barrier mismatch .*threads 0-15 wait at __syncthreads\(\) at cuda/common/emulator/selftest.cu:\d+; "
     r"threads 16-63 exited without reaching"),
    ("divergent_barrier", 1,
     r"threads 0-31 wait at __syncthreads\(\) at cuda/common/emulator/selftest.cu:(\d+); "
     r"threads 32-63 wait at __syncthreads\(\) at cuda/common/emulator/selftest.cu:(?!\1)\d+"),
    ("divergent_barrier", 2, r"threads 0-47 wait at __syncthreads\(\) at .*; threads 48-63 exited"),
    ("divergent_barrier", 3, r"threads 0, 2, 4, .* exited without reaching .*; threads 1, 3, 5, .* wait at __syncthreads"),
    ("divergent_shuffle", 0,
     r"__shfl_sync at cuda/common/emulator/selftest.cu:\d+ \(mask 0xffffffff\) in warp 0 never completed: "
     r"lanes 0-15 reached it; lanes 16-31 exited without reaching it"),
    ("divergent_shuffle", 1,
     r"thread \(16,0,0\): warp divergence at a collective: lane 16 reached __shfl_sync at .*selftest.cu:\d+ with mask "
     r"0xffffffff while lanes 0-15 of its warp wait at __shfl_sync at .*selftest.cu:\d+"),
    ("divergent_shuffle", 2, r"lane 16 calls it with mask 0x0000ffff, which does not include the lane itself"),
    ("cp_async_read_before_wait", 0,
     r"cp_async_read_before_wait_kernel .*thread \(\d+,0,0\): reads or writes 'tile' at byte offset \d+ while a cp.async "
     r"into it, issued by thread \(\d+,0,0\) at cuda/common/emulator/selftest.cu:\d+, is still pending"),
    ("wgmma_misuse", 0,
     r"wgmma_misuse_kernel .*reads or writes 'smem' at byte offset \d+ while a cp.async into it, issued by thread "
     r"\(\d+,0,0\) at cuda/common/emulator/selftest.cu:\d+, is still pending"),
    ("wgmma_misuse", 1,
     r"warp 0 of block 0 ended with the wgmma at cuda/common/emulator/selftest.cu:\d+ never completed by a "
     r"wgmma.wait_group"),
    ("stack_overflow", 120, r"thread \(0,0,0\): stack overflow of thread 0 \(fiber stacks are \d+ KiB"),
    ("divide_by_zero", 0, r"divide_kernel .*arithmetic fault \(integer division by zero"),
]


@emulator_only
@pytest.mark.parametrize("name,variant,message", BROKEN, ids=[f"{b[0]}-{b[1]}" for b in BROKEN])
def test_broken_kernel_is_reported(name, variant, message):
    with pytest.raises(EmulatorError, match=message):
        emu.selftest_broken(name, variant)
    # The process and the emulator carry on.
    assert emu.selftest_block_sum([1.0] * 64, 64, True) == [64.0]


@emulator_only
def test_a_stack_overflow_is_caught_with_the_stack_pointer_in_another_threads_stacks():
    # A frame larger than the stack moves a fiber's stack pointer below its thread's fiber stacks,
    # possibly into another OS thread's, mapped just below them (test_broken_kernel_is_reported
    # [stack_overflow-120] crashed the full test run now and then: its 480 KiB frame reached an
    # OpenMP worker's stacks). The fault still belongs to the thread that overflowed. Here the
    # frame is sized to land in the other thread's stacks whatever the memory layout.
    script = textwrap.dedent(f"""
        import importlib, queue, threading
        emu = importlib.import_module({MODULE!r})
        jobs, results = queue.Queue(), queue.Queue()

        def other():
            results.put(emu.selftest_stack_address())  # this thread's fiber stacks, created
            results.put(jobs.get()())  # and alive until the job is done

        def overflow_to(target):
            try:
                emu.selftest_stack_overflow_to(target)
            except emu.EmulatorError as e:
                return "caught: " + str(e)
            return "not caught"

        thread = threading.Thread(target=other)
        thread.start()
        theirs = results.get()
        mine = emu.selftest_stack_address()
        if mine > theirs:  # the frame grows down: the thread whose stacks lie higher overflows
            outcome = overflow_to(theirs)
            jobs.put(lambda: None)
            results.get()
        else:
            jobs.put(lambda: overflow_to(mine))
            outcome = results.get()
        thread.join()
        print(outcome)
        print(emu.selftest_block_sum([1.0] * 64, 64, True))
    """)
    proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"caught: kernel stack_overflow_to_kernel .*thread \(0,0,0\): stack overflow of thread 0",
                     proc.stdout), proc.stdout
    assert proc.stdout.splitlines()[-1] == "[64.0]"


@pytest.mark.parametrize("grid,block,smem,limit,error", [
    # (CUDA 13 on an H200 says "invalid argument" for bad shapes too; the emulator follows it.)
    ((1, 1, 1), (1025, 1, 1), 0, -1, "invalid argument"),
    ((1, 1, 1), (32, 1, 65), 0, -1, "invalid argument"),
    ((0, 1, 1), (32, 1, 1), 0, -1, "invalid argument"),
    ((1, 65536, 1), (32, 1, 1), 0, -1, "invalid argument"),
    ((1, 1, 1), (32, 1, 1), 48 * 1024 + 1, -1, "invalid argument"),
    ((1, 1, 1), (32, 1, 1), 100 * 1024, 64 * 1024, "invalid argument"),
])
def test_invalid_launch_configuration_fails_like_a_gpu(grid, block, smem, limit, error):
    with pytest.raises(RuntimeError, match=f"CUDA error: {error} .* in launch of trivial_kernel"):
        emu.selftest_launch(list(grid), list(block), smem, limit)
    emu.selftest_launch([1, 1, 1], [32, 1, 1], 0, -1)  # the error was cleared


def test_large_dynamic_shared_memory_needs_the_attribute():
    emu.selftest_launch([2, 1, 1], [64, 1, 1], 200 * 1024, 227 * 1024)
    with pytest.raises(RuntimeError, match="invalid argument"):
        emu.selftest_launch([1, 1, 1], [32, 1, 1], 0, 228 * 1024)


@emulator_only
def test_launch_log_records_name_grid_block_smem():
    emu.clear_launches()
    emu.selftest_cp_async_pipeline([1.0] * 10, 3, 64)
    emu.selftest_transpose([0.0] * 40 * 40, 40)
    log = emu.launches()
    assert [r["kernel"] for r in log] == ["cp_async_pipeline_kernel<3>", "transpose_kernel"]
    assert log[0]["grid"] == (1, 1, 1) and log[0]["block"] == (64, 1, 1) and log[0]["smem"] == 3 * 64 * 16
    assert log[1]["grid"] == (2, 2, 1) and log[1]["block"] == (32, 8, 1) and log[1]["smem"] == 0
    assert log[1]["location"].startswith("cuda/common/emulator/selftest.cu:")
    emu.clear_launches()
    assert emu.launches() == []


@emulator_only
def test_a_fault_outside_kernels_still_crashes_the_process():
    # After a launch has installed the emulator's handler, a segfault in ordinary code must still
    # end the process with SIGSEGV (and Python's faulthandler, when enabled, must still report it).
    script = textwrap.dedent(f"""
        import ctypes, importlib
        emu = importlib.import_module({MODULE!r})
        emu.selftest_block_sum([1.0] * 64, 64, True)
        ctypes.string_at(0)
    """)
    for flags in ([], ["-X", "faulthandler"]):
        proc = subprocess.run([sys.executable, *flags, "-c", script], capture_output=True, text=True, timeout=120)
        assert proc.returncode == -signal.SIGSEGV, proc.stderr
        if flags:
            assert "Segmentation fault" in proc.stderr


# --- the real kernels of _cuda, on the emulator ---------------------------------------------------------


@emulator_only
@pytest.mark.parametrize("n", [1, 1000, 1003, 100_003])
def test_activation_kernels_run_on_the_emulator(n, rng):
    x = rng.standard_normal(n).astype(np.float32)
    xd, yd = to_device(x, "end"), emu.alloc(4 * n, "end_aligned")
    emu.clear_launches()
    emu.activation_forward(1, xd, yd, n, 0.0, 0, 0)  # relu
    np.testing.assert_array_equal(from_device(yd, n), np.maximum(x, 0))
    emu.activation_forward(6, xd, yd, n, 0.0, 0, 0)  # gelu: x * Phi(x)
    phi = 0.5 * np.array([math.erfc(-v / math.sqrt(2)) for v in x.astype(np.float64)])
    np.testing.assert_allclose(from_device(yd, n), x * phi, rtol=1e-5, atol=1e-6)
    log = emu.launches()
    assert [r["kernel"] for r in log] == ["forward_kernel<decltype(k)::value>"] * 2
    assert all(r["block"] == (256, 1, 1) for r in log)


@emulator_only
@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.0])
def test_grad_norm_kernels_run_on_the_emulator(norm_type, rng):
    sizes = [1, 37, 16384 + 5, 1000]
    grads = [rng.standard_normal(s).astype(np.float32) for s in sizes]
    addresses = [to_device(g) for g in grads]
    workspace = emu.alloc(8 * emu.norm_workspace_size(len(sizes)), "end_aligned")
    out = emu.alloc(8, "end_aligned")
    emu.grad_norm_clip(addresses, sizes, norm_type, 1.0, workspace, out, 0, 0)
    everything = np.concatenate(grads).astype(np.float64)
    expected = np.max(np.abs(everything)) if norm_type == math.inf else np.sum(np.abs(everything) ** norm_type) ** (1 / norm_type)
    norm, coef = from_device(out, 2)
    np.testing.assert_allclose(norm, expected, rtol=1e-5)
    np.testing.assert_allclose(coef, min(1.0 / (expected + 1e-6), 1.0), rtol=1e-5)
    for g, a in zip(grads, addresses):
        np.testing.assert_allclose(from_device(a, len(g)), g * coef, rtol=1e-6)


# --- speed ------------------------------------------------------------------------------------------------


@emulator_only
def test_barrier_benchmark_is_right_and_reports_switches():
    blocks, threads, iterations = 8, 256, 200
    before = emu.stats()["fiber_switches"]
    out = np.array(emu.selftest_barrier_benchmark(blocks, threads, iterations), dtype=np.float32).reshape(blocks, threads)
    switches = emu.stats()["fiber_switches"] - before
    v = np.arange(threads, dtype=np.float32)
    for _ in range(iterations):
        v = v + np.float32(0.5) * np.roll(v, -1)
    np.testing.assert_allclose(out, np.broadcast_to(v, out.shape), rtol=1e-6)
    # Every thread yields at 2 barriers per iteration and once at its end; each yield is a switch.
    assert switches >= blocks * threads * (2 * iterations + 1)
