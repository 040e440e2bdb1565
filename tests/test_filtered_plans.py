"""Filtered queries on every plan: exact answers, ties by id, batches equal to single queries, the mask cache.

The property: a filtered query returns the top k of an exact scan of the visible records matching the filter,
ranked by (score desc, id asc), whichever plan runs it. The exact scan (``filtered-scan``) must always; the
filtered graph walk (``filtered-hnsw``) must whenever ``ef`` is at least the number of matching records, because
a walk whose result list never fills crosses the whole graph (`vecstore_ref.kernels.filtered_search`).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vecstore_ref as vs
from vecstore_ref.config import HNSWParams
from vecstore_ref.index.base import VectorTable
from vecstore_ref.index.hnsw import HNSWIndex

FILTERS = ["g = 1", "g < 3", "g != 4", "g IN (2, 7)", "NOT g = 0", "tag = 'a' AND g >= 5", "tag = 'b' OR g = 9"]
PLANS = ("filtered-scan", "filtered-hnsw")


def ranked(store, q, flt, metadata: dict) -> list[tuple[str, float]]:
    """The oracle: every visible record matching ``flt``, scored by the store's exact scan, by (score desc, id)."""
    f = vs.parse_filter(flt)
    want = sorted(i for i, md in metadata.items() if f.matches(md))
    store._forced_plan = "filtered-scan"
    try:
        every = store.query(q, k=max(1, len(want)), filter=flt) if want else []
    finally:
        store._forced_plan = None
    assert sorted(n.id for n in every) == want  # the mask selects exactly the matching visible records
    return sorted(((n.id, n.score) for n in every), key=lambda r: (-r[1], r[0]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 260), dim=st.integers(2, 9),
       metric=st.sampled_from(["cosine", "euclidean", "dot"]), k=st.integers(1, 40),
       flt=st.sampled_from(FILTERS), n_deleted=st.integers(0, 30))
