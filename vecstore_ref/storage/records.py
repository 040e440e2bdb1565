"""The payload of a ``RECORD_BATCH`` log record: the effects of one API call or one batch.

Layout (little-endian; see ``docs/concepts/storage-format.md``, constants in ``storage/format.py``)::

    u32 json_len | u32 n_vectors | u32 dim (0 = none) | JSON (UTF-8, json_len bytes) | n_vectors * dim float32

The JSON is a list of *effects*, already validated and resolved (TTLs are absolute times), so replay needs no clock
and makes no decisions:

    {"op": "upsert", "id", "row", "metadata", "expires_at"}   row indexes the vector block
    {"op": "delete" | "soft_delete" | "restore" | "expire", "id"}
    {"op": "update_metadata", "id", "metadata"}
    {"op": "set_expiry", "id", "expires_at"}

No pickle: a hostile payload can at worst fail to decode, with `RecordDecodeError`, which the store reports
as a `CorruptLogError` naming the segment and offset.
"""

from __future__ import annotations

import json
import math

import numpy as np

from ..config import MAX_ID_BYTES
from ..errors import InvalidArgumentError, InvalidIdError, InvalidMetadataError, StorageError
from ..metadata import surely_valid_decoded, validate_metadata
from ..validation import validate_id
from .format import BATCH_MAX_DIM, BATCH_PAYLOAD_HEADER, MAX_RECORD_BYTES

# op name -> the keys its dict holds besides "op" (exactly these: a missing or extra key is a decode error)
OP_FIELDS: dict[str, frozenset[str]] = {
    "upsert": frozenset({"id", "row", "metadata", "expires_at"}),
    "delete": frozenset({"id"}),
    "soft_delete": frozenset({"id"}),
    "restore": frozenset({"id"}),
    "expire": frozenset({"id"}),
    "update_metadata": frozenset({"id", "metadata"}),
    "set_expiry": frozenset({"id", "expires_at"}),
}
_KEYS = {name: fields | {"op"} for name, fields in OP_FIELDS.items()}
_HEAD = BATCH_PAYLOAD_HEADER.size
_SURE_ID_CHARS = MAX_ID_BYTES // 4  # an id of at most this many characters is within the byte limit


class RecordDecodeError(StorageError):
    """A CRC-valid record whose payload does not decode; the store reports it as a corrupt log."""

    code = "record_decode"


def _reject_constant(name: str):
    raise ValueError(f"non-finite number {name} in a record")


