"""Flat arenas: ops.flatten_params / group_by_dtype_device, and optimizers built with flat=True,
which must give exactly the numbers of the per-tensor path in every situation (intact arena, frozen
parameters, replaced or missing gradients, state_dict round trips between the two modes)."""
import numpy as np
import pytest

import fusegrad as fg
from fusegrad import models, nn, ops, optim
from fusegrad.train import Trainer

# --- flatten_params ---------------------------------------------------------------------------------

SHAPES = [(5,), (2, 3), (0, 4), (), (16,), (17,), (1,), (3, 0, 2), (4, 33)]


def padded(n, itemsize):
    quantum = 64 // itemsize
    return -(-n // quantum) * quantum


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_flatten_params_round_trip_layout_and_alignment(dtype, rng):
    arrays = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    arrays.append(rng.standard_normal((6, 5)).astype(dtype).T)  # non-contiguous input
    originals = [a.copy() for a in arrays]
    flat, views = ops.flatten_params(arrays)
    itemsize = np.dtype(dtype).itemsize
    assert flat.ndim == 1 and flat.dtype == dtype and flat.flags.c_contiguous
    assert flat.size == sum(padded(a.size, itemsize) for a in arrays)
    offset = 0
    for a, a0, v in zip(arrays, originals, views):
        assert v.shape == a.shape and v.dtype == a.dtype
        np.testing.assert_array_equal(v, a0)
        np.testing.assert_array_equal(a, a0)  # the input is copied, not moved
        if a.size:
            assert v.ctypes.data % 64 == 0
            assert v.ctypes.data == flat.ctypes.data + offset * itemsize
            assert np.shares_memory(v, flat) and not np.shares_memory(v, a)
            assert v.flags.c_contiguous
        # the padding after each piece is zero
        np.testing.assert_array_equal(flat[offset + a.size:offset + padded(a.size, itemsize)], 0)
        offset += padded(a.size, itemsize)
    # writes through a view land in the flat buffer and the other way round
    views[0][...] = 7
    np.testing.assert_array_equal(flat[:5], 7)
    flat[padded(5, itemsize):padded(5, itemsize) + 6] = -1
    np.testing.assert_array_equal(views[1], -np.ones((2, 3)))


def test_flatten_params_zeros_keeps_the_layout(rng):
    arrays = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    flat, views = ops.flatten_params(arrays)
    zflat, zviews = ops.flatten_params(arrays, zeros=True)
    assert zflat.shape == flat.shape
    np.testing.assert_array_equal(zflat, 0)
    for v, z in zip(views, zviews):
        assert z.shape == v.shape
        if v.size:
            assert z.ctypes.data - zflat.ctypes.data == v.ctypes.data - flat.ctypes.data


def test_flatten_params_empty_and_zero_size():
    flat, views = ops.flatten_params([])
    assert flat.size == 0 and views == []
    flat, views = ops.flatten_params([np.zeros((0, 3), np.float32), np.zeros(0, np.float32)])
    assert flat.size == 0 and [v.shape for v in views] == [(0, 3), (0,)]


def test_flatten_params_errors(rng):
    with pytest.raises(ValueError, match="one dtype on one device.*float32.*float64"):
        ops.flatten_params([np.zeros(3, np.float32), np.zeros(3, np.float64)])
    with pytest.raises(TypeError, match=r"arrays\[1\]: expected a NumPy or CuPy array, got list"):
        ops.flatten_params([np.zeros(3, np.float32), [1.0, 2.0]])
    with pytest.raises(TypeError, match="expected a NumPy or CuPy array"):
        ops.group_by_dtype_device([np.float32(1.0)])


def test_group_by_dtype_device():
    arrays = [np.zeros(2, np.float32), np.zeros(2, np.float64), np.zeros(1, np.float32), np.zeros((), np.int64)]
    groups = ops.group_by_dtype_device(arrays)
    assert groups == {(np.dtype(np.float32), "cpu"): [0, 2], (np.dtype(np.float64), "cpu"): [1],
                      (np.dtype(np.int64), "cpu"): [3]}
    assert ops.group_by_dtype_device([]) == {}


# --- optimizers with flat=True ---------------------------------------------------------------------

OPTIMIZERS = [
    (optim.SGD, dict(lr=0.1)),
    (optim.SGD, dict(lr=0.1, momentum=0.9)),
    (optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
    (optim.SGD, dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.01)),
    (optim.Adam, dict(lr=0.01, weight_decay=0.05)),
    (optim.AdamW, dict(lr=0.01, betas=(0.8, 0.99))),
]
IDS = ["sgd", "sgd_momentum", "sgd_nesterov", "sgd_wd_dampening", "adam_wd", "adamw"]


def make_model(seed=0):
    fg.manual_seed(seed)
    return models.mlp(12, (9, 7), 4)


def batches(n, seed=1):
    rng = np.random.default_rng(seed)
    return [(fg.tensor(rng.standard_normal((6, 12)).astype(np.float32)), rng.integers(0, 4, 6)) for _ in range(n)]


def train(model, opt, data, before_step=None, set_to_none=True):
    loss_fn = nn.CrossEntropyLoss()
    for i, (x, y) in enumerate(data):
        opt.zero_grad(set_to_none=set_to_none)
        loss_fn(model(x), y).backward()
        if before_step is not None:
            before_step(i)
        opt.step()


def params_of(model):
    return [p.numpy().copy() for p in model.parameters()]


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=0)


