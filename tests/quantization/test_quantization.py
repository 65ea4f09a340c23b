"""fusegrad.quantization and nn.quantized: int8 models against a float64 simulation of the same
integer arithmetic, against the float model they came from, and their save/load round trip."""
import numpy as np
import pytest

import fusegrad as fg
from fusegrad import models, nn, optim, quantization
from fusegrad.nn import quantized as nnq


def _images(n, side=8, channels=4, seed=0):
    return np.random.default_rng(seed).random((n, side, side, channels), dtype=np.float32)


def _calibrated(model, batches):
    prepared = quantization.prepare(model.eval())
    for x in batches:
        prepared(x)
    return prepared


# -- the quantization arithmetic ------------------------------------------------------------------

@pytest.mark.parametrize("low,high", [(0.0, 1.0), (-1.0, 3.0), (0.5, 2.0), (-2.0, -0.5), (0.0, 0.0)])
def test_choose_qparams_represents_zero_and_the_range(low, high):
    scale, zp = nnq.choose_qparams(low, high)
    assert 0 <= zp <= 255 and scale > 0
    assert nnq.quantize(np.float32([0.0]), scale, zp)[0] == zp  # real 0 is exact (padding, ReLU)
    if high > low:
        q = nnq.quantize(np.float32([low, high]), scale, zp).astype(np.int64)
        assert np.allclose((q - zp) * scale, [low, high], atol=scale / 2 + 1e-7)


def test_quantize_rounds_half_to_even_and_saturates():
    q = nnq.quantize(np.float32([0.5, 1.5, 2.5, -3.0, 1000.0]), 1.0, 0)
    assert q.tolist() == [0, 2, 2, 0, 255]


def test_choose_qparams_rejects_infinite_ranges():
    with pytest.raises(ValueError, match="not finite"):
        nnq.choose_qparams(0.0, np.inf)


def test_quantize_weight_is_symmetric_per_output_channel():
    w = np.random.default_rng(1).standard_normal((3, 3, 4, 5)).astype(np.float32)
    w[..., 2] = 0.0
    q, scale = nnq.quantize_weight(w, channel_axis=3)
    assert q.dtype == np.int8 and scale.shape == (5,)
    assert np.abs(q).max(axis=(0, 1, 2)).tolist() == [127, 127, 0, 127, 127]
    assert np.allclose(q * scale, w, atol=scale.max() / 2 + 1e-7)


# -- static quantization: structure and numbers ----------------------------------------------------

def test_convert_fuses_relu_and_chains_uint8_between_int8_layers():
    fg.manual_seed(0)
    q = quantization.convert(_calibrated(models.digits_cnn(channels=4), [_images(16)]))
    kinds = [type(m).__name__ for m in q]
    assert kinds == ["Conv2d", "Identity", "MaxPool2d", "Conv2d", "Identity", "MaxPool2d", "Flatten", "Linear",
                     "Identity", "Linear"]
    assert all(isinstance(m, (nnq.Conv2d, nnq.Linear)) for m in (q[0], q[3], q[7], q[9]))
    assert [q[i].quantized_output for i in (0, 3, 7, 9)] == [True, True, True, False]
    assert [q[i].activation for i in (0, 3, 7, 9)] == ["relu", "relu", "relu", None]
    assert not q.training
    out = q(_images(4, seed=3))
    assert isinstance(out, fg.Tensor) and out.dtype == np.float32 and out.shape == (4, 10)


