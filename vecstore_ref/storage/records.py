"""The payload of a ``RECORD_BATCH`` log record: the effects of one API call or one batch.

Layout (little-endian, see ``docs/concepts/storage-format.md``)::

    u32 json_len | u32 n_vectors | u32 dim (0 = none) | JSON (UTF-8, json_len bytes) | n_vectors * dim float32

The JSON is a list of *effects*, already validated and resolved (TTLs are absolute times), so replay needs no clock
and makes no decisions:

    {"op": "upsert", "id", "row", "metadata", "expires_at"}   row indexes the vector block
    {"op": "delete" | "soft_delete" | "restore" | "expire", "id"}
    {"op": "update_metadata", "id", "metadata"}
    {"op": "set_expiry", "id", "expires_at"}

No pickle: a hostile file can at worst fail to decode.
"""

from __future__ import annotations

import json
import math

import numpy as np

from ..errors import StorageError
from .format import BATCH_PAYLOAD_HEADER

_FIELDS = {
    "upsert": ("id", "row", "metadata", "expires_at"),
    "delete": ("id",),
    "soft_delete": ("id",),
    "restore": ("id",),
    "expire": ("id",),
    "update_metadata": ("id", "metadata"),
    "set_expiry": ("id", "expires_at"),
}


class RecordDecodeError(StorageError):
    """A CRC-valid record whose payload does not decode: the store reports it as a corrupt log."""

    code = "record_decode"


def encode_batch(dim: int | None, ops: list[dict], vectors: np.ndarray | None) -> bytes:
    text = json.dumps(ops, allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if vectors is None or len(vectors) == 0:
        n, block = 0, b""
    else:
        vec = np.ascontiguousarray(vectors, dtype="<f4")
        n, block = vec.shape[0], vec.tobytes()
        dim = vec.shape[1]
    return BATCH_PAYLOAD_HEADER.pack(len(text), n, dim or 0) + text + block


def decode_batch(payload: bytes) -> tuple[int | None, list[dict], np.ndarray | None]:
    """``(dim, ops, vectors)``; raises :class:`RecordDecodeError` on anything malformed."""
    head = BATCH_PAYLOAD_HEADER.size
    if len(payload) < head:
        raise RecordDecodeError("batch payload shorter than its header")
    json_len, n, dim = BATCH_PAYLOAD_HEADER.unpack_from(payload, 0)
    if head + json_len > len(payload) or (n and not dim):
        raise RecordDecodeError("batch payload lengths out of bounds")
    expected = head + json_len + 4 * n * dim
    if expected != len(payload):
        raise RecordDecodeError(f"batch payload is {len(payload)} bytes; its header says {expected}")
    try:
        ops = json.loads(payload[head : head + json_len].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RecordDecodeError(f"batch JSON does not parse: {exc}") from None
    if not isinstance(ops, list):
        raise RecordDecodeError("batch JSON is not a list")
    for op in ops:
        if not isinstance(op, dict) or op.get("op") not in _FIELDS:
            raise RecordDecodeError(f"unknown effect {op!r:.80}")
        fields = _FIELDS[op["op"]]
        if set(op) != {"op", *fields} or not isinstance(op["id"], str) or not op["id"]:
            raise RecordDecodeError(f"malformed {op['op']} effect")
        if "row" in op and not (isinstance(op["row"], int) and 0 <= op["row"] < n):
            raise RecordDecodeError("upsert effect points outside the vector block")
        if "metadata" in op and not (op["metadata"] is None or isinstance(op["metadata"], dict)):
            raise RecordDecodeError("metadata is not an object")
        if "expires_at" in op:
            e = op["expires_at"]
            if e is not None and (isinstance(e, bool) or not isinstance(e, (int, float)) or not math.isfinite(e)):
                raise RecordDecodeError("expires_at is not a finite number")
    vectors = None
    if n:
        vectors = np.frombuffer(payload, dtype="<f4", count=n * dim, offset=head + json_len).reshape(n, dim)
        vectors = vectors.astype(np.float32)
    return (dim or None), ops, vectors
