"""A DELETE is checked like any other body: none or `{}`, else a 400 naming the field, and nothing is deleted
(a field the client sent is never ignored, least of all on a delete)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from vecstore_ref._fs import dir_digest  # noqa: E402
from vecstore_ref.server import create_app  # noqa: E402

JSON = {"content-type": "application/json"}


@pytest.fixture
def client(tmp_path):
    app = create_app(str(tmp_path / "data"))
    with TestClient(app, raise_server_exceptions=False) as c:
        c.root = str(tmp_path / "data")
        assert c.post("/v1/namespaces", content=json.dumps({"name": "ns"}), headers=JSON).status_code == 200
        assert c.post("/v1/namespaces/ns/upsert", content=json.dumps({"id": "a", "vector": [1, 2]}),
                      headers=JSON).status_code == 200
        assert c.post("/v1/namespaces/ns/backups", content=json.dumps({"name": "b"}),
                      headers=JSON).status_code == 200
        yield c
    app.state.manager.close()


URLS = ["/v1/namespaces/ns/records/a", "/v1/namespaces/ns/backups/b", "/v1/namespaces/ns"]


@pytest.mark.parametrize("url", URLS)
def test_a_delete_with_an_undeclared_field_is_a_400_and_deletes_nothing(client, url):
    before = dir_digest(client.root)
    r = client.request("DELETE", url, content=json.dumps({"keep_backups": True}), headers=JSON)
    assert r.status_code == 400 and r.json()["error"]["field"] == "keep_backups"
    assert dir_digest(client.root) == before


@pytest.mark.parametrize("url", URLS)
def test_a_delete_with_a_body_that_is_not_json_is_a_415(client, url):
    r = client.request("DELETE", url, content=b"x", headers={"content-type": "text/plain"})
    assert r.status_code == 415


@pytest.mark.parametrize("body", [None, b"{}"])
def test_a_delete_with_no_body_or_an_empty_object_deletes(client, body):
    for url in URLS:
        r = client.request("DELETE", url, content=body, headers=JSON if body else {})
        assert r.status_code == 200, (url, r.text)
