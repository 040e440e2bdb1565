"""The read side of `VecStore`: filters, query planning, search, result ordering, estimate and explain.

A query runs in five steps: validate; turn the filter (cached by text) into a boolean mask over the metadata
columns and AND it with the visibility mask; pick a plan; run the index kernels on slots; map slots to ids and order
the results by (score desc, id asc). The plans:

- ``flat``: an exact scan of every visible record (the flat index);
- ``hnsw``: the graph walk (Malkov & Yashunin 2018), non-visible nodes traversed but never returned;
- ``filtered-scan``: an exact scan of just the matching rows, chosen when they are few (at most
  ``FILTERED_SCAN_MAX_ROWS``, or ``FILTERED_SCAN_MAX_FRACTION`` of the live records), where a graph walk would
  wander through non-matching nodes;
- ``filtered-hnsw``: the graph walk restricted to matching records.

Ties. The kernels order results by (distance, slot); SPEC section 1 orders them by (score, id), so that results
do not depend on where compaction put a record. Ties *inside* the top k are re-sorted by id; a tie *at* the k-th
place is settled from the results beyond k: the exact paths ask their kernels for the best distance left out (and
then for every slot at the boundary distance), the graph walk hands back all of its result list ``W``.

Every read holds the read side of the store's read-write lock (`vecstore_ref.rwlock`) for its whole run, so it
sees one state: no write applies meanwhile.
"""

from __future__ import annotations

import numpy as np

from .cost import estimate, explain
from .errors import InvalidArgumentTypeError, StoreClosedError
from .filter import Filter, parse_filter
from .index.base import DTYPE_SLOT, scores_from_distances
from .types import BatchQueryResult, Neighbor, Query
from .validation import validate_ef, validate_k, validate_query_vector, validate_vector, validate_vectors

FILTERED_SCAN_MAX_ROWS = 4096  # below this many matching rows an exact scan beats a filtered graph walk
FILTERED_SCAN_MAX_FRACTION = 0.05
FILTER_CACHE_SIZE = 256
DIST_ZERO = np.float32(0.0)


def _by_score_then_id(n: Neighbor) -> tuple:
    return -n.score, n.id


