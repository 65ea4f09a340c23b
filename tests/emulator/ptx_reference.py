"""Plain-Python references for the emulator tests: the PTX ISA's fragment tables written the way
the ISA states them, CUDA's shuffle semantics in the programming guide's words and in PTX's
formula, and the float -> bf16 / fp16 / tf32 roundings. Written independently of the emulator's
C++ (cuda/common/emulator/ptx.cpp, warp.cpp), so that a test compares two transcriptions."""
import numpy as np

# --- fragment tables: (lane, element) -> (row, column) ----------------------------------------------
# groupID = lane >> 2, threadID_in_group = lane % 4. "Element i" counts the 16-bit values of the
# registers from low to high: element i is in register i // 2, half i % 2 (low half first).


def _g_t(lane):
    return lane >> 2, lane % 4


def a_16816(lane, i):
    """m16n8k16 .f16/.bf16 A (16x16): row groupID for a0,a1,a4,a5, else groupID + 8; column
    threadID_in_group * 2 + (i & 1), plus 8 for i >= 4."""
    g, t = _g_t(lane)
    row = g if (0 <= i < 2 or 4 <= i < 6) else g + 8
    col = t * 2 + (i & 1) + (8 if i >= 4 else 0)
    return row, col


def b_16816(lane, i):
    """m16n8k16 .f16/.bf16 B (16x8): row (k) threadID_in_group * 2 + (i & 1), plus 8 for i >= 2;
    column groupID."""
    g, t = _g_t(lane)
    return t * 2 + (i & 1) + (8 if i >= 2 else 0), g


def a_1688_tf32(lane, i):
    """m16n8k8 .tf32 A (16x8), one element per register: row groupID for a0, a2, groupID + 8 for
    a1, a3; column threadID_in_group for a0, a1, + 4 for a2, a3."""
    g, t = _g_t(lane)
    return (g if i in (0, 2) else g + 8), (t if i in (0, 1) else t + 4)


def b_1688_tf32(lane, i):
    """m16n8k8 .tf32 B (8x8): row threadID_in_group for b0, + 4 for b1; column groupID."""
    g, t = _g_t(lane)
    return (t if i == 0 else t + 4), g


def c_16x8(lane, i):
    """C and D (16x8 fp32) of both shapes: row groupID for c0, c1, groupID + 8 for c2, c3; column
    threadID_in_group * 2 + (i & 1)."""
    g, t = _g_t(lane)
    return (g if i < 2 else g + 8), t * 2 + (i & 1)


def pack16(matrix_bits, table, elements):
    """Per-lane registers of 16-bit elements: (32, elements // 2) uint32."""
    regs = np.zeros((32, elements // 2), dtype=np.uint64)
    for lane in range(32):
        for i in range(elements):
            r, c = table(lane, i)
            regs[lane, i // 2] |= np.uint64(matrix_bits[r, c]) << np.uint64(16 * (i % 2))
    return regs.astype(np.uint32)


def pack32(matrix, table, elements):
    """Per-lane registers of 32-bit elements: (32, elements) as the matrix's dtype."""
    regs = np.zeros((32, elements), dtype=matrix.dtype)
    for lane in range(32):
        for i in range(elements):
            regs[lane, i] = matrix[table(lane, i)]
    return regs


def unpack_c(regs):
    """The 16x8 matrix of per-lane accumulator registers (32, 4)."""
    d = np.zeros((16, 8), dtype=regs.dtype)
    for lane in range(32):
        for i in range(4):
            d[c_16x8(lane, i)] = regs[lane, i]
    return d


def ldmatrix_expected(matrices, count, trans):
    """Per-lane registers (32, 4) of ldmatrix .x{count}: lane l holds, of each matrix, row l // 4,
    columns 2 (l % 4) and 2 (l % 4) + 1 (.trans: of the transposed matrix); unused registers 0."""
    out = np.zeros((32, 4), dtype=np.uint64)
    for m in range(count):
        mat = matrices[m].T if trans else matrices[m]
        for lane in range(32):
            row, col = lane // 4, 2 * (lane % 4)
            out[lane, m] = np.uint64(mat[row, col]) | (np.uint64(mat[row, col + 1]) << np.uint64(16))
    return out.astype(np.uint32)


# --- roundings ---------------------------------------------------------------------------------------


def bf16_bits(x):
    """float32 -> bf16 bits, round to nearest even; NaN -> 0x7FFF (CUDA's canonical NaN)."""
    x = np.asarray(x, dtype=np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    r[np.isnan(x)] = 0x7FFF
    return r


def bf16_value(bits):
    return (np.asarray(bits, dtype=np.uint32) << 16).view(np.float32)


def f16_bits(x):
    """float32 -> fp16 bits, round to nearest even (NumPy's conversion)."""
    with np.errstate(over="ignore"):
        return np.asarray(x, dtype=np.float32).astype(np.float16).view(np.uint16)


def tf32_round(x):
    """cvt.rna.tf32.f32: keep 10 mantissa bits, rounding to nearest, ties away from zero."""
    x = np.asarray(x, dtype=np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    r = ((u + 0x1000) & 0xFFFFE000).astype(np.uint32).view(np.float32)
    return np.where(np.isfinite(x), r, x)


# --- shuffles ----------------------------------------------------------------------------------------


def shuffle_guide(mode, lane, arg, width):
    """The source lane of __shfl*_sync(full mask) in the CUDA programming guide's terms, for
    0 <= arg < 32 (xor: arg < width)."""
    base = lane - lane % width
    if mode == "idx":
        return base + arg % width
    if mode == "up":
        return lane - arg if lane % width >= arg else lane
    if mode == "down":
        return lane + arg if lane % width + arg < width else lane
    return lane ^ arg


def shuffle_ptx(mode, lane, arg, width):
    """The source lane by the PTX ISA's shfl.sync pseudocode, with c = ((32 - width) << 8) | clamp."""
    segmask = (32 - width) & 0x1F
    clamp = 0 if mode == "up" else 0x1F
    max_lane = (lane & segmask) | (clamp & ~segmask & 0x1F)
    min_lane = lane & segmask
    b = arg & 0x1F
    if mode == "up":
        j, ok = lane - b, lane - b >= max_lane
    elif mode == "down":
        j, ok = lane + b, lane + b <= max_lane
    elif mode == "xor":
        j, ok = lane ^ b, (lane ^ b) <= max_lane
    else:
        j = min_lane | (b & ~segmask & 0x1F)
        ok = j <= max_lane
    return j if ok else lane
