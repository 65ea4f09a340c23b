"""python -m fusegrad train: defaults, --json, --save/--resume, MNIST from a directory, errors."""
import gzip
import json
import struct
import subprocess
import sys

import numpy as np
import pytest

from fusegrad.__main__ import main


@pytest.fixture(autouse=True)
def _needs_sklearn():
    pytest.importorskip("sklearn")


def test_cli_train_writes_json(tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "fusegrad", "train", "--epochs", "3", "--json", str(out),
                           "--verbose", "2"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert set(report) == {"test_accuracy", "test_loss", "epochs", "samples_per_second", "seconds", "device"}
    assert report["epochs"] == 3 and report["device"] == "cpu" or report["device"].startswith("cuda")
    assert report["test_accuracy"] >= 0.9 and report["samples_per_second"] > 0
    assert "Epoch 3/3" in proc.stdout and "test accuracy" in proc.stdout


def test_cli_save_and_resume(tmp_path, capsys):
    ckpt, first, second = tmp_path / "c.safetensors", tmp_path / "a.json", tmp_path / "b.json"
    assert main(["train", "--model", "mlp", "--epochs", "2", "--save", str(ckpt), "--json", str(first),
                 "--verbose", "0"]) == 0
    assert ckpt.exists() and capsys.readouterr().out == ""
    assert main(["train", "--model", "mlp", "--epochs", "3", "--resume", str(ckpt), "--json", str(second),
                 "--verbose", "2"]) == 0
    out = capsys.readouterr().out
    assert "resumed at epoch 2" in out and "Epoch 3/3" in out and "Epoch 1/3" not in out
    assert json.loads(second.read_text())["epochs"] == 3


def write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_cli_mnist_directory(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 120)
    # Learnable images: a bright square whose position encodes the label.
    images = rng.integers(0, 40, (120, 28, 28))
    for i, label in enumerate(labels):
        images[i, 2 * label:2 * label + 6, 10:16] = 255
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images[:100])
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels[:100])
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images[100:])
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels[100:])
    out = tmp_path / "m.json"
    assert main(["train", "--model", "mlp", "--data", f"mnist:{tmp_path}", "--epochs", "6", "--batch-size", "20",
                 "--lr", "3e-3", "--json", str(out), "--verbose", "0"]) == 0
    assert json.loads(out.read_text())["test_accuracy"] >= 0.8


def test_cli_errors(tmp_path, capsys):
    assert main(["train", "--data", "cifar", "--verbose", "0"]) == 2
    assert "expected 'digits' or 'mnist:DIR'" in capsys.readouterr().err
    assert main(["train", "--data", f"mnist:{tmp_path / 'nowhere'}", "--verbose", "0"]) == 2
    assert "no directory" in capsys.readouterr().err
    assert main(["train", "--data", f"mnist:{tmp_path}", "--verbose", "0"]) == 2
    assert "t10k-images-idx3-ubyte" in capsys.readouterr().err
    assert main(["train", "--epochs", "0"]) == 2
    assert "--epochs" in capsys.readouterr().err
    (tmp_path / "bad.safetensors").write_bytes(b"\x05\0\0\0\0\0\0\0{}")
    assert main(["train", "--resume", str(tmp_path / "bad.safetensors"), "--verbose", "0"]) == 2
    assert "corrupt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--model", "resnet"])
