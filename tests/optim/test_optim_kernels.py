"""Fused optimizer kernels (fusegrad.ops.adam_step / sgd_step / clip_grad_norm) against float64
NumPy transcriptions of PyTorch's documented algorithms, and against torch.optim itself."""
import math

import numpy as np
import pytest

import fusegrad
from fusegrad import ops

# Sizes mixing empty, one element, odd lengths around the vector widths (8, 16), a size that
# crosses the CPU threading grain and the CUDA chunk (16384) with a ragged tail, and a 2-D shape.
SIZES = [(0,), (1,), (7,), (17,), (33, 5), (16383,), (16385,), (200_003,)]


def make(rng, shapes, scale=1.0, positive=False):
    out = []
    for s in shapes:
        a = rng.standard_normal(s).astype(np.float32) * np.float32(scale)
        out.append(np.abs(a) if positive else a)
    return out


def copies(arrays):
    return [a.copy() for a in arrays]


# --- float64 references, transcribed from the torch.optim documentation --------------------------


def ref_adam(p, g, m, v, step, lr, beta1, beta2, eps, wd, decoupled, maximize):
    p, g, m, v = (x.astype(np.float64) for x in (p, g, m, v))
    if maximize:
        g = -g
    if wd != 0:
        if decoupled:
            p = p * (1 - lr * wd)
        else:
            g = g + wd * p
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    m_hat = m / (1 - beta1**step)
    v_hat = v / (1 - beta2**step)
    p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p, m, v


def ref_sgd(p, g, b, step, lr, momentum, dampening, nesterov, wd, maximize):
    p, g = p.astype(np.float64), g.astype(np.float64)
    if maximize:
        g = -g
    if wd != 0:
        g = g + wd * p
    if momentum != 0:
        b = g.copy() if step == 1 else momentum * b.astype(np.float64) + (1 - dampening) * g
        g = g + momentum * b if nesterov else b
    return p - lr * g, b


def assert_close(got, want, rtol=2e-5, atol=2e-6):
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


ADAM_CONFIGS = {
    "adam": dict(weight_decay=0.0, decoupled=False, maximize=False),
    "adam_l2": dict(weight_decay=0.1, decoupled=False, maximize=False),
    "adamw": dict(weight_decay=0.05, decoupled=True, maximize=False),
    "adamw_maximize": dict(weight_decay=0.05, decoupled=True, maximize=True),
}


@pytest.mark.parametrize("steps", [1, 2, 10])
@pytest.mark.parametrize("config", list(ADAM_CONFIGS))
def test_adam_matches_reference(rng, config, steps):
    c = ADAM_CONFIGS[config]
    lr, beta1, beta2, eps = 1e-2, 0.9, 0.999, 1e-8
    params = make(rng, SIZES)
    m = [np.zeros(s, np.float32) for s in SIZES]
    v = [np.zeros(s, np.float32) for s in SIZES]
    ref = [(p.astype(np.float64), np.zeros(p.shape), np.zeros(p.shape)) for p in params]
    for step in range(1, steps + 1):
        grads = make(rng, SIZES)
        ops.adam_step(params, grads, m, v, step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                      weight_decay=c["weight_decay"], decoupled_weight_decay=c["decoupled"],
                      maximize=c["maximize"])
        ref = [ref_adam(rp, g, rm, rv, step, lr, beta1, beta2, eps, c["weight_decay"], c["decoupled"],
                        c["maximize"]) for (rp, rm, rv), g in zip(ref, grads)]
    for p, mi, vi, (rp, rm, rv) in zip(params, m, v, ref):
        assert p.dtype == np.float32
        assert_close(p, rp, rtol=1e-5, atol=1e-5)
        assert_close(mi, rm)
        assert_close(vi, rv)


