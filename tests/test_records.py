"""The RECORD_BATCH payload codec: round trips, strict validation of everything a CRC-valid record may still get
wrong, and speed for 10k ops."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vecstore_ref.errors import InvalidArgumentError, StorageError
from vecstore_ref.storage.format import BATCH_PAYLOAD_HEADER
from vecstore_ref.storage.records import OP_FIELDS, RecordDecodeError, decode_batch, encode_batch

ALL_OPS = [
    {"op": "upsert", "id": "a", "row": 0, "metadata": {"lang": "en", "n": 3, "tags": ["x", 1.5, None, True]},
     "expires_at": None},
    {"op": "upsert", "id": "é文🙂", "row": 1, "metadata": None, "expires_at": 1767225600.25},
    {"op": "delete", "id": "a"},
    {"op": "soft_delete", "id": "b"},
    {"op": "restore", "id": "b"},
    {"op": "update_metadata", "id": "b", "metadata": {"k": "v"}},
    {"op": "update_metadata", "id": "b", "metadata": None},
    {"op": "set_expiry", "id": "b", "expires_at": 5},
    {"op": "set_expiry", "id": "b", "expires_at": None},
    {"op": "expire", "id": "c"},
]


def raw(ops, n: int = 0, dim: int = 0, vectors: bytes = b"", json_text: str | None = None) -> bytes:
    """A payload built by hand, bypassing encode_batch's checks."""
    text = (json.dumps(ops) if json_text is None else json_text).encode("utf-8")
    return BATCH_PAYLOAD_HEADER.pack(len(text), n, dim) + text + vectors


def test_round_trip_of_every_op_kind():
    vecs = np.array([[1.0, 2.0, 3.0], [-0.5, 0.0, 1e-30]], dtype=np.float32)
    payload = encode_batch(3, ALL_OPS, vecs)
    dim, ops, out = decode_batch(payload)
    assert dim == 3 and ops == ALL_OPS
    assert out.dtype == np.float32 and out.shape == (2, 3) and out.tobytes() == vecs.tobytes()
    assert out.flags.writeable and out.flags.c_contiguous
    assert {op["op"] for op in ALL_OPS} == set(OP_FIELDS)


def test_payload_layout():
    vecs = np.array([[1.0, 2.0]], dtype=np.float32)
    ops = [{"op": "upsert", "id": "a", "row": 0, "metadata": None, "expires_at": None}]
    payload = encode_batch(2, ops, vecs)
    json_len, n, dim = struct.unpack_from("<III", payload)
    text = payload[12 : 12 + json_len].decode()
    assert (n, dim) == (1, 2) and json.loads(text) == ops and " " not in text  # compact separators
    assert payload[12 + json_len :] == b"\x00\x00\x80\x3f\x00\x00\x00\x40"  # 1.0f, 2.0f little-endian


def test_empty_batch_and_no_vectors():
    assert decode_batch(encode_batch(None, [], None)) == (None, [], None)
    dim, ops, vecs = decode_batch(encode_batch(4, [{"op": "delete", "id": "x"}], None))
    assert dim == 4 and vecs is None and ops == [{"op": "delete", "id": "x"}]


def test_non_ascii_text_is_stored_as_utf8():
    payload = encode_batch(None, [{"op": "delete", "id": "ü"}], None)
    assert "ü".encode() in payload


@pytest.mark.parametrize("ops", [
    [{"op": "update_metadata", "id": "a", "metadata": {"x": float("nan")}}],
    [{"op": "set_expiry", "id": "a", "expires_at": float("inf")}],
    [{"op": "update_metadata", "id": "a", "metadata": {"x": {1, 2}}}],
])
def test_encode_refuses_what_json_cannot_hold(ops):
    with pytest.raises(InvalidArgumentError):
        encode_batch(None, ops, None)


def test_encode_refuses_a_dimension_mismatch():
    with pytest.raises(InvalidArgumentError):
        encode_batch(3, [], np.zeros((1, 4), np.float32))


def test_decode_error_is_a_storage_error():
    assert issubclass(RecordDecodeError, StorageError)


UPSERT = {"op": "upsert", "id": "a", "row": 0, "metadata": None, "expires_at": None}
ONE_VEC = np.ones(2, "<f4").tobytes()


