"""The bodies of the HTTP API as pydantic models: every request body, every 200 answer, and the error shape.

They are the contract `/openapi.json` publishes, and the check each request body passes before the store sees it.
Request models forbid fields they do not declare (a misspelt `"metdata"` is a 400 that names it, never ignored)
and are strict about JSON types: `true` is not a number, `"1"` is not an integer, `3.0` is not an integer, a
string is not a vector. They check shapes only; the rules on values (a vector's dimension and finiteness, id
length, ttl range, metadata size, k between 1 and `max_k`) stay with the store, which applies them the same way
to the Python API, so a batch op that is well formed but breaks one of them fails alone (reported in `errors`).

The seed's spellings still work: `limit` for `k`, `namespace` and `backup_name` for `name`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from ..config import DURABILITY_MODES, INDEX_KINDS, MAX_BATCH_OPS, MAX_DIM, MAX_K, MAX_TTL_SECONDS, METRICS
from ..errors import InvalidArgumentError, InvalidNameError
from ..validation import MAX_EF


class RequestModel(BaseModel):
    """A request body: undeclared fields are refused, JSON types are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ResponseModel(BaseModel):
    """A documented answer (built by the server, so not validated again at run time)."""

    model_config = ConfigDict(extra="forbid")


# --- values -------------------------------------------------------------------------------------------------

Vector = Annotated[
    list[float],
    Field(description="The vector: a list of numbers (not booleans, not strings) of the store's dimension; "
                      "stored as float32, every value finite after the cast.", examples=[[0.1, 0.2, 0.3]]),
]
# Value rules stay the store's (module docstring); the schema states them too (json_schema_extra: documented, not
# enforced here), so that clients and generated tests know what a valid value is.
NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # namespace and backup names (vecstore_ref.namespaces)
RecordId = Annotated[str, Field(description="1 to 512 bytes of UTF-8, no control characters; compared exactly.",
                                examples=["doc-1"], json_schema_extra={"minLength": 1, "maxLength": 512})]
_SCALAR_SCHEMAS = [{"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"},
                   {"type": "null"}]
_METADATA_OBJECT = {
    "type": "object",
    "additionalProperties": {"anyOf": [*_SCALAR_SCHEMAS,
                                       {"type": "array", "items": {"anyOf": _SCALAR_SCHEMAS}, "maxItems": 1024}]},
    "description": "A flat object: values are strings, integers, finite numbers, booleans, null, or lists "
                   "(up to 1,024 items) of those; keys of 1 to 256 characters; at most 64 KiB as JSON.",
    "examples": [{"lang": "en", "year": 2024}],
}
Metadata = Annotated[dict[str, Any] | None,
                     WithJsonSchema({"anyOf": [_METADATA_OBJECT, {"type": "null"}]})]
# Inside /v1/batch-execute, metadata is judged per operation, by the store (SPEC 3): metadata it refuses fails
# that operation alone, reported in `errors`, while the others run. So the schema there asks only for an object.
OpMetadata = Annotated[dict[str, Any] | None, WithJsonSchema({"anyOf": [
    {"type": "object", "description": "Metadata as for /v1/upsert; the store checks it when the operation runs: "
                                      "metadata it refuses fails this operation alone (reported in `errors`).",
     "examples": [{"lang": "en", "year": 2024}]},
    {"type": "null"}]})]
Ttl = Annotated[float | None, Field(description="Seconds until the record expires: > 0 and at most 100 "
                                                      "years; null for no expiry.", examples=[3600],
                                    json_schema_extra={"exclusiveMinimum": 0, "maximum": MAX_TTL_SECONDS})]


def _one_of(body: RequestModel, names: tuple[str, str], error=InvalidArgumentError):
    """The value of whichever of two spellings of a field ``body`` sets (None if neither); both is an error."""
    given = [n for n in names if getattr(body, n) is not None]
    if len(given) > 1:
        exc = error(f"give {names[0]!r} or {names[1]!r}, not both")
        exc.field = names[1]
        raise exc
    return getattr(body, given[0]) if given else None


def _required_name(body: RequestModel, names: tuple[str, str]) -> str:
    name = _one_of(body, names, InvalidNameError)
    if name is None:
        exc = InvalidNameError(f"the body needs {names[0]!r} (or {names[1]!r})")
        exc.field = names[0]  # type: ignore[attr-defined]  # read by vecstore_ref.server.bodies
        raise exc
    return name


# --- request bodies -----------------------------------------------------------------------------------------


class UpsertBody(RequestModel):
    """Insert a record, or replace the whole record of that id."""

    id: RecordId
    vector: Vector
    metadata: Metadata = None
    ttl: Ttl = None


