"""The global top k from every shard's top k, and the result types that say which shards answered.

Every record of the global top k is in its own shard's top k (no record of another shard can push it out there),
so merging the shards' lists by (score descending, id ascending) gives exactly the top k of one store holding all
the records, as long as each shard's search is exact (the flat index). With HNSW each shard's list is as
approximate as a single store's, and the union is searched more thoroughly than one graph would be.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..types import BatchQueryResult, Neighbor

if TYPE_CHECKING:
    from ..types import Metadata


class ShardedNeighbors(list[Neighbor]):
    """The results of ``query``: a list of ``Neighbor``, best first, plus
    ``missing_shards``, the shards that did not answer (empty unless the query ran with ``allow_partial=True``)."""

    __slots__ = ("missing_shards",)

    def __init__(self, items: Iterable[Neighbor] = (), missing_shards: tuple[int, ...] = ()) -> None:
        super().__init__(items)
        self.missing_shards = tuple(missing_shards)

    def to_dict(self) -> dict[str, Any]:
        return {"results": [n.to_dict() for n in self], "missing_shards": list(self.missing_shards)}


@dataclass
class ShardedBatchQueryResult(BatchQueryResult):
    """``BatchQueryResult`` plus ``missing_shards``, as for ``ShardedNeighbors``."""

    missing_shards: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "missing_shards": list(self.missing_shards)}


def merge_neighbors(parts: list[list[Neighbor]], k: int) -> list[Neighbor]:
    """The best ``k`` of the shards' lists of ``Neighbor`` (ties by id)."""
    if len(parts) == 1:
        return parts[0][:k]
    merged = [n for part in parts for n in part]
    merged.sort(key=lambda n: (-n.score, n.id))
    return merged[:k]


def merge_hits(ids: list[str], scores: np.ndarray, metadata: list[Metadata | None], k: int) -> list[Neighbor]:
    """``Neighbor`` objects for the best ``k`` of flat lists gathered from several shards (ties by id).

    Used for results that came over the wire as arrays: only the ``k`` survivors become Python objects.
    """
    if not ids:
        return []
    order = np.argsort(-scores, kind="stable")
    if _has_ties(scores[order[: k + 1]]):  # equal scores among the survivors or at the cut: order them by id
        kept = sorted(range(len(ids)), key=lambda j: (-scores[j], ids[j]))[:k]
    else:
        kept = order[:k].tolist()
    return [Neighbor(ids[j], float(scores[j]), metadata[j]) for j in kept]


def _has_ties(sorted_scores: np.ndarray) -> bool:
    return bool(sorted_scores.size > 1 and (sorted_scores[1:] == sorted_scores[:-1]).any())


def merge_batches(parts: list[BatchQueryResult], k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ids, scores, n_found)`` of the best ``k`` per row of the shards' result matrices (ties by id).

    Whole-matrix operations: the rows are concatenated and ordered by score; only the rare rows with equal scores
    among (or just past) the survivors are ordered again by id, one by one.
    """
    if len(parts) == 1:
        p = parts[0]
        return p.ids, p.scores, np.asarray(p.n_found, dtype=np.int64)
    # each part without its padding (a huge k pads every shard's rows), then the columns of all side by side
    widths = [max(1, int(p.n_found.max())) if len(p.n_found) else 1 for p in parts]
    ids = np.concatenate([p.ids[:, :w] for p, w in zip(parts, widths)], axis=1)
    scores = np.concatenate([p.scores[:, :w] for p, w in zip(parts, widths)], axis=1)
    n_found = np.minimum(np.sum([p.n_found for p in parts], axis=0), k).astype(np.int64)
    order = np.argsort(-scores, axis=1, kind="stable")[:, : k + 1]
    ranked = np.take_along_axis(scores, order, axis=1)
    finite = ranked > -np.inf
    tied = ((ranked[:, 1:] == ranked[:, :-1]) & finite[:, 1:]).any(axis=1)
    order = order[:, :k]
    out_ids = np.take_along_axis(ids, order, axis=1)
    out_scores = np.take_along_axis(scores, order, axis=1)
    for i in np.flatnonzero(tied).tolist():
        cand = [j for j in range(ids.shape[1]) if ids[i, j] is not None]
        cand.sort(key=lambda j: (-scores[i, j], ids[i, j]))
        cand = cand[:k]
        out_ids[i, : len(cand)] = ids[i, cand]
        out_scores[i, : len(cand)] = scores[i, cand]
    return out_ids, out_scores, n_found
