"""Mixed-operation batches: validate every op against the state the ops before it leave, then write one record.

A batch is planned in full before anything is written. Each op is checked against an *overlay*: the store's state
plus the effects of the earlier ops of the same batch, so ``[Upsert("a"), Delete("a")]`` succeeds exactly as the two
single calls would. A failing op changes nothing and is reported; the effects of the ops that succeed form the
payload of one log record (`vecstore_ref.storage.records`), fsynced once: after a crash all of them are there,
or none.

The single-record API calls (``upsert``, ``delete`` ...) are batches of one op, planned by this same code, so the
two paths cannot drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from .config import MAX_BATCH_OPS, MAX_DIM
from .errors import (
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidBatchError,
    InvalidBatchTypeError,
    NotFoundError,
    VecStoreError,
)
from .metadata import validate_metadata
from .state import FREE, LIVE, SOFT, StoreState
from .types import BatchError, Delete, Restore, SetTTL, SoftDelete, UpdateMetadata, Upsert
from .validation import (
    ACCEPTED_VECTOR_KINDS,
    MAX_SQUARED_NORM,
    cosine_norms_clearly_valid,
    validate_dim,
    validate_id,
    validate_ttl,
    validate_vector,
)

_OP_TYPES = (Upsert, Delete, SoftDelete, Restore, UpdateMetadata, SetTTL)


@dataclass
class _View:
    """What the batch so far made of one id: state (FREE/LIVE/SOFT) and expires_at."""

    state: int
    expires_at: float


@dataclass
class BatchPlan:
    """The outcome of planning: effects to log, their vectors, per-op results and errors."""

    effects: list[dict] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    dim: int | None = None
    errors: list[BatchError] = field(default_factory=list)
    results: list[object] = field(default_factory=list)  # per op: None, True/False, or the exception
    succeeded: int = 0

    def vector_matrix(self) -> np.ndarray | None:
        if not self.vectors:
            return None
        return np.stack(self.vectors).astype(np.float32, copy=False)


def check_ops(ops: object) -> list:
    """``ops`` must be a list or tuple of at most `MAX_BATCH_OPS` operation objects (an empty one is fine)."""
    if isinstance(ops, (str, bytes, dict)) or not isinstance(ops, (list, tuple)):
        raise InvalidBatchTypeError(f"batch_execute takes a list of operations, got {type(ops).__name__}")
    if len(ops) > MAX_BATCH_OPS:
        raise InvalidBatchError(f"a batch holds at most {MAX_BATCH_OPS:,} operations, got {len(ops):,}; split it "
                                "(or load in bulk with upsert_many)")
    for i, op in enumerate(ops):
        if not isinstance(op, _OP_TYPES):
            raise InvalidBatchTypeError(
                f"operation {i} is a {type(op).__name__}; expected Upsert, Delete, SoftDelete, Restore, "
                "UpdateMetadata or SetTTL"
            )
    return list(ops)


def check_bulk_rows(ids: list, metadatas) -> list:
    """The ids and metadata of a bulk load (``upsert_many``), all checked before anything is written; returns
    the owned metadata copies. An error names its row."""
    if metadatas is None:
        metadatas = [None] * len(ids)
    elif isinstance(metadatas, (str, bytes, dict)) or not isinstance(metadatas, Iterable):
        raise InvalidArgumentTypeError("metadatas must be a sequence of metadata dicts (or None), one per id, got "
                                       f"{type(metadatas).__name__}")
    else:
        metadatas = list(metadatas)
    if len(metadatas) != len(ids):
        raise InvalidArgumentError(f"{len(ids)} ids but {len(metadatas)} metadata entries")
    checked = []
    for row, (id_, md) in enumerate(zip(ids, metadatas)):
        try:
            validate_id(id_)
            checked.append(validate_metadata(md))
        except VecStoreError as exc:
            raise type(exc)(f"row {row}: {exc}") from None
    return checked


def plan_batch(ops: list, state: StoreState, now: float) -> BatchPlan:
    """Validate ``ops`` in order against ``state`` (not modified) and collect the effects of those that succeed."""
    plan = BatchPlan(dim=state.dim)
    overlay: dict[str, _View] = {}

    def view(id_: str) -> _View:
        v = overlay.get(id_)
        if v is not None:
            return v
        slot = state.lookup(id_)
        if slot < 0:
            return _View(int(FREE), math.inf)
        return _View(int(state.state[slot]), float(state.expires[slot]))

    checked = _check_upsert_vectors_together(ops, state.dim, state.metric)
    for i, op in enumerate(ops):
        try:
            result = _plan_one(op, plan, view, overlay, state.metric, now, checked.get(i))
        except VecStoreError as exc:
            plan.errors.append(BatchError(i, _describe(op), str(exc), type(exc).__name__))
            plan.results.append(exc)
            continue
        plan.results.append(result)
        plan.succeeded += 1
    return plan


def _describe(op) -> str:
    try:
        return op.describe()
    except Exception:  # an id whose str() fails must not hide the real error
        return type(op).__name__.lower()


def _visible(v: _View, now: float) -> bool:
    return v.state == LIVE and now < v.expires_at


def _exists(v: _View, now: float) -> bool:
    """Present and not expired (soft-deleted counts)."""
    return v.state != FREE and now < v.expires_at


def _check_upsert_vectors_together(ops: list, dim: int | None, metric: str) -> dict[int, np.ndarray]:
    """The upsert vectors that pass validation, checked in one vectorized pass: {op index: float32 row}.

    A bulk load is a batch of many upserts of plain arrays; checking them one by one cost more than writing them.
    Only 1-D numeric arrays of the batch's dimension take part, and only the rows that pass are returned: any
    other vector goes through ``validate_vector`` alone, which raises the precise error (or accepts a vector near
    the float32 limits that this quick test leaves to it).
    """
    picked = [i for i, op in enumerate(ops) if type(op) is Upsert and type(op.vector) is np.ndarray
              and op.vector.ndim == 1 and op.vector.dtype.kind in ACCEPTED_VECTOR_KINDS]
    if len(picked) < 2:
        return {}
    if dim is None:
        dim = ops[picked[0]].vector.shape[0]
        if not 1 <= dim <= MAX_DIM:
            return {}
    picked = [i for i in picked if ops[i].vector.shape[0] == dim]
    if not picked:
        return {}
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        rows = np.stack([ops[i].vector for i in picked]).astype(np.float32, copy=False)
        ok = np.isfinite(rows).all(axis=1)
        if metric == "cosine":
            ok &= cosine_norms_clearly_valid(rows)
        else:  # far below the norm bound of the other metrics (the rest is checked one by one)
            ok &= np.einsum("ij,ij->i", rows, rows) < MAX_SQUARED_NORM / 2
    return {i: rows[r] for r, i in enumerate(picked) if ok[r]}


def _plan_one(op, plan: BatchPlan, view, overlay: dict, metric: str, now: float, checked_vector=None):
    id_ = validate_id(op.id)
    if isinstance(op, Upsert):
        if checked_vector is not None and plan.dim in (None, checked_vector.shape[0]):
            vec = checked_vector
            dim = vec.shape[0]
        elif plan.dim is None:
            vec = validate_vector(op.vector, None, metric)
            dim = validate_dim(vec.shape[0])
        else:
            vec = validate_vector(op.vector, plan.dim, metric)
            dim = plan.dim
        md = None if op.metadata is None else validate_metadata(op.metadata)
        ttl = None if op.ttl is None else validate_ttl(op.ttl)
        expires_at = None if ttl is None else now + ttl
        plan.dim = dim
        plan.effects.append({"op": "upsert", "id": id_, "row": len(plan.vectors), "metadata": md,
                             "expires_at": expires_at})
        plan.vectors.append(vec)
        overlay[id_] = _View(int(LIVE), math.inf if expires_at is None else expires_at)
        return None

    v = view(id_)
    if isinstance(op, Delete):
        if not _exists(v, now):  # live or soft-deleted, and not expired: expiry wins here too
            raise NotFoundError(f"no record with id {id_!r}")
        plan.effects.append({"op": "delete", "id": id_})
        overlay[id_] = _View(int(FREE), math.inf)
        return None
    if isinstance(op, SoftDelete):
        if not _exists(v, now):
            raise NotFoundError(f"no record with id {id_!r}")
        if v.state == SOFT:
            return False
        plan.effects.append({"op": "soft_delete", "id": id_})
        overlay[id_] = _View(int(SOFT), v.expires_at)
        return True
    if isinstance(op, Restore):
        if not _exists(v, now):
            raise NotFoundError(f"no record with id {id_!r}")
        if v.state == LIVE:
            return False
        plan.effects.append({"op": "restore", "id": id_})
        overlay[id_] = _View(int(LIVE), v.expires_at)
        return True
    if isinstance(op, UpdateMetadata):
        md = validate_metadata(op.metadata)
        if not _visible(v, now):
            raise NotFoundError(f"no visible record with id {id_!r}")
        plan.effects.append({"op": "update_metadata", "id": id_, "metadata": md})
        return None
    if isinstance(op, SetTTL):
        ttl = validate_ttl(op.ttl, allow_none=True)
        if not _visible(v, now):
            raise NotFoundError(f"no visible record with id {id_!r}")
        expires_at = None if ttl is None else now + ttl
        plan.effects.append({"op": "set_expiry", "id": id_, "expires_at": expires_at})
        overlay[id_] = _View(v.state, math.inf if expires_at is None else expires_at)
        return None
    raise InvalidBatchError(f"unknown operation {type(op).__name__}")  # unreachable after check_ops
