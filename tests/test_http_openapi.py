"""`/openapi.json` documents every route: its body (where it takes one), its 200 answer, and the error shape of
every error answer; and what the routes answer matches what the schema says."""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("orjson")

from fastapi.testclient import TestClient  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from vecstore_ref.server import (
    create_app,  # noqa: E402
    models,  # noqa: E402
)

# The routes that read a body (method, path after the namespace prefix); the others take none.
BODY_ROUTES = {("post", "/upsert"), ("post", "/batch-execute"), ("post", "/query"), ("post", "/query-estimate"),
               ("post", "/query-explain"), ("post", "/compact"), ("put", "/records/{id}/metadata"),
               ("put", "/records/{id}/ttl"), ("post", "/records/{id}/soft-delete"), ("post", "/records/{id}/restore"),
               ("post", "/expire"), ("post", "/namespaces"), ("post", "/namespaces/{ns}/backups"),
               ("post", "/namespaces/{ns}/backups/{name}/restore"),
               # a DELETE takes none or {} (a field it does not declare is a 400, never ignored)
               ("delete", "/records/{id}"), ("delete", "/namespaces/{ns}"), ("delete", "/namespaces/{ns}/backups/{name}")}
REQUIRED_BODY = {("post", "/upsert"), ("post", "/batch-execute"), ("post", "/query"), ("post", "/query-estimate"),
                 ("post", "/query-explain"), ("put", "/records/{id}/metadata"), ("put", "/records/{id}/ttl"),
                 ("post", "/namespaces"), ("post", "/namespaces/{ns}/backups")}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    app = create_app(str(tmp_path_factory.mktemp("openapi") / "data"))
    yield app
    app.state.manager.close()


@pytest.fixture(scope="module")
def schema(app):
    return json.loads(json.dumps(app.openapi()))  # what /openapi.json serves


def _tail(path: str) -> str:
    return re.sub(r"^/v1(/namespaces/\{ns\}(?=/(?!backups)))?", "", path)


def _resolve(schema: dict, ref: str) -> dict:
    assert ref.startswith("#/components/schemas/"), ref
    return schema["components"]["schemas"][ref.rsplit("/", 1)[1]]


def _refs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