class QueryBody(RequestModel):
    """A k-nearest-neighbour query (also the body of `query-estimate` and `query-explain`)."""

    vector: Vector
    k: int | None = Field(None, description="How many results: 1 to the store's max_k (default 10).",
                          json_schema_extra={"minimum": 1, "maximum": MAX_K})
    limit: int | None = Field(None, description="Another name for `k` (give one of them).",
                              json_schema_extra={"minimum": 1, "maximum": MAX_K})
    filter: str | None = Field(None, description="A filter expression, e.g. `lang = 'en' AND year >= 2020`.")
    ef: int | None = Field(None, description="Search width of the HNSW walk for this query (default: the "
                                                   "store's ef_search).",
                           json_schema_extra={"minimum": 1, "maximum": MAX_EF})

    @model_validator(mode="after")
    def _k_or_limit(self):
        k = _one_of(self, ("k", "limit"))
        self.k, self.limit = (10 if k is None else k), None
        return self


class UpsertOp(RequestModel):
    op: Literal["upsert"]
    id: RecordId
    vector: Vector
    metadata: OpMetadata = None
    ttl: Ttl = None


class DeleteOp(RequestModel):
    op: Literal["delete"]
    id: RecordId


class SoftDeleteOp(RequestModel):
    op: Literal["soft_delete"]
    id: RecordId


class RestoreOp(RequestModel):
    op: Literal["restore"]
    id: RecordId


class UpdateMetadataOp(RequestModel):
    op: Literal["update_metadata"]
    id: RecordId
    metadata: OpMetadata


class SetTTLOp(RequestModel):
    op: Literal["set_ttl"]
    id: RecordId
    ttl: Ttl


Operation = Annotated[UpsertOp | DeleteOp | SoftDeleteOp | RestoreOp | UpdateMetadataOp | SetTTLOp,
                      Field(discriminator="op")]
OP_MODELS = {m.model_fields["op"].annotation.__args__[0]: m  # type: ignore[union-attr]
             for m in (UpsertOp, DeleteOp, SoftDeleteOp, RestoreOp, UpdateMetadataOp, SetTTLOp)}


class BatchBody(RequestModel):
    """Operations applied in order and written as one atomic log record. Every operation must be well formed
    (a known `op`, its fields, their JSON types) or the whole batch is refused with a 400 naming it; an operation
    that is well formed but fails on the data (a missing record, a vector of the wrong dimension) fails alone
    and is reported in `errors` while the others apply."""

    operations: list[Operation] = Field(max_length=MAX_BATCH_OPS, description="At most 100,000 operations.")


class CompactBody(RequestModel):
    if_needed: bool = Field(False, description="Compact only when the compaction thresholds are passed.")


def _or_the_metadata_itself(schema: dict) -> None:
    wrapped = dict(schema)
    schema.clear()
    schema.update(anyOf=[wrapped, _METADATA_OBJECT], title=wrapped.pop("title"),
                  description=wrapped.pop("description"))


class MetadataBody(RequestModel):
    """The new metadata of a record: `{"metadata": {...}}`, or the metadata object itself (any body whose keys
    are not exactly `metadata`)."""

    model_config = ConfigDict(json_schema_extra=_or_the_metadata_itself)

    metadata: Metadata

    @model_validator(mode="before")
    @classmethod
    def _bare_object(cls, data):
        return {"metadata": data} if isinstance(data, dict) and set(data) != {"metadata"} else data


class TtlBody(RequestModel):
    ttl: Ttl = Field(description="Seconds from now; null removes the TTL.")


class EmptyBody(RequestModel):
    """Routes that take no input accept no body, or `{}`."""


class HNSWBody(RequestModel):
    m: int | None = Field(None, description="Links per node (default 16).")
    ef_construction: int | None = Field(None, description="Candidate list width while inserting (200).")
    ef_search: int | None = Field(None, description="Candidate list width while querying (64).")
    seed: int | None = Field(None, description="Seeds the level draw (0).")


class QuotasBody(RequestModel):
    max_vectors: int | None = Field(None, description="Records held (visible and soft-deleted).",
                                    json_schema_extra={"minimum": 0})
    max_bytes: int | None = Field(None, description="Bytes of store files on disk.", json_schema_extra={"minimum": 0})


class CreateNamespaceBody(RequestModel):
    name: str | None = Field(None, description=f"`{NAME_PATTERN}`", examples=["images"],
                             json_schema_extra={"pattern": NAME_PATTERN})
    namespace: str | None = Field(None, description="Another name for `name` (give one of them).",
                                  json_schema_extra={"pattern": NAME_PATTERN})
    dim: int | None = Field(None, description="Fixed dimension; default: set by the first upsert.",
                            json_schema_extra={"minimum": 1, "maximum": MAX_DIM})
    metric: Literal[METRICS] | None = Field(None, description="Default cosine.")  # type: ignore[valid-type]
    index: Literal[INDEX_KINDS] | None = Field(None, description="Default hnsw.")  # type: ignore[valid-type]
    hnsw: HNSWBody | None = None
    durability: Literal[DURABILITY_MODES] | None = Field(None, description="Default fsync.")  # type: ignore[valid-type]
    quotas: QuotasBody | None = None

    @model_validator(mode="after")
    def _name_or_namespace(self):
        self.name, self.namespace = _required_name(self, ("name", "namespace")), None
        return self


