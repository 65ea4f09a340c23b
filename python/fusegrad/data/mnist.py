"""MNIST from IDX files (gzipped or not) in a directory the caller names. Nothing downloads."""
from __future__ import annotations

import gzip
import os

import numpy as np

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _find(directory: str, name: str) -> str:
    for candidate in (name, name + ".gz"):
        path = os.path.join(directory, candidate)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"MNIST file {name}[.gz] not found in {directory!r}")


def read_idx(path: str) -> np.ndarray:
    """An IDX array (the format of MNIST): magic 0, 0, dtype code, rank; sizes; data big-endian."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"{path}: not a readable IDX file ({err})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    rank = raw[3]
    header = 4 + 4 * rank
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(rank))
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path}: IDX data is {len(raw) - header} bytes, the header promises {expected} "
                         f"for shape {shape}")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape)


def load_mnist(directory: str, split: str = "train"):
    """(x, y): images NHWC float32 in [0, 1] of shape (N, 28, 28, 1), labels int64 (N,)."""
    if split not in _FILES:
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    image_name, label_name = _FILES[split]
    images = read_idx(_find(directory, image_name))
    labels = read_idx(_find(directory, label_name))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"MNIST {split} files disagree: images {images.shape}, labels {labels.shape}")
    x = (images.astype(np.float32) / 255.0)[..., None]
    return x, labels.astype(np.int64)
