"""fusegrad.autocast: the state (per thread, nested, decorator, enabled=False), what runs in bf16
under it (MatMul, Linear, Conv2d and its fused/transposed forms, forward and backward), that
parameters and gradients stay fp32, and that a model trains under it to a loss close to fp32's."""
import threading

import numpy as np
import pytest

import fusegrad as fg
import fusegrad.ops as ops
from fusegrad import nn, optim
from fusegrad.autograd.autocast import conv_precision, gemm_precision
from fusegrad.nn import functional as F


def test_state_nests_and_restores():
    assert gemm_precision("cpu") == "fp32" and not fg.is_autocast_enabled("cpu")
    with fg.autocast("cpu"):
        assert gemm_precision("cpu") == "bf16" and conv_precision("cpu") == "bf16"
        assert gemm_precision("cuda:0") == "fp32"  # per device kind
        with fg.autocast("cpu", enabled=False):
            assert gemm_precision("cpu") == "fp32" and not fg.is_autocast_enabled("cpu")
            with fg.autocast("cpu", dtype="bfloat16"):
                assert gemm_precision("cpu") == "bf16"
            assert gemm_precision("cpu") == "fp32"
        assert fg.is_autocast_enabled("cpu")
    assert gemm_precision("cpu") == "fp32"
    with fg.autocast("cuda"):
        assert gemm_precision("cuda:0") == "bf16" and conv_precision("cuda:0") == "fp32"  # CUDA convs are fp32
        assert gemm_precision("cpu") == "fp32"
    # An exception leaves the state as it was.
    with pytest.raises(RuntimeError):
        with fg.autocast("cpu"):
            raise RuntimeError("boom")
    assert gemm_precision("cpu") == "fp32"


def test_one_instance_reentered_and_as_a_decorator():
    ac = fg.autocast("cpu")
    with ac:
        with fg.autocast("cpu", enabled=False):
            with ac:
                assert gemm_precision("cpu") == "bf16"
            assert gemm_precision("cpu") == "fp32"
        assert gemm_precision("cpu") == "bf16"
    assert gemm_precision("cpu") == "fp32"

    @fg.autocast("cpu")
    def inside():
        return gemm_precision("cpu")

    assert inside() == "bf16" and gemm_precision("cpu") == "fp32"


def test_state_is_per_thread():
    seen = []
    with fg.autocast("cpu"):
        t = threading.Thread(target=lambda: seen.append(gemm_precision("cpu")))
        t.start()
        t.join()
        assert gemm_precision("cpu") == "bf16"
    assert seen == ["fp32"]


def test_errors():
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda'"):
        fg.autocast("tpu")
    with pytest.raises(ValueError, match="dtype must be 'bf16'"):
        fg.autocast("cpu", dtype="fp16")
    with pytest.raises(TypeError, match="enabled must be True or False"):
        fg.autocast("cpu", enabled="yes")


def _linear_case(rng):
    x = rng.standard_normal((13, 40)).astype(np.float32)
    w = rng.standard_normal((24, 40)).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    g = rng.standard_normal((13, 24)).astype(np.float32)
    return x, w, b, g


@pytest.mark.parametrize("activation", [None, "relu"])
def test_linear_runs_its_three_products_in_bf16(bf16_path, rng, activation):
    x, w, b, g = _linear_case(rng)
    xt, wt, bt = fg.tensor(x, requires_grad=True), fg.tensor(w, requires_grad=True), fg.tensor(b, requires_grad=True)
    with fg.autocast("cpu"):
        y = F.linear(xt, wt, bt, activation=activation)
    y.backward(fg.tensor(g))  # outside the context: backward repeats forward's precision
    ref = ops.matmul(x, w.T, bias=b, activation=activation, precision="bf16")
    np.testing.assert_array_equal(y.numpy(), ref)
    gy = g * (ref > 0) if activation else g
    np.testing.assert_array_equal(xt.grad.numpy(), ops.matmul(gy, w, precision="bf16"))
    np.testing.assert_array_equal(wt.grad.numpy(), ops.matmul(gy.T, x, precision="bf16"))
    assert y.dtype == np.float32 and all(t.grad.dtype == np.float32 for t in (xt, wt, bt))
    # ... and differ from fp32 (the rounding is real).
    assert not np.array_equal(ref, ops.matmul(x, w.T, bias=b, activation=activation))


