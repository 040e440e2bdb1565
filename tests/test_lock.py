"""The directory lock: one writer per store, refused at once in the same process (any thread) and in another
process, named by pid, and never stale after kill -9 (RELIABILITY s.1.7, F18)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

import vecstore_ref as vs
from vecstore_ref._fs import dir_digest
from vecstore_ref.errors import StorageError, StoreLockedError
from vecstore_ref.storage.lock import DirectoryLock

TRY_LOCK = """
import sys
from vecstore_ref.errors import StoreLockedError
from vecstore_ref.storage.lock import DirectoryLock
try:
    DirectoryLock(sys.argv[1]).acquire()
    print("ACQUIRED")
except StoreLockedError as e:
    print("LOCKED", e)
"""

HOLD_LOCK = """
import sys, time
from vecstore_ref.storage.lock import DirectoryLock
DirectoryLock(sys.argv[1]).acquire()
print("HELD", flush=True)
time.sleep(120)
"""


def try_in_subprocess(path) -> str:
    out = subprocess.run([sys.executable, "-c", TRY_LOCK, str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_acquire_and_release(tmp_path):
    lock = DirectoryLock(str(tmp_path))
    lock.acquire()
    assert lock.locked and lock.holder_pid() == os.getpid()
    assert os.path.exists(tmp_path / "LOCK")
    lock.release()
    lock.release()  # idempotent
    assert not lock.locked
    lock.acquire()  # and again
    lock.release()


def test_second_acquire_in_the_same_process_is_refused(tmp_path):
    with DirectoryLock(str(tmp_path)):
        with pytest.raises(StoreLockedError, match=str(os.getpid())):
            DirectoryLock(str(tmp_path)).acquire()
        # another spelling of the same directory: same (st_dev, st_ino)
        with pytest.raises(StoreLockedError):
            DirectoryLock(str(tmp_path) + "/./").acquire()
    with DirectoryLock(str(tmp_path)):  # released by the with block above
        pass


def test_reacquire_of_a_held_lock_object_is_refused(tmp_path):
    lock = DirectoryLock(str(tmp_path))
    with lock:
        with pytest.raises(StoreLockedError):
            lock.acquire()
    assert not lock.locked


def test_second_acquire_from_another_thread_is_refused(tmp_path):
    results = []

    def attempt():
        try:
            DirectoryLock(str(tmp_path)).acquire()
            results.append("acquired")
        except StoreLockedError:
            results.append("locked")

    with DirectoryLock(str(tmp_path)):
        threads = [threading.Thread(target=attempt) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results == ["locked"] * 8


def test_racing_threads_get_exactly_one_lock(tmp_path):
    barrier = threading.Barrier(8)
    got = []
    errors = []

    def attempt():
        lock = DirectoryLock(str(tmp_path))
        barrier.wait()
        try:
            lock.acquire()
            got.append(lock)
        except StoreLockedError:
            errors.append(1)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 1 and len(errors) == 7
    got[0].release()


def test_second_acquire_in_another_process_is_refused_and_names_the_holder(tmp_path):
    with DirectoryLock(str(tmp_path)):
        before = dir_digest(str(tmp_path))
        out = try_in_subprocess(tmp_path)
        assert out.startswith("LOCKED") and str(os.getpid()) in out
        assert dir_digest(str(tmp_path)) == before  # the refused attempt changed nothing
    assert try_in_subprocess(tmp_path) == "ACQUIRED"


def test_lock_is_free_after_the_holder_is_killed(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "HELD"
        with pytest.raises(StoreLockedError, match=str(holder.pid)):
            DirectoryLock(str(tmp_path)).acquire()
        assert DirectoryLock(str(tmp_path)).holder_pid() == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        holder.stdout.close()
    lock = DirectoryLock(str(tmp_path))
    lock.acquire()  # no stale lock
    lock.release()
    assert DirectoryLock(str(tmp_path)).holder_pid() is None


def test_lock_file_is_not_written_by_default(tmp_path):
    (tmp_path / "LOCK").write_bytes(b"")
    before = dir_digest(str(tmp_path))
    with DirectoryLock(str(tmp_path)):
        assert dir_digest(str(tmp_path)) == before
    assert dir_digest(str(tmp_path)) == before


def test_write_pid_mode_records_the_holder(tmp_path):
    (tmp_path / "LOCK").write_bytes(b"99999999\n")
    with DirectoryLock(str(tmp_path), write_pid=True):
        assert (tmp_path / "LOCK").read_text() == f"{os.getpid()}\n"


def test_a_symlinked_lock_file_is_refused_and_its_target_untouched(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_bytes(b"precious")
    store = tmp_path / "store"
    store.mkdir()
    os.symlink(target, store / "LOCK")
    with pytest.raises(StorageError):
        DirectoryLock(str(store), write_pid=True).acquire()
    assert target.read_bytes() == b"precious"
    DirectoryLock(str(tmp_path / "other")).holder_pid()  # a missing directory is simply "unknown"


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError):
        DirectoryLock(str(tmp_path / "missing")).acquire()


CHECKPOINTING_WRITER = """
import sys, time, numpy as np, vecstore_ref as vs
s = vs.VecStore.open(sys.argv[1], dim=8, index="flat", durability="none")
rng = np.random.default_rng(0)
s.upsert_many([f"k{i}" for i in range(5000)], rng.normal(size=(5000, 8)).astype(np.float32))
s.snapshot()
print("ready", flush=True)
i = 0
while not sys.stdin.closed:
    s.upsert(f"x{i}", rng.normal(size=8))
    s.compact() if i % 4 == 0 else s.snapshot()  # a new manifest, and the old files removed, each time
    i += 1
    time.sleep(0.01)
    if i > 3000:
        break
s.close()
"""


def test_read_only_opens_and_verify_beside_a_writer_that_checkpoints(tmp_path):
    """A read-only open takes no lock; the writer replaces the manifest and removes the files the old one named
    while the reader reads them. The reader must try again on the new manifest, never fail, never report damage."""
    path = str(tmp_path / "s")
    writer = subprocess.Popen([sys.executable, "-c", CHECKPOINTING_WRITER, path], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        for _ in range(25):
            with vs.VecStore.open(path, read_only=True) as r:
                assert "k10" in r and len(r) >= 5000
                report = r.verify()
                assert report.ok, report.errors
    finally:
        writer.kill()
        writer.wait()
