import gzip
import struct

import numpy as np
import pytest

from fusegrad.data import load_mnist, read_idx


def write_idx(path, array, code=0x08, compress=False):
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype).tobytes()
    (gzip.open if compress else open)(path, "wb").write(data)


@pytest.mark.parametrize("compress", [False, True])
def test_load_mnist_from_small_files(tmp_path, compress, rng):
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 5, dtype=np.uint8)
    suffix = ".gz" if compress else ""
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", images, compress=compress)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", labels, compress=compress)
    x, y = load_mnist(str(tmp_path), "test")
    assert x.shape == (5, 28, 28, 1) and x.dtype == np.float32
    assert y.dtype == np.int64
    np.testing.assert_allclose(x[..., 0], images / 255.0, rtol=1e-7)
    np.testing.assert_array_equal(y, labels)


def test_idx_other_dtypes(tmp_path):
    a = np.arange(12, dtype=np.int32).reshape(3, 4) - 5
    write_idx(tmp_path / "a.idx", a, code=0x0C)
    np.testing.assert_array_equal(read_idx(str(tmp_path / "a.idx")), a)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist(str(tmp_path), "train")


def test_malformed_files(tmp_path):
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02\x03")
    with pytest.raises(ValueError, match="bad magic"):
        read_idx(str(tmp_path / "bad.idx"))
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((2, 28, 28), np.uint8))
    raw = (tmp_path / "t10k-images-idx3-ubyte").read_bytes()
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(raw[:-10])  # truncated
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="header promises"):
        load_mnist(str(tmp_path), "test")
    (tmp_path / "c.gz").write_bytes(b"\x1f\x8b not gzip")
    with pytest.raises(ValueError, match="not a readable IDX"):
        read_idx(str(tmp_path / "c.gz"))
    with pytest.raises(ValueError, match="split"):
        load_mnist(str(tmp_path), "validation")


def test_labels_and_images_must_agree(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((2, 28, 28), np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="disagree"):
        load_mnist(str(tmp_path), "test")
