"""CIFAR-10 from its binary distribution (cifar-10-batches-bin: records of 1 label byte and 3,072
pixel bytes, channel-major). Nothing downloads; the reader takes the directory a user names."""
from __future__ import annotations

import os

import numpy as np

_RECORD = 1 + 3 * 32 * 32
_FILES = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}


def load_cifar10(directory: str, split: str = "train"):
    """(x, y): images NHWC float32 (N, 32, 32, 3) in [0, 1], labels int64 (N,).
    A missing file raises FileNotFoundError naming it; a file of the wrong size ValueError."""
    if split not in _FILES:
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    xs, ys = [], []
    for name in _FILES[split]:
        path = os.path.join(directory, name)
        if not os.path.exists(path):
            raise FileNotFoundError(f"CIFAR-10 file {name} not found in {directory!r}")
        raw = np.fromfile(path, np.uint8)
        if raw.size == 0 or raw.size % _RECORD:
            raise ValueError(f"{path}: {raw.size} bytes is not a whole number of {_RECORD}-byte CIFAR-10 records")
        records = raw.reshape(-1, _RECORD)
        if records[:, 0].max() > 9:
            raise ValueError(f"{path}: label {int(records[:, 0].max())} is out of range 0..9")
        ys.append(records[:, 0].astype(np.int64))
        xs.append(records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return np.concatenate(xs).astype(np.float32) / 255.0, np.concatenate(ys)
