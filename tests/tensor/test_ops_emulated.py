"""The new tensor ops on the emulated CUDA device: written once with the storage's array module,
they keep their results on the device and give the CPU's numbers (forward and gradient)."""
import numpy as np
import pytest

import fusegrad as fg
from fusegrad import nn
from fusegrad.nn import functional as F

pytestmark = pytest.mark.cuda_emulated

R = np.random.default_rng(7)
X = R.standard_normal((3, 4)).astype(np.float32)
IDX = np.array([[0, 2, 1, 0], [2, 2, 0, 1]])

OPS = {
    "compare_promote": lambda t: ((t > 0) & (t < 1)).float() + (t.int() / 2) + t % 0.5 + (t // 2).detach(),
    "math": lambda t: t.sin() + t.erf() + t.abs().rsqrt() + t.square() + t.atan2(t + 1),
    "where_clamp": lambda t: fg.where(t > 0, t, 0.5 * t).clamp(t[0] - 0.5, t[:, :1]) + t.masked_fill(t < 0, 2.0),
    "nan_to_num": lambda t: (t.log()).nan_to_num(neginf=-3.0),
    "reduce": lambda t: t.std(1) + t.prod(1) + t.logsumexp(1) + t.norm(dim=1) + t.amax(1) + t.max(1).values
    + t.cumsum(1).sum(1) + t.cumprod(1)[:, -1],
    "shape": lambda t: t.expand(2, 3, 4).flip(0).roll(1, 2).repeat(1, 2, 1).sum(0).tril().diagonal(),
    "index": lambda t: t.gather(1, fg.tensor(IDX[:, :3], device=t.device)).sum() + t.index_select(1, fg.tensor(
        [3, 0], device=t.device)).sum() + t.scatter_add(0, fg.tensor(IDX, device=t.device), t[:2]).sum(),
    "mixed_index": lambda t: t.unsqueeze(0)[0, :, [1, 3]],
    "split": lambda t: (t.unfold(1, 2, 2).sum(-1) + t.chunk(2, 1)[1]).repeat_interleave(2, 1),
    "nn_functional": lambda t: F.pad(t[None, :, :, None], (0, 0, 1, 1, 2, 0), mode="reflect").sum()
    + F.interpolate(t[None, :, :, None], size=(5, 3), mode="bilinear").sum() + F.einsum("ij,kj->ik", t, t).sum()
    + F.einsum("ij->j", t).sum(),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_on_the_emulated_device_equals_the_cpu(name):
    cpu = fg.tensor(X, requires_grad=True)
    expected = OPS[name](cpu)
    expected.sum().backward()
    with fg.cuda.emulate():
        dev = fg.tensor(X, requires_grad=True, device="cuda")
        out = OPS[name](dev)
        assert out.device == "cuda:0"
        out.sum().backward()
        assert dev.grad.device == "cuda:0"
        np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(dev.grad.numpy(), cpu.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_one_hot_cross_entropy_and_module_on_numpy_input_on_the_emulated_device():
    with fg.cuda.emulate():
        labels = fg.tensor([1, 0, 2], device="cuda")
        assert F.one_hot(labels, 3).device == "cuda:0"
        logits = fg.tensor(X[:, :3], requires_grad=True, device="cuda")
        loss = F.cross_entropy(logits, [1, 0, 2])
        loss.backward()
        assert logits.grad.device == "cuda:0"
