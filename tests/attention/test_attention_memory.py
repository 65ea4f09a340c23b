"""The S×S score matrix is never materialised: a causal forward + backward at S = 8192, D = 64 (one
S×S float32 matrix: 256 MiB) grows the process's peak RSS by O(S·D), measured in a fresh
interpreter."""
import subprocess
import sys

SCRIPT = """
import resource
import numpy as np
from fusegrad import ops
s, d = 8192, 64
rng = np.random.default_rng(0)
q, k, v, g = (rng.standard_normal((1, 1, s, d), dtype=np.float32) for _ in range(4))
ops.attention(q[:, :, :64], k[:, :, :64], v[:, :, :64])  # load everything first
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out, lse = ops.attention(q, k, v, causal=True, return_lse=True)
dq, dk, dv = ops.attention_backward(g, q, k, v, out, lse, causal=True)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
"""


def test_peak_memory_is_linear_in_sequence_length():
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    growth_mib = float(r.stdout.split()[-1])
    # out, dq, dk, dv (2 MiB each), lse, and per-thread packed K^T/V^T panels (2 MiB each): tens of
    # MiB at most, against 256 MiB for a single S×S matrix.
    assert growth_mib < 48, growth_mib
