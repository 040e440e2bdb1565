"""The MANIFEST file and the directory layout: names, parsing, leftovers, referenced files (RELIABILITY F19, F23)."""

from __future__ import annotations

import json
import os
import zlib

import pytest

from vecstore_ref import _crash
from vecstore_ref._fs import FaultFS, OSFileSystem, dir_digest
from vecstore_ref.errors import CorruptStoreError, InvalidArgumentError, UnsupportedFormatError
from vecstore_ref.storage import layout
from vecstore_ref.storage.log import create_segment
from vecstore_ref.storage.manifest import Manifest, decode_manifest, read_manifest, write_manifest

FS = OSFileSystem()
OPTIONS = {"dim": 4, "metric": "cosine", "index": "hnsw", "hnsw": {"m": 16}, "compaction": {"enabled": True}}


def sample(**kw) -> Manifest:
    fields = {"format_version": 1, "snapshot": "snap-0000000000000042.vss", "snapshot_seq": 42,
              "logs": ["log-00000003.vsl", "log-00000004.vsl"], "options": OPTIONS}
    fields.update(kw)
    return Manifest(**fields)


def text_with(body: dict, version: str = "1") -> bytes:
    """A MANIFEST with a correct CRC around any JSON: only the content checks can reject it."""
    line = json.dumps(body, separators=(",", ":"))
    return f"VSREF-MANIFEST {version}\n{line}\n{zlib.crc32(line.encode()):08x}\n".encode()


GOOD_BODY = {"snapshot": None, "snapshot_seq": 0, "logs": ["log-00000001.vsl"], "options": {}}


# --- manifest ------------------------------------------------------------------------------------------------


def test_round_trip(tmp_path):
    m = sample()
    write_manifest(FS, str(tmp_path), m)
    assert read_manifest(FS, str(tmp_path)) == m
    assert os.listdir(tmp_path) == ["MANIFEST"]


def test_round_trip_without_snapshot(tmp_path):
    m = sample(snapshot=None, snapshot_seq=0, logs=["log-00000001.vsl"], options={"dim": None})
    write_manifest(FS, str(tmp_path), m)
    assert read_manifest(FS, str(tmp_path)) == m


def test_file_is_three_lines_with_a_crc(tmp_path):
    write_manifest(FS, str(tmp_path), sample())
    text = (tmp_path / "MANIFEST").read_text()
    lines = text.split("\n")
    assert len(lines) == 4 and lines[3] == "" and lines[0] == "VSREF-MANIFEST 1"
    assert lines[2] == f"{zlib.crc32(lines[1].encode()):08x}"
    assert json.loads(lines[1])["logs"] == ["log-00000003.vsl", "log-00000004.vsl"] and " " not in lines[1]


def test_no_manifest_is_none(tmp_path):
    assert read_manifest(FS, str(tmp_path)) is None


def test_write_is_atomic_with_manifest_crash_points(tmp_path, monkeypatch):
    log = tmp_path / "crash.log"
    monkeypatch.setenv("VECSTORE_CRASH_LOG", str(log))
    _crash.reload_from_env()
    try:
        d = tmp_path / "d"
        d.mkdir()
        write_manifest(FS, str(d), sample())
    finally:
        monkeypatch.delenv("VECSTORE_CRASH_LOG")
        _crash.reload_from_env()
    assert log.read_text().split() == ["manifest.tmp_written", "manifest.tmp_fsynced", "manifest.renamed",
                                       "manifest.dir_fsynced"]


def test_a_failed_replace_keeps_the_old_manifest(tmp_path):
    fs = FaultFS()
    old = sample()
    write_manifest(fs, str(tmp_path), old)
    fs.fail("replace", nth=1, err=5)
    with pytest.raises(OSError):
        write_manifest(fs, str(tmp_path), sample(snapshot="snap-0000000000000050.vss", snapshot_seq=50))
    assert read_manifest(fs, str(tmp_path)) == old and os.listdir(tmp_path) == ["MANIFEST"]


def test_power_loss_before_the_dir_fsync_gives_back_the_old_manifest(tmp_path):
    fs = FaultFS()
    write_manifest(fs, str(tmp_path), sample())
    fs.fail("fsync_dir", nth=1, err=5)
    with pytest.raises(OSError):
        write_manifest(fs, str(tmp_path), sample(snapshot_seq=50, snapshot="snap-0000000000000050.vss"))
    fs.drop_unsynced()
    assert read_manifest(FS, str(tmp_path)) == sample()


