"""The cost model: measured once per store and machine, saved with the store, measured again when the data grows;
the planner and estimate_query read the same figures; estimates that do not contradict themselves.

No test here times anything against a threshold: calibrations are replaced by fixed figures wherever a decision
is checked, so that a busy machine cannot change an outcome.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import vecstore_ref as vs
from vecstore_ref import cost as cost_module
from vecstore_ref._fs import dir_digest

N, DIM = 1200, 16


def fill(s, n=N, start=0, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    s.upsert_many([f"r{i}" for i in range(start, start + n)], x, [{"g": i % 10} for i in range(start, start + n)])
    s.flush_index()


@pytest.fixture
def counted(monkeypatch):
    """Count the calibrations (each still runs for real)."""
    calls = []
    real = cost_module.calibrate

    def calibrate(store):
        calls.append(store._state.n_live)
        return real(store)

    monkeypatch.setattr(cost_module, "calibrate", calibrate)
    return calls


def manifest_options(path) -> dict:
    from vecstore_ref._fs import get_fs
    from vecstore_ref.storage.manifest import read_manifest

    return read_manifest(get_fs(), path).options


def fixed_calibration(**over) -> dict:
    """Round figures: a scan row costs 20 ns at any density; an unfiltered walk 50 us and 1,000 distances at any
    ef; a filtered walk costs its unfiltered figure times the factor in ``filtered`` (by selectivity)."""
    cal = {"version": cost_module.MODEL_VERSION, "machine": cost_module.machine_fingerprint(), "dim": DIM,
           "metric": "cosine", "n_live": N, "m": 16, "ef_search": 64, "overhead_us": 10.0, "result_us": 1.0,
           "scan": [[1.0, 20.0], [0.01, 20.0]], "walk": [[16, 50.0, 1000.0], [256, 50.0, 1000.0]],
           "filtered": [[0.5, 1.0, 1.0], [0.01, 1.0, 1.0]]}
    cal.update(over)
    return cal


def test_calibrated_once_saved_with_the_store_and_reused_by_the_next_open(tmp_path, counted):
    path = str(tmp_path / "s")
    with vs.VecStore.open(path, dim=DIM, durability="none") as s:
        fill(s)
        s.snapshot()
        assert "cost_model" not in manifest_options(path)
        q = np.ones(DIM, dtype=np.float32)
        s.query(q, filter="g < 5")
        s.estimate_query(q, filter="g = 1")
        s.query(q, filter="g = 2")
        assert counted == [N]
        saved = s._cost.to_dict()
        assert saved["n_live"] == N and saved["dim"] == DIM and saved["walk"] and saved["scan"]
    assert manifest_options(path)["cost_model"] == json.loads(json.dumps(saved))  # written at close
    with vs.VecStore.open(path) as s:
        est = s.estimate_query(np.ones(DIM), filter="g < 5")
        assert est.valid and counted == [N]  # read back, not measured again
        assert s._cost.cal == manifest_options(path)["cost_model"]


def test_measured_again_when_the_data_has_doubled(tmp_path, counted):
    with vs.VecStore.open(str(tmp_path / "s"), dim=DIM, durability="none") as s:
        fill(s)
        s.estimate_query(np.ones(DIM), filter="g < 5")
        fill(s, n=N // 2, start=N, seed=1)
        s.estimate_query(np.ones(DIM), filter="g < 5")
        assert counted == [N]  # 1.5x: the same calibration
        fill(s, n=N, start=N + N // 2, seed=2)
        s.estimate_query(np.ones(DIM), filter="g < 5")
        assert counted == [N, 2 * N + N // 2]


@pytest.mark.parametrize("damage", [{"machine": "another machine"}, {"dim": DIM + 1}, {"version": 0},
                                    {"scan": "garbage"}, {"walk": None}])
def test_a_calibration_from_elsewhere_or_damaged_is_measured_again(tmp_path, counted, damage):
    path = str(tmp_path / "s")
    saved = {**fixed_calibration(), **damage}
    with vs.VecStore.open(path, dim=DIM, durability="none") as s:
        fill(s)
        s._cost = cost_module.CostModel(saved)
        s.snapshot()
    assert manifest_options(path)["cost_model"] == saved  # kept as found until measured again
    with vs.VecStore.open(path) as s:
        s.estimate_query(np.ones(DIM), filter="g < 5")
        assert counted == [N]
        assert s._cost.cal["machine"] == cost_module.machine_fingerprint() and s._cost.cal["dim"] == DIM


def test_a_read_only_store_calibrates_in_memory_and_writes_nothing(tmp_path, counted):
    path = str(tmp_path / "s")
    with vs.VecStore.open(path, dim=DIM, durability="none") as s:
        fill(s)
    before = dir_digest(path)
    with vs.VecStore.open(path, read_only=True) as s:
        s.query(np.ones(DIM), filter="g < 5")
        assert counted == [N]
    assert dir_digest(path) == before


def test_the_planner_switches_where_the_measured_costs_cross(tmp_path):
    """With fixed figures the crossover is arithmetic: a scan of r rows costs 20 ns x r, a filtered walk 50 us x
    its factor; the planner scans while the scan is the cheaper, and estimate_query prices what it picked."""
    with vs.VecStore.open(str(tmp_path / "s"), dim=DIM, durability="none") as s:
        fill(s)
        s._cost._set(fixed_calibration())
        n_nodes = s._state.index.n_nodes
        walk_ms = 50e-3
        crossover = int(walk_ms * 1e6 / 20.0)  # 2,500 rows
        for n_allowed in (65, crossover - 1, crossover, crossover + 1, 10_000):
            plan = s._plan(s._filter("g < 5"), n_allowed, 10, None)
            assert plan == ("filtered-scan" if n_allowed <= crossover else "filtered-hnsw"), n_allowed
        assert s._plan(s._filter("g < 5"), 64, 10, None) == "filtered-scan"  # no more rows than the walk's width
        s._cost._set(fixed_calibration(filtered=[[0.5, 0.01, 1.0], [0.01, 0.01, 1.0]]))  # walks 100x cheaper
        assert s._plan(s._filter("g < 5"), 600, 10, None) == "filtered-hnsw"
        s._cost._set(fixed_calibration())
        est = s.estimate_query(np.ones(DIM), k=10, filter="g < 5")  # 600 rows: a 12 us scan
        assert est.plan == "filtered-scan" and est.estimated_distance_computations == 600
        assert est.estimated_duration_ms == pytest.approx((10.0 + 10 * 1.0 + 600 * 20e-3) / 1e3)
        assert est.cost_estimate == pytest.approx(600 / N)
        est = s.estimate_query(np.ones(DIM), k=10)
        assert est.plan == "hnsw" and est.estimated_distance_computations == 1000
        assert est.estimated_duration_ms == pytest.approx((10.0 + 10.0 + 50.0) / 1e3)
        assert n_nodes == N


def test_estimates_do_not_drift_with_the_queries_that_ran(tmp_path):
    """The old model kept one running mean over filtered and unfiltered walks: filtered queries inflated every
    later unfiltered estimate. Now queries teach the model nothing; only a calibration changes it."""
    with vs.VecStore.open(str(tmp_path / "s"), dim=DIM, durability="none") as s:
        fill(s)
        q = np.ones(DIM, dtype=np.float32)
        before = s.estimate_query(q, k=10)
        s._forced_plan = "filtered-hnsw"
        for i in range(50):
            s.query(np.random.default_rng(i).normal(size=DIM), k=10, filter="g = 1")
        s._forced_plan = None
        after = s.estimate_query(q, k=10)
        assert after.estimated_distance_computations == before.estimated_distance_computations
        assert after.estimated_duration_ms == before.estimated_duration_ms


def test_a_field_the_store_never_saw_matches_nothing_and_the_estimate_says_so(tmp_path):
    with vs.VecStore.open(str(tmp_path / "s"), dim=DIM, durability="none") as s:
        fill(s, n=300)
        est = s.estimate_query(np.ones(DIM), k=10, filter="category = 'tech'")
        assert not est.valid and any("'category'" in e and "matches nothing" in e for e in est.errors)
        assert est.selectivity == 0.0 and est.plan == "filtered-scan"
        assert est.estimated_distance_computations == 0 and est.cost_estimate == 0.0
        assert any("matches none of the 300 visible records" in r for r in est.recommendations)
        assert not any("exceeds" in r for r in est.recommendations)
        assert s.query(np.ones(DIM), k=10, filter="category = 'tech'") == []
        # a filter on a known field that matches nothing is valid, and says the same
        est = s.estimate_query(np.ones(DIM), k=10, filter="g = 99")
        assert est.valid and est.selectivity == 0.0
        assert any("matches none" in r for r in est.recommendations)
        few = s.estimate_query(np.ones(DIM), k=50, filter="g = 1")
        assert few.selectivity == pytest.approx(0.1) and few.plan == "filtered-scan"
        assert any("k (50) exceeds the 30 records matching the filter" in r for r in few.recommendations)


def test_an_unparsable_filter_is_reported_without_a_selectivity_of_everything(tmp_path):
    with vs.VecStore.open(str(tmp_path / "s"), dim=DIM, durability="none") as s:
        fill(s, n=300)
        est = s.estimate_query(np.ones(DIM), filter="g = = 1")
        assert not est.valid and est.selectivity == 0.0 and est.estimated_distance_computations == 0


def test_a_store_too_small_to_time_uses_the_defaults(tmp_path, counted):
    with vs.VecStore.open(str(tmp_path / "s"), dim=DIM, durability="none") as s:
        fill(s, n=100)
        est = s.estimate_query(np.ones(DIM), filter="g < 5")
        assert est.valid and est.plan == "filtered-scan" and est.estimated_duration_ms > 0
        assert counted == [] and s._cost.to_dict() is None
    assert "cost_model" not in manifest_options(str(tmp_path / "s"))


def test_estimates_and_queries_agree_on_the_plan(tmp_path):
    with vs.VecStore.open(str(tmp_path / "s"), dim=DIM, durability="none") as s:
        fill(s)
        q = np.ones(DIM, dtype=np.float32)
        for flt in (None, "g = 1", "g < 5", "g != 3", "g >= 0"):
            for k, ef in ((1, None), (10, 16), (50, 200)):
                est = s.estimate_query(q, k=k, filter=flt, ef=ef)
                assert est.plan == s.query_explain(q, k=k, filter=flt, ef=ef).plan, (flt, k, ef)
        assert os.path.isdir(s.path)


def test_a_graph_still_being_linked_is_timed_once_it_is_big_enough(tmp_path, counted):
    """Vectors are queryable before they are linked; a calibration made while the graph was too small to time
    is not repeated on every query, and is made again once the graph is linked."""
    with vs.VecStore.open(str(tmp_path / "s"), dim=DIM, durability="none") as s:
        index = s._state.index
        index.pause_linking()  # keep everything in the queue
        try:
            rng = np.random.default_rng(0)
            s.upsert_many([f"r{i}" for i in range(N)], rng.normal(size=(N, DIM)), [{"g": i % 10} for i in range(N)])
            assert index.n_nodes < cost_module.MIN_CALIBRATION_ROWS
            for _ in range(3):
                s.estimate_query(np.ones(DIM), filter="g < 5")
            assert len(counted) == 1 and not s._cost.cal.get("walk")
        finally:
            index.resume_linking()
        s.flush_index()
        s.estimate_query(np.ones(DIM), filter="g < 5")
        assert len(counted) == 2 and s._cost.cal["walk"]


def test_an_unknown_field_under_not_or_or_is_flagged_without_claiming_the_filter_matches_nothing(tmp_path):
    """The estimate stays invalid (a misspelt field, SPEC 4) but its selectivity and errors agree with query."""
    with vs.VecStore.open(tmp_path / "s", dim=2, index="flat") as s:
        for i in range(3):
            s.upsert(f"r{i}", [1.0, float(i + 1)], {"lang": "en"})
        for text in ("g NOT IN (0)", "NOT g = 1", "lang = 'en' OR g = 1"):
            est = s.estimate_query(vs.Query([1.0, 1.0], k=3, filter=text))
            assert len(s.query([1.0, 1.0], k=3, filter=text)) == 3
            assert not est.valid and est.selectivity == 1.0
            assert any("still matches 3 of the 3" in e for e in est.errors), est.errors
        est = s.estimate_query(vs.Query([1.0, 1.0], k=3, filter="lang = 'en' AND g = 1"))
        assert not est.valid and est.selectivity == 0.0 and not any("still matches" in e for e in est.errors)


def test_a_bad_query_vector_beside_a_good_filter_adds_no_filter_note(tmp_path):
    with vs.VecStore.open(tmp_path / "s", dim=2, index="flat") as s:
        s.upsert("a", [1.0, 2.0], {"lang": "en"})
        est = s.estimate_query(vs.Query([1.0, 2.0, 3.0], k=1, filter="lang = 'en'"))
        assert not est.valid and not any("still matches" in e for e in est.errors), est.errors
