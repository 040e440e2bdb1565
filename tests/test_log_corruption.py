"""One named test per log corruption shape (LevelDB ``log_test`` style), on ``storage.log.read_segments``.

The rule under test (RELIABILITY s.0, F1-F8): a bad record followed by no CRC-valid record with a higher sequence
number is a torn tail (cut off and reported); followed by one, it is corruption (``CorruptLogError``, no byte
modified) unless ``repair=True``. Unknown types and future versions are errors, never skipped.
"""

from __future__ import annotations

import os
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vecstore_ref._fs import OSFileSystem, dir_digest
from vecstore_ref.errors import (
    CorruptLogError,
    UnsupportedFormatError,
    UnsupportedRecordError,
)
from vecstore_ref.storage.format import (
    LOG_HEADER_SIZE,
    RECORD_BATCH,
    RECORD_HEADER,
    RECORD_HEADER_SIZE,
)
from vecstore_ref.storage.log import LogWriter, create_segment, frame, read_segments, segment_header

FS = OSFileSystem()
N = 6


def payload(i: int) -> bytes:
    """Payloads of different lengths; some hold bytes that look like sequence numbers."""
    return (b"record-%d|" % i) * (i + 1) + struct.pack("<Q", i + 2)


def build(directory, n: int = N, segments: int = 1, first_seq: int = 1) -> list[tuple[str, int, int, int]]:
    """Segments holding ``n`` records in all (spread evenly); returns (path, offset, length, seq) per record."""
    os.makedirs(directory, exist_ok=True)
    spans = []
    seq = first_seq
    per = -(-n // segments) if n else 0
    for s in range(segments):
        path = create_segment(FS, str(directory), s + 1)
        w = LogWriter(FS, path, seq)
        for i in range(seq - first_seq, min(n, seq - first_seq + per)):
            off = w.size
            got = w.append(RECORD_BATCH, payload(i), sync=False)
            assert got == seq
            spans.append((path, off, w.size - off, seq))
            seq += 1
        w.close()
    return spans


def paths_of(directory) -> list[str]:
    return sorted(os.path.join(directory, n) for n in os.listdir(directory) if n.startswith("log-"))


def patch(path: str, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def reencode(path: str, offset: int, rtype: int | None = None, seq: int | None = None) -> None:
    """Rewrite the record at ``offset`` with another type or seq and a fresh, valid CRC."""
    data = open(path, "rb").read()
    length, _, t, s = RECORD_HEADER.unpack_from(data, offset)
    body = data[offset + RECORD_HEADER_SIZE : offset + RECORD_HEADER_SIZE + length]
    patch(path, offset, frame(t if rtype is None else rtype, s if seq is None else seq, body))


def expect_refused(directory, error=CorruptLogError, after_seq: int = 0, **kw):
    """read_segments raises ``error`` and no byte in the directory changes."""
    before = dir_digest(str(directory))
    with pytest.raises(error) as info:
        read_segments(FS, paths_of(directory), after_seq, **kw)
    assert dir_digest(str(directory)) == before, "a refused read must not modify any file"
    return info.value


def payloads(scan) -> list[bytes]:
    return [r.payload for r in scan.records]


# --- the good case -------------------------------------------------------------------------------------------


def test_clean_log_reads_every_record_in_order(tmp_path):
    spans = build(tmp_path)
    scan = read_segments(FS, paths_of(tmp_path), 0)
    assert payloads(scan) == [payload(i) for i in range(N)]
    assert [r.seq for r in scan.records] == list(range(1, N + 1))
    assert [(r.path, r.offset) for r in scan.records] == [(p, o) for p, o, _, _ in spans]
    assert scan.last_seq == N and scan.truncated_bytes == 0 and scan.truncated_path is None
    assert scan.end_offset == os.path.getsize(spans[-1][0])


def test_empty_segment_reads_nothing(tmp_path):
    build(tmp_path, n=0)
    scan = read_segments(FS, paths_of(tmp_path), 7)
    assert scan.records == [] and scan.last_seq == 7 and scan.end_offset == LOG_HEADER_SIZE


# --- torn tails ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", [1, 2, 3], ids=["last", "second_last", "third_last"])
def test_torn_tail_at_every_byte_offset(tmp_path, which):
    """Cut inside one of the last 3 records at every byte offset: the prefix survives, the cut is reported and made
    on disk, and an append after it reads back."""
    spans = build(tmp_path / "base")
    base_path, start, length, _ = spans[-which]
    original = open(base_path, "rb").read()
    work = tmp_path / "w"
    work.mkdir()
    seg = str(work / os.path.basename(base_path))
    for cut in range(start + 1, start + length):
        with open(seg, "wb") as f:
            f.write(original[:cut])
        scan = read_segments(FS, [seg], 0)
        assert payloads(scan) == [payload(i) for i in range(N - which)], cut
        assert scan.truncated_bytes == cut - start
        assert (scan.truncated_path, scan.truncated_offset, scan.end_offset) == (seg, start, start)
        assert os.path.getsize(seg) == start
    # After the last cut: append and read back.
    w = LogWriter(FS, seg, scan.last_seq + 1)
    assert w.append(RECORD_BATCH, b"after the cut", sync=True) == N - which + 1
    w.close()
    again = read_segments(FS, [seg], 0)
    assert payloads(again)[-1] == b"after the cut" and again.truncated_bytes == 0


def test_cut_exactly_at_a_record_boundary_is_clean(tmp_path):
    spans = build(tmp_path)
    path, start, _, _ = spans[-1]
    os.truncate(path, start)
    scan = read_segments(FS, [path], 0)
    assert len(scan.records) == N - 1 and scan.truncated_bytes == 0


def test_zero_filled_tail(tmp_path):
    spans = build(tmp_path)
    path = spans[-1][0]
    size = os.path.getsize(path)
    with open(path, "ab") as f:
        f.write(b"\0" * 4096)
    scan = read_segments(FS, [path], 0)
    assert len(scan.records) == N and scan.truncated_bytes == 4096 and os.path.getsize(path) == size


def test_zeroed_last_record(tmp_path):
    path, start, length, _ = build(tmp_path)[-1]
    patch(path, start, b"\0" * length)
    scan = read_segments(FS, [path], 0)
    assert len(scan.records) == N - 1 and scan.truncated_bytes == length


@pytest.mark.parametrize("n", [1, 16, 17, 4096, 100_000])
def test_garbage_tail(tmp_path, n):
    path = build(tmp_path)[-1][0]
    with open(path, "ab") as f:
        f.write(np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes())
    scan = read_segments(FS, [path], 0)
    assert len(scan.records) == N and scan.truncated_bytes == n


def test_truncated_record_header(tmp_path):
    path, start, _, _ = build(tmp_path)[-1]
    os.truncate(path, start + 5)
    scan = read_segments(FS, [path], 0)
    assert len(scan.records) == N - 1 and scan.truncated_bytes == 5 and os.path.getsize(path) == start


@pytest.mark.parametrize("new_length", [0, 1, 10_000, 0xFFFFFFFF], ids=["zero", "smaller", "larger", "max_u32"])
def test_bad_length_in_last_record_is_a_torn_tail(tmp_path, new_length):
    path, start, length, _ = build(tmp_path)[-1]
    patch(path, start, struct.pack("<I", new_length))
    scan = read_segments(FS, [path], 0)
    assert len(scan.records) == N - 1 and scan.truncated_bytes == length


def test_bad_crc_in_last_record_is_a_torn_tail(tmp_path):
    path, start, length, _ = build(tmp_path)[-1]
    patch(path, start + 4, b"\xde\xad\xbe\xef")
    scan = read_segments(FS, [path], 0)
    assert len(scan.records) == N - 1 and scan.truncated_bytes == length


def test_read_only_reports_a_torn_tail_but_does_not_cut(tmp_path):
    path, start, _, _ = build(tmp_path)[-1]
    os.truncate(path, start + 3)
    before = dir_digest(str(tmp_path))
    scan = read_segments(FS, [path], 0, truncate_tail=False)
    assert len(scan.records) == N - 1 and scan.truncated_bytes == 3 and scan.end_offset == start
    assert dir_digest(str(tmp_path)) == before


# --- corruption: a bad record with valid records behind it ---------------------------------------------------


@pytest.mark.parametrize("index", [0, 2, 4])
def test_bad_crc_in_middle_record(tmp_path, index):
    spans = build(tmp_path)
    path, start, _, _ = spans[index]
    patch(path, start + 4, b"\xde\xad\xbe\xef")
    err = expect_refused(tmp_path)
    assert (err.path, err.offset, err.seq) == (path, start, index)  # seq of the last good record


@pytest.mark.parametrize("index", [0, 3])
def test_bit_flip_anywhere_in_a_middle_record(tmp_path, index):
    spans = build(tmp_path)
    path, start, length, _ = spans[index]
    original = open(path, "rb").read()
    for pos in range(start, start + length):
        for bit in (0x01, 0x80):
            data = bytearray(original)
            data[pos] ^= bit
            open(path, "wb").write(bytes(data))
            try:
                err = expect_refused(tmp_path, error=(CorruptLogError,))
            except AssertionError:
                raise AssertionError(f"flip at {pos} bit {bit:#x}") from None
            assert err.offset == start or isinstance(err, UnsupportedRecordError), pos


@pytest.mark.parametrize("new_length", [0, 1, 10_000, 0xFFFFFFFF], ids=["zero", "smaller", "larger", "max_u32"])
def test_bad_length_in_middle_record(tmp_path, new_length):
    path, start, _, _ = build(tmp_path)[2]
    patch(path, start, struct.pack("<I", new_length))
    err = expect_refused(tmp_path)
    assert err.offset == start and err.seq == 2


def test_zero_filled_hole_in_the_middle(tmp_path):
    """A zeroed block covering many records, with valid records after it: corruption, however many were lost."""
    os.makedirs(tmp_path, exist_ok=True)
    path = create_segment(FS, str(tmp_path), 1)
    w = LogWriter(FS, path, 1)
    offsets = []
    for i in range(400):
        offsets.append(w.size)
        w.append(RECORD_BATCH, b"x" * (i % 5), sync=False)
    w.close()
    patch(path, offsets[10], b"\0" * (offsets[390] - offsets[10]))
    err = expect_refused(tmp_path)
    assert err.offset == offsets[10] and err.seq == 10


def test_garbage_overwriting_the_middle(tmp_path):
    spans = build(tmp_path, n=40)
    path, start, _, _ = spans[5]
    end = spans[30][1]
    patch(path, start, np.random.default_rng(0).integers(0, 256, end - start, dtype=np.uint8).tobytes())
    err = expect_refused(tmp_path)
    assert err.offset == start and err.seq == 5


# --- record types, versions, headers -------------------------------------------------------------------------


@pytest.mark.parametrize("index", [2, N - 1], ids=["middle", "last"])
def test_unknown_record_type_with_valid_crc(tmp_path, index):
    path, start, _, _ = build(tmp_path)[index]
    reencode(path, start, rtype=250)
    err = expect_refused(tmp_path, error=UnsupportedRecordError)
    assert err.offset == start and err.seq == index


def test_future_version_in_segment_header(tmp_path):
    path = build(tmp_path)[-1][0]
    head = struct.pack("<8sI", b"VSREFLOG", 2)
    patch(path, 0, head + struct.pack("<I", zlib.crc32(head)))
    with open(path, "ab") as f:
        f.write(b"\x07" * 9)  # a torn tail too: still nothing may be cut
    expect_refused(tmp_path, error=UnsupportedFormatError)


def test_future_version_in_a_later_segment_stops_before_any_cut(tmp_path):
    spans = build(tmp_path, n=6, segments=2)
    first, last = spans[0][0], spans[-1][0]
    os.truncate(first, os.path.getsize(first) - 2)  # a bad tail in segment 1 ...
    head = struct.pack("<8sI", b"VSREFLOG", 9)
    patch(last, 0, head + struct.pack("<I", zlib.crc32(head)))  # ... and a future segment 2
    expect_refused(tmp_path, error=UnsupportedFormatError)


def test_bad_segment_magic(tmp_path):
    path = build(tmp_path)[0][0]
    patch(path, 0, b"NOTALOG!")
    assert expect_refused(tmp_path).offset == 0


def test_segment_header_crc_mismatch(tmp_path):
    path = build(tmp_path)[0][0]
    patch(path, 12, b"\0\0\0\0")
    expect_refused(tmp_path)


def test_segment_version_zero_is_corrupt(tmp_path):
    path = build(tmp_path)[0][0]
    head = struct.pack("<8sI", b"VSREFLOG", 0)
    patch(path, 0, head + struct.pack("<I", zlib.crc32(head)))
    expect_refused(tmp_path)


def test_torn_segment_creation_is_finished(tmp_path):
    """The last segment shorter than its header (a crash while creating it): fixed, reported, appendable."""
    build(tmp_path, n=4)
    partial = os.path.join(tmp_path, "log-00000002.vsl")
    open(partial, "wb").write(segment_header()[:7])
    scan = read_segments(FS, paths_of(tmp_path), 0)
    assert len(scan.records) == 4 and scan.truncated_bytes == 7 and scan.truncated_path == partial
    assert open(partial, "rb").read() == segment_header() and scan.end_offset == LOG_HEADER_SIZE
    w = LogWriter(FS, partial, scan.last_seq + 1)
    w.append(RECORD_BATCH, b"next", sync=True)
    w.close()
    assert payloads(read_segments(FS, paths_of(tmp_path), 0))[-1] == b"next"


def test_short_segment_that_is_not_the_last_is_corruption(tmp_path):
    build(tmp_path, n=4, segments=2)
    first = paths_of(tmp_path)[0]
    os.truncate(first, 9)
    expect_refused(tmp_path)


# --- sequence numbers ----------------------------------------------------------------------------------------


def test_sequence_gap(tmp_path):
    path, start, _, _ = build(tmp_path)[3]
    reencode(path, start, seq=40)
    err = expect_refused(tmp_path)
    assert err.offset == start and err.seq == 3


def test_duplicate_sequence(tmp_path):
    path, start, _, _ = build(tmp_path)[3]
    reencode(path, start, seq=3)
    expect_refused(tmp_path)


def test_sequence_step_back(tmp_path):
    spans = build(tmp_path)
    path, start, _, _ = spans[4]
    reencode(path, start, seq=1)
    expect_refused(tmp_path)


def test_sequence_gap_after_the_snapshot(tmp_path):
    build(tmp_path, first_seq=10)
    err = expect_refused(tmp_path, after_seq=5)
    assert err.offset == LOG_HEADER_SIZE


def test_sequence_gap_across_segments(tmp_path):
    spans = build(tmp_path, n=6, segments=2)
    path, start, _, _ = next(s for s in spans if s[0] == paths_of(tmp_path)[1])
    reencode(path, start, seq=99)
    expect_refused(tmp_path)


def test_records_at_or_below_after_seq_are_skipped(tmp_path):
    build(tmp_path)
    scan = read_segments(FS, paths_of(tmp_path), 4)
    assert [r.seq for r in scan.records] == [5, 6] and scan.skipped == 4 and scan.last_seq == 6
    scan = read_segments(FS, paths_of(tmp_path), 100)  # everything is already in the snapshot
    assert scan.records == [] and scan.last_seq == 100


def test_skipped_records_must_still_be_consecutive(tmp_path):
    path, start, _, _ = build(tmp_path)[1]
    reencode(path, start, seq=7)
    expect_refused(tmp_path, after_seq=4)


# --- several segments ----------------------------------------------------------------------------------------


def test_records_span_segments(tmp_path):
    build(tmp_path, n=9, segments=3)
    scan = read_segments(FS, paths_of(tmp_path), 0)
    assert [r.seq for r in scan.records] == list(range(1, 10))
    assert {os.path.basename(r.path) for r in scan.records} == {"log-00000001.vsl", "log-00000002.vsl",
                                                                  "log-00000003.vsl"}


def test_torn_tail_in_an_earlier_segment_with_records_in_a_later_one_is_corruption(tmp_path):
    spans = build(tmp_path, n=6, segments=2)
    first = paths_of(tmp_path)[0]
    last_in_first = [s for s in spans if s[0] == first][-1]
    patch(first, last_in_first[1] + RECORD_HEADER_SIZE, b"\xff")
    err = expect_refused(tmp_path)
    assert err.path == first and err.offset == last_in_first[1]


def test_torn_tail_followed_by_empty_segments_is_a_tail(tmp_path):
    build(tmp_path, n=5)
    create_segment(FS, str(tmp_path), 2)
    create_segment(FS, str(tmp_path), 3)
    first = paths_of(tmp_path)[0]
    with open(first, "ab") as f:
        f.write(b"\x11" * 10)
    scan = read_segments(FS, paths_of(tmp_path), 0)
    assert len(scan.records) == 5 and scan.truncated_bytes == 10 and scan.truncated_path == first
    assert scan.end_offset == LOG_HEADER_SIZE  # the end of the last segment


def test_missing_segment(tmp_path):
    build(tmp_path)
    with pytest.raises(CorruptLogError):
        read_segments(FS, paths_of(tmp_path) + [str(tmp_path / "log-00000002.vsl")], 0)


# --- repair --------------------------------------------------------------------------------------------------


def test_repair_truncates_and_counts_lost_records(tmp_path):
    spans = build(tmp_path)
    path, start, _, _ = spans[2]
    patch(path, start + RECORD_HEADER_SIZE + 2, b"\xff")
    expect_refused(tmp_path)
    scan = read_segments(FS, [path], 0, repair=True)
    assert payloads(scan) == [payload(0), payload(1)]
    assert scan.lost_records == N - 3 and scan.truncated_offset == start
    assert os.path.getsize(path) == start
    clean = read_segments(FS, [path], 0)
    assert len(clean.records) == 2 and clean.truncated_bytes == 0


def test_repair_counts_records_behind_several_bad_spots_and_segments(tmp_path):
    spans = build(tmp_path, n=12, segments=3)
    patch(spans[1][0], spans[1][1] + 4, b"\0\0\0\0")  # bad record 1 (segment 1)
    patch(spans[6][0], spans[6][1] + 4, b"\0\0\0\0")  # bad record 6 (segment 2)
    scan = read_segments(FS, paths_of(tmp_path), 0, repair=True)
    assert len(scan.records) == 1 and scan.lost_records == 12 - 1 - 2
    later = paths_of(tmp_path)[1:]
    assert all(os.path.getsize(p) == LOG_HEADER_SIZE for p in later)
    assert len(read_segments(FS, paths_of(tmp_path), 0).records) == 1


def test_repair_without_truncate_tail_only_reports(tmp_path):
    path, start, _, _ = build(tmp_path)[2]
    patch(path, start + 4, b"\0\0\0\0")
    before = dir_digest(str(tmp_path))
    scan = read_segments(FS, [path], 0, repair=True, truncate_tail=False)
    assert scan.lost_records == N - 3 and dir_digest(str(tmp_path)) == before


# --- bounds before allocation --------------------------------------------------------------------------------


def test_length_field_is_bounded_before_allocating(tmp_path):
    """A length of 0xFFFFFFFF (and one just above the file) is rejected by arithmetic, not by a failed 4 GiB read."""
    path, start, _, _ = build(tmp_path)[-1]
    patch(path, start, struct.pack("<I", 0xFFFFFFFF))
    tracemalloc.start()
    try:
        scan = read_segments(FS, [path], 0, truncate_tail=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(scan.records) == N - 1
    assert peak < 1 << 20


# --- refused reads leave every byte alone --------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["bad_crc", "unknown_type", "future_version", "seq_gap", "bad_magic"])
def test_the_file_is_byte_identical_after_a_refused_open(tmp_path, shape):
    spans = build(tmp_path)
    path, start, _, _ = spans[2]
    if shape == "bad_crc":
        patch(path, start + 4, b"\0\0\0\0")
    elif shape == "unknown_type":
        reencode(path, start, rtype=99)
    elif shape == "future_version":
        head = struct.pack("<8sI", b"VSREFLOG", 3)
        patch(path, 0, head + struct.pack("<I", zlib.crc32(head)))
    elif shape == "seq_gap":
        reencode(path, start, seq=50)
    else:
        patch(path, 0, b"XXXXXXXX")
    with open(path, "ab") as f:
        f.write(b"\x01\x02\x03")  # a tail that would be cut if the read went through
    expect_refused(tmp_path, error=(CorruptLogError, UnsupportedFormatError))


# --- property: truncation and single-byte damage -------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_log(tmp_path_factory):
    d = tmp_path_factory.mktemp("ref")
    spans = build(d, n=8)
    return open(spans[0][0], "rb").read(), spans


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_truncation_gives_a_prefix_of_the_records(tmp_path, reference_log, data):
    original, spans = reference_log
    cut = data.draw(st.integers(LOG_HEADER_SIZE, len(original)))
    path = str(tmp_path / "log-00000001.vsl")
    open(path, "wb").write(original[:cut])
    scan = read_segments(FS, [path], 0)
    whole = [i for i, (_, off, length, _) in enumerate(spans) if off + length <= cut]
    assert payloads(scan) == [payload(i) for i in whole]
    assert os.path.getsize(path) == (spans[whole[-1]][1] + spans[whole[-1]][2] if whole else LOG_HEADER_SIZE)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_single_byte_change_is_detected_or_cut_never_misread(tmp_path, reference_log, data):
    """Damage to one record byte: either a typed refusal with the file untouched, or (in the last record) a torn
    tail. Never a record with different content."""
    original, spans = reference_log
    pos = data.draw(st.integers(LOG_HEADER_SIZE, len(original) - 1))
    new = data.draw(st.integers(0, 255).filter(lambda b: b != original[pos]))
    d = tmp_path / f"p{pos}-{new}"
    d.mkdir(exist_ok=True)
    path = str(d / "log-00000001.vsl")
    damaged = original[:pos] + bytes([new]) + original[pos + 1 :]
    open(path, "wb").write(damaged)
    index = next(i for i, (_, off, length, _) in enumerate(spans) if off <= pos < off + length)
    try:
        scan = read_segments(FS, [path], 0)
    except CorruptLogError:  # UnsupportedRecordError included
        assert index < len(spans) - 1
        assert open(path, "rb").read() == damaged
        return
    assert index == len(spans) - 1, "damage before the last record must be refused"
    assert payloads(scan) == [payload(i) for i in range(index)]
    assert scan.truncated_offset == spans[index][1]
