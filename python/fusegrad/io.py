"""save / load in the safetensors format, by our own small reader and writer (no pickle).

Layout: an 8-byte little-endian header length N, N bytes of JSON header, then the raw little-endian
data of every tensor back to back. The header maps each name to {"dtype", "shape", "data_offsets":
[begin, end]} (offsets into the data part) and may hold "__metadata__", a map of strings to strings.
Files written here open with the `safetensors` package and the other way round.

Saving is atomic: the file is written under a temporary name in the same directory, flushed to
disk, then renamed over the target, so an interrupted save leaves the previous file intact.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections import OrderedDict

import numpy as np

from .tensor import Tensor

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}
_ALIGN = 8  # the header is padded with spaces so the data starts 8-byte aligned, as safetensors does
MAX_HEADER_BYTES = 100 * 1024 * 1024  # a larger length field means a corrupt file, not a real header


def _host_array(name, value) -> np.ndarray:
    if isinstance(value, Tensor):
        value = value.data
    if not isinstance(value, np.ndarray):
        if hasattr(value, "get") and type(value).__module__.startswith("cupy"):
            value = value.get()
        else:
            raise TypeError(f"save: '{name}' is a {type(value).__name__}, expected a Tensor or an array")
    if value.dtype.newbyteorder("=") not in _CODES:
        raise TypeError(f"save: '{name}' has dtype {value.dtype}, which safetensors cannot hold here "
                        f"(supported: {', '.join(sorted(str(d) for d in _CODES))})")
    if not value.flags.c_contiguous:
        value = value.copy(order="C")  # (not ascontiguousarray: it turns 0-d arrays into 1-d ones)
    return value.astype(value.dtype.newbyteorder("<"), copy=False)


def save(state_dict, path, metadata: dict | None = None) -> None:
    """Writes name -> Tensor (or NumPy/CuPy array) to `path` as safetensors, atomically.
    metadata: optional {str: str} kept in the header."""
    if not hasattr(state_dict, "items"):
        raise TypeError(f"save: expected a dict of name -> Tensor, got {type(state_dict).__name__}")
    header, arrays, offset = {}, [], 0
    if metadata is not None:
        bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise TypeError(f"save: metadata must map str to str; bad entries: {bad}")
        header["__metadata__"] = dict(metadata)
    for name, value in state_dict.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError(f"save: invalid tensor name {name!r}")
        arr = _host_array(name, value)
        header[name] = {"dtype": _CODES[np.dtype(arr.dtype.newbyteorder("="))], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        arrays.append(arr)
        offset += arr.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % _ALIGN)
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(len(text).to_bytes(8, "little"))
            f.write(text)
            for arr in arrays:
                f.write(memoryview(arr.reshape(-1).view(np.uint8)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _parse(raw: bytes, path: str):
    if len(raw) < 8:
        raise ValueError(f"{path}: not a safetensors file (only {len(raw)} bytes)")
    n = int.from_bytes(raw[:8], "little")
    if n > MAX_HEADER_BYTES or 8 + n > len(raw):
        raise ValueError(f"{path}: corrupt or truncated safetensors file (header length {n}, file size {len(raw)})")
    try:
        header = json.loads(raw[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: corrupt safetensors header ({err})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: corrupt safetensors header (not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise ValueError(f"{path}: corrupt safetensors header (__metadata__ is not an object)")
    data = memoryview(raw)[8 + n:]
    spans, out = [], OrderedDict()
    for name, entry in header.items():
        try:
            dtype = np.dtype(_DTYPES[entry["dtype"]]).newbyteorder("<")
            shape = tuple(int(s) for s in entry["shape"])
            begin, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: corrupt safetensors entry {name!r}: {entry!r}") from None
        count = int(np.prod(shape, dtype=np.int64))
        if any(s < 0 for s in shape) or not 0 <= begin <= end or end - begin != count * dtype.itemsize:
            raise ValueError(f"{path}: corrupt safetensors entry {name!r}: shape {shape} of {entry['dtype']} "
                             f"does not fit offsets [{begin}, {end}]")
        if end > len(data):
            raise ValueError(f"{path}: truncated safetensors file: {name!r} ends at byte {end} of the data, "
                             f"which holds {len(data)}")
        spans.append((begin, end, name))
        out[name] = np.frombuffer(data[begin:end], dtype=dtype).astype(dtype.newbyteorder("="), copy=True) \
            .reshape(shape)
    # The tensors must tile the data exactly: a gap, an overlap or trailing bytes mean corruption.
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise ValueError(f"{path}: corrupt safetensors file: {name!r} starts at {begin}, expected {position}")
        position = end
    if position != len(data):
        raise ValueError(f"{path}: corrupt safetensors file: {len(data) - position} bytes after the last tensor")
    return out, metadata


def load(path, device=None) -> OrderedDict:
    """name -> Tensor from a safetensors file (on `device`, the CPU by default), in file order.
    A corrupt or truncated file raises ValueError; a missing one FileNotFoundError."""
    tensors, _ = load_with_metadata(path, device)
    return tensors


def load_with_metadata(path, device=None):
    """(name -> Tensor, metadata {str: str}) from a safetensors file."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    arrays, metadata = _parse(raw, path)
    return OrderedDict((k, Tensor(v, device=device, dtype=v.dtype)) for k, v in arrays.items()), metadata
