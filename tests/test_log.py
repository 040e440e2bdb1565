"""The log writer: framing, sequence numbers, crash points, and what a failed write or fsync leaves behind
(RELIABILITY F15-F17), through FaultFS."""

from __future__ import annotations

import errno
import os
import struct
import subprocess
import sys
import zlib

import pytest

from vecstore_ref import _crash
from vecstore_ref._fs import FaultFS, OSFileSystem
from vecstore_ref.errors import CorruptLogError, InvalidArgumentError, ReadOnlyError, StorageError
from vecstore_ref.storage.format import (
    FORMAT_VERSION,
    LOG_HEADER,
    LOG_HEADER_SIZE,
    LOG_MAGIC,
    MAX_RECORD_BYTES,
    RECORD_BATCH,
    RECORD_CRC_OFFSET,
    RECORD_HEADER,
    RECORD_HEADER_SIZE,
    RECORD_LEN_OFFSET,
    RECORD_PAYLOAD_OFFSET,
    RECORD_SEQ_OFFSET,
    RECORD_TYPE_OFFSET,
)
from vecstore_ref.storage.log import LogWriter, create_segment, frame, read_segments, segment_header

FS = OSFileSystem()


def new_log(tmp_path, fs=FS, next_seq: int = 1) -> LogWriter:
    path = create_segment(fs, str(tmp_path), 1)
    return LogWriter(fs, path, next_seq)


def read_all(path: str, after: int = 0):
    return read_segments(FS, [path], after, truncate_tail=False)


@pytest.fixture
def crash_log(tmp_path, monkeypatch):
    """Turn on VECSTORE_CRASH_LOG in this process; yields a function returning the names hit so far."""
    log = tmp_path / "crash.log"
    monkeypatch.setenv("VECSTORE_CRASH_LOG", str(log))
    monkeypatch.delenv("VECSTORE_CRASH_AT", raising=False)
    _crash.reload_from_env()
    yield lambda: log.read_text().split() if log.exists() else []
    monkeypatch.delenv("VECSTORE_CRASH_LOG")
    _crash.reload_from_env()


# --- format --------------------------------------------------------------------------------------------------


def test_segment_header_layout():
    head = segment_header()
    assert len(head) == LOG_HEADER_SIZE == 16
    magic, version, crc = LOG_HEADER.unpack(head)
    assert (magic, version, crc) == (LOG_MAGIC, FORMAT_VERSION, zlib.crc32(head[:12]))


def test_record_layout_matches_the_named_offsets():
    rec = frame(RECORD_BATCH, 0x0102030405060708, b"hello")
    assert len(rec) == RECORD_HEADER_SIZE + 5 == 22
    assert struct.unpack_from("<I", rec, RECORD_LEN_OFFSET)[0] == 5
    assert rec[RECORD_TYPE_OFFSET] == RECORD_BATCH
    assert struct.unpack_from("<Q", rec, RECORD_SEQ_OFFSET)[0] == 0x0102030405060708
    assert rec[RECORD_PAYLOAD_OFFSET:] == b"hello"
    crc = struct.unpack_from("<I", rec, RECORD_CRC_OFFSET)[0]
    assert crc == zlib.crc32(rec[RECORD_TYPE_OFFSET:])  # type + seq + payload
    assert RECORD_HEADER.unpack_from(rec) == (5, crc, RECORD_BATCH, 0x0102030405060708)


def test_create_segment_writes_only_the_header(tmp_path, crash_log):
    path = create_segment(FS, str(tmp_path), 3)
    assert os.path.basename(path) == "log-00000003.vsl"
    assert open(path, "rb").read() == segment_header()
    assert crash_log() == ["segment.created"]


def test_create_segment_replaces_a_leftover(tmp_path):
    open(tmp_path / "log-00000001.vsl", "wb").write(b"leftover of a crashed checkpoint")
    path = create_segment(FS, str(tmp_path), 1)
    assert open(path, "rb").read() == segment_header()


# --- appends -------------------------------------------------------------------------------------------------