def test_matmul_operator_forward_and_backward(rng):
    a = rng.standard_normal((3, 9, 20)).astype(np.float32)
    b = rng.standard_normal((20, 7)).astype(np.float32)
    at, bt = fg.tensor(a, requires_grad=True), fg.tensor(b, requires_grad=True)
    with fg.autocast("cpu"):
        y = at @ bt
        g = np.ones(y.shape, np.float32)
        y.backward(fg.tensor(g))
    np.testing.assert_array_equal(y.numpy(), ops.matmul(a, b, precision="bf16"))
    np.testing.assert_array_equal(at.grad.numpy(), ops.matmul(g, np.ascontiguousarray(b.T), precision="bf16"))
    with fg.autocast("cpu", enabled=False):
        np.testing.assert_array_equal((at @ bt).numpy(), ops.matmul(a, b))


def test_conv_forward_and_backward_in_bf16(rng):
    x = rng.standard_normal((2, 8, 8, 3)).astype(np.float32)
    w = rng.standard_normal((3, 3, 3, 6)).astype(np.float32)
    g = rng.standard_normal((2, 8, 8, 6)).astype(np.float32)
    xt, wt = fg.tensor(x, requires_grad=True), fg.tensor(w, requires_grad=True)
    with fg.autocast("cpu"):
        y = F.conv2d(xt, wt, padding=1)
    y.backward(fg.tensor(g))
    np.testing.assert_array_equal(y.numpy(), ops.conv2d(x, w, padding=1, precision="bf16"))
    np.testing.assert_array_equal(xt.grad.numpy(), ops.conv2d_backward_input(g, w, x.shape, padding=1, precision="bf16"))
    np.testing.assert_array_equal(wt.grad.numpy(), ops.conv2d_backward_weight(x, g, w.shape, padding=1, precision="bf16"))
    assert xt.grad.dtype == np.float32 and wt.grad.dtype == np.float32


def test_fused_conv_relu_pool_under_autocast(rng):
    x = rng.standard_normal((2, 8, 8, 3)).astype(np.float32)
    w = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    xt, wt, bt = (fg.tensor(a, requires_grad=True) for a in (x, w, b))
    with fg.autocast("cpu"):
        y = F.conv2d_max_pool2d(xt, wt, bt, padding=1, pool=2, activation="relu")
    ref = ops.max_pool2d(np.maximum(ops.conv2d(x, w, b, padding=1, precision="bf16"), 0), 2)
    np.testing.assert_array_equal(y.numpy(), ref)
    y.sum().backward()
    assert wt.grad.dtype == np.float32 and np.isfinite(wt.grad.numpy()).all()


def _train(model, x, y, steps, cast):
    opt = optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        with fg.autocast("cpu", enabled=cast):
            loss = F.cross_entropy(model(fg.tensor(x)), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.item()))
    return losses


def test_mlp_trains_under_autocast_like_fp32(rng):
    x = rng.standard_normal((256, 20)).astype(np.float32)
    w_true = rng.standard_normal((20, 4)).astype(np.float32)
    y = np.argmax(x @ w_true, axis=1)
    losses = {}
    for cast in (False, True):
        fg.manual_seed(0)
        model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 4))
        losses[cast] = _train(model, x, y, 60, cast)
        for p in model.parameters():
            assert p.dtype == np.float32 and p.grad.dtype == np.float32
    assert losses[True][-1] < 0.25 * losses[True][0]
    assert abs(losses[True][-1] - losses[False][-1]) < 0.05 + 0.2 * losses[False][-1]
    assert losses[True] != losses[False]  # the products really ran in bf16


def test_cnn_trains_under_autocast(rng):
    x = rng.standard_normal((64, 8, 8, 1)).astype(np.float32)
    y = (x[:, :4].mean(axis=(1, 2, 3)) > x[:, 4:].mean(axis=(1, 2, 3))).astype(np.int64)
    fg.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(128, 2))
    losses = _train(model, x, y, 40, True)
    assert losses[-1] < 0.5 * losses[0]
    assert all(p.grad.dtype == np.float32 for p in model.parameters())


def test_matches_torch_autocast_linear(rng):
    torch = pytest.importorskip("torch")
    x, w, b, _ = _linear_case(rng)
    with fg.autocast("cpu"):
        ours = F.linear(fg.tensor(x), fg.tensor(w), fg.tensor(b)).numpy()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        theirs = torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b))
    # torch rounds its output to bf16; ours is fp32 of the same products.
    np.testing.assert_allclose(ours, theirs.float().numpy(), rtol=2.0**-7, atol=2e-2)
