"""estimate_query never raises and says why a query is bad; query_explain reports what a query did."""

from __future__ import annotations

import time

import numpy as np
import pytest

import vecstore_ref as vs


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(0)
    s = vs.VecStore.open(str(tmp_path / "s"), dim=8, metric="cosine", index="hnsw", durability="none")
    x = rng.normal(size=(6000, 8)).astype(np.float32)
    s.upsert_many([f"r{i}" for i in range(6000)], x, [{"g": i % 10, "lang": "en" if i % 2 else "de"}
                                                      for i in range(6000)])
    s.batch_execute([vs.Delete(f"r{i}") for i in range(0, 300)])
    s.flush_index()  # the graph walk, not the exact scan of vectors still waiting to be linked
    yield s
    s.close()


@pytest.mark.parametrize("query,fragment", [
    (vs.Query([1.0] * 7, k=5), "dimensions"),
    (vs.Query([float("nan")] * 8), "NaN"),
    (vs.Query([0.0] * 8), "norm"),
    (vs.Query([1.0] * 8, k=0), "k must be"),
    (vs.Query([1.0] * 8, k=True), "k must be an int"),
    (vs.Query([1.0] * 8, filter="g = = 1"), "position"),
    (vs.Query([1.0] * 8, filter="color = 'red'"), "'color'"),
    (vs.Query([1.0] * 8, filter="g = 'one'"), "never str"),
    (vs.Query("not a vector"), "vector"),
])
def test_invalid_queries_are_explained_not_raised(store, query, fragment):
    est = store.estimate_query(query)
    assert not est.valid
    assert any(fragment in e for e in est.errors), est.errors


def test_estimate_plans_and_recommendations(store):
    q = [1.0] * 8
    est = store.estimate_query(vs.Query(q, k=10))
    assert est.valid and est.plan == "hnsw" and 0 < est.cost_estimate < 1
    assert est.estimated_duration_ms > 0 and est.selectivity == 1.0
    assert any("dead records" in r and "compact()" in r for r in est.recommendations)
    narrow = store.estimate_query(vs.Query(q, k=700, filter="g = 3 AND lang = 'en'"))  # i % 10 == 3: odd: 'en'
    assert narrow.plan == "filtered-scan" and narrow.selectivity == pytest.approx(0.1, abs=0.01)
    assert any("k (700) exceeds the 570 records matching the filter" in r for r in narrow.recommendations)
    wide = store.estimate_query(vs.Query(q, k=50, ef=10))
    assert any("ef (10) < k (50)" in r for r in wide.recommendations)
    t0 = time.perf_counter()
    for _ in range(100):
        store.estimate_query(vs.Query(q, k=10))
    assert (time.perf_counter() - t0) / 100 < 0.005
    assert set(est.to_dict()) >= {"valid", "errors", "cost_estimate", "plan", "selectivity", "recommendations"}


def test_explain_reports_counters_phases_and_clauses(store):
    q = np.ones(8, dtype=np.float32)
    store._forced_plan = "filtered-hnsw"  # at 8 dimensions the planner scans 4,275 rows rather than walk
    ex = store.query_explain(vs.Query(q, k=5, filter="g >= 5 OR lang = 'de'"))
    assert ex.plan == "filtered-hnsw"
    assert ex.distance_computations > 0 and ex.hops > 0
    assert ex.candidates_filtered_out > 0
    assert set(ex.phases_ms) == {"validate", "filter", "search", "fetch"}
    assert [n.rank for n in ex.neighbors] == [1, 2, 3, 4, 5]
    for n in ex.neighbors:
        md = n.metadata
        assert ("g >= 5" in n.matched_clauses) == (md["g"] >= 5)
        assert ("lang = 'de'" in n.matched_clauses) == (md["lang"] == "de")
    assert [n.id for n in ex.neighbors] == [h.id for h in store.query(q, k=5, filter="g >= 5 OR lang = 'de'")]
    assert ex.to_dict()["neighbors"][0]["rank"] == 1


def test_an_explain_sees_one_moment_when_a_ttl_runs_out_during_it(tmp_path):
    """The clock is read once per read: explain and query_batch used to read it two or three times, so a
    record whose TTL ran out meanwhile was counted visible and then left out of the search."""

    class Clock:  # advances with every reading, as if the call took that long
        t, step = 1000.0, 0.0

        def __call__(self):
            self.t += self.step
            return self.t

    clock = Clock()
    with vs.VecStore.open(tmp_path / "s", dim=4, index="flat", metric="euclidean", clock=clock) as s:
        s.upsert_many([f"b{i}" for i in range(50)], np.random.default_rng(0).normal(size=(50, 4)))
        s.upsert("x", np.zeros(4), ttl=10.0)  # expires at 1010.0
        clock.t, clock.step = 1009.5, 0.4  # first reading 1009.9: x visible; the next 1010.3: expired
        e = s.query_explain(vs.Query(np.zeros(4), k=5))
        assert e.candidates_filtered_out == 0 and e.neighbors[0].id == "x"
        clock.t = 1009.5
        batch = s.query_batch(np.zeros((3, 4)), k=1)
        assert batch.ids[:, 0].tolist() == ["x", "x", "x"]