@pytest.fixture
def kernel_calls(monkeypatch):
    """Records the number of arrays of each optimizer kernel call."""
    calls = []
    for name in ("adam_step", "sgd_step"):
        real = getattr(ops, name)

        def wrapper(params, *args, _real=real, **kwargs):
            calls.append(len(params))
            return _real(params, *args, **kwargs)

        monkeypatch.setattr(ops, name, wrapper)
    return calls


@pytest.mark.parametrize("cls,kwargs", OPTIMIZERS, ids=IDS)
def test_flat_training_matches_per_tensor(cls, kwargs, kernel_calls):
    data = batches(6)
    ref = make_model()
    train(ref, cls(ref.parameters(), **kwargs), data)
    kernel_calls.clear()
    model = make_model()
    opt = cls(model.parameters(), flat=True, **kwargs)
    arena = opt._arenas[0][0]
    for p in model.parameters():  # the model now computes on views of the arena
        assert np.shares_memory(p.data, arena.data) and np.shares_memory(p.grad.data, arena.grad)
    train(model, opt, data)
    assert kernel_calls == [1] * len(data)  # one kernel call on the whole arena per step
    assert_same(params_of(model), params_of(ref))
    for p in model.parameters():
        state = opt.state[id(p)]
        assert state["step"] == len(data)
        for name in opt._state_names(opt.param_groups[0]):
            assert np.shares_memory(state[name], arena.state[name][0])


@pytest.mark.parametrize("cls,kwargs", OPTIMIZERS, ids=IDS)
def test_flat_padding_stays_zero(cls, kwargs):
    model = make_model()
    opt = cls(model.parameters(), flat=True, **kwargs)
    train(model, opt, batches(3))
    arena = opt._arenas[0][0]
    mask = np.ones(arena.data.size, bool)
    for v in arena.data_views:
        start = (v.ctypes.data - arena.data.ctypes.data) // 4
        mask[start:start + v.size] = False
    assert mask.any()  # the model's shapes leave padding
    for flat in [arena.data, arena.grad] + [f for f, _ in arena.state.values()]:
        np.testing.assert_array_equal(flat[mask], 0)


