"""The exact index: every query scans every allowed row (kernels in :mod:`vecstore_ref.kernels.flat_search`).

It keeps no structure of its own (``add`` and ``remove`` do nothing: the store's masks say which slots count), so it
is always consistent, and it is the oracle that every recall figure of the HNSW index is measured against.
"""

from __future__ import annotations

import numpy as np

from .base import DTYPE_SLOT, DTYPE_VEC, SearchStats, VectorTable, query_inv_norm


class FlatIndex:
    kind = "flat"

    def __init__(self, table: VectorTable):
        self.table = table

    def add(self, slots: np.ndarray) -> None:
        """Nothing to do: the scan reads the table."""

    def remove(self, slots: np.ndarray) -> None:
        """Nothing to do: removed slots are simply not allowed."""

    def to_arrays(self) -> tuple[dict, dict[str, np.ndarray]]:
        return {}, {}

    @classmethod
    def from_arrays(cls, table: VectorTable, meta: dict, arrays: dict) -> FlatIndex:
        return cls(table)

    def memory_bytes(self) -> int:
        return 0

    def _k(self, k: int) -> int:
        return max(0, min(int(k), self.table.n_slots))

    def search_with_boundary(self, query: np.ndarray, k: int, allowed: np.ndarray, ef=None):
        """``(slots, dists, stats, next_dist)``: the top-k and the best distance left out (for tie-breaking)."""
        from ..kernels.flat_search import topk_masked

        t = self.table
        k = self._k(k)
        out_d = np.full(k, np.inf, dtype=DTYPE_VEC)
        out_s = np.full(k, -1, dtype=DTYPE_SLOT)
        q = np.ascontiguousarray(query, dtype=DTYPE_VEC)
        found, n_dist, next_d = topk_masked(t.metric_code, q, query_inv_norm(t.metric, q), t.vectors, t.inv_norms,
                                            allowed, t.n_slots, out_d, out_s)
        return out_s[:found], out_d[:found], SearchStats(int(n_dist), 0), float(next_d)

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray, ef=None):
        slots, dists, stats, _ = self.search_with_boundary(query, k, allowed)
        return slots, dists, stats

    def search_subset(self, query: np.ndarray, k: int, candidates: np.ndarray):
        """Top-k among ``candidates`` (int32 slots): the filtered-scan plan."""
        slots, dists, stats, _ = self.search_subset_with_boundary(query, k, candidates)
        return slots, dists, stats

    def search_subset_with_boundary(self, query: np.ndarray, k: int, candidates: np.ndarray):
        from ..kernels.flat_search import topk_subset

        t = self.table
        k = max(0, min(int(k), len(candidates)))
        out_d = np.full(k, np.inf, dtype=DTYPE_VEC)
        out_s = np.full(k, -1, dtype=DTYPE_SLOT)
        q = np.ascontiguousarray(query, dtype=DTYPE_VEC)
        cand = np.ascontiguousarray(candidates, dtype=DTYPE_SLOT)
        found, n_dist, next_d = topk_subset(t.metric_code, q, query_inv_norm(t.metric, q), t.vectors, t.inv_norms,
                                            cand, out_d, out_s)
        return out_s[:found], out_d[:found], SearchStats(int(n_dist), 0), float(next_d)

    def search_batch_with_boundary(self, queries: np.ndarray, k: int, allowed: np.ndarray, ef=None):
        from ..kernels.flat_search import topk_masked_batch

        t = self.table
        Q = np.ascontiguousarray(queries, dtype=DTYPE_VEC)
        nq = Q.shape[0]
        k = self._k(k)
        out_d = np.full((nq, k), np.inf, dtype=DTYPE_VEC)
        out_s = np.full((nq, k), -1, dtype=DTYPE_SLOT)
        found = np.zeros(nq, dtype=np.int64)
        nxt = np.full(nq, np.inf, dtype=DTYPE_VEC)
        if t.metric == "cosine":
            inv = (1.0 / np.linalg.norm(Q.astype(np.float64), axis=1)).astype(DTYPE_VEC)
        else:
            inv = np.ones(nq, dtype=DTYPE_VEC)
        if nq and k:
            topk_masked_batch(t.metric_code, Q, inv, t.vectors, t.inv_norms, allowed, t.n_slots, out_d, out_s, found,
                              nxt)
        n_dist = np.full(nq, int(np.count_nonzero(allowed[: t.n_slots])), dtype=np.int64)
        return out_s, out_d, n_dist, np.zeros(nq, dtype=np.int64), nxt

    def search_batch(self, queries: np.ndarray, k: int, allowed: np.ndarray, ef=None):
        slots, dists, n_dist, hops, _ = self.search_batch_with_boundary(queries, k, allowed)
        return slots, dists, n_dist, hops

    def ties_at(self, query: np.ndarray, allowed: np.ndarray, dist: float) -> np.ndarray:
        """Allowed slots at exactly distance ``dist`` from ``query``, ascending."""
        from ..kernels.flat_search import ties_at

        t = self.table
        q = np.ascontiguousarray(query, dtype=DTYPE_VEC)
        out = np.empty(t.n_slots, dtype=DTYPE_SLOT)
        n = ties_at(t.metric_code, q, query_inv_norm(t.metric, q), t.vectors, t.inv_norms, allowed, t.n_slots,
                    DTYPE_VEC(dist), out)
        return out[:n].copy()
