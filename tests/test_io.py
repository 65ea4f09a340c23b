"""fusegrad.save / fusegrad.load: the safetensors format, atomic writes, permissions, checksums, corrupt files."""
import json
import os
import struct

import numpy as np
import pytest

import fusegrad as fg
from fusegrad import models, nn
from fusegrad.io import CHECKSUM_KEY, load_metadata, load_with_metadata


def sample_state(rng):
    return {
        "w": rng.standard_normal((3, 5)).astype(np.float32),
        "b": np.zeros(0, np.float32),  # empty tensors are legal
        "scalar": np.array(2.5, np.float64),
        "idx": np.arange(7, dtype=np.int64) - 3,
        "mask": np.array([True, False, True]),
        "small": np.arange(4, dtype=np.uint8).reshape(2, 2),
        "half": np.array([1.5, -2.0], np.float16),
        "t": fg.tensor(np.ones((2, 2, 2), np.float32)),
        "strided": rng.standard_normal((4, 6)).astype(np.float32)[::2, ::3],
    }


def test_round_trip_keeps_dtype_shape_and_values(tmp_path, rng):
    state = sample_state(rng)
    path = tmp_path / "a.safetensors"
    fg.save(state, path, metadata={"note": "hello"})
    loaded, meta = load_with_metadata(path)
    assert meta == {"note": "hello"}
    assert list(loaded) == list(state)
    for k, v in state.items():
        ref = v.numpy() if isinstance(v, fg.Tensor) else v
        got = loaded[k]
        assert isinstance(got, fg.Tensor)
        assert got.dtype == ref.dtype and got.shape == ref.shape, k
        np.testing.assert_array_equal(got.numpy(), ref)
    assert fg.load(path)["w"].data.flags.writeable