def test_filtered_results_equal_an_exact_scan_of_the_matching_rows_on_every_plan(tmp_path_factory, seed, n, dim,
                                                                                   metric, k, flt, n_deleted):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(max(1, n // 3), dim)).astype(np.float32)
    vecs = base[rng.integers(0, base.shape[0], n)]  # repeated vectors: exact ties that only ids can order
    vecs[::2] += rng.normal(scale=0.05, size=vecs[::2].shape).astype(np.float32)
    ids = [f"r{i:04d}" for i in rng.permutation(n)]  # slots do not follow id order
    metadata = {i: {"g": int(rng.integers(0, 10)), "tag": "ab"[int(rng.integers(0, 2))]} for i in ids}
    path = str(tmp_path_factory.mktemp("s") / "s")
    with vs.VecStore.open(path, dim=dim, metric=metric, durability="none") as s:
        s.upsert_many(ids, vecs, [metadata[i] for i in ids])
        for i in ids[:n_deleted]:
            s.delete(i)
            del metadata[i]
        if rng.random() < 0.5:
            s.flush_index()  # otherwise part of the graph may still be waiting: scanned exactly meanwhile
        queries = np.concatenate([vecs[:2], rng.normal(size=(2, dim)).astype(np.float32)])
        for q in queries:
            want = ranked(s, q, flt, metadata)[:k]
            for plan in PLANS + (None,):
                s._forced_plan = plan
                ef = max(k, len(metadata)) if plan == "filtered-hnsw" else None  # a walk that reaches them all
                got = [(h.id, h.score) for h in s.query(q, k=k, filter=flt, ef=ef)]
                if plan is None and s._plan(s._filter(flt), len(want), k) == "filtered-hnsw":
                    assert len(got) == len(want)  # the planner's own walk is approximate at the default ef
                    continue
                assert got == want, (plan, flt)
                batch = s.query_batch(np.stack([q, q]), k=k, filter=flt, ef=ef)
                assert batch.ids[1, :len(want)].tolist() == [i for i, _ in want]
                assert batch.scores[1, :len(want)].tolist() == [np.float32(sc) for _, sc in want]
            s._forced_plan = None


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(4)
    s = vs.VecStore.open(str(tmp_path / "s"), dim=16, metric="euclidean", durability="none")
    x = rng.normal(size=(3000, 16)).astype(np.float32)
    s.upsert_many([f"r{i}" for i in range(3000)], x, [{"g": i % 20, "side": int(x[i, 0] > 0)} for i in range(3000)])
    s.flush_index()
    yield s
    s.close()


@pytest.mark.parametrize("flt", ["g < 10", "g = 3", "side = 1", "g < 2 AND side = 0"])
def test_query_batch_gets_the_plans_and_results_of_single_queries(store, flt):
    rng = np.random.default_rng(1)
    qs = rng.normal(size=(12, 16)).astype(np.float32)
    for forced in (None,) + PLANS:
        store._forced_plan = forced
        batch = store.query_batch(qs, k=10, filter=flt)
        for i, q in enumerate(qs):
            single = store.query(q, k=10, filter=flt)
            assert batch.ids[i, :len(single)].tolist() == [h.id for h in single]
            assert batch.scores[i, :len(single)].tolist() == [np.float32(h.score) for h in single]
        plan = store.query_explain(qs[0], k=10, filter=flt).plan
        assert plan == store.estimate_query(qs[0], k=10, filter=flt).plan
        assert forced is None or plan == forced


def test_the_mask_of_a_filter_is_kept_until_the_store_changes(store):
    f = store._filter("g = 3")
    first = store._match(f)
    assert store._match(vs.parse_filter("g = 3")) is first  # by text, parsed or not
    assert first.n == 150
    store.upsert("new", np.zeros(16, dtype=np.float32), {"g": 3})
    second = store._match(f)
    assert second is not first and second.n == 151
    assert "new" in [h.id for h in store.query(np.zeros(16, dtype=np.float32), k=1, filter="g = 3")]
    store.update_metadata("new", {"g": 4})
    assert store._match(f).n == 150
    assert "new" not in [h.id for h in store.query(np.zeros(16, dtype=np.float32), k=5, filter="g = 3")]
    store.soft_delete("r3")
    assert store._match(f).n == 149
    store.compact()
    after = store._match(f)
    assert after.n == 149 and after.state is store._state


def test_a_ttl_that_passes_without_a_write_is_seen_by_a_cached_filter(tmp_path):
    now = [1000.0]
    with vs.VecStore.open(str(tmp_path / "s"), dim=4, durability="none", clock=lambda: now[0]) as s:
        s.upsert_many([f"r{i}" for i in range(50)], np.eye(4, dtype=np.float32)[np.arange(50) % 4],
                      [{"g": 1}] * 50)
        s.set_ttl("r0", 10)
        assert s._match(s._filter("g = 1")).n == 50
        now[0] += 11  # no write: only the clock moved
        assert s._match(s._filter("g = 1")).n == 49
        assert "r0" not in [h.id for h in s.query([1, 0, 0, 0], k=50, filter="g = 1")]


def test_the_mask_cache_is_bounded(store, monkeypatch):
    from vecstore_ref import query as query_module

    monkeypatch.setattr(query_module, "MASK_CACHE_ENTRIES", 4)
    for g in range(10):
        store.query(np.zeros(16, dtype=np.float32), k=1, filter=f"g = {g}")
    assert len(store._mask_cache) <= 4 and "g = 9" in store._mask_cache


def test_readers_never_see_a_mask_of_another_version(store):
    """Writers flip records between g = 1 and g = 2 while readers query g = 1 through the cache: every result a
    reader gets must carry g = 1 in the metadata the same read returned."""
    stop = threading.Event()
    errors: list[str] = []
    q = np.zeros(16, dtype=np.float32)

    def reader():
        while not stop.is_set():
            for h in store.query(q, k=20, filter="g = 1"):
                if h.metadata["g"] != 1:
                    errors.append(f"{h.id} has {h.metadata}")

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for rnd in range(30):
            for i in range(1, 200, 20):
                store.update_metadata(f"r{i}", {"g": 2 if rnd % 2 == 0 else 1, "side": 0})
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []


def _two_sides(n=6000, dim=24, seed=3):
    """Clusters split in two halves by a hyperplane: the 'side' of the queries is the other one."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(30, dim)).astype(np.float32)
    x = centres[rng.integers(0, 30, n)] + 0.4 * rng.normal(size=(n, dim)).astype(np.float32)
    q = centres[rng.integers(0, 30, 400)] + 0.4 * rng.normal(size=(400, dim)).astype(np.float32)
    side = x[:, 0] > np.median(x[:, 0])
    return x.astype(np.float32), q[q[:, 0] < np.median(x[:, 0])][:100].astype(np.float32), side


def test_the_filtered_walk_keeps_recall_under_an_anti_correlated_filter():
    """The kernel on a graph built one-at-a-time (deterministic): matching records all on the far side of the
    queries. The walk must cross to them and find the true neighbours there."""
    x, queries, side = _two_sides()
    table = VectorTable(x.shape[1], "euclidean", x.shape[0])
    table.write(table.allocate(x.shape[0]), x)
    idx = HNSWIndex(table, HNSWParams(m=12, ef_construction=100, ef_search=64, seed=1))
    idx.add(np.arange(x.shape[0], dtype=np.int32))
    allowed = np.zeros(table.capacity, dtype=bool)
    allowed[: x.shape[0]] = side
    on = np.flatnonzero(side)
    hits = 0
    for q in queries:
        truth = on[np.argsort(((x[on] - q) ** 2).sum(axis=1), kind="stable")[:10]]
        got, _, n_dist, _ = idx.filtered_top(q, 10, allowed, 64, float(side.mean()))
        assert all(side[s] for s in got)
        hits += len(set(got[:10]) & set(truth.tolist()))
        assert n_dist < x.shape[0] / 2  # a walk, not a scan in disguise
    assert hits / (10 * len(queries)) >= 0.9


def test_a_walk_whose_results_never_fill_reaches_every_matching_node():
    x, queries, side = _two_sides(n=1500, dim=8)
    table = VectorTable(8, "dot", x.shape[0])
    table.write(table.allocate(x.shape[0]), x)
    idx = HNSWIndex(table, HNSWParams(m=6, ef_construction=40, ef_search=16, seed=2))
    idx.add(np.arange(x.shape[0], dtype=np.int32))
    allowed = np.zeros(table.capacity, dtype=bool)
    pick = np.random.default_rng(0).choice(x.shape[0], 37, replace=False)
    allowed[pick] = True
    idx.remove(pick[:5])  # deleted nodes are crossed, never returned
    got, dists, _, _ = idx.filtered_top(queries[0], 10, allowed, 64, 37 / 1500)
    assert sorted(got) == sorted(pick[5:].tolist())
    assert list(dists) == sorted(dists)


def test_the_filtered_benchmark_runs_and_writes_both_results_files(tmp_path):
    """benchmarks/filtered.py at toy size (it measures nothing here): the files follow their schemas."""
    import json

    from benchmarks import filtered

    assert filtered.main(["--quick", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "filtered.json").read_text())
    assert data["schema"] == "vecstore_ref.figures.filtered/1"
    rows = data["rows"]
    assert [r["filter"] for r in rows] == [None] + [f"u < {t}" for t in filtered.THRESHOLDS] + ["side = 1"]
    for r in rows:
        assert {"filter", "selectivity", "plan", "recall", "qps", "p50_ms", "estimated_ms", "qps_ratio"} <= set(r)
        assert r["recall"] == 1.0 or r["plan"] in ("hnsw", "filtered-hnsw")
    assert rows[-1]["anti_correlated"] and abs(rows[-1]["selectivity"] - 0.5) < 0.01
    points = json.loads((tmp_path / "cost_model.json").read_text())
    assert points["schema"] == "vecstore_ref.figures.cost_model/1" and len(points["points"]) == len(rows)
    assert 0.0 <= points["summary"]["time_within_2x"] <= 1.0
