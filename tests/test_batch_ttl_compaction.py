"""Named tests of the production semantics: batches, TTL, soft delete, compaction, maintenance (issue 4)."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from conftest import FakeClock, random_vectors

import vecstore_ref as vs


def open_flat(path, clock=None, **kw):
    return vs.VecStore.open(path, dim=4, metric="euclidean", index="flat", clock=clock, **kw)


def test_batch_ops_apply_in_order_and_report_failures(store_path):
    with open_flat(store_path) as s:
        result = s.batch_execute([
            vs.Upsert("a", [1, 0, 0, 0], {"k": 1}),
            vs.Delete("missing"),
            vs.Upsert("b", [0, 1, 0, 0]),
            vs.Delete("a"),
            vs.Upsert("c", [0, 0, 1]),  # wrong dimension
            vs.SoftDelete("b"),
            vs.UpdateMetadata("b", {"x": 1}),  # b is soft-deleted now: not visible
            vs.Restore("b"),
            vs.Upsert("a", [2, 0, 0, 0]),
        ])
        assert (result.succeeded, result.failed) == (6, 3)
        assert [(e.index, e.operation) for e in result.errors] == [
            (1, "delete(missing)"), (4, "upsert(c)"), (6, "update_metadata(b)")]
        assert "dimensions" in result.errors[1].error
        assert sorted(s.ids()) == ["a", "b"]
        assert s.get("a").vector.tolist() == [2, 0, 0, 0]
        assert s.get("a").metadata is None
        assert s.batch_execute([]).to_dict()["succeeded"] == 0


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_batch_vector_checks_agree_with_single_upserts(tmp_path, metric):
    """Upsert vectors of a batch are validated together; each op must still succeed or fail as it would alone."""
    vectors = [
        np.array([1, 2, 3, 4], dtype=np.float32),
        [1.0, 0.0, 0.0, 0.0],  # a list: checked on its own
        np.array([1, 2, 3], dtype=np.float32),  # wrong dimension
        np.array([np.nan, 1, 1, 1], dtype=np.float32),
        np.array([1e300, 1, 1, 1]),  # overflows float32
        np.zeros(4, dtype=np.float32),  # no direction under cosine
        np.array([1e-20, 0, 0, 0], dtype=np.float32),  # tiny: its float32 square underflows
        np.array([3e38, 3e38, 0, 0], dtype=np.float32),  # huge: its float32 square overflows
        np.array([2e-15, 0, 0, 0], dtype=np.float32),  # near the cosine limits: left to the one-by-one check
        np.array([7, 8, 9, 10], dtype=np.int64),
        np.array([True, False, True, True]),  # bools are not numbers here
        np.arange(8, dtype=np.float32)[::2],  # a strided view
    ]
    ops = [vs.Upsert(f"v{i}", v) for i, v in enumerate(vectors)]
    with vs.VecStore.open(str(tmp_path / "batch"), dim=4, metric=metric, index="flat") as s:
        result = s.batch_execute(ops)
        batch_failed = {e.index: e.type for e in result.errors}
        batch_vectors = {r.id: r.vector.tolist() for r in map(s.get, s.ids())}
    single_failed = {}
    with vs.VecStore.open(str(tmp_path / "single"), dim=4, metric=metric, index="flat") as s:
        for i, op in enumerate(ops):
            try:
                s.upsert(op.id, op.vector)
            except vs.VecStoreError as exc:
                single_failed[i] = type(exc).__name__
        single_vectors = {r.id: r.vector.tolist() for r in map(s.get, s.ids())}
    assert batch_failed == single_failed
    assert {2, 3, 4, 10} <= set(batch_failed)
    assert batch_vectors == single_vectors


def test_batch_dimension_comes_from_its_first_upsert(tmp_path):
    with vs.VecStore.open(str(tmp_path / "s"), metric="euclidean", index="flat") as s:  # no dim yet
        result = s.batch_execute([vs.Upsert("a", [1.0, 2.0]), vs.Upsert("b", np.ones(3, dtype=np.float32)),
                                  vs.Upsert("c", np.ones(2, dtype=np.float32))])
        assert [e.index for e in result.errors] == [1]
        assert s.stats().dim == 2 and sorted(s.ids()) == ["a", "c"]


def test_batch_is_one_log_record(store_path):
    with open_flat(store_path) as s:
        seq_before = s.stats().last_seq
        s.batch_execute([vs.Upsert(f"x{i}", [i, 1, 0, 0]) for i in range(50)] + [vs.Delete("x3")])
        assert s.stats().last_seq == seq_before + 1


def test_batch_rejects_non_ops_and_writes_nothing(store_path):
    from vecstore_ref._fs import dir_digest

    with open_flat(store_path) as s:
        s.upsert("a", [1, 0, 0, 0])
        before = dir_digest(store_path)
        for bad in ("upsert", {"op": "upsert"}, [vs.Upsert("b", [1, 0, 0, 0]), "delete(a)"], None, 5):
            with pytest.raises(vs.InvalidBatchError):
                s.batch_execute(bad)
        assert dir_digest(store_path) == before


def test_ttl_expiry_wins_at_read_time(store_path):
    clock = FakeClock(1000.0)
    with open_flat(store_path, clock) as s:
        s.upsert_with_ttl("t", [1, 0, 0, 0], {"k": 1}, ttl=10)
        s.upsert("p", [1, 0, 0, 1])
        assert s.get("t").expires_at == 1010.0
        clock.advance(9.99)
        assert "t" in s
        clock.advance(0.01)
        assert "t" not in s and len(s) == 1
        with pytest.raises(vs.NotFoundError):
            s.get("t")
        assert [h.id for h in s.query([1, 0, 0, 0], k=5)] == ["p"]
        assert s.deleted_count() == 1
        assert s.stats().expired_pending == 1
        with pytest.raises(vs.NotFoundError):
            s.restore("t")
        assert s.expire_ttl_records() == 1
        assert s.expire_ttl_records() == 0
        assert s.deleted_count() == 1 and s.stats().hard_deleted_pending == 1
        s.upsert("t", [0, 0, 0, 1])  # the id is free again
        assert s.get("t").expires_at is None


def test_ttl_persists_as_absolute_time(store_path):
    clock = FakeClock(5000.0)
    with open_flat(store_path, clock) as s:
        s.upsert("t", [1, 0, 0, 0], ttl=100)
        s.set_ttl("t", 50)
    clock.advance(49)
    with open_flat(store_path, clock) as s:
        assert s.get("t").expires_at == 5050.0
    clock.advance(1)
    with open_flat(store_path, clock) as s:
        assert "t" not in s


def test_clock_jumps(store_path):
    clock = FakeClock(1e6)
    with open_flat(store_path, clock) as s:
        s.upsert("t", [1, 0, 0, 0], ttl=60)
        s.upsert("p", [0, 1, 0, 0])
        clock.advance(365 * 86400)
        assert s.ids() == ["p"]
        clock.advance(-2 * 365 * 86400)
        assert sorted(s.ids()) == ["p", "t"]  # expiry is absolute: back in time, visible again
        for bad in (0, -1, float("nan"), float("inf"), 101 * 365.25 * 86400):
            with pytest.raises(vs.InvalidArgumentError):
                s.set_ttl("p", bad)
        with pytest.raises(TypeError):
            s.set_ttl("p", "10")
        s.set_ttl("t", None)
        clock.advance(10 * 365 * 86400)
        assert sorted(s.ids()) == ["p", "t"]


def test_compaction_removes_dead_records_and_shrinks_disk(store_path, rng):
    vecs = random_vectors(rng, 400, 4)
    with open_flat(store_path) as s:
        s.upsert_many([f"r{i}" for i in range(400)], vecs, [{"i": i} for i in range(400)])
        s.snapshot()
        size_before = sum(os.path.getsize(os.path.join(store_path, f)) for f in os.listdir(store_path))
        s.batch_execute([vs.Delete(f"r{i}") for i in range(0, 400, 2)])
        s.soft_delete("r1")
        q = vecs[3]
        before = s.query(q, k=20)
        assert s.deleted_count() == 201
        assert s.compact() == 201
        assert s.deleted_count() == 0 and len(s) == 199
        assert s.query(q, k=20) == before
        with pytest.raises(vs.NotFoundError):
            s.restore("r1")  # gone for good
        size_after = sum(os.path.getsize(os.path.join(store_path, f)) for f in os.listdir(store_path))
        assert size_after < 0.7 * size_before
    with open_flat(store_path) as s:
        assert len(s) == 199 and s.query(q, k=20) == before


def test_maybe_compact_reasons(store_path):
    with open_flat(store_path) as s:
        s.set_compaction_config(vs.CompactionConfig(enabled=False))
        r = s.maybe_compact()
        assert not r.triggered and r.reason == "auto-compaction is disabled"
        s.set_compaction_config(vs.CompactionConfig(True, min_deleted_records=5, min_deleted_ratio=0.5))
        for i in range(10):
            s.upsert(f"r{i}", [i, 1, 0, 0])
        s.delete("r0")
        r = s.maybe_compact()
        assert not r.triggered and "1 deleted" in r.reason and "5 records" in r.reason
        for i in range(1, 5):
            s.delete(f"r{i}")
        r = s.maybe_compact()
        assert r.triggered and r.removed_count == 5
        assert s.compaction_config().min_deleted_records == 5
    with open_flat(store_path) as s:  # the config persists
        assert s.compaction_config() == vs.CompactionConfig(True, 5, 0.5)
    with pytest.raises(vs.InvalidArgumentError):
        vs.CompactionConfig(min_deleted_ratio=1.5)


def test_hnsw_compaction_keeps_results(store_path, rng):
    vecs = random_vectors(rng, 600, 8)
    with vs.VecStore.open(store_path, dim=8, metric="cosine", index="hnsw") as s:
        s.upsert_many([f"r{i}" for i in range(600)], vecs)
        s.batch_execute([vs.Delete(f"r{i}") for i in range(0, 600, 3)])
        qs = random_vectors(rng, 10, 8)
        before = [[n.id for n in s.query(q, k=10, ef=200)] for q in qs]
        s.compact()
        after = [[n.id for n in s.query(q, k=10, ef=200)] for q in qs]
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(before, after)])
        assert overlap >= 0.95


def test_maintenance_thread_with_concurrent_writers(store_path, rng):
    clock = FakeClock(0.0)
    with open_flat(store_path, clock) as s:
        s.set_compaction_config(vs.CompactionConfig(True, 10, 0.05))
        errors = []

        def writer(tid):
            try:
                for i in range(150):
                    s.upsert(f"w{tid}-{i}", [tid, i, 1, 0], ttl=0.5 if i % 2 else None)
                    if i % 10 == 0:  # only records without a TTL: others may expire before the delete
                        s.delete(f"w{tid}-{i}")
                    s.query([1, 1, 1, 1], k=3)
                    clock.advance(0.01)
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        with vs.Maintenance(s, interval_s=0.01) as m:
            threads = [threading.Thread(target=writer, args=(t,)) for t in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert not errors and not m.errors
        assert m.runs > 0
        clock.advance(10)
        expected = {f"w{t}-{i}" for t in range(3) for i in range(150) if i % 2 == 0 and i % 10}
        assert set(s.ids()) == expected
    with open_flat(store_path, clock) as s:
        assert set(s.ids()) == expected


def test_bulk_batch_beats_single_upserts(store_path, rng):
    """A batch of N upserts is one record and one fsync: far cheaper than N calls (the 10x figure is measured
    in benchmarks/bulk_load.py; here only the record count, which cannot be noisy)."""
    with open_flat(store_path) as s:
        s.batch_execute([vs.Upsert(f"r{i}", v) for i, v in enumerate(random_vectors(rng, 1000, 4))])
        assert s.stats().last_seq == 1


def test_the_last_compaction_is_reported_after_a_restart(tmp_path):
    from cli_helpers import one_json, run

    path = tmp_path / "s"
    with vs.VecStore.open(path, dim=2, index="flat") as s:
        assert s.stats().last_compaction is None
        s.upsert_many(["a", "b", "c"], [[1, 0], [0, 1], [1, 1]])
        s.delete("b")
        assert s.compact() == 1
        done = s.stats().last_compaction
    assert done["removed_count"] == 1 and done["duration_ms"] >= 0 and done["at"] > 0
    with vs.VecStore.open(path, read_only=True) as s:
        assert s.stats().last_compaction == done
    with vs.VecStore.open(path) as s:
        s.delete("c")
    assert run("compact", str(path)).returncode == 0
    shown = one_json(run("stats", str(path), "--json").stdout)["last_compaction"]
    assert shown["removed_count"] == 1 and shown["at"] >= done["at"]