@pytest.mark.parametrize("cls,kwargs", [OPTIMIZERS[2], OPTIMIZERS[4]], ids=["sgd", "adam"])
def test_odd_shapes_and_zero_size_parameters(cls, kwargs, rng, kernel_calls):
    shapes = [(0,), (1,), (), (3, 0), (15,), (16,), (17,), (5, 7)]
    start = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(4)]
    ref = [nn.Parameter(a.copy()) for a in start]
    ref_opt = cls(ref, **kwargs)
    ours = [nn.Parameter(a.copy()) for a in start]
    opt = cls(ours, flat=True, **kwargs)
    kernel_calls.clear()
    for step_grads in grads:
        for r, p, g in zip(ref, ours, step_grads):
            r.grad = fg.tensor(g)
            p.grad.data[...] = g  # in place: the arena stays intact
        ref_opt.step()
        opt.step()
    assert kernel_calls == [len(shapes), 1] * len(grads)
    assert_same([p.numpy() for p in ours], [p.numpy() for p in ref])


def test_param_groups_each_get_an_arena(kernel_calls):
    data = batches(4)

    def groups(model):
        layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
        return [{"params": list(layers[0].parameters()), "lr": 0.05},
                {"params": [p for m in layers[1:] for p in m.parameters()]}]

    ref = make_model()
    train(ref, optim.Adam(groups(ref), lr=0.01), data)
    kernel_calls.clear()
    model = make_model()
    opt = optim.Adam(groups(model), lr=0.01, flat=True)
    assert [len(a) for a in opt._arenas] == [1, 1]
    train(model, opt, data)
    assert kernel_calls == [1, 1] * len(data)
    assert_same(params_of(model), params_of(ref))


def test_add_param_group_after_construction_is_flat(kernel_calls):
    model = make_model()
    first, *rest = [m for m in model.modules() if isinstance(m, nn.Linear)]
    opt = optim.SGD(first.parameters(), lr=0.1, momentum=0.9, flat=True)
    opt.add_param_group({"params": [p for m in rest for p in m.parameters()], "lr": 0.05})
    ref = make_model()
    ref_first, *ref_rest = [m for m in ref.modules() if isinstance(m, nn.Linear)]
    ref_opt = optim.SGD(ref_first.parameters(), lr=0.1, momentum=0.9)
    ref_opt.add_param_group({"params": [p for m in ref_rest for p in m.parameters()], "lr": 0.05})
    data = batches(3)
    train(ref, ref_opt, data)
    kernel_calls.clear()
    train(model, opt, data)
    assert kernel_calls == [1, 1] * len(data)
    assert_same(params_of(model), params_of(ref))


def test_frozen_at_construction_stays_out_of_the_arena(kernel_calls):
    data = batches(4)
    ref = make_model()
    ref[1].requires_grad_(False)
    train(ref, optim.AdamW(ref.parameters(), lr=0.01), data)
    model = make_model()
    model[1].requires_grad_(False)
    frozen_arrays = [p.data for p in model[1].parameters()]
    before = [a.copy() for a in frozen_arrays]
    opt = optim.AdamW(model.parameters(), lr=0.01, flat=True)
    arena = opt._arenas[0][0]
    assert len(arena.params) == 4 and all(id(p) not in opt.state for p in model[1].parameters())
    assert all(p.data is a for p, a in zip(model[1].parameters(), frozen_arrays))
    kernel_calls.clear()
    train(model, opt, data)
    assert kernel_calls == [1] * len(data)
    assert_same(params_of(model), params_of(ref))
    for p, b in zip(model[1].parameters(), before):
        np.testing.assert_array_equal(p.numpy(), b)
        assert p.grad is None  # zero_grad(set_to_none=True) still clears parameters outside the arena
    assert opt.state_dict()["state"].keys() == {2, 3, 4, 5}