def test_layout_is_safetensors(tmp_path):
    """The bytes a plain reader of the specification expects: u64 header size, JSON, raw data."""
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([7, -8], np.int64)
    fg.save({"a": a, "b": b}, tmp_path / "x.safetensors")
    raw = (tmp_path / "x.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert (8 + n) % 8 == 0
    header = json.loads(raw[8:8 + n])
    assert header["a"] == {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}
    assert header["b"] == {"dtype": "I64", "shape": [2], "data_offsets": [24, 40]}
    data = raw[8 + n:]
    np.testing.assert_array_equal(np.frombuffer(data[:24], "<f4").reshape(2, 3), a)
    np.testing.assert_array_equal(np.frombuffer(data[24:], "<i8"), b)


def test_interoperates_with_the_safetensors_package(tmp_path, rng):
    st = pytest.importorskip("safetensors.numpy")
    state = {"w": rng.standard_normal((4, 3)).astype(np.float32), "i": np.arange(5, dtype=np.int32)}
    fg.save(state, tmp_path / "ours.safetensors")
    theirs = st.load_file(str(tmp_path / "ours.safetensors"))
    for k in state:
        np.testing.assert_array_equal(theirs[k], state[k])
    st.save_file(state, str(tmp_path / "theirs.safetensors"), metadata={"format": "np"})
    ours, meta = load_with_metadata(tmp_path / "theirs.safetensors")  # no checksums in their file
    assert meta == {"format": "np"}
    for k in state:
        np.testing.assert_array_equal(ours[k].numpy(), state[k])


def test_model_state_dict_round_trip(tmp_path):
    fg.manual_seed(0)
    model = models.digits_cnn()
    fg.save(model.state_dict(), tmp_path / "m.safetensors")
    fg.manual_seed(1)
    other = models.digits_cnn()
    other.load_state_dict(fg.load(tmp_path / "m.safetensors"))
    for (k, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_mismatched_state_dicts_name_the_keys(tmp_path):
    fg.save(models.digits_cnn().state_dict(), tmp_path / "cnn.safetensors")
    state = fg.load(tmp_path / "cnn.safetensors")
    with pytest.raises(KeyError, match=r"missing keys: \['1.weight'"):
        nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).load_state_dict(state)
    with pytest.raises(KeyError, match="unexpected keys"):
        nn.Sequential(nn.Conv2d(1, 32, 3)).load_state_dict(state)
    wrong = models.digits_cnn(classes=5)
    with pytest.raises(ValueError, match=r"'9.weight' has shape \(10, 128\)"):
        wrong.load_state_dict(state)


def corruptions(raw):
    n = struct.unpack("<Q", raw[:8])[0]
    yield "empty", b"", "only 0 bytes"
    yield "short", raw[:5], "only 5 bytes"
    yield "huge header", struct.pack("<Q", 1 << 40) + raw[8:], "header length"
    yield "header past end", struct.pack("<Q", len(raw)) + raw[8:], "header length"
    yield "truncated data", raw[:-3], "truncated"
    yield "trailing bytes", raw + b"\0\0\0\0", "after the last tensor"
    yield "bad json", raw[:8] + b"x" + raw[9:], "corrupt safetensors header"
    bad_dtype = raw.replace(b'"F32"', b'"X32"', 1)
    yield "bad dtype", bad_dtype, "corrupt safetensors entry"
    header = json.loads(raw[8:8 + n])
    header["w"]["shape"] = [9, 9]
    text = json.dumps(header).encode()
    yield "shape-offset mismatch", struct.pack("<Q", len(text)) + text + raw[8 + n:], "does not fit"
    yield "not an object", struct.pack("<Q", 2) + b"[]" + raw[8 + n:], "not a JSON object"


def test_corrupt_or_truncated_files_raise_value_error(tmp_path, rng):
    fg.save({"w": rng.standard_normal((3, 4)).astype(np.float32), "v": np.ones(2, np.float32)},
            tmp_path / "good.safetensors")
    raw = (tmp_path / "good.safetensors").read_bytes()
    for name, data, fragment in corruptions(raw):
        path = tmp_path / f"bad {name}.safetensors"
        path.write_bytes(data)
        with pytest.raises(ValueError, match=fragment):
            fg.load(path)
    with pytest.raises(FileNotFoundError):
        fg.load(tmp_path / "missing.safetensors")


def test_save_is_atomic(tmp_path, monkeypatch, rng):
    path = tmp_path / "ckpt.safetensors"
    fg.save({"w": np.ones(3, np.float32)}, path)
    before = path.read_bytes()

    class Boom:  # a value that fails while the data is being written
        pass

    with pytest.raises(TypeError, match="expected a Tensor or an array"):
        fg.save({"w": np.zeros(3, np.float32), "x": Boom()}, path)
    real_replace = os.replace

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        fg.save({"w": np.zeros(3, np.float32)}, path)
    monkeypatch.setattr(os, "replace", real_replace)
    assert path.read_bytes() == before  # the previous file is intact ...
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.safetensors"]  # ... and no temporary is left


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_saved_files_get_the_usual_permissions(tmp_path, umask, mode):
    path = tmp_path / "w.safetensors"
    previous = os.umask(umask)
    try:
        fg.save({"w": np.ones(3, np.float32)}, path)
        first = os.stat(path).st_mode & 0o777
        path.chmod(0o600)
        fg.save({"w": np.zeros(3, np.float32)}, path)  # replacing a file: a new file, the umask's mode again
        second = os.stat(path).st_mode & 0o777
    finally:
        os.umask(previous)
    assert (oct(first), oct(second)) == (oct(mode), oct(mode))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]


def data_section(raw):
    n = struct.unpack("<Q", raw[:8])[0]
    return 8 + n, len(raw)


def test_a_flipped_byte_anywhere_in_the_data_is_caught(tmp_path, rng):
    state = {"w": rng.standard_normal((3, 4)).astype(np.float32), "empty": np.zeros(0, np.float32),
             "i": np.arange(5, dtype=np.int64), "m": np.array([True, False])}
    good = tmp_path / "good.safetensors"
    fg.save(state, good)
    raw = good.read_bytes()
    header = json.loads(raw[8:data_section(raw)[0]])
    assert set(json.loads(header["__metadata__"][CHECKSUM_KEY])) == set(state)
    begin, end = data_section(raw)
    bad = tmp_path / "bad.safetensors"
    for position in range(begin, end):
        flipped = bytearray(raw)
        flipped[position] ^= 0x10
        bad.write_bytes(bytes(flipped))
        with pytest.raises(ValueError, match=r"bad\.safetensors: corrupt data: tensor '(w|i|m)' fails its checksum"):
            fg.load(bad)
    loaded = fg.load(good)  # the intact file still loads
    np.testing.assert_array_equal(loaded["w"].numpy(), state["w"])


