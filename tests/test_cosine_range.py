"""Cosine over the whole float32 range: any vector with finite values and a float64 norm above 1e-30 is valid
(SPEC section 1), and its scores are right, even where the float32 dot product overflows (``np.full(8, 1e20)``:
each product is 1e40) or underflows (``[1e-30] * 4``)."""

from __future__ import annotations

import numpy as np
import pytest

import vecstore_ref as vs

F32_MAX = float(np.finfo(np.float32).max)
SCALES = [2e-30, 1e-25, 1e-18, 1e-5, 1.0, 1e5, 1e18, 1e20, 1e30, 1e37, 1e38]


def cosine64(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_the_issue_vector_round_trips_with_the_right_scores(tmp_path, index):
    big = np.full(8, 1e20, np.float32)
    other = big.copy()
    other[:4] = -1e20  # orthogonal to big
    with vs.VecStore.open(tmp_path / "s", dim=8, metric="cosine", index=index) as s:
        s.upsert("big", big, {"k": 1})
        s.upsert("other", other)
        s.upsert("unit", np.ones(8, np.float32) / np.sqrt(8))
        got = s.query(big, k=3)
        assert [n.id for n in got][2] == "other"
        assert sorted(n.id for n in got[:2]) == ["big", "unit"]
        assert [n.score for n in got] == pytest.approx([1.0, 1.0, 0.0], abs=1e-6)
        batch = s.query_batch(np.stack([big, other]), k=3)
        assert batch.ids[0].tolist() == [n.id for n in got]
        assert batch.scores[0].tolist() == [np.float32(n.score) for n in got]
        assert batch.ids[1, 0] == "other" and batch.scores[1, 0] == pytest.approx(1.0, abs=1e-6)
        rec = s.get("big")
        assert rec.vector.dtype == np.float32 and np.array_equal(rec.vector, big) and rec.metadata == {"k": 1}
        s.batch_execute([vs.Upsert("big2", big * 2)])
        s.upsert_many(["big3"], (big * 3)[None, :])
        assert {n.id for n in s.query(big, k=5)[:4]} == {"big", "big2", "big3", "unit"}
        s.snapshot()
    with vs.VecStore.open(tmp_path / "s") as s:  # from the snapshot: the same answers
        assert [n.id for n in s.query(big, k=5)][4] == "other"
        assert s.query(big, k=1)[0].score == pytest.approx(1.0, abs=1e-6)


def test_vectors_of_every_magnitude_get_their_float64_cosine(tmp_path):
    rng = np.random.default_rng(3)
    dirs = rng.normal(size=(30, 16))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    rows = np.concatenate([(dirs * sc).astype(np.float32) for sc in SCALES])
    assert np.isfinite(rows).all()
    ids = [f"r{i:04d}" for i in range(len(rows))]
    queries = np.stack([(dirs[i] * SCALES[i % len(SCALES)]).astype(np.float32) for i in range(len(SCALES))])
    with vs.VecStore.open(tmp_path / "s", dim=16, metric="cosine", index="flat") as s:
        s.upsert_many(ids, rows)
        batch = s.query_batch(queries, k=len(rows))
        for qi, q in enumerate(queries):
            got = s.query(q, k=len(rows))
            expected = {i: cosine64(q, rows[j]) for j, i in enumerate(ids)}
            for n in got:
                assert n.score == pytest.approx(expected[n.id], abs=2e-6), (qi, n.id)
            assert batch.ids[qi].tolist() == [n.id for n in got]
            assert batch.scores[qi].tolist() == [np.float32(n.score) for n in got]


def test_the_blas_batch_path_with_extreme_vectors_equals_single_queries(tmp_path):
    """Big batches on big tables shortlist with a float32 matrix product first (FlatIndex._blas_batch)."""
    rng = np.random.default_rng(5)
    rows = rng.normal(size=(4200, 8)).astype(np.float32)
    rows[::100] *= np.float32(1e20)
    rows[50::100] *= np.float32(1e-28)
    queries = rows[::60][:40].copy()
    ids = [f"r{i:05d}" for i in range(len(rows))]
    with vs.VecStore.open(tmp_path / "s", dim=8, metric="cosine", index="flat") as s:
        s.upsert_many(ids, rows)
        batch = s.query_batch(queries, k=10)
        for i, q in enumerate(queries):
            single = s.query(q, k=10)
            assert batch.ids[i].tolist() == [n.id for n in single]
            assert batch.scores[i].tolist() == [np.float32(n.score) for n in single]
            assert single[0].score == pytest.approx(1.0, abs=1e-6)


def test_an_hnsw_graph_of_huge_vectors_is_navigable(tmp_path):
    rng = np.random.default_rng(11)
    rows = (rng.normal(size=(600, 16)) * 1e25).astype(np.float32)
    ids = [f"r{i:03d}" for i in range(len(rows))]
    queries = (rng.normal(size=(20, 16)) * 1e-25).astype(np.float32)
    with vs.VecStore.open(tmp_path / "s", dim=16, metric="cosine", index="hnsw") as s:
        s.upsert_many(ids, rows)
        s.flush_index()
        hits = 0
        for q in queries:
            truth = sorted(ids, key=lambda i: -cosine64(q, rows[int(i[1:])]))[:10]
            hits += len(set(truth) & {n.id for n in s.query(q, k=10, ef=100)})
        assert hits >= 0.9 * 10 * len(queries)


@pytest.mark.parametrize("vector", [[1e-30] * 4, [3e38, 3e38, 3e38, 3e38], [F32_MAX, 0.0, 0.0, 0.0],
                                    [1e-45, 0.0, 0.0, 1e-29]])
def test_valid_cosine_vectors_at_the_edges_are_accepted(tmp_path, vector):
    with vs.VecStore.open(tmp_path / "s", dim=4, metric="cosine", index="flat") as s:
        s.upsert("v", vector)
        s.upsert("w", [1.0, 2.0, 3.0, 4.0])
        v = np.asarray(vector, np.float32)
        assert s.query(vector, k=1)[0].id == "v"
        assert s.query(vector, k=1)[0].score == pytest.approx(1.0, abs=1e-6)
        w = [n for n in s.query([1.0, 2.0, 3.0, 4.0], k=2) if n.id == "v"][0]
        assert w.score == pytest.approx(cosine64(v, [1, 2, 3, 4]), abs=1e-6)


@pytest.mark.parametrize("vector", [[1e-31] * 4, [0.0] * 4, [1e-45] * 4])
def test_vectors_below_the_norm_limit_are_still_refused(tmp_path, vector):
    with vs.VecStore.open(tmp_path / "s", dim=4, metric="cosine", index="flat") as s:
        with pytest.raises(vs.InvalidVectorError, match="norm"):
            s.upsert("v", vector)
        with pytest.raises(vs.InvalidVectorError, match="norm"):
            s.query(vector)