@pytest.mark.parametrize("payload", [
    pytest.param(b"", id="empty"),
    pytest.param(b"\x01\x00\x00\x00", id="short_header"),
    pytest.param(raw([]) + b"x", id="trailing_byte"),
    pytest.param(raw([])[:-1], id="json_cut"),
    pytest.param(raw([UPSERT], n=1, dim=2, vectors=ONE_VEC[:-1]), id="vector_block_cut"),
    pytest.param(raw([], n=1, dim=0), id="vectors_without_dim"),
    pytest.param(raw([], n=0, dim=70_000), id="dim_too_large"),
    pytest.param(BATCH_PAYLOAD_HEADER.pack(0xFFFFFFFF, 0xFFFFFFFF, 0xFFFF) + b"[]", id="huge_counts"),
    pytest.param(raw(None, json_text="[{"), id="bad_json"),
    pytest.param(raw(None, json_text='[{"op":"delete","id":"a"}'), id="json_cut_inside"),
    pytest.param(raw(None, json_text="[NaN]"), id="nan_literal"),
    pytest.param(raw(None, json_text='[{"op":"set_expiry","id":"a","expires_at":Infinity}]'), id="inf_literal"),
    pytest.param(raw(None, json_text='[{"op":"set_expiry","id":"a","expires_at":1e400}]'), id="overflowing"),
    pytest.param(BATCH_PAYLOAD_HEADER.pack(2, 0, 0) + b"\xff\xfe", id="not_utf8"),
    pytest.param(raw(None, json_text="[" * 100_000), id="nested_deep"),
    pytest.param(raw({"op": "delete", "id": "a"}), id="not_a_list"),
    pytest.param(raw(["delete"]), id="op_not_an_object"),
    pytest.param(raw([{"op": "upsertt", "id": "a"}]), id="unknown_op"),
    pytest.param(raw([{"id": "a"}]), id="no_op"),
    pytest.param(raw([{"op": 1, "id": "a"}]), id="op_not_a_string"),
    pytest.param(raw([{"op": "delete"}]), id="missing_id"),
    pytest.param(raw([{"op": "delete", "id": "a", "extra": 1}]), id="extra_field"),
    pytest.param(raw([{"op": "delete", "id": 5}]), id="id_not_a_string"),
    pytest.param(raw([{"op": "delete", "id": ""}]), id="empty_id"),
    pytest.param(raw([{**UPSERT, "row": 1}], n=1, dim=2, vectors=ONE_VEC), id="row_out_of_range"),
    pytest.param(raw([{**UPSERT, "row": -1}], n=1, dim=2, vectors=ONE_VEC), id="negative_row"),
    pytest.param(raw([{**UPSERT, "row": True}], n=1, dim=2, vectors=ONE_VEC), id="bool_row"),
    pytest.param(raw([{**UPSERT, "row": 0.0}], n=1, dim=2, vectors=ONE_VEC), id="float_row"),
    pytest.param(raw([UPSERT]), id="upsert_without_vectors"),
    pytest.param(raw([{**UPSERT, "metadata": [1]}], n=1, dim=2, vectors=ONE_VEC), id="metadata_not_object"),
    pytest.param(raw([{**UPSERT, "expires_at": "soon"}], n=1, dim=2, vectors=ONE_VEC), id="expiry_string"),
    pytest.param(raw([{**UPSERT, "expires_at": False}], n=1, dim=2, vectors=ONE_VEC), id="expiry_bool"),
    pytest.param(raw([{"op": "update_metadata", "id": "a"}]), id="update_without_metadata"),
    pytest.param(raw([{"op": "set_expiry", "id": "a"}]), id="set_expiry_without_value"),
    pytest.param(raw([UPSERT], n=1, dim=2, vectors=np.array([np.nan, 1], "<f4").tobytes()), id="nan_vector"),
    pytest.param(raw([UPSERT], n=1, dim=2, vectors=np.array([np.inf, 1], "<f4").tobytes()), id="inf_vector"),
])
def test_decode_rejects(payload):
    with pytest.raises(RecordDecodeError):
        decode_batch(payload)


def test_decoded_vectors_do_not_alias_the_payload():
    payload = bytearray(encode_batch(2, [UPSERT], np.array([[1, 2]], np.float32)))
    _, _, vecs = decode_batch(bytes(payload))
    vecs[0, 0] = 42.0  # writable, and a copy
    assert decode_batch(bytes(payload))[2][0, 0] == 1.0


