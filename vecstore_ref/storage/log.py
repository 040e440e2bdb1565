"""The write-ahead log: segments of length + CRC framed records, and the rules for reading them back.

Format: ``docs/concepts/storage-format.md``. Durability story: ``docs/concepts/durability.md``.

Reading distinguishes two kinds of bad bytes (the rule of RELIABILITY section 0, made stricter):

- a **torn tail**: a bad record after which no CRC-valid record with a higher sequence number exists anywhere. It is
  what a crash in the middle of an append leaves; it is cut off and reported.
- **corruption**: a bad record followed by a valid later record. Acknowledged data sits behind it, so reading stops
  with :class:`CorruptLogError` and nothing is modified, unless the caller asks to ``repair`` (cut at the bad
  record, report how many valid records were lost).
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field

from .. import _crash
from ..errors import (
    CorruptLogError,
    ReadOnlyError,
    StorageError,
    UnsupportedFormatError,
    UnsupportedRecordError,
)
from .format import (
    FORMAT_VERSION,
    LOG_HEADER,
    LOG_HEADER_SIZE,
    LOG_MAGIC,
    MAX_RECORD_BYTES,
    RECORD_HEADER,
    RECORD_HEADER_SIZE,
    RECORD_TYPES,
)
from .layout import segment_name

_SEQ = struct.Struct("<Q")
SEQ_LOOKAHEAD = 64  # how many later sequence numbers to look for behind a bad record


def segment_header() -> bytes:
    head = struct.pack("<8sI", LOG_MAGIC, FORMAT_VERSION)
    return head + struct.pack("<I", zlib.crc32(head))


def frame(rtype: int, seq: int, payload: bytes) -> bytes:
    """One record: header + payload. The CRC covers type, seq and payload; the length is checked by bounds."""
    body = bytes([rtype]) + _SEQ.pack(seq)
    crc = zlib.crc32(payload, zlib.crc32(body))
    return RECORD_HEADER.pack(len(payload), crc, rtype, seq) + payload


def create_segment(fs, directory: str, number: int) -> str:
    """Create ``log-<number>.vsl`` holding just its header, fsynced, directory fsynced."""
    path = os.path.join(directory, segment_name(number))
    if fs.exists(path):  # a leftover of an interrupted checkpoint: never named by the manifest
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
    """Appends records to one segment. Invariant: sequence numbers are strictly increasing by one."""

    def __init__(self, fs, path: str, next_seq: int):
        self.fs = fs
        self.path = path
        self.next_seq = int(next_seq)
        self.poisoned = False
        self._file = fs.open_append(path)

    @property
    def size(self) -> int:
        return self._file.size

    def append(self, rtype: int, payload: bytes, sync: bool) -> int:
        """Append one record (one write call) and fsync it if ``sync``; returns its sequence number.

        A failed write truncates the segment back and raises :class:`StorageError`; the sequence number is not
        consumed. A failed fsync, or a failed truncate-back, poisons the writer: every later append raises
        :class:`ReadOnlyError` (an fsync is never retried: the kernel may have dropped the pages already). The
        record whose fsync failed is cut off too, so an operation that raised never reappears after a reopen.
        """
        if self.poisoned:
            raise ReadOnlyError(f"log {self.path} refuses writes after an I/O failure; reopen the store")
        data = frame(rtype, self.next_seq, payload)
        start = self._file.size
        _crash.crashpoint("log.before_append")
        try:
            self._file.write(data)
        except OSError as exc:
            try:
                self._file.truncate(start)
            except OSError:
                self.poisoned = True
            raise StorageError(f"appending to {self.path} failed: {exc}") from exc
        _crash.crashpoint("log.after_write")
        if sync:
            try:
                self.sync()
            except StorageError:
                # Not acknowledged, so it must not come back on reopen either: cut it off (best effort; the writer
                # is poisoned whatever happens).
                try:
                    self._file.truncate(start)
                except OSError:
                    pass
                raise
        _crash.crashpoint("log.after_fsync")
        seq = self.next_seq
        self.next_seq += 1
        return seq

    def sync(self) -> None:
        if self.poisoned:
            raise ReadOnlyError(f"log {self.path} refuses writes after an I/O failure; reopen the store")
        try:
            self._file.fsync()
        except OSError as exc:
            self.poisoned = True
            raise StorageError(f"fsync of {self.path} failed: {exc}") from exc

    def close(self) -> None:
        self._file.close()


@dataclass
class LogRecord:
    seq: int
    rtype: int
    payload: bytes
    path: str
    offset: int


@dataclass
class LogScan:
    """What reading the segments found."""

    records: list[LogRecord] = field(default_factory=list)
    last_seq: int = 0
    truncated_bytes: int = 0
    truncated_path: str | None = None
    truncated_offset: int | None = None
    lost_records: int = 0
    end_offset: int = 0


def _frame_at(data: bytes, off: int):
    """``(length, rtype, seq)`` if a CRC-valid record starts at ``off``, else None. Bounds checked first."""
    if off < 0 or off + RECORD_HEADER_SIZE > len(data):
        return None
    length, crc, rtype, seq = RECORD_HEADER.unpack_from(data, off)
    if length > MAX_RECORD_BYTES or off + RECORD_HEADER_SIZE + length > len(data):
        return None
    view = memoryview(data)[off + 8 : off + RECORD_HEADER_SIZE + length]
    if zlib.crc32(view) != crc:
        return None
    return length, rtype, seq


def _check_header(data: bytes, path: str, last_seq: int) -> None:
    magic, version, crc = LOG_HEADER.unpack_from(data, 0)
    if magic != LOG_MAGIC:
        raise CorruptLogError(path, 0, last_seq, "not a vecstore_ref log segment (bad magic)")
    if zlib.crc32(data[:12]) != crc:
        raise CorruptLogError(path, 0, last_seq, "segment header checksum mismatch")
    if version > FORMAT_VERSION:
        raise UnsupportedFormatError(f"{path}: log format version {version}; this library reads up to {FORMAT_VERSION}")


def _later_valid_record(datas: list[bytes], seg: int, off: int, last_seq: int):
    """Where the first CRC-valid record with a sequence number above ``last_seq`` starts after ``off``, or None."""
    for i in range(seg, len(datas)):
        data = datas[i]
        if data is None:
            continue
        start = off + 1 if i == seg else LOG_HEADER_SIZE
        best = None
        for seq in range(last_seq + 1, last_seq + 1 + SEQ_LOOKAHEAD):
            pattern = _SEQ.pack(seq)
            pos = data.find(pattern, start + 9)
            while pos != -1:
                cand = pos - 9
                if cand >= start and (best is None or cand < best):
                    hit = _frame_at(data, cand)
                    if hit is not None and hit[2] == seq:
                        best = cand
                        break
                pos = data.find(pattern, pos + 1)
        if best is not None:
            return i, best
    return None


def _count_valid_from(datas: list[bytes], seg: int, off: int) -> int:
    count = 0
    for i in range(seg, len(datas)):
        data = datas[i]
        pos = off if i == seg else LOG_HEADER_SIZE
        while data is not None:
            hit = _frame_at(data, pos)
            if hit is None:
                break
            count += 1
            pos += RECORD_HEADER_SIZE + hit[0]
    return count


def read_segments(fs, paths: list[str], after_seq: int, *, repair: bool = False,
                  truncate_tail: bool = True) -> LogScan:
    """Read ``paths`` in order and return the records with ``seq > after_seq`` (see the module docstring)."""
    scan = LogScan(last_seq=after_seq)
    datas: list[bytes | None] = []
    for path in paths:
        try:
            datas.append(fs.read_bytes(path))
        except FileNotFoundError:
            raise CorruptLogError(path, 0, after_seq, "log segment named by the manifest is missing") from None
    prev_seq: int | None = None
    cut: tuple[int, int] | None = None  # (segment, offset) of the first bad record
    for i, (path, data) in enumerate(zip(paths, datas)):
        if len(data) < LOG_HEADER_SIZE:
            if i != len(paths) - 1 or data != segment_header()[: len(data)]:
                raise CorruptLogError(path, 0, scan.last_seq, "segment shorter than its header")
            cut = (i, 0)  # a torn segment creation: no record can follow
            break
        _check_header(data, path, scan.last_seq)
        off = LOG_HEADER_SIZE
        while off < len(data):
            hit = _frame_at(data, off)
            if hit is None:
                cut = (i, off)
                break
            length, rtype, seq = hit
            if rtype not in RECORD_TYPES:
                raise UnsupportedRecordError(path, off, scan.last_seq, f"unknown record type {rtype}")
            if prev_seq is not None and seq != prev_seq + 1:
                raise CorruptLogError(path, off, scan.last_seq, f"sequence {seq} after {prev_seq}")
            if prev_seq is None and seq > after_seq + 1:
                raise CorruptLogError(path, off, scan.last_seq, f"sequence {seq} after snapshot at {after_seq}")
            prev_seq = seq
            if seq > after_seq:
                payload = data[off + RECORD_HEADER_SIZE : off + RECORD_HEADER_SIZE + length]
                scan.records.append(LogRecord(seq, rtype, payload, path, off))
                scan.last_seq = seq
            off += RECORD_HEADER_SIZE + length
        if cut is not None:
            break

    if cut is None:
        scan.end_offset = len(datas[-1]) if datas else 0
        return scan

    seg, off = cut
    later = _later_valid_record(datas, seg, off, max(scan.last_seq, prev_seq or 0))
    if later is not None and not repair:
        raise CorruptLogError(paths[seg], off, scan.last_seq, "bad record followed by valid records")
    if later is not None:
        scan.lost_records = _count_valid_from(datas, later[0], later[1])
    # Cut everything from the bad record on: the rest of this segment and every later segment's records.
    cuts = [(seg, max(off, LOG_HEADER_SIZE) if off else 0)]
    cuts += [(j, LOG_HEADER_SIZE) for j in range(seg + 1, len(paths)) if len(datas[j]) > LOG_HEADER_SIZE]
    for j, at in cuts:
        removed = len(datas[j]) - at
        if removed <= 0 and not (j == seg and off == 0):
            continue
        scan.truncated_bytes += max(0, removed)
        if scan.truncated_path is None:
            scan.truncated_path, scan.truncated_offset = paths[j], at
        if truncate_tail:
            _crash.crashpoint("recover.truncating_tail")
            if j == seg and off == 0:  # rewrite a torn segment header
                fs.truncate(paths[j], 0)
                f = fs.open_append(paths[j])
                try:
                    f.write(segment_header())
                    f.fsync()
                finally:
                    f.close()
            else:
                fs.truncate(paths[j], at)
    last = len(paths) - 1
    scan.end_offset = off if seg == last else LOG_HEADER_SIZE
    if seg == last and off == 0:
        scan.end_offset = LOG_HEADER_SIZE
    return scan
