"""ops.attention and its backward against PyTorch's scaled_dot_product_attention on the same
inputs: every mask kind, causal with Sq != Sk (top-left aligned), D not a multiple of 16."""
import numpy as np
import pytest

from fusegrad import ops

from attention_reference import make, make_mask

torch = pytest.importorskip("torch")
F = torch.nn.functional


@pytest.mark.parametrize("shape", [(2, 3, 37, 53, 20), (1, 4, 64, 64, 64), (2, 2, 100, 61, 33), (1, 1, 1, 9, 8)])
@pytest.mark.parametrize("kind", ["none", "key_padding", "full_bool", "additive", "square_2d", "causal"])
def test_matches_torch_sdpa(rng, shape, kind):
    q, k, v = make(rng, shape)
    mask, causal = make_mask(rng, kind, shape)
    out, lse = ops.attention(q, k, v, mask=mask, causal=causal, return_lse=True)
    g = rng.standard_normal(out.shape).astype(np.float32)
    dq, dk, dv = ops.attention_backward(g, q, k, v, out, lse, mask=mask, causal=causal)
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    tm = None if mask is None else torch.from_numpy(np.ascontiguousarray(mask))
    to = F.scaled_dot_product_attention(tq, tk, tv, attn_mask=tm, is_causal=causal)
    to.backward(torch.from_numpy(g))
    np.testing.assert_allclose(out, to.detach().numpy(), rtol=1e-4, atol=3e-5)
    for mine, theirs in zip((dq, dk, dv), (tq, tk, tv)):
        np.testing.assert_allclose(mine, theirs.grad.numpy(), rtol=1e-3, atol=1e-4)
