"""Snapshot files: the whole state at one sequence number, as named numpy arrays behind a JSON header.

Layout of format version 2 (little-endian; see ``docs/concepts/storage-format.md``, constants in
``storage/format.py``)::

    body := magic "VSREFSNP" (8) | u32 format version | u32 json_len | JSON header (json_len bytes)
            | zero padding to a multiple of 64 | each array at the offset the header's "arrays" table gives,
            padded to 64
    file := body | u32 CRC32 of each 4 MiB block of the body | u64 body length | u32 block size
            | u32 CRC32 of the checksum table

Written with ``fs.write_atomic`` (temp file, fsync, rename, directory fsync; crash points ``snapshot.*``), the
checksums computed as the bytes stream out. Read back with one sequential read per array, straight into the
buffer the caller provides (the store's vector table and graph, with room to grow), every offset and length
checked against the file size before anything is allocated; the blocks are verified on a second core while the
next ones are read, and nothing is returned unless every checksum matches. Only plain numeric dtypes exist here:
no object arrays, no pickle.

Format version 1 (one SHA-256 of the whole file as the trailer) is still read.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from ..errors import CorruptSnapshotError, InvalidArgumentError, UnsupportedFormatError
from . import memory
from .format import (
    SNAPSHOT_ALIGN,
    SNAPSHOT_BLOCK_BYTES,
    SNAPSHOT_DTYPES,
    SNAPSHOT_FORMAT_VERSION,
    SNAPSHOT_HEADER,
    SNAPSHOT_HEADER_SIZE,
    SNAPSHOT_MAGIC,
    SNAPSHOT_MAX_HEADER_BYTES,
    SNAPSHOT_MIN_SIZE,
    SNAPSHOT_TRAILER,
    SNAPSHOT_TRAILER_SIZE,
    SNAPSHOT_V1_TRAILER_SIZE,
)

_TABLE_KEYS = frozenset({"name", "dtype", "shape", "offset", "nbytes"})
_READ_CHUNK = 1 << 20  # bytes per read when skipping padding (version 1)
_READ_SPAN = 64 * 2**20  # bytes per readinto of a large array: blocks are verified while the next span is read
Destination = Callable[[str, np.dtype, tuple], "np.ndarray | None"]


def _pad(n: int) -> int:
    """Zero bytes that bring ``n`` up to a multiple of SNAPSHOT_ALIGN."""
    return (-n) % SNAPSHOT_ALIGN


def _little_endian(arr: np.ndarray) -> np.ndarray:
    bo = arr.dtype.byteorder
    if bo == ">" or (bo == "=" and sys.byteorder == "big"):
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return arr if arr.flags.c_contiguous else arr.copy(order="C")  # (ascontiguousarray would make 0-d 1-d)


def _bytes_of(arr: np.ndarray) -> memoryview:
    return memoryview(arr.reshape(-1).view(np.uint8))  # type: ignore[arg-type]  # no copy


class _BlockSums:
    """CRC32 of consecutive blocks of a byte stream fed in pieces of any size."""

    sums: list[int]

    def __init__(self, block: int):
        self.block, self.sums, self._crc, self._filled = block, [], 0, 0

    def feed(self, data) -> None:
        view = memoryview(data).cast("B") if not isinstance(data, memoryview) else data
        while view.nbytes:
            take = min(view.nbytes, self.block - self._filled)
            self._crc = zlib.crc32(view[:take], self._crc)
            self._filled += take
            view = view[take:]
            if self._filled == self.block:
                self.sums.append(self._crc)
                self._crc, self._filled = 0, 0

    def finish(self) -> np.ndarray:
        if self._filled:
            self.sums.append(self._crc)
            self._crc, self._filled = 0, 0
        return np.array(self.sums, dtype="<u4")


def write_snapshot(fs, directory: str, name: str, header: dict, arrays: dict[str, np.ndarray],
                   pace=None) -> int:
    """Write ``header`` and ``arrays`` to ``directory/name`` atomically; returns the bytes written.

    Args:
        fs: the file system (``vecstore_ref._fs``).
        directory: the store directory.
        name: a plain file name (``layout.snapshot_name(seq)``).
        header: JSON-serialisable dict (finite numbers only); the key ``"arrays"`` is reserved.
        arrays: name -> array of a dtype in ``SNAPSHOT_DTYPES``, any shape; written C-order, little-endian,
            without copies when they are already so (views are fine: they are read as they stream out).
        pace: optional ``(bytes written so far) -> None``, called as the file streams out (``fs.write_atomic``).

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
    head = SNAPSHOT_HEADER.pack(SNAPSHOT_MAGIC, SNAPSHOT_FORMAT_VERSION, len(text)) + text
    head += b"\0" * _pad(len(head))
    body_len = len(head) + offset

    def chunks():
        sums = _BlockSums(SNAPSHOT_BLOCK_BYTES)
        sums.feed(head)
        yield head
        for arr in blobs:
            if arr.nbytes:
                data = _bytes_of(arr)
                for a in range(0, data.nbytes, _READ_SPAN):
                    piece = data[a : a + _READ_SPAN]
                    sums.feed(piece)
                    yield piece
            pad = b"\0" * _pad(arr.nbytes)
            if pad:
                sums.feed(pad)
                yield pad
        table_bytes = sums.finish().tobytes()
        yield table_bytes
        yield SNAPSHOT_TRAILER.pack(body_len, SNAPSHOT_BLOCK_BYTES, zlib.crc32(table_bytes))

    return fs.write_atomic(os.path.join(directory, name), chunks(), crash_prefix="snapshot", pace=pace)


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