def test_append_assigns_consecutive_sequence_numbers(tmp_path):
    w = new_log(tmp_path, next_seq=41)
    assert [w.append(RECORD_BATCH, b"x" * i, sync=i % 2 == 0) for i in range(5)] == [41, 42, 43, 44, 45]
    assert w.next_seq == 46 and w.size == os.path.getsize(w.path)
    w.close()
    w.close()  # idempotent
    scan = read_all(w.path, after=40)
    assert [r.seq for r in scan.records] == [41, 42, 43, 44, 45]
    assert [r.payload for r in scan.records] == [b"x" * i for i in range(5)]


def test_append_is_one_write_call(tmp_path):
    fs = FaultFS()
    w = new_log(tmp_path, fs)
    before = fs.ops_count.get("write", 0)
    w.append(RECORD_BATCH, b"p" * 1000, sync=False)
    assert fs.ops_count["write"] == before + 1


def test_writer_appends_at_the_current_end(tmp_path):
    w = new_log(tmp_path)
    w.append(RECORD_BATCH, b"one", sync=True)
    w.close()
    w2 = LogWriter(FS, w.path, 2)
    assert w2.size == os.path.getsize(w.path)
    w2.append(RECORD_BATCH, b"two", sync=True)
    w2.close()
    assert [r.payload for r in read_all(w.path).records] == [b"one", b"two"]


def test_crash_points_in_order(tmp_path, crash_log):
    w = new_log(tmp_path)
    w.append(RECORD_BATCH, b"a", sync=True)
    w.append(RECORD_BATCH, b"b", sync=False)
    assert crash_log() == ["segment.created"] + ["log.before_append", "log.after_write", "log.after_fsync"] * 2


def test_unknown_record_type_is_refused_before_writing(tmp_path):
    w = new_log(tmp_path)
    with pytest.raises(InvalidArgumentError):
        w.append(77, b"x", sync=True)
    assert w.size == LOG_HEADER_SIZE and w.next_seq == 1


def test_oversized_payload_is_refused_before_writing(tmp_path):
    class Huge(bytes):
        def __len__(self):
            return MAX_RECORD_BYTES + 1

    w = new_log(tmp_path)
    with pytest.raises(InvalidArgumentError):
        w.append(RECORD_BATCH, Huge(b"x"), sync=True)
    assert w.size == LOG_HEADER_SIZE


def test_writer_refuses_a_segment_shorter_than_its_header(tmp_path):
    path = str(tmp_path / "log-00000001.vsl")
    open(path, "wb").write(b"VSREF")
    with pytest.raises(CorruptLogError):
        LogWriter(FS, path, 1)


@pytest.mark.parametrize("bad", [0, -1, True, 1.0])
def test_writer_needs_a_positive_int_sequence(tmp_path, bad):
    path = create_segment(FS, str(tmp_path), 1)
    with pytest.raises(InvalidArgumentError):
        LogWriter(FS, path, bad)


# --- failed writes -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO, errno.EFBIG])
def test_failed_write_is_cut_back_and_consumes_no_sequence_number(tmp_path, err):
    fs = FaultFS()
    w = new_log(tmp_path, fs)
    w.append(RECORD_BATCH, b"first", sync=True)
    size = w.size
    fs.fail("write", nth=1, err=err)
    with pytest.raises(StorageError) as info:
        w.append(RECORD_BATCH, b"second", sync=True)
    assert info.value.__cause__.errno == err
    assert w.size == size == os.path.getsize(w.path) and w.next_seq == 2 and not w.poisoned
    assert w.append(RECORD_BATCH, b"third", sync=True) == 2
    assert [r.payload for r in read_all(w.path).records] == [b"first", b"third"]


def test_short_write_leaves_the_log_readable(tmp_path):
    """A real partial write (half the record reached the file) followed by ENOSPC: the writer cuts it off."""
    fs = FaultFS()
    w = new_log(tmp_path, fs)
    w.append(RECORD_BATCH, b"a" * 100, sync=True)
    size = w.size
    fs.fail("write", nth=1, short=True)
    with pytest.raises(StorageError):
        w.append(RECORD_BATCH, b"b" * 100, sync=True)
    assert os.path.getsize(w.path) == size
    scan = read_segments(FS, [w.path], 0)
    assert [r.payload for r in scan.records] == [b"a" * 100] and scan.truncated_bytes == 0
    assert w.append(RECORD_BATCH, b"c", sync=True) == 2


