"""The exact index: equal to a float64 brute force, batch equal to single bit for bit (both the per-query kernel and
the BLAS shortlist path), boundary ties reported, masks respected."""

from __future__ import annotations

import numpy as np
import pytest

from vecstore_ref.index.base import VectorTable
from vecstore_ref.index.flat import BLAS_MIN_QUERIES, BLAS_MIN_ROWS, FlatIndex


def table(x, metric):
    t = VectorTable(x.shape[1], metric, len(x))
    t.write(t.allocate(len(x)), x)
    return t


def brute(x, q, metric, allowed, k):
    x64, q64 = x.astype(np.float64), q.astype(np.float64)
    if metric == "euclidean":
        d = ((x64 - q64) ** 2).sum(axis=1)
    elif metric == "dot":
        d = -(x64 @ q64)
    else:
        d = -(x64 @ q64) / (np.linalg.norm(x64, axis=1) * np.linalg.norm(q64))
    idx = np.flatnonzero(allowed[: len(x)])
    order = idx[np.lexsort((idx, d[idx]))]
    return order[:k], d


@pytest.mark.parametrize("metric", ["euclidean", "dot", "cosine"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_float64_brute_force(metric, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(700, 12)).astype(np.float32)
    t = table(x, metric)
    f = FlatIndex(t)
    allowed = rng.random(t.capacity) < 0.7
    for q in rng.normal(size=(20, 12)).astype(np.float32):
        slots, dists, stats = f.search(q, 10, allowed)
        want, d64 = brute(x, q, metric, allowed, 10)
        assert slots.tolist() == want.tolist() or np.allclose(np.sort(d64[slots]), np.sort(d64[want]), rtol=1e-5)
        assert all(allowed[s] for s in slots)
        assert stats.distance_computations == int(allowed[: len(x)].sum())


@pytest.mark.parametrize("metric", ["euclidean", "dot", "cosine"])
def test_blas_batch_equals_single_query_bit_for_bit(metric):
    rng = np.random.default_rng(3)
    n = BLAS_MIN_ROWS + 1000
    x = rng.normal(size=(n, 16)).astype(np.float32)
    x[100:140] = x[7]  # duplicates: ties at the boundary
    t = table(x, metric)
    f = FlatIndex(t)
    allowed = np.ones(t.capacity, dtype=bool)
    allowed[::5] = False
    qs = np.concatenate([rng.normal(size=(BLAS_MIN_QUERIES + 8, 16)), x[[7, 8, 9]]]).astype(np.float32)
    slots, dists, _, _, nxt = f.search_batch_with_boundary(qs, 10, allowed)
    for i, q in enumerate(qs):
        s, d, _, nd = f.search_with_boundary(q, 10, allowed)
        assert slots[i].tolist() == s.tolist()
        assert dists[i].tobytes() == d.tobytes()
        assert nxt[i] == nd


@pytest.mark.parametrize("metric", ["euclidean", "dot", "cosine"])
@pytest.mark.parametrize("threadpoolctl_installed", [True, False])
def test_blas_batch_over_many_blocks_equals_single(monkeypatch, metric, threadpoolctl_installed):
    """Several query and row blocks, a row block with nothing allowed, clustered rows (most chunks screened out),
    duplicates at the boundary, k beyond what some blocks hold; with and without threadpoolctl."""
    import sys

    import vecstore_ref.index.flat as flat_module

    if not threadpoolctl_installed:
        monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # import fails: BLAS keeps its own threads
    monkeypatch.setattr(flat_module, "BLAS_BLOCK_ROWS", 1000)
    monkeypatch.setattr(flat_module, "BLAS_BLOCK_QUERIES", 40)
    rng = np.random.default_rng(11)
    centers = rng.normal(size=(8, 16)) * 4
    x = (centers[rng.integers(0, 8, 4500)] + rng.normal(size=(4500, 16))).astype(np.float32)
    x[2000:2030] = x[5]  # duplicates: ties at the boundary
    t = table(x, metric)
    f = FlatIndex(t)
    allowed = rng.random(t.capacity) < 0.9
    allowed[1000:2000] = False  # a whole row block with nothing allowed
    qs = np.concatenate([centers[rng.integers(0, 8, 90)] + rng.normal(size=(90, 16)), x[[5, 6]]]).astype(np.float32)
    for k in (1, 10, 40):
        slots, dists, _, _, nxt = f.search_batch_with_boundary(qs, k, allowed)
        for i, q in enumerate(qs):
            s, d, _, nd = f.search_with_boundary(q, k, allowed)
            assert slots[i].tolist() == s.tolist()
            assert dists[i].tobytes() == d.tobytes()
            assert nxt[i] == nd


@pytest.mark.parametrize("metric", ["euclidean", "dot", "cosine"])
def test_near_duplicates_beyond_the_shortlist_fall_back_to_the_exact_scan(metric):
    """Hundreds of rows within float32 rounding of each other: BLAS ranks them differently from the exact kernel, so
    the true top k may lie outside the k + margin shortlist. The batch must notice and still equal single queries."""
    rng = np.random.default_rng(8)
    base = rng.normal(size=16).astype(np.float32)
    x = rng.normal(size=(BLAS_MIN_ROWS + 200, 16)).astype(np.float32)
    x[:400] = base * (1 + rng.normal(size=(400, 1)).astype(np.float32) * 1e-6)  # same direction, norms differ
    x[400:800] = base + rng.normal(size=(400, 16)).astype(np.float32) * 1e-6
    t = table(x, metric)
    f = FlatIndex(t)
    allowed = np.ones(t.capacity, dtype=bool)
    qs = (base + rng.normal(size=(BLAS_MIN_QUERIES, 16)) * 1e-3).astype(np.float32)
    slots, dists, _, _, nxt = f.search_batch_with_boundary(qs, 10, allowed)
    for i, q in enumerate(qs):
        s, d, _, nd = f.search_with_boundary(q, 10, allowed)
        assert slots[i].tolist() == s.tolist()
        assert dists[i].tobytes() == d.tobytes()


def test_overlapping_batch_searches_restore_the_blas_thread_count():
    """Two threads searching at once share the BLAS limit; when both are done BLAS has its threads back."""
    import threading

    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas_threads():
        return sorted(i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas")

    before = blas_threads()
    rng = np.random.default_rng(5)
    x = rng.normal(size=(BLAS_MIN_ROWS + 500, 16)).astype(np.float32)
    f = FlatIndex(table(x, "dot"))
    allowed = np.ones(f.table.capacity, dtype=bool)
    qs = rng.normal(size=(BLAS_MIN_QUERIES * 4, 16)).astype(np.float32)
    want = f.search_batch(qs, 5, allowed)[0]
    results, errors = [], []

    def run():
        try:
            for _ in range(5):
                results.append(f.search_batch(qs, 5, allowed)[0])
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert len(results) == 15 and all(np.array_equal(r, want) for r in results)
    assert blas_threads() == before


def test_small_batch_kernel_path_equals_single():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    t = table(x, "cosine")
    f = FlatIndex(t)
    allowed = np.ones(t.capacity, dtype=bool)
    qs = rng.normal(size=(5, 8)).astype(np.float32)
    slots, dists, n_dist, hops = f.search_batch(qs, 300, allowed)
    for i, q in enumerate(qs):
        s, d, _ = f.search(q, 300, allowed)
        assert slots[i].tolist() == s.tolist() and dists[i].tobytes() == d.tobytes()


def test_boundary_ties_and_ties_at():
    x = np.array([[1, 0], [1, 0], [1, 0], [0, 1], [2, 0]], dtype=np.float32)
    t = table(x, "euclidean")
    f = FlatIndex(t)
    allowed = np.ones(t.capacity, dtype=bool)
    slots, dists, _, nd = f.search_with_boundary(np.array([1, 0], np.float32), 2, allowed)
    assert slots.tolist() == [0, 1] and nd == dists[-1] == 0.0
    assert f.ties_at(np.array([1, 0], np.float32), allowed, 0.0).tolist() == [0, 1, 2]


def test_k_larger_than_allowed_and_empty_mask():
    x = np.eye(4, dtype=np.float32)
    t = table(x, "dot")
    f = FlatIndex(t)
    allowed = np.zeros(t.capacity, dtype=bool)
    assert f.search(x[0], 10, allowed)[0].size == 0
    allowed[:2] = True
    assert sorted(f.search(x[0], 10**9, allowed)[0].tolist()) == [0, 1]


def test_table_growth_is_seen():
    t = VectorTable(3, "euclidean", 16)
    f = FlatIndex(t)
    for i in range(100):
        s = t.allocate(1)
        t.write(s, np.array([[i, 0, 0]], dtype=np.float32))
    allowed = np.ones(t.capacity, dtype=bool)
    assert f.search(np.array([99, 0, 0], np.float32), 1, allowed)[0].tolist() == [99]


def test_run_split_runs_every_share_even_when_the_pool_was_just_replaced():
    """Another thread may grow the process's pool (shutting the old one down) between a caller fetching it and
    submitting to it: the caller runs those shares itself instead of failing."""
    from vecstore_ref.index import parallel

    parallel._workers(3).shutdown(wait=True)  # what a caller that grows the pool does to the one it replaces
    seen = []
    parallel.run_split(lambda out, t, n: out.append((t, n)), 4, seen)
    assert sorted(seen) == [(0, 4), (1, 4), (2, 4), (3, 4)]
    parallel._pool = None  # let the next caller make a live pool
