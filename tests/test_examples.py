"""Every example runs, on a small budget, learns something, and keeps the protocol: validation on
a split of the training data, the test set evaluated once at the end, figures printed rounded."""
import gzip
import importlib
import os
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from fusegrad.train import Trainer

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(autouse=True)
def _examples_importable(monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.syspath_prepend(str(EXAMPLES))


@pytest.fixture
def protocol(monkeypatch, capsys):
    """Records every fit and evaluate of every Trainer while an example runs, and checks after it
    that each trained model was validated on data other than what it was tested on, was tested
    exactly once, after its training, and that the printed figures are rounded."""
    events = []
    real_fit, real_evaluate = Trainer.fit, Trainer.evaluate

    def fit(self, x, y=None, **kw):
        events.append(("fit", self, kw))
        return real_fit(self, x, y, **kw)

    def evaluate(self, x, y=None, **kw):
        events.append(("evaluate", self, x))
        return real_evaluate(self, x, y, **kw)

    monkeypatch.setattr(Trainer, "fit", fit)
    monkeypatch.setattr(Trainer, "evaluate", evaluate)
    yield events
    trainers = {id(t): t for _, t, _ in events}
    assert trainers, "the example trained nothing"
    for key in trainers:
        mine = [(kind, detail) for kind, t, detail in events if id(t) == key]
        kinds = [kind for kind, _ in mine]
        assert kinds.count("evaluate") == 1 and kinds[-1] == "evaluate", kinds  # tested once, at the end
        test_x = mine[-1][1]
        for kind, kw in mine[:-1]:
            assert kw.get("validation_split", 0) > 0 or kw.get("validation_data") is not None, kw
            if kw.get("validation_data") is not None:
                val_x = kw["validation_data"][0]
                assert not np.shares_memory(val_x, test_x)
                assert not (val_x.shape == test_x.shape and np.array_equal(val_x, test_x))
    out = capsys.readouterr().out
    assert re.search(r"accuracy \d\.\d{4}\b", out) and re.search(r"loss \d+\.\d{4}\b", out), out
    assert not re.search(r"\d\.\d{5,}", out), out  # no 17-digit figures


def run(name, *args):
    module = importlib.import_module(name)
    return module.main(["--verbose", "0", "--device", "cpu", *args])


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    """The shared MNIST copy where it exists; otherwise small IDX files of learnable synthetic digits
    (a bright bar whose position is the label), so these tests never skip."""
    shared = Path(os.environ.get("FUSEGRAD_MNIST_DIR", EXAMPLES.parents[1] / "shared" / "data" / "mnist"))
    if shared.is_dir():
        return str(shared)
    d = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 10000)
    images = rng.integers(0, 30, (10000, 28, 28))
    for i, label in enumerate(labels):
        images[i, 2 * label + 2:2 * label + 6, 8:20] = 255
    for stem, arr in (("t10k-images-idx3-ubyte", images), ("t10k-labels-idx1-ubyte", labels)):
        header = bytes([0, 0, 8, arr.ndim]) + b"".join(struct.pack(">I", n) for n in arr.shape)
        with gzip.open(d / f"{stem}.gz", "wb") as f:
            f.write(header + arr.astype(np.uint8).tobytes())
    return str(d)


@pytest.mark.usefixtures("protocol")
def test_mnist_mlp(mnist_dir):
    r = run("mnist_mlp", "--data-dir", mnist_dir, "--epochs", "1", "--limit", "1000")
    assert len(r["history"]["loss"]) == 1 and r["accuracy"] >= 0.7


@pytest.mark.usefixtures("protocol")
def test_mnist_cnn(mnist_dir):
    r = run("mnist_cnn", "--data-dir", mnist_dir, "--epochs", "2", "--limit", "320", "--batch-size", "32")
    assert len(r["history"]["val_loss"]) == 2 and r["history"]["loss"][1] < r["history"]["loss"][0]
    assert r["accuracy"] > 0.3  # well above chance after 20 steps