def test_checksum_metadata_is_checked_and_kept_out_of_the_users_metadata(tmp_path):
    path = tmp_path / "a.safetensors"
    # A checksum key handed in (say, metadata copied from another file) is replaced by this file's own.
    fg.save({"w": np.ones(4, np.float32)}, path, metadata={"note": "x", CHECKSUM_KEY: '{"w":"00000000"}'})
    _, meta = load_with_metadata(path)
    assert meta == {"note": "x"} and load_metadata(path) == {"note": "x"}
    raw = path.read_bytes()
    start, _ = data_section(raw)
    header = json.loads(raw[8:start])
    for broken in ("not json", '{"v":"00000000"}', "[1]"):
        header["__metadata__"][CHECKSUM_KEY] = broken
        text = json.dumps(header).encode()
        (tmp_path / "b.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + raw[start:])
        with pytest.raises(ValueError, match="corrupt checksum metadata"):
            fg.load(tmp_path / "b.safetensors")


def write_safetensors_by_hand(path, arrays, metadata=None):
    """The format as its specification gives it, with no checksum (as other writers make it)."""
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, a in arrays.items():
        code = {"float32": "F32", "int64": "I64"}[a.dtype.name]
        header[name] = {"dtype": code, "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        blobs.append(a.astype(a.dtype.newbyteorder("<")).tobytes())
        offset += a.nbytes
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def test_files_without_checksums_still_load(tmp_path, rng):
    arrays = {"w": rng.standard_normal((2, 3)).astype(np.float32), "n": np.arange(4, dtype=np.int64)}
    write_safetensors_by_hand(tmp_path / "plain.safetensors", arrays, {"format": "pt"})
    write_safetensors_by_hand(tmp_path / "bare.safetensors", arrays)
    for name in ("plain", "bare"):
        loaded, meta = load_with_metadata(tmp_path / f"{name}.safetensors")
        for k, a in arrays.items():
            np.testing.assert_array_equal(loaded[k].numpy(), a)
    assert meta == {} and load_metadata(tmp_path / "plain.safetensors") == {"format": "pt"}


def test_load_metadata_reads_the_header_only(tmp_path):
    path = tmp_path / "m.safetensors"
    fg.save({"w": np.ones(1000, np.float32)}, path, metadata={"k": "v"})
    raw = path.read_bytes()
    path.write_bytes(raw[:-400])  # truncated data: load fails, the header is still readable
    assert load_metadata(path) == {"k": "v"}
    with pytest.raises(ValueError, match="truncated"):
        fg.load(path)
    path.write_bytes(raw[:5])
    with pytest.raises(ValueError, match="only 5 bytes"):
        load_metadata(path)


def test_save_errors(tmp_path):
    with pytest.raises(TypeError, match="dict"):
        fg.save([np.ones(2)], tmp_path / "a")
    with pytest.raises(TypeError, match="dtype complex128"):
        fg.save({"c": np.ones(2, np.complex128)}, tmp_path / "a")
    with pytest.raises(TypeError, match="metadata"):
        fg.save({"a": np.ones(2)}, tmp_path / "a", metadata={"k": 1})
    with pytest.raises(ValueError, match="invalid tensor name"):
        fg.save({"__metadata__": np.ones(2)}, tmp_path / "a")


def test_big_endian_input_is_stored_little_endian(tmp_path):
    a = np.arange(5, dtype=">f4")
    fg.save({"a": a}, tmp_path / "be.safetensors")
    got = fg.load(tmp_path / "be.safetensors")["a"].numpy()
    np.testing.assert_array_equal(got, a.astype(np.float32))


@pytest.mark.cuda
def test_gpu_tensors_save_and_load(tmp_path):
    t = fg.tensor(np.arange(6, dtype=np.float32), device="cuda")
    fg.save({"t": t}, tmp_path / "g.safetensors")
    back = fg.load(tmp_path / "g.safetensors", device="cuda")["t"]
    assert back.device == "cuda:0"
    np.testing.assert_array_equal(back.numpy(), np.arange(6, dtype=np.float32))
