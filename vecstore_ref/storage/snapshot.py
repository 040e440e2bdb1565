"""Snapshot files: the whole state at one sequence number, as named numpy arrays behind a JSON header.

Layout (little-endian; see ``docs/concepts/storage-format.md``, constants in ``storage/format.py``)::

    magic "VSREFSNP" (8) | u32 format version | u32 json_len | JSON header (json_len bytes)
    | zero padding to a multiple of 64 | data block: each array at the offset the header's "arrays" table gives,
    padded to 64 | SHA-256 of every byte before it (32)

Written with ``fs.write_atomic`` (temp file, fsync, rename, directory fsync; crash points ``snapshot.*``). Read back
in one streaming pass: every offset and length is checked against the file size before anything is allocated,
each array is read straight into its own freshly allocated buffer (never a view of a larger buffer), and nothing is
returned unless the SHA-256 matches. Only plain numeric dtypes exist here: no object arrays, no pickle.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys

import numpy as np

from ..errors import CorruptSnapshotError, InvalidArgumentError, UnsupportedFormatError
from .format import (
    FORMAT_VERSION,
    SNAPSHOT_ALIGN,
    SNAPSHOT_DTYPES,
    SNAPSHOT_HEADER,
    SNAPSHOT_HEADER_SIZE,
    SNAPSHOT_MAGIC,
    SNAPSHOT_MAX_HEADER_BYTES,
    SNAPSHOT_MIN_SIZE,
    SNAPSHOT_TRAILER_SIZE,
)

_TABLE_KEYS = frozenset({"name", "dtype", "shape", "offset", "nbytes"})
_READ_CHUNK = 1 << 20  # bytes per read when skipping padding


def _pad(n: int) -> int:
    """Zero bytes that bring ``n`` up to a multiple of SNAPSHOT_ALIGN."""
    return (-n) % SNAPSHOT_ALIGN


def _little_endian(arr: np.ndarray) -> np.ndarray:
    bo = arr.dtype.byteorder
    if bo == ">" or (bo == "=" and sys.byteorder == "big"):
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return arr if arr.flags.c_contiguous else arr.copy(order="C")  # (ascontiguousarray would make 0-d 1-d)


def write_snapshot(fs, directory: str, name: str, header: dict, arrays: dict[str, np.ndarray]) -> int:
    """Write ``header`` and ``arrays`` to ``directory/name`` atomically; returns the bytes written.

    Args:
        fs: the file system (``vecstore_ref._fs``).
        directory: the store directory.
        name: a plain file name (``layout.snapshot_name(seq)``).
        header: JSON-serialisable dict (finite numbers only); the key ``"arrays"`` is reserved.
        arrays: name -> array of a dtype in ``SNAPSHOT_DTYPES``, any shape; written C-order, little-endian.

    Raises:
        InvalidArgumentError: a reserved key, a bad name, an unsupported dtype, a header that is not JSON.
        OSError: from the file system; the previous file of that name, if any, is intact.
    """
    if not name or os.sep in name or name in (".", ".."):
        raise InvalidArgumentError(f"snapshot name must be a plain file name; got {name!r}")
    if "arrays" in header:
        raise InvalidArgumentError("the snapshot header key 'arrays' is reserved")
    table, blobs, offset = [], [], 0
    for key, value in arrays.items():
        arr = np.asarray(value)
        if not isinstance(key, str) or arr.dtype.name not in SNAPSHOT_DTYPES:
            raise InvalidArgumentError(f"array {key!r} of dtype {arr.dtype}: snapshots store str-named arrays of "
                                       f"dtypes {', '.join(SNAPSHOT_DTYPES)}")
        arr = _little_endian(arr)
        table.append({"name": key, "dtype": arr.dtype.name, "shape": list(arr.shape), "offset": offset,
                      "nbytes": arr.nbytes})
        blobs.append(arr)
        offset += arr.nbytes + _pad(arr.nbytes)
    try:
        text = json.dumps({**header, "arrays": table}, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"snapshot header is not JSON: {exc}") from None
    head = SNAPSHOT_HEADER.pack(SNAPSHOT_MAGIC, FORMAT_VERSION, len(text)) + text
    head += b"\0" * _pad(len(head))
    digest = hashlib.sha256(head)
    chunks: list = [head]
    for arr in blobs:
        if arr.nbytes:
            data = memoryview(arr.reshape(-1).view(np.uint8))  # no copy
            digest.update(data)
            chunks.append(data)
        pad = b"\0" * _pad(arr.nbytes)
        if pad:
            digest.update(pad)
            chunks.append(pad)
    chunks.append(digest.digest())
    return fs.write_atomic(os.path.join(directory, name), chunks, crash_prefix="snapshot")


class _Reader:
    """Sequential reads of exactly n bytes, hashed on the way, with truncation reported as corruption."""

    def __init__(self, f, path: str):
        self.f, self.path, self.pos = f, path, 0
        self.sha = hashlib.sha256()

    def exact(self, n: int, hashed: bool = True) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise CorruptSnapshotError(f"snapshot {self.path} is truncated at byte {self.pos + len(data)}")
        self.pos += n
        if hashed:
            self.sha.update(data)
        return data

    def into(self, buf: memoryview) -> None:
        got = 0
        while got < buf.nbytes:
            n = self.f.readinto(buf[got:])
            if not n:
                raise CorruptSnapshotError(f"snapshot {self.path} is truncated at byte {self.pos + got}")
            got += n
        self.pos += got
        self.sha.update(buf)

    def skip_to(self, target: int) -> None:
        while self.pos < target:
            self.exact(min(_READ_CHUNK, target - self.pos))


def _reject_constant(name: str):
    raise ValueError(f"non-finite number {name}")


def _parse_table(table, data_start: int, body_end: int, path: str) -> list[tuple[str, np.dtype, tuple, int, int]]:
    """Validate the arrays table against the file size; returns (name, dtype, shape, absolute offset, nbytes)
    sorted by offset. Nothing is allocated here."""
    if type(table) is not list:
        raise CorruptSnapshotError(f"snapshot {path}: the arrays table is not a list")
    out, names = [], set()
    for entry in table:
        if type(entry) is not dict or entry.keys() != _TABLE_KEYS:
            raise CorruptSnapshotError(f"snapshot {path}: malformed arrays table entry {entry!r:.80}")
        name, dtype, shape, offset, nbytes = (entry[k] for k in ("name", "dtype", "shape", "offset", "nbytes"))
        if type(name) is not str or name in names:
            raise CorruptSnapshotError(f"snapshot {path}: bad or repeated array name {name!r:.80}")
        names.add(name)
        if type(dtype) is not str or dtype not in SNAPSHOT_DTYPES:
            raise CorruptSnapshotError(f"snapshot {path}: array {name!r} has dtype {dtype!r:.40}, which snapshots "
                                       "never hold")
        if type(shape) is not list or not all(type(d) is int and d >= 0 for d in shape):
            raise CorruptSnapshotError(f"snapshot {path}: array {name!r} has a bad shape {shape!r:.80}")
        if type(offset) is not int or type(nbytes) is not int or offset < 0:
            raise CorruptSnapshotError(f"snapshot {path}: array {name!r} has a bad offset or size")
        dt = np.dtype(dtype).newbyteorder("<")
        if math.prod(shape) * dt.itemsize != nbytes or data_start + offset + nbytes > body_end:
            raise CorruptSnapshotError(f"snapshot {path}: array {name!r} is out of bounds")
        out.append((name, dt, tuple(shape), data_start + offset, nbytes))
    out.sort(key=lambda e: e[3])
    for (a_name, _, _, a_off, a_len), (b_name, _, _, b_off, _) in zip(out, out[1:]):
        if a_off + a_len > b_off:
            raise CorruptSnapshotError(f"snapshot {path}: arrays {a_name!r} and {b_name!r} overlap")
    return out


def read_snapshot(fs, path: str) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and verify a snapshot.

    Returns:
        ``(header, arrays)``: the caller's header (without the ``"arrays"`` table) and name -> array, each a
        freshly allocated, writable, native-byte-order array of the stored dtype and shape.

    Raises:
        CorruptSnapshotError: missing, truncated at any byte, bad magic, a length or offset out of bounds, a dtype
            outside the whitelist, a malformed header, or a SHA-256 mismatch.
        UnsupportedFormatError: written by a newer format version (the file is not modified).
    """
    try:
        f = fs.open_read(path)
    except FileNotFoundError:
        raise CorruptSnapshotError(f"snapshot {path} is missing") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if size < SNAPSHOT_MIN_SIZE:
            raise CorruptSnapshotError(f"snapshot {path} is truncated ({size} bytes)")
        r = _Reader(f, path)
        magic, version, json_len = SNAPSHOT_HEADER.unpack(r.exact(SNAPSHOT_HEADER_SIZE))
        if magic != SNAPSHOT_MAGIC:
            raise CorruptSnapshotError(f"{path} is not a vecstore_ref snapshot (bad magic)")
        if version > FORMAT_VERSION:
            raise UnsupportedFormatError(f"{path}: snapshot format version {version}; this library reads versions "
                                         f"up to {FORMAT_VERSION}")
        if version == 0:
            raise CorruptSnapshotError(f"snapshot {path} has format version 0")
        body_end = size - SNAPSHOT_TRAILER_SIZE
        json_end = SNAPSHOT_HEADER_SIZE + json_len
        if json_len > SNAPSHOT_MAX_HEADER_BYTES or json_end > body_end:
            raise CorruptSnapshotError(f"snapshot {path}: header length {json_len} is out of bounds")
        try:
            header = json.loads(r.exact(json_len).decode("utf-8"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise CorruptSnapshotError(f"snapshot {path} has a malformed header: {exc}") from None
        if type(header) is not dict or "arrays" not in header:
            raise CorruptSnapshotError(f"snapshot {path}: the header is not an object with an arrays table")
        data_start = json_end + _pad(json_end)
        if data_start > body_end:
            raise CorruptSnapshotError(f"snapshot {path} is truncated inside its header padding")
        entries = _parse_table(header.pop("arrays"), data_start, body_end, path)
        arrays: dict[str, np.ndarray] = {}
        for name, dt, shape, offset, nbytes in entries:
            r.skip_to(offset)
            arr = np.empty(nbytes // dt.itemsize, dtype=dt)  # stored order (little-endian)
            if nbytes:
                r.into(memoryview(arr.view(np.uint8)))
            if not arr.dtype.isnative:
                arr = arr.astype(dt.newbyteorder("="))
            arrays[name] = arr.reshape(shape)
        r.skip_to(body_end)
        expected = r.sha.digest()
        trailer = r.exact(SNAPSHOT_TRAILER_SIZE, hashed=False)
        if trailer != expected:
            raise CorruptSnapshotError(f"snapshot {path} fails its SHA-256 check")
    return header, arrays


def pack_strings(strings: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Pack strings as UTF-8 for a snapshot.

    Returns:
        ``(blob, offsets)``: blob uint8 (total bytes,), offsets int64 (n + 1,) with offsets[0] = 0; string i is
        ``blob[offsets[i]:offsets[i + 1]]``.

    Raises:
        InvalidArgumentError: a string holds a lone surrogate (not encodable as UTF-8).
    """
    n = len(strings)
    offsets = np.zeros(n + 1, dtype=np.int64)
    if n == 0:
        return np.zeros(0, dtype=np.uint8), offsets
    joined = "".join(strings)
    if joined.isascii():  # one encode, lengths from len(): the common case of ids and JSON text
        raw = joined.encode("ascii")
        lengths = np.fromiter(map(len, strings), dtype=np.int64, count=n)
    else:
        try:
            encoded = [s.encode("utf-8") for s in strings]
        except UnicodeEncodeError as exc:
            raise InvalidArgumentError(f"a string is not encodable as UTF-8 (lone surrogate?): {exc}") from None
        raw = b"".join(encoded)
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=n)
    np.cumsum(lengths, out=offsets[1:])
    return np.frombuffer(raw, dtype=np.uint8).copy(), offsets


def unpack_strings(blob: np.ndarray, offsets: np.ndarray) -> list[str]:
    """Inverse of :func:`pack_strings`; validates the offsets and the UTF-8 (strict: no encoded surrogates).

    Raises:
        CorruptSnapshotError: offsets not 1-D, not starting at 0, not ending at ``blob.size``, decreasing, or
            cutting through a character; bytes that are not valid UTF-8.
    """
    blob = np.asarray(blob)
    offsets = np.asarray(offsets)
    if blob.ndim != 1 or blob.dtype != np.uint8 or offsets.ndim != 1 or offsets.dtype.kind not in "iu":
        raise CorruptSnapshotError("string table has the wrong dtype or shape")
    if offsets.size == 0 or offsets[0] != 0 or offsets[-1] != blob.size or (np.diff(offsets) < 0).any():
        raise CorruptSnapshotError("string table offsets are inconsistent")
    raw = blob.tobytes()
    bounds = offsets.tolist()
    if raw.isascii():
        text = raw.decode("ascii")
        return [text[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    try:
        text = raw.decode("utf-8")  # strict: rejects invalid sequences and encoded surrogates
    except UnicodeDecodeError as exc:
        raise CorruptSnapshotError(f"string table is not UTF-8: {exc}") from None
    # Byte offset -> character index: count the lead (non-continuation) bytes before it. An offset must not fall
    # on a continuation byte, or it would cut a character in two.
    lead = (blob & 0xC0) != 0x80
    inner = offsets[1:-1]
    if inner.size and not lead[inner[inner < blob.size]].all():
        raise CorruptSnapshotError("string table offsets cut through a UTF-8 character")
    chars = np.zeros(blob.size + 1, dtype=np.int64)
    np.cumsum(lead, out=chars[1:])
    cpos = chars[offsets].tolist()
    return [text[a:b] for a, b in zip(cpos[:-1], cpos[1:])]