@pytest.mark.parametrize("cls,kwargs", OPTIMIZERS[1:], ids=IDS[1:])
def test_frozen_after_construction_falls_back_then_matches(cls, kwargs, kernel_calls):
    data = batches(7)

    def freeze_and_thaw(model):
        def hook(i):
            if i == 2:
                model[3].requires_grad_(False)
            if i == 5:
                model[3].requires_grad_(True)
        return hook

    # A flat optimizer keeps zeroed grads where the per-tensor one (set_to_none) has None: after
    # the thaw, the parameter that got no gradient in that backward steps with a zero gradient, as
    # with zero_grad(set_to_none=False). That is the reference here.
    ref = make_model()
    train(ref, cls(ref.parameters(), **kwargs), data, freeze_and_thaw(ref), set_to_none=False)
    model = make_model()
    opt = cls(model.parameters(), flat=True, **kwargs)
    kernel_calls.clear()
    train(model, opt, data, freeze_and_thaw(model))
    assert kernel_calls[:2] == [1, 1]  # intact arena
    assert all(n > 1 for n in kernel_calls[2:])  # per tensor once a parameter left the arrangement
    assert_same(params_of(model), params_of(ref))
    steps = [opt.state[id(p)]["step"] for p in model.parameters()]
    assert steps == [7, 7, 4, 4, 7, 7]


def test_replaced_or_missing_grad_falls_back_and_zero_grad_restores(kernel_calls, rng):
    data = batches(4)
    extra = rng.standard_normal((4, 7)).astype(np.float32)

    def meddle(model):
        def hook(i):
            weights = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
            if i == 1:
                weights[2].grad = fg.tensor(weights[2].grad.numpy() + extra)  # a new Tensor
            if i == 2:
                weights[0].grad = None  # this parameter skips the step
        return hook

    ref = make_model()
    train(ref, optim.Adam(ref.parameters(), lr=0.01), data, meddle(ref))
    model = make_model()
    opt = optim.Adam(model.parameters(), lr=0.01, flat=True)
    kernel_calls.clear()
    train(model, opt, data, meddle(model))
    # step 1 replaced a grad: per tensor; step 2 skipped one parameter: per tensor; step 3: the step
    # counts differ since step 2, so the per-tensor path groups them by step count
    assert kernel_calls[0] == 1 and kernel_calls[1] == 6 and kernel_calls[2] == 5
    assert_same(params_of(model), params_of(ref))
    arena = opt._arenas[0][0]
    assert all(p.grad is g for p, g in zip(arena.params, arena.grads))  # zero_grad re-attached them


def test_rebound_data_takes_the_per_tensor_path(kernel_calls):
    data = batches(4)

    def rebind(model):
        def hook(i):
            if i == 2:
                w = model[1].weight
                w.data = w.data.copy()  # still on the CPU: a legal re-bind, no longer the arena's view
        return hook

    ref = make_model()
    train(ref, optim.SGD(ref.parameters(), lr=0.1, momentum=0.9), data, rebind(ref))
    model = make_model()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, flat=True)
    kernel_calls.clear()
    train(model, opt, data, rebind(model))
    assert kernel_calls == [1, 1, 6, 6]
    assert_same(params_of(model), params_of(ref))


def test_zero_grad_keeps_the_views():
    model = make_model()
    model[1].bias.requires_grad_(False)
    opt = optim.SGD(model.parameters(), lr=0.1, flat=True)
    arena = opt._arenas[0][0]
    grads = [p.grad for p in arena.params]
    train(model, opt, batches(1))
    model(batches(1, seed=5)[0][0]).sum().backward()
    assert np.abs(arena.grad).max() > 0
    for set_to_none in (True, False):
        opt.zero_grad(set_to_none=set_to_none)
        np.testing.assert_array_equal(arena.grad, 0)
        assert [p.grad for p in arena.params] == grads
        assert all(np.shares_memory(g.data, arena.grad) for g in grads)
    assert model[1].bias.grad is None  # frozen at construction: outside the arena, cleared as usual
    # Module.zero_grad sets grads to None; backward then makes new ones; the optimizer re-attaches
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    opt.zero_grad()
    assert [p.grad for p in arena.params] == grads


