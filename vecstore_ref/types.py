"""The value types of the public API: records, queries, results, batch operations and reports.

All are plain dataclasses. Every result type has ``to_dict()``, which gives exactly the JSON the HTTP API returns.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import numpy as np

from .columns import decode_row

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray

    from .filter import Filter

__all__ = [
    "Metadata",
    "Operation",
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
    "ShardedStats",
    "VerifyReport",
    "QueryEstimate",
    "ExplainResult",
    "ExplainedNeighbor",
]

Metadata: TypeAlias = dict[str, Any]
"""A record's metadata: a flat dict whose values are str, int, finite float, bool, None, or a list of those
(SPEC section 1); the store checks the rules (`InvalidMetadataError`)."""


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
    vector: NDArray[np.float32]
    metadata: Metadata | None
    expires_at: float | None = None
    deleted: bool = False

    def to_dict(self) -> dict[str, Any]:
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


class Neighbor:
    """One query result: higher ``score`` is better for every metric.

    Built k times per query, so it is cheap to build: a plain slotted class, not frozen, and its ``metadata`` is
    kept as the store's JSON bytes until it is first read (decoding ten small dicts would cost as much as the
    search at small ``ef``). Each result is the caller's own copy, its metadata too: changing it changes nothing
    in the store. Compares and prints like a dataclass of ``id``, ``score`` and ``metadata``.
    """

    __slots__ = ("id", "score", "_metadata", "_text")
    __match_args__ = ("id", "score", "metadata")

    def __init__(self, id: str, score: float, metadata: Metadata | None = None) -> None:
        self.id = id
        self.score = score
        self._metadata = metadata
        self._text: bytes | None = None

    @staticmethod
    def _from_text(id: str, score: float, text: bytes | None) -> Neighbor:
        """A result whose metadata is the JSON ``text`` (None: no metadata), decoded when first read."""
        return _neighbor_from_text(id, score, text)

    @property
    def metadata(self) -> Metadata | None:
        text = self._text
        if text is not None:
            self._metadata, self._text = decode_row(text), None
        return self._metadata

    @metadata.setter
    def metadata(self, value: Metadata | None) -> None:
        self._metadata, self._text = value, None

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not Neighbor:
            return NotImplemented
        assert isinstance(other, Neighbor)
        return self.id == other.id and self.score == other.score and self.metadata == other.metadata

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Neighbor(id={self.id!r}, score={self.score!r}, metadata={self.metadata!r})"

    def __reduce__(self) -> tuple[type[Neighbor], tuple[str, float, Metadata | None]]:
        return (Neighbor, (self.id, self.score, self.metadata))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "score": _jsonable(float(self.score)), "metadata": self.metadata}


def _neighbor_from_text(id: str, score: float, text: bytes | None,
                        _new: Callable[[type[Neighbor]], Neighbor] = object.__new__,
                        _cls: type[Neighbor] = Neighbor) -> Neighbor:
    """`Neighbor._from_text` as a plain function, ten times per query: the constructor and the class bound as
    defaults and one statement per field cost a third less than a classmethod's ``cls.__new__(cls)`` and a tuple
    assignment."""
    n = _new(_cls)
    n.id = id
    n.score = score
    n._metadata = None
    n._text = text
    return n


@dataclass(frozen=True)
class Query:
    """A k-nearest-neighbour query. ``filter`` is filter text or a [`parse_filter`][vecstore_ref.parse_filter]
    result."""

    vector: ArrayLike
    k: int = 10
    filter: str | Filter | None = None
    ef: int | None = None


QUERY_AND_ARGUMENTS = "give k, filter and ef inside the Query or as arguments, not both"


def unpack_query(q: Any, k: int = 10, filter: Any = None, ef: int | None = None
                 ) -> tuple[Any, Any, Any, Any, bool]:
    """``(vector, k, filter, ef, conflict)`` of a query given as a vector and arguments or as a `Query`.

    ``conflict`` is true when a `Query` came with a ``filter``, an ``ef`` or a ``k`` other than the default beside
    it: one of the two would be silently ignored, so every entry point refuses it (`QUERY_AND_ARGUMENTS`).
    """
    if isinstance(q, Query):
        conflict = k != 10 or filter is not None or ef is not None
        return q.vector, q.k, q.filter, q.ef, conflict
    return q, k, filter, ef, False


@dataclass
class BatchQueryResult:
    """Results of [`VecStore.query_batch`][vecstore_ref.VecStore.query_batch]: ``ids`` object (n, k) padded
    None, ``scores`` float32 (n, k) padded -inf, ``n_found`` int (n,)."""

    ids: NDArray[np.object_]
    scores: NDArray[np.float32]
    n_found: NDArray[np.int64]

    def to_dict(self) -> dict[str, Any]:
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
    id: str
    vector: ArrayLike
    metadata: Metadata | None = None
    ttl: float | None = None

    def describe(self) -> str:
        return f"upsert({self.id})"


@dataclass(frozen=True, slots=True)
class Delete:
    id: str

    def describe(self) -> str:
        return f"delete({self.id})"


@dataclass(frozen=True, slots=True)
class SoftDelete:
    id: str

    def describe(self) -> str:
        return f"soft_delete({self.id})"


@dataclass(frozen=True, slots=True)
class Restore:
    id: str

    def describe(self) -> str:
        return f"restore({self.id})"


@dataclass(frozen=True, slots=True)
class UpdateMetadata:
    id: str
    metadata: Metadata | None

    def describe(self) -> str:
        return f"update_metadata({self.id})"


@dataclass(frozen=True, slots=True)
class SetTTL:
    id: str
    ttl: float | None

    def describe(self) -> str:
        return f"set_ttl({self.id})"


BatchOp = (Upsert, Delete, SoftDelete, Restore, UpdateMetadata, SetTTL)  # for isinstance

Operation: TypeAlias = Upsert | Delete | SoftDelete | Restore | UpdateMetadata | SetTTL
"""One operation of `VecStore.batch_execute`."""


@dataclass(frozen=True)
class BatchError:
    """Why op number ``index`` of a batch failed; ``operation`` reads like ``"delete(doc2)"``."""

    index: int
    operation: str
    error: str
    type: str = "VecStoreError"

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "operation": self.operation, "error": self.error, "type": self.type}


@dataclass
class BatchResult:
    succeeded: int
    failed: int
    errors: list[BatchError] = field(default_factory=list)
    duration_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
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

    def to_dict(self) -> dict[str, Any]:
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

    def to_dict(self) -> dict[str, Any]:
        return cast("dict[str, Any]", _jsonable(asdict(self)))


@dataclass
class StoreStats:
    dim: int | None
    metric: str
    index: str
    index_params: dict[str, int]
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
    compaction_config: dict[str, Any]
    last_compaction: dict[str, float] | None
    recovery_report: dict[str, Any]
    format_version: int
    durability: str
    read_only: bool
    last_seq: int
    unindexed: int = 0  # vectors written but not linked into the HNSW graph yet (queries scan them exactly)
    superseded: int = 0  # old versions of records whose vector an upsert replaced; compaction reclaims them
    log_bytes_since_checkpoint: int = 0  # log an open would replay (checkpoints reset it)
    last_checkpoint_at: float | None = None  # unix time the live snapshot was captured, or None
    checkpoint_config: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return cast("dict[str, Any]", _jsonable(asdict(self)))


@dataclass
class ShardedStats:
    """`ShardedStore.stats()`: the counts of every shard added up, the options they share, and each shard's own
    `StoreStats` under ``shards``. Read fields as attributes, as with `StoreStats` (``stats["visible"]`` also
    works, for code written when this was a dict)."""

    n_shards: int
    dim: int | None
    metric: str
    index: str
    index_params: dict[str, int]
    durability: str
    read_only: bool
    visible: int
    soft_deleted: int
    expired_pending: int
    hard_deleted_pending: int
    deleted_count: int
    slots: int
    log_bytes: int
    snapshot_bytes: int
    reclaimable_bytes: int
    unindexed: int
    superseded: int
    log_bytes_since_checkpoint: int
    shards: list[StoreStats]

    SUMMED = ("visible", "soft_deleted", "expired_pending", "hard_deleted_pending", "deleted_count", "slots",
              "log_bytes", "snapshot_bytes", "reclaimable_bytes", "unindexed", "superseded",
              "log_bytes_since_checkpoint")

    @classmethod
    def of(cls, per_shard: list[StoreStats]) -> ShardedStats:
        first = per_shard[0]
        return cls(n_shards=len(per_shard), dim=next((p.dim for p in per_shard if p.dim is not None), None),
                   metric=first.metric, index=first.index, index_params=dict(first.index_params),
                   durability=first.durability, read_only=first.read_only,
                   **{k: sum(getattr(p, k) for p in per_shard) for k in cls.SUMMED},
                   shards=list(per_shard))

    def __getitem__(self, key: str) -> Any:
        if key == "shards":
            return [p.to_dict() for p in self.shards]
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        return cast("dict[str, Any]", _jsonable(asdict(self)))


@dataclass
class VerifyReport:
    ok: bool
    files_checked: int
    records_checked: int
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
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

    def to_dict(self) -> dict[str, Any]:
        return cast("dict[str, Any]", _jsonable(asdict(self)))


@dataclass(frozen=True)
class ExplainedNeighbor:
    id: str
    rank: int
    score: float
    metadata: Metadata | None
    matched_clauses: list[str]

    def to_dict(self) -> dict[str, Any]:
        return cast("dict[str, Any]", _jsonable(asdict(self)))


@dataclass
class ExplainResult:
    neighbors: list[ExplainedNeighbor]
    plan: str
    distance_computations: int
    hops: int
    candidates_filtered_out: int
    phases_ms: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "neighbors": [n.to_dict() for n in self.neighbors],
            "plan": self.plan,
            "distance_computations": self.distance_computations,
            "hops": self.hops,
            "candidates_filtered_out": self.candidates_filtered_out,
            "phases_ms": self.phases_ms,
        }
