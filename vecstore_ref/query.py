"""The read side of `VecStore`: filters, query planning, search, result ordering, estimate and explain.

A query runs in five steps: validate; turn the filter into a boolean mask over the metadata columns, ANDed with
the visibility mask (cached per filter text and store version, see `_match`); pick a plan; run the index kernels
on slots; map slots to ids and order the results by (score desc, id asc). The plans:

- ``flat``: an exact scan of every visible record (the flat index);
- ``hnsw``: the graph walk (Malkov & Yashunin 2018), non-visible nodes traversed but never returned;
- ``filtered-scan``: an exact scan of just the matching rows (`vecstore_ref.kernels.filtered_search.scan_subset`);
- ``filtered-hnsw``: the graph walk restricted to the matching records, crossing the others without computing
  their distances (`vecstore_ref.kernels.filtered_search.filtered_knn_search`).

Between the last two the planner picks whichever the store's cost model (`vecstore_ref.cost`), measured on this
machine and this store, says is faster; the same model gives `estimate_query` its figures. The model changes only
when it is calibrated again (the data grew or shrank by half), so a batch gets the plans its single queries get.

Ties. The kernels order results by (distance, slot); SPEC section 1 orders them by (score, id), so that results
do not depend on where compaction put a record. Ties *inside* the top k are re-sorted by id; a tie *at* the k-th
place is settled from the results beyond k: the exact paths ask their kernels for the best distance left out (and
then for every slot at the boundary distance), the graph walks hand back all of their result list ``W``.

Every read holds the read side of the store's read-write lock (`vecstore_ref.rwlock`) for its whole run, so it
sees one state: no write applies meanwhile.
"""

from __future__ import annotations

from threading import get_ident
from typing import NamedTuple

import numpy as np

from .config import MAX_K
from .cost import choose_filtered_plan, estimate, explain
from .errors import FilterTypeError, InvalidArgumentError, StoreClosedError
from .filter import Filter, parse_filter
from .handoff import FLAGS, SLOT_MODULUS
from .index.base import DTYPE_SLOT, DTYPE_VEC, numba_threads, query_inv_norm, scores_from_distances
from .index.parallel import run_split
from .jit import load as load_kernels
from .types import QUERY_AND_ARGUMENTS, BatchQueryResult, Neighbor, _neighbor_from_text, unpack_query
from .validation import (
    MAX_EF,
    validate_ef,
    validate_k,
    validate_query_vector,
    validate_vector,
    validate_vectors,
)

FILTER_CACHE_SIZE = 256  # parsed filters kept by text
MASK_CACHE_ENTRIES = 64  # filter masks kept per store ...
MASK_CACHE_BYTES = 64 * 2**20  # ... and the memory they may hold
_NO_SLOTS = np.zeros(0, dtype=DTYPE_SLOT)
TIE_INSIDE, TIE_AT_K = 1, 2  # what `_scores_of` reports (`vecstore_ref.kernels.query_steps`; no numba import here)


class Match:
    """The records a filter allows in one state of the store: ``mask`` bool (capacity,) (visible and matching;
    shared, never written), ``n`` of them, and their slots (int32, ascending), listed on first use."""

    __slots__ = ("state", "seq", "mask", "n", "_slots", "nbytes", "plans")

    def __init__(self, state, seq, mask: np.ndarray, n: int):
        self.state, self.seq, self.mask, self.n = state, seq, mask, n
        self._slots: np.ndarray | None = None
        self.nbytes = mask.nbytes
        self.plans: dict = {}  # the planner's choices for this match, by (search width, vectors not linked)

    def slots(self) -> np.ndarray:
        s = self._slots
        if s is None:  # readers may race to list them: each computes the same array
            s = np.flatnonzero(self.mask[: self.state.n_slots]).astype(DTYPE_SLOT) if self.n else _NO_SLOTS
            self._slots = s
            self.nbytes = self.mask.nbytes + s.nbytes
        return s


class _Stats(NamedTuple):
    distance_computations: int
    hops: int