SGD_CONFIGS = {
    "plain": dict(momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False),
    "momentum": dict(momentum=0.9, dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False),
    "dampening": dict(momentum=0.9, dampening=0.3, nesterov=False, weight_decay=0.0, maximize=False),
    "nesterov": dict(momentum=0.8, dampening=0.0, nesterov=True, weight_decay=0.0, maximize=False),
    "weight_decay": dict(momentum=0.9, dampening=0.0, nesterov=False, weight_decay=0.01, maximize=False),
    "plain_weight_decay": dict(momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.01, maximize=False),
    "maximize": dict(momentum=0.9, dampening=0.1, nesterov=False, weight_decay=0.01, maximize=True),
}


@pytest.mark.parametrize("steps", [1, 2, 10])
@pytest.mark.parametrize("config", list(SGD_CONFIGS))
def test_sgd_matches_reference(rng, config, steps):
    c = SGD_CONFIGS[config]
    lr = 0.05
    params = make(rng, SIZES)
    # Garbage in the buffers: step 1 must overwrite it, as PyTorch's fresh buffers are the gradient.
    bufs = make(rng, SIZES, scale=100.0)
    ref = [(p.astype(np.float64), None) for p in params]
    for step in range(1, steps + 1):
        grads = make(rng, SIZES)
        ops.sgd_step(params, grads, bufs, step=step, lr=lr, **c)
        ref = [ref_sgd(rp, g, rb, step, lr, c["momentum"], c["dampening"], c["nesterov"], c["weight_decay"],
                       c["maximize"]) for (rp, rb), g in zip(ref, grads)]
    for p, b, (rp, rb) in zip(params, bufs, ref):
        assert_close(p, rp, rtol=1e-5, atol=1e-5)
        if c["momentum"] != 0:
            assert_close(b, rb, rtol=1e-5, atol=1e-5)


def test_sgd_without_momentum_needs_no_buffers(rng):
    params, grads = make(rng, SIZES), make(rng, SIZES)
    want = [p.astype(np.float64) - 0.1 * g for p, g in zip(params, grads)]
    ops.sgd_step(params, grads, step=3, lr=0.1)
    for p, w in zip(params, want):
        assert_close(p, w)


def test_single_arrays_are_accepted(rng):
    p, g = rng.standard_normal(1000).astype(np.float32), rng.standard_normal(1000).astype(np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    rp, rm, rv = ref_adam(p, g, m, v, 1, 1e-3, 0.9, 0.999, 1e-8, 0.0, False, False)
    ops.adam_step(p, g, m, v, step=1, lr=1e-3)
    assert_close(p, rp)
    assert_close(m, rm)
    assert_close(v, rv)


def test_one_and_many_threads_agree(rng):
    sizes = [(300_001,), (5,), (123_457,)]
    params, grads = make(rng, sizes), make(rng, sizes)
    m, v = make(rng, sizes), make(rng, sizes, positive=True)
    results = []
    old = fusegrad._cpu.get_num_threads()
    try:
        for threads in (1, 2, 3):
            fusegrad._cpu.set_num_threads(threads)
            p2, m2, v2 = copies(params), copies(m), copies(v)
            ops.adam_step(p2, grads, m2, v2, step=4, lr=1e-3, weight_decay=0.1, decoupled_weight_decay=True)
            results.append(p2 + m2 + v2)
    finally:
        fusegrad._cpu.set_num_threads(old)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)  # elementwise: thread splits cannot change any bit


def test_many_small_tensors(rng):
    sizes = [(int(n),) for n in rng.integers(1, 3000, size=300)]
    params, grads = make(rng, sizes), make(rng, sizes)
    bufs = make(rng, sizes)
    ref = [ref_sgd(p, g, b, 2, 0.1, 0.9, 0.0, True, 0.0, False) for p, g, b in zip(params, grads, bufs)]
    ops.sgd_step(params, grads, bufs, step=2, lr=0.1, momentum=0.9, nesterov=True)
    for p, b, (rp, rb) in zip(params, bufs, ref):
        assert_close(p, rp)
        assert_close(b, rb)