def test_grad_computed_before_construction_is_kept():
    model = make_model()
    x, _ = batches(1)[0]
    model(x).sum().backward()
    before = [p.grad.numpy().copy() for p in model.parameters()]
    opt = optim.SGD(model.parameters(), lr=0.1, flat=True)
    for p, g in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.grad.numpy(), g)
        assert np.shares_memory(p.grad.data, opt._arenas[0][0].grad)


@pytest.mark.parametrize("cls,kwargs", [OPTIMIZERS[2], OPTIMIZERS[4], OPTIMIZERS[5]], ids=["sgd", "adam", "adamw"])
@pytest.mark.parametrize("save_flat,load_flat", [(True, False), (False, True), (True, True)])
def test_state_dict_round_trip_between_modes(cls, kwargs, save_flat, load_flat, kernel_calls):
    data = batches(6)
    ref = make_model()
    ref_opt = cls(ref.parameters(), **kwargs)
    train(ref, ref_opt, data)

    first = make_model()
    first_opt = cls(first.parameters(), flat=save_flat, **kwargs)
    assert first_opt.state_dict()["state"] == {}  # a flat optimizer's unstepped states are left out
    train(first, first_opt, data[:3])
    saved = first_opt.state_dict()
    assert set(saved) == {"state", "param_groups"} and set(saved["state"]) == set(range(6))
    assert all(s["step"] == 3 for s in saved["state"].values())

    second = make_model()
    second.load_state_dict(first.state_dict())
    second_opt = cls(second.parameters(), flat=load_flat, **kwargs)
    second_opt.load_state_dict(saved)
    for p in second.parameters():  # state of the loaded optimizer: still the arena's views
        if load_flat:
            for name in second_opt._state_names(second_opt.param_groups[0]):
                assert np.shares_memory(second_opt.state[id(p)][name], second_opt._arenas[0][0].state[name][0])
    kernel_calls.clear()
    train(second, second_opt, data[3:])
    if load_flat:
        assert kernel_calls == [1, 1, 1]
    assert_same(params_of(second), params_of(ref))
    # a checkpoint of either mode has the same keys and shapes
    again = second_opt.state_dict()
    ref_saved = ref_opt.state_dict()
    assert again["param_groups"] == ref_saved["param_groups"]
    for k, s in ref_saved["state"].items():
        assert again["state"][k].keys() == s.keys()
        for name, v in s.items():
            np.testing.assert_allclose(again["state"][k][name], v, rtol=1e-6)
            if load_flat and name != "step":  # a checkpoint holds copies, not the arena's views
                assert not np.shares_memory(again["state"][k][name], second_opt._arenas[0][0].state[name][0])


def test_load_state_dict_fills_missing_states_with_zero():
    model = make_model()
    opt = optim.Adam(model.parameters(), lr=0.01, flat=True)
    train(model, opt, batches(2))
    empty = optim.Adam(make_model().parameters(), lr=0.01).state_dict()
    opt.load_state_dict(empty)
    arena = opt._arenas[0][0]
    for flat, _ in arena.state.values():
        np.testing.assert_array_equal(flat, 0)
    assert all(opt.state[id(p)]["step"] == 0 for p in model.parameters())
    assert opt.state_dict()["state"] == {}


def test_module_load_state_dict_keeps_the_views(kernel_calls):
    source = make_model(seed=3)
    model = make_model()
    opt = optim.AdamW(model.parameters(), lr=0.01, flat=True)
    views = [p.data for p in model.parameters()]
    model.load_state_dict(source.state_dict())
    assert all(p.data is v for p, v in zip(model.parameters(), views))
    assert_same(params_of(model), params_of(source))
    kernel_calls.clear()
    train(model, opt, batches(2))
    assert kernel_calls == [1, 1]


def test_save_and_load_a_flat_trained_model(tmp_path):
    model = make_model()
    opt = optim.Adam(model.parameters(), lr=0.01, flat=True)
    train(model, opt, batches(2))
    fg.save(model.state_dict(), tmp_path / "m.safetensors")
    other = make_model(seed=4)
    other.load_state_dict(fg.load(tmp_path / "m.safetensors"))
    assert_same(params_of(other), params_of(model))