class QueryPart:
    """One store's share of a sharded single query, split so that another thread runs only its search.

    `QueryMethods._query_part` does the Python of the query in the calling thread (the read lock, the visibility
    mask, the plan) and `finish` turns the search's slots into `Neighbor`s there too; `search`, which may run
    on a worker thread, is the index call alone (a few microseconds of Python around the kernel). A worker
    that has no Python of its own to run does not compete for the GIL with the caller, whose Python it would
    otherwise wait behind. The read lock is held from `_query_part` to `release`.
    """

    __slots__ = ("store", "state", "vec", "k", "ef", "allowed", "n_allowed", "plan", "result", "locked")

    def __init__(self, store: QueryMethods, vec: np.ndarray, k: int, ef: int | None) -> None:
        self.store, self.vec, self.k, self.ef = store, vec, k, ef
        self.result: list[Neighbor] | None = None  # known without a search (an empty store, nothing visible)
        self.locked = False
        self.plan = ""

    def search(self):
        """The search, in any thread: ``(slots, distances)`` by (distance, slot), or None if there is none."""
        if self.result is not None:
            return None
        st = self.state
        slot = get_ident() % SLOT_MODULUS
        if self.plan == "hnsw":  # the walk hands the GIL over as a single query's does (vecstore_ref.handoff)
            flag = FLAGS[slot]
            try:
                slots, dists, _ = st.index.top(self.vec, self.k, self.allowed, self.ef, self.n_allowed, slot)
            finally:
                FLAGS[slot] = flag  # as the fan-out left it: a thread must never end with its flag set
            return slots, dists
        FLAGS[slot] = 0  # the other plans hand nothing over
        slots, dists, _ = self.store._search_one(self.vec, self.k, Match(st, None, self.allowed, self.n_allowed),
                                                 self.plan, self.ef)
        return slots, dists

    def finish(self, found) -> list[Neighbor]:
        """The `Neighbor`s of what `search` found, in the calling thread (still under the read lock)."""
        if self.result is not None:
            return self.result
        slots, dists = found
        store, k = self.store, self.k
        if self.plan == "hnsw":
            scores = np.empty(min(k, len(slots)), dtype=DTYPE_VEC)
            ties = _scores_of(store._euclidean, dists, scores)
            if ties & TIE_AT_K:  # a tie at the k-th place: settled by id
                return store._results(*store._cut_at_k(slots, dists, k))
            return store._neighbors(slots[:k], scores, ties)
        return store._results(slots, dists)

    def release(self) -> None:
        if self.locked:
            self.locked = False
            self.store._rw.release_read()


def batch_width(k: int, n_allowed: int) -> int:
    """The columns of a `query_batch` result: ``k``, padded (None ids, -inf scores) past what was found; but a
    ``k`` above `MAX_K` (only a store opened with a larger ``max_k`` takes one) pads no further than the records
    that could match, or `MAX_K`: a huge ``k`` never allocates k-sized rows (SPEC section 2)."""
    return k if k <= MAX_K else max(MAX_K, min(k, n_allowed))


def _empty_batch_result(nq: int, k: int) -> BatchQueryResult:
    """``nq`` rows of no results: ids None, scores -inf, none found."""
    return BatchQueryResult(np.full((nq, k), None, dtype=object), np.full((nq, k), -np.inf, dtype=np.float32),
                            np.zeros(nq, dtype=np.int64))


def _by_score_then_id(n: Neighbor) -> tuple:
    return -n.score, n.id


def _scores_of(euclidean: int, dists: np.ndarray, out: np.ndarray) -> int:
    """`vecstore_ref.kernels.query_steps.scores_of`, loaded on first use (numba loads only when a query runs)."""
    global _scores_of
    scores_of = load_kernels("query_steps").scores_of
    _scores_of = scores_of
    return scores_of(euclidean, dists, out)