def test_strided_and_fortran_arrays_are_updated_in_place(rng):
    base = rng.standard_normal((40, 30)).astype(np.float32)
    p = base[::2, ::3]  # a strided view: updated through a copy, written back
    g = np.asfortranarray(rng.standard_normal(p.shape).astype(np.float32))  # a different layout
    m = np.zeros(p.shape, np.float32)
    v = np.zeros(p.shape, np.float32)
    rp, rm, rv = ref_adam(p, g, m, v, 1, 1e-2, 0.9, 0.999, 1e-8, 0.0, False, False)
    untouched = base[1::2].copy()
    ops.adam_step([p], [g], [m], [v], step=1, lr=1e-2)
    assert_close(base[::2, ::3], rp)
    assert_close(m, rm)
    assert_close(v, rv)
    np.testing.assert_array_equal(base[1::2], untouched)


# --- torch.optim itself -------------------------------------------------------------------------


def torch_run(torch, opt_factory, params, grad_seq):
    tp = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    opt = opt_factory(tp)
    for grads in grad_seq:
        for t, g in zip(tp, grads):
            t.grad = torch.tensor(g)
        opt.step()
    return [t.detach().numpy() for t in tp], opt, tp


@pytest.mark.parametrize("kind", ["adam", "adam_l2", "adamw", "adam_maximize"])
def test_adam_matches_torch(rng, kind):
    torch = pytest.importorskip("torch")
    sizes = [(1,), (17,), (33, 5), (40_000,)]
    params = make(rng, sizes)
    grad_seq = [make(rng, sizes) for _ in range(10)]
    wd = 0.0 if kind in ("adam", "adam_maximize") else 0.1
    maximize = kind == "adam_maximize"
    cls = torch.optim.AdamW if kind == "adamw" else torch.optim.Adam
    want, opt, tp = torch_run(torch, lambda t: cls(t, lr=1e-2, weight_decay=wd, maximize=maximize),
                              params, grad_seq)
    m = [np.zeros(s, np.float32) for s in sizes]
    v = [np.zeros(s, np.float32) for s in sizes]
    for step, grads in enumerate(grad_seq, 1):
        ops.adam_step(params, grads, m, v, step=step, lr=1e-2, weight_decay=wd,
                      decoupled_weight_decay=kind == "adamw", maximize=maximize)
    for p, w, mi, vi, t in zip(params, want, m, v, tp):
        st = opt.state[t]
        assert_close(p, w, rtol=1e-5, atol=1e-6)
        assert_close(mi, st["exp_avg"].numpy(), rtol=1e-5, atol=1e-6)
        assert_close(vi, st["exp_avg_sq"].numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("config", ["plain", "momentum", "dampening", "nesterov", "weight_decay", "maximize"])
def test_sgd_matches_torch(rng, config):
    torch = pytest.importorskip("torch")
    c = SGD_CONFIGS[config]
    sizes = [(1,), (17,), (33, 5), (40_000,)]
    params = make(rng, sizes)
    grad_seq = [make(rng, sizes) for _ in range(10)]
    want, opt, tp = torch_run(torch, lambda t: torch.optim.SGD(t, lr=0.05, **c), params, grad_seq)
    bufs = [np.zeros(s, np.float32) for s in sizes]
    for step, grads in enumerate(grad_seq, 1):
        ops.sgd_step(params, grads, bufs, step=step, lr=0.05, **c)
    for p, w, b, t in zip(params, want, bufs, tp):
        assert_close(p, w, rtol=1e-5, atol=1e-6)
        if c["momentum"]:
            assert_close(b, opt.state[t]["momentum_buffer"].numpy(), rtol=1e-5, atol=1e-6)


# --- gradient clipping --------------------------------------------------------------------------


def ref_norm(grads, p):
    flat = np.concatenate([g.astype(np.float64).ravel() for g in grads])
    if math.isinf(p):
        return np.abs(flat).max() if flat.size else 0.0
    return (np.abs(flat) ** p).sum() ** (1 / p)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.0, 0.5])