def _simulate(model, x, layers):
    """The converted model's arithmetic in float64: each int8 layer computes
    a_scale·w_scale·Σ(q_a − zp)·q_w + bias exactly, then ReLU and (when chained) requantizes."""
    cur = None
    for m in layers:
        if isinstance(m, (nnq.Conv2d, nnq.Linear)):
            if cur is None:
                cur = (nnq.quantize(x, float(m.input_scale.data[0]), int(m.input_zero_point.data[0])),
                       float(m.input_scale.data[0]), int(m.input_zero_point.data[0]))
            q, s, zp = cur
            a = (q.astype(np.float64) - zp)
            w = m.weight.data.astype(np.float64)
            if isinstance(m, nnq.Conv2d):
                torch_like = _conv_nhwc(a, w, m.padding)
            else:
                torch_like = a.reshape(a.shape[0], -1) @ w.T
            y = torch_like * s * m.weight_scale.data.astype(np.float64)
            if m.bias is not None:
                y = y + m.bias.data
            if m.activation == "relu":
                y = np.maximum(y, 0)
            if m.quantized_output:
                os_, ozp = float(m.output_scale.data[0]), int(m.output_zero_point.data[0])
                cur = (np.clip(np.rint(y / os_) + ozp, 0, 255).astype(np.uint8), os_, ozp)
            else:
                return y
        elif isinstance(m, nnq.MaxPool2d):
            q, s, zp = cur
            n, h, w_, c = q.shape
            cur = (q[:, :h // 2 * 2, :w_ // 2 * 2].reshape(n, h // 2, 2, w_ // 2, 2, c).max(axis=(2, 4)), s, zp)
        elif isinstance(m, nn.Flatten):
            q, s, zp = cur
            cur = (q.reshape(q.shape[0], -1), s, zp)
    raise AssertionError("the model has no float output")


def _conv_nhwc(a, w, padding):
    p = padding if isinstance(padding, int) else padding[0]
    a = np.pad(a, ((0, 0), (p, p), (p, p), (0, 0)))  # a is already q − zp: padding means real 0
    kh, kw = w.shape[:2]
    oh, ow = a.shape[1] - kh + 1, a.shape[2] - kw + 1
    out = np.zeros((a.shape[0], oh, ow, w.shape[3]))
    for i in range(kh):
        for j in range(kw):
            out += a[:, i:i + oh, j:j + ow, :] @ w[i, j]
    return out


def test_static_int8_model_matches_a_simulation_of_its_integer_arithmetic():
    fg.manual_seed(1)
    q = quantization.convert(_calibrated(models.digits_cnn(channels=4), [_images(32, seed=s) for s in range(2)]))
    x = _images(8, seed=5)
    expected = _simulate(q, x, list(q))
    got = q(x).numpy()
    # Requantized uint8 may differ by one step where a value sits on a rounding tie; through two
    # more layers that is well below one output-scale step of the logits.
    assert np.abs(got - expected).max() <= 0.02 * np.abs(expected).max() + 1e-4


def test_static_int8_model_is_close_to_the_float_model():
    fg.manual_seed(2)
    model = models.digits_cnn(channels=4).eval()
    q = quantization.convert(_calibrated(model, [_images(64, seed=s) for s in range(3)]))
    x = _images(16, seed=9)
    ref, got = model(x).numpy(), q(x).numpy()
    assert np.abs(got - ref).max() <= 0.05 * np.abs(ref).max()


def test_layers_outside_a_sequential_quantize_their_own_input_and_return_float():
    class TwoLayers(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(48, 40), nn.Linear(40, 3)

        def forward(self, x):
            return self.b(self.a(x).tanh())

    fg.manual_seed(3)
    model = TwoLayers()
    x = np.random.default_rng(0).standard_normal((10, 48)).astype(np.float32)
    q = quantization.convert(_calibrated(model, [x]))
    assert isinstance(q.a, nnq.Linear) and not q.a.quantized_output
    assert np.abs(q(x).numpy() - model(x).numpy()).max() < 0.05


def test_layers_the_int8_kernels_cannot_run_stay_float():
    model = nn.Sequential(nn.Linear(40, 40, activation="tanh"), nn.Linear(40, 2), nn.Linear(2, 2))
    q = quantization.convert(_calibrated(model, [np.ones((2, 40), np.float32)]))
    assert type(q[0]) is nn.Linear and isinstance(q[1], nnq.Linear)
    assert type(q[2]) is nn.Linear  # two terms per output: nothing for int8 to speed up


def test_a_shallow_first_conv_stays_float_and_the_next_layer_quantizes_its_output():
    fg.manual_seed(7)
    model = models.digits_cnn(channels=1).eval()  # first conv: 3·3·1 = 9 terms per output
    q = quantization.convert(_calibrated(model, [_images(32, channels=1)]))
    assert type(q[0]) is nn.Conv2d and type(q[1]) is nn.ReLU and type(q[2]) is nn.MaxPool2d
    assert isinstance(q[3], nnq.Conv2d) and q[3].quantized_output
    x = _images(8, channels=1, seed=4)
    ref = model(x).numpy()
    assert np.abs(q(x).numpy() - ref).max() <= 0.05 * np.abs(ref).max()


def test_trained_digits_cnn_keeps_its_accuracy_in_int8():
    pytest.importorskip("sklearn")
    from fusegrad.data import load_digits

    (xtr, ytr), (xte, yte) = load_digits()
    fg.manual_seed(0)
    model = models.digits_cnn()
    opt = optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(6):
        for i in range(0, len(xtr), 64):
            opt.zero_grad()
            loss_fn(model(xtr[i:i + 64]), ytr[i:i + 64]).backward()
            opt.step()
    model.eval()
    with fg.no_grad():
        float_acc = (model(xte).numpy().argmax(1) == yte).mean()
    q = quantization.convert(_calibrated(model, [xtr[:512]]))
    int8_acc = (q(xte).numpy().argmax(1) == yte).mean()
    assert float_acc > 0.9
    assert int8_acc >= float_acc - 0.01


def test_save_and_load_a_quantized_model(tmp_path):
    fg.manual_seed(4)
    q = quantization.convert(_calibrated(models.digits_cnn(channels=4), [_images(16)]))
    path = tmp_path / "q.safetensors"
    fg.save(q.state_dict(), path)
    state = fg.load(path)
    assert state["0.weight"].dtype == np.int8 and "0.weight_scale" in state and "0.output_zero_point" in state
    fresh = quantization.convert(quantization.prepare(models.digits_cnn(channels=4)), calibrated=False)
    fresh.load_state_dict(state)
    x = _images(5, seed=7)
    assert np.array_equal(fresh(x).numpy(), q(x).numpy())


def test_prepare_leaves_the_model_alone_and_convert_leaves_the_prepared_one():
    model = models.digits_cnn(channels=4)
    prepared = quantization.prepare(model)
    assert not model[0]._forward_pre_hooks and prepared[0]._forward_pre_hooks
    prepared(_images(4))
    quantization.convert(prepared)
    assert isinstance(prepared[0], nn.Conv2d) and prepared[0]._forward_pre_hooks


def test_convert_errors():
    with pytest.raises(ValueError, match="no observers"):
        quantization.convert(models.digits_cnn(channels=4))
    with pytest.raises(ValueError, match="saw no data"):
        quantization.convert(quantization.prepare(models.digits_cnn(channels=4)))
    with pytest.raises(TypeError, match="nn.Module"):
        quantization.prepare(np.zeros(3))


# -- dynamic quantization -------------------------------------------------------------------------

def test_quantize_dynamic_replaces_linear_layers_and_stays_close():
    fg.manual_seed(5)
    model = models.mlp(64, (32, 16), 10)
    q = quantization.quantize_dynamic(model, {nn.Linear})
    assert [type(m) for m in q if "Linear" in type(m).__name__] == [nnq.dynamic.Linear] * 3
    assert type(model[1]) is nn.Linear  # a copy unless inplace=True
    x = np.random.default_rng(1).standard_normal((20, 64)).astype(np.float32)
    ref = model(x).numpy()
    assert np.abs(q(x).numpy() - ref).max() <= 0.03 * np.abs(ref).max()


def test_quantize_dynamic_by_name_and_errors():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    q = quantization.quantize_dynamic(model, {"1"})
    assert type(q[0]) is nn.Linear and isinstance(q[1], nnq.DynamicLinear)
    with pytest.raises(ValueError, match="dtype"):
        quantization.quantize_dynamic(model, dtype="int4")
    with pytest.raises(ValueError, match="only nn.Linear"):
        quantization.quantize_dynamic(model, {nn.Conv2d})


def test_modules_with_forward_hooks_are_not_fused():
    seen = []
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2))
    model[0].register_forward_hook(lambda m, args, out: seen.append(out.shape))
    model(_images(1, channels=1))
    assert seen == [(1, 6, 6, 2)]


def test_quantized_models_copy_and_pickle():
    import copy
    import pickle

    fg.manual_seed(6)
    q = quantization.convert(_calibrated(models.digits_cnn(channels=4), [_images(8)]))
    x = _images(3, seed=2)
    expected = q(x).numpy()  # packs the weights
    for clone in (copy.deepcopy(q), pickle.loads(pickle.dumps(q))):
        assert np.array_equal(clone(x).numpy(), expected)
    dynamic = quantization.quantize_dynamic(models.mlp(256, (16,), 10))
    dynamic(x.reshape(3, 256))
    assert np.array_equal(copy.deepcopy(dynamic)(x.reshape(3, 256)).numpy(), dynamic(x.reshape(3, 256)).numpy())


# -- on a CUDA device ------------------------------------------------------------------------------

@pytest.mark.cuda_emulated
def test_static_and_dynamic_int8_models_run_on_the_emulated_gpu():
    """model.to("cuda") moves the int8 weights and quantization parameters; the layers repack the
    weight for the device and run the CUDA int8 kernels, giving the CPU's outputs (requantized
    values may differ by one step next to a rounding tie). (The CPU runs outside emulate(), where
    NumPy arrays take the CPU kernels.)"""
    fg.manual_seed(2)
    model = models.digits_cnn(channels=4).eval()
    q = quantization.convert(_calibrated(model, [_images(64, seed=s) for s in range(3)]))
    dq = quantization.quantize_dynamic(nn.Sequential(nn.Linear(256, 32), nn.ReLU(), nn.Linear(32, 10)))
    x = _images(16, seed=9)
    cpu_out, cpu_dyn = q(x).numpy(), dq(x.reshape(16, -1)).numpy()  # also packs the weights for the CPU
    with fg.cuda.emulate() as emu:
        q.to("cuda")
        dq.to("cuda")
        xd = fg.tensor(x, device="cuda")
        got = q(xd)  # packs each weight with its scales and bias for the device, reading them once
        assert got.device == "cuda:0"
        kernels = emu.kernels()
        for name in ("quantize_uint8_kernel", "int8_im2col_kernel", "max_forward_int8_kernel"):
            assert any(name in k for k in kernels), f"{name} not in {kernels}"
        with pytest.MonkeyPatch.context() as m:  # later calls wait for nothing on the device
            m.setattr(fg._backend, "to_host", lambda a: pytest.fail("a device array was read back"))
            again = q(xd)
        got_dyn = dq(fg.tensor(x.reshape(16, -1), device="cuda"))
        got, got_dyn = got.numpy(), got_dyn.numpy()
    np.testing.assert_array_equal(again.numpy(), got)
    assert np.abs(got - cpu_out).max() <= 0.02 * np.abs(cpu_out).max()
    np.testing.assert_allclose(got_dyn, cpu_dyn, rtol=1e-5, atol=1e-5 * np.abs(cpu_dyn).max())
