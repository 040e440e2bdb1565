"""Query validation, cost estimates and explain (SPEC section 4).

The unit of cost is one **distance computation**: the kernels count them (``SearchStats``), so an estimate can be
checked against what a query really did. ``cost_estimate`` is estimated distance computations divided by the number
of visible records, so 1.0 means "as much work as one full exact scan".

The duration model is ``fixed_overhead + distance_computations * ns_per_distance``; ``ns_per_distance`` is measured
once per store on this machine (an exact scan over up to 20,000 stored rows) and the HNSW work per query is learnt
from the counters of real searches (a running mean of distance computations per unit of ``ef``).
"""

from __future__ import annotations

import math
import time

import numpy as np

from .errors import VecStoreError
from .filter import Filter, parse_filter
from .types import Query, QueryEstimate
from .validation import validate_ef, validate_k, validate_vector

FIXED_OVERHEAD_MS = 0.02  # validation, id mapping and result objects, measured at ~20 us per query


class CostModel:
    """What the store has learnt about its own speed."""

    def __init__(self):
        self.ns_per_distance: float | None = None
        self.hnsw_dist_per_ef: float | None = None  # running mean of distance computations / ef
        self._hnsw_samples = 0

    def observe_hnsw(self, distance_computations: int, ef: int) -> None:
        ratio = distance_computations / max(1, ef)
        self._hnsw_samples = min(self._hnsw_samples + 1, 100)
        if self.hnsw_dist_per_ef is None:
            self.hnsw_dist_per_ef = ratio
        else:
            self.hnsw_dist_per_ef += (ratio - self.hnsw_dist_per_ef) / self._hnsw_samples

    def calibrate(self, state) -> float:
        """Time an exact scan over up to 20,000 stored rows: nanoseconds per distance computation."""
        if self.ns_per_distance is not None:
            return self.ns_per_distance
        from .index.flat import FlatIndex

        n = min(state.n_slots, 20_000)
        if n < 100 or state.table is None:
            return 50.0 * max(1, (state.dim or 64) / 64)
        flat = FlatIndex(state.table)
        q = state.table.vectors[0].copy()
        candidates = np.arange(n, dtype=np.int32)
        flat.search_subset(q, 10, candidates)  # load the kernel before timing
        t0 = time.perf_counter()
        flat.search_subset(q, 10, candidates)
        self.ns_per_distance = max(0.1, (time.perf_counter() - t0) * 1e9 / n)
        return self.ns_per_distance

    def hnsw_distances(self, ef: int, m: int, n: int) -> float:
        """Distance computations of one HNSW search: learnt, or about ``ef * m`` before any search ran."""
        per_ef = self.hnsw_dist_per_ef if self.hnsw_dist_per_ef is not None else 1.2 * m
        upper = m * max(1.0, math.log(max(n, 2)) / math.log(max(m, 2)))
        return min(float(n), ef * per_ef + upper)