def test_short_write_really_writes_part_of_the_record(tmp_path):
    fs = FaultFS()
    w = new_log(tmp_path, fs)
    fs.fail("write", nth=1, short=True)
    fs.fail("truncate", nth=1, err=errno.EIO)  # so the partial record stays on disk for us to see
    with pytest.raises(StorageError):
        w.append(RECORD_BATCH, b"z" * 64, sync=True)
    partial = os.path.getsize(w.path) - LOG_HEADER_SIZE
    assert 0 < partial < RECORD_HEADER_SIZE + 64
    assert w.poisoned
    scan = read_segments(FS, [w.path], 0)  # ... and reading it is a torn tail
    assert scan.records == [] and scan.truncated_bytes == partial


def test_failed_cut_back_poisons_the_writer(tmp_path):
    fs = FaultFS()
    w = new_log(tmp_path, fs)
    fs.fail("write", nth=1).fail("truncate", nth=1, err=errno.EIO)
    with pytest.raises(StorageError):
        w.append(RECORD_BATCH, b"x", sync=True)
    assert w.poisoned
    with pytest.raises(ReadOnlyError):
        w.append(RECORD_BATCH, b"y", sync=True)


def test_failed_fsync_poisons_the_writer_and_is_never_retried(tmp_path):
    fs = FaultFS()
    w = new_log(tmp_path, fs)
    w.append(RECORD_BATCH, b"acked", sync=True)
    size = w.size
    fs.fail("fsync", nth=1, err=errno.EIO)
    with pytest.raises(StorageError):
        w.append(RECORD_BATCH, b"not acked", sync=True)
    assert w.poisoned and w.next_seq == 2
    assert os.path.getsize(w.path) == size  # the unacknowledged record is cut off
    fsyncs = fs.ops_count["fsync"]
    for call in (lambda: w.append(RECORD_BATCH, b"later", sync=True), w.sync):
        with pytest.raises(ReadOnlyError):
            call()
    assert fs.ops_count["fsync"] == fsyncs  # no retry
    assert [r.payload for r in read_all(w.path).records] == [b"acked"]
    w.close()


def test_failed_sync_call_poisons_the_writer(tmp_path):
    fs = FaultFS()
    w = new_log(tmp_path, fs)
    w.append(RECORD_BATCH, b"unsynced", sync=False)
    fs.fail("fsync", nth=1, err=errno.EIO)
    with pytest.raises(StorageError):
        w.sync()
    assert w.poisoned
    with pytest.raises(ReadOnlyError):
        w.append(RECORD_BATCH, b"x", sync=False)


def test_power_loss_keeps_exactly_the_fsynced_records(tmp_path):
    fs = FaultFS()
    w = new_log(tmp_path, fs)
    for i in range(5):
        w.append(RECORD_BATCH, b"synced-%d" % i, sync=True)
    for i in range(3):
        w.append(RECORD_BATCH, b"unsynced-%d" % i, sync=False)
    w.close()
    fs.drop_unsynced(mode="garbage", rng=7)
    scan = read_segments(FS, [w.path], 0)
    assert [r.payload for r in scan.records] == [b"synced-%d" % i for i in range(5)]


# --- kill -9 -------------------------------------------------------------------------------------------------

CHILD = """
import sys
from vecstore_ref._fs import OSFileSystem
from vecstore_ref.storage.log import LogWriter, create_segment
fs = OSFileSystem()
path = create_segment(fs, sys.argv[1], 1)
w = LogWriter(fs, path, 1)
for i in range(5):
    w.append(1, b"rec-%d" % i, sync=True)
    print("ACK", i, flush=True)
"""


@pytest.mark.parametrize("point,expect_in_log", [("log.before_append", 2), ("log.after_write", 3),
                                                  ("log.after_fsync", 3)])
def test_kill9_inside_append(tmp_path, point, expect_in_log):
    """kill -9 at the third append's crash point: two records acknowledged; the third is in the log entirely iff
    its write happened (the page cache survives a process kill)."""
    env = dict(os.environ, VECSTORE_CRASH_AT=f"{point}:3")
    env.pop("VECSTORE_CRASH_LOG", None)
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == -9, out.stderr
    assert out.stdout.split() == ["ACK", "0", "ACK", "1"]
    scan = read_segments(FS, [str(tmp_path / "log-00000001.vsl")], 0)
    assert [r.payload for r in scan.records] == [b"rec-%d" % i for i in range(expect_in_log)]
    assert scan.truncated_bytes == 0