def _read_exact(f, buf: memoryview, pos: int, path: str) -> None:
    got = 0
    while got < buf.nbytes:
        n = f.readinto(buf[got:])
        if not n:
            raise CorruptSnapshotError(f"snapshot {path} is truncated at byte {pos + got}")
        got += n


def _parse_header(raw: bytes, path: str) -> dict:
    try:
        header = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CorruptSnapshotError(f"snapshot {path} has a malformed header: {exc}") from None
    if type(header) is not dict or "arrays" not in header:
        raise CorruptSnapshotError(f"snapshot {path}: the header is not an object with an arrays table")
    return header


def read_snapshot(fs, path: str, destination: Destination | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and verify a snapshot.

    Args:
        fs: the file system (``vecstore_ref._fs``).
        path: the snapshot file.
        destination: optional ``(name, dtype, shape) -> array or None``: where to read an array (a C-contiguous,
            writable array of exactly that dtype and shape, e.g. the first rows of a larger buffer); None means
            "allocate one". Called after the header is checked, before the array's bytes are read.

    Returns:
        ``(header, arrays)``: the caller's header (without the ``"arrays"`` table) and name -> array, each a
        writable, native-byte-order array of the stored dtype and shape that shares memory with nothing else
        but the caller's buffer.

    Raises:
        CorruptSnapshotError: missing, truncated at any byte, bad magic, a length or offset out of bounds, a dtype
            outside the whitelist, a malformed header, or a checksum mismatch.
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
        fixed = f.read(SNAPSHOT_HEADER_SIZE)
        magic, version, json_len = SNAPSHOT_HEADER.unpack(fixed)
        if magic != SNAPSHOT_MAGIC:
            raise CorruptSnapshotError(f"{path} is not a vecstore_ref snapshot (bad magic)")
        if version > SNAPSHOT_FORMAT_VERSION:
            raise UnsupportedFormatError(f"{path}: snapshot format version {version}; this library reads versions "
                                         f"up to {SNAPSHOT_FORMAT_VERSION}")
        if version == 0:
            raise CorruptSnapshotError(f"snapshot {path} has format version 0")
        if version == 1:
            f.seek(0)
            return _read_v1(f, path, size)
        return _read_v2(f, path, size, fixed, json_len, destination)


def _read_v2(f, path: str, size: int, fixed: bytes, json_len: int, destination) -> tuple[dict, dict]:
    f.seek(size - SNAPSHOT_TRAILER_SIZE)
    body_end, block, table_crc = SNAPSHOT_TRAILER.unpack(f.read(SNAPSHOT_TRAILER_SIZE))
    if block < 4096 or block > 2**30 or block & (block - 1):
        raise CorruptSnapshotError(f"snapshot {path}: bad block size {block}")
    n_blocks = -(-body_end // block)
    if body_end < SNAPSHOT_HEADER_SIZE or body_end + 4 * n_blocks + SNAPSHOT_TRAILER_SIZE != size:
        raise CorruptSnapshotError(f"snapshot {path} is truncated or has a bad trailer")
    f.seek(body_end)
    table_bytes = f.read(4 * n_blocks)
    if len(table_bytes) != 4 * n_blocks or zlib.crc32(table_bytes) != table_crc:
        raise CorruptSnapshotError(f"snapshot {path}: the checksum table is damaged")
    sums = np.frombuffer(table_bytes, dtype="<u4")
    json_end = SNAPSHOT_HEADER_SIZE + json_len
    if json_len > SNAPSHOT_MAX_HEADER_BYTES or json_end > body_end:
        raise CorruptSnapshotError(f"snapshot {path}: header length {json_len} is out of bounds")
    data_start = json_end + _pad(json_end)
    if data_start > body_end:
        raise CorruptSnapshotError(f"snapshot {path} is truncated inside its header padding")
    head = bytearray(data_start)
    head[:SNAPSHOT_HEADER_SIZE] = fixed
    f.seek(SNAPSHOT_HEADER_SIZE)
    _read_exact(f, memoryview(head)[SNAPSHOT_HEADER_SIZE:], SNAPSHOT_HEADER_SIZE, path)
    verifier = _Verifier(sums, block, body_end, path)
    verifier.add(0, memoryview(head))
    # The header is parsed before its block is verified (the block holds array bytes too); every offset and
    # shape it gives is checked against the file size, and a damaged header fails the checksums below.
    header = _parse_header(bytes(head[SNAPSHOT_HEADER_SIZE:json_end]), path)
    entries = _parse_table(header.pop("arrays"), data_start, body_end, path)
    arrays: dict[str, np.ndarray] = {}
    pos = data_start
    try:
        for name, dt, shape, offset, nbytes in entries:
            if offset > pos:  # padding (or bytes between arrays): read, since the checksums cover them
                gap = bytearray(offset - pos)
                _read_exact(f, memoryview(gap), pos, path)
                verifier.add(pos, memoryview(gap))
                pos = offset
            out = destination(name, dt, shape) if destination is not None and dt.isnative else None
            if out is None or out.dtype != dt or out.shape != shape or not out.flags.c_contiguous:
                out = memory.buffer(shape, dt, fill=None, ready_rows=shape[0] if shape else 1)  # stored order
            if nbytes:
                view = _bytes_of(out)
                for a in range(0, nbytes, _READ_SPAN):
                    part = view[a : a + _READ_SPAN]
                    _read_exact(f, part, pos, path)
                    verifier.add(pos, part)
                    pos += part.nbytes
                    verifier.check_through(pos)
            if not out.dtype.isnative:
                out = out.astype(dt.newbyteorder("="))
            arrays[name] = out
        if body_end > pos:
            gap = bytearray(body_end - pos)
            _read_exact(f, memoryview(gap), pos, path)
            verifier.add(pos, memoryview(gap))
        verifier.check_through(body_end)
    finally:
        verifier.close()
    return header, arrays


class _Verifier:
    """Checks the CRC32 of each block of the body as soon as its bytes are in memory, on a worker thread
    (``zlib.crc32`` releases the interpreter lock), while the reader goes on reading."""

    def __init__(self, sums: np.ndarray, block: int, body_end: int, path: str):
        self.sums, self.block, self.body_end, self.path = sums, block, body_end, path
        self._pieces: list[tuple[int, memoryview]] = []  # (file offset, bytes) in file order, not yet all checked
        self._next = 0  # the first block not yet submitted
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="vecstore-verify")
        self._futures: list[tuple[range, Future[list[bool]]]] = []

    def add(self, offset: int, data: memoryview) -> None:
        self._pieces.append((offset, data))

    def _block_crc(self, i: int, pieces: list[tuple[int, memoryview]]) -> bool:
        a, b = i * self.block, min((i + 1) * self.block, self.body_end)
        crc = 0
        for off, data in pieces:
            lo, hi = max(a, off), min(b, off + data.nbytes)
            if lo < hi:
                crc = zlib.crc32(data[lo - off : hi - off], crc)
        return crc == int(self.sums[i])

    def check_through(self, pos: int) -> None:
        """Submit every block that ends at or before ``pos``; at the body's end, wait for all of them."""
        last = len(self.sums) if pos >= self.body_end else pos // self.block
        if last > self._next:
            pieces = list(self._pieces)
            for start in range(self._next, last, 8):
                ids = range(start, min(last, start + 8))
                self._futures.append((ids, self._pool.submit(
                    lambda ids=ids: [self._block_crc(i, pieces) for i in ids])))  # type: ignore[misc]
            self._next = last
            keep_from = self._next * self.block
            self._pieces = [(off, d) for off, d in self._pieces if off + d.nbytes > keep_from]
        if pos >= self.body_end:
            for ids, fut in self._futures:
                if not all(fut.result()):
                    bad = next(i for i, ok in zip(ids, fut.result()) if not ok)
                    raise CorruptSnapshotError(f"snapshot {self.path} fails its checksum at block {bad} (bytes "
                                               f"{bad * self.block}..{min((bad + 1) * self.block, self.body_end)})")
            self._futures.clear()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class _ReaderV1:
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
        _read_exact(self.f, buf, self.pos, self.path)
        self.pos += buf.nbytes
        self.sha.update(buf)

    def skip_to(self, target: int) -> None:
        while self.pos < target:
            self.exact(min(_READ_CHUNK, target - self.pos))


def _read_v1(f, path: str, size: int) -> tuple[dict, dict]:
    """Format version 1: the same body, then a SHA-256 of every byte before it."""
    r = _ReaderV1(f, path)
    _, _, json_len = SNAPSHOT_HEADER.unpack(r.exact(SNAPSHOT_HEADER_SIZE))
    body_end = size - SNAPSHOT_V1_TRAILER_SIZE
    json_end = SNAPSHOT_HEADER_SIZE + json_len
    if json_len > SNAPSHOT_MAX_HEADER_BYTES or json_end > body_end:
        raise CorruptSnapshotError(f"snapshot {path}: header length {json_len} is out of bounds")
    header = _parse_header(r.exact(json_len), path)
    data_start = json_end + _pad(json_end)
    if data_start > body_end:
        raise CorruptSnapshotError(f"snapshot {path} is truncated inside its header padding")
    entries = _parse_table(header.pop("arrays"), data_start, body_end, path)
    arrays: dict[str, np.ndarray] = {}
    for name, dt, shape, offset, nbytes in entries:
        r.skip_to(offset)
        arr = np.empty(nbytes // dt.itemsize, dtype=dt)  # stored order (little-endian)
        if nbytes:
            r.into(memoryview(arr.view(np.uint8)))  # type: ignore[arg-type]
        if not arr.dtype.isnative:
            arr = arr.astype(dt.newbyteorder("="))
        arrays[name] = arr.reshape(shape)
    r.skip_to(body_end)
    expected = r.sha.digest()
    trailer = r.exact(SNAPSHOT_V1_TRAILER_SIZE, hashed=False)
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
    """Inverse of `pack_strings`; validates the offsets and the UTF-8 (strict: no encoded surrogates).

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