def estimate(store, q, k=10, filter=None, ef=None) -> QueryEstimate:
    """The body of :meth:`VecStore.estimate_query`. Never raises for a bad query."""
    if isinstance(q, Query):
        vector, k, filter, ef = q.vector, q.k, q.filter, q.ef
    else:
        vector = q
    errors: list[str] = []
    recommendations: list[str] = []
    st = store._state
    try:
        k = validate_k(k, store._max_k)
    except VecStoreError as exc:
        errors.append(str(exc))
        k = None
    try:
        ef = validate_ef(ef)
    except VecStoreError as exc:
        errors.append(str(exc))
        ef = None
    try:
        validate_vector(vector, st.dim, store._metric, "query vector")
    except VecStoreError as exc:
        errors.append(str(exc))
    except Exception as exc:  # estimate never raises, whatever it is handed
        errors.append(f"query vector is not usable: {exc}")
    flt: Filter | None = None
    if filter is not None:
        try:
            flt = filter if isinstance(filter, Filter) else parse_filter(filter)
            errors.extend(flt.check_against(st.columns.fields()))
        except VecStoreError as exc:
            errors.append(str(exc))
            flt = None
        except Exception as exc:
            errors.append(f"filter is not usable: {exc}")
            flt = None

    counts = st.counts(store._now())
    visible = counts["visible"]
    n_allowed = visible
    if flt is not None and not errors:
        _, n_allowed = store._allowed(flt)
    selectivity = n_allowed / visible if visible else 0.0
    plan = store._plan(flt, n_allowed)
    m = store._hnsw.m
    ef_eff = max(ef or store._hnsw.ef_search, k or 1)
    if plan in ("flat", "filtered-scan"):
        dist = float(n_allowed if plan == "filtered-scan" else visible)
    else:
        dist = store._cost.hnsw_distances(ef_eff, m, st.n_live)
        if plan == "filtered-hnsw" and selectivity > 0:
            dist = min(float(st.n_live), dist / selectivity)
    ns = store._cost.calibrate(st) if not errors else 50.0
    duration_ms = FIXED_OVERHEAD_MS + dist * ns / 1e6

    if k is not None and flt is not None and n_allowed < k:
        recommendations.append(f"k ({k}) exceeds the {n_allowed:,} records matching the filter")
    elif k is not None and k > visible:
        recommendations.append(f"k ({k}) exceeds the {visible:,} visible records")
    if ef is not None and k is not None and ef < k:
        recommendations.append(f"ef ({ef}) < k ({k}): the search widens to ef = k = {k}")
    dead = counts["deleted_count"]
    if dead and visible + dead:
        per_record = 4 * (st.dim or 0) + 64
        recommendations.append(
            f"{dead:,} dead records ({dead / (visible + dead):.0%}): compact() would reclaim "
            f"about {dead * per_record / 1e6:.1f} MB"
        )
    if plan == "filtered-hnsw" and selectivity < 0.2:
        recommendations.append(
            f"the filter keeps {selectivity:.0%} of the records: the graph walk visits many non-matching nodes; "
            "a larger ef keeps recall up"
        )
    return QueryEstimate(
        valid=not errors,
        errors=errors,
        cost_estimate=(dist / visible) if visible else 0.0,
        estimated_duration_ms=duration_ms,
        estimated_distance_computations=int(round(dist)),
        plan=plan,
        selectivity=selectivity,
        recommendations=recommendations,
    )


def explain(store, q, k=10, filter=None, ef=None):
    """The body of :meth:`VecStore.query_explain`: run the query and report what it did, phase by phase."""
    from .index.base import scores_from_distances
    from .types import ExplainedNeighbor, ExplainResult

    if isinstance(q, Query):
        vector, k, filter, ef = q.vector, q.k, q.filter, q.ef
    else:
        vector = q
    phases: dict[str, float] = {}
    t = time.perf_counter()
    st = store._state
    k = validate_k(k, store._max_k)
    ef = validate_ef(ef)
    flt = store._filter(filter)
    if st.dim is None:
        validate_vector(vector, None, store._metric, "query vector")
        return ExplainResult([], store._plan(flt, 0), 0, 0, 0, {"validate": (time.perf_counter() - t) * 1e3})
    vec = validate_vector(vector, st.dim, store._metric, "query vector")
    phases["validate"] = (time.perf_counter() - t) * 1e3

    t = time.perf_counter()
    visible_n = st.counts(store._now())["visible"]
    allowed, n_allowed = store._allowed(flt)
    phases["filter"] = (time.perf_counter() - t) * 1e3
    plan = store._plan(flt, n_allowed)

    t = time.perf_counter()
    if n_allowed:
        slots, dists, stats = store._search_one(vec, min(k, n_allowed), allowed, n_allowed, plan, ef)
    else:
        slots, dists, stats = np.zeros(0, np.int32), np.zeros(0, np.float32), None
    phases["search"] = (time.perf_counter() - t) * 1e3

    t = time.perf_counter()
    scores = scores_from_distances(store._metric, dists)
    order = sorted(range(len(slots)), key=lambda i: (-float(scores[i]), st.id_of(int(slots[i]))))
    clause_texts = flt.clauses() if flt is not None else []
    clause_masks = flt.clause_masks(st.columns, st.n_slots) if flt is not None else []
    neighbors = []
    for rank, i in enumerate(order, start=1):
        s = int(slots[i])
        matched = [c for c, mask in zip(clause_texts, clause_masks) if mask[s]]
        neighbors.append(ExplainedNeighbor(st.id_of(s), rank, float(scores[i]), st.metadata(s), matched))
    phases["fetch"] = (time.perf_counter() - t) * 1e3
    return ExplainResult(
        neighbors=neighbors,
        plan=plan,
        distance_computations=int(stats.distance_computations) if stats is not None else 0,
        hops=int(stats.hops) if stats is not None else 0,
        candidates_filtered_out=int(visible_n - n_allowed),
        phases_ms=phases,
    )
