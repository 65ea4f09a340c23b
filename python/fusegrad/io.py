"""save / load in the safetensors format, by our own small reader and writer (no pickle).

Layout: an 8-byte little-endian header length N, N bytes of JSON header, then the raw little-endian
data of every tensor back to back. The header maps each name to {"dtype", "shape", "data_offsets":
[begin, end]} (offsets into the data part) and may hold "__metadata__", a map of strings to strings.
Files written here open with the `safetensors` package and the other way round.

Saving is atomic: the file is written under a temporary name in the same directory, flushed to
disk, then renamed over the target, so an interrupted save leaves the previous file intact. The file
gets the usual permissions (0666 less the umask), like any file the user creates.

Integrity: save stores a CRC-32 of every tensor's bytes in the metadata (key CHECKSUM_KEY, a JSON
map of name -> 8 hex digits) and load verifies them, so a flipped byte anywhere in the data is a
ValueError naming the file and the tensor. CRC-32 because it is the cheapest check that catches
every error burst up to 32 bits (zlib does about 1 GB/s); it guards against corruption, not
tampering. Files from other safetensors writers carry no checksums and load unverified.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import zlib
from collections import OrderedDict

import numpy as np

from ._backend import to_host
from .tensor import Tensor

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}
_ALIGN = 8  # the header is padded with spaces so the data starts 8-byte aligned, as safetensors does
MAX_HEADER_BYTES = 100 * 1024 * 1024  # a larger length field means a corrupt file, not a real header
CHECKSUM_KEY = "fusegrad.crc32"  # in __metadata__; save writes it, load checks it and leaves it out


def _host_array(name, value) -> np.ndarray:
    if isinstance(value, Tensor):
        value = value.data
    if not isinstance(value, np.ndarray) and not (hasattr(value, "get") and type(value).__module__.startswith("cupy")):
        raise TypeError(f"save: '{name}' is a {type(value).__name__}, expected a Tensor or an array")
    value = to_host(value)
    if value.dtype.newbyteorder("=") not in _CODES:
        raise TypeError(f"save: '{name}' has dtype {value.dtype}, which safetensors cannot hold here "
                        f"(supported: {', '.join(sorted(str(d) for d in _CODES))})")
    if not value.flags.c_contiguous:
        value = value.copy(order="C")  # (not ascontiguousarray: it turns 0-d arrays into 1-d ones)
    return value.astype(value.dtype.newbyteorder("<"), copy=False)


def _crc32(arr: np.ndarray) -> str:
    return f"{zlib.crc32(memoryview(arr.reshape(-1).view(np.uint8))):08x}"


def save(state_dict, path, metadata: dict | None = None) -> None:
    """Writes name -> Tensor (or NumPy/CuPy array) to `path` as safetensors, atomically, with a
    checksum of each tensor. metadata: optional {str: str} kept in the header."""
    if not hasattr(state_dict, "items"):
        raise TypeError(f"save: expected a dict of name -> Tensor, got {type(state_dict).__name__}")
    if metadata is not None:
        bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise TypeError(f"save: metadata must map str to str; bad entries: {bad}")
    entries, arrays, checksums, offset = {}, [], {}, 0
    for name, value in state_dict.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError(f"save: invalid tensor name {name!r}")
        arr = _host_array(name, value)
        entries[name] = {"dtype": _CODES[np.dtype(arr.dtype.newbyteorder("="))], "shape": list(arr.shape),
                         "data_offsets": [offset, offset + arr.nbytes]}
        arrays.append(arr)
        checksums[name] = _crc32(arr)
        offset += arr.nbytes
    # Always this file's own checksums, even when `metadata` came from another file's header.
    header = {"__metadata__": {**(metadata or {}), CHECKSUM_KEY: json.dumps(checksums, separators=(",", ":"))},
              **entries}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % _ALIGN)
    with _atomic_file(os.fspath(path)) as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for arr in arrays:
            f.write(memoryview(arr.reshape(-1).view(np.uint8)))


@contextlib.contextmanager
def _atomic_file(path: str):
    """`with _atomic_file(path) as f:` writes to a temporary file beside `path`, flushes it to
    disk and renames it over `path`; on any error (Ctrl-C included) the temporary goes away and
    `path` is untouched. The file is created with mode 0666 less the umask, as open() would
    (tempfile.mkstemp would make it 0600)."""
    directory = os.path.dirname(os.path.abspath(path))
    while True:
        tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:  # another writer's temporary: draw another name
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _sync_directory(directory)


def _sync_directory(directory: str) -> None:
    # The rename reaches the disk only with the directory entry (POSIX; Windows cannot open a directory).
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _header_length(first8: bytes, file_size: int, path: str) -> int:
    if len(first8) < 8:
        raise ValueError(f"{path}: not a safetensors file (only {len(first8)} bytes)")
    n = int.from_bytes(first8[:8], "little")
    if n > MAX_HEADER_BYTES or 8 + n > file_size:
        raise ValueError(f"{path}: corrupt or truncated safetensors file (header length {n}, file size {file_size})")
    return n


def _parse_header(text: bytes, path: str):
    """(tensor entries, metadata) from the JSON header."""
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: corrupt safetensors header ({err})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: corrupt safetensors header (not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise ValueError(f"{path}: corrupt safetensors header (__metadata__ is not an object)")
    return header, metadata


def _stored_checksums(metadata: dict, names, path: str):
    """name -> CRC-32 hex from the metadata, or None for a file without checksums."""
    text = metadata.pop(CHECKSUM_KEY, None)
    if text is None:
        return None
    try:
        checksums = json.loads(text)
        if not isinstance(checksums, dict) or set(checksums) != set(names):
            raise ValueError("it does not list exactly the file's tensors")
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: corrupt checksum metadata {CHECKSUM_KEY!r} ({err})") from None
    return checksums


def _parse(raw: bytes, path: str):
    n = _header_length(raw[:8], len(raw), path)
    header, metadata = _parse_header(raw[8:8 + n], path)
    checksums = _stored_checksums(metadata, header, path)
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
    if checksums is not None:
        for begin, end, name in spans:
            on_disk = f"{zlib.crc32(data[begin:end]):08x}"
            if on_disk != checksums[name]:
                raise ValueError(f"{path}: corrupt data: tensor {name!r} fails its checksum (CRC-32 {on_disk} "
                                 f"on disk, {checksums[name]} when saved)")
    return out, metadata


def load(path, device=None) -> OrderedDict:
    """name -> Tensor from a safetensors file (on `device`, the CPU by default), in file order.
    A corrupt or truncated file raises ValueError; a missing one FileNotFoundError."""
    tensors, _ = load_with_metadata(path, device)
    return tensors


def load_with_metadata(path, device=None):
    """(name -> Tensor, metadata {str: str}) from a safetensors file. The checksums fusegrad
    stores are verified and are not part of the metadata returned."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    arrays, metadata = _parse(raw, path)
    return OrderedDict((k, Tensor(v, device=device, dtype=v.dtype)) for k, v in arrays.items()), metadata


def load_metadata(path) -> dict:
    """The metadata {str: str} of a safetensors file, reading only its header (cheap on a large
    file; the tensor data and its checksums are not looked at)."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        n = _header_length(f.read(8), size, path)
        _, metadata = _parse_header(f.read(n), path)
    metadata.pop(CHECKSUM_KEY, None)
    return metadata
