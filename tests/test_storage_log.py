"""One named test per log corruption shape (LevelDB log_test style), through the store's open path."""

from __future__ import annotations

import os
import struct
import threading
import zlib

import numpy as np
import pytest

import vecstore_ref as vs
from vecstore_ref._fs import OSFileSystem, dir_digest
from vecstore_ref.storage.format import LOG_HEADER_SIZE, RECORD_HEADER, RECORD_HEADER_SIZE
from vecstore_ref.storage.log import frame, read_segments
from vecstore_ref.storage.records import encode_batch

N_RECORDS = 6


def build_store(path: str) -> list[tuple[int, int]]:
    """A store with N_RECORDS single upserts; returns (offset, length) of every record in its one segment."""
    with vs.VecStore.open(path, dim=3, metric="euclidean", index="flat") as s:
        for i in range(N_RECORDS):
            s.upsert(f"r{i}", [float(i), 1.0, 2.0], {"i": i})
    return record_spans(segment(path))


def segment(path: str) -> str:
    return os.path.join(path, sorted(n for n in os.listdir(path) if n.startswith("log-"))[-1])


def record_spans(seg: str) -> list[tuple[int, int]]:
    data = open(seg, "rb").read()
    spans, off = [], LOG_HEADER_SIZE
    while off < len(data):
        length = RECORD_HEADER.unpack_from(data, off)[0]
        spans.append((off, RECORD_HEADER_SIZE + length))
        off += RECORD_HEADER_SIZE + length
    return spans


