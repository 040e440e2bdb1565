"""Snapshot files: the whole state at one sequence number, as named numpy arrays behind a JSON header.

Layout (little-endian, see ``docs/concepts/storage-format.md``)::

    magic "VSREFSNP" (8) | u32 format version | u32 header_len | JSON header | zero padding to 64
    | array bytes, each at the offset the header's "arrays" table gives | SHA-256 of everything before (32)

Written with ``fs.write_atomic`` (temp file, fsync, rename, directory fsync). Read back only after the SHA-256 and
every offset and length have been checked against the file size; arrays are copied out, and only plain numeric
dtypes are accepted (no object arrays, no pickle).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from ..errors import CorruptSnapshotError, UnsupportedFormatError
from .format import (
    FORMAT_VERSION,
    SNAPSHOT_ALIGN,
    SNAPSHOT_DTYPES,
    SNAPSHOT_HEADER,
    SNAPSHOT_MAGIC,
    SNAPSHOT_MAX_HEADER_BYTES,
    SNAPSHOT_TRAILER_SIZE,
)


def _pad(n: int) -> int:
    return (-n) % SNAPSHOT_ALIGN


def write_snapshot(fs, directory: str, name: str, header: dict, arrays: dict[str, np.ndarray]) -> int:
    """Write ``header`` and ``arrays`` to ``directory/name`` atomically; returns the bytes written."""
    import os

    table = []
    blobs = []
    offset = 0
    for key, arr in arrays.items():
        arr = np.ascontiguousarray(arr)
        if arr.dtype.name not in SNAPSHOT_DTYPES:
            raise TypeError(f"array {key!r} has dtype {arr.dtype}, which snapshots do not store")
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        table.append({"name": key, "dtype": arr.dtype.name, "shape": list(arr.shape), "offset": offset,
                      "nbytes": arr.nbytes})
        blobs.append(arr)
        offset += arr.nbytes + _pad(arr.nbytes)
    text = json.dumps({**header, "arrays": table}, allow_nan=False, separators=(",", ":")).encode("utf-8")
    head = SNAPSHOT_HEADER.pack(SNAPSHOT_MAGIC, FORMAT_VERSION, len(text)) + text
    head += b"\0" * _pad(len(head))
    digest = hashlib.sha256(head)
    chunks = [head]
    for arr in blobs:
        data = memoryview(arr).cast("B") if arr.nbytes else b""
        digest.update(data)
        chunks.append(bytes(data))
        pad = b"\0" * _pad(arr.nbytes)
        if pad:
            digest.update(pad)
            chunks.append(pad)
    chunks.append(digest.digest())
    return fs.write_atomic(os.path.join(directory, name), chunks, crash_prefix="snapshot")


def read_snapshot(fs, path: str) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and verify a snapshot; any damage raises :class:`CorruptSnapshotError`."""
    try:
        data = fs.read_bytes(path)
    except FileNotFoundError:
        raise CorruptSnapshotError(f"snapshot {path} is missing") from None
    if len(data) < SNAPSHOT_HEADER.size + SNAPSHOT_TRAILER_SIZE:
        raise CorruptSnapshotError(f"snapshot {path} is truncated ({len(data)} bytes)")
    magic, version, header_len = SNAPSHOT_HEADER.unpack_from(data, 0)
    if magic != SNAPSHOT_MAGIC:
        raise CorruptSnapshotError(f"{path} is not a vecstore_ref snapshot (bad magic)")
    if version > FORMAT_VERSION:
        raise UnsupportedFormatError(f"{path}: snapshot format version {version}; this library reads up to "
                                     f"{FORMAT_VERSION}")
    body_end = len(data) - SNAPSHOT_TRAILER_SIZE
    if hashlib.sha256(memoryview(data)[:body_end]).digest() != data[body_end:]:
        raise CorruptSnapshotError(f"snapshot {path} fails its SHA-256 check")
    start = SNAPSHOT_HEADER.size
    if header_len > SNAPSHOT_MAX_HEADER_BYTES or start + header_len > body_end:
        raise CorruptSnapshotError(f"snapshot {path} has a header length out of bounds")
    try:
        header = json.loads(data[start : start + header_len].decode("utf-8"))
        table = header.pop("arrays")
        base = start + header_len + _pad(start + header_len)
        arrays = {}
        for entry in table:
            dtype = entry["dtype"]
            if dtype not in SNAPSHOT_DTYPES:
                raise CorruptSnapshotError(f"snapshot {path} holds an array of dtype {dtype!r}")
            shape = tuple(int(x) for x in entry["shape"])
            nbytes = int(entry["nbytes"])
            offset = base + int(entry["offset"])
            dt = np.dtype(dtype).newbyteorder("<")
            count = int(np.prod(shape, dtype=np.int64)) if shape else 1
            if min(shape, default=0) < 0 or count * dt.itemsize != nbytes or offset < base or offset + nbytes > body_end:
                raise CorruptSnapshotError(f"snapshot {path}: array {entry['name']!r} out of bounds")
            arr = np.frombuffer(data, dtype=dt, count=count, offset=offset).reshape(shape)
            arrays[str(entry["name"])] = arr.astype(dt.newbyteorder("="), copy=True)
    except CorruptSnapshotError:
        raise
    except (KeyError, TypeError, ValueError, UnicodeDecodeError, AttributeError) as exc:
        raise CorruptSnapshotError(f"snapshot {path} has a malformed header: {exc}") from None
    return header, arrays


def pack_strings(strings: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 blob (uint8) plus offsets (int64, n + 1): string i is ``blob[offsets[i]:offsets[i+1]]``."""
    encoded = [s.encode("utf-8") for s in strings]
    lengths = np.fromiter((len(b) for b in encoded), dtype=np.int64, count=len(encoded))
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    blob = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
    return blob, offsets


def unpack_strings(blob: np.ndarray, offsets: np.ndarray) -> list[str]:
    offsets = np.asarray(offsets, dtype=np.int64)
    if offsets.ndim != 1 or offsets.size == 0 or offsets[0] != 0 or offsets[-1] != blob.size or (
        np.diff(offsets) < 0
    ).any():
        raise CorruptSnapshotError("string table offsets are inconsistent")
    raw = blob.tobytes()
    try:
        bounds = offsets.tolist()
        return [raw[a:b].decode("utf-8") for a, b in zip(bounds[:-1], bounds[1:])]
    except UnicodeDecodeError as exc:
        raise CorruptSnapshotError(f"string table is not UTF-8: {exc}") from None
