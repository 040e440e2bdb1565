"""Storage attacks and races that must change nothing outside a store and lose nothing acknowledged: a live
store's directory swapped for a link, a hard link in a segment's place, another snapshot under the live name,
backups racing checkpoints, file-system errors from the manager (RELIABILITY.md)."""

from __future__ import annotations

import errno
import io
import os
import shutil
import threading
import time

import numpy as np
import pytest

import vecstore_ref as vs
from vecstore_ref import _fs as fsmod
from vecstore_ref._fs import dir_digest


def vecs(n, dim=4, seed=0):
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def test_a_live_stores_directory_swapped_for_a_link_is_never_written_through(tmp_path):
    a_path, b_path = tmp_path / "a", tmp_path / "b"
    with vs.VecStore.open(b_path, dim=4, index="flat") as b:
        b.upsert("b-record", [1, 0, 0, 0])
    before = dir_digest(str(b_path))
    a = vs.VecStore.open(a_path, dim=4, index="flat")
    a.upsert("a-record", [0, 1, 0, 0])
    os.rename(a_path, tmp_path / "a-moved")
    os.symlink(b_path, a_path)
    with pytest.raises(vs.UnsafePathError):
        a.snapshot()
    a.close()  # its final checkpoint is refused as well, and logged
    assert dir_digest(str(b_path)) == before
    with vs.VecStore.open(tmp_path / "a-moved", read_only=True) as moved:
        assert moved.ids() == ["a-record"]


def test_a_store_opened_through_a_link_works_in_the_directory_it_named_then(tmp_path):
    real, other = tmp_path / "real", tmp_path / "other"
    os.symlink(real, tmp_path / "current")
    with vs.VecStore.open(real, dim=4, index="flat"):
        pass
    s = vs.VecStore.open(tmp_path / "current")
    assert s.path == str(real)
    os.remove(tmp_path / "current")  # re-pointed while the store is open (a blue/green switch)
    other.mkdir()
    os.symlink(other, tmp_path / "current")
    s.upsert("x", [1, 0, 0, 0])
    s.snapshot()
    s.close()
    assert os.listdir(other) == []
    with vs.VecStore.open(real, read_only=True) as r:
        assert r.ids() == ["x"]


def test_a_hard_link_in_a_segments_place_is_refused_for_writing(tmp_path):
    path = tmp_path / "s"
    with vs.VecStore.open(path, dim=4, index="flat") as s:
        s.upsert("a", [1, 0, 0, 0])
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"secret\n")
    seg = next(n for n in os.listdir(path) if n.startswith("log-"))
    os.remove(path / seg)
    os.link(outside, path / seg)
    with pytest.raises(vs.StorageError):
        vs.VecStore.open(path)
    assert outside.read_bytes() == b"secret\n"


def test_another_snapshot_under_the_live_name_is_refused_not_loaded(tmp_path):
    path = tmp_path / "s"
    with vs.VecStore.open(path, dim=4, index="flat") as s:
        s.upsert("x1", [1, 0, 0, 0])
        s.snapshot()
        old = next(n for n in os.listdir(path) if n.startswith("snap-"))
        shutil.copy(path / old, tmp_path / "old.vss")
        s.upsert("x2", [0, 1, 0, 0])
        s.snapshot()
    live = next(n for n in os.listdir(path) if n.startswith("snap-"))
    assert live != old
    shutil.copy(tmp_path / "old.vss", path / live)
    with pytest.raises(vs.CorruptSnapshotError, match="sequence"):
        vs.VecStore.open(path, read_only=True)
    from vecstore_ref.storage.verify import verify_files

    report = verify_files(fsmod.OSFileSystem(), str(path))
    assert not report.ok and any("sequence" in e for e in report.errors)


def test_a_refused_open_leaves_no_lock_file_behind(tmp_path):
    path = tmp_path / "s"
    with vs.VecStore.open(path, dim=4, index="flat"):
        pass
    os.remove(path / "LOCK")
    before = dir_digest(str(path))
    with pytest.raises(vs.InvalidArgumentError):
        vs.VecStore.open(path, dim=5)
    with pytest.raises(vs.InvalidArgumentError):
        vs.VecStore.open(path, metric="dot")
    assert dir_digest(str(path)) == before


def test_backups_taken_while_checkpoints_run_all_restore(tmp_path):
    """A checkpoint rewrites the manifest under its own lock: a backup copying meanwhile could name files it does
    not hold (acknowledged, yet its restore refused). It waits for the checkpoint instead."""
    mgr = vs.NamespaceManager(tmp_path / "root")
    store = mgr.create_namespace("docs", dim=4, index="flat")
    store.upsert_many([f"r{i}" for i in range(50)], vecs(50))
    stop = threading.Event()

    def churn():
        i = 0
        while not stop.is_set():
            store.upsert(f"c{i}", vecs(1, seed=i)[0])
            store.snapshot()
            i += 1

    t = threading.Thread(target=churn)
    t.start()
    names = []
    try:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            names.append(f"b{len(names)}")
            mgr.backup_namespace("docs", names[-1])
    finally:
        stop.set()
        t.join()
    for name in names:
        mgr.restore_namespace("docs", name)  # raises BackupCorruptError for a backup naming a missing file
    mgr.close()


