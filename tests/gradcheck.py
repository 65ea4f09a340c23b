"""Gradient checks shared by the tests: autograd against central finite differences in float64."""
import numpy as np

from fusegrad import Tensor


def numeric_grad(f, arrays, eps=1e-6):
    """Central differences of the scalar f(*arrays) (float64) with respect to each array."""
    grads = []
    for a in arrays:
        g = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            old = a[i]
            a[i] = old + eps
            hi = f(*arrays)
            a[i] = old - eps
            lo = f(*arrays)
            a[i] = old
            g[i] = (hi - lo) / (2 * eps)
        grads.append(g)
    return grads


def check_grad(fn, *shapes, rng, positive=False, rtol=1e-6, atol=1e-8, dtype=np.float64):
    """fn maps Tensors to a Tensor; compares autograd with finite differences of sum(fn * w)."""
    arrays = [np.array(rng.standard_normal(s)) for s in shapes]
    if positive:
        arrays = [np.array(np.abs(a) + 0.5) for a in arrays]
    out_shape = fn(*[Tensor(a, dtype=dtype) for a in arrays]).shape
    w = rng.standard_normal(out_shape)

    def scalar(*arrs):
        return float((fn(*[Tensor(a, dtype=dtype) for a in arrs]).numpy().astype(np.float64) * w).sum())

    tensors = [Tensor(a, dtype=dtype, requires_grad=True) for a in arrays]
    (fn(*tensors) * Tensor(w, dtype=dtype)).sum().backward()
    expected = numeric_grad(scalar, [a.copy() for a in arrays], eps=1e-6 if dtype == np.float64 else 1e-2)
    for t, e in zip(tensors, expected):
        assert t.grad is not None and t.grad.shape == t.shape
        np.testing.assert_allclose(t.grad.numpy(), e, rtol=rtol, atol=atol)