@pytest.mark.usefixtures("protocol")
def test_cifar_cnn_on_colour_digits():
    r = run("cifar_cnn", "--epochs", "1", "--limit", "96", "--batch-size", "32")
    assert set(r["history"]) >= {"loss", "top3_accuracy", "val_accuracy"}
    assert np.isfinite(r["loss"])


@pytest.mark.usefixtures("protocol")
def test_xor():
    r = run("xor", "--epochs", "40")
    assert r["binary_accuracy"] >= 0.95
    np.testing.assert_array_less(np.abs(r["corners"] - [0, 1, 1, 0]), 0.3)


@pytest.mark.usefixtures("protocol")
def test_sequence_rnn():
    r = run("sequence_rnn", "--epochs", "3", "--limit", "400")
    assert set(r) == {"lstm", "gru"} and r["lstm"]["accuracy"] > 0.3 and r["gru"]["accuracy"] > 0.3


@pytest.mark.usefixtures("protocol")
def test_finetune():
    r = run("finetune", "--epochs", "3", "--finetune-epochs", "3", "--limit", "300")
    assert r["convs_unchanged"] and r["trainable"] == 4
    assert r["pretrained_accuracy"] >= 0.8 and r["finetuned_accuracy"] >= 0.7


@pytest.mark.usefixtures("protocol")
def test_bert_finetune():
    r = run("bert_finetune", "--epochs", "3", "--limit", "600")
    assert r["trainable"] == 41 and r["accuracy"] >= 0.8


@pytest.mark.usefixtures("protocol")
def test_bert_finetune_frozen_encoder():
    r = run("bert_finetune", "--epochs", "1", "--limit", "200", "--freeze-encoder")
    assert r["trainable"] == 4 and np.isfinite(r["loss"])  # the pooler and the classifier head


@pytest.mark.usefixtures("protocol")
def test_compress(mnist_dir):
    r = run("compress", "--data-dir", mnist_dir, "--epochs", "2", "--finetune-epochs", "1", "--student-epochs", "2",
            "--limit", "1200", "--calibration", "300")
    rows = {row["model"]: row for row in r["rows"]}
    assert list(rows) == ["float32", "pruned 50% + fine-tuned", "distilled student", "int8 (static)",
                          "pruned 50% + int8", "trained in bf16 autocast"]
    base = rows["float32"]
    assert base["accuracy"] > 0.5
    assert abs(rows["int8 (static)"]["accuracy"] - base["accuracy"]) <= 0.03  # the same model, in int8
    assert rows["int8 (static)"]["size_kb"] < base["size_kb"] / 3  # int8 weights: a quarter of the bytes
    assert rows["pruned 50% + fine-tuned"]["weights"] < base["weights"] / 2
    assert rows["distilled student"]["weights"] < base["weights"] / 5
    assert all(row["images_per_s"] > 0 and 0 <= row["accuracy"] <= 1 for row in r["rows"])


def test_cifar10_binary_reader(tmp_path):
    from fusegrad.data import load_cifar10

    rng = np.random.default_rng(0)
    records = rng.integers(0, 256, (3, 1 + 3072), dtype=np.uint8)
    records[:, 0] = [3, 0, 9]
    records.tofile(tmp_path / "test_batch.bin")
    x, y = load_cifar10(str(tmp_path), "test")
    assert x.shape == (3, 32, 32, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(y, [3, 0, 9])
    # channel-major on disk, channels-last in memory
    np.testing.assert_allclose(x[1, 4, 5, 2], records[1, 1 + 2 * 1024 + 4 * 32 + 5] / 255.0)
    with pytest.raises(FileNotFoundError, match="data_batch_1.bin"):
        load_cifar10(str(tmp_path), "train")
    records[:2].tofile(tmp_path / "test_batch.bin")
    (tmp_path / "test_batch.bin").write_bytes((tmp_path / "test_batch.bin").read_bytes()[:-7])
    with pytest.raises(ValueError, match="whole number"):
        load_cifar10(str(tmp_path), "test")
    records[0, 0] = 12
    records.tofile(tmp_path / "test_batch.bin")
    with pytest.raises(ValueError, match="out of range"):
        load_cifar10(str(tmp_path), "test")
