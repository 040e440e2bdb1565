"""The HTTP API (SPEC section 8) through FastAPI's test client: routes, error bodies, limits, token, where reads run,
and a real `vecstore-ref serve`. The body models have their own tests (test_http_models.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from http_helpers import ServerThread, free_port, read_to_end  # noqa: E402

import vecstore_ref as vs  # noqa: E402
from vecstore_ref._fs import dir_digest  # noqa: E402
from vecstore_ref.server import create_app  # noqa: E402


@pytest.fixture
def client(tmp_path):
    app = create_app(str(tmp_path / "data"))
    with TestClient(app, raise_server_exceptions=False) as c:
        c.root = str(tmp_path / "data")
        yield c
    app.state.manager.close()


def post(c, url, body, **kw):
    return c.post(url, content=json.dumps(body), headers={"content-type": "application/json"}, **kw)


def test_write_query_and_record_routes(client):
    assert client.get("/healthz").json() == {"ok": True}
    assert post(client, "/v1/upsert", {"id": "a", "vector": [1, 0, 0], "metadata": {"lang": "en"}}).json() == \
        {"ok": True}
    r = post(client, "/v1/batch-execute", {"operations": [
        {"op": "upsert", "id": "b", "vector": [0.9, 0.1, 0], "metadata": {"lang": "de"}},
        {"op": "upsert", "id": "c", "vector": [0, 1, 0], "ttl": 3600},
        {"op": "delete", "id": "nope"},
        {"op": "soft_delete", "id": "c"},
        {"op": "restore", "id": "c"},
        {"op": "upsert", "id": "d", "vector": [1, 0]},
    ]}).json()
    assert r["succeeded"] == 4 and r["failed"] == 2 and [e["index"] for e in r["errors"]] == [2, 5]
    assert [e["type"] for e in r["errors"]] == ["NotFoundError", "DimensionMismatchError"]
    res = post(client, "/v1/query", {"vector": [1, 0, 0], "limit": 2}).json()["results"]
    assert [h["id"] for h in res] == ["a", "b"] and res[0]["metadata"] == {"lang": "en"}
    res = post(client, "/v1/query", {"vector": [1, 0, 0], "k": 5, "filter": "lang = 'de'"}).json()["results"]
    assert [h["id"] for h in res] == ["b"]
    est = post(client, "/v1/query-estimate", {"vector": [1, 0, 0], "limit": 2}).json()
    assert est["valid"] is True and est["plan"] in ("flat", "hnsw")
    exp = post(client, "/v1/query-explain", {"vector": [1, 0, 0], "limit": 2}).json()
    assert exp["neighbors"][0]["id"] == "a"
    assert client.get("/v1/records/a").json()["id"] == "a"
    assert post(client, "/v1/records/a/soft-delete", {}).json() == {"changed": True}
    assert post(client, "/v1/records/a/restore", {}).json() == {"changed": True}
    r = client.put("/v1/records/a/metadata", content=json.dumps({"metadata": {"lang": "fr"}}),
                   headers={"content-type": "application/json"})
    assert r.status_code == 200 and client.get("/v1/records/a").json()["metadata"] == {"lang": "fr"}
    r = client.put("/v1/records/a/ttl", content=json.dumps({"ttl": 100}), headers={"content-type": "application/json"})
    assert r.status_code == 200
    assert client.delete("/v1/records/b").json() == {"ok": True}
    assert post(client, "/v1/expire", {}).json() == {"expired": 0}
    st = client.get("/v1/stats").json()
    assert st["visible"] == 2 and st["dim"] == 3
    c = post(client, "/v1/compact", {"if_needed": False}).json()
    assert c["triggered"] is True and c["removed_count"] == 1
    assert post(client, "/v1/compact", {"if_needed": True}).json()["triggered"] is False
    assert client.get("/openapi.json").status_code == 200 and client.get("/docs").status_code == 200


def test_namespace_and_backup_routes(client):
    assert client.get("/v1/namespaces").json() == {"namespaces": ["default"]}
    r = post(client, "/v1/namespaces", {"name": "img", "dim": 2, "index": "flat", "quotas": {"max_vectors": 2}})
    assert r.status_code == 200
    assert post(client, "/v1/namespaces", {"name": "img"}).status_code == 409
    assert post(client, "/v1/namespaces/img/upsert", {"id": "x", "vector": [1, 2]}).status_code == 200
    assert post(client, "/v1/namespaces/img/upsert", {"id": "y", "vector": [2, 1]}).status_code == 200
    r = post(client, "/v1/namespaces/img/upsert", {"id": "z", "vector": [2, 2]})
    assert r.status_code == 413 and r.json()["error"]["type"] == "QuotaExceededError"
    b = post(client, "/v1/namespaces/img/backups", {"name": "b1"}).json()
    assert b["count"] == 2
    client.delete("/v1/namespaces/img/records/x")
    assert [x["name"] for x in client.get("/v1/namespaces/img/backups").json()["backups"]] == ["b1"]
    assert post(client, "/v1/namespaces/img/backups/b1/restore", {}).status_code == 200
    assert client.get("/v1/namespaces/img/records/x").status_code == 200
    assert client.delete("/v1/namespaces/img/backups/b1").json() == {"ok": True}
    assert client.delete("/v1/namespaces/img").json() == {"ok": True}
    assert client.get("/v1/namespaces/img/stats").status_code == 404
    assert post(client, "/v1/namespaces", {"name": "../x"}).status_code == 400
    assert post(client, "/v1/namespaces", {"namespace": "alias", "dim": 2}).status_code == 200
    assert post(client, "/v1/namespaces/alias/backups", {"backup_name": "b"}).json()["name"] == "b"
    post(client, "/v1/namespaces/alias/upsert", {"id": "r", "vector": [1, 2]})
    r = client.put("/v1/namespaces/alias/records/r/metadata", content=json.dumps({"lang": "en"}),
                   headers={"content-type": "application/json"})
    assert r.status_code == 200 and client.get("/v1/namespaces/alias/records/r").json()["metadata"] == {"lang": "en"}


@pytest.mark.parametrize("raw", [
    b"{not json", b'{"id": "a", "vector": [NaN, 1, 2]}', b'{"id": "a", "vector": [Infinity, 1, 2]}',
    b'{"id": "a", "id": "b", "vector": [1, 2, 3]}', b'[1, 2]', b'"text"', b'\xff\xfe',
    b'{"id": 5, "vector": [1, 2, 3]}', b'{"id": "a", "vector": "abc"}', b'{"id": "a", "vector": [true, 1, 2]}',
    b'{"id": "a"}', b'{"id": "a", "vector": [1, 2, 3], "ttl": -1}', b'{"id": "a", "vector": [1, 2, 3], "ttl": true}',
    b'{"id": "a", "vector": [1, 2, 3], "metadata": {"k": {"nested": 1}}}', b'{"id": "", "vector": [1, 2, 3]}',
    b'{"id": "a", "vector": [1e39, 1, 2]}', b'{"id": "a", "vector": [1, 2, 3], "ttl": ' + b"9" * 400 + b"}",
    b'{"id": "a", "vector": [1, 2, 3], "ttl": 1e400}', b'{"id": "\\ud800", "vector": [1, 2, 3]}',
    b'{"id": "a", "vector": [1, 2, 3], "metdata": {"a": 1}}',
])
def test_bad_upsert_bodies_get_400_with_a_json_error_and_change_nothing(client, raw):
    post(client, "/v1/upsert", {"id": "seed", "vector": [1, 2, 3]})
    before = dir_digest(client.root)
    r = client.post("/v1/upsert", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) <= {"type", "code", "message", "field"} and "code" in err and "Traceback" not in r.text and client.root not in r.text
    assert hasattr(vs, err["type"]) and issubclass(getattr(vs, err["type"]), vs.VecStoreError)  # a public class
    assert dir_digest(client.root) == before


@pytest.mark.parametrize("body", [
    {"vector": [1, 2, 3], "limit": 0}, {"vector": [1, 2, 3], "limit": True}, {"vector": [1, 2, 3], "limit": "5"},
    {"vector": [1, 2], "limit": 3}, {"vector": [1, 2, 3], "filter": "lang = "}, {"vector": [0, 0, 0]},
    {"vector": [1, 2, 3], "ef": -4}, {"vector": [1, 2, 3], "limit": 2, "k": 2}, {"limit": 3},
    {"vector": [1, 2, 3], "top_k": 3}, {"vector": [1, 2, 3], "k": 10**30},
])
def test_bad_queries_get_400(client, body):
    post(client, "/v1/upsert", {"id": "seed", "vector": [1, 2, 3]})
    r = post(client, "/v1/query", body)
    assert r.status_code == 400, r.text
    assert "error" in r.json()


def test_no_server_path_in_error_bodies(client, monkeypatch):
    post(client, "/v1/upsert", {"id": "seed", "vector": [1, 2, 3]})
    mgr = client.app.state.manager
    closed = mgr.get_namespace("default")
    closed.close()  # a closed store's error message names its directory
    monkeypatch.setattr(mgr, "get_namespace", lambda ns: closed)
    r = client.get("/v1/records/seed")
    assert r.status_code >= 400 and client.root not in r.text and "<data>" in r.text


def test_a_handle_closed_behind_the_server_is_looked_up_again(client):
    post(client, "/v1/upsert", {"id": "seed", "vector": [1, 2, 3]})
    client.app.state.manager.get_namespace("default").close()  # as a restore or a delete would
    r = post(client, "/v1/query", {"vector": [1, 2, 3], "k": 1})
    assert r.status_code == 200 and r.json()["results"][0]["id"] == "seed"  # the manager reopened it
    assert post(client, "/v1/upsert", {"id": "more", "vector": [1, 2, 3]}).status_code == 200


def test_not_found_conflict_and_unknown_routes(client):
    r = client.get("/v1/records/missing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "NotFoundError"
    assert client.get("/v1/no-such-route").status_code == 404
    assert "error" in client.get("/v1/no-such-route").json()
    r = client.get("/v1/upsert")
    assert r.status_code == 405 and "POST" in r.headers.get("allow", "")
    assert post(client, "/v1/batch-execute", {"operations": [{"op": "explode", "id": "a"}]}).status_code == 400


def test_content_type_and_size_limits(tmp_path):
    app = create_app(str(tmp_path / "d"), max_body_bytes=1000)
    with TestClient(app) as c:
        r = c.post("/v1/upsert", content=b'{"id": "a", "vector": [1]}', headers={"content-type": "text/plain"})
        assert r.status_code == 415 and "error" in r.json()
        big = json.dumps({"id": "a", "vector": [0.5] * 1000})
        r = c.post("/v1/upsert", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and "error" in r.json()
        r = c.post("/v1/upsert", content=iter([big.encode()]), headers={"content-type": "application/json"})
        assert r.status_code == 413  # chunked, without a length: counted while read
    app.state.manager.close()


def test_bearer_token_on_every_route(tmp_path):
    app = create_app(str(tmp_path / "d"), token="s3cret")
    with TestClient(app) as c:
        assert c.get("/healthz").status_code == 401
        assert c.get("/v1/stats", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/v1/stats", headers={"authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/v1/stats", headers={"authorization": "bearer s3cret"}).status_code == 200  # any case
        for wrong in ("Basic s3cret", "s3cret", "Bearer", "Bearer s3cre", "Bearer s3cret2", "Bearers3cret"):
            assert c.get("/v1/stats", headers={"authorization": wrong}).status_code == 401, wrong
    app.state.manager.close()


def test_serve_command_binds_localhost_and_answers(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "vecstore_ref", "serve", "--data", str(tmp_path / "data"),
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    assert json.loads(r.read()) == {"ok": True}
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/upsert", method="POST",
                                     data=json.dumps({"id": "a", "vector": [1, 2]}).encode(),
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert json.loads(r.read()) == {"ok": True}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert os.path.isdir(tmp_path / "data" / "default")


def _stalled_upsert(port: int) -> socket.socket:
    """A connection that sends 10 bytes of the 100-byte body it announces, then nothing."""
    s = socket.create_connection(("127.0.0.1", port), timeout=120)
    s.sendall(b"POST /v1/upsert HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
              b"content-length: 100\r\n\r\n{\"id\": \"a\"")
    return s


def test_a_stalled_body_does_not_hold_up_other_clients(tmp_path):
    """The wait for a body happens on the event loop, not in a worker: with a stalled upsert open (and a timeout
    that cannot pass during the test), other requests, writes included, are answered."""
    with ServerThread(create_app(str(tmp_path / "d"), body_timeout_s=3600)) as srv:
        stalled = [_stalled_upsert(srv.port) for _ in range(3)]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/healthz", timeout=120) as r:
                assert r.status == 200
            req = urllib.request.Request(f"http://127.0.0.1:{srv.port}/v1/upsert", method="POST",
                                         data=json.dumps({"id": "b", "vector": [1, 2]}).encode(),
                                         headers={"content-type": "application/json"})
            with urllib.request.urlopen(req, timeout=120) as r:
                assert json.loads(r.read()) == {"ok": True}
        finally:
            for s in stalled:
                s.close()


def test_a_stalled_body_gets_408_and_its_connection_closed(tmp_path):
    """However slow the machine, the answer is a whole 408 (read until the server closes), and nothing is written."""
    with ServerThread(create_app(str(tmp_path / "d"), body_timeout_s=0.2)) as srv:
        with _stalled_upsert(srv.port) as s:
            reply = read_to_end(s)
        assert reply.startswith(b"HTTP/1.1 408") and b"connection: close" in reply.lower()
        assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"]["type"] == "RequestTimeout"
        assert len(srv.app.state.manager.get_namespace("default")) == 0


def test_a_body_trickling_in_a_byte_at_a_time_gets_408_at_its_overall_deadline(tmp_path):
    """Each byte comes well within the gap allowed (0.5 s), but the whole body not within 6x that: 408."""
    import threading

    body = json.dumps({"id": "a", "vector": [1, 2], "metadata": {"pad": "x" * 60}}).encode()
    with ServerThread(create_app(str(tmp_path / "d"), body_timeout_s=0.5)) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=120)
        s.sendall(b"POST /v1/upsert HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                  + f"content-length: {len(body)}\r\n\r\n".encode())
        stop = threading.Event()

        def trickle():
            for i in range(len(body)):  # about 10 s for the whole body
                if stop.wait(0.1):
                    return
                try:
                    s.send(body[i:i + 1])
                except OSError:
                    return

        sender = threading.Thread(target=trickle)
        sender.start()
        try:
            reply = read_to_end(s)
        finally:
            stop.set()
            sender.join()
            s.close()
        assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
        assert len(srv.app.state.manager.get_namespace("default")) == 0


class _CountingThreads:
    """Counts the calls the app hands to worker threads."""

    def __init__(self, monkeypatch):
        from starlette.concurrency import run_in_threadpool

        import vecstore_ref.server.app as app_module

        self.calls = 0

        async def counted(fn, *args, **kwargs):
            self.calls += 1
            return await run_in_threadpool(fn, *args, **kwargs)

        monkeypatch.setattr(app_module, "run_in_threadpool", counted)


def _queries_in_threads(tmp_path, monkeypatch, inline_reads, reads_wait_for_io=None, n=4) -> int:
    threads = _CountingThreads(monkeypatch)
    app = create_app(str(tmp_path / "d"), inline_reads=inline_reads)
    with TestClient(app) as c:
        post(c, "/v1/upsert", {"id": "a", "vector": [1, 2]})
        store = app.state.manager.get_namespace("default")
        if reads_wait_for_io is not None:
            monkeypatch.setattr(store, "reads_wait_for_io", reads_wait_for_io, raising=False)
        before = threads.calls
        for _ in range(n):
            assert post(c, "/v1/query", {"vector": [1, 2], "k": 1}).json()["results"][0]["id"] == "a"
        assert c.get("/v1/records/a").status_code == 200
        handed_off = threads.calls - before
    app.state.manager.close()
    return handed_off


def test_reads_go_to_a_worker_thread_when_they_may_wait_for_io(tmp_path, monkeypatch):
    assert _queries_in_threads(tmp_path, monkeypatch, None, reads_wait_for_io=True) == 5
    assert _queries_in_threads(tmp_path / "2", monkeypatch, False) == 5  # or when told to


def test_reads_run_on_the_event_loop_when_the_store_says_they_never_wait_for_io(tmp_path, monkeypatch):
    assert vs.VecStore.reads_wait_for_io is False  # the store's reads take no lock held across I/O
    # the first read of the handle runs in a thread (kernels load there), the others inline
    assert _queries_in_threads(tmp_path, monkeypatch, None) == 1
    assert _queries_in_threads(tmp_path / "2", monkeypatch, True, reads_wait_for_io=True) == 1


def test_head_answers_every_get_route_without_a_body(client):
    post(client, "/v1/upsert", {"id": "a", "vector": [1, 2]})
    for url in ("/healthz", "/v1/stats", "/v1/records/a", "/v1/namespaces", "/v1/records/missing"):
        got, head = client.get(url), client.head(url)
        assert head.status_code == got.status_code and head.content == b""
        assert head.headers["content-length"] == str(len(got.content))
    r = client.post("/v1/stats")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
    assert client.head("/v1/upsert").status_code == 405


def test_a_websocket_handshake_is_refused_with_a_json_403_token_or_not(tmp_path):
    from starlette.testclient import WebSocketDenialResponse

    client = TestClient(create_app(str(tmp_path / "d"), token="s3cret"))
    for headers in ({}, {"Authorization": "Bearer s3cret"}):
        with pytest.raises(WebSocketDenialResponse) as denied:
            with client.websocket_connect("/v1/query", headers=headers):
                pass
        assert denied.value.status_code == 403 and denied.value.json()["error"]["type"] == "Forbidden"


def test_a_body_on_a_get_route_and_any_query_parameter_are_refused_never_ignored(client):
    """No GET route declares a body and no route a query parameter: one sent anyway is a 400 naming it."""
    assert post(client, "/v1/upsert", {"id": "x", "vector": [1, 0, 0]}).status_code == 200
    assert post(client, "/v1/records/x/soft-delete", {}).status_code == 200
    before = dir_digest(client.root)
    for url, body in [("/v1/stats", b'{"verbse": 1}'), ("/v1/records/x", b'{"include_deleted": true}'),
                      ("/v1/stats", b"{not json"), ("/v1/namespaces", b"hello")]:
        r = client.request("GET", url, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400, (url, r.text)
        assert r.json()["error"]["message"] == "a GET request takes no body"
    for url in ("/v1/records/x?include_deleted=true", "/v1/stats?verbose=1", "/v1/namespaces/default/stats?a"):
        r = client.get(url)
        assert r.status_code == 400, (url, r.text)
        err = r.json()["error"]
        assert err["type"] == "InvalidArgumentError" and err["field"] == url.split("?")[1].split("=")[0]
    r = post(client, "/v1/query?k=1", {"vector": [1, 0, 0]})
    assert r.status_code == 400 and r.json()["error"]["field"] == "k"
    assert r.headers["connection"] == "close"  # its body was not read: the connection cannot carry another request
    assert dir_digest(client.root) == before
    assert client.get("/v1/stats").status_code == 200  # without a body, and with an empty one
    assert client.request("GET", "/v1/stats", headers={"content-length": "0"}).status_code == 200
    assert client.get("/v1/records/x").status_code == 404  # soft-deleted: not visible


def test_no_spelling_of_a_path_lets_a_query_parameter_through_and_bodies_are_plain_utf8_json(client):
    assert post(client, "/v1/upsert", {"id": "x", "vector": [1, 0, 0]}).status_code == 200
    before = dir_digest(client.root)
    for method, url in (("POST", "//v1/query?k=3"), ("GET", "///v1/records/x?include_deleted=true"),
                        ("GET", "/healthz?probe=1"), ("GET", "/openapi.json?x")):
        body = b'{"vector": [1, 0, 0], "k": 1}' if method == "POST" else None
        r = client.request(method, "http://testserver" + url, content=body,
                           headers={"content-type": "application/json"} if body else {})
        assert r.status_code == 400, (url, r.text)
        assert r.json()["error"]["code"] == "invalid_argument"
    assert client.get("/docs?tab=1").status_code == 200  # the page a browser may give a query string
    body = b'{"id": "y", "vector": [1, 0, 0]}'
    for headers in ({"content-type": "application/json", "content-encoding": "gzip"},
                    {"content-type": "application/json; charset=latin-1"},
                    {"content-type": "application/json; charset=utf-16"}):
        r = client.post("/v1/upsert", content=body, headers=headers)
        assert r.status_code == 415, (headers, r.text)
        assert r.json()["error"]["type"] == "UnsupportedMediaType"
    two = [("content-type", "application/json"), ("content-encoding", "gzip"), ("content-encoding", "identity")]
    assert client.post("/v1/upsert", content=body, headers=two).status_code == 415  # every header counts
    assert dir_digest(client.root) == before
    for ctype in ("application/json; charset=utf-8", 'application/json; charset="UTF-8"', "Application/JSON"):
        assert client.post("/v1/upsert", content=body, headers={"content-type": ctype}).status_code == 200
    assert client.post("/v1/upsert", content=body, headers={"content-type": "application/json",
                                                            "content-encoding": "identity"}).status_code == 200


def test_error_bodies_carry_the_library_errors_code(client):
    """`code` is the library class's stable code, as `VecStoreError.to_dict()` gives it; HTTP failures get one too."""
    r = client.get("/v1/records/nope")
    assert r.status_code == 404 and r.json() == vs.NotFoundError("no record with id 'nope'").to_dict()
    r = post(client, "/v1/upsert", {"id": "a", "vector": [1, True]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_vector_type"
    assert client.put("/v1/stats").json()["error"]["code"] == "method_not_allowed"
    r = client.post("/v1/upsert", content=b"{}", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
