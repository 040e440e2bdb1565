"""The request models of the HTTP API: unknown fields named, strict JSON types, the seed's spellings, the batch rule,
and the strict JSON parser (NaN, duplicate keys, numbers that overflow, lone surrogates). Every refusal is a 400 with
`{"error": {"type", "message", "field"?}}` and changes nothing on disk."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("orjson")

from fastapi.testclient import TestClient  # noqa: E402

import vecstore_ref as vs  # noqa: E402
from vecstore_ref._fs import dir_digest  # noqa: E402
from vecstore_ref.server import create_app  # noqa: E402


@pytest.fixture
def client(tmp_path):
    app = create_app(str(tmp_path / "data"))
    with TestClient(app, raise_server_exceptions=False) as c:
        c.root = str(tmp_path / "data")
        send(c, "POST", "/v1/upsert", {"id": "seed", "vector": [1, 2, 3], "metadata": {"lang": "en"}})
        yield c
    app.state.manager.close()


def send(c, method, url, body):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return c.request(method, url, content=raw, headers={"content-type": "application/json"})


def refused(c, method, url, body, *, field=None, type_=None, says=None):
    """Send ``body``; assert a 400 with a well-formed error body that names ``field``, and no change on disk."""
    before = dir_digest(c.root)
    r = send(c, method, url, body)
    assert r.status_code == 400, r.text
    assert r.content.isascii() or json.loads(r.content)  # always valid JSON text
    error = r.json()["error"]
    assert set(error) <= {"type", "code", "message", "field"} and {"type", "code", "message"} <= set(error)
    assert issubclass(getattr(vs, error["type"]), vs.VecStoreError)  # a public class
    if field is not None:
        assert error.get("field") == field, error
    if type_ is not None:
        assert error["type"] == type_, error
    if says is not None:
        assert says in error["message"], error
    assert dir_digest(c.root) == before
    return error


UPSERT = {"id": "a", "vector": [1, 2, 3]}


@pytest.mark.parametrize("method, url, body, field", [
    ("POST", "/v1/upsert", {**UPSERT, "metdata": {"lang": "en"}}, "metdata"),
    ("POST", "/v1/query", {"vector": [1, 2, 3], "top_k": 3}, "top_k"),
    ("POST", "/v1/query-estimate", {"vector": [1, 2, 3], "fliter": "lang = 'en'"}, "fliter"),
    ("POST", "/v1/query-explain", {"vector": [1, 2, 3], "efs": 3}, "efs"),
    ("POST", "/v1/compact", {"if_neded": True}, "if_neded"),
    ("PUT", "/v1/records/seed/ttl", {"ttl": 5, "tll": 5}, "tll"),
    ("POST", "/v1/records/seed/soft-delete", {"force": True}, "force"),
    ("POST", "/v1/records/seed/restore", {"x": 1}, "x"),
    ("POST", "/v1/expire", {"now": 1}, "now"),
    ("POST", "/v1/namespaces", {"name": "n1", "dimm": 3}, "dimm"),
    ("POST", "/v1/namespaces", {"name": "n1", "quotas": {"max_vector": 3}}, "quotas.max_vector"),
    ("POST", "/v1/namespaces", {"name": "n1", "hnsw": {"M": 8}}, "hnsw.M"),
    ("POST", "/v1/namespaces/default/backups", {"name": "b", "note": "x"}, "note"),
    ("POST", "/v1/batch-execute", {"operations": [], "atomic": True}, "atomic"),
])
def test_an_unknown_field_is_a_400_that_names_it(client, method, url, body, field):
    error = refused(client, method, url, body, field=field)
    assert repr(field.rsplit(".", 1)[-1]) in error["message"]


def test_an_unknown_field_inside_a_batch_op_refuses_the_whole_batch(client):
    ops = [{"op": "upsert", "id": "new", "vector": [1, 1, 1]},
           {"op": "upsert", "id": "b", "vector": [1, 2, 3], "metdata": {"lang": "de"}}]
    error = refused(client, "POST", "/v1/batch-execute", {"operations": ops}, field="operations[1].metdata",
                    type_="InvalidBatchError")
    assert "not applied" in error["message"] and "metadata, ttl" in error["message"]  # lists what is allowed
    assert client.get("/v1/records/new").status_code == 404


@pytest.mark.parametrize("op, field, says", [
    ({"op": "upsertt", "id": "x", "vector": [1, 2, 3]}, "operations[1].op", "unknown op 'upsertt'"),
    ({"id": "x", "vector": [1, 2, 3]}, "operations[1].op", "needs an 'op'"),
    ({"op": "delete"}, "operations[1].id", "'operations[1].id' is required"),
    ({"op": "upsert", "id": "x", "vector": [True, 0, 0]}, "operations[1].vector[0]", "must be a number"),
    ({"op": "upsert", "id": "x", "vector": "1,2,3"}, "operations[1].vector", "must be a list"),
    ({"op": "set_ttl", "id": "seed", "ttl": "60"}, "operations[1].ttl", "must be a number"),
    ({"op": "update_metadata", "id": "seed", "metadata": [1]}, "operations[1].metadata", "must be an object"),
    ({"op": "delete", "id": 7}, "operations[1].id", "must be a string"),
    ("delete seed", "operations[1]", "must be an object"),
])
def test_a_batch_with_a_malformed_op_is_refused_whole_naming_the_op(client, op, field, says):
    ops = [{"op": "upsert", "id": "new", "vector": [1, 1, 1]}, op]
    refused(client, "POST", "/v1/batch-execute", {"operations": ops}, field=field, type_="InvalidBatchError",
            says=says)
    assert client.get("/v1/records/new").status_code == 404


def test_well_formed_ops_that_fail_on_the_data_fail_alone(client):
    ops = [{"op": "upsert", "id": "new", "vector": [1, 1, 1]},
           {"op": "delete", "id": "missing"},  # no such record
           {"op": "upsert", "id": "short", "vector": [1, 2]},  # wrong dimension
           {"op": "upsert", "id": "nested", "vector": [1, 2, 3], "metadata": {"k": {"deep": 1}}},
           {"op": "set_ttl", "id": "seed", "ttl": -1},  # out of range
           {"op": "upsert", "id": "", "vector": [1, 2, 3]},  # an invalid id
           {"op": "soft_delete", "id": "seed"}]
    r = send(client, "POST", "/v1/batch-execute", {"operations": ops})
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["succeeded"], out["failed"]) == (2, 5)
    assert [(e["index"], e["type"]) for e in out["errors"]] == [
        (1, "NotFoundError"), (2, "DimensionMismatchError"), (3, "InvalidMetadataTypeError"),
        (4, "InvalidArgumentError"), (5, "InvalidIdError")]
    assert client.get("/v1/records/new").status_code == 200
    assert client.get("/v1/records/seed").status_code == 404  # soft-deleted by the last op


@pytest.mark.parametrize("body, field, type_", [
    ({"id": "a", "vector": [1, 2, 3], "ttl": True}, "ttl", "InvalidArgumentTypeError"),
    ({"id": "a", "vector": [1, True, 3]}, "vector[1]", "InvalidVectorTypeError"),
    ({"id": "a", "vector": "1 2 3"}, "vector", "InvalidVectorTypeError"),
    ({"id": "a", "vector": ["1", "2", "3"]}, "vector[0]", "InvalidVectorTypeError"),
    ({"id": 1, "vector": [1, 2, 3]}, "id", "InvalidIdTypeError"),
    ({"id": "a", "vector": [1, 2, 3], "metadata": "lang=en"}, "metadata", "InvalidMetadataTypeError"),
    ({"id": "a", "vector": [1, 2, 3], "ttl": "60"}, "ttl", "InvalidArgumentTypeError"),
    ({"vector": [1, 2, 3]}, "id", "InvalidArgumentError"),
])
def test_upsert_json_types_are_strict(client, body, field, type_):
    refused(client, "POST", "/v1/upsert", body, field=field, type_=type_)


@pytest.mark.parametrize("body, field", [
    ({"vector": [1, 2, 3], "k": "1"}, "k"),
    ({"vector": [1, 2, 3], "limit": "1"}, "limit"),
    ({"vector": [1, 2, 3], "k": 3.0}, "k"),
    ({"vector": [1, 2, 3], "k": True}, "k"),
    ({"vector": [1, 2, 3], "ef": 1.5}, "ef"),
    ({"vector": [1, 2, 3], "filter": {"lang": "en"}}, "filter"),
    ({"vector": [1, 2, 3], "k": 2, "limit": 2}, "limit"),
])
def test_query_json_types_are_strict_and_name_the_field_sent(client, body, field):
    refused(client, "POST", "/v1/query", body, field=field)


def test_the_seed_spellings_still_work(client):
    assert [h["id"] for h in send(client, "POST", "/v1/query", {"vector": [1, 2, 3], "limit": 1}).json()
            ["results"]] == ["seed"]
    assert send(client, "POST", "/v1/query", {"vector": [1, 2, 3], "k": 1, "filter": "lang = 'en'"}
                ).status_code == 200
    assert send(client, "POST", "/v1/namespaces", {"namespace": "alias"}).json() == {"ok": True, "name": "alias"}
    assert send(client, "POST", "/v1/namespaces/default/backups", {"backup_name": "b"}).json()["name"] == "b"
    refused(client, "POST", "/v1/namespaces", {"name": "a", "namespace": "b"}, field="namespace",
            type_="InvalidNameError")
    refused(client, "POST", "/v1/namespaces/default/backups", {}, field="name", type_="InvalidNameError")
    assert send(client, "PUT", "/v1/records/seed/metadata", {"lang": "fr"}).status_code == 200  # the object itself
    assert client.get("/v1/records/seed").json()["metadata"] == {"lang": "fr"}
    assert send(client, "PUT", "/v1/records/seed/metadata", {"metadata": {"lang": "de"}}).status_code == 200
    assert client.get("/v1/records/seed").json()["metadata"] == {"lang": "de"}


def test_routes_without_input_take_no_body_or_an_empty_object(client):
    assert client.post("/v1/records/seed/soft-delete").json() == {"changed": True}
    assert send(client, "POST", "/v1/records/seed/restore", {}).json() == {"changed": True}
    assert send(client, "POST", "/v1/compact", b"").status_code == 200


@pytest.mark.parametrize("raw, says", [
    (b'{"id": "a", "vector": [NaN, 1, 2]}', "NaN and Infinity"),
    (b'{"id": "a", "vector": [1, -Infinity, 2]}', "NaN and Infinity"),
    (b'{"id": "a", "id": "b", "vector": [1, 2, 3]}', "duplicate key 'id'"),
    (b'{"id": "a", "vector": [1, 2, 3], "metadata": {"k": 1, "k": 2}}', "duplicate key 'k'"),
    (b'{"id": "a", "vector": [1, 2, 3], "ttl": ' + b"9" * 400 + b"}", "does not fit a 64-bit float"),
    (b'{"id": "a", "vector": [1, 2, 3], "ttl": 1e400}', "does not fit a 64-bit float"),
    (b'{"id": "a", "vector": [1e400, 2, 3]}', "does not fit a 64-bit float"),
    (b'{"id": "\\ud800", "vector": [1, 2, 3]}', "surrogate"),
    (b'{"id": "a", "vector": [1, 2, 3], "metadata": {"\\udfff": 1}}', "surrogate"),
    (b'{"id": "a", "vector": [1, 2, 3]', "not valid JSON"),
    (b"\xff\xfe{}", "not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    (b'{"id": "a", "vector": [1, 2, 3], "metadata": {"deep": ' + b"[" * 300 + b"]" * 300 + b"}}", "nested too deeply"),
    (b'{"id": "a", "vector": [1, 2, 3], "metadata": {"n": 123456789012345678901234567890}}', "does not fit in 64 bits"),
    (b'{"id": "a", "vector": [1, 2, 3], "metadata": {"n": -9223372036854775809}}', "does not fit in 64 bits"),
    (b'{"id": "a", "vector": [1, 2, 3], "metadata": {"n": 18446744073709551616}}', "does not fit in 64 bits"),
    (b'[{"id": "a", "vector": [1, 2, 3]}]', "must be a JSON object"),
    (b"", "needs a JSON body"),
])
def test_the_json_parser_is_strict(client, raw, says):
    refused(client, "POST", "/v1/upsert", raw, says=says)


@pytest.mark.parametrize("url, raw", [
    ("/v1/records/seed/ttl", b'{"ttl": ' + b"1" * 400 + b"}"),
    ("/v1/records/seed/ttl", b'{"ttl": 1e400}'),
    ("/v1/records/seed/metadata", b'{"lang": "\\ud800"}'),
])
def test_huge_numbers_and_lone_surrogates_on_put_routes(client, url, raw):
    refused(client, "PUT", url, raw)


@pytest.mark.parametrize("ops", [
    b'[{"op": "set_ttl", "id": "seed", "ttl": ' + b"7" * 400 + b"}]",
    b'[{"op": "upsert", "id": "a", "vector": [1, 2, 3], "ttl": 1e400}]',
    b'[{"op": "delete", "id": "\\ud800"}]',
    b'[{"op": "delete", "id": "a", "id": "b"}]',
])
def test_huge_numbers_surrogates_and_duplicates_inside_a_batch(client, ops):
    refused(client, "POST", "/v1/batch-execute", b'{"operations": ' + ops + b"}")


def test_integers_that_fit_64_bits_are_numbers_for_the_store_to_judge(client):
    """(A longer integer is refused above: the parser would read it as a float and round it.)"""
    error = refused(client, "POST", "/v1/upsert", {"id": "big", "vector": [1, 2, 3], "ttl": 2**63})
    assert "at most 100 years" in error["message"]  # the store's range rule, not a parse failure
    for n in (2**63 - 1, 2**64 - 1, -(2**63), 10**19):
        assert send(client, "POST", "/v1/upsert", {"id": "big", "vector": [1, 2, 3], "metadata": {"n": n}}
                    ).status_code == 200
        assert client.get("/v1/records/big").json()["metadata"] == {"n": n}
    assert send(client, "POST", "/v1/upsert", {"id": "12345678901234567890123", "vector": [1, 2, 3]}).status_code == 200
    error = refused(client, "POST", "/v1/query", {"vector": [1, 2, 3], "k": 2**63 - 1}, type_="InvalidArgumentError")
    assert "k must be between 1 and" in error["message"]


@pytest.mark.parametrize("method, url, body, field", [
    ("POST", "/v1/upsert", {"id": "a", "vectr": [1, 2, 3]}, "vectr"),
    ("POST", "/v1/query", {"vectr": [1, 2, 3]}, "vectr"),
    ("PUT", "/v1/records/seed/ttl", {"tl": 5}, "tl"),
    ("POST", "/v1/batch-execute", {"ops": []}, "ops"),
])
def test_a_misspelt_required_field_is_named_as_sent(client, method, url, body, field):
    """Misspelling a required field makes it both unknown and missing: the error names what the client sent."""
    error = refused(client, method, url, body, field=field)
    assert f"unknown field {field!r}" in error["message"]


def test_a_trailing_slash_is_a_json_404_never_a_redirect(client):
    send(client, "POST", "/v1/upsert", {"id": "victim", "vector": [1, 0, 0]})
    for method, url in (("DELETE", "/v1/records/victim/"), ("POST", "/v1/upsert/"), ("GET", "/v1/namespaces/")):
        r = client.request(method, url, content=b"{}" if method == "POST" else None,
                           headers={"content-type": "application/json", "host": "evil.example"},
                           follow_redirects=False)
        assert r.status_code == 404, (url, r.status_code, r.headers)
        assert "location" not in r.headers
        assert r.json()["error"]["type"]
    assert client.get("/v1/records/victim").status_code == 200


def test_two_content_type_headers_are_refused(client):
    before = dir_digest(client.root)
    for types in ([("content-type", "text/plain"), ("content-type", "application/json")],
                  [("content-type", "application/json"), ("content-type", "text/plain")]):
        r = client.request("POST", "/v1/upsert", content=json.dumps(UPSERT).encode(), headers=types)
        assert r.status_code in (400, 415), r.text
        assert r.json()["error"]["type"]
    assert dir_digest(client.root) == before


def test_a_batch_over_the_operation_limit_is_refused_whole(client):
    ops = [{"op": "upsert", "id": f"r{i}", "vector": [1, 0, 0]} for i in range(vs.config.MAX_BATCH_OPS + 1)]
    refused(client, "POST", "/v1/batch-execute", {"operations": ops}, field="operations", type_="InvalidBatchError")