def encode_batch(dim: int | None, ops: list[dict], vectors: np.ndarray | None) -> bytes:
    """Encode one batch of effects.

    Args:
        dim: the store's dimension, or None while it has none (then ``vectors`` must be empty or None).
        ops: effect dicts, as listed in the module docstring; ``row`` indexes ``vectors``.
        vectors: float32-castable, shape (n_vectors, dim), or None.

    Raises:
        InvalidArgumentError: shapes disagree, or the ops are not JSON-serialisable (NaN, a set ...).
    """
    if vectors is None or len(vectors) == 0:
        n, block = 0, b""
    else:
        vec = np.ascontiguousarray(vectors, dtype="<f4")
        if vec.ndim != 2 or (dim is not None and vec.shape[1] != dim):
            raise InvalidArgumentError(f"vectors of shape {vec.shape} do not match dim {dim}")
        n, dim = vec.shape[0], vec.shape[1]
        block = vec.tobytes()
    if dim is not None and not (1 <= dim <= BATCH_MAX_DIM):
        raise InvalidArgumentError(f"dim must be 1..{BATCH_MAX_DIM}; got {dim}")
    try:
        text = json.dumps(ops, allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        raise InvalidArgumentError(f"batch effects are not serialisable: {exc}") from None
    payload = BATCH_PAYLOAD_HEADER.pack(len(text), n, dim or 0) + text + block
    if len(payload) > MAX_RECORD_BYTES:
        raise InvalidArgumentError(f"a batch encodes to {len(payload)} bytes; a log record holds at most "
                                   f"{MAX_RECORD_BYTES}")
    return payload


def encode_upserts(dim: int, ids: list[str], rows: list[bytes | None], expires_at: float | None,
                   vectors: np.ndarray) -> bytes:
    """The payload of a bulk load: one ``upsert`` effect per row, as `encode_batch` would write it, built as text
    without a dict per row.

    Args:
        dim: the vectors' dimension.
        ids: validated ids.
        rows: each row's metadata as compact JSON (`vecstore_ref.columns.encode_row`), or None.
        expires_at: the absolute expiry time of every row, or None.
        vectors: float32 (len(ids), dim).

    The bytes equal ``encode_batch(dim, [{"op": "upsert", "id": i, "row": r, "metadata": md, "expires_at": e}
    ...], vectors)``, so a reader cannot tell the two apart.
    """
    from json.encoder import encode_basestring  # the C escaper json.dumps uses for str (ensure_ascii=False)

    if expires_at is not None and not math.isfinite(expires_at):
        raise InvalidArgumentError("expires_at must be finite")
    tail = ',"expires_at":' + ("null" if expires_at is None else json.dumps(expires_at)) + "}"
    parts = [f'{{"op":"upsert","id":{encode_basestring(i)},"row":{r},"metadata":'
             f'{"null" if md is None else md.decode("utf-8")}{tail}' for r, (i, md) in enumerate(zip(ids, rows))]
    text = ("[" + ",".join(parts) + "]").encode("utf-8")
    vec = np.ascontiguousarray(vectors, dtype="<f4")
    if vec.shape != (len(ids), dim) or not (1 <= dim <= BATCH_MAX_DIM):
        raise InvalidArgumentError(f"vectors of shape {vec.shape} do not match {len(ids)} rows of dim {dim}")
    payload = BATCH_PAYLOAD_HEADER.pack(len(text), vec.shape[0], dim) + text + vec.tobytes()
    if len(payload) > MAX_RECORD_BYTES:
        raise InvalidArgumentError(f"a batch encodes to {len(payload)} bytes; a log record holds at most "
                                   f"{MAX_RECORD_BYTES}")
    return payload


def _bad(msg: str, index: int | None = None) -> RecordDecodeError:
    return RecordDecodeError(msg if index is None else f"effect {index}: {msg}")


def _check_expiry(value, index: int) -> None:
    if value is not None and (type(value) not in (int, float) or not math.isfinite(value)):
        raise _bad("expires_at is not a finite number or null", index)


def decode_batch(payload: bytes) -> tuple[int | None, list[dict], np.ndarray | None]:
    """Decode and validate a batch payload.

    Returns:
        ``(dim, ops, vectors)``: dim or None; the effect dicts; float32 (n_vectors, dim), C-contiguous and owned
        (not a view of ``payload``), or None when the batch carries no vector.

    Raises:
        RecordDecodeError: sizes inconsistent, JSON invalid (including NaN/Infinity literals), an unknown op, a
            missing, extra or mistyped field, an id or metadata that breaks SPEC section 1, a row outside the
            vector block, a non-finite vector value.
    """
    if len(payload) < _HEAD:
        raise _bad(f"batch payload of {len(payload)} bytes is shorter than its {_HEAD}-byte header")
    json_len, n, dim = BATCH_PAYLOAD_HEADER.unpack_from(payload, 0)
    if dim > BATCH_MAX_DIM or (n and not dim):
        raise _bad(f"batch payload announces {n} vectors of dim {dim}")
    expected = _HEAD + json_len + 4 * n * dim  # Python ints: no overflow
    if expected != len(payload):
        raise _bad(f"batch payload is {len(payload)} bytes; its header says {expected}")
    raw = payload[_HEAD : _HEAD + json_len]
    try:
        ops = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _bad(f"batch JSON does not parse: {exc}") from None
    # Without a backslash no string holds a lone surrogate or a C0 control; without C2 and 7F bytes none holds
    # a C1 control or DEL. Then the per-record checks of SPEC section 1 can take their cheap forms.
    plain = b"\\" not in raw and b"\xc2" not in raw and b"\x7f" not in raw
    if type(ops) is not list:
        raise _bad("batch JSON is not a list")
    for i, op in enumerate(ops):
        if type(op) is not dict:
            raise _bad("not an object", i)
        name = op.get("op")
        keys = _KEYS.get(name) if type(name) is str else None
        if keys is None:
            raise _bad(f"unknown op {name!r:.60}", i)
        if op.keys() != keys:
            raise _bad(f"{name} must have exactly the keys {sorted(keys)}; has {sorted(op)}", i)
        id_ = op["id"]
        if type(id_) is not str or not id_:
            raise _bad(f"{name} has an id that is not a non-empty string", i)
        if not (plain and len(id_) <= _SURE_ID_CHARS):
            try:  # SPEC section 1 again: a JSON escape can spell a lone surrogate or a control character
                validate_id(id_)
            except InvalidIdError as exc:
                raise _bad(f"{name} has a bad id: {exc}", i) from None
        if name == "upsert":
            row = op["row"]
            if type(row) is not int or not 0 <= row < n:
                raise _bad(f"upsert row {row!r:.30} is outside the block of {n} vectors", i)
        if "metadata" in keys and op["metadata"] is not None:
            if type(op["metadata"]) is not dict:
                raise _bad(f"{name} metadata is not an object or null", i)
            if not (plain and surely_valid_decoded(op["metadata"])):
                try:  # nesting, sizes, 1e999 (parsed as inf), lone surrogates: what a live write refuses
                    validate_metadata(op["metadata"])
                except InvalidMetadataError as exc:
                    raise _bad(f"{name} has bad metadata: {exc}", i) from None
        if "expires_at" in keys:
            _check_expiry(op["expires_at"], i)
    vectors = None
    if n:
        vectors = np.frombuffer(payload, dtype="<f4", count=n * dim, offset=_HEAD + json_len)
        vectors = vectors.astype(np.float32).reshape(n, dim)  # a native-order copy
        if not np.isfinite(vectors).all():
            raise _bad("the vector block holds a non-finite value")
    return (dim or None), ops, vectors
