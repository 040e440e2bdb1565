"""The value types of the public API: records, queries, results, batch operations and reports.

All are plain dataclasses. Every result type has ``to_dict()``, which gives exactly the JSON the HTTP API returns.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Record",
    "Neighbor",
    "Query",
    "BatchQueryResult",
    "Upsert",
    "Delete",
    "SoftDelete",
    "Restore",
    "UpdateMetadata",
    "SetTTL",
    "BatchOp",
    "BatchError",
    "BatchResult",
    "CompactionResult",
    "RecoveryReport",
    "StoreStats",
    "VerifyReport",
    "QueryEstimate",
    "ExplainResult",
    "ExplainedNeighbor",
]


def _jsonable(value: Any) -> Any:
    """Floats that JSON cannot hold (inf, nan) become None; numpy scalars become Python ones."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


@dataclass(frozen=True)
class Record:
    """A stored record. ``vector`` is float32, as given; ``expires_at`` is a clock() time or None."""

    id: str
    vector: np.ndarray
    metadata: dict | None
    expires_at: float | None = None
    deleted: bool = False

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "vector": self.vector.tolist(),
            "metadata": self.metadata,
            "expires_at": self.expires_at,
            "deleted": self.deleted,
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return (
            self.id == other.id
            and self.vector.tobytes() == other.vector.tobytes()
            and self.metadata == other.metadata
            and self.expires_at == other.expires_at
            and self.deleted == other.deleted
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(slots=True)
class Neighbor:
    """One query result: higher ``score`` is better for every metric.

    Not frozen: a query builds k of them per call, a frozen dataclass costs three times as much to build, and each
    result is the caller's own copy (its metadata too), so changing it changes nothing in the store.
    """

    id: str
    score: float
    metadata: dict | None = None

    def to_dict(self) -> dict:
        return {"id": self.id, "score": _jsonable(float(self.score)), "metadata": self.metadata}


@dataclass(frozen=True)
class Query:
    """A k-nearest-neighbour query. ``filter`` is filter text or a :func:`parse_filter` result."""

    vector: Any
    k: int = 10
    filter: Any = None
    ef: int | None = None


@dataclass
class BatchQueryResult:
    """Results of :meth:`VecStore.query_batch`: ``ids`` object (n, k) padded None, ``scores`` float32 (n, k)
    padded -inf, ``n_found`` int (n,)."""

    ids: np.ndarray
    scores: np.ndarray
    n_found: np.ndarray

    def to_dict(self) -> dict:
        return {
            "results": [
                [
                    {"id": self.ids[i, j], "score": _jsonable(float(self.scores[i, j]))}
                    for j in range(int(self.n_found[i]))
                ]
                for i in range(self.ids.shape[0])
            ]
        }


# --- batch operations -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Upsert:
    id: Any
    vector: Any
    metadata: Any = None
    ttl: Any = None

    def describe(self) -> str:
        return f"upsert({self.id})"


@dataclass(frozen=True, slots=True)
class Delete:
    id: Any

    def describe(self) -> str:
        return f"delete({self.id})"


@dataclass(frozen=True, slots=True)
class SoftDelete:
    id: Any

    def describe(self) -> str:
        return f"soft_delete({self.id})"


@dataclass(frozen=True, slots=True)
class Restore:
    id: Any

    def describe(self) -> str:
        return f"restore({self.id})"


@dataclass(frozen=True, slots=True)
class UpdateMetadata:
    id: Any
    metadata: Any

    def describe(self) -> str:
        return f"update_metadata({self.id})"


@dataclass(frozen=True, slots=True)
class SetTTL:
    id: Any
    ttl: Any

    def describe(self) -> str:
        return f"set_ttl({self.id})"


BatchOp = (Upsert, Delete, SoftDelete, Restore, UpdateMetadata, SetTTL)


@dataclass(frozen=True)
class BatchError:
    """Why op number ``index`` of a batch failed; ``operation`` reads like ``"delete(doc2)"``."""

    index: int
    operation: str
    error: str
    type: str = "VecStoreError"

    def to_dict(self) -> dict:
        return {"index": self.index, "operation": self.operation, "error": self.error, "type": self.type}


@dataclass
class BatchResult:
    succeeded: int
    failed: int
    errors: list[BatchError] = field(default_factory=list)
    duration_ms: float = 0.0

    def to_dict(self) -> dict:
        return {
            "succeeded": self.succeeded,
            "failed": self.failed,
            "errors": [e.to_dict() for e in self.errors],
            "duration_ms": self.duration_ms,
        }


# --- maintenance and reports ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompactionResult:
    triggered: bool
    removed_count: int
    duration_ms: float
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RecoveryReport:
    """What the last open found on disk."""

    snapshot: str | None = None
    snapshot_seq: int = 0
    records_replayed: int = 0
    last_seq: int = 0
    truncated_bytes: int = 0
    truncated_path: str | None = None
    truncated_offset: int | None = None
    records_lost: int = 0
    repaired: bool = False
    orphans_removed: list[str] = field(default_factory=list)
    duration_ms: float = 0.0

    def to_dict(self) -> dict:
        return _jsonable(asdict(self))


@dataclass
class StoreStats:
    dim: int | None
    metric: str
    index: str
    index_params: dict
    index_effective: str
    visible: int
    soft_deleted: int
    expired_pending: int
    hard_deleted_pending: int
    deleted_count: int
    slots: int
    log_bytes: int
    snapshot_bytes: int
    reclaimable_bytes: int
    compaction_config: dict
    last_compaction: dict | None
    recovery_report: dict
    format_version: int
    durability: str
    read_only: bool
    last_seq: int
    unindexed: int = 0  # vectors written but not linked into the HNSW graph yet (queries scan them exactly)
    superseded: int = 0  # old versions of records whose vector an upsert replaced; compaction reclaims them
    log_bytes_since_checkpoint: int = 0  # log an open would replay (checkpoints reset it)
    last_checkpoint_at: float | None = None  # unix time the live snapshot was captured, or None
    checkpoint_config: dict | None = None

    def to_dict(self) -> dict:
        return _jsonable(asdict(self))


@dataclass
class VerifyReport:
    ok: bool
    files_checked: int
    records_checked: int
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class QueryEstimate:
    valid: bool
    errors: list[str]
    cost_estimate: float
    estimated_duration_ms: float
    estimated_distance_computations: int
    plan: str
    selectivity: float
    recommendations: list[str]

    def to_dict(self) -> dict:
        return _jsonable(asdict(self))


@dataclass(frozen=True)
class ExplainedNeighbor:
    id: str
    rank: int
    score: float
    metadata: dict | None
    matched_clauses: list[str]

    def to_dict(self) -> dict:
        return _jsonable(asdict(self))


@dataclass
class ExplainResult:
    neighbors: list[ExplainedNeighbor]
    plan: str
    distance_computations: int
    hops: int
    candidates_filtered_out: int
    phases_ms: dict[str, float]

    def to_dict(self) -> dict:
        return {
            "neighbors": [n.to_dict() for n in self.neighbors],
            "plan": self.plan,
            "distance_computations": self.distance_computations,
            "hops": self.hops,
            "candidates_filtered_out": self.candidates_filtered_out,
            "phases_ms": self.phases_ms,
        }