@pytest.mark.parametrize("max_norm", [0.5, 1e9])
def test_clip_grad_norm(rng, norm_type, max_norm):
    grads = make(rng, SIZES)
    original = copies(grads)
    total = ops.clip_grad_norm(grads, max_norm, norm_type)
    want = ref_norm(original, norm_type)
    assert isinstance(total, float)
    assert total == pytest.approx(want, rel=1e-5)
    coef = min(max_norm / (want + 1e-6), 1.0)
    for g, o in zip(grads, original):
        assert_close(g, o.astype(np.float64) * coef, rtol=1e-5, atol=1e-7)
    if max_norm < want:
        assert ref_norm(grads, norm_type) == pytest.approx(max_norm, rel=1e-4)


def test_grad_norm_does_not_scale(rng):
    grads = make(rng, SIZES)
    original = copies(grads)
    assert ops.grad_norm(grads) == pytest.approx(ref_norm(original, 2.0), rel=1e-5)
    for g, o in zip(grads, original):
        np.testing.assert_array_equal(g, o)


def test_clip_propagates_nan(rng):
    grads = make(rng, [(100,), (50,)])
    grads[1][7] = np.nan
    for p in (2.0, math.inf):
        g = copies(grads)
        assert math.isnan(ops.clip_grad_norm(g, 1.0, p))
        assert np.isnan(g[0]).all()


def test_clip_empty_list_and_empty_arrays():
    assert ops.clip_grad_norm([], 1.0) == 0.0
    assert ops.clip_grad_norm([np.zeros(0, np.float32)], 1.0) == 0.0


def test_clip_matches_torch(rng):
    torch = pytest.importorskip("torch")
    grads = make(rng, SIZES, scale=3.0)
    tp = [torch.zeros(g.shape, requires_grad=True) for g in grads]
    for t, g in zip(tp, grads):
        t.grad = torch.tensor(g)
    want = torch.nn.utils.clip_grad_norm_(tp, 2.0)
    total = ops.clip_grad_norm(grads, 2.0)
    assert total == pytest.approx(float(want), rel=1e-5)
    for g, t in zip(grads, tp):
        assert_close(g, t.grad.numpy(), rtol=1e-5, atol=1e-7)


# --- bad input ------------------------------------------------------------------------------------


def adam_args(n=3, size=10):
    return [[np.zeros(size, np.float32) for _ in range(n)] for _ in range(4)]


def test_errors_list_lengths():
    p, g, m, v = adam_args()
    with pytest.raises(ValueError, match="differ in length"):
        ops.adam_step(p, g[:2], m, v, step=1, lr=1e-3)
    with pytest.raises(ValueError, match="differ in length"):
        ops.sgd_step(p, g, m[:1], step=1, lr=0.1, momentum=0.9)


def test_errors_shapes():
    p, g, m, v = adam_args()
    v[1] = np.zeros(11, np.float32)
    with pytest.raises(ValueError, match=r"exp_avg_sqs\[1\]: shape"):
        ops.adam_step(p, g, m, v, step=1, lr=1e-3)
    g[2] = np.zeros((2, 5), np.float32)
    with pytest.raises(ValueError, match="shape"):
        ops.sgd_step(p, g, step=1, lr=0.1)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(step=0), "step must be >= 1"),
    (dict(step=-3), "step must be >= 1"),
    (dict(lr=-1e-3), "lr must be"),
    (dict(lr=float("nan")), "lr must be"),
    (dict(beta1=1.0), "beta1 must be in"),
    (dict(beta1=-0.1), "beta1 must be in"),
    (dict(beta2=1.5), "beta2 must be in"),
    (dict(eps=0.0), "eps must be"),
    (dict(eps=-1e-8), "eps must be"),
    (dict(weight_decay=-0.1), "weight_decay must be"),
])
def test_errors_adam_hyper_parameters(kwargs, fragment):
    p, g, m, v = adam_args()
    before = copies(p)
    args = dict(step=1, lr=1e-3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=fragment):
        ops.adam_step(p, g, m, v, **args)
    for a, b in zip(p, before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(step=0), "step must be >= 1"),
    (dict(lr=-0.1), "lr must be"),
    (dict(momentum=-0.5), "momentum must be"),
    (dict(weight_decay=-1.0), "weight_decay must be"),
    (dict(nesterov=True, momentum=0.0), "nesterov"),
    (dict(nesterov=True, momentum=0.9, dampening=0.1), "nesterov"),
])
def test_errors_sgd_hyper_parameters(kwargs, fragment):
    p, g, b, _ = adam_args()
    args = dict(step=1, lr=0.1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=fragment):
        ops.sgd_step(p, g, b, **args)


