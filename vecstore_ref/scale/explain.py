"""`estimate_query` and `query_explain` across shards: each shard estimates (or runs) its part, all at once, and
the parts combine into the answer one store holding every record would give.

What is known without the shards (the vector, ``k``, ``ef``, the filter's syntax) is checked once, here, against
the sharded store's own dimension and metric. What depends on the data is asked of every shard:

- A filter is checked against the fields of every shard together: a field one shard has seen is a field of the
  store, and the kinds of value it holds are those it holds in any shard.
- Work adds up (distance computations, hops, records filtered out); time does not: the shards run side by side,
  so an estimate's time is the slowest shard's, or the shards' total spread over the cores that run them, when
  there are fewer cores than shards.
- Each shard picks its own plan from its own data (a filter may be rare in one shard and common in another). The
  plan reported is the one of the shard that costs the most; when the shards differ, a recommendation says which
  shard runs which plan.
- An explain's results are merged as a query's are (score descending, then id) and ranked again.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from ..cost import check_query, recommend, still_matches
from ..errors import InvalidArgumentError
from ..jit import usable_cores
from ..types import (
    QUERY_AND_ARGUMENTS,
    ExplainedNeighbor,
    ExplainResult,
    QueryEstimate,
    StoreStats,
    unpack_query,
)
from ..validation import validate_query_vector

if TYPE_CHECKING:
    from .sharded_store import ShardedStore


def _stand_in(dim: int | None) -> np.ndarray:
    """A valid query vector of the store's dimension (a unit vector): what the shards estimate with when the
    caller's vector is not usable, so that they report only what depends on their data."""
    v = np.zeros(dim or 1, dtype=np.float32)
    v[0] = 1.0
    return v


def _plans_note(plans: list[str]) -> list[str]:
    if len(set(plans)) <= 1:
        return []
    return ["the shards choose different plans: " + ", ".join(f"shard {i} {p}" for i, p in enumerate(plans))]


def combined_duration_ms(parts_ms: list[float], cores: int | None = None) -> float:
    """The time of parts that run side by side on ``cores`` cores: the slowest part, or their total over the
    cores when there are more parts than cores."""
    if not parts_ms:
        return 0.0
    workers = max(1, min(len(parts_ms), cores or usable_cores()))
    return max(max(parts_ms), sum(parts_ms) / workers)


def estimate_across(store: ShardedStore, q: Any, k: Any, filter: Any, ef: Any) -> QueryEstimate:
    """The body of `ShardedStore.estimate_query`. Never raises for a bad query (an unavailable shard raises
    `ShardUnavailableError`: that is not the query's fault)."""
    checked = check_query(q, k, filter, ef, store._dim, store._metric, store._max_k)
    errors = list(checked.errors)
    vector = checked.vector if checked.vector is not None else _stand_in(store._dim)
    text = checked.flt.text if checked.flt is not None else None
    parts: list[QueryEstimate] = store._on_all("estimate_query", vector, checked.k or 10, text, checked.ef)
    stats: list[StoreStats] = store._on_all("stats")
    visible = [s.visible for s in stats]
    total = sum(visible)
    allowed = [round(p.selectivity * v) for p, v in zip(parts, visible)]
    n_allowed = (sum(allowed) if text is not None else total) if checked.parsed else 0
    if checked.flt is not None:  # a field any shard has seen is a field of the store
        kinds: dict[str, set[str]] = {}
        for shard_kinds in store._on_all("_field_kinds"):
            for name, held in shard_kinds.items():
                kinds.setdefault(name, set()).update(held)
        problems = checked.flt.check_against(kinds)
        errors.extend(problems)
        if problems and n_allowed:  # a clause that cannot match, under NOT or OR (or in a NOT IN)
            errors.append(still_matches(n_allowed, total))
    costs = [p.estimated_duration_ms for p in parts]
    costliest = max(range(len(parts)), key=lambda i: costs[i])
    dist = sum(p.estimated_distance_computations for p in parts)
    if not checked.parsed:  # query() would raise before any search: nothing runs
        dist, costs = 0, [min(costs)]
    dead = sum(s.deleted_count for s in stats)
    recommendations = recommend(checked.k, checked.ef, text is not None, n_allowed, total, dead, store._dim)
    return QueryEstimate(
        valid=not errors,
        errors=errors,
        cost_estimate=dist / total if total else 0.0,
        estimated_duration_ms=combined_duration_ms(costs),
        estimated_distance_computations=dist,
        plan=parts[costliest].plan if checked.parsed else "filtered-scan",
        selectivity=n_allowed / total if total else 0.0,
        recommendations=recommendations + _plans_note([p.plan for p in parts]),
    )


def explain_across(store: ShardedStore, q: Any, k: Any, filter: Any, ef: Any) -> ExplainResult:
    """The body of `ShardedStore.query_explain`: the query on every shard with its explain, merged."""
    t = time.perf_counter()
    vector, k, filter, ef, conflict = unpack_query(q, k, filter, ef)
    if conflict:
        raise InvalidArgumentError(QUERY_AND_ARGUMENTS)
    k, flt, ef = store._query_args(k, filter, ef)
    vec = validate_query_vector(vector, store._dim, store._metric)
    phases = {"validate": (time.perf_counter() - t) * 1e3}

    t = time.perf_counter()
    parts: list[ExplainResult] = store._on_all("query_explain", vec, k, None if flt is None else flt.text, ef)
    phases["shards"] = (time.perf_counter() - t) * 1e3
    for name in sorted({p for part in parts for p in part.phases_ms}):  # each phase of the slowest shard
        phases[f"shards.{name}"] = max(part.phases_ms.get(name, 0.0) for part in parts)

    t = time.perf_counter()
    merged = sorted((n for part in parts for n in part.neighbors), key=lambda n: (-n.score, n.id))[:k]
    neighbors = [ExplainedNeighbor(n.id, rank, n.score, n.metadata, n.matched_clauses)
                 for rank, n in enumerate(merged, start=1)]
    phases["merge"] = (time.perf_counter() - t) * 1e3
    costliest = max(range(len(parts)), key=lambda i: parts[i].phases_ms.get("search", 0.0))
    return ExplainResult(
        neighbors=neighbors,
        plan=parts[costliest].plan,
        distance_computations=sum(p.distance_computations for p in parts),
        hops=sum(p.hops for p in parts),
        candidates_filtered_out=sum(p.candidates_filtered_out for p in parts),
        phases_ms=phases,
    )
