"""The read side of :class:`VecStore`: filters, query planning, search, result ordering, estimate and explain.

A query runs in five steps: validate; turn the filter (cached by text) into a boolean mask over the metadata
columns and AND it with the visibility mask; pick a plan; run the index kernels on slots; map slots to ids and order
the results by (score desc, id asc). The plans:

- ``flat``: an exact scan of every visible record (the flat index);
- ``hnsw``: the graph walk (Malkov & Yashunin 2018), non-visible nodes traversed but never returned;
- ``filtered-scan``: an exact scan of just the matching rows, chosen when they are few (at most
  ``FILTERED_SCAN_MAX_ROWS``, or ``FILTERED_SCAN_MAX_FRACTION`` of the live records), where a graph walk would
  wander through non-matching nodes;
- ``filtered-hnsw``: the graph walk restricted to matching records.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .cost import estimate, explain
from .errors import InvalidArgumentTypeError
from .filter import Filter, parse_filter
from .index.base import DTYPE_SLOT, scores_from_distances
from .state import copy_metadata
from .types import BatchQueryResult, Neighbor, Query
from .validation import validate_ef, validate_k, validate_query_vector, validate_vector, validate_vectors

FILTERED_SCAN_MAX_ROWS = 4096  # below this many matching rows an exact scan beats a filtered graph walk
FILTERED_SCAN_MAX_FRACTION = 0.05
FILTER_CACHE_SIZE = 256


class QueryMethods:
    """Mixed into :class:`VecStore`; relies on its ``_lock``, ``_state``, ``_metric``, ``_hnsw`` and clock."""

    _filter_cache: OrderedDict

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
            self._filter_cache[flt] = cached
            if len(self._filter_cache) > FILTER_CACHE_SIZE:
                self._filter_cache.popitem(last=False)
        return cached

    def _unpack_query(self, q, k, filter, ef):
        if isinstance(q, Query):
            return q.vector, q.k, q.filter, q.ef
        return q, k, filter, ef

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

    def _walks_graph(self, plan, n_allowed, k, ef) -> bool:
        """True if ``plan`` walks the HNSW graph. A filtered walk whose mask is sparse enough that the graph index
        would scan the allowed nodes exactly anyway (``HNSWIndex.scan_limit``) is run as an exact scan here, so
        that every exact answer breaks ties at the k-th place the same way (by id, see `_exact_search`)."""
        if plan == "hnsw":
            return True
        if plan != "filtered-hnsw":
            return False
        index = self._state.index
        return n_allowed > index.scan_limit(index._ef(k, ef))

    def _search_one(self, vec, k, allowed, n_allowed, plan, ef):
        """Run one query on the chosen plan; returns (slots, dists, stats)."""
        st = self._state
        if self._walks_graph(plan, n_allowed, k, ef):
            slots, dists, stats = st.index.search(vec, k, allowed, ef)
            self._cost.observe_hnsw(stats.distance_computations, max(ef or self._hnsw.ef_search, k))
            return slots, dists, stats
        return self._exact_search(vec, k, allowed, plan)

    def _exact_search(self, vec, k, allowed, plan):
        """The exact top-k among ``allowed``: every row (``plan="flat"``) or just the allowed ones, listed.

        The kernels order by (distance, slot); when the k-th distance ties with a row left out, the tied rows are
        chosen by id instead (`_resolve_boundary_ties`), on every exact path alike.
        """
        from .index.flat import FlatIndex

        st = self._state
        flat = st.index if isinstance(st.index, FlatIndex) else FlatIndex(st.table)
        if plan == "flat":
            slots, dists, stats, next_dist = flat.search_with_boundary(vec, k, allowed)
        else:
            candidates = np.flatnonzero(allowed[: st.n_slots]).astype(DTYPE_SLOT)
            slots, dists, stats, next_dist = flat.search_subset_with_boundary(vec, k, candidates)
        if len(slots) == k and k and next_dist == dists[-1]:
            slots, dists = self._resolve_boundary_ties(flat, vec, allowed, slots, dists)
        return slots, dists, stats

    def _resolve_boundary_ties(self, flat, vec, allowed, slots, dists):
        """Equal distances at the k-th place are broken by id, not slot (results must not depend on slot order)."""
        boundary = dists[-1]
        keep = dists < boundary
        tied = flat.ties_at(vec, allowed, boundary)
        tied = sorted(tied.tolist(), key=lambda s: self._state.ids[s])[: len(slots) - int(keep.sum())]
        new_slots = np.concatenate([slots[keep], np.asarray(tied, dtype=DTYPE_SLOT)])
        new_dists = np.concatenate([dists[keep], np.full(len(tied), boundary, dtype=dists.dtype)])
        return new_slots, new_dists

    def _neighbors(self, slots, dists) -> list[Neighbor]:
        """Results for slots ordered by (distance, slot): ids, scores, metadata copies; equal scores ordered by id."""
        st = self._state
        scores = scores_from_distances(self._metric, dists).tolist()
        ids, meta = st.ids, st.meta
        out = [Neighbor(ids[s], sc, None if (md := meta[s]) is None else copy_metadata(md))
               for s, sc in zip(slots.tolist(), scores)]
        if len(set(scores)) < len(scores):  # a tie: the slot order the kernels used must not show
            out.sort(key=lambda n: (-n.score, n.id))
        return out

    def _fill_batch_result(self, slots, dists, ids, scores, n_found) -> None:
        """Write a batch's results, rows ordered by (distance, slot) and padded with -1, into the result arrays.

        Whole-matrix operations; only the rare rows with equal scores are re-sorted (by id) one by one.
        """
        st = self._state
        found = slots >= 0
        kk = slots.shape[1]
        n_found[:] = found.sum(axis=1)
        sc = scores_from_distances(self._metric, dists)
        scores[:, :kk] = np.where(found, sc, -np.inf)
        ids[:, :kk] = np.where(found, st.ids[np.maximum(slots, 0)], None)
        tied = ((sc[:, 1:] == sc[:, :-1]) & found[:, 1:]).any(axis=1)
        for i in np.flatnonzero(tied).tolist():
            n = int(n_found[i])
            order = sorted(range(n), key=lambda j: (-scores[i, j], ids[i, j]))
            ids[i, :n], scores[i, :n] = ids[i, order], scores[i, order]

    def query(self, q, k: int = 10, filter=None, ef: int | None = None) -> list[Neighbor]:
        """Top-k visible records matching ``filter``, best first (ties by id). ``q`` is a vector or a :class:`Query`."""
        vector, k, flt, ef = self._unpack_query(q, k, filter, ef)
        with self._lock:
            self._check_open()
            k = validate_k(k, self._max_k)
            ef = validate_ef(ef)
            flt = self._filter(flt)
            st = self._state
            if st.dim is None:
                validate_vector(vector, None, self._metric, "query vector")
                return []
            vec = validate_query_vector(vector, st.dim, self._metric)
            allowed, n_allowed = self._allowed(flt)
            if n_allowed == 0:
                return []
            plan = self._plan(flt, n_allowed)
            slots, dists, _ = self._search_one(vec, min(k, n_allowed), allowed, n_allowed, plan, ef)
            return self._neighbors(slots, dists)

    def query_batch(self, vectors, k: int = 10, filter=None, ef: int | None = None) -> BatchQueryResult:
        """The same as :meth:`query` for each row of an (n, dim) array, searched in parallel."""
        with self._lock:
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
            if self._walks_graph(plan, n_allowed, kk, ef):
                slots, dists, _, _ = st.index.search_batch(mat, kk, allowed, ef)
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

        Returns a :class:`QueryEstimate` (valid, errors, cost_estimate, estimated_duration_ms,
        estimated_distance_computations, plan, selectivity, recommendations).
        """
        with self._lock:
            self._check_open()
            return estimate(self, q, k, filter, ef)

    def query_explain(self, q, k: int = 10, filter=None, ef: int | None = None):
        """Run a query and report its plan, work counters, time per phase and which filter clauses each result
        matched (an :class:`ExplainResult`)."""
        with self._lock:
            self._check_open()
            return explain(self, q, k, filter, ef)