def test_errors_sgd_momentum_without_buffers():
    p, g, _, _ = adam_args()
    with pytest.raises(ValueError, match="momentum_buffers are required"):
        ops.sgd_step(p, g, step=1, lr=0.1, momentum=0.9)


def test_errors_step_type():
    p, g, m, v = adam_args()
    with pytest.raises(TypeError, match="step: expected an integer"):
        ops.adam_step(p, g, m, v, step=1.5, lr=1e-3)


@pytest.mark.parametrize("which", [0, 1, 2, 3])
def test_errors_dtype(which):
    lists = adam_args()
    lists[which][1] = lists[which][1].astype(np.float64)
    with pytest.raises(TypeError, match=r"\[1\]: expected dtype float32, got float64"):
        ops.adam_step(*lists, step=1, lr=1e-3)


def test_errors_dtype_strided():
    p, g, m, v = adam_args()
    g[0] = np.zeros(20, np.float16)[::2]
    with pytest.raises(TypeError, match="grads\\[0\\]: expected dtype float32, got float16"):
        ops.adam_step(p, g, m, v, step=1, lr=1e-3)


def test_errors_not_an_array():
    p, g, m, v = adam_args()
    g[1] = [0.0] * 10
    with pytest.raises(TypeError, match=r"grads\[1\]"):
        ops.adam_step(p, g, m, v, step=1, lr=1e-3)


def test_errors_read_only():
    p, g, m, v = adam_args()
    m[2].flags.writeable = False
    with pytest.raises(ValueError, match=r"exp_avgs\[2\]: is read-only"):
        ops.adam_step(p, g, m, v, step=1, lr=1e-3)
    g[0].flags.writeable = False  # gradients are only read: fine for the optimizer step
    ops.sgd_step(p, g, step=1, lr=0.1)
    with pytest.raises(ValueError, match="read-only"):
        ops.clip_grad_norm(g, 1.0)


def test_errors_overlapping_state():
    p, g, m, v = adam_args()
    v[1] = m[1]  # the same array as two states would be updated twice
    with pytest.raises(ValueError, match="overlap in memory"):
        ops.adam_step(p, g, m, v, step=1, lr=1e-3)
    p, g, m, v = adam_args()
    arena = np.zeros(25, np.float32)
    p[0], p[1] = arena[:10], arena[5:15]
    with pytest.raises(ValueError, match="overlap in memory"):
        ops.adam_step(p, g, m, v, step=1, lr=1e-3)
    p, g, m, v = adam_args()
    g[0] = g[1]  # two gradients may share memory: they are only read
    ops.adam_step(p, g, m, v, step=1, lr=1e-3)


def test_errors_clip():
    g = [np.ones(4, np.float32)]
    with pytest.raises(ValueError, match="norm_type must be > 0"):
        ops.clip_grad_norm(g, 1.0, norm_type=0.0)
    with pytest.raises(ValueError, match="max_norm must be >= 0"):
        ops.clip_grad_norm(g, -1.0)
    with pytest.raises(TypeError, match="expected dtype float32"):
        ops.clip_grad_norm([np.ones(4)], 1.0)


def test_errors_mixed_devices_cuda_list():
    cupy = pytest.importorskip("cupy")
    if not fusegrad.cuda.is_available():
        pytest.skip("mixing devices needs a GPU array")
    p, g, m, v = adam_args()
    g[1] = cupy.zeros(10, cupy.float32)
    with pytest.raises(ValueError, match="same device"):
        ops.adam_step(p, g, m, v, step=1, lr=1e-3)