class BackupBody(RequestModel):
    name: str | None = Field(None, description="Backup name, same rule as namespace names.",
                                   examples=["nightly-1"], json_schema_extra={"pattern": NAME_PATTERN})
    backup_name: str | None = Field(None, description="Another name for `name` (give one of them).",
                                    json_schema_extra={"pattern": NAME_PATTERN})

    @model_validator(mode="after")
    def _name_or_backup_name(self):
        self.name, self.backup_name = _required_name(self, ("name", "backup_name")), None
        return self


# --- answers ------------------------------------------------------------------------------------------------


class Ok(ResponseModel):
    ok: Literal[True] = True


class Changed(ResponseModel):
    changed: bool = Field(description="False when the record was already in that state.")


class Expired(ResponseModel):
    expired: int = Field(description="Records newly tombstoned by this sweep.")


class Neighbor(ResponseModel):
    id: str
    score: float | None = Field(description="Higher is better for every metric.")
    metadata: dict[str, Any] | None


class QueryResponse(ResponseModel):
    results: list[Neighbor] = Field(description="Best first; ties broken by id.")


class EstimateResponse(ResponseModel):
    valid: bool
    errors: list[str]
    cost_estimate: float = Field(description="Estimated distance computations / visible records (1.0 = one "
                                             "exact scan).")
    estimated_duration_ms: float
    estimated_distance_computations: int
    plan: str = Field(description="flat, hnsw, filtered-scan or filtered-hnsw")
    selectivity: float
    recommendations: list[str]


class ExplainedNeighbor(ResponseModel):
    id: str
    rank: int
    score: float | None
    metadata: dict[str, Any] | None
    matched_clauses: list[str]


class ExplainResponse(ResponseModel):
    neighbors: list[ExplainedNeighbor]
    plan: str
    distance_computations: int
    hops: int
    candidates_filtered_out: int
    phases_ms: dict[str, float]


class BatchErrorItem(ResponseModel):
    index: int = Field(description="Position of the failed operation in `operations`.")
    operation: str = Field(description='e.g. "delete(doc2)"')
    error: str
    type: str = Field(description="The error class, as in a 4xx body.")


class BatchResponse(ResponseModel):
    succeeded: int
    failed: int
    errors: list[BatchErrorItem]
    duration_ms: float


class CompactResponse(ResponseModel):
    triggered: bool
    removed_count: int
    duration_ms: float
    reason: str


class RecordResponse(ResponseModel):
    id: str
    vector: list[float]
    metadata: dict[str, Any] | None
    expires_at: float | None = Field(description="The store clock's time of expiry, or null.")
    deleted: bool


class StatsResponse(ResponseModel):
    """`VecStore.stats()`; the JSON of `StoreStats.to_dict()` (a field added there must be added here:
    tests/test_http_openapi.py compares the two)."""

    dim: int | None
    metric: str
    index: str
    index_params: dict[str, Any]
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
    last_compaction: dict[str, Any] | None
    recovery_report: dict[str, Any]
    format_version: int
    durability: str
    read_only: bool
    last_seq: int
    unindexed: int = Field(description="Vectors not linked into the HNSW graph yet (queries scan them).")
    superseded: int = Field(description="Old versions of records whose vector an upsert replaced; compaction "
                                        "reclaims them.")
    log_bytes_since_checkpoint: int = Field(description="Log an open would replay (checkpoints reset it).")
    last_checkpoint_at: float | None = Field(description="Unix time the live snapshot was captured, or null.")
    checkpoint_config: dict[str, Any] | None


class NamespaceList(ResponseModel):
    namespaces: list[str]


class NamespaceCreated(ResponseModel):
    ok: Literal[True] = True
    name: str


class BackupListItem(ResponseModel):
    name: str
    created_at: str = Field(description="ISO 8601, UTC.")
    count: int


class BackupList(ResponseModel):
    backups: list[BackupListItem] = Field(description="Newest first.")


class BackupInfo(ResponseModel):
    namespace: str
    name: str
    created_at: str
    count: int
    dim: int | None
    metric: str
    bytes: int
    files: list[dict[str, Any]]


class ErrorDetail(ResponseModel):
    type: str = Field(description="The public error class, e.g. DimensionMismatchError or NotFoundError.")
    code: str = Field(description="A stable machine-readable code: the library error's `code` (e.g. "
                                  "`dimension_mismatch`, `invalid_vector_type`), else the HTTP failure in snake "
                                  "case (e.g. `method_not_allowed`, `unauthorized`).")
    message: str
    field: str | None = Field(None, description="The body field at fault, when known, e.g. "
                                                      "`operations[2].metadata`.")


class ErrorBody(ResponseModel):
    """Every 4xx answer (and the 500 of a server bug)."""

    error: ErrorDetail