@pytest.mark.parametrize("mutate", [
    pytest.param(lambda t: t.replace(b"VSREF-MANIFEST", b"VSREF-MANIFESX"), id="bad_magic"),
    pytest.param(lambda t: t.replace(b"VSREF-MANIFEST 1", b"VSREF-MANIFEST x"), id="bad_version"),
    pytest.param(lambda t: t.replace(b"VSREF-MANIFEST 1", b"VSREF-MANIFEST 0"), id="version_zero"),
    pytest.param(lambda t: t.replace(b"VSREF-MANIFEST 1", b"VSREF-MANIFEST \xd9\xa1"), id="non_ascii_digit"),
    pytest.param(lambda t: t[:-1], id="no_final_newline"),
    pytest.param(lambda t: t + b"extra\n", id="extra_line"),
    pytest.param(lambda t: t.rsplit(b"\n", 2)[0] + b"\n", id="missing_crc"),
    pytest.param(lambda t: t.replace(b'"snapshot_seq":42', b'"snapshot_seq":43'), id="json_changed"),
    pytest.param(lambda t: t[:-3] + b"zz\n", id="crc_not_hex"),
    pytest.param(lambda t: b"\xff" + t, id="not_utf8"),
    pytest.param(lambda t: b"", id="empty"),
    pytest.param(lambda t: t.split(b"\n")[0], id="header_only"),
])
def test_damaged_manifest_is_corrupt_store(tmp_path, mutate):
    write_manifest(FS, str(tmp_path), sample())
    path = tmp_path / "MANIFEST"
    path.write_bytes(mutate(path.read_bytes()))
    before = dir_digest(str(tmp_path))
    with pytest.raises(CorruptStoreError):
        read_manifest(FS, str(tmp_path))
    assert dir_digest(str(tmp_path)) == before


@pytest.mark.parametrize("body", [
    pytest.param({**GOOD_BODY, "logs": ["../x"]}, id="parent_path"),
    pytest.param({**GOOD_BODY, "logs": ["/etc/passwd"]}, id="absolute_path"),
    pytest.param({**GOOD_BODY, "logs": ["sub/log-00000001.vsl"]}, id="subdirectory"),
    pytest.param({**GOOD_BODY, "logs": ["log-1.vsl"]}, id="wrong_digits"),
    pytest.param({**GOOD_BODY, "logs": ["log-00000001.vsl\n"]}, id="trailing_newline_in_name"),
    pytest.param({**GOOD_BODY, "logs": []}, id="no_logs"),
    pytest.param({**GOOD_BODY, "logs": "log-00000001.vsl"}, id="logs_not_a_list"),
    pytest.param({**GOOD_BODY, "logs": ["log-00000001.vsl", "log-00000001.vsl"]}, id="duplicate_log"),
    pytest.param({**GOOD_BODY, "snapshot": "../snap-0000000000000000.vss"}, id="snapshot_path"),
    pytest.param({**GOOD_BODY, "snapshot": "snap-0000000000000005.vss"}, id="snapshot_seq_mismatch"),
    pytest.param({**GOOD_BODY, "snapshot_seq": -1}, id="negative_seq"),
    pytest.param({**GOOD_BODY, "snapshot_seq": True}, id="bool_seq"),
    pytest.param({**GOOD_BODY, "snapshot_seq": 1.0}, id="float_seq"),
    pytest.param({**GOOD_BODY, "options": []}, id="options_not_object"),
    pytest.param({k: v for k, v in GOOD_BODY.items() if k != "options"}, id="missing_key"),
    pytest.param({**GOOD_BODY, "extra": 1}, id="extra_key"),
    pytest.param([GOOD_BODY], id="not_an_object"),
])
def test_invalid_content_with_a_valid_crc_is_corrupt_store(tmp_path, body):
    (tmp_path / "MANIFEST").write_bytes(text_with(body))
    with pytest.raises(CorruptStoreError):
        read_manifest(FS, str(tmp_path))


def test_valid_crafted_manifest_reads():
    m = decode_manifest(text_with(GOOD_BODY))
    assert m == Manifest(1, None, 0, ["log-00000001.vsl"], {})


def test_nan_literal_is_rejected():
    line = '{"logs":["log-00000001.vsl"],"options":{"x":NaN},"snapshot":null,"snapshot_seq":0}'
    raw = f"VSREF-MANIFEST 1\n{line}\n{zlib.crc32(line.encode()):08x}\n".encode()
    with pytest.raises(CorruptStoreError):
        decode_manifest(raw)


def test_version_from_the_future(tmp_path):
    (tmp_path / "MANIFEST").write_bytes(text_with({"whatever": "v2 may hold"}, version="2"))
    before = dir_digest(str(tmp_path))
    with pytest.raises(UnsupportedFormatError):
        read_manifest(FS, str(tmp_path))
    assert dir_digest(str(tmp_path)) == before


def test_huge_manifest_is_corrupt():
    with pytest.raises(CorruptStoreError):
        decode_manifest(b"VSREF-MANIFEST 1\n" + b" " * (17 * 2**20))


@pytest.mark.parametrize("kw", [
    {"logs": ["../x"]}, {"logs": []}, {"snapshot": "snap.vss"}, {"snapshot_seq": 41},
    {"options": {"x": float("nan")}}, {"options": {"x": {1}}},
])
def test_write_refuses_an_invalid_manifest_and_writes_nothing(tmp_path, kw):
    with pytest.raises(InvalidArgumentError):
        write_manifest(FS, str(tmp_path), sample(**kw))
    assert os.listdir(tmp_path) == []


# --- layout: names -------------------------------------------------------------------------------------------