# --- CUDA -----------------------------------------------------------------------------------------

CUDA_SIZES = SIZES + [(1_000_003,)]


def to_gpu(cp, arrays):
    return [cp.asarray(a) for a in arrays]


@pytest.mark.cuda
@pytest.mark.parametrize("config", list(ADAM_CONFIGS))
def test_cuda_adam_matches_cpu_reference(rng, config):
    import cupy as cp

    c = ADAM_CONFIGS[config]
    params = make(rng, CUDA_SIZES)
    gp = to_gpu(cp, params)
    gm = [cp.zeros(s, cp.float32) for s in CUDA_SIZES]
    gv = [cp.zeros(s, cp.float32) for s in CUDA_SIZES]
    ref = [(p.astype(np.float64), np.zeros(p.shape), np.zeros(p.shape)) for p in params]
    for step in range(1, 11):
        grads = make(rng, CUDA_SIZES)
        ops.adam_step(gp, to_gpu(cp, grads), gm, gv, step=step, lr=1e-2, weight_decay=c["weight_decay"],
                      decoupled_weight_decay=c["decoupled"], maximize=c["maximize"])
        ref = [ref_adam(rp, g, rm, rv, step, 1e-2, 0.9, 0.999, 1e-8, c["weight_decay"], c["decoupled"],
                        c["maximize"]) for (rp, rm, rv), g in zip(ref, grads)]
    for p, mi, vi, (rp, rm, rv) in zip(gp, gm, gv, ref):
        assert_close(cp.asnumpy(p), rp, rtol=1e-5, atol=1e-5)
        assert_close(cp.asnumpy(mi), rm)
        assert_close(cp.asnumpy(vi), rv)


@pytest.mark.cuda
@pytest.mark.parametrize("config", list(SGD_CONFIGS))
def test_cuda_sgd_matches_cpu_reference(rng, config):
    import cupy as cp

    c = SGD_CONFIGS[config]
    params = make(rng, CUDA_SIZES)
    gp = to_gpu(cp, params)
    gb = to_gpu(cp, make(rng, CUDA_SIZES, scale=100.0))
    ref = [(p.astype(np.float64), None) for p in params]
    for step in range(1, 4):
        grads = make(rng, CUDA_SIZES)
        ops.sgd_step(gp, to_gpu(cp, grads), gb, step=step, lr=0.05, **c)
        ref = [ref_sgd(rp, g, rb, step, 0.05, c["momentum"], c["dampening"], c["nesterov"], c["weight_decay"],
                       c["maximize"]) for (rp, rb), g in zip(ref, grads)]
    for p, b, (rp, rb) in zip(gp, gb, ref):
        assert_close(cp.asnumpy(p), rp, rtol=1e-5, atol=1e-5)
        if c["momentum"]:
            assert_close(cp.asnumpy(b), rb, rtol=1e-5, atol=1e-5)


@pytest.mark.cuda
def test_cuda_many_tensors_and_misaligned_views(rng):
    """More tensors than one launch table holds (several launches), and views that are not
    16-byte aligned (the element-wise path)."""
    import cupy as cp

    sizes = [(int(n),) for n in rng.integers(0, 5000, size=900)]
    params, grads, bufs = make(rng, sizes), make(rng, sizes), make(rng, sizes)
    ref = [ref_sgd(p, g, b, 2, 0.1, 0.9, 0.0, False, 0.0, False) for p, g, b in zip(params, grads, bufs)]
    arena = cp.zeros(sum(s[0] for s in sizes) + 1, cp.float32)
    gp, offset = [], 1  # offset 1: every view is misaligned by 4 bytes
    for p in params:
        view = arena[offset:offset + p.size]
        view[...] = cp.asarray(p)
        gp.append(view)
        offset += p.size
    gb = to_gpu(cp, bufs)
    ops.sgd_step(gp, to_gpu(cp, grads), gb, step=2, lr=0.1, momentum=0.9)
    for p, b, (rp, rb) in zip(gp, gb, ref):
        assert_close(cp.asnumpy(p), rp)
        assert_close(cp.asnumpy(b), rb)


