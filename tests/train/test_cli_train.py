"""python -m fusegrad train: defaults, --json, --save/--resume, MNIST from a directory, Ctrl-C, errors."""
import gzip
import json
import os
import platform
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from fusegrad.__main__ import main
from fusegrad.train.checkpoint import read_info


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
    assert proc.stdout.splitlines()[-1] == f"results written to {out}"


def test_cli_shows_a_progress_bar(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fusegrad", "train", "--model", "mlp", "--epochs", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    # tqdm's bar on stderr: the epoch, a full bar and the batch count (1438 samples / 32 = 45 batches)
    assert "Epoch 1/1: 100%|" in proc.stderr and "45/45" in proc.stderr and "samples/s" in proc.stderr
    assert "Epoch 1/1 -" not in proc.stdout  # not the one-line-per-epoch form


def test_cli_save_and_resume(tmp_path, capsys):
    ckpt, first, second = tmp_path / "c.safetensors", tmp_path / "a.json", tmp_path / "b.json"
    assert main(["train", "--model", "mlp", "--epochs", "2", "--save", str(ckpt), "--json", str(first),
                 "--verbose", "0"]) == 0
    assert ckpt.exists() and capsys.readouterr().out == ""
    assert read_info(ckpt)["extra"] == {"model": "mlp", "data": "digits"}
    assert main(["train", "--model", "mlp", "--epochs", "3", "--resume", str(ckpt), "--json", str(second),
                 "--save", str(ckpt), "--verbose", "2"]) == 0
    out = capsys.readouterr().out
    assert "resumed at epoch 2" in out and "Epoch 3/3" in out and "Epoch 1/3" not in out
    assert out.splitlines()[-2:] == [f"checkpoint of epoch 3 written to {ckpt}", f"results written to {second}"]
    assert json.loads(second.read_text())["epochs"] == 3 and read_info(ckpt)["epoch"] == 3


def test_cli_resume_with_nothing_left_to_train(tmp_path, capsys):
    ckpt, report = tmp_path / "run.safetensors", tmp_path / "r.json"
    assert main(["train", "--model", "mlp", "--epochs", "2", "--save", str(ckpt), "--verbose", "0"]) == 0
    for epochs in ("2", "1"):
        before = ckpt.read_bytes()
        assert main(["train", "--model", "mlp", "--epochs", epochs, "--resume", str(ckpt), "--save", str(ckpt),
                     "--json", str(report), "--verbose", "1"]) == 0
        captured = capsys.readouterr()
        assert captured.err.strip() == (f"checkpoint {ckpt} is at epoch 2; nothing to train for --epochs {epochs}; "
                                        "pass a larger --epochs")
        assert "test accuracy" in captured.out and "samples/s" not in captured.out  # evaluated, not trained
        assert f"{ckpt} not written" in captured.out and ckpt.read_bytes() == before
        result = json.loads(report.read_text())
        assert result["epochs"] == 2 and result["test_accuracy"] > 0.5 and result["samples_per_second"] is None


def test_cli_resume_into_another_model_names_the_checkpoints_model(tmp_path, capsys):
    ckpt = tmp_path / "mlp.safetensors"
    assert main(["train", "--model", "mlp", "--epochs", "1", "--save", str(ckpt), "--verbose", "0"]) == 0
    assert main(["train", "--model", "cnn", "--resume", str(ckpt), "--verbose", "0"]) == 2
    err = capsys.readouterr().err
    assert "the checkpoint holds the mlp model (trained on --data digits), not cnn; pass --model mlp" in err
    assert main(["train", "--model", "mlp", "--data", f"mnist:{tmp_path}", "--resume", str(ckpt),
                 "--verbose", "0"]) == 2
    assert f"trained on --data digits, this run asks for --data mnist:{tmp_path}" in capsys.readouterr().err


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


def test_cli_header_names_the_data_once(tmp_path, capsys):
    images = np.random.default_rng(0).integers(0, 255, (100, 28, 28))
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(100) % 10)
    assert main(["train", "--model", "mlp", "--data", f"mnist:{tmp_path}", "--epochs", "1", "--batch-size", "20",
                 "--verbose", "2"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header == ("fusegrad train: mlp on MNIST's test set split in two (80 train / 20 test), 1 epoch, "
                      "batch 20, device cpu")


def start_training(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "fusegrad", "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_ctrl_c_in_training_keeps_the_checkpoint_and_the_json(tmp_path):
    ckpt, report = tmp_path / "run.safetensors", tmp_path / "r.json"
    proc = start_training(["--model", "mlp", "--epochs", "500", "--save", str(ckpt), "--json", str(report),
                           "--verbose", "2"])
    try:
        assert proc.stdout.readline().startswith("fusegrad train: mlp on digits")
        assert proc.stdout.readline().startswith("Epoch 1/500 -")  # the first epoch is done and saved
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "test accuracy" not in out
    done = read_info(ckpt)["epoch"]
    assert 1 <= done < 500
    assert err.splitlines()[-3:] == [f"interrupted after {done} completed epoch" + ("s" if done > 1 else ""),
                                     f"checkpoint of epoch {done} written to {ckpt}",
                                     f"results written to {report}"]
    result = json.loads(report.read_text())
    assert result["interrupted"] is True and result["epochs"] == done and result["test_accuracy"] is None
    assert result["samples_per_second"] > 0


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a named pipe")
def test_ctrl_c_during_start_up_is_one_line(tmp_path):
    # The training images are a named pipe that nothing writes to: the command is then stuck, for
    # certain, in loading data when the signal comes.
    os.mkfifo(tmp_path / "train-images-idx3-ubyte")
    proc = start_training(["--data", f"mnist:{tmp_path}", "--verbose", "2"])
    writer = None
    try:
        deadline = time.monotonic() + 120
        while writer is None:  # opening the write end succeeds once the command has opened the read end
            try:
                writer = os.open(tmp_path / "train-images-idx3-ubyte", os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                time.sleep(0.05)
        _wait_until_blocked_in_read(proc.pid, deadline)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        if writer is not None:
            os.close(writer)
    assert (proc.returncode, err, out) == (130, "interrupted\n", "")


def _wait_until_blocked_in_read(pid, deadline):
    """Waits until the process's main thread sits in read(2). A signal that lands between opening
    the pipe and that read is handled by Python, but the read it then enters blocks for good
    (nothing interrupts it): CPython's race, not the command's, and a user's second Ctrl-C would
    end it. Where /proc or the syscall number is unknown, a pause stands in."""
    read_number = {"x86_64": "0", "aarch64": "63"}.get(platform.machine())
    syscall = f"/proc/{pid}/syscall"
    if read_number is None or not os.path.exists(syscall):
        time.sleep(1.0)
        return
    while time.monotonic() < deadline:
        with open(syscall) as f:
            if f.read().split()[0] == read_number:
                return
        time.sleep(0.02)
