"""Property test: conv2d and its three backward passes on random geometry against float64 tap
loops (seeded, bounded)."""
import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fusegrad import ops


def taps(x_shape, w_shape, s, d, pads):
    """(i, j, input slice) of every tap over the padded input."""
    n, h, w, c = x_shape
    oh = (h + sum(pads[0]) - d[0] * (w_shape[0] - 1) - 1) // s[0] + 1
    ow = (w + sum(pads[1]) - d[1] * (w_shape[1] - 1) - 1) // s[1] + 1
    for i in range(w_shape[0]):
        for j in range(w_shape[1]):
            yield i, j, (slice(None), slice(i * d[0], i * d[0] + s[0] * (oh - 1) + 1, s[0]),
                         slice(j * d[1], j * d[1] + s[1] * (ow - 1) + 1, s[1]), slice(None))


@settings(max_examples=300)
@given(n=st.integers(1, 2), h=st.integers(1, 8), w=st.integers(1, 8), c=st.integers(1, 6), co=st.integers(1, 40),
       k=st.tuples(st.integers(1, 3), st.integers(1, 3)), s=st.tuples(st.integers(1, 3), st.integers(1, 2)),
       d=st.tuples(st.integers(1, 2), st.integers(1, 2)), data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_conv_and_backward_match_float64(n, h, w, c, co, k, s, d, data, seed):
    pads = ((data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2))),
            (data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2))))
    assume(h + sum(pads[0]) >= d[0] * (k[0] - 1) + 1 and w + sum(pads[1]) >= d[1] * (k[1] - 1) + 1)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    wt = rng.standard_normal((*k, c, co)).astype(np.float32)
    b = rng.standard_normal(co).astype(np.float32)
    geo = dict(stride=s, padding=pads, dilation=d)
    y = ops.conv2d(x, wt, b, **geo)
    xpad = np.pad(x.astype(np.float64), ((0, 0), *pads, (0, 0)))
    ref = b.astype(np.float64) + sum(xpad[t] @ wt[i, j].astype(np.float64) for i, j, t in taps(x.shape, wt.shape, s, d, pads))
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    g = rng.standard_normal(y.shape)
    gxpad, gw = np.zeros_like(xpad), np.zeros(wt.shape)
    for i, j, t in taps(x.shape, wt.shape, s, d, pads):
        gxpad[t] += g @ wt[i, j].T.astype(np.float64)
        gw[i, j] = xpad[t].reshape(-1, c).T @ g.reshape(-1, co)
    gx = gxpad[:, pads[0][0]:pads[0][0] + h, pads[1][0]:pads[1][0] + w]
    got_x, got_w, got_b = ops.conv2d_backward(g.astype(np.float32), x, wt, **geo)
    np.testing.assert_allclose(got_x, gx, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_w, gw, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_b, g.sum(axis=(0, 1, 2)), rtol=1e-4, atol=1e-4)