@pytest.mark.cuda
@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.0])
def test_cuda_clip_grad_norm(rng, norm_type):
    import cupy as cp

    grads = make(rng, CUDA_SIZES)
    gg = to_gpu(cp, grads)
    total = ops.clip_grad_norm(gg, 1.0, norm_type)
    assert isinstance(total, cp.ndarray) and total.shape == ()
    want = ref_norm(grads, norm_type)
    assert float(total) == pytest.approx(want, rel=1e-5)
    coef = min(1.0 / (want + 1e-6), 1.0)
    for g, o in zip(gg, grads):
        assert_close(cp.asnumpy(g), o.astype(np.float64) * coef, rtol=1e-5, atol=1e-7)
    many = make(rng, [(int(n),) for n in rng.integers(1, 2000, size=500)])
    assert float(ops.grad_norm(to_gpu(cp, many), norm_type)) == pytest.approx(ref_norm(many, norm_type), rel=1e-5)


@pytest.mark.cuda
def test_cuda_clip_no_scale_when_under_max(rng):
    import cupy as cp

    grads = make(rng, [(1000,)])
    gg = to_gpu(cp, grads)
    ops.clip_grad_norm(gg, 1e9)
    np.testing.assert_array_equal(cp.asnumpy(gg[0]), grads[0])


