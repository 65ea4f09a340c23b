"""Property test: matmul on random shapes, layouts and epilogues against float64 (seeded, bounded)."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fusegrad import ops
from fusegrad.ops.activation import EPILOGUE

EPILOGUES = {
    None: lambda y: y, "relu": lambda y: np.maximum(y, 0), "sigmoid": lambda y: 1 / (1 + np.exp(-y)),
    "tanh": np.tanh, "silu": lambda y: y / (1 + np.exp(-y)),
}
assert set(EPILOGUES) - {None} <= EPILOGUE


@settings(max_examples=400)
@given(m=st.integers(0, 70), n=st.integers(0, 70), k=st.integers(0, 90), batch=st.sampled_from([None, 1, 3]),
       a_transposed=st.booleans(), b_transposed=st.booleans(), with_bias=st.booleans(),
       activation=st.sampled_from(sorted(EPILOGUES, key=str)), seed=st.integers(0, 2**32 - 1))
def test_matmul_matches_float64(m, n, k, batch, a_transposed, b_transposed, with_bias, activation, seed):
    rng = np.random.default_rng(seed)
    lead = () if batch is None else (batch,)
    a = rng.standard_normal(lead + ((k, m) if a_transposed else (m, k))).astype(np.float32)
    b = rng.standard_normal(lead + ((n, k) if b_transposed else (k, n))).astype(np.float32)
    a, b = (a.swapaxes(-1, -2) if a_transposed else a), (b.swapaxes(-1, -2) if b_transposed else b)
    bias = rng.standard_normal(n).astype(np.float32) if with_bias else None
    got = ops.matmul(a, b, bias=bias, activation=activation)
    ref = a.astype(np.float64) @ b.astype(np.float64) + (0 if bias is None else bias)
    np.testing.assert_allclose(got, EPILOGUES[activation](ref), rtol=1e-4, atol=1e-4 * np.sqrt(k + 1))
