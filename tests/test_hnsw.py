"""The HNSW index against exact brute force: recall, filters, deletes, updates, batch search, persistence (issue 3).

Ground truth is computed here in float64 numpy, independently of the kernels. Graphs are small (a few thousand
points) so the whole file runs in seconds once the kernels are compiled.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import vecstore_ref as vs
from vecstore_ref.config import HNSWParams
from vecstore_ref.index.base import VectorTable
from vecstore_ref.index.hnsw import HNSWIndex


def clustered(n, dim, seed, n_queries=40, n_clusters=20):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim))
    x = centres[rng.integers(0, n_clusters, n)] + 0.4 * rng.normal(size=(n, dim))
    q = centres[rng.integers(0, n_clusters, n_queries)] + 0.4 * rng.normal(size=(n_queries, dim))
    return x.astype(np.float32), q.astype(np.float32)


def build(x, metric="euclidean", params=None, one_at_a_time=False, capacity=None):
    t = VectorTable(x.shape[1], metric, capacity or len(x))
    slots = t.allocate(len(x))
    t.write(slots, x)
    h = HNSWIndex(t, params or HNSWParams())
    if one_at_a_time:
        for s in slots:
            h.add(np.array([s], dtype=np.int32))
    else:
        h.add(slots)
    return t, h


def exact_topk(x, q, metric, k, allowed=None):
    """Brute-force top-k slots in float64, ties by slot."""
    x64, q64 = x.astype(np.float64), q.astype(np.float64)
    if metric == "euclidean":
        d = ((x64 - q64) ** 2).sum(axis=1)
    elif metric == "dot":
        d = -(x64 @ q64)
    else:
        d = -(x64 @ q64) / (np.linalg.norm(x64, axis=1) * np.linalg.norm(q64))
    if allowed is not None:
        d = np.where(allowed[: len(x)], d, np.inf)
    order = np.lexsort((np.arange(len(x)), d))
    return [int(s) for s in order[:k] if np.isfinite(d[s])]


def recall(h, x, qs, metric, allowed, k=10, ef=64):
    hits = total = 0
    for q in qs:
        truth = set(exact_topk(x, q, metric, k, allowed))
        got = h.search(q, k, allowed, ef)[0].tolist()
        assert all(allowed[s] for s in got)
        assert len(got) == len(set(got)) == min(k, int(allowed[: len(x)].sum()))
        hits += len(truth & set(got))
        total += len(truth)
    return hits / max(1, total)


def all_allowed(t):
    return np.ones(t.capacity, dtype=bool)


# --- recall ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("metric", ["cosine", "euclidean", "dot"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recall_at_10_against_brute_force(metric, seed):
    x, qs = clustered(3000, 24, seed)
    t, h = build(x, metric, HNSWParams(seed=seed))
    assert recall(h, x, qs, metric, all_allowed(t)) >= 0.9
    assert h.check_integrity() == []


def test_results_are_sorted_by_distance_then_slot_and_distances_are_the_kernels():
    x, qs = clustered(1500, 16, 3)
    t, h = build(x, "cosine")
    slots, dists, stats = h.search(qs[0], 10, all_allowed(t), ef=100)
    assert slots.dtype == np.int32 and dists.dtype == np.float32 and len(slots) == 10
    assert all((dists[i], slots[i]) <= (dists[i + 1], slots[i + 1]) for i in range(9))
    exact = -(x[slots].astype(np.float64) @ qs[0]) / (np.linalg.norm(x[slots], axis=1) * np.linalg.norm(qs[0]))
    np.testing.assert_allclose(dists, exact, rtol=1e-5, atol=1e-6)
    assert stats.distance_computations > 10 and stats.hops > 0


def test_higher_ef_does_not_lower_recall_and_costs_more():
    x, qs = clustered(3000, 16, 4)
    t, h = build(x, "euclidean", HNSWParams(m=6, ef_construction=40))
    allowed = all_allowed(t)
    assert recall(h, x, qs, "euclidean", allowed, ef=100) >= recall(h, x, qs, "euclidean", allowed, ef=10)
    cheap = h.search(qs[0], 10, allowed, ef=10)[2].distance_computations
    assert h.search(qs[0], 10, allowed, ef=100)[2].distance_computations > cheap


def test_batch_build_recall_matches_one_at_a_time():
    """The parallel batch build must not lose quality against inserting one node at a time."""
    x, qs = clustered(2000, 16, 5, n_queries=60)
    t1, seq = build(x, "euclidean", one_at_a_time=True)
    t2, bulk = build(x, "euclidean")
    r_seq = recall(seq, x, qs, "euclidean", all_allowed(t1), ef=16)
    r_bulk = recall(bulk, x, qs, "euclidean", all_allowed(t2), ef=16)
    assert r_bulk >= r_seq - 0.02, (r_seq, r_bulk)
    assert seq.check_integrity() == [] and bulk.check_integrity() == []


def test_graph_does_not_depend_on_the_thread_count():
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs two threads")
    x, _ = clustered(1500, 12, 6)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        _, one = build(x, "cosine")
        numba.set_num_threads(2)
        _, two = build(x, "cosine")
    finally:
        numba.set_num_threads(before)
    for name, a in one.to_arrays()[1].items():
        assert np.array_equal(a, two.to_arrays()[1][name]), name


# --- batch search ---------------------------------------------------------------------------------------------------

def test_search_batch_equals_single_searches():
    x, qs = clustered(2000, 16, 7)
    t, h = build(x, "cosine")
    allowed = all_allowed(t)
    slots, dists, n_dist, hops = h.search_batch(qs, 10, allowed, ef=48)
    assert slots.shape == dists.shape == (len(qs), 10) and n_dist.dtype == hops.dtype == np.int64
    for i, q in enumerate(qs):
        s, d, stats = h.search(q, 10, allowed, ef=48)
        assert slots[i].tolist() == s.tolist()
        assert dists[i].tobytes() == d.tobytes()
        assert n_dist[i] == stats.distance_computations and hops[i] == stats.hops > 0


def test_k_beyond_the_graph_returns_what_exists():
    x, qs = clustered(300, 8, 8)
    t, h = build(x, "euclidean", capacity=1024)
    allowed = all_allowed(t)
    slots, dists, _ = h.search(qs[0], 10**6, allowed)
    assert sorted(slots.tolist()) == list(range(300))
    assert np.all(np.diff(dists) >= 0)
    bs, bd, _, _ = h.search_batch(qs[:3], 10**6, allowed)
    assert bs.shape == (3, 300)  # never wider than the table's used slots
    assert bs[0].tolist() == slots.tolist()


def test_empty_index_and_empty_batch():
    t = VectorTable(4, "euclidean", 16)
    h = HNSWIndex(t, HNSWParams())
    q = np.zeros(4, dtype=np.float32)
    slots, dists, stats = h.search(q, 5, np.ones(16, dtype=bool))
    assert slots.size == dists.size == 0 and stats.distance_computations == 0
    s, d, nd, hp = h.search_batch(np.zeros((2, 4), dtype=np.float32), 5, np.ones(16, dtype=bool))
    assert s.shape == (2, 0) and nd.tolist() == [0, 0]
    assert h.check_integrity() == []


def test_bad_arguments_raise_typed_errors():
    x, _ = clustered(100, 8, 9)
    t, h = build(x, "euclidean")
    with pytest.raises(vs.InvalidArgumentError):
        h.search(np.zeros(7, dtype=np.float32), 3, all_allowed(t))
    with pytest.raises(vs.InvalidArgumentError):
        h.search(x[0], 3, np.ones(50, dtype=bool))  # shorter than the used slots
    with pytest.raises(vs.InvalidArgumentError):
        h.add(np.array([100], dtype=np.int32))  # not a slot of the table
    with pytest.raises(vs.InvalidArgumentError):
        h.search_batch(np.zeros((2, 7), dtype=np.float32), 3, all_allowed(t))


# --- filters --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("selectivity", [0.5, 0.1, 0.01])
@pytest.mark.parametrize("mode", ["walk", "auto"])
def test_filtered_recall(selectivity, mode):
    """With a mask, only allowed slots come back. ``walk`` forces the filtered graph walk (every node traversed,
    only allowed ones collected); ``auto`` lets a sparse mask take the exact scan, which must be exact."""
    x, qs = clustered(4000, 16, 10)
    t, h = build(x, "euclidean")
    allowed = np.zeros(t.capacity, dtype=bool)
    allowed[np.random.default_rng(0).choice(len(x), max(1, int(len(x) * selectivity)), replace=False)] = True
    if mode == "walk":
        h.exact_scan_factor = 0.0
    r = recall(h, x, qs, "euclidean", allowed)
    if mode == "auto" and int(allowed.sum()) <= h.scan_limit(64):
        assert r == 1.0
        assert h.search(qs[0], 10, allowed)[2].distance_computations == int(allowed.sum())  # one per allowed node
    assert r >= 0.9


def test_filter_leaving_fewer_than_k_returns_exactly_those():
    x, qs = clustered(2000, 8, 11)
    t, h = build(x, "euclidean")
    allowed = np.zeros(t.capacity, dtype=bool)
    allowed[[3, 700, 1999]] = True
    for factor in (0.0, 1.0):  # the walk and the exact scan
        h.exact_scan_factor = factor
        slots = h.search(qs[0], 10, allowed)[0].tolist()
        assert sorted(slots) == [3, 700, 1999]
        assert slots == exact_topk(x, qs[0], "euclidean", 10, allowed)


def test_filtered_batch_equals_single():
    x, qs = clustered(2000, 8, 12)
    t, h = build(x, "dot")
    allowed = np.random.default_rng(1).random(t.capacity) < 0.05
    for factor in (0.0, 1.0):
        h.exact_scan_factor = factor
        slots, dists, _, _ = h.search_batch(qs, 5, allowed)
        for i, q in enumerate(qs):
            assert slots[i].tolist() == h.search(q, 5, allowed)[0].tolist()


# --- deletes and updates --------------------------------------------------------------------------------------------

def test_deleted_nodes_are_walked_through_but_never_returned():
    x, qs = clustered(3000, 16, 13)
    t, h = build(x, "euclidean")
    dead = np.arange(0, 3000, 2, dtype=np.int32)
    h.remove(dead)
    assert h.n_deleted == 1500
    allowed = all_allowed(t)  # the mask does not exclude them: the index must
    live = np.ones(len(x), dtype=bool)
    live[dead] = False
    hits = 0
    for q in qs:
        got = h.search(q, 10, allowed)[0]
        assert not np.isin(got, dead).any()
        hits += len(set(got.tolist()) & set(exact_topk(x, q, "euclidean", 10, live)))
    assert hits / (10 * len(qs)) >= 0.9
    assert h.check_integrity() == []
    h.remove(np.array([h.ep], dtype=np.int32))  # a deleted entry point still leads the walk
    assert len(h.search(qs[0], 10, allowed)[0]) == 10


def test_update_relinks_the_node_at_its_new_place():
    x, qs = clustered(2000, 8, 14)
    t, h = build(x, "euclidean")
    allowed = all_allowed(t)
    far = np.full((1, 8), 25.0, dtype=np.float32)  # away from every cluster
    for s in (3, 4, 5):
        t.write(np.array([s], dtype=np.int32), far + s)
        h.add(np.array([s], dtype=np.int32))
    assert h.n_nodes == 2000
    assert h.search(far[0] + 4, 3, allowed)[0].tolist() == [4, 3, 5]  # 3 and 5 tie: the smaller slot first
    old_place = x[3]
    assert 3 not in h.search(old_place, 5, allowed)[0].tolist()
    assert h.check_integrity() == []
    h.remove(np.array([4], dtype=np.int32))
    assert 4 not in h.search(far[0] + 4, 3, allowed)[0].tolist()
    h.add(np.array([4], dtype=np.int32))  # re-adding a deleted slot brings it back
    assert h.search(far[0] + 4, 1, allowed)[0].tolist() == [4] and h.n_deleted == 0


def test_the_index_follows_the_table_when_it_grows():
    x, qs = clustered(600, 8, 15)
    t = VectorTable(8, "cosine", 16)
    h = HNSWIndex(t, HNSWParams(m=8))
    for start in range(0, 600, 150):
        slots = t.allocate(150)
        t.write(slots, x[start:start + 150])
        h.add(slots)
    assert t.capacity >= 600 and h.levels.shape[0] == t.capacity
    assert recall(h, x, qs, "cosine", all_allowed(t)) >= 0.9
    assert h.check_integrity() == []


# --- persistence ----------------------------------------------------------------------------------------------------

def test_round_trip_gives_identical_results_and_the_same_future():
    x, qs = clustered(1500, 12, 16)
    t, h = build(x, "cosine", HNSWParams(m=8, ef_construction=64, seed=3), capacity=2048)
    h.remove(np.array([7, 8], dtype=np.int32))
    meta, arrays = h.to_arrays()
    json.dumps(meta)  # JSON-able
    assert all(np.issubdtype(a.dtype, np.number) for a in arrays.values())
    h2 = HNSWIndex.from_arrays(t, h.params, meta, arrays)
    allowed = all_allowed(t)
    for q in qs:
        a, b = h.search(q, 10, allowed), h2.search(q, 10, allowed)
        assert a[0].tolist() == b[0].tolist() and a[1].tobytes() == b[1].tobytes()
    # the loaded index holds no more than the built one (which may keep room in links_up from growing by chunks)
    assert h2.n_deleted == 2 and h2.memory_bytes() <= h.memory_bytes()
    # the same inserts after the load give the same graph: the level generator's state was saved
    new = t.allocate(300)
    t.write(new, clustered(300, 12, 17)[0])
    h.add(new)
    h2.add(new)
    for name, arr in h.to_arrays()[1].items():
        assert np.array_equal(arr, h2.to_arrays()[1][name]), name


def test_same_seed_same_graph_other_seed_other_graph():
    x, _ = clustered(800, 8, 18)
    a = build(x, params=HNSWParams(seed=5))[1].to_arrays()[1]
    b = build(x, params=HNSWParams(seed=5))[1].to_arrays()[1]
    c = build(x, params=HNSWParams(seed=6))[1].to_arrays()[1]
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["levels"], c["levels"])


def test_memory_is_links_plus_small_bookkeeping():
    x, _ = clustered(2000, 8, 19)
    t, h = build(x, "euclidean", HNSWParams(m=16))
    per_node = h.memory_bytes() / t.capacity
    assert 2 * 16 * 4 <= per_node <= 2 * 16 * 4 + 20  # layer 0 links, then ~1/m upper rows, level, offset, flag


# --- copies of one vector ---------------------------------------------------------------------------------------

def _reached_from(h, start: int) -> set[int]:
    """The slots layer 0 leads to from ``start``."""
    seen, todo = {start}, [start]
    while todo:
        for v in h.links0[todo.pop()].tolist():
            if v < 0:
                break
            if v not in seen:
                seen.add(v)
                todo.append(v)
    return seen


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "dot"])
def test_many_copies_of_one_vector_do_not_close_the_graph_around_them(metric):
    """A document stored 100 times over: its copies lie at distance zero from each other, and a heuristic that let
    them cover everything else linked them only to each other (a room a walk enters and never leaves, recall 0
    for queries whose descent passed through it). Each copy must lead back to the rest, also after deletes and
    updates relink the nodes around it."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, 4)).astype(np.float32)
    x[100:250] = x[0]
    t, h = build(x, metric, HNSWParams(m=8, ef_construction=100, seed=1))
    gone = np.arange(0, 300, 3, dtype=np.int32)
    h.remove(gone)
    moved = np.arange(2000, 2100, dtype=np.int32)
    t.write(moved, rng.normal(size=(len(moved), 4)).astype(np.float32))
    h.add(moved)
    live = np.ones(t.capacity, dtype=bool)
    live[gone] = False
    copies = [s for s in range(100, 250) if live[s]]
    everyone = int(live[: len(x)].sum())
    for s in copies:
        assert len(_reached_from(h, s)) >= everyone  # the deleted nodes are still walked through
    x_now = t.vectors[: len(x)]
    qs = rng.normal(size=(200, 4)).astype(np.float32)
    hits = 0
    for q in qs:
        truth = exact_topk(x_now, q, metric, 10, live)
        d_truth = np.sort([_dist(x_now[s], q, metric) for s in truth])
        got = h.search(q, 10, live, 64)[0].tolist()
        d_got = np.sort([_dist(x_now[s], q, metric) for s in got])
        hits += int(np.sum(d_got <= d_truth[-1] + 1e-5))  # recall by distance: the copies tie with each other
    assert hits / (10 * len(qs)) >= 0.95
    assert h.check_integrity() == []


def _dist(v, q, metric):
    v, q = v.astype(np.float64), q.astype(np.float64)
    if metric == "euclidean":
        return float(((v - q) ** 2).sum())
    if metric == "dot":
        return float(-(v @ q))
    return float(-(v @ q) / (np.linalg.norm(v) * np.linalg.norm(q)))
