"""Path parameters of the HTTP API are split before they are percent-decoded: a record id may hold a `/`."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from vecstore_ref._fs import dir_digest  # noqa: E402
from vecstore_ref.server import create_app  # noqa: E402


@pytest.fixture
def client(tmp_path):
    app = create_app(str(tmp_path / "data"))
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as c:
        c.root = str(tmp_path / "data")
        yield c
    app.state.manager.close()


def _upsert(c, id_, vector):
    r = c.post("/v1/upsert", content=json.dumps({"id": id_, "vector": vector}),
               headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text


def test_an_id_with_a_slash_is_reached_through_percent_encoding(client):
    _upsert(client, "a/b", [1, 0])
    r = client.get("/v1/records/a%2Fb")
    assert r.status_code == 200 and r.json()["id"] == "a/b"
    assert client.post("/v1/records/a%2Fb/soft-delete").json() == {"changed": True}
    assert client.post("/v1/records/a%2Fb/restore").json() == {"changed": True}
    assert client.delete("/v1/records/a%2Fb").json() == {"ok": True}
    assert client.get("/v1/records/a%2Fb").status_code == 404


def test_an_id_ending_in_a_slash_is_not_redirected_to_another_record(client):
    _upsert(client, "s", [1, 0])
    _upsert(client, "s/", [0, 1])
    r = client.get("/v1/records/s%2F")
    assert r.status_code == 200 and r.json()["id"] == "s/"
    assert client.delete("/v1/records/s%2F").json() == {"ok": True}
    assert client.get("/v1/records/s").status_code == 200  # the other record is untouched
    assert client.get("/v1/records/s%2F").status_code == 404


def test_a_path_that_is_not_utf8_is_a_400_and_changes_nothing(client):
    _upsert(client, "\ufffd", [1, 0])  # what a lenient decoding of %ff would find
    before = dir_digest(client.root)
    for method in ("GET", "DELETE"):
        r = client.request(method, "/v1/records/%ff")
        assert r.status_code == 400 and r.json()["error"]["type"] == "InvalidArgumentError"
    assert dir_digest(client.root) == before


@pytest.mark.parametrize(("path", "allow"), [
    ("/v1/records/x", "DELETE, GET, HEAD"),
    ("/v1/namespaces/default/records/x", "DELETE, GET, HEAD"),
    ("/v1/namespaces", "GET, HEAD, POST"),
    ("/v1/namespaces/default/backups", "GET, HEAD, POST"),
    ("/v1/upsert", "POST"),
])
def test_a_405_lists_every_method_of_the_path(client, path, allow):
    for method in ("PATCH", "OPTIONS"):
        r = client.request(method, path)
        assert r.status_code == 405 and r.headers["allow"] == allow
        assert r.json()["error"]["type"] == "HTTPError"


def test_an_unknown_docs_asset_is_a_json_404(client):
    pytest.importorskip("fastapi_offline")
    assert client.get("/docs/assets/swagger-ui.css").status_code == 200
    r = client.get("/docs/assets/nope.js")
    assert r.status_code == 404 and r.json()["error"]["type"] == "HTTPError"


@pytest.mark.parametrize("path", ["/docs", "/docs/assets/swagger-ui.css", "/openapi.json", "/v1/namespaces"])
def test_head_answers_every_page_as_get_does_without_a_body(client, path):
    if path.startswith("/docs/assets"):
        pytest.importorskip("fastapi_offline")
    got, head = client.get(path), client.head(path)
    assert got.status_code == head.status_code == 200
    assert head.content == b"" and head.headers["content-type"] == got.headers["content-type"]
    r = client.post("/docs")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("method", ["TRACE", "OPTIONS"])
def test_a_method_no_route_takes_is_a_405_even_with_a_body(client, method):
    r = client.request(method, "/v1/upsert", content=b'{"id": "x"}', headers={"content-type": "application/json"})
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert r.json()["error"]["code"] == "method_not_allowed"
