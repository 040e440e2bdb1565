"""Ties at the k-th place are broken by id on every exact path (SPEC section 1, "result order").

Many records share one vector, so they tie exactly at the k-th distance; they are written in an order where slot
order and id order disagree. Each path (single and batch; unfiltered and filtered; the flat index, the filtered
scan under HNSW and the filtered graph walk when it reaches every matching record) must return the same top k as
a ranking of every allowed record by (score descending, id ascending).
"""

from __future__ import annotations

import numpy as np
import pytest

import vecstore_ref as vs

DIM = 8
N_NEAR, N_TIED, N_FAR = 5, 40, 120


def build(path, index, metric):
    rng = np.random.default_rng(7)
    q = rng.normal(size=DIM).astype(np.float32)
    tied = (q + 0.5 * rng.normal(size=DIM)).astype(np.float32)
    scale = 3.0 if metric == "dot" else 1.0  # under dot, longer is better
    near = (scale * q + 0.01 * rng.normal(size=(N_NEAR, DIM))).astype(np.float32)
    far = (-q + 0.3 * rng.normal(size=(N_FAR, DIM))).astype(np.float32)
    rows = ([(f"near{i}", near[i], 1) for i in range(N_NEAR)]
            + [(f"tie{i:02d}", tied, 1) for i in range(N_TIED)]
            + [(f"far{i:03d}", far[i], i % 4) for i in range(N_FAR)])
    # slots in descending id order among the tied records: a slot-ordered tie break picks the wrong ones
    rows.sort(key=lambda r: r[0], reverse=True)
    s = vs.VecStore.open(path, dim=DIM, metric=metric, index=index)
    s.upsert_many([r[0] for r in rows], np.stack([r[1] for r in rows]), [{"g": r[2]} for r in rows])
    s.flush_index()
    return s, q


def oracle(store, q, k, flt):
    """Every allowed record, ranked by the store's own scores (k = all: no boundary), then cut at k."""
    everything = store.query(q, k=len(store), filter=flt)
    ranked = sorted(everything, key=lambda n: (-n.score, n.id))
    assert [n.id for n in ranked] == [n.id for n in everything]
    return [(n.id, n.score) for n in ranked[:k]]


@pytest.fixture(params=["cosine", "euclidean", "dot"])
def metric(request):
    return request.param


@pytest.mark.parametrize("index,flt", [("flat", None), ("flat", "g = 1"), ("hnsw", "g = 1")])
def test_ties_at_the_kth_place_are_broken_by_id(tmp_path, index, metric, flt):
    """(An unfiltered HNSW search is approximate: it has no exact answer to check.)"""
    s, q = build(str(tmp_path / "s"), index, metric)
    with s:
        k = N_NEAR + 15  # the boundary falls inside the tied group
        expected = oracle(s, q, k, flt)
        assert [i for i, _ in expected if i.startswith("tie")] == [f"tie{i:02d}" for i in range(15)]
        assert [(n.id, n.score) for n in s.query(q, k=k, filter=flt)] == expected
        batch = s.query_batch(np.stack([q, q, q]), k=k, filter=flt)
        for row in range(3):
            assert list(zip(batch.ids[row].tolist(), batch.scores[row].tolist())) == [
                (i, np.float32(sc)) for i, sc in expected]


def test_the_filtered_graph_walk_breaks_ties_by_id(tmp_path, metric):
    """The filtered walk (plan filtered-hnsw), forced, with ef above the number of matching records: the walk then
    reaches every one of them, and a tie at the k-th place must still be settled by id, single and batch."""
    s, q = build(str(tmp_path / "s"), "hnsw", metric)
    with s:
        k = N_NEAR + 15
        expected = oracle(s, q, k, "g = 1")
        s._forced_plan = "filtered-hnsw"
        assert s.query_explain(q, k=k, filter="g = 1", ef=200).plan == "filtered-hnsw"
        assert [(n.id, n.score) for n in s.query(q, k=k, filter="g = 1", ef=200)] == expected
        batch = s.query_batch(np.stack([q, q]), k=k, filter="g = 1", ef=200)
        assert batch.ids[1].tolist() == [i for i, _ in expected]


def test_a_tie_break_by_id_survives_compaction(tmp_path):
    """Why ids and not slots: compaction moves slots, and the results must not change."""
    s, q = build(str(tmp_path / "s"), "flat", "cosine")
    with s:
        before = [n.id for n in s.query(q, k=N_NEAR + 15, filter="g = 1")]
        for i in range(N_FAR):
            if i % 3 == 0:
                s.delete(f"far{i:03d}")
        s.compact()
        assert [n.id for n in s.query(q, k=N_NEAR + 15, filter="g = 1")] == before


@pytest.mark.parametrize("euclidean", [0, 1])
def test_scores_kernel_matches_numpy_and_reports_both_ties(euclidean):
    """The results' score kernel gives numpy's float32 scores and says where two are equal (inside the k
    written) and whether the next result sits at the k-th distance."""
    from vecstore_ref.jit import load

    scores_of = load("query_steps").scores_of
    rng = np.random.default_rng(3)
    for trial in range(200):
        n = int(rng.integers(1, 20))
        d = np.sort(rng.choice(np.float32([-1e-7, 0.0, 0.25, 0.5, 1.0, 2.0, 1e-30, 3.0]), size=n)
                    if trial % 2 else rng.random(n, dtype=np.float32) * 4 - 1e-6).astype(np.float32)
        k = int(rng.integers(1, n + 1))
        out = np.empty(k, dtype=np.float32)
        ties = scores_of(euclidean, d, out)
        expect = -np.sqrt(np.maximum(d[:k], np.float32(0))) if euclidean else -d[:k]
        assert out.tobytes() == expect.astype(np.float32).tobytes()
        assert bool(ties & 1) == (len(set(expect.tolist())) < k)
        assert bool(ties & 2) == (k < n and d[k] == d[k - 1])