def patch(path: str, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def ids_after_open(path: str, **kw) -> tuple[list[str], vs.RecoveryReport]:
    with vs.VecStore.open(path, **kw) as s:
        return sorted(s.ids()), s.recovery_report


def expect_corrupt(path: str) -> vs.CorruptLogError:
    open(os.path.join(path, "LOCK"), "ab").close()  # as after any earlier open
    before = dir_digest(path)
    with pytest.raises(vs.CorruptLogError) as info:
        vs.VecStore.open(path)
    assert dir_digest(path) == before, "a refused open must not modify any file"
    return info.value


@pytest.mark.parametrize("which", [1, 2, 3])
def test_torn_tail_at_every_byte_offset(tmp_path, which):
    """Cut the log inside one of the last 3 records at every byte offset: it opens, minus that record and later ones."""
    base = str(tmp_path / "base")
    spans = build_store(base)
    start, length = spans[-which]
    seg_name = os.path.basename(segment(base))
    for cut in range(start + 1, start + length):
        path = str(tmp_path / f"c{which}-{cut}")
        os.makedirs(path)
        for name in os.listdir(base):
            if name != "LOCK":
                with open(os.path.join(base, name), "rb") as src, open(os.path.join(path, name), "wb") as dst:
                    dst.write(src.read())
        os.truncate(os.path.join(path, seg_name), cut)
        ids, report = ids_after_open(path)
        assert ids == sorted(f"r{i}" for i in range(N_RECORDS - which))
        assert report.truncated_bytes == cut - start
        assert os.path.getsize(os.path.join(path, seg_name)) == start
        with vs.VecStore.open(path) as s:  # append after the cut, reopen, read back
            s.upsert("new", [9.0, 9.0, 9.0])
        assert "new" in ids_after_open(path)[0]


def test_zero_filled_tail(tmp_path):
    path = str(tmp_path / "s")
    build_store(path)
    with open(segment(path), "ab") as f:
        f.write(b"\0" * 4096)
    ids, report = ids_after_open(path)
    assert len(ids) == N_RECORDS and report.truncated_bytes == 4096


def test_zeroed_last_record(tmp_path):
    path = str(tmp_path / "s")
    spans = build_store(path)
    start, length = spans[-1]
    patch(segment(path), start, b"\0" * length)
    ids, report = ids_after_open(path)
    assert len(ids) == N_RECORDS - 1 and report.truncated_bytes == length


@pytest.mark.parametrize("n", [1, 17, 4096])
def test_garbage_tail(tmp_path, n):
    path = str(tmp_path / "s")
    build_store(path)
    with open(segment(path), "ab") as f:
        f.write(np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes())
    ids, report = ids_after_open(path)
    assert len(ids) == N_RECORDS and report.truncated_bytes == n


@pytest.mark.parametrize("record", [0, 2, 4])
def test_bit_flip_in_body_of_middle_record(tmp_path, record):
    path = str(tmp_path / "s")
    spans = build_store(path)
    start, length = spans[record]
    for k, pos in enumerate(range(start + RECORD_HEADER_SIZE, start + length, 7)):
        p = str(tmp_path / f"f{k}")
        os.makedirs(p)
        for name in os.listdir(path):
            if name != "LOCK":
                with open(os.path.join(path, name), "rb") as a, open(os.path.join(p, name), "wb") as b:
                    b.write(a.read())
        seg = segment(p)
        byte = open(seg, "rb").read()[pos]
        patch(seg, pos, bytes([byte ^ 0x10]))
        err = expect_corrupt(p)
        assert err.offset == start and err.seq == record


def test_bad_crc_in_middle_record(tmp_path):
    path = str(tmp_path / "s")
    start, _ = build_store(path)[2]
    data = open(segment(path), "rb").read()
    patch(segment(path), start + 4, bytes([data[start + 4] ^ 0xFF]))
    err = expect_corrupt(path)
    assert err.offset == start


@pytest.mark.parametrize("new_length", [0, 5, 10_000, 0xFFFFFFFF])
def test_bad_length_in_middle_record(tmp_path, new_length):
    path = str(tmp_path / "s")
    start, _ = build_store(path)[1]
    patch(segment(path), start, struct.pack("<I", new_length))
    expect_corrupt(path)


@pytest.mark.parametrize("new_length", [0, 5, 10_000, 0xFFFFFFFF])
def test_bad_length_in_last_record_is_a_torn_tail(tmp_path, new_length):
    path = str(tmp_path / "s")
    start, length = build_store(path)[-1]
    patch(segment(path), start, struct.pack("<I", new_length))
    ids, report = ids_after_open(path)
    assert len(ids) == N_RECORDS - 1 and report.truncated_bytes == length


def test_truncated_record_header(tmp_path):
    path = str(tmp_path / "s")
    start, _ = build_store(path)[-1]
    os.truncate(segment(path), start + 5)
    ids, report = ids_after_open(path)
    assert len(ids) == N_RECORDS - 1 and report.truncated_bytes == 5


def _reencode(path: str, index: int, rtype: int | None = None, seq: int | None = None) -> None:
    """Rewrite record ``index`` with another type or seq and a fresh, valid CRC."""
    seg = segment(path)
    data = bytearray(open(seg, "rb").read())
    start, length = record_spans(seg)[index]
    plen, _, t, s = RECORD_HEADER.unpack_from(data, start)
    payload = bytes(data[start + RECORD_HEADER_SIZE : start + length])
    new = frame(t if rtype is None else rtype, s if seq is None else seq, payload)
    data[start : start + length] = new
    open(seg, "wb").write(bytes(data))


def test_unknown_record_type_with_valid_crc(tmp_path):
    path = str(tmp_path / "s")
    build_store(path)
    _reencode(path, 3, rtype=250)
    open(os.path.join(path, "LOCK"), "ab").close()
    before = dir_digest(path)
    with pytest.raises(vs.UnsupportedRecordError):
        vs.VecStore.open(path)
    assert dir_digest(path) == before


def test_unknown_record_type_in_last_record_is_not_skipped(tmp_path):
    path = str(tmp_path / "s")
    build_store(path)
    _reencode(path, N_RECORDS - 1, rtype=7)
    with pytest.raises(vs.UnsupportedRecordError):
        vs.VecStore.open(path)


def test_sequence_gap(tmp_path):
    path = str(tmp_path / "s")
    build_store(path)
    _reencode(path, 3, seq=40)
    expect_corrupt(path)


def test_duplicate_sequence(tmp_path):
    path = str(tmp_path / "s")
    build_store(path)
    _reencode(path, 3, seq=3)
    expect_corrupt(path)


def test_version_from_the_future_in_segment_header(tmp_path):
    path = str(tmp_path / "s")
    build_store(path)
    head = struct.pack("<8sI", b"VSREFLOG", 2)
    patch(segment(path), 0, head + struct.pack("<I", zlib.crc32(head)))
    open(os.path.join(path, "LOCK"), "ab").close()
    before = dir_digest(path)
    with pytest.raises(vs.UnsupportedFormatError):
        vs.VecStore.open(path)
    assert dir_digest(path) == before


def test_repair_truncates_and_counts_lost_records(tmp_path):
    path = str(tmp_path / "s")
    start, _ = build_store(path)[2]
    patch(segment(path), start + RECORD_HEADER_SIZE + 2, b"\xff")
    expect_corrupt(path)
    ids, report = ids_after_open(path, repair=True)
    assert ids == ["r0", "r1"]
    assert report.records_lost == N_RECORDS - 3 and report.repaired
    assert ids_after_open(path)[0] == ["r0", "r1"]


def rewrite_record(seg: str, spans: list[tuple[int, int]], index: int, payload: bytes) -> None:
    """Replace record ``index`` by a CRC-valid record of the same type and seq holding ``payload``; the records
    after it move with it (the segment is written again)."""
    data = open(seg, "rb").read()
    start, length = spans[index]
    _, _, rtype, seq = RECORD_HEADER.unpack_from(data, start)
    with open(seg, "wb") as f:
        f.write(data[:start] + frame(rtype, seq, payload) + data[start + length:])


# A CRC-valid record whose content replay refuses: undecodable bytes, a vector of the wrong size, and a batch
# that first upserts a new record and then deletes an id that never existed (refused half-way through applying).
UNREPLAYABLE = {
    "undecodable": b"\x00not a batch record\xff" * 3,
    "wrong dim": encode_batch(4, [{"op": "upsert", "id": "w", "row": 0, "metadata": None, "expires_at": None}],
                              np.ones((1, 4), dtype=np.float32)),
    "half applied": encode_batch(3, [{"op": "upsert", "id": "half", "row": 0, "metadata": None, "expires_at": None},
                                     {"op": "delete", "id": "never-was"}], np.ones((1, 3), dtype=np.float32)),
}


@pytest.mark.parametrize("shape", sorted(UNREPLAYABLE))
def test_an_unreplayable_record_refuses_the_open_and_modifies_nothing(tmp_path, shape):
    path = str(tmp_path / "s")
    spans = build_store(path)
    rewrite_record(segment(path), spans, 2, UNREPLAYABLE[shape])
    with open(segment(path), "ab") as f:
        f.write(b"\x07" * 11)  # a torn tail too: not cut either, since the open is refused
    err = expect_corrupt(path)
    assert err.offset == spans[2][0]


@pytest.mark.parametrize("shape", sorted(UNREPLAYABLE))
def test_repair_cuts_the_log_at_an_unreplayable_record(tmp_path, shape):
    """With repair, a record whose content cannot be replayed is cut like a record with a bad CRC: what it and the
    records after it held is gone and counted, nothing of it is half applied, and the store takes writes again."""
    path = str(tmp_path / "s")
    spans = build_store(path)
    rewrite_record(segment(path), spans, 2, UNREPLAYABLE[shape])
    ids, report = ids_after_open(path, repair=True)
    assert ids == ["r0", "r1"]
    assert report.repaired and report.records_lost == N_RECORDS - 2  # the bad record is among the lost
    assert report.records_replayed == 2
    assert os.path.getsize(segment(path)) == spans[2][0]
    with vs.VecStore.open(path) as s:
        assert sorted(s.ids()) == ["r0", "r1"] and s.recovery_report.records_lost == 0
        s.upsert("after", [9.0, 9.0, 9.0])
    assert ids_after_open(path)[0] == ["after", "r0", "r1"]


def test_repair_of_an_unreplayable_record_after_a_snapshot(tmp_path):
    """The state is loaded again from the snapshot before the log is replayed up to the cut."""
    path = str(tmp_path / "s")
    with vs.VecStore.open(path, dim=3, metric="euclidean") as s:
        s.upsert_many([f"s{i}" for i in range(50)], np.arange(150, dtype=np.float32).reshape(50, 3))
        s.snapshot()
        for i in range(4):
            s.upsert(f"r{i}", [float(i), 1.0, 2.0])
    spans = record_spans(segment(path))
    rewrite_record(segment(path), spans, 1, UNREPLAYABLE["half applied"])
    linkers = sum(t.name == "vecstore-hnsw-linker" for t in threading.enumerate())
    with vs.VecStore.open(path, repair=True) as s:
        assert sorted(s.ids()) == sorted([f"s{i}" for i in range(50)] + ["r0"])  # nothing of "half"
        assert s.recovery_report.records_lost == 3
        assert [n.id for n in s.query([0.0, 1.0, 2.0], k=1)] == ["r0"]
    # the state loaded first and discarded left no linker thread behind
    assert sum(t.name == "vecstore-hnsw-linker" for t in threading.enumerate()) == linkers


def test_read_only_open_reports_but_does_not_cut_a_torn_tail(tmp_path):
    path = str(tmp_path / "s")
    build_store(path)
    with open(segment(path), "ab") as f:
        f.write(b"\x01\x02\x03")
    before = dir_digest(path)
    with vs.VecStore.open(path, read_only=True) as s:
        assert len(s) == N_RECORDS and s.recovery_report.truncated_bytes == 3
    assert dir_digest(path) == before


def test_read_segments_rejects_lengths_before_allocating(tmp_path):
    """A length field of 0xFFFFFFFF is checked against the file size: no 4 GiB allocation."""
    path = str(tmp_path / "s")
    start, _ = build_store(path)[-1]
    patch(segment(path), start, struct.pack("<I", 0xFFFFFFFF))
    scan = read_segments(OSFileSystem(), [segment(path)], 0, truncate_tail=False)
    assert len(scan.records) == N_RECORDS - 1


def test_missing_segment_named_by_manifest(tmp_path):
    path = str(tmp_path / "s")
    build_store(path)
    os.unlink(segment(path))
    with pytest.raises(vs.CorruptStoreError):
        vs.VecStore.open(path)


def test_leftover_tmp_files_are_removed(tmp_path):
    path = str(tmp_path / "s")
    build_store(path)
    for name in ("snap-0000000000000009.vss.tmp", "MANIFEST.tmp", "snap-0000000000000002.vss", "notes.txt"):
        open(os.path.join(path, name), "wb").write(b"junk")
    with vs.VecStore.open(path) as s:
        assert len(s) == N_RECORDS
        assert sorted(s.recovery_report.orphans_removed) == sorted(
            ["snap-0000000000000009.vss.tmp", "MANIFEST.tmp", "snap-0000000000000002.vss"])
    assert os.path.exists(os.path.join(path, "notes.txt"))


def test_snapshot_corruption_is_detected(tmp_path):
    path = str(tmp_path / "s")
    build_store(path)
    with vs.VecStore.open(path) as s:
        s.snapshot()
    snap = os.path.join(path, next(n for n in os.listdir(path) if n.startswith("snap-")))
    size = os.path.getsize(snap)
    for pos in range(0, size, max(1, size // 40)):
        data = bytearray(open(snap, "rb").read())
        original = bytes(data)
        data[pos] ^= 0x01
        open(snap, "wb").write(bytes(data))
        with pytest.raises(vs.CorruptSnapshotError):
            vs.VecStore.open(path)
        open(snap, "wb").write(original)
    for cut in (0, 5, 12, size // 2, size - 1):
        data = open(snap, "rb").read()
        open(snap, "wb").write(data[:cut])
        with pytest.raises(vs.CorruptSnapshotError):
            vs.VecStore.open(path)
        open(snap, "wb").write(data)
    assert ids_after_open(path)[0] == sorted(f"r{i}" for i in range(N_RECORDS))


def test_second_writer_in_another_process_is_refused(tmp_path):
    import subprocess
    import sys

    path = str(tmp_path / "s")
    build_store(path)
    code = ("import vecstore_ref as vs, sys\n"
            "try:\n    vs.VecStore.open(sys.argv[1])\nexcept vs.StoreLockedError as e:\n    print('LOCKED', e)\n")
    with vs.VecStore.open(path):
        before = dir_digest(path)
        out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, timeout=60)
        assert out.stdout.startswith("LOCKED") and str(os.getpid()) in out.stdout
        assert dir_digest(path) == before
    out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, timeout=60)
    assert "LOCKED" not in out.stdout


def test_lock_is_free_after_kill9(tmp_path):
    import signal
    import subprocess
    import sys

    path = str(tmp_path / "s")
    build_store(path)
    holder = subprocess.Popen([sys.executable, "-c",
                               "import vecstore_ref as vs, sys, time\ns = vs.VecStore.open(sys.argv[1])\n"
                               "print('HELD', flush=True)\ntime.sleep(60)\n", path],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "HELD"
    with pytest.raises(vs.StoreLockedError):
        vs.VecStore.open(path)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    with vs.VecStore.open(path) as s:
        assert len(s) == N_RECORDS
