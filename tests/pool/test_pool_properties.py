"""Property test: max and average pooling on random NHWC geometry against float64 window loops
(seeded, bounded)."""
import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fusegrad import ops


def reference(x, k, s, p, kind, count_include_pad):
    n, h, w, c = x.shape
    oh, ow = (h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1
    out = np.empty((n, oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            h0, w0 = i * s[0] - p[0], j * s[1] - p[1]
            win = x[:, max(h0, 0):min(h0 + k[0], h), max(w0, 0):min(w0 + k[1], w)].astype(np.float64)
            if kind == "max":
                out[:, i, j] = win.max(axis=(1, 2))
            else:
                count = k[0] * k[1] if count_include_pad else win.shape[1] * win.shape[2]
                out[:, i, j] = win.sum(axis=(1, 2)) / count
    return out


@settings(max_examples=400)
@given(n=st.integers(1, 2), h=st.integers(1, 9), w=st.integers(1, 9), c=st.integers(1, 20),
       k=st.tuples(st.integers(1, 4), st.integers(1, 4)), s=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       data=st.data(), kind=st.sampled_from(["max", "avg"]), count_include_pad=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_pooling_matches_float64(n, h, w, c, k, s, data, kind, count_include_pad, seed):
    p = (data.draw(st.integers(0, k[0] // 2)), data.draw(st.integers(0, k[1] // 2)))
    assume(h + 2 * p[0] >= k[0] and w + 2 * p[1] >= k[1])
    x = np.random.default_rng(seed).standard_normal((n, h, w, c)).astype(np.float32)
    if kind == "max":
        got = ops.max_pool2d(x, k, s, p)
    else:
        got = ops.avg_pool2d(x, k, s, p, count_include_pad=count_include_pad)
    np.testing.assert_allclose(got, reference(x, k, s, p, kind, count_include_pad), rtol=1e-5, atol=1e-6)
