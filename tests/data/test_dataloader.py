"""DataLoader, datasets, augmentations and the bundled digits."""
import numpy as np
import pytest

import fusegrad as fg
from fusegrad.data import (
    Compose,
    DataLoader,
    Dataset,
    Normalize,
    RandomFlip,
    RandomRotation,
    RandomShift,
    TensorDataset,
    load_digits,
)


class Squares(Dataset):
    """A plain map-style dataset (no get_batch): sample i is (an array filled with i, i*i)."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return np.full((2, 3), i, np.float32), np.int64(i * i)


@pytest.mark.parametrize("n,batch,drop_last", [(0, 4, False), (1, 4, False), (13, 4, False), (13, 4, True),
                                               (12, 4, True), (7, 7, False), (7, 8, True), (97, 1, False)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_every_sample_once_per_epoch(n, batch, drop_last, shuffle):
    x = np.arange(n, dtype=np.float32).reshape(n, 1) * np.ones((1, 3), np.float32)
    y = np.arange(n)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=shuffle, drop_last=drop_last, seed=3)
    expected_batches = n // batch if drop_last else -(-n // batch)
    assert len(loader) == expected_batches
    for _ in range(2):
        seen = []
        batches = list(loader)
        assert len(batches) == expected_batches
        for xb, yb in batches:
            assert xb.shape == (batch if drop_last else xb.shape[0], 3) and xb.shape[0] <= batch
            np.testing.assert_array_equal(xb[:, 0], yb)  # rows stay paired with their labels
            seen += yb.tolist()
        if drop_last:
            assert len(seen) == expected_batches * batch and len(set(seen)) == len(seen)
        else:
            assert sorted(seen) == list(range(n))
        if not shuffle:
            assert seen == list(range(len(seen)))


def test_shuffle_is_reproducible_and_changes_per_epoch():
    data = TensorDataset(np.arange(50))
    a = DataLoader(data, batch_size=50, shuffle=True, seed=7)
    b = DataLoader(data, batch_size=50, shuffle=True, seed=7)
    c = DataLoader(data, batch_size=50, shuffle=True, seed=8)
    e0a, e1a = next(iter(a)), next(iter(a))
    e0b = next(iter(b))
    np.testing.assert_array_equal(e0a, e0b)
    assert not np.array_equal(e0a, e1a)
    assert not np.array_equal(e0a, next(iter(c)))
    b.set_epoch(1)  # jumping to an epoch gives exactly that epoch's order
    np.testing.assert_array_equal(next(iter(b)), e1a)
    assert a.state_dict() == {"seed": 7, "epoch": 2}
    d = DataLoader(data, batch_size=50, shuffle=True, seed=0)
    d.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(next(iter(d)), next(iter(a)))


def test_seed_none_follows_manual_seed():
    data = TensorDataset(np.arange(20))
    fg.manual_seed(5)
    first = next(iter(DataLoader(data, batch_size=20, shuffle=True)))
    fg.manual_seed(5)
    np.testing.assert_array_equal(next(iter(DataLoader(data, batch_size=20, shuffle=True))), first)


def test_map_style_dataset_is_collated():
    loader = DataLoader(Squares(5), batch_size=2)
    batches = list(loader)
    assert [b[0].shape for b in batches] == [(2, 2, 3), (2, 2, 3), (1, 2, 3)]
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), [0, 1, 4, 9, 16])
    np.testing.assert_array_equal(batches[2][0], np.full((1, 2, 3), 4, np.float32))


def test_tensor_dataset_accepts_tensors_and_indexes():
    ds = TensorDataset(fg.tensor(np.arange(6.0).reshape(3, 2)), np.array([1, 2, 3]))
    x1, y1 = ds[1]
    np.testing.assert_array_equal(x1, [2.0, 3.0])
    assert y1 == 2 and len(ds) == 3


def test_transform_applies_to_inputs_with_the_epoch_generator():
    calls = []

    def transform(x, rng):
        calls.append(rng.integers(1000))
        return x * 2

    x = np.ones((6, 2, 2, 1), np.float32)
    loader = DataLoader(TensorDataset(x, np.arange(6)), batch_size=4, transform=transform, seed=1)
    (xb, yb), (xb2, _) = list(loader)
    np.testing.assert_array_equal(xb, 2 * np.ones((4, 2, 2, 1)))
    np.testing.assert_array_equal(yb, [0, 1, 2, 3])
    loader.set_epoch(0)
    first = list(calls)
    list(loader)
    assert calls[2:] == first  # the same epoch draws the same augmentation


def test_dataloader_errors():
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(TensorDataset(np.arange(3)), batch_size=0)
    with pytest.raises(TypeError, match="Dataset"):
        DataLoader(np.arange(3))
    with pytest.raises(TypeError, match="transform"):
        DataLoader(TensorDataset(np.arange(3)), transform=3)
    with pytest.raises(ValueError, match="differ in length"):
        TensorDataset(np.arange(3), np.arange(4))
    with pytest.raises(ValueError, match="0-d"):
        TensorDataset(np.float32(1))
    with pytest.raises(ValueError, match="epoch"):
        DataLoader(TensorDataset(np.arange(3))).set_epoch(-1)


# --- augmentations ------------------------------------------------------------------------------


def images(rng, n=5, h=7, w=6, c=2):
    return rng.random((n, h, w, c), dtype=np.float32)


class FixedRng:
    """Stands in for a Generator to force chosen parameters."""

    def __init__(self, integers=None, uniform=None, random=None):
        self._integers, self._uniform, self._random = list(integers or []), uniform, random

    def integers(self, lo, hi, n):
        return np.asarray(self._integers.pop(0))

    def uniform(self, lo, hi, n):
        return np.asarray(self._uniform, np.float64)

    def random(self, n):
        return np.asarray(self._random, np.float64)


def shift_reference(img, dy, dx, fill):
    h, w, _ = img.shape
    out = np.full_like(img, fill)
    for i in range(h):
        for j in range(w):
            si, sj = i - dy, j - dx
            if 0 <= si < h and 0 <= sj < w:
                out[i, j] = img[si, sj]
    return out


def test_random_shift_matches_a_plain_loop(rng):
    x = images(rng)
    dy, dx = [-2, 0, 1, 2, -1], [1, -2, 0, 2, 0]
    out = RandomShift(2, fill=0.5)(x, FixedRng(integers=[dy, dx]))
    assert out.shape == x.shape and out.dtype == np.float32
    for k in range(len(x)):
        np.testing.assert_array_equal(out[k], shift_reference(x[k], dy[k], dx[k], 0.5))


def test_random_flip(rng):
    x = images(rng, n=4)
    out = RandomFlip(horizontal=True, p=0.5)(x, FixedRng(random=[0.1, 0.9, 0.4, 0.6]))
    np.testing.assert_array_equal(out[0], x[0, :, ::-1])
    np.testing.assert_array_equal(out[1], x[1])
    np.testing.assert_array_equal(out[2], x[2, :, ::-1])
    np.testing.assert_array_equal(out[3], x[3])
    both = RandomFlip(horizontal=False, vertical=True, p=1.0)(x, np.random.default_rng(0))
    np.testing.assert_array_equal(both, x[:, ::-1])


def test_random_rotation_quarter_turn_and_identity(rng):
    x = images(rng, n=3, h=5, w=5, c=1)
    same = RandomRotation(30)(x, FixedRng(uniform=[0.0, 0.0, 0.0]))
    np.testing.assert_allclose(same, x, atol=1e-6)
    quarter = RandomRotation(90)(x, FixedRng(uniform=[90.0, -90.0, 180.0]))
    # A square image turned by exactly 90 degrees about its centre is np.rot90 (positive: counter-clockwise).
    np.testing.assert_allclose(quarter[0], np.rot90(x[0], 1), atol=1e-5)
    np.testing.assert_allclose(quarter[1], np.rot90(x[1], -1), atol=1e-5)
    np.testing.assert_allclose(quarter[2], np.rot90(x[2], 2), atol=1e-5)


def test_random_rotation_fills_the_corners():
    x = np.ones((1, 9, 9, 1), np.float32)
    out = RandomRotation(45, fill=0.0)(x, FixedRng(uniform=[45.0]))
    assert out[0, 0, 0, 0] == 0.0 and out[0, 4, 4, 0] == pytest.approx(1.0)


def test_normalize_and_compose(rng):
    x = images(rng, c=3)
    mean, std = [0.1, 0.2, 0.3], [0.5, 1.0, 2.0]
    out = Normalize(mean, std)(x)
    np.testing.assert_allclose(out, (x.astype(np.float64) - mean) / std, rtol=1e-6, atol=1e-6)
    both = Compose([Normalize(mean, std), RandomFlip(p=1.0)])(x, np.random.default_rng(0))
    np.testing.assert_allclose(both, out[:, :, ::-1], rtol=1e-6)


def test_transforms_are_seeded(rng):
    x = images(rng)
    a = Compose([RandomShift(2, seed=4), RandomRotation(15, seed=4), RandomFlip(seed=4)])
    b = Compose([RandomShift(2, seed=4), RandomRotation(15, seed=4), RandomFlip(seed=4)])
    np.testing.assert_array_equal(a(x), b(x))
    assert not np.array_equal(a(x), b(x[::-1].copy())[::-1])


def test_transform_errors(rng):
    with pytest.raises(ValueError, match="NHWC"):
        RandomShift(1)(np.zeros((3, 4, 4), np.float32))
    with pytest.raises(ValueError, match="max_shift"):
        RandomShift(-1)
    with pytest.raises(ValueError, match="p must be"):
        RandomFlip(p=1.5)
    with pytest.raises(ValueError, match="std"):
        Normalize(0.0, 0.0)
    with pytest.raises(ValueError, match="channels"):
        Normalize([0, 0], [1, 1])(images(rng, c=3))
    with pytest.raises(TypeError, match="not callable"):
        Compose([1])


# --- digits ------------------------------------------------------------------------------------


def test_load_digits_split():
    pytest.importorskip("sklearn")
    (xtr, ytr), (xte, yte) = load_digits()
    assert xtr.shape[1:] == (8, 8, 1) and xtr.dtype == np.float32 and ytr.dtype == np.int64
    assert len(xtr) + len(xte) == 1797 and 350 <= len(xte) <= 370
    assert xtr.min() >= 0.0 and xtr.max() == 1.0
    counts = np.bincount(yte, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38  # stratified
    (xtr2, _), (xte2, _) = load_digits()
    np.testing.assert_array_equal(xtr, xtr2)  # a fixed split
    all_rows = {r.tobytes() for r in np.concatenate([xtr, xte])}
    assert len({r.tobytes() for r in xte} & {r.tobytes() for r in xtr}) < 10  # (a few digits are exact duplicates)
    assert len(all_rows) > 1700
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits(test_fraction=1.0)


@pytest.mark.cuda
def test_dataloader_yields_gpu_arrays():
    import cupy

    x = np.arange(24, dtype=np.float32).reshape(6, 2, 2, 1)
    loader = DataLoader(TensorDataset(x, np.arange(6)), batch_size=4, shuffle=True, seed=0, device="cuda",
                        transform=Compose([RandomShift(1), RandomFlip(), RandomRotation(10)]))
    cpu = DataLoader(TensorDataset(x, np.arange(6)), batch_size=4, shuffle=True, seed=0,
                     transform=Compose([RandomShift(1), RandomFlip(), RandomRotation(10)]))
    for (xg, yg), (xc, yc) in zip(loader, cpu):
        assert isinstance(xg, cupy.ndarray) and isinstance(yg, cupy.ndarray)
        np.testing.assert_allclose(xg.get(), xc, atol=1e-5)
        np.testing.assert_array_equal(yg.get(), yc)
