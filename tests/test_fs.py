"""The file-system layer: OSFileSystem (atomic replace, short writes), FaultFS (fail the n-th operation, power
loss) and dir_digest; plus the crash-point switch (RELIABILITY s.2 (d), F14-F17)."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys

import numpy as np
import pytest

from vecstore_ref import _crash
from vecstore_ref import _fs as fsmod
from vecstore_ref._fs import FaultFS, OSFileSystem, dir_digest


@pytest.fixture
def crash_log(tmp_path, monkeypatch):
    log = tmp_path / "crash.log"
    monkeypatch.setenv("VECSTORE_CRASH_LOG", str(log))
    monkeypatch.delenv("VECSTORE_CRASH_AT", raising=False)
    _crash.reload_from_env()
    yield lambda: log.read_text().split() if log.exists() else []
    monkeypatch.delenv("VECSTORE_CRASH_LOG")
    _crash.reload_from_env()


def read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


# --- OSFileSystem --------------------------------------------------------------------------------------------


def test_append_file_tracks_its_logical_end(tmp_path):
    fs = OSFileSystem()
    path = str(tmp_path / "f")
    f = fs.open_append(path, create=True)
    assert f.size == 0 and f.path == path
    f.write(b"hello ")
    f.write(memoryview(b"world"))
    f.write(np.arange(3, dtype="<u2"))  # any C-contiguous buffer
    f.fsync()
    assert f.size == 17 == os.path.getsize(path)
    f.truncate(5)
    f.write(b"!")
    f.close()
    f.close()
    assert read(path) == b"hello!"
    with pytest.raises(FileExistsError):
        fs.open_append(path, create=True)
    with pytest.raises(FileNotFoundError):
        fs.open_append(str(tmp_path / "missing"))
    g = fs.open_append(path)
    assert g.size == 6
    g.close()


def test_write_loops_over_short_os_writes(tmp_path, monkeypatch):
    real = os.pwrite
    calls = []

    def stingy(fd, data, offset):
        calls.append(len(data))
        return real(fd, bytes(data)[:3], offset)  # at most 3 bytes per call

    monkeypatch.setattr(fsmod.os, "pwrite", stingy)
    f = OSFileSystem().open_append(str(tmp_path / "f"), create=True)
    f.write(b"0123456789")
    f.close()
    assert read(tmp_path / "f") == b"0123456789" and len(calls) == 4


def test_write_returning_zero_raises(tmp_path, monkeypatch):
    monkeypatch.setattr(fsmod.os, "pwrite", lambda fd, data, off: 0)
    f = OSFileSystem().open_append(str(tmp_path / "f"), create=True)
    with pytest.raises(OSError):
        f.write(b"x")
    f.close()


def test_write_atomic_replaces_and_leaves_no_tmp(tmp_path, crash_log):
    fs = OSFileSystem()
    path = str(tmp_path / "target")
    assert fs.write_atomic(path, b"v1") == 2
    assert fs.write_atomic(path, [b"v2-", memoryview(b"abc"), np.zeros(2, np.uint8)], crash_prefix="snapshot") == 8
    assert read(path) == b"v2-abc\0\0"
    assert sorted(os.listdir(tmp_path)) == ["crash.log", "target"]
    assert crash_log() == ["snapshot.tmp_written", "snapshot.tmp_fsynced", "snapshot.renamed",
                           "snapshot.dir_fsynced"]


def test_write_atomic_removes_a_stale_tmp(tmp_path):
    fs = OSFileSystem()
    path = str(tmp_path / "target")
    open(path + ".tmp", "wb").write(b"left by a crash")
    fs.write_atomic(path, b"new")
    assert os.listdir(tmp_path) == ["target"] and read(path) == b"new"


@pytest.mark.parametrize("op", ["open", "write", "fsync", "replace"])
def test_failed_write_atomic_keeps_the_old_file_and_removes_the_tmp(tmp_path, op):
    fs = FaultFS()
    path = str(tmp_path / "target")
    fs.write_atomic(path, b"old")
    fs.fail(op, nth=1, err=errno.EIO)
    with pytest.raises(OSError):
        fs.write_atomic(path, [b"new", b"er"])
    assert read(path) == b"old" and os.listdir(tmp_path) == ["target"]


def test_write_atomic_failing_at_the_dir_fsync_has_replaced_the_file(tmp_path):
    """After the rename the new content is in place but not known durable: the error still reaches the caller."""
    fs = FaultFS()
    path = str(tmp_path / "target")
    fs.write_atomic(path, b"old")
    fs.fail("fsync_dir", nth=1, err=errno.EIO)
    with pytest.raises(OSError):
        fs.write_atomic(path, b"new")
    assert read(path) == b"new" and os.listdir(tmp_path) == ["target"]
    fs.drop_unsynced()  # ... and a power cut now may bring the old one back
    assert read(path) == b"old"


def test_makedirs_fsyncs_every_new_parent(tmp_path):
    fs = FaultFS()
    fs.makedirs(str(tmp_path / "a" / "b" / "c"))
    assert os.path.isdir(tmp_path / "a" / "b" / "c") and fs.ops_count["fsync_dir"] == 3
    fs.makedirs(str(tmp_path / "a" / "b" / "c"))  # exists: nothing to fsync
    assert fs.ops_count["fsync_dir"] == 3


def test_small_helpers(tmp_path):
    fs = OSFileSystem()
    p = str(tmp_path / "f")
    fs.write_atomic(p, b"0123456789")
    assert fs.exists(p) and not fs.isdir(p) and fs.isdir(str(tmp_path)) and fs.size(p) == 10
    assert fs.isfile(p) and not fs.isfile(str(tmp_path))
    fs.truncate(p, 4)
    assert fs.read_bytes(p) == b"0123"
    with fs.open_read(p) as f:
        assert f.read() == b"0123"
    fs.replace(p, p + "2")
    assert fs.listdir(str(tmp_path)) == ["f2"]
    fs.unlink(p + "2")
    fs.makedirs(str(tmp_path / "d" / "e"))
    fs.rmtree(str(tmp_path / "d"))
    assert fs.listdir(str(tmp_path)) == []


def test_default_fs_and_use_fs():
    default = fsmod.get_fs()
    assert isinstance(default, OSFileSystem)
    fault = FaultFS()
    with fsmod.use_fs(fault) as got:
        assert got is fault and fsmod.get_fs() is fault
    assert fsmod.get_fs() is default
    with pytest.raises(RuntimeError), fsmod.use_fs(fault):
        raise RuntimeError
    assert fsmod.get_fs() is default


# --- FaultFS: failing the n-th operation ---------------------------------------------------------------------


def test_fail_nth_write_counts_from_now(tmp_path):
    fs = FaultFS()
    f = fs.open_append(str(tmp_path / "f"), create=True)
    f.write(b"a")
    fs.fail("write", nth=3, err=errno.ENOSPC)
    f.write(b"b")
    f.write(b"c")
    with pytest.raises(OSError) as info:
        f.write(b"d")
    assert info.value.errno == errno.ENOSPC
    f.write(b"e")  # once only
    f.close()
    assert read(tmp_path / "f") == b"abce" and fs.injected == 1 and fs.ops_count["write"] == 5


def test_fail_forever(tmp_path):
    fs = FaultFS()
    f = fs.open_append(str(tmp_path / "f"), create=True)
    fs.fail("fsync", nth=2, err=errno.EIO, forever=True)
    f.fsync()
    for _ in range(3):
        with pytest.raises(OSError):
            f.fsync()
    fs.clear_faults()
    f.fsync()
    f.close()
    assert fs.injected == 3


def test_fail_any_counts_every_kind(tmp_path):
    fs = FaultFS()
    fs.fail("any", nth=3, err=errno.EIO)
    f = fs.open_append(str(tmp_path / "f"), create=True)  # 1: open
    f.write(b"x")  # 2: write
    with pytest.raises(OSError):
        f.fsync()  # 3: fsync
    f.close()
    assert fs.ops_count == {"open": 1, "write": 1, "fsync": 1, "any": 3}


@pytest.mark.parametrize("op", ["replace", "unlink", "fsync_dir", "truncate", "open", "read"])
def test_fail_each_kind(tmp_path, op):
    fs = FaultFS()
    p = str(tmp_path / "f")
    fs.write_atomic(p, b"data")
    calls = {
        "replace": lambda: fs.replace(p, p + "2"),
        "unlink": lambda: fs.unlink(p),
        "fsync_dir": lambda: fs.fsync_dir(str(tmp_path)),
        "truncate": lambda: fs.truncate(p, 1),
        "open": lambda: fs.open_append(p).close(),
        "read": lambda: fs.read_bytes(p),
    }
    fs.fail(op, nth=1, err=errno.EROFS)
    with pytest.raises(OSError) as info:
        calls[op]()
    assert info.value.errno == errno.EROFS
    assert read(p) == b"data"
    calls[op]()  # the next one works


def test_short_write_writes_part_then_raises(tmp_path):
    fs = FaultFS()
    f = fs.open_append(str(tmp_path / "f"), create=True)
    fs.fail("write", nth=1, short=True)
    with pytest.raises(OSError):
        f.write(b"0123456789")
    assert f.size == 5 and read(tmp_path / "f") == b"01234"
    f.close()


@pytest.mark.parametrize("kw", [{"op": "writes"}, {"op": "write", "nth": 0}, {"op": "fsync", "short": True}])
def test_fail_validates_its_arguments(kw):
    with pytest.raises(ValueError):
        FaultFS().fail(**kw)


# --- FaultFS: power loss -------------------------------------------------------------------------------------


def _make_synced_then_more(fs, path, synced: bytes, more: bytes):
    f = fs.open_append(path, create=True)
    f.write(synced)
    f.fsync()
    fs.fsync_dir(os.path.dirname(path))
    f.write(more)
    f.close()


def test_drop_unsynced_truncate_keeps_only_fsynced_bytes(tmp_path):
    fs = FaultFS()
    p = str(tmp_path / "f")
    _make_synced_then_more(fs, p, b"durable", b"-lost")
    fs.drop_unsynced()
    assert read(p) == b"durable"


@pytest.mark.parametrize("seed", range(5))
def test_drop_unsynced_random_prefix_keeps_a_prefix_of_what_was_written(tmp_path, seed):
    fs = FaultFS()
    p = str(tmp_path / "f")
    _make_synced_then_more(fs, p, b"durable", b"0123456789")
    fs.drop_unsynced(mode="random_prefix", rng=seed)
    data = read(p)
    assert data.startswith(b"durable") and b"durable0123456789".startswith(data)


@pytest.mark.parametrize("mode", ["zeros", "garbage"])
def test_drop_unsynced_fills_part_of_the_unsynced_tail(tmp_path, mode):
    fs = FaultFS()
    p = str(tmp_path / "f")
    _make_synced_then_more(fs, p, b"durable", b"x" * 1000)
    fs.drop_unsynced(mode=mode, rng=3)
    data = read(p)
    assert data[:7] == b"durable" and 7 < len(data) <= 1007
    if mode == "zeros":
        assert set(data[7:]) == {0}
    else:
        assert data[7:] != b"x" * (len(data) - 7)


def test_drop_unsynced_deletes_files_created_since_the_last_dir_fsync(tmp_path):
    fs = FaultFS()
    p = str(tmp_path / "new")
    f = fs.open_append(p, create=True)
    f.write(b"content")
    f.fsync()  # the data is durable, the directory entry is not
    f.close()
    assert p in fs.new_files
    fs.drop_unsynced()
    assert not os.path.exists(p)


def test_a_dir_fsync_makes_a_creation_durable(tmp_path):
    fs = FaultFS()
    p = str(tmp_path / "new")
    f = fs.open_append(p, create=True)
    f.write(b"content")
    f.fsync()
    f.close()
    fs.fsync_dir(str(tmp_path))
    fs.drop_unsynced()
    assert read(p) == b"content"


def test_drop_unsynced_undoes_a_rename_that_was_not_dir_fsynced(tmp_path):
    fs = FaultFS()
    target = str(tmp_path / "MANIFEST")
    fs.write_atomic(target, b"old")  # durable: write_atomic fsyncs the directory
    f = fs.open_append(target + ".tmp", create=True)
    f.write(b"new")
    f.fsync()
    f.close()
    fs.replace(target + ".tmp", target)  # no directory fsync
    assert read(target) == b"new"
    fs.drop_unsynced()
    assert read(target) == b"old" and os.listdir(tmp_path) == ["MANIFEST"]


def test_drop_unsynced_undoes_a_rename_onto_a_new_name(tmp_path):
    fs = FaultFS()
    src, dst = str(tmp_path / "a"), str(tmp_path / "b")
    fs.write_atomic(src, b"content")
    fs.replace(src, dst)
    fs.drop_unsynced()
    assert os.listdir(tmp_path) == ["a"] and read(src) == b"content"


def test_drop_unsynced_brings_back_an_unlink_that_was_not_dir_fsynced(tmp_path):
    fs = FaultFS()
    p = str(tmp_path / "old-segment")
    fs.write_atomic(p, b"durable")
    fs.unlink(p)
    fs.drop_unsynced()
    assert read(p) == b"durable"
    fs.unlink(p)
    fs.fsync_dir(str(tmp_path))
    fs.drop_unsynced()
    assert not os.path.exists(p)


def test_write_atomic_survives_power_loss_once_it_returned(tmp_path):
    fs = FaultFS()
    p = str(tmp_path / "f")
    fs.write_atomic(p, b"one")
    fs.write_atomic(p, b"two")
    fs.drop_unsynced(mode="garbage")
    assert read(p) == b"two" and os.listdir(tmp_path) == ["f"]


def test_two_renames_over_the_same_name_are_undone_in_order(tmp_path):
    fs = FaultFS()
    p = str(tmp_path / "MANIFEST")
    fs.write_atomic(p, b"v1")
    for content in (b"v2", b"v3"):
        f = fs.open_append(p + ".tmp", create=True)
        f.write(content)
        f.fsync()
        f.close()
        fs.replace(p + ".tmp", p)
    fs.drop_unsynced()
    assert read(p) == b"v1" and os.listdir(tmp_path) == ["MANIFEST"]


def test_files_never_touched_are_left_alone(tmp_path):
    (tmp_path / "other").write_bytes(b"not ours")
    fs = FaultFS()
    f = fs.open_append(str(tmp_path / "other"))  # existed before: taken as durable
    f.write(b" appended")
    f.close()
    fs.drop_unsynced()
    assert read(tmp_path / "other") == b"not ours"


def test_drop_unsynced_validates_mode():
    with pytest.raises(ValueError):
        FaultFS().drop_unsynced(mode="all")


# --- dir_digest ----------------------------------------------------------------------------------------------


def test_dir_digest_sees_every_change(tmp_path):
    (tmp_path / "a").write_bytes(b"1")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"22")
    d0 = dir_digest(str(tmp_path))
    assert [e[0] for e in d0] == ["a", "sub/", os.path.join("sub", "b")]
    assert d0[0][1] == 1 and len(d0[0][2]) == 64
    assert dir_digest(str(tmp_path)) == d0
    (tmp_path / "a").write_bytes(b"2")  # same size, other content
    d1 = dir_digest(str(tmp_path))
    assert d1 != d0
    (tmp_path / "empty").mkdir()
    d2 = dir_digest(str(tmp_path))
    assert d2 != d1
    os.symlink("a", tmp_path / "link")
    assert ("link", 0, "symlink:a") in dir_digest(str(tmp_path))


def test_dir_digest_of_a_missing_root_raises(tmp_path):
    with pytest.raises(OSError):
        dir_digest(str(tmp_path / "missing"))


# --- crash points --------------------------------------------------------------------------------------------


def test_crash_points_are_named_and_unique():
    required = {"log.before_append", "log.after_write", "log.after_fsync", "snapshot.tmp_written",
                "snapshot.tmp_fsynced", "snapshot.renamed", "snapshot.dir_fsynced", "manifest.tmp_written",
                "manifest.renamed", "manifest.dir_fsynced", "segment.created", "recover.truncating_tail",
                "recover.replaying", "batch.before_append", "batch.after_fsync", "batch.before_ack",
                "snapshot.log_rotated", "compact.snapshot_written", "compact.manifest_swapped",
                "compact.old_files_unlinked"}
    assert required <= set(_crash.CRASH_POINTS)
    assert len(set(_crash.CRASH_POINTS)) == len(_crash.CRASH_POINTS)


def test_crashpoint_is_a_no_op_without_the_environment(monkeypatch):
    monkeypatch.delenv("VECSTORE_CRASH_AT", raising=False)
    monkeypatch.delenv("VECSTORE_CRASH_LOG", raising=False)
    _crash.reload_from_env()
    for _ in range(1000):
        _crash.crashpoint("log.after_write")
    assert _crash.hit_counts() == {}


@pytest.mark.parametrize("spec", ["x:0", "x:-1", "x:y", ":3"])
def test_malformed_crash_spec_is_an_error(monkeypatch, spec):
    monkeypatch.setenv("VECSTORE_CRASH_AT", spec)
    with pytest.raises(ValueError):
        _crash.reload_from_env()
    monkeypatch.delenv("VECSTORE_CRASH_AT")
    _crash.reload_from_env()


def test_crash_log_lists_hits(crash_log):
    for name in ("a", "b", "a"):
        _crash.crashpoint(name)
    assert crash_log() == ["a", "b", "a"] and _crash.hit_counts() == {"a": 2, "b": 1}


def test_crashpoint_kills_on_the_nth_hit(tmp_path):
    code = ("from vecstore_ref._crash import crashpoint\n"
            "for i in range(5):\n    print(i, flush=True)\n    crashpoint('p')\n")
    log = tmp_path / "hits"
    env = dict(os.environ, VECSTORE_CRASH_AT="p:3", VECSTORE_CRASH_LOG=str(log))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == -9 and out.stdout.split() == ["0", "1", "2"]
    assert log.read_text().split() == ["p", "p", "p"]


def _in_a_thread(call, timeout_s: float = 20.0):
    """Run ``call`` on a thread; its outcome (value or exception), or None if it is still blocked after the
    timeout (a read of a FIFO with no writer would block forever)."""
    import threading

    box: list = []

    def run():
        try:
            box.append(call())
        except BaseException as exc:  # noqa: BLE001 - the outcome is the test's to judge
            box.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout_s)
    return box[0] if box else None


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_or_a_directory_where_a_store_file_should_be_is_refused_never_read(tmp_path):
    """RELIABILITY: a planted FIFO must not hang a reader; it and a directory in a file's place are typed errors."""
    import vecstore_ref as vs
    from vecstore_ref.storage.verify import verify_files

    path = tmp_path / "s"
    with vs.VecStore.open(path, dim=4, index="flat") as s:
        s.upsert("a", [1, 0, 0, 0])
        s.snapshot()
        s.upsert("b", [0, 1, 0, 0])
    log = next(p for p in os.listdir(path) if p.startswith("log-"))
    snap = next(p for p in os.listdir(path) if p.startswith("snap-"))
    for name, plant in [(log, os.mkfifo), (snap, os.mkfifo), (log, os.mkdir), (snap, os.mkdir)]:
        saved = (path / name).read_bytes()
        os.remove(path / name)
        plant(path / name)
        try:
            for call in (lambda: vs.VecStore.open(path, read_only=True),
                         lambda: vs.VecStore.open(path)):
                outcome = _in_a_thread(call)
                assert isinstance(outcome, vs.StorageError), (name, plant, outcome)
            report = _in_a_thread(lambda: verify_files(OSFileSystem(), str(path)))
            assert report is not None and not report.ok and any(name in e for e in report.errors), report
        finally:
            if os.path.isdir(path / name):
                os.rmdir(path / name)
            else:
                with contextlib.suppress(OSError):  # a blocked reader, if any, is let go
                    fd = os.open(path / name, os.O_WRONLY | os.O_NONBLOCK)
                    os.close(fd)
                os.remove(path / name)
            (path / name).write_bytes(saved)
    with vs.VecStore.open(path, read_only=True) as s:
        assert sorted(s.ids()) == ["a", "b"]