def test_names_and_parsers():
    assert layout.segment_name(3) == "log-00000003.vsl" and layout.parse_segment_name("log-00000003.vsl") == 3
    assert layout.snapshot_name(42) == "snap-0000000000000042.vss"
    assert layout.parse_snapshot_name("snap-0000000000000042.vss") == 42
    assert layout.LOCK == "LOCK" and layout.MANIFEST == "MANIFEST"
    assert layout.is_segment_name("log-99999999.vsl") and not layout.is_segment_name("log-00000001.vsl.tmp")
    assert layout.is_ours("MANIFEST.tmp") and layout.is_ours("snap-0000000000000001.vss.tmp")
    assert not layout.is_ours("LOCK") and not layout.is_ours("x.tmp") and not layout.is_ours("notes.txt")


@pytest.mark.parametrize("bad", [0, -1, 10**8, True, 1.0])
def test_segment_number_bounds(bad):
    with pytest.raises(ValueError):
        layout.segment_name(bad)


@pytest.mark.parametrize("bad", [-1, 10**16, False])
def test_snapshot_seq_bounds(bad):
    with pytest.raises(ValueError):
        layout.snapshot_name(bad)


@pytest.mark.parametrize("name", ["log-1.vsl", "../log-00000001.vsl", "log-00000001.vsl/", "LOG-00000001.VSL",
                                  "log-０００００００1.vsl", None])
def test_parsers_reject(name):
    with pytest.raises(CorruptStoreError):
        layout.parse_segment_name(name)


# --- layout: referenced files and leftovers ------------------------------------------------------------------


def make_store_dir(tmp_path, logs=(3, 4), snapshot_seq=42) -> Manifest:
    for n in logs:
        create_segment(FS, str(tmp_path), n)
    snap = layout.snapshot_name(snapshot_seq)
    (tmp_path / snap).write_bytes(b"snapshot bytes")
    m = Manifest(1, snap, snapshot_seq, [layout.segment_name(n) for n in logs], {})
    write_manifest(FS, str(tmp_path), m)
    (tmp_path / "LOCK").write_bytes(b"")
    return m


def test_check_referenced_files_accepts_a_complete_store(tmp_path):
    layout.check_referenced_files(FS, str(tmp_path), make_store_dir(tmp_path))


@pytest.mark.parametrize("victim", ["log-00000003.vsl", "log-00000004.vsl", "snap-0000000000000042.vss"])
def test_missing_referenced_file_is_named(tmp_path, victim):
    m = make_store_dir(tmp_path)
    os.unlink(tmp_path / victim)
    with pytest.raises(CorruptStoreError, match=victim):
        layout.check_referenced_files(FS, str(tmp_path), m)


def test_gap_in_segment_numbers(tmp_path):
    m = make_store_dir(tmp_path, logs=(3, 5))
    with pytest.raises(CorruptStoreError, match="log-00000004.vsl"):
        layout.check_referenced_files(FS, str(tmp_path), m)


def test_segments_out_of_order(tmp_path):
    m = make_store_dir(tmp_path, logs=(4, 3))
    with pytest.raises(CorruptStoreError):
        layout.check_referenced_files(FS, str(tmp_path), m)


def test_cleanup_removes_only_our_leftovers(tmp_path):
    m = make_store_dir(tmp_path)
    leftovers = ["MANIFEST.tmp", "snap-0000000000000050.vss.tmp", "snap-0000000000000050.vss",
                 "snap-0000000000000001.vss", "log-00000005.vsl", "log-00000002.vsl", "log-00000003.vsl.tmp"]
    foreign = ["notes.txt", "x.tmp", "log-5.vsl", "LOCK.tmp"]
    for name in leftovers + foreign:
        (tmp_path / name).write_bytes(b"junk")
    (tmp_path / "snap-0000000000000060.vss").mkdir()  # a directory with our name: not ours to delete
    fs = FaultFS()
    removed = layout.cleanup_orphans(fs, str(tmp_path), m)
    assert removed == sorted(leftovers) and fs.ops_count["fsync_dir"] == 1
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["LOCK", "MANIFEST", "log-00000003.vsl", "log-00000004.vsl", "snap-0000000000000042.vss",
         "snap-0000000000000060.vss"] + foreign)


def test_cleanup_with_nothing_to_do_changes_nothing(tmp_path):
    m = make_store_dir(tmp_path)
    before = dir_digest(str(tmp_path))
    fs = FaultFS()
    assert layout.cleanup_orphans(fs, str(tmp_path), m) == []
    assert dir_digest(str(tmp_path)) == before and "fsync_dir" not in fs.ops_count


def test_prepare_new_store_removes_a_torn_creation(tmp_path):
    create_segment(FS, str(tmp_path), 1)
    (tmp_path / "MANIFEST.tmp").write_bytes(b"half")
    (tmp_path / "notes.txt").write_bytes(b"mine")
    layout.prepare_new_store(FS, str(tmp_path))
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_prepare_new_store_refuses_to_overwrite_data(tmp_path):
    path = create_segment(FS, str(tmp_path), 1)
    with open(path, "ab") as f:
        f.write(b"a record")
    with pytest.raises(CorruptStoreError):
        layout.prepare_new_store(FS, str(tmp_path))
    assert os.path.getsize(path) > 16
