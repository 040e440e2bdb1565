"""Reads that never wait and always see one state (SPEC section 13; docs/concepts/concurrency.md).

Writer threads apply random batches while reader threads query; every query's result must equal the model at some
moment between the query's start and its end (a batch is seen whole or not at all). Then the same with a
checkpoint and a compaction running meanwhile, and a check that two threads really search at once.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vecstore_ref as vs

DIM = 4
N_IDS = 24


def exact_top(model: dict, q: np.ndarray, k: int) -> list[tuple[str, float]]:
    """The flat index's answer on the model: euclidean scores, ties by id."""
    rows = [(i, -float(np.sqrt(((q.astype(np.float64) - v.astype(np.float64)) ** 2).sum()))) for i, v in model.items()]
    rows.sort(key=lambda t: (-t[1], t[0]))
    return rows[:k]


class History:
    """Model versions, one per batch: a batch's version is recorded *before* the batch is sent (a query may see it
    as soon as it is applied, before its call returns); ``acked`` is the newest acknowledged version."""

    def __init__(self):
        self.versions: list[dict] = [{}]
        self.acked = 0

    def expect(self, model: dict) -> None:
        self.versions.append(dict(model))

    def commit(self) -> None:
        self.acked = len(self.versions) - 1


def run_program(store, ops_per_thread, seed, n_readers=2, extra=None):
    rng = np.random.default_rng(seed)
    grid = rng.integers(-3, 4, size=(N_IDS * 4, DIM)).astype(np.float32)
    hist = History()
    model: dict = {}
    failures: list = []
    stop = threading.Event()

    def writer():
        try:
            r = np.random.default_rng(seed + 1)
            for _ in range(ops_per_thread):
                batch = []
                nxt = dict(model)
                for _ in range(int(r.integers(1, 6))):
                    i = f"r{int(r.integers(0, N_IDS)):02d}"
                    if r.random() < 0.3 and i in nxt:
                        batch.append(vs.Delete(i))
                        del nxt[i]
                    else:
                        v = grid[int(r.integers(0, len(grid)))]
                        batch.append(vs.Upsert(i, v))
                        nxt[i] = v
                hist.expect(nxt)
                res = store.batch_execute(batch)
                assert res.failed == 0, res.errors
                model.clear()
                model.update(nxt)
                hist.commit()
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)
        finally:
            stop.set()

    def reader(t):
        r = np.random.default_rng(seed + 10 + t)
        try:
            while not stop.is_set():
                q = grid[int(r.integers(0, len(grid)))]
                start = hist.acked
                got = [(h.id, h.score) for h in store.query(q, k=N_IDS + 1)]
                end = min(hist.acked + 1, len(hist.versions) - 1)  # the batch in flight may be seen
                ok = any([i for i, _ in exact_top(hist.versions[v], q, N_IDS + 1)] == [i for i, _ in got]
                         for v in range(start, end + 1))
                if not ok:
                    failures.append(AssertionError(f"query saw no state between versions {start} and {end}: {got}"))
                    return
        except BaseException as exc:  # pragma: no cover
            failures.append(exc)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader, args=(t,))
                                                   for t in range(n_readers)]
    if extra is not None:
        threads.append(threading.Thread(target=extra, args=(stop, failures)))
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=600)
    assert not failures, failures[0]
    return model


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000))
def test_every_query_sees_one_state_between_its_start_and_end(tmp_path_factory, seed):
    path = tmp_path_factory.mktemp("cr") / "s"
    with vs.VecStore.open(path, dim=DIM, metric="euclidean", index="flat", durability="none") as s:
        model = run_program(s, 60, seed)
        assert set(s.ids()) == set(model)


def test_reads_see_one_state_while_checkpoints_and_compactions_run(tmp_path):
    with vs.VecStore.open(tmp_path / "s", dim=DIM, metric="euclidean", index="flat", durability="none") as s:
        def maintenance(stop, failures):
            try:
                while not stop.is_set():
                    s.snapshot()
                    s.compact()
            except BaseException as exc:  # pragma: no cover
                failures.append(exc)

        model = run_program(s, 150, 7, extra=maintenance)
        assert set(s.ids()) == set(model)


def test_a_query_does_not_wait_for_a_checkpoint_to_be_written(tmp_path, monkeypatch):
    """A checkpoint's file is written while queries run: hold the write in the middle and query meanwhile."""
    from vecstore_ref import checkpoint as ckpt

    x = np.random.default_rng(0).normal(size=(500, DIM)).astype(np.float32)
    writing, release = threading.Event(), threading.Event()
    real = ckpt.write_snapshot

    def slow_write(*args, **kw):
        writing.set()
        assert release.wait(60)
        return real(*args, **kw)

    monkeypatch.setattr(ckpt, "write_snapshot", slow_write)
    with vs.VecStore.open(tmp_path / "s", dim=DIM, metric="euclidean") as s:
        s.upsert_many([f"d{i}" for i in range(500)], x)
        t = threading.Thread(target=s.snapshot)
        t.start()
        assert writing.wait(60)
        assert s.query(x[3], k=1)[0].id == "d3"  # would block forever if queries waited for the checkpoint
        s.upsert("new", x[4] + 1)  # writes go on too, into the new log segment
        assert s.get("new").vector.tobytes() == (x[4] + 1).tobytes()
        release.set()
        t.join(60)
        assert not t.is_alive()
    with vs.VecStore.open(tmp_path / "s") as s:
        assert len(s) == 501 and s.recovery_report.snapshot is not None