def test_every_route_documents_its_body_its_answer_and_its_errors(schema):
    operations = [(method, path, op) for path, item in schema["paths"].items() for method, op in item.items()]
    assert len(operations) >= 32
    for method, path, op in operations:
        where = f"{method.upper()} {path}"
        ok = op["responses"]["200"]["content"]["application/json"]["schema"]
        assert "$ref" in ok and _resolve(schema, ok["$ref"])["properties"], where  # not the empty schema {}
        errors = {s: r for s, r in op["responses"].items() if s[0] == "4"}
        assert "400" in errors or path == "/healthz", where
        assert "401" in errors, where
        for r in errors.values():
            assert r["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}, where
        assert "422" not in op["responses"], where  # bad input is a 400 here
        key = (method, _tail(path))
        if key in BODY_ROUTES:
            body = op["requestBody"]
            assert body["required"] is (key in REQUIRED_BODY), where
            model = _resolve(schema, body["content"]["application/json"]["schema"]["$ref"])
            for form in model.get("anyOf", [model]):  # the metadata PUT takes two forms
                assert form["type"] == "object", where
                assert form.get("additionalProperties") is False or key == ("put", "/records/{id}/metadata"), where
        else:
            assert "requestBody" not in op, where
        for name in re.findall(r"\{(\w+)\}", path):
            assert any(p["name"] == name and p["in"] == "path" for p in op.get("parameters", [])), where


def test_every_reference_resolves_and_the_error_shape_is_documented(schema):
    for ref in set(_refs(schema)):
        _resolve(schema, ref)
    error = schema["components"]["schemas"]["ErrorDetail"]
    assert {"type", "message", "field"} <= set(error["properties"]) and set(error["required"]) == {"type", "code", "message"}
    assert "HTTPValidationError" not in schema["components"]["schemas"]


def test_batch_ops_are_a_tagged_union_of_strict_models(schema):
    batch = schema["components"]["schemas"]["BatchBody"]
    items = batch["properties"]["operations"]["items"]
    assert items["discriminator"]["propertyName"] == "op"
    assert set(items["discriminator"]["mapping"]) == {"upsert", "delete", "soft_delete", "restore", "update_metadata",
                                                      "set_ttl"}
    for ref in items["discriminator"]["mapping"].values():
        assert _resolve(schema, ref)["additionalProperties"] is False


def _call(c, method, url, body=None):
    kw = {} if body is None else {"content": json.dumps(body), "headers": {"content-type": "application/json"}}
    r = c.request(method, url, **kw)
    assert r.status_code == 200, (method, url, r.text)
    return r.json()


def test_openapi_json_is_served(app, schema):
    assert TestClient(app).get("/openapi.json").json() == schema  # (no lifespan: the app stays open)


def test_the_answers_match_their_documented_models(app, schema):
    """Every route called once; each 200 body validates against the model the schema names (no field missing,
    none undeclared)."""
    seen = set()
    with TestClient(app) as c:
        def check(method, url, template, body=None):
            data = _call(c, method, url, body)
            op = schema["paths"][template][method.lower()]
            name = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
            model = getattr(models, name)
            try:
                model.model_validate(data)
            except ValidationError as exc:  # pragma: no cover - the failure message is the point
                raise AssertionError(f"{method} {template}: {exc}") from None
            declared = set(model.model_fields)
            assert declared <= set(data), (template, declared - set(data))
            if model.model_config.get("extra") != "allow":
                assert set(data) <= declared, (template, set(data) - declared)
            seen.add((method.lower(), template))

        ns = "/v1/namespaces/{ns}"
        check("POST", "/v1/namespaces", "/v1/namespaces", {"name": "docs", "dim": 3, "index": "flat"})
        check("GET", "/v1/namespaces", "/v1/namespaces")
        for prefix, template in (("/v1", "/v1"), ("/v1/namespaces/docs", ns)):
            check("POST", f"{prefix}/upsert", f"{template}/upsert", {"id": "a", "vector": [1, 0, 0],
                                                                     "metadata": {"lang": "en"}})
            check("POST", f"{prefix}/batch-execute", f"{template}/batch-execute", {"operations": [
                {"op": "upsert", "id": "b", "vector": [0, 1, 0], "ttl": 60}, {"op": "delete", "id": "nope"}]})
            check("POST", f"{prefix}/query", f"{template}/query", {"vector": [1, 0, 0], "k": 2})
            check("POST", f"{prefix}/query-estimate", f"{template}/query-estimate", {"vector": [1, 0, 0]})
            check("POST", f"{prefix}/query-explain", f"{template}/query-explain",
                  {"vector": [1, 0, 0], "filter": "lang = 'en'"})
            check("GET", f"{prefix}/records/a", f"{template}/records/{{id}}")
            check("POST", f"{prefix}/records/a/soft-delete", f"{template}/records/{{id}}/soft-delete")
            check("POST", f"{prefix}/records/a/restore", f"{template}/records/{{id}}/restore", {})
            check("PUT", f"{prefix}/records/a/metadata", f"{template}/records/{{id}}/metadata", {"metadata": None})
            check("PUT", f"{prefix}/records/a/ttl", f"{template}/records/{{id}}/ttl", {"ttl": 60})
            check("POST", f"{prefix}/expire", f"{template}/expire")
            check("GET", f"{prefix}/stats", f"{template}/stats")
            check("DELETE", f"{prefix}/records/b", f"{template}/records/{{id}}")
            check("POST", f"{prefix}/compact", f"{template}/compact", {"if_needed": False})
        check("POST", "/v1/namespaces/docs/backups", f"{ns}/backups", {"name": "b1"})
        check("GET", "/v1/namespaces/docs/backups", f"{ns}/backups")
        check("POST", "/v1/namespaces/docs/backups/b1/restore", f"{ns}/backups/{{name}}/restore")
        check("DELETE", "/v1/namespaces/docs/backups/b1", f"{ns}/backups/{{name}}")
        check("DELETE", "/v1/namespaces/docs", f"{ns}")
        check("GET", "/healthz", "/healthz")
    documented = {(method, path) for path, item in schema["paths"].items() for method in item}
    assert documented == seen, documented ^ seen


def test_batch_operations_document_metadata_as_the_store_judges_it_per_operation(tmp_path):
    """Inside a batch, metadata the store refuses fails that operation alone (200, in `errors`): the schema there
    must not promise a 400 for it (as /v1/upsert's does), or clients generated from it refuse valid batches."""
    from fastapi.testclient import TestClient

    from vecstore_ref.server import create_app

    client = TestClient(create_app(str(tmp_path / "d")))
    components = client.get("/openapi.json").json()["components"]["schemas"]
    for name in ("UpsertOp", "UpdateMetadataOp"):
        shown = components[name]["properties"]["metadata"]["anyOf"][0]
        assert shown["type"] == "object" and "additionalProperties" not in shown, shown
    assert "additionalProperties" in components["UpsertBody"]["properties"]["metadata"]["anyOf"][0]
    r = client.post("/v1/batch-execute", json={"operations": [
        {"op": "upsert", "id": "a", "vector": [1, 0], "metadata": {"x": {"nested": 1}}},
        {"op": "upsert", "id": "b", "vector": [1, 0]}]})
    assert r.status_code == 200 and r.json()["succeeded"] == 1 and r.json()["errors"][0]["index"] == 0


def test_the_schema_states_the_value_rules_the_server_applies(tmp_path):
    """The rules live in the store, and the schema says what they are: a value at a stated bound is accepted, one
    past it refused (so a client generated from the schema, or a fuzzer, knows what a valid request is)."""
    app = create_app(str(tmp_path / "data"))
    schemas = app.openapi()["components"]["schemas"]
    query = schemas["QueryBody"]["properties"]
    assert (query["k"]["minimum"], query["k"]["maximum"]) == (1, 10_000)
    assert query["ef"]["minimum"] == 1 and schemas["UpsertBody"]["properties"]["ttl"]["exclusiveMinimum"] == 0
    pattern = schemas["CreateNamespaceBody"]["properties"]["name"]["pattern"]
    assert re.fullmatch(pattern[1:-1], "images") and not re.fullmatch(pattern[1:-1], ".hidden")
    with TestClient(app) as c:
        assert c.post("/v1/upsert", json={"id": "a", "vector": [1.0, 0.0]}).status_code == 200
        assert c.post("/v1/query", json={"vector": [1.0, 0.0], "k": 10_000}).status_code == 200
        assert c.post("/v1/query", json={"vector": [1.0, 0.0], "k": 10_001}).status_code == 400
        assert c.post("/v1/query", json={"vector": [1.0, 0.0], "k": 0}).status_code == 400
        assert c.post("/v1/namespaces", json={"name": ".hidden"}).status_code == 400
        assert c.post("/v1/upsert", json={"id": "b", "vector": [1.0, 0.0], "ttl": 0}).status_code == 400
    app.state.manager.close()
