"""Shape and index ops against PyTorch (issue 16): forward values and float64 gradients, and
PyTorch's errors for bad dims and indices."""
import numpy as np
import pytest

import fusegrad as fg
from test_ops_torch import compare

torch = pytest.importorskip("torch")

R = np.random.default_rng(3)
X = R.standard_normal((3, 4))
Y = R.standard_normal((2, 3, 4))


def _lib_tensor(lib, data):
    return lib.tensor(np.asarray(data))


SHAPE_OPS = {
    "expand": (lambda t: t[:, :1].expand(3, 5), X),
    "expand_minus1": (lambda t: t.unsqueeze(0).expand(2, -1, -1), X),
    "expand_as": (lambda t: t[0].expand_as(t), X),
    "repeat": (lambda t: t.repeat(2, 1, 3), X),
    "repeat_interleave": (lambda t: t.repeat_interleave(2, dim=1), X),
    "repeat_interleave_flat": (lambda t: t.repeat_interleave(3), X),
    "flip": (lambda t: t.flip(0, 2), Y),
    "flip_tuple": (lambda t: t.flip((1,)), Y),
    "roll": (lambda t: t.roll(1, 1), X),
    "roll_dims": (lambda t: t.roll((1, -2), (0, 2)), Y),
    "roll_flat": (lambda t: t.roll(5), X),
    "split": (lambda t: t.split(3, dim=1), X),
    "split_sizes": (lambda t: t.split([1, 2], 0), X),
    "chunk": (lambda t: t.chunk(3, dim=1), X),
    "chunk_uneven": (lambda t: t.chunk(3, -1), np.tile(Y[..., :2], (1, 1, 4))),
    "unbind": (lambda t: t.unbind(1), Y),
    "tril": (lambda t: t.tril(), X),
    "triu": (lambda t: t.triu(1), Y),
    "tril_neg": (lambda t: t.tril(-1), X),
    "diagonal": (lambda t: t.diagonal(), X),
    "diagonal_offset": (lambda t: t.diagonal(1, 1, 2), Y),
    "diagonal_neg": (lambda t: t.diagonal(-1, -1, 0), Y),
    "narrow": (lambda t: t.narrow(1, 1, 2), X),
    "narrow_neg": (lambda t: t.narrow(-1, -3, 2), X),
    "movedim": (lambda t: t.movedim(0, -1), Y),
    "movedim_many": (lambda t: t.movedim((0, 1), (2, 0)), Y),
    "unfold": (lambda t: t.unfold(1, 2, 1), X),
    "unfold_step": (lambda t: t.unfold(2, 2, 2), Y),
    "unfold_dim0": (lambda t: t.unfold(0, 2, 1), X),
    "transpose": (lambda t: t.transpose(0, 2), Y),
    "t": (lambda t: t.t(), X),
    "permute": (lambda t: t.permute(2, 0, 1), Y),
    "flatten": (lambda t: t.flatten(1), Y),
    "view": (lambda t: t.view(-1, 6), Y),
    "squeeze_tuple": (lambda t: t[:, :1].unsqueeze(0).squeeze((0, 2)), X),
    "mT": (lambda t: t.mT, Y),
}


@pytest.mark.parametrize("name", sorted(SHAPE_OPS))
def test_shape_ops(name):
    fn, data = SHAPE_OPS[name]
    compare(fn, data)


def test_function_forms():
    compare(lambda lib, t: (lib.flip(t, (0,)), lib.roll(t, 1, 0), lib.tril(t), lib.triu(t, -1), lib.diagonal(t),
                            lib.narrow(t, 0, 1, 2), lib.movedim(t, 1, 0), lib.split(t, 2), lib.chunk(t, 2, 1),
                            lib.unbind(t), lib.squeeze(t[:1]), lib.unsqueeze(t, 1), lib.flatten(t),
                            lib.transpose(t, 0, 1), lib.permute(t, (1, 0)), lib.reshape(t, (4, 3))), X, module=True)


def test_index_ops():
    idx = np.array([[0, 2, 1, 0], [2, 2, 0, 1]])
    compare(lambda lib, t: t.gather(1, _lib_tensor(lib, idx[:, :3])), X[:2], module=True)
    compare(lambda lib, t: t.gather(0, _lib_tensor(lib, idx)), X, module=True)
    compare(lambda lib, t: lib.gather(t, 0, _lib_tensor(lib, idx[:, :2])), X, module=True)  # index smaller
    compare(lambda lib, t: t.index_select(1, _lib_tensor(lib, [3, 0, 3])), X, module=True)
    compare(lambda lib, t: lib.index_select(t, 0, _lib_tensor(lib, [2])), X, module=True)
    compare(lambda lib, t, s: t.scatter(1, _lib_tensor(lib, [[0, 2], [1, 3]]), s), X[:2], X[:2, :2] + 5, module=True)
    compare(lambda lib, t, s: t.scatter_add(0, _lib_tensor(lib, idx[:, :3]), s), X, Y[0, :2, :3], module=True)
    compare(lambda lib, t, s: lib.scatter_add(t, 1, _lib_tensor(lib, idx[:, :2]), s), X[:2], Y[0, :2, :2], module=True)
    compare(lambda lib, t: t.scatter(0, _lib_tensor(lib, [[1, 0, 2, 1]]), 7.5), X, module=True)


@pytest.mark.parametrize("call", [
    lambda t: t.gather(1, fg.tensor([[4, 0]])), lambda t: t.gather(1, fg.tensor([[-1, 0]])),
    lambda t: t.index_select(0, fg.tensor([3])), lambda t: t.scatter_add(1, fg.tensor([[5]]), t),
    lambda t: t.gather(1, fg.tensor([0, 1])), lambda t: t.expand(2, 5), lambda t: t.repeat(2),
    lambda t: t.split([1, 1], 0), lambda t: t.unfold(1, 9, 1), lambda t: t.diagonal(0, 1, 1),
    lambda t: t.tril().sum() + fg.tensor([1.0]).tril(), lambda t: t.movedim((0, 1), (0,)), lambda t: t.chunk(0),
])
def test_index_errors_match_torch_types(call):
    t = fg.tensor(X)
    tt = torch.tensor(X)
    with pytest.raises(Exception) as theirs:
        call(_TorchShim(tt))
    with pytest.raises(theirs.type):
        call(t)


class _TorchShim:
    """A torch tensor whose fg.tensor(...) arguments turn into torch tensors, so one lambda runs on both."""

    def __init__(self, t):
        self.t = t

    def __getattr__(self, name):
        attr = getattr(self.t, name)
        if not callable(attr):
            return attr

        def call(*args):
            args = [torch.tensor(a.numpy()) if isinstance(a, fg.Tensor) else a for a in args]
            args = [a.t if isinstance(a, _TorchShim) else a for a in args]
            out = attr(*args)
            return _TorchShim(out) if isinstance(out, torch.Tensor) else out
        return call

    def __add__(self, other):
        return _TorchShim(self.t + (torch.tensor(other.numpy()) if isinstance(other, fg.Tensor) else other))


def test_split_chunk_unbind_give_tuples_sharing_the_graph():
    t = fg.tensor(X, requires_grad=True)
    parts = t.chunk(2, dim=0)
    assert isinstance(parts, tuple) and [p.shape for p in parts] == [(2, 4), (1, 4)]
    (parts[0].sum() * 2 + parts[1].sum()).backward()
    np.testing.assert_array_equal(t.grad.numpy(), [[2] * 4, [2] * 4, [1] * 4])