def test_two_threads_search_at_once(tmp_path):
    """Two query threads overlap inside the search kernel (it releases the interpreter lock): with both started,
    some query of one thread begins before the other thread's query has returned."""
    x = np.random.default_rng(1).normal(size=(20000, 32)).astype(np.float32)
    with vs.VecStore.open(tmp_path / "s", dim=32, metric="euclidean", durability="none") as s:
        s.upsert_many([f"d{i}" for i in range(len(x))], x)
        s.flush_index()
        spans: list[list[tuple[float, float]]] = [[], []]
        barrier = threading.Barrier(2)

        def run(t):
            barrier.wait()
            for i in range(300):
                a = time.perf_counter()
                s.query(x[(i * 7 + t) % len(x)], k=10, ef=200)
                spans[t].append((a, time.perf_counter()))

        threads = [threading.Thread(target=run, args=(t,)) for t in (0, 1)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        overlaps = sum(1 for a0, b0 in spans[0] for a1, b1 in spans[1] if a0 < b1 and a1 < b0)
        assert overlaps > 0


@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_concurrent_readers_writers_and_maintenance_raise_only_typed_errors(tmp_path, index):
    """RELIABILITY F24: threads upserting, querying, getting, compacting and checkpointing for a while; only
    typed errors (none expected here), and the final state equals the model built from the acknowledgements."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3000, 8)).astype(np.float32)
    errors: list = []
    acked: dict = {}
    lock = threading.Lock()
    with vs.VecStore.open(tmp_path / "s", dim=8, metric="euclidean", index=index, durability="none") as s:
        s.set_checkpoint_config(vs.CheckpointConfig(min_log_bytes=20_000, min_log_fraction=0.0))

        def writer(w):
            try:
                for i in range(w, 3000, 2):
                    s.upsert(f"d{i}", x[i])
                    with lock:
                        acked[f"d{i}"] = x[i]
                    if i % 50 == 0:
                        s.delete(f"d{i}")
                        with lock:
                            del acked[f"d{i}"]
            except vs.VecStoreError as exc:  # pragma: no cover
                errors.append(exc)

        def reader():
            try:
                for i in range(400):
                    s.query(x[i], k=5)
                    s.query_batch(x[i:i + 4], k=3)
                    if f"d{i}" in s:
                        s.get(f"d{i}", include_deleted=True)
                    s.stats()
            except (vs.VecStoreError, KeyError) as exc:
                if not isinstance(exc, vs.NotFoundError):
                    errors.append(exc)

        def maintenance():
            try:
                for _ in range(3):
                    s.compact()
                    s.snapshot()
            except vs.VecStoreError as exc:  # pragma: no cover
                errors.append(exc)

        threads = ([threading.Thread(target=writer, args=(w,)) for w in (0, 1)]
                   + [threading.Thread(target=reader) for _ in range(2)] + [threading.Thread(target=maintenance)])
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors, errors
        assert set(s.ids()) == set(acked)
    with vs.VecStore.open(tmp_path / "s") as s:
        assert set(s.ids()) == set(acked)
        for id_, v in list(acked.items())[::97]:
            assert s.get(id_).vector.tobytes() == v.tobytes()


def test_a_snapshot_racing_close_finds_the_store_closed_and_writes_nothing_after(tmp_path):
    """close() used to let the checkpoint lock go before marking the store closed: a snapshot() waiting for it
    went on, wrote a manifest after close() returned (the directory lock already released) and then failed with
    a ValueError on the closed log."""
    import os
    import threading
    import time

    from vecstore_ref._fs import dir_digest

    for run in range(12):
        path = str(tmp_path / f"s{run}")
        s = vs.VecStore.open(path, dim=8, index="flat", durability="none")
        s.upsert_many([f"b{i}" for i in range(2000)], np.random.default_rng(run).normal(size=(2000, 8)))
        outcome: list[str] = []

        def snapshots(s=s, outcome=outcome):
            while True:
                try:
                    s.snapshot()
                except vs.StoreClosedError:
                    outcome.append("closed")
                    return
                except Exception as exc:  # anything else is the defect
                    outcome.append(repr(exc))
                    return

        def writes(s=s):
            i = 0
            while True:
                i += 1
                try:
                    s.upsert(f"w{i % 100}", np.full(8, i % 7 + 1.0))
                except vs.StoreClosedError:
                    return

        threads = [threading.Thread(target=snapshots), threading.Thread(target=writes)]
        for t in threads:
            t.start()
        time.sleep(0.02)
        s.close()
        at_close = dir_digest(path)
        for t in threads:
            t.join(60)
        assert outcome == ["closed"], outcome
        assert dir_digest(path) == at_close and os.path.exists(os.path.join(path, "MANIFEST"))
