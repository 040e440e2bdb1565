"""The write-ahead log: segments of length + CRC framed records, and the rules for reading them back.

Byte layout: ``docs/concepts/storage-format.md`` (constants in ``storage/format.py``). Durability story:
``docs/concepts/durability.md``.

Writing (`LogWriter`): one record is framed in memory and written with one ``write`` call, then fsynced if
asked. A failed write is cut back off the file; a failed fsync poisons the writer for good (an fsync is never
retried: after a failure the kernel may already have dropped the dirty pages, PostgreSQL's "fsyncgate").

Reading (`read_segments`) tells two kinds of bad bytes apart. A record is *bad* when its header is cut short,
its length is out of bounds (above ``MAX_RECORD_BYTES`` or past the end of the file) or its CRC does not match.

- A **torn tail**: a bad record after which no CRC-valid record with a higher sequence number starts anywhere,
  in this segment or a later one. It is what a crash in the middle of an append leaves; it is cut off (unless the
  caller reads only) and reported.
- **Corruption**: a bad record followed by a CRC-valid later record. Acknowledged data sits behind it, so reading
  stops with `CorruptLogError` and no byte is modified, unless the caller asks to ``repair``: then the log is cut
  at the bad record and the number of valid records lost is reported. A CRC-valid record whose content the
  store cannot replay is named by the caller (``bad_record``) and read as a bad one.

CRC-valid records must have strictly consecutive sequence numbers; a gap, a duplicate or a step back is
corruption. A CRC-valid record of an unknown type raises `UnsupportedRecordError`; a segment header from a newer
format raises `UnsupportedFormatError`. Neither is ever skipped, and neither modifies the file.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from .. import _crash
from ..errors import (
    CorruptLogError,
    InvalidArgumentError,
    ReadOnlyError,
    StorageError,
    UnsupportedFormatError,
    UnsupportedRecordError,
)
from .format import (
    FORMAT_VERSION,
    LOG_HEADER,
    LOG_HEADER_CRC_COVERS,
    LOG_HEADER_SIZE,
    LOG_MAGIC,
    MAX_RECORD_BYTES,
    RECORD_CRC_START,
    RECORD_HEADER,
    RECORD_HEADER_SIZE,
    RECORD_SEQ_OFFSET,
    RECORD_TYPES,
)
from .layout import segment_name

_SEQ = struct.Struct("<Q")
_U64_MAX = 2**64 - 1
_FIND_LIMIT = 32  # windows of at most this many sequence numbers are searched with bytes.find, wider ones by numpy
_SCAN_CHUNK = 1 << 20  # candidate positions per numpy pass (8 MiB of temporaries)


def segment_header(version: int = FORMAT_VERSION) -> bytes:
    """The 16-byte header of a log segment: magic, version, CRC32 of those 12 bytes."""
    head = LOG_MAGIC + struct.pack("<I", version)
    return head + struct.pack("<I", zlib.crc32(head))


def frame(rtype: int, seq: int, payload: bytes) -> bytes:
    """One record: ``u32 length | u32 crc | u8 type | u64 seq | payload``; the CRC covers type, seq and payload."""
    head = bytes((rtype,)) + _SEQ.pack(seq)
    crc = zlib.crc32(payload, zlib.crc32(head))
    return RECORD_HEADER.pack(len(payload), crc, rtype, seq) + payload


def create_segment(fs, directory: str, number: int) -> str:
    """Create ``log-<number>.vsl`` holding only its header, fsync it and its directory; returns its path.

    A file of that name can only be a leftover of an interrupted checkpoint (the manifest never names a segment
    before it exists), so it is replaced.
    """
    path = os.path.join(directory, segment_name(number))
    if fs.exists(path):
        fs.unlink(path)
    f = fs.open_append(path, create=True)
    try:
        f.write(segment_header())
        f.fsync()
    finally:
        f.close()
    fs.fsync_dir(directory)
    _crash.crashpoint("segment.created")
    return path


class LogWriter:
    """Appends records to one segment, from its current end.

    Invariant: the sequence numbers of the records in a log are strictly increasing by one; a number is consumed
    only by a record whose append returned.

    Attributes:
        path: the segment file.
        next_seq: the sequence number the next successful append gets.
        poisoned: True after a failed fsync (or a failed cut-back of a failed write): every later append raises
            `ReadOnlyError` until the store is reopened.
    """

    def __init__(self, fs, path: str, next_seq: int):
        if isinstance(next_seq, bool) or not isinstance(next_seq, int) or next_seq < 1:
            raise InvalidArgumentError(f"next_seq must be an int >= 1; got {next_seq!r}")
        self.fs = fs
        self.path = path
        self.next_seq = next_seq
        self.poisoned = False
        self.poison_reason: str | None = None
        self._file = fs.open_append(path)
        if self._file.size < LOG_HEADER_SIZE:
            self._file.close()
            raise CorruptLogError(path, 0, next_seq - 1, "segment shorter than its header; recover it first")

    @property
    def size(self) -> int:
        """Bytes in the segment up to the end of the last whole record."""
        return self._file.size

    def _poison(self, reason: str) -> None:
        self.poisoned = True
        self.poison_reason = self.poison_reason or reason

    def _refuse_if_poisoned(self) -> None:
        if self.poisoned:
            raise ReadOnlyError(f"log {self.path} refuses writes after an I/O failure ({self.poison_reason}); "
                                "reopen the store")

    def append(self, rtype: int, payload: bytes, sync: bool) -> int:
        """Append one record (one write call), fsync it if ``sync``, and return its sequence number.

        Raises:
            ReadOnlyError: the writer is poisoned.
            InvalidArgumentError: unknown record type, or a payload above ``MAX_RECORD_BYTES`` (it could never be
                read back). Nothing is written.
            StorageError: the write or the fsync failed. After a failed write the segment is cut back to where it
                was and the sequence number is not consumed; if the cut-back fails too, or the fsync failed, the
                writer is poisoned. A record whose fsync failed is cut off as well (best effort), so an operation
                that raised does not reappear after a reopen.
        """
        self._refuse_if_poisoned()
        if rtype not in RECORD_TYPES:
            raise InvalidArgumentError(f"unknown log record type {rtype!r}")
        if len(payload) > MAX_RECORD_BYTES:
            raise InvalidArgumentError(f"a log record holds at most {MAX_RECORD_BYTES} bytes; got {len(payload)}")
        seq = self.next_seq
        data = frame(rtype, seq, payload)
        start = self._file.size
        _crash.crashpoint("log.before_append")
        try:
            self._file.write(data)
        except BaseException as exc:
            try:
                self._file.truncate(start)
            except OSError as cut_exc:
                self._poison(f"cutting back a failed write failed: {cut_exc}")
            if isinstance(exc, OSError):
                raise StorageError(f"appending to {self.path} failed: {exc}") from exc
            raise
        _crash.crashpoint("log.after_write")
        if sync:
            try:
                self._file.fsync()
            except OSError as exc:
                self._poison(f"fsync failed: {exc}")
                try:
                    self._file.truncate(start)
                except OSError:
                    pass
                raise StorageError(f"fsync of {self.path} failed: {exc}") from exc
        _crash.crashpoint("log.after_fsync")
        self.next_seq = seq + 1
        return seq

    def sync(self) -> None:
        """fsync the segment. A failure poisons the writer (never retried) and raises StorageError."""
        self._refuse_if_poisoned()
        try:
            self._file.fsync()
        except OSError as exc:
            self._poison(f"fsync failed: {exc}")
            raise StorageError(f"fsync of {self.path} failed: {exc}") from exc

    def close(self) -> None:
        """Close the file (no fsync: call `sync` first if the records must be durable). Idempotent."""
        self._file.close()


@dataclass
class LogRecord:
    """A CRC-valid record: ``payload`` is a copy, ``offset`` where its header starts in ``path``."""

    seq: int
    rtype: int
    payload: bytes
    path: str
    offset: int


@dataclass
class LogScan:
    """What `read_segments` found.

    Attributes:
        records: records with ``seq > after_seq``, in order.
        last_seq: the highest sequence number read, or ``after_seq`` if none is higher.
        truncated_bytes: bytes cut off (or, when reading only, that would be cut) as a torn tail or by repair.
        truncated_path: the segment of the first bad record, or None.
        truncated_offset: where the first bad record starts, or None.
        lost_records: with ``repair``: CRC-valid records after the bad one, now gone.
        end_offset: the logical end of the last segment after the cut: where the next record goes.
        skipped: CRC-valid records with ``seq <= after_seq`` (already in the snapshot).
        cuts: ``(segment index, offset, bytes)`` for each segment to cut (`cut_segments` applies them); a segment
            shorter than its header has offset 0 and gets its header rewritten.
    """

    records: list[LogRecord] = field(default_factory=list)
    last_seq: int = 0
    truncated_bytes: int = 0
    truncated_path: str | None = None
    truncated_offset: int | None = None
    lost_records: int = 0
    end_offset: int = 0
    skipped: int = 0
    cuts: list[tuple[int, int, int]] = field(default_factory=list)


def _frame_at(data: bytes, off: int) -> tuple[int, int, int] | None:
    """``(length, rtype, seq)`` if a CRC-valid record starts at ``off``, else None. Bounds are checked first."""
    if off < 0 or off + RECORD_HEADER_SIZE > len(data):
        return None
    length, crc, rtype, seq = RECORD_HEADER.unpack_from(data, off)
    end = off + RECORD_HEADER_SIZE + length
    if length > MAX_RECORD_BYTES or end > len(data):
        return None
    if zlib.crc32(memoryview(data)[off + RECORD_CRC_START : end]) != crc:
        return None
    return length, rtype, seq


def _check_header(data: bytes, path: str, last_seq: int) -> None:
    magic, version, crc = LOG_HEADER.unpack_from(data, 0)
    if magic != LOG_MAGIC:
        raise CorruptLogError(path, 0, last_seq, "not a vecstore_ref log segment (bad magic)")
    if version > FORMAT_VERSION:
        raise UnsupportedFormatError(f"{path}: log format version {version}; this library reads versions up to "
                                     f"{FORMAT_VERSION}")
    if version == 0 or zlib.crc32(data[:LOG_HEADER_CRC_COVERS]) != crc:
        raise CorruptLogError(path, 0, last_seq, "segment header checksum mismatch")


def _seq_candidates(data: bytes, start: int, lo: int, hi: int) -> Iterator[int]:
    """Offsets ``p >= start``, ascending, where a record header fits and its seq field holds a value in (lo, hi].

    Narrow windows use ``bytes.find`` per value; wide ones read the u64 at every offset with numpy, in chunks.
    """
    last_start = len(data) - RECORD_HEADER_SIZE  # the last offset at which a record header fits
    if last_start < start or lo >= hi:
        return
    if hi - lo <= _FIND_LIMIT:
        found = set()
        for seq in range(lo + 1, hi + 1):
            pattern = _SEQ.pack(seq)
            pos = data.find(pattern, start + RECORD_SEQ_OFFSET)
            while pos != -1 and pos - RECORD_SEQ_OFFSET <= last_start:
                found.add(pos - RECORD_SEQ_OFFSET)
                pos = data.find(pattern, pos + 1)
        yield from sorted(found)
        return
    arr = np.frombuffer(data, dtype=np.uint8)
    lo_u, hi_u = np.uint64(lo), np.uint64(min(hi, _U64_MAX))
    for a in range(start, last_start + 1, _SCAN_CHUNK):
        b = min(a + _SCAN_CHUNK, last_start + 1)  # record starts [a, b)
        window = arr[a + RECORD_SEQ_OFFSET : b + RECORD_SEQ_OFFSET + 7]
        seqs = np.ascontiguousarray(np.lib.stride_tricks.sliding_window_view(window, 8)).view("<u8").ravel()
        hits = np.flatnonzero((seqs > lo_u) & (seqs <= hi_u))
        for h in hits.tolist():
            yield a + h


def _window_hi(datas: list[bytes], seg: int, off: int, base: int) -> int:
    """The highest seq a valid record after ``(seg, off)`` can have: records base+1 .. s-1 must all lie between
    the bad record and it, and each takes at least RECORD_HEADER_SIZE bytes."""
    remaining = len(datas[seg]) - off + sum(max(0, len(d) - LOG_HEADER_SIZE) for d in datas[seg + 1 :])
    return min(_U64_MAX, base + 1 + remaining // RECORD_HEADER_SIZE)


def _find_valid(datas: list[bytes], seg: int, off: int, base: int) -> tuple[int, int, int, int] | None:
    """The first CRC-valid record with seq > ``base`` starting at or after ``(seg, off)``:
    ``(segment, offset, seq, length)``, or None."""
    hi = _window_hi(datas, seg, off, base)
    for i in range(seg, len(datas)):
        data = datas[i]
        start = off if i == seg else LOG_HEADER_SIZE
        if len(data) < LOG_HEADER_SIZE:
            continue
        for pos in _seq_candidates(data, max(start, LOG_HEADER_SIZE), base, hi):
            hit = _frame_at(data, pos)
            if hit is not None and base < hit[2] <= hi:
                return i, pos, hit[2], hit[0]
    return None


def _count_valid_after(datas: list[bytes], seg: int, off: int, base: int) -> int:
    """How many CRC-valid records (with rising seq) start at or after ``(seg, off)``."""
    count = 0
    found = _find_valid(datas, seg, off, base)
    while found is not None:
        i, pos, seq, length = found
        count += 1
        pos += RECORD_HEADER_SIZE + length
        # Walk whole records while they stay valid; at a bad one (or a segment's end) search again.
        while True:
            while pos >= len(datas[i]) and i + 1 < len(datas):
                i, pos = i + 1, LOG_HEADER_SIZE
            hit = _frame_at(datas[i], pos)
            if hit is None or hit[2] <= seq:
                break
            count += 1
            seq = hit[2]
            pos += RECORD_HEADER_SIZE + hit[0]
        found = _find_valid(datas, i, pos, seq) if pos < len(datas[i]) else None
    return count


def read_segments(fs, paths: list[str], after_seq: int, *, repair: bool = False,
                  truncate_tail: bool = True, bad_record: tuple[str, int] | None = None) -> LogScan:
    """Read the segments ``paths`` in order; return the records with ``seq > after_seq`` (module docstring).

    Args:
        fs: the file system (``vecstore_ref._fs``).
        paths: segment files, oldest first.
        after_seq: the sequence number the snapshot holds; records at or below it are skipped (replay is
            idempotent), though their sequence numbers must still be consecutive.
        repair: cut the log at a bad record even when valid records follow it, and count them as lost.
        truncate_tail: cut a torn tail (or repair) on disk; False for read-only opens, which only report, and for
            a caller that cuts later (`cut_segments`), once the records read have been replayed.
        bad_record: ``(path, offset)`` of a CRC-valid record to treat as bad: one whose content replay refused
            (with ``repair``, the log is then cut there, and it counts among the records lost).

    Raises:
        CorruptLogError: a bad record followed by valid ones (without ``repair``), a sequence gap, duplicate or
            step back, a bad segment header, a missing segment, or a segment shorter than its header that is not
            the last one. Nothing is modified.
        UnsupportedRecordError: a CRC-valid record of an unknown type.
        UnsupportedFormatError: a segment header with a newer format version.
    """
    scan = LogScan(last_seq=after_seq)
    datas: list[bytes] = []
    for path in paths:
        try:
            datas.append(fs.read_bytes(path))
        except FileNotFoundError:
            raise CorruptLogError(path, 0, after_seq, "log segment named by the manifest is missing") from None
    if not paths:
        return scan
    last = len(paths) - 1
    # Every header first, so that a bad or future header anywhere refuses the open before any byte is cut.
    for i, (path, data) in enumerate(zip(paths, datas)):
        if len(data) < LOG_HEADER_SIZE:
            if i != last:
                raise CorruptLogError(path, 0, after_seq, f"segment is {len(data)} bytes, shorter than its header")
            continue  # a torn segment creation: handled below as a cut at offset 0
        _check_header(data, path, after_seq)

    prev: int | None = None  # seq of the last CRC-valid record, whether skipped or returned
    cut: tuple[int, int] | None = None  # (segment, offset) of the first bad record
    for i, (path, data) in enumerate(zip(paths, datas)):
        if len(data) < LOG_HEADER_SIZE:
            cut = (i, 0)
            break
        off, end = LOG_HEADER_SIZE, len(data)
        while off < end:
            hit = None if bad_record is not None and bad_record == (path, off) else _frame_at(data, off)
            if hit is None:
                cut = (i, off)
                break
            length, rtype, seq = hit
            good = prev if prev is not None else after_seq
            if rtype not in RECORD_TYPES:
                raise UnsupportedRecordError(path, off, good, f"record type {rtype} is unknown to this version")
            if prev is not None and seq != prev + 1:
                raise CorruptLogError(path, off, good, f"sequence number {seq} follows {prev}")
            if prev is None and seq > after_seq + 1:
                raise CorruptLogError(path, off, good, f"first sequence number {seq} leaves a gap after the "
                                      f"snapshot at {after_seq}")
            prev = seq
            if seq > after_seq:
                start = off + RECORD_HEADER_SIZE
                scan.records.append(LogRecord(seq, rtype, data[start : start + length], path, off))
                scan.last_seq = seq
            else:
                scan.skipped += 1
            off += RECORD_HEADER_SIZE + length
        if cut is not None:
            break

    if cut is None:
        scan.end_offset = len(datas[last])
        return scan

    seg, off = cut
    base = prev if prev is not None else after_seq
    later = _find_valid(datas, seg, off, base)
    if later is not None:
        if not repair:
            where = f"{os.path.basename(paths[later[0]])} offset {later[1]}"
            raise CorruptLogError(paths[seg], off, base,
                                  f"bad record followed by a valid record (seq {later[2]} at {where})")
        scan.lost_records = _count_valid_after(datas, seg, off, base)

    # What goes: the rest of segment `seg` from `off`, and every record of the later segments. A segment shorter
    # than its header (a torn creation, always the last) gets its header rewritten.
    cuts = []
    for j in range(seg, len(paths)):
        at = off if j == seg else LOG_HEADER_SIZE
        size = len(datas[j])
        if size < LOG_HEADER_SIZE:
            cuts.append((j, 0, size))
        elif size > at:
            cuts.append((j, at, size - at))
    scan.truncated_path, scan.truncated_offset = paths[seg], off
    scan.truncated_bytes = sum(n for _, _, n in cuts)
    scan.end_offset = max(off, LOG_HEADER_SIZE) if seg == last else LOG_HEADER_SIZE
    scan.cuts = cuts
    if truncate_tail:
        cut_segments(fs, paths, scan)
    return scan


def cut_segments(fs, paths: list[str], scan: LogScan) -> None:
    """Cut on disk what `read_segments` found to cut (a torn tail, or the log behind a repaired bad record).

    Newest segment first: a crash in between leaves the bad record in place for the next open to find again, never
    a clean cut followed by a sequence gap.
    """
    for j, at, _ in reversed(scan.cuts):
        _crash.crashpoint("recover.truncating_tail")
        if at == 0:
            _rewrite_header(fs, paths[j])
        else:
            fs.truncate(paths[j], at)


def _rewrite_header(fs, path: str) -> None:
    """Finish a torn segment creation: the file holds exactly a valid header afterwards, fsynced."""
    fs.truncate(path, 0)
    f = fs.open_append(path)
    try:
        f.write(segment_header())
        f.fsync()
    finally:
        f.close()