class QueryMethods:
    """Mixed into `VecStore`; relies on its ``_rw`` (read side), ``_state``, ``_metric``, ``_hnsw`` and clock."""

    _euclidean: int  # 1 for the euclidean metric, else 0 (set when the store opens)
    _filter_cache: dict
    _forced_plan: str | None = None  # tests and benchmarks: run every filtered query on this plan

    def _filter(self, flt) -> Filter | None:
        if flt is None:
            return None
        if isinstance(flt, Filter):
            return flt
        if not isinstance(flt, str):
            raise FilterTypeError(f"a filter must be a str or a parse_filter() result, got {type(flt).__name__}", 0)
        cached = self._filter_cache.get(flt)
        if cached is None:
            cached = parse_filter(flt)
            if len(self._filter_cache) >= FILTER_CACHE_SIZE:  # readers race here harmlessly: plain dict ops
                self._filter_cache.clear()
            self._filter_cache[flt] = cached
        return cached

    def _match(self, flt: Filter | None) -> Match:
        """The visible records matching ``flt`` (None: every visible record), cached per filter text while the
        store is unchanged.

        An entry belongs to one state object and one ``_last_seq``: any write (which bumps the sequence number,
        under the write lock) or compaction (a new state) makes it stale, and so does a TTL that may have passed
        (such masks are not cached). Readers share the cache without a lock: lookups are plain dict reads, and
        an insertion that finds it full drops the oldest entries under ``_mask_lock``.
        """
        st = self._state
        now = self._now()
        if flt is None:
            visible, n = self._allowed(None)
            return Match(st, None, visible, n)
        cache = self._mask_cache
        expiring = st.has_expired(now)
        seq = self._last_seq
        if not expiring:
            hit = cache.get(flt.text)
            if hit is not None and hit.state is st and hit.seq == seq:
                return hit
        visible = st.visible_mask(now)
        mask = np.zeros(visible.shape[0], dtype=bool)
        mask[: st.n_slots] = flt.mask(st.columns, st.n_slots) & visible[: st.n_slots]
        match = Match(st, seq, mask, int(np.count_nonzero(mask)))
        if not expiring:
            with self._mask_lock:
                total = sum(m.nbytes for m in cache.values())
                while cache and (len(cache) >= MASK_CACHE_ENTRIES or total + match.nbytes > MASK_CACHE_BYTES):
                    total -= cache.pop(next(iter(cache))).nbytes
                cache[flt.text] = match
        return match

    def _allowed(self, flt: Filter | None):
        """(allowed mask (capacity,), number allowed) for the visible records matching ``flt``."""
        if flt is None:
            st = self._state
            visible = st.visible_mask(self._now())
            return visible, st.n_live if visible is st.live else int(np.count_nonzero(visible[: st.n_slots]))
        m = self._match(flt)
        return m.mask, m.n

    def _query_filtered(self, vec, k: int, flt: Filter, ef: int | None) -> list[Neighbor]:
        """The body of `query` with a filter."""
        match = self._match(flt)
        if match.n == 0:
            return []
        if match.n < k:
            k = match.n
        slots, dists, _ = self._search_one(vec, k, match, self._plan(flt, match.n, k, ef, match), ef)
        return self._results(slots, dists)

    def _plan(self, flt, n_allowed: int, k: int = 10, ef: int | None = None, match: Match | None = None) -> str:
        """The plan for a query with filter ``flt`` that ``n_allowed`` records match (see the module docstring).

        A filtered plan is remembered in ``match`` (it depends only on the counts and the cost model, which
        change with the store's version), so a repeated filter does not redo the arithmetic.
        """
        index = self._state.index
        if self._index_kind == "flat" or index is None or getattr(index, "kind", "") == "flat":
            return "flat" if flt is None else "filtered-scan"
        if flt is None:
            return "hnsw"
        if self._forced_plan is not None:
            return self._forced_plan
        if match is None:
            return choose_filtered_plan(self, n_allowed, k, ef)
        key = (max(ef or self._hnsw.ef_search, k), index.n_unlinked)
        plan = match.plans.get(key)
        if plan is None:
            plan = match.plans[key] = choose_filtered_plan(self, n_allowed, k, ef)
        return plan

    def _search_one(self, vec, k, match: Match, plan, ef):
        """Run one query on the chosen plan; returns ``(slots, dists, stats)``: the top ``k`` by (distance, id)
        at the boundary, by (distance, slot) inside (see `_results`)."""
        st = self._state
        allowed = match.mask
        if plan in ("hnsw", "filtered-hnsw"):
            if plan == "hnsw":
                slots, dists, stats = st.index.search(vec, k, allowed, ef, spare=True, n_allowed=match.n)
            else:
                s, dists, n_dist, hops = st.index.filtered_top(vec, k, allowed, ef, self._selectivity(match))
                slots, stats = np.asarray(s, dtype=DTYPE_SLOT), _Stats(n_dist, hops)
            if slots.shape[0] > k:
                slots, dists = self._cut_at_k(slots, dists, k)
            return slots, dists, stats
        from .index.flat import FlatIndex

        flat = st.index if isinstance(st.index, FlatIndex) else FlatIndex(st.table)
        if plan == "filtered-scan":
            slots, dists, next_dist = self._scan(vec, k, match.slots())
            stats = _Stats(match.n, 0)
        else:
            slots, dists, stats, next_dist = flat.search_with_boundary(vec, k, allowed)
        if len(slots) == k and k and next_dist == dists[-1]:
            slots, dists = self._resolve_boundary_ties(flat, vec, allowed, slots, dists)
        return slots, dists, stats

    def _selectivity(self, match: Match) -> float:
        """The fraction of the graph's nodes a filtered walk may return (the walk compares it with what it meets)."""
        return match.n / max(1, self._state.index.n_nodes)

    def _scan(self, vec, k, candidates):
        """Exact top ``k`` of the rows ``candidates`` (int32, ascending): ``(slots, dists, next_dist)``."""
        t = self._state.table
        k = min(k, candidates.shape[0])
        out_d = np.empty(k, dtype=np.float32)
        out_s = np.empty(k, dtype=DTYPE_SLOT)
        q_inv = query_inv_norm(t.metric, vec)  # as the flat index and ties_at compute it
        found, _, next_d = load_kernels("filtered_search").scan_subset(t.metric_code, vec, q_inv, t.vectors,
                                                                       t.inv_norms, candidates, out_d, out_s)
        return out_s[:found], out_d[:found], float(next_d)

    def _scan_batch(self, mat, k, candidates):
        """`_scan` for every row of ``mat`` (float32 (nq, dim)), in parallel: ``(slots, dists, next_dist)``."""
        t = self._state.table
        nq = mat.shape[0]
        out_d = np.full((nq, k), np.inf, dtype=np.float32)
        out_s = np.full((nq, k), -1, dtype=DTYPE_SLOT)
        found = np.zeros(nq, dtype=np.int64)
        nxt = np.full(nq, np.inf, dtype=np.float32)
        if t.metric == "cosine":
            inv = (1.0 / np.linalg.norm(mat.astype(np.float64), axis=1)).astype(np.float32)
        else:
            inv = np.ones(nq, dtype=np.float32)
        run_split(load_kernels("filtered_batch").scan_subset_batch, max(1, min(numba_threads(), nq)), t.metric_code,
                  mat, inv, t.vectors, t.inv_norms, candidates, out_d, out_s, found, nxt)
        return out_s, out_d, nxt

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

    def _results(self, slots: np.ndarray, dists: np.ndarray) -> list[Neighbor]:
        """Results for slots ordered by (distance, slot): ids, scores, metadata copies; equal scores ordered by id."""
        if dists.dtype != DTYPE_VEC or not (dists.flags.c_contiguous and dists.flags.writeable):
            dists = np.array(dists, dtype=DTYPE_VEC)  # the kernel's one array type (a read-only one is another)
        scores = np.empty(dists.shape[0], dtype=DTYPE_VEC)
        return self._neighbors(slots, scores, _scores_of(self._euclidean, dists, scores))

    def _neighbors(self, slots: np.ndarray, scores: np.ndarray, ties: int) -> list[Neighbor]:
        """`Neighbor`s of ``slots`` (int32) with their ``scores`` (from `_scores_of`), re-sorted by id where
        ``ties`` says two scores are equal (the slot order the kernels used must not show)."""
        st = self._state
        columns = st.columns
        listed = slots.tolist()
        if columns.any_text:
            out = list(map(_neighbor_from_text, st.id_map.ids_of(listed), scores.tolist(),
                           columns.texts_of(listed, slots)))
        else:  # no record ever held metadata: the public constructor, without the texts' list
            out = list(map(Neighbor, st.id_map.ids_of(listed), scores.tolist()))
        if ties & TIE_INSIDE:
            out.sort(key=_by_score_then_id)
        return out

    @staticmethod
    def _pad_batch(result: BatchQueryResult, k: int) -> BatchQueryResult:
        """``result`` widened to ``k`` columns (padded with None and -inf) when fewer records could match."""
        kk = result.ids.shape[1]
        if kk == k:
            return result
        padded = _empty_batch_result(result.ids.shape[0], k)
        padded.ids[:, :kk], padded.scores[:, :kk] = result.ids, result.scores
        padded.n_found[:] = result.n_found
        return padded

    def _batch_result(self, slots: np.ndarray, dists: np.ndarray, k: int) -> BatchQueryResult:
        """A batch's results from its rows of slots and distances, ordered by (distance, slot) and padded with -1.

        ``slots``/``dists`` may hold more columns than ``k`` (a graph walk's spare results): a tie at the k-th
        place is settled from them by id. Whole-matrix operations: when every row is full (the common case) the ids
        are one gather from the id cache and the scores one array expression; only the rare rows with equal scores
        are re-sorted (by id) one by one.
        """
        st = self._state
        nq = slots.shape[0]
        if slots.shape[1] > k:
            at_k = (slots[:, k] >= 0) & (dists[:, k] == dists[:, k - 1])
            for i in np.flatnonzero(at_k).tolist():
                row_s, row_d = self._cut_at_k(slots[i][slots[i] >= 0], dists[i][slots[i] >= 0], k)
                slots[i, :k], dists[i, :k] = row_s, row_d
            slots, dists = slots[:, :k], dists[:, :k]
        kk = slots.shape[1]
        found = slots >= 0
        sc = scores_from_distances(self._metric, dists)
        id_cache = st.id_map.array()
        if kk == k and found.all():
            ids = id_cache.take(slots)
            scores = np.ascontiguousarray(sc, dtype=np.float32)
            n_found = np.full(nq, k, dtype=np.int64)
        else:  # short rows (fewer records allowed than k, or a walk that found fewer): padded
            ids = np.full((nq, k), None, dtype=object)
            np.copyto(ids[:, :kk], id_cache.take(slots), where=found)  # (slot -1 takes the last entry: masked)
            scores = np.full((nq, k), -np.inf, dtype=np.float32)
            np.copyto(scores[:, :kk], sc, where=found)
            n_found = np.count_nonzero(found, axis=1).astype(np.int64)
        if kk > 1:
            tied_cells = np.flatnonzero((sc[:, 1:] == sc[:, :-1]) & found[:, 1:])
            for i in np.unique(tied_cells // (kk - 1)).tolist():
                n = int(n_found[i])
                order = sorted(range(n), key=lambda j: (-scores[i, j], ids[i, j]))
                ids[i, :n], scores[i, :n] = ids[i, order], scores[i, order]
        return BatchQueryResult(ids, scores, n_found)

    def query(self, q, k: int = 10, filter=None, ef: int | None = None) -> list[Neighbor]:
        """Top-k visible records matching ``filter``, best first (ties by id). ``q`` is a vector or a `Query`."""
        if self._closed:  # before the arguments (checked again under the lock)
            raise StoreClosedError(f"the store at {self.path} is closed")
        if type(q) is np.ndarray:  # the common case, without a call
            vector = q
        else:
            vector, k, filter, ef, conflict = unpack_query(q, k, filter, ef)
            if conflict:
                raise InvalidArgumentError(QUERY_AND_ARGUMENTS)
        rw = self._rw
        rw.acquire_read()
        slot = get_ident() % SLOT_MODULUS
        FLAGS[slot] = 1  # in a query's Python until the walk starts (see vecstore_ref.handoff)
        try:
            if self._closed:
                raise StoreClosedError(f"the store at {self.path} is closed")
            if type(k) is not int or not 1 <= k <= self._max_k:
                k = validate_k(k, self._max_k)
            if ef is not None and (type(ef) is not int or not 1 <= ef <= MAX_EF):
                ef = validate_ef(ef)
            flt = None if filter is None else self._filter(filter)
            st = self._state
            if st.dim is None:
                validate_vector(vector, None, self._metric, "query vector")
                return []
            vec = validate_query_vector(vector, st.dim, self._metric)
            if flt is not None:
                FLAGS[slot] = 0  # the filtered paths hand nothing over
                return self._query_filtered(vec, k, flt, ef)
            if st.n_ttl:
                allowed, n_allowed = self._allowed(None)
            else:  # nothing can expire: every live record is visible (`_allowed` without the clock)
                allowed, n_allowed = st.live, st.n_live
            if n_allowed == 0:
                return []
            plan = self._plan(None, n_allowed)
            if n_allowed < k:
                k = n_allowed
            if plan == "hnsw":
                slots, dists, _ = st.index.top(vec, k, allowed, ef, n_allowed, slot)
                scores = np.empty(min(k, len(slots)), dtype=DTYPE_VEC)
                ties = _scores_of(self._euclidean, dists, scores)  # the scores of the first k
                if ties & TIE_AT_K:  # a tie at the k-th place: settled by id
                    cut_s, cut_d = self._cut_at_k(slots, dists, k)
                    return self._results(cut_s, cut_d)
                return self._neighbors(slots[:k], scores, ties)
            FLAGS[slot] = 0
            slots, dists, _ = self._search_one(vec, k, Match(st, None, allowed, n_allowed), plan, ef)
            return self._results(slots, dists)
        finally:
            FLAGS[slot] = 0
            rw.release_read()

    def _query_part(self, vec: np.ndarray, k: int, ef: int | None) -> QueryPart:
        """This store's share of a sharded store's unfiltered single query (`QueryPart`), its arguments checked
        by the caller: ``vec`` float32 (dim,) C-contiguous, of this store's dimension; ``k`` and ``ef`` valid."""
        part = QueryPart(self, vec, k, ef)
        self._rw.acquire_read()
        part.locked = True
        try:
            if self._closed:
                raise StoreClosedError(f"the store at {self.path} is closed")
            st = part.state = self._state
            if st.dim is None:
                part.result = []
                return part
            if st.n_ttl:
                allowed, n_allowed = self._allowed(None)
            else:
                allowed, n_allowed = st.live, st.n_live
            if n_allowed == 0:
                part.result = []
                return part
            part.allowed, part.n_allowed = allowed, n_allowed
            part.plan = self._plan(None, n_allowed)
            part.k = min(k, n_allowed)
            return part
        except BaseException:
            part.release()
            raise

    def query_batch(self, vectors, k: int = 10, filter=None, ef: int | None = None) -> BatchQueryResult:
        """The same as `query` for each row of an (n, dim) array, searched in parallel."""
        with self._rw.read(), self._one_moment():
            self._check_open()
            k = validate_k(k, self._max_k)
            ef = validate_ef(ef)
            flt = self._filter(filter)
            st = self._state
            mat = validate_vectors(vectors, st.dim, self._metric, "query vectors")
            nq = mat.shape[0]
            if st.dim is None or nq == 0:
                return _empty_batch_result(nq, batch_width(k, 0))
            match = self._match(flt)
            allowed, n_allowed = match.mask, match.n
            if n_allowed == 0:
                return _empty_batch_result(nq, batch_width(k, 0))
            kk = min(k, n_allowed)
            k = batch_width(k, n_allowed)
            plan = self._plan(flt, n_allowed, kk, ef, match)
            if plan in ("hnsw", "filtered-hnsw"):
                if plan == "hnsw":
                    slots, dists, _, _ = st.index.search_batch(mat, kk, allowed, ef, spare=True)
                else:
                    slots, dists, _, _ = st.index.filtered_search_batch(mat, kk, allowed, ef, self._selectivity(match))
                if slots.shape[1] > kk:  # spare columns: the k-th place is settled among the first kk
                    return self._pad_batch(self._batch_result(slots, dists, kk), k)
            elif plan == "flat":
                slots, dists, _, _, nxt = st.index.search_batch_with_boundary(mat, kk, allowed)
                full = slots[:, -1] >= 0
                for i in np.flatnonzero(full & (nxt == dists[:, -1])).tolist():  # a tie at the k-th place
                    slots[i], dists[i] = self._resolve_boundary_ties(st.index, mat[i], allowed, slots[i], dists[i])
            else:
                slots, dists, nxt = self._scan_batch(mat, kk, match.slots())
                for i in np.flatnonzero(nxt == dists[:, -1]).tolist():  # a tie at the k-th place
                    from .index.flat import FlatIndex

                    slots[i], dists[i] = self._resolve_boundary_ties(FlatIndex(st.table), mat[i], allowed, slots[i],
                                                                     dists[i])
            return self._batch_result(slots, dists, k)

    def estimate_query(self, q, k: int = 10, filter=None, ef: int | None = None):
        """Validate a query and estimate its cost without running it; never raises for a bad query.

        Returns a `QueryEstimate` (valid, errors, cost_estimate, estimated_duration_ms,
        estimated_distance_computations, plan, selectivity, recommendations).
        """
        with self._rw.read(), self._one_moment():
            self._check_open()
            return estimate(self, q, k, filter, ef)

    def _field_kinds(self) -> dict[str, set[str]]:
        """Field name -> the kinds of value it has held (``str num bool null list``): what a filter is checked
        against (a sharded store checks it against the union of its shards')."""
        with self._rw.read():
            self._check_open()
            return self._state.columns.fields()

    def query_explain(self, q, k: int = 10, filter=None, ef: int | None = None):
        """Run a query and report its plan, work counters, time per phase and which filter clauses each result
        matched (an `ExplainResult`)."""
        with self._rw.read(), self._one_moment():
            self._check_open()
            return explain(self, q, k, filter, ef)