def test_file_system_errors_in_manager_calls_are_storage_errors(tmp_path, monkeypatch):
    mgr = vs.NamespaceManager(tmp_path / "root")
    mgr.create_namespace("docs", dim=4, index="flat").upsert("a", [1, 0, 0, 0])

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(mgr._fs, "makedirs", full)
    for call in (lambda: mgr.create_namespace("more", dim=4), lambda: mgr.backup_namespace("docs", "b1")):
        with pytest.raises(vs.StorageError) as info:
            call()
        assert info.value.__cause__.errno == errno.ENOSPC
    monkeypatch.undo()
    mgr.close()


def test_an_import_makes_the_extracted_files_durable_before_the_backup_appears(tmp_path):
    synced = []

    class Tracing(fsmod.OSFileSystem):
        def fsync_dir(self, path):
            synced.append(os.path.basename(path))
            super().fsync_dir(path)

    mgr = vs.NamespaceManager(tmp_path / "root")
    mgr.create_namespace("docs", dim=4, index="flat").upsert("a", [1, 0, 0, 0])
    mgr.backup_namespace("docs", "nightly")
    buf = io.BytesIO()
    mgr.export_backup("docs", "nightly", buf)
    mgr.close()
    with fsmod.use_fs(Tracing()):
        mgr = vs.NamespaceManager(tmp_path / "root")
        mgr.import_backup("docs", io.BytesIO(buf.getvalue()), "copy")
        mgr.close()
    assert any(name.startswith(".tmp-copy-") for name in synced), synced


@pytest.mark.parametrize("lock", ["held", "fifo", "link"])
def test_an_open_refused_at_the_lock_keeps_no_root_and_the_path_opens_again_later(tmp_path, lock):
    path = tmp_path / "s"
    first = vs.VecStore.open(path, dim=4, index="flat")
    try:
        if lock != "held":
            first.close()
            os.remove(path / "LOCK")
            if lock == "fifo":
                os.mkfifo(path / "LOCK")
            else:
                (tmp_path / "elsewhere").write_text("")
                os.symlink(tmp_path / "elsewhere", path / "LOCK")
        with pytest.raises((vs.StoreLockedError, vs.UnsafePathError, vs.StorageError)):
            vs.VecStore.open(path)
    finally:
        first.close()
    assert str(os.path.realpath(path)) not in fsmod._roots
    shutil.rmtree(path)  # the same path, a new directory (another inode): a new store opens there
    (tmp_path / "other").mkdir()
    with vs.VecStore.open(path, dim=4, index="flat") as again:
        again.upsert("a", [1, 0, 0, 0])
    assert str(os.path.realpath(path)) not in fsmod._roots


FIFO_IMPORT_CHILD = r"""
import sys, vecstore_ref as vs
with vs.NamespaceManager(sys.argv[1]) as m:
    try:
        m.import_backup("n", sys.argv[2], "b2")
    except vs.UnsafePathError as exc:
        print(type(exc).__name__, exc)
"""


def test_a_fifo_given_as_an_archive_or_a_npy_is_refused_at_once_not_waited_on(tmp_path):
    import subprocess
    import sys

    from cli_helpers import assert_one_line_error, run

    root = tmp_path / "r"
    with vs.NamespaceManager(root) as m:
        m.create_namespace("n", dim=4, index="flat").upsert("a", [1, 0, 0, 0])
    fifo = tmp_path / "a.tar"
    os.mkfifo(fifo)
    before = dir_digest(str(root))
    # in a child, with a timeout: a regression would wait for a writer forever
    out = subprocess.run([sys.executable, "-c", FIFO_IMPORT_CHILD, str(root), str(fifo)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("NotRegularFileError"), out.stderr[-2000:]
    assert dir_digest(str(root)) == before
    assert_one_line_error(run("import-backup", "n", "b2", str(fifo), "--data", str(root)), "not a regular file")
    os.mkfifo(tmp_path / "v.npy")
    assert_one_line_error(run("ingest", str(tmp_path / "s"), str(tmp_path / "v.npy")), "not a regular file")
    assert not (tmp_path / "s").exists()


def test_an_archive_path_holding_a_fifo_or_a_directory_is_refused_and_left_as_it_is(tmp_path):
    import socket

    with vs.NamespaceManager(tmp_path / "r") as m:
        m.create_namespace("n", dim=4, index="flat").upsert("a", [1, 0, 0, 0])
        m.backup_namespace("n", "b1")
        os.mkfifo(tmp_path / "fifo")
        (tmp_path / "dir").mkdir()
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(tmp_path / "sock"))
        try:
            for name, error in (("fifo", vs.InvalidArgumentError), ("dir", vs.StorageError),
                                ("sock", vs.InvalidArgumentError)):
                before = os.lstat(tmp_path / name)
                with pytest.raises(error, match="left as it is"):
                    m.export_backup("n", "b1", tmp_path / name)
                after = os.lstat(tmp_path / name)
                assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)
        finally:
            sock.close()
        assert sorted(os.listdir(tmp_path)) == ["dir", "fifo", "r", "sock"]  # no temporary file left either
        m.export_backup("n", "b1", tmp_path / "ok.tar")  # a regular file is written (and replaced) as before
        m.export_backup("n", "b1", tmp_path / "ok.tar")
        assert os.path.getsize(tmp_path / "ok.tar") > 0