class QueryMethods:
    """Mixed into `VecStore`; relies on its ``_rw`` (read side), ``_state``, ``_metric``, ``_hnsw`` and clock."""

    _filter_cache: dict

    def _filter(self, flt) -> Filter | None:
        if flt is None:
            return None
        if isinstance(flt, Filter):
            return flt
        if not isinstance(flt, str):
            raise InvalidArgumentTypeError(f"filter must be a str or a parse_filter() result, got {type(flt).__name__}")
        cached = self._filter_cache.get(flt)
        if cached is None:
            cached = parse_filter(flt)
            if len(self._filter_cache) >= FILTER_CACHE_SIZE:  # readers race here harmlessly: plain dict ops
                self._filter_cache.clear()
            self._filter_cache[flt] = cached
        return cached

    def _allowed(self, flt: Filter | None):
        """(allowed mask (capacity,), number allowed) for the visible records matching ``flt``."""
        st = self._state
        now = self._now()
        visible = st.visible_mask(now)
        if flt is None:
            n = st.n_live if visible is st.live else int(np.count_nonzero(visible[: st.n_slots]))
            return visible, n
        mask = np.zeros(visible.shape[0], dtype=bool)
        mask[: st.n_slots] = flt.mask(st.columns, st.n_slots) & visible[: st.n_slots]
        return mask, int(np.count_nonzero(mask))

    def _plan(self, flt, n_allowed: int) -> str:
        if self._index_kind == "flat" or self._state.index is None or getattr(self._state.index, "kind", "") == "flat":
            return "flat" if flt is None else "filtered-scan"
        if flt is None:
            return "hnsw"
        if n_allowed <= FILTERED_SCAN_MAX_ROWS or n_allowed <= FILTERED_SCAN_MAX_FRACTION * self._state.n_live:
            return "filtered-scan"
        return "filtered-hnsw"

    def _search_one(self, vec, k, allowed, n_allowed, plan, ef):
        """Run one query on the chosen plan; returns ``(slots, dists, stats)``: the top ``k`` by (distance, id)
        at the boundary, by (distance, slot) inside (see `_results`)."""
        st = self._state
        if plan in ("hnsw", "filtered-hnsw"):
            slots, dists, stats = st.index.search(vec, k, allowed, ef, spare=True)
            self._cost.observe_hnsw(stats.distance_computations, max(ef or self._hnsw.ef_search, k))
            if slots.shape[0] > k:
                slots, dists = self._cut_at_k(slots, dists, k)
            return slots, dists, stats
        from .index.flat import FlatIndex

        flat = st.index if isinstance(st.index, FlatIndex) else FlatIndex(st.table)
        if plan == "filtered-scan":
            candidates = np.flatnonzero(allowed[: st.n_slots]).astype(DTYPE_SLOT)
            slots, dists, stats, next_dist = flat.search_subset_with_boundary(vec, k, candidates)
        else:
            slots, dists, stats, next_dist = flat.search_with_boundary(vec, k, allowed)
        if len(slots) == k and k and next_dist == dists[-1]:
            slots, dists = self._resolve_boundary_ties(flat, vec, allowed, slots, dists)
        return slots, dists, stats

    def _cut_at_k(self, slots: np.ndarray, dists: np.ndarray, k: int):
        """The first ``k`` of results ordered by (distance, slot), with a tie at the k-th place settled by id."""
        boundary = dists[k - 1]
        if dists[k] != boundary:
            return slots[:k], dists[:k]
        keep = dists < boundary
        tied = slots[dists == boundary].tolist()
        tied = sorted(tied, key=self._state.id_of)[: k - int(keep.sum())]
        return (np.concatenate([slots[keep], np.asarray(tied, dtype=DTYPE_SLOT)]),
                np.concatenate([dists[keep], np.full(len(tied), boundary, dtype=dists.dtype)]))

    def _resolve_boundary_ties(self, flat, vec, allowed, slots, dists):
        """Equal distances at the k-th place are broken by id, not slot (results must not depend on slot order)."""
        boundary = dists[-1]
        keep = dists < boundary
        tied = flat.ties_at(vec, allowed, boundary)
        tied = sorted(tied.tolist(), key=self._state.id_of)[: len(slots) - int(keep.sum())]
        new_slots = np.concatenate([slots[keep], np.asarray(tied, dtype=DTYPE_SLOT)])
        new_dists = np.concatenate([dists[keep], np.full(len(tied), boundary, dtype=dists.dtype)])
        return new_slots, new_dists

    def _results(self, slots: list[int], dists: np.ndarray) -> list[Neighbor]:
        """Results for slots ordered by (distance, slot): ids, scores, metadata copies; equal scores ordered by id."""
        st = self._state
        if self._metric == "euclidean":
            scores = (-np.sqrt(np.maximum(dists, DIST_ZERO))).tolist()
        else:
            scores = (-dists).tolist()
        out = list(map(Neighbor, st.id_map.ids_of(slots), scores, st.columns.get_many(slots)))
        if len(set(scores)) < len(scores):  # a tie: the slot order the kernels used must not show
            out.sort(key=_by_score_then_id)
        return out

    def _fill_batch_result(self, slots, dists, ids, scores, n_found) -> None:
        """Write a batch's results, rows ordered by (distance, slot) and padded with -1, into the result arrays.

        ``slots``/``dists`` may hold more columns than ``k`` (a graph walk's spare results): a tie at the k-th
        place is settled from them by id. Whole-matrix operations; only the rare rows with equal scores are
        re-sorted (by id) one by one.
        """
        st = self._state
        k = ids.shape[1]
        if slots.shape[1] > k:
            at_k = (slots[:, k] >= 0) & (dists[:, k] == dists[:, k - 1])
            for i in np.flatnonzero(at_k).tolist():
                row_s, row_d = self._cut_at_k(slots[i][slots[i] >= 0], dists[i][slots[i] >= 0], k)
                slots[i, :k], dists[i, :k] = row_s, row_d
            slots, dists = slots[:, :k], dists[:, :k]
        found = slots >= 0
        kk = slots.shape[1]
        n_found[:] = found.sum(axis=1)
        sc = scores_from_distances(self._metric, dists)
        scores[:, :kk] = np.where(found, sc, -np.inf)
        ids[:, :kk] = np.where(found, st.id_map.array()[np.maximum(slots, 0)], None)
        tied = ((sc[:, 1:] == sc[:, :-1]) & found[:, 1:]).any(axis=1)
        for i in np.flatnonzero(tied).tolist():
            n = int(n_found[i])
            order = sorted(range(n), key=lambda j: (-scores[i, j], ids[i, j]))
            ids[i, :n], scores[i, :n] = ids[i, order], scores[i, order]

    def query(self, q, k: int = 10, filter=None, ef: int | None = None) -> list[Neighbor]:
        """Top-k visible records matching ``filter``, best first (ties by id). ``q`` is a vector or a `Query`."""
        if type(q) is Query:
            vector, k, filter, ef = q.vector, q.k, q.filter, q.ef
        else:
            vector = q
        rw = self._rw
        rw.acquire_read()
        try:
            if self._closed:
                raise StoreClosedError(f"the store at {self.path} is closed")
            if type(k) is not int or not 1 <= k <= self._max_k:
                k = validate_k(k, self._max_k)
            if ef is not None:
                ef = validate_ef(ef)
            flt = None if filter is None else self._filter(filter)
            st = self._state
            if st.dim is None:
                validate_vector(vector, None, self._metric, "query vector")
                return []
            vec = validate_query_vector(vector, st.dim, self._metric)
            allowed, n_allowed = self._allowed(flt)
            if n_allowed == 0:
                return []
            plan = self._plan(flt, n_allowed)
            if n_allowed < k:
                k = n_allowed
            if plan == "hnsw" or plan == "filtered-hnsw":
                slots, dists, n_dist = st.index.top(vec, k, allowed, ef)
                self._cost.observe_hnsw(n_dist, max(ef or self._hnsw.ef_search, k))
                if len(slots) > k:
                    if dists[k] == dists[k - 1]:  # a tie at the k-th place: settled by id
                        cut_s, cut_d = self._cut_at_k(np.asarray(slots, dtype=DTYPE_SLOT), dists, k)
                        return self._results(cut_s.tolist(), cut_d)
                    slots, dists = slots[:k], dists[:k]
                return self._results(slots, dists)
            slots, dists, _ = self._search_one(vec, k, allowed, n_allowed, plan, ef)
            return self._results(slots.tolist(), dists)
        finally:
            rw.release_read()

    def query_batch(self, vectors, k: int = 10, filter=None, ef: int | None = None) -> BatchQueryResult:
        """The same as `query` for each row of an (n, dim) array, searched in parallel."""
        with self._rw.read():
            self._check_open()
            k = validate_k(k, self._max_k)
            ef = validate_ef(ef)
            flt = self._filter(filter)
            st = self._state
            mat = validate_vectors(vectors, st.dim, self._metric, "query vectors")
            nq = mat.shape[0]
            ids = np.full((nq, k), None, dtype=object)
            scores = np.full((nq, k), -np.inf, dtype=np.float32)
            n_found = np.zeros(nq, dtype=np.int64)
            if st.dim is None or nq == 0:
                return BatchQueryResult(ids, scores, n_found)
            allowed, n_allowed = self._allowed(flt)
            if n_allowed == 0:
                return BatchQueryResult(ids, scores, n_found)
            plan = self._plan(flt, n_allowed)
            kk = min(k, n_allowed)
            if plan in ("hnsw", "filtered-hnsw"):
                slots, dists, _, _ = st.index.search_batch(mat, kk, allowed, ef, spare=True)
                if slots.shape[1] > kk:
                    self._fill_batch_result(slots, dists, ids[:, :kk], scores[:, :kk], n_found)
                    return BatchQueryResult(ids, scores, n_found)
            elif plan == "flat":
                slots, dists, _, _, nxt = st.index.search_batch_with_boundary(mat, kk, allowed)
                full = slots[:, -1] >= 0
                for i in np.flatnonzero(full & (nxt == dists[:, -1])).tolist():  # a tie at the k-th place
                    slots[i], dists[i] = self._resolve_boundary_ties(st.index, mat[i], allowed, slots[i], dists[i])
            else:
                slots = np.full((nq, kk), -1, dtype=DTYPE_SLOT)
                dists = np.full((nq, kk), np.inf, dtype=np.float32)
                for i in range(nq):
                    s, d, _ = self._search_one(mat[i], kk, allowed, n_allowed, plan, ef)
                    slots[i, : len(s)], dists[i, : len(s)] = s, d
            self._fill_batch_result(slots, dists, ids, scores, n_found)
            return BatchQueryResult(ids, scores, n_found)

    def estimate_query(self, q, k: int = 10, filter=None, ef: int | None = None):
        """Validate a query and estimate its cost without running it; never raises for a bad query.

        Returns a `QueryEstimate` (valid, errors, cost_estimate, estimated_duration_ms,
        estimated_distance_computations, plan, selectivity, recommendations).
        """
        with self._rw.read():
            self._check_open()
            return estimate(self, q, k, filter, ef)

    def query_explain(self, q, k: int = 10, filter=None, ef: int | None = None):
        """Run a query and report its plan, work counters, time per phase and which filter clauses each result
        matched (an `ExplainResult`)."""
        with self._rw.read():
            self._check_open()
            return explain(self, q, k, filter, ef)