def test_ten_thousand_ops_round_trip():
    n, dim = 10_000, 64
    vecs = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
    ops = [{"op": "upsert", "id": f"id-{i}", "row": i, "metadata": {"i": i, "tag": "t"},
            "expires_at": None if i % 2 else 1.5e9 + i} for i in range(n)]
    payload = encode_batch(dim, ops, vecs)
    dim2, ops2, vecs2 = decode_batch(payload)
    assert dim2 == dim and ops2 == ops and np.array_equal(vecs2, vecs)  # (speed: benchmarks/, not here)


# --- properties ----------------------------------------------------------------------------------------------

ids = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20)  # valid ids (SPEC 1)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=10))
metadata = st.one_of(st.none(), st.dictionaries(st.text(min_size=1, max_size=8),
                                                st.one_of(scalars, st.lists(scalars, max_size=3)), max_size=4))
expiry = st.one_of(st.none(), st.floats(0, 1e10, allow_nan=False))


@st.composite
def batches(draw):
    dim = draw(st.integers(1, 8))
    n = draw(st.integers(0, 5))
    ops = [{"op": "upsert", "id": draw(ids), "row": r, "metadata": draw(metadata), "expires_at": draw(expiry)}
           for r in range(n)]
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["delete", "soft_delete", "restore", "expire", "update_metadata",
                                     "set_expiry"]))
        op = {"op": kind, "id": draw(ids)}
        if kind == "update_metadata":
            op["metadata"] = draw(metadata)
        if kind == "set_expiry":
            op["expires_at"] = draw(expiry)
        ops.insert(draw(st.integers(0, len(ops))), op)
    vecs = np.array(draw(st.lists(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=dim, max_size=dim),
                                  min_size=n, max_size=n)), dtype=np.float32).reshape(n, dim)
    return dim, ops, vecs


@settings(max_examples=200, deadline=None)
@given(batches())
def test_round_trip_property(batch):
    dim, ops, vecs = batch
    dim2, ops2, vecs2 = decode_batch(encode_batch(dim, ops, vecs))
    assert dim2 == dim and ops2 == ops
    if len(vecs):
        assert vecs2.tobytes() == vecs.tobytes()
    else:
        assert vecs2 is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decoding_arbitrary_bytes_raises_only_record_decode_error(data):
    try:
        decode_batch(data)
    except RecordDecodeError:
        pass


@settings(max_examples=200, deadline=None)
@given(batches(), st.data())
def test_damaged_payload_decodes_or_raises_record_decode_error(batch, data):
    payload = bytearray(encode_batch(*batch))
    pos = data.draw(st.integers(0, len(payload) - 1))
    payload[pos] = data.draw(st.integers(0, 255))
    try:
        decode_batch(bytes(payload))
    except RecordDecodeError:
        pass


@given(st.lists(st.tuples(st.text(min_size=1, max_size=8).filter(lambda t: "\0" not in t),
                          st.one_of(st.none(), st.dictionaries(st.text(min_size=1, max_size=4),
                                                               st.one_of(st.integers(), st.text(max_size=5),
                                                                         st.booleans(), st.none()), max_size=3))),
                min_size=1, max_size=20),
       st.one_of(st.none(), st.floats(1e9, 2e9)))
def test_bulk_upserts_encode_to_the_same_bytes_as_their_effects(rows, expires_at):
    """`encode_upserts` (the bulk load's text encoder, no dict per row) writes exactly what `encode_batch` writes
    for the same upserts, so replay cannot tell which path wrote a record."""
    from vecstore_ref.columns import encode_row
    from vecstore_ref.storage.records import encode_upserts

    ids = [i for i, _ in rows]
    try:
        for i in ids:
            i.encode("utf-8")
    except UnicodeEncodeError:
        return  # ids with lone surrogates never get this far (validate_id)
    mds = [md for _, md in rows]
    vecs = np.arange(len(rows) * 3, dtype=np.float32).reshape(len(rows), 3)
    effects = [{"op": "upsert", "id": i, "row": r, "metadata": md, "expires_at": expires_at}
               for r, (i, md) in enumerate(zip(ids, mds))]
    assert encode_upserts(3, ids, [encode_row(md) for md in mds], expires_at, vecs) == encode_batch(3, effects, vecs)