@pytest.mark.cuda
def test_cuda_matches_torch_fused(rng):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    sizes = [(1,), (17,), (33, 5), (100_000,)]
    params = make(rng, sizes)
    grad_seq = [make(rng, sizes) for _ in range(5)]
    tp = [torch.tensor(p.copy(), device="cuda", requires_grad=True) for p in params]
    opt = torch.optim.AdamW(tp, lr=1e-2, weight_decay=0.1, fused=True)
    ours = [torch.tensor(p.copy(), device="cuda") for p in params]
    m = [torch.zeros(s, device="cuda") for s in sizes]
    v = [torch.zeros(s, device="cuda") for s in sizes]
    for step, grads in enumerate(grad_seq, 1):
        for t, g in zip(tp, grads):
            t.grad = torch.tensor(g, device="cuda")
        opt.step()
        ops.adam_step(ours, [torch.tensor(g, device="cuda") for g in grads], m, v, step=step, lr=1e-2,
                      weight_decay=0.1, decoupled_weight_decay=True)
    for a, b in zip(ours, tp):
        assert_close(a.cpu().numpy(), b.detach().cpu().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.cuda
def test_cuda_errors(rng):
    import cupy as cp

    p = [cp.zeros(10, cp.float32)]
    with pytest.raises(TypeError, match="expected dtype float32"):
        ops.adam_step(p, [cp.zeros(10, cp.float64)], [cp.zeros(10, cp.float32)], [cp.zeros(10, cp.float32)],
                      step=1, lr=1e-3)
    with pytest.raises(ValueError, match="same device"):
        ops.sgd_step(p, [np.zeros(10, np.float32)], step=1, lr=0.1)
    with pytest.raises(ValueError, match="shape"):
        ops.sgd_step(p, [cp.zeros(11, cp.float32)], step=1, lr=0.1)


@pytest.mark.parametrize("kind", ["adamw", "sgd"])
def test_large_lists_with_mixed_alignment(rng, kind):
    """Lists past the last-level cache, as views at different offsets into one buffer: arrays whose
    misalignments differ, spread over both threads' ranges."""
    sizes = [700_001, 600_000, 5]
    arena = np.zeros(4 * sum(sizes) + 64, np.float32)
    offsets = iter(range(0, 10**9, 1))

    def views(shift):
        out, at = [], shift
        for n in sizes:
            out.append(arena[at:at + n])
            at += n + next(offsets) % 3
        return out

    params = views(1)
    for p in params:
        p[...] = rng.standard_normal(p.size)
    grads = make(rng, [(n,) for n in sizes])
    if kind == "adamw":
        m, v = views(sum(sizes) + 8), views(2 * sum(sizes) + 16)
        for a in m + v:
            a[...] = np.abs(rng.standard_normal(a.size))
        ref = [ref_adam(p, g, mi, vi, 3, 1e-2, 0.9, 0.999, 1e-8, 0.1, True, False)
               for p, g, mi, vi in zip(params, grads, m, v)]
        ops.adam_step(params, grads, m, v, step=3, lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)
        for got, want in zip(params + m + v, [r[0] for r in ref] + [r[1] for r in ref] + [r[2] for r in ref]):
            assert_close(got, want, rtol=1e-5, atol=1e-5)
    else:
        bufs = views(sum(sizes) + 3)
        for b in bufs:
            b[...] = rng.standard_normal(b.size)
        ref = [ref_sgd(p, g, b, 5, 0.1, 0.9, 0.0, False, 0.01, False) for p, g, b in zip(params, grads, bufs)]
        ops.sgd_step(params, grads, bufs, step=5, lr=0.1, momentum=0.9, weight_decay=0.01)
        for p, b, (rp, rb) in zip(params, bufs, ref):
            assert_close(p, rp)
            assert_close(b, rb)


# --- empty views and argument types -----------------------------------------------------------


@pytest.mark.parametrize("view", ["cols", "reversed_rows"])
def test_zero_size_views_are_updated_as_nothing(view):
    z = np.zeros((3, 5), np.float32)[:, :0] if view == "cols" else np.zeros((5, 3), np.float32)[::-1, :0]
    p = np.ones(4, np.float32)
    ops.adam_step([z, p], [z, p.copy()], [np.zeros_like(z), np.zeros(4, np.float32)],
                  [np.zeros_like(z), np.zeros(4, np.float32)], step=1, lr=0.1)
    assert p[0] != 1.0  # the non-empty tensor of the same call was updated
    ops.sgd_step([z], [z], [np.zeros_like(z)], step=1, lr=0.1, momentum=0.9)
    assert ops.clip_grad_norm([z], 1.0) == 0.0


@pytest.mark.parametrize("kwargs, error, fragment", [
    (dict(lr="0.1"), TypeError, "lr: expected a real number, got '0.1'"),
    (dict(lr=True), TypeError, "lr: expected a real number, got True"),
    (dict(lr=None), TypeError, "lr: expected a real number"),
    (dict(maximize="no"), TypeError, "maximize: expected True or False, got 'no'"),
    (dict(decoupled_weight_decay=2), TypeError, "decoupled_weight_decay: expected True or False"),
    (dict(step=2**63), ValueError, "step 9223372036854775808 is out of range"),
    (dict(step=1.0), TypeError, "step: expected an integer, got 1.0"),
])
def test_adam_argument_types(kwargs, error, fragment):
    p, g = np.ones(3, np.float32), np.ones(3, np.float32)
    args = dict(step=1, lr=0.1) | kwargs
    with pytest.raises(error, match=fragment):
        ops.adam_step(p, g, np.zeros(3, np.float32), np.zeros(3, np.float32), **args)


# --- subnormals ------------------------------------------------------------------------------------


def test_subnormals_are_flushed_in_the_kernels_only():
    tiny = np.float32(1e-39)  # subnormal
    p, g = np.ones(100, np.float32), np.zeros(100, np.float32)
    m, v = np.full(100, tiny), np.full(100, tiny)
    ops.adam_step(p, g, m, v, step=1, lr=0.1)
    assert (m == 0).all()  # 0.9 * subnormal, flushed
    # The caller's floating-point mode is restored: NumPy in this thread still keeps subnormals.
    assert np.float32(1e-39) * np.float32(1.0) != 0
    try:
        fusegrad.set_flush_denormal(False)
        m[:] = tiny
        ops.adam_step(p, g, m, np.full(100, tiny), step=1, lr=0.1)
        assert (m > 0).all()
    finally:
        fusegrad.set_flush_denormal(True)
    with pytest.raises(TypeError, match="mode must be True or False"):
        fusegrad.set_flush_denormal("no")