def test_moving_parameters_off_their_arena_device_is_an_error():
    # No second device on a CPU-only machine: re-bind a parameter (what Module.to does) and tell the
    # arena it lives elsewhere, which is the state a CPU arena is in after model.to("cuda").
    model = make_model()
    opt = optim.SGD(model.parameters(), lr=0.1, flat=True)
    w = model[1].weight
    w.data = w.data.copy()
    opt._arenas[0][0].device = "cuda:0"
    with pytest.raises(RuntimeError, match=r"shape \(9, 12\) moved from cuda:0 to cpu.*build the optimizer after"):
        opt.zero_grad()
    with pytest.raises(RuntimeError, match="moved from cuda:0 to cpu"):
        opt.step()


def test_clip_grad_norm_on_flat_grads():
    x, y = batches(1)[0]
    norms, clipped = [], []
    for flat in (False, True):
        model = make_model()
        optim.SGD(model.parameters(), lr=0.1, flat=flat)
        nn.CrossEntropyLoss()(model(x), y).backward()
        norms.append(nn.utils.clip_grad_norm_(model.parameters(), 0.05))
        clipped.append([p.grad.numpy().copy() for p in model.parameters()])
    assert norms[0] == pytest.approx(norms[1], rel=1e-6) and norms[0] > 0.05
    assert_same(clipped[0], clipped[1])


def test_trainer_with_a_flat_optimizer():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((96, 12)).astype(np.float32)
    y = (x[:, :4].argmax(axis=1)).astype(np.int64)
    results = []
    for flat in (False, True):
        model = make_model()
        trainer = Trainer(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=0.02, flat=flat),
                          device="cpu", seed=0)
        history = trainer.fit(x, y, epochs=4, batch_size=16, verbose=0)
        results.append((params_of(model), history.history["loss"]))
    assert_same(results[0][0], results[1][0])
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-6)
    assert results[1][1][-1] < results[1][1][0]


# --- GPU -----------------------------------------------------------------------------------------


@pytest.mark.cuda
def test_flatten_params_cuda(rng):
    cp = pytest.importorskip("cupy")
    arrays = [cp.asarray(rng.standard_normal(s).astype(np.float32)) for s in SHAPES]
    flat, views = ops.flatten_params(arrays)
    assert isinstance(flat, cp.ndarray) and flat.size == sum(padded(a.size, 4) for a in arrays)
    for a, v in zip(arrays, views):
        assert isinstance(v, cp.ndarray) and v.shape == a.shape
        cp.testing.assert_array_equal(v, a)
        if v.size:
            assert v.data.ptr % 64 == 0
    with pytest.raises(ValueError, match="one dtype on one device"):
        ops.flatten_params([np.zeros(2, np.float32), cp.zeros(2, cp.float32)])


@pytest.mark.cuda
@pytest.mark.parametrize("cls,kwargs", OPTIMIZERS, ids=IDS)
def test_flat_training_matches_per_tensor_cuda(cls, kwargs, kernel_calls):
    data = [(x.to("cuda"), fg.tensor(y, device="cuda")) for x, y in batches(4)]
    ref = make_model().to("cuda")
    train(ref, cls(ref.parameters(), **kwargs), data)
    model = make_model().to("cuda")
    opt = cls(model.parameters(), flat=True, **kwargs)
    kernel_calls.clear()
    train(model, opt, data)
    assert kernel_calls == [1] * len(data)
    assert_same(params_of(model), params_of(ref))
    # moving the model away from its arena is refused with a clear error
    model.to("cpu")
    with pytest.raises(RuntimeError, match="moved from cuda:0 to cpu.*build the optimizer after moving"):
        opt.zero_grad()
    with pytest.raises(RuntimeError, match="moved from cuda:0 to cpu"):
        opt.step()
