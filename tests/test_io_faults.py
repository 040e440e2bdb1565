"""I/O faults through FaultFS: ENOSPC, EIO and short writes on the n-th operation, failing fsyncs, and power loss
(every byte and directory change not yet fsynced dropped). RELIABILITY F14, F15, F17."""

from __future__ import annotations

import errno
import random

import numpy as np
import pytest

import vecstore_ref as vs
from vecstore_ref._fs import FaultFS, OSFileSystem, dir_digest

DIM = 4


def vec(i: int) -> np.ndarray:
    return np.array([i, 1.0, 2.0, 3.0], dtype=np.float32)


def workload(store, start: int, n: int, acked: dict) -> None:
    """Writes that record in ``acked`` only what returned."""
    for i in range(start, start + n):
        if i % 7 == 3:
            store.batch_execute([vs.Upsert(f"b{i}-{j}", vec(i * 10 + j)) for j in range(3)])
            for j in range(3):
                acked[f"b{i}-{j}"] = vec(i * 10 + j)
        elif i % 5 == 4 and acked:
            victim = sorted(acked)[0]
            store.delete(victim)
            del acked[victim]
        else:
            store.upsert(f"r{i}", vec(i))
            acked[f"r{i}"] = vec(i)
        if i % 11 == 10:
            store.snapshot()


def assert_state(path: str, acked: dict) -> None:
    with vs.VecStore.open(path, fs=OSFileSystem()) as s:
        assert set(s.ids()) == set(acked)
        for id_, v in acked.items():
            assert s.get(id_).vector.tobytes() == v.tobytes()
        assert s.verify().ok


@pytest.mark.parametrize("op", ["write", "fsync", "replace", "fsync_dir", "open"])
@pytest.mark.parametrize("nth", [1, 2, 3, 5, 8, 13, 21])
def test_fail_once_then_recover(tmp_path, op, nth):
    """The n-th operation of a kind fails once: the call raises a typed error, nothing unacknowledged is visible,
    and after a reopen the store holds exactly what was acknowledged."""
    path = str(tmp_path / "s")
    fs = FaultFS()
    acked: dict = {}
    with vs.VecStore.open(path, dim=DIM, metric="euclidean", index="flat", fs=fs) as s:
        workload(s, 0, 5, acked)
        fs.fail(op, nth=nth, err=errno.ENOSPC if op == "write" else errno.EIO)
        try:
            workload(s, 5, 40, acked)
        except (vs.StorageError, vs.ReadOnlyError) as exc:
            assert isinstance(exc, vs.VecStoreError)
            # every later write either works (a failed write was cut back) or is refused (fsync poisoned the log)
            try:
                s.upsert("after", vec(999))
                acked["after"] = vec(999)
            except (vs.ReadOnlyError, vs.StorageError):
                pass
        assert set(s.ids()) >= set(acked) - {"after"}
    assert_state(path, acked)


@pytest.mark.parametrize("nth", [1, 2, 4, 7])
def test_short_write_is_cut_back(tmp_path, nth):
    path = str(tmp_path / "s")
    fs = FaultFS()
    acked: dict = {}
    with vs.VecStore.open(path, dim=DIM, metric="euclidean", index="flat", fs=fs) as s:
        workload(s, 0, 3, acked)
        fs.fail("write", nth=nth, err=errno.ENOSPC, short=True)
        with pytest.raises(vs.StorageError):
            for i in range(100, 130):
                s.upsert(f"x{i}", vec(i))
                acked[f"x{i}"] = vec(i)
        s.upsert("after", vec(7))  # the half record was truncated: the log stays well-formed
        acked["after"] = vec(7)
    assert_state(path, acked)


def test_fail_forever_refuses_every_write_and_changes_nothing_in_memory(tmp_path):
    path = str(tmp_path / "s")
    fs = FaultFS()
    acked: dict = {}
    with vs.VecStore.open(path, dim=DIM, metric="euclidean", index="flat", fs=fs) as s:
        workload(s, 0, 4, acked)
        fs.fail("write", nth=1, err=errno.ENOSPC, forever=True)
        for i in range(5):
            with pytest.raises(vs.StorageError):
                s.upsert(f"y{i}", vec(i))
        assert set(s.ids()) == set(acked)
        fs.clear_faults()
        s.upsert("z", vec(1))
        acked["z"] = vec(1)
    assert_state(path, acked)


def test_fsync_failure_turns_the_store_read_only_until_reopened(tmp_path):
    path = str(tmp_path / "s")
    fs = FaultFS()
    with vs.VecStore.open(path, dim=DIM, metric="euclidean", index="flat", fs=fs) as s:
        s.upsert("a", vec(1))
        fs.fail("fsync", nth=1, err=errno.EIO)
        with pytest.raises(vs.StorageError):
            s.upsert("b", vec(2))
        assert "b" not in s  # never acknowledged, never applied
        fs.clear_faults()
        with pytest.raises(vs.ReadOnlyError):
            s.upsert("c", vec(3))  # no retry after a failed fsync, even though fsync works again
        assert s.stats().read_only
    with vs.VecStore.open(path) as s:
        assert "a" in s and "c" not in s
        s.upsert("c", vec(3))


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("mode", ["truncate", "random_prefix", "zeros", "garbage"])
def test_power_loss_keeps_every_fsynced_write(tmp_path, seed, mode):
    """Simulated power cut at a random moment: every write acknowledged in fsync mode survives and the store opens."""
    path = str(tmp_path / "s")
    fs = FaultFS()
    acked: dict = {}
    rng = random.Random(seed)
    s = vs.VecStore.open(path, dim=DIM, metric="euclidean", index="flat", fs=fs)
    cut_after = rng.randint(1, 60)
    fs.fail("any", nth=fs.ops_count.get("any", 0) + cut_after, err=errno.EIO, forever=True)
    try:
        workload(s, 0, 30, acked)
    except (vs.StorageError, vs.ReadOnlyError):
        pass
    fs.clear_faults()
    s._writer.close()  # abandon the handle as a crash would (no close(), no final fsync)
    s._dir_lock.release()
    fs.drop_unsynced(mode=mode, rng=rng)
    assert_state(path, acked)


def test_bad_input_changes_nothing_on_disk_even_with_faultfs(tmp_path):
    path = str(tmp_path / "s")
    fs = FaultFS()
    with vs.VecStore.open(path, dim=DIM, metric="cosine", index="flat", fs=fs) as s:
        s.upsert("a", vec(1))
        before = dir_digest(path)
        ops_before = dict(fs.ops_count)
        for bad in ([np.nan] * DIM, [0.0] * DIM, [1.0] * (DIM + 1)):
            with pytest.raises(vs.InvalidInputError):
                s.upsert("b", bad)
        assert dir_digest(path) == before
        assert fs.ops_count == ops_before  # not even an attempted write
