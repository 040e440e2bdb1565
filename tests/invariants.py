"""The invariants of SPEC section 11, as functions of (store, model), shared by the stateful tests.

Kept apart from the state machines (as chroma's property tests do) so that each invariant is written once and named.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class ModelRecord:
    vector: np.ndarray
    metadata: dict | None
    expires_at: float | None
    soft: bool = False


@dataclass
class Model:
    """The visible state as a plain dict, judged by the same clock as the store."""

    records: dict[str, ModelRecord] = field(default_factory=dict)
    dead: int = 0  # hard-deleted or tombstoned, not yet compacted

    def exists(self, id_: str, now: float) -> bool:
        r = self.records.get(id_)
        return r is not None and (r.expires_at is None or now < r.expires_at)

    def visible(self, id_: str, now: float) -> bool:
        return self.exists(id_, now) and not self.records[id_].soft

    def visible_ids(self, now: float) -> set[str]:
        return {i for i in self.records if self.visible(i, now)}

    def deleted_count(self, now: float) -> int:
        soft_or_expired = sum(1 for i, r in self.records.items() if r.soft or not self.exists(i, now))
        return soft_or_expired + self.dead

    def brute_force(self, q: np.ndarray, k: int, metric: str, now: float, predicate=None):
        """Exact top-k as (id, score) with ties by id, in float64."""
        rows = []
        q64 = q.astype(np.float64)
        for id_ in self.visible_ids(now):
            r = self.records[id_]
            if predicate is not None and not predicate(r.metadata):
                continue
            x = r.vector.astype(np.float64)
            if metric == "euclidean":
                s = -math.sqrt(float(((q64 - x) ** 2).sum()))
            elif metric == "dot":
                s = float(q64 @ x)
            else:
                s = float(q64 @ x) / (np.linalg.norm(q64) * np.linalg.norm(x))
            rows.append((id_, s))
        rows.sort(key=lambda t: (-t[1], t[0]))
        return rows[:k]


# --- the invariants ---------------------------------------------------------------------------------------------


def state_equals_model(store, model: Model, now: float) -> None:
    """Invariants 1, 5 and 9: ids, vectors (bytes), metadata, TTL, soft flags; len and `in`; counts."""
    visible = model.visible_ids(now)
    assert set(store.ids()) == visible
    assert len(store) == len(visible)
    for id_, r in model.records.items():
        if model.visible(id_, now):
            got = store.get(id_)
            assert id_ in store
            assert got.vector.tobytes() == r.vector.tobytes()
            assert got.metadata == r.metadata
            assert got.expires_at == r.expires_at
        elif model.exists(id_, now):  # soft-deleted
            assert id_ not in store
            got = store.get(id_, include_deleted=True)
            assert got.deleted and got.vector.tobytes() == r.vector.tobytes()
        else:  # expired: invisible to get, in and len, before or after the sweep
            assert id_ not in store
    assert store.deleted_count() == model.deleted_count(now)
    stats = store.stats()
    assert stats.visible == len(visible)
    assert stats.deleted_count == model.deleted_count(now)


def query_equals_brute_force(store, model: Model, q: np.ndarray, k: int, metric: str, now: float,
                             filter_text=None, predicate=None) -> None:
    """Invariant 7 for the flat index: the same ids in the same order; scores equal to float32 rounding."""
    got = store.query(q, k=k, filter=filter_text)
    want = model.brute_force(q, k, metric, now, predicate)
    assert [n.id for n in got] == [i for i, _ in want], (got, want)
    for n, (_, s) in zip(got, want):
        assert n.score == pytest_approx(s)


def recall_at_least(store, model: Model, q: np.ndarray, k: int, metric: str, now: float, threshold: float) -> float:
    """Invariant 7 for HNSW: recall@k against the model's brute force."""
    got = {n.id for n in store.query(q, k=k)}
    want = {i for i, _ in model.brute_force(q, k, metric, now)}
    recall = len(got & want) / max(1, len(want))
    assert recall >= threshold, recall
    return recall


def pytest_approx(x):
    import pytest

    return pytest.approx(x, rel=1e-5, abs=1e-5)
