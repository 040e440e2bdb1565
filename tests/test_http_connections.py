"""Connections the HTTP parser sees before the app: a request head that never completes is closed with a 408
(slowloris), and a request that is not valid HTTP gets a JSON 400, not uvicorn's text/plain one."""

from __future__ import annotations

import json
import socket
import time

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from http_helpers import ServerThread, free_port, read_to_end  # noqa: E402

from vecstore_ref.server import create_app  # noqa: E402
from vecstore_ref.server.protocol import protocol_class  # noqa: E402


def _json_error(reply: bytes, status: int) -> dict:
    head, body = reply.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 %d" % status), reply
    assert b"content-type: application/json" in head.lower() and b"connection: close" in head.lower()
    return json.loads(body)["error"]


@pytest.fixture(params=["httptools", "h11"])
def server(request, tmp_path):
    if request.param == "httptools":
        pytest.importorskip("httptools")
    with ServerThread(create_app(str(tmp_path / "d")), http=protocol_class(request.param, 0.5)) as srv:
        yield srv


@pytest.mark.parametrize("sent", [b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\n"], ids=["idle", "partial-head"])
def test_a_request_head_that_never_completes_gets_408_and_is_closed(server, sent):
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(sent)
        t0 = time.monotonic()
        reply = read_to_end(s)  # the server closes the connection
        assert time.monotonic() - t0 < 20
    assert _json_error(reply, 408)["type"] == "RequestTimeout"


def test_a_slow_head_after_a_kept_alive_request_is_closed_too(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        t0 = time.monotonic()
        closed = False
        for byte in b"GET /healthz HTTP/1.1\r\nHost:":  # a byte every 0.2 s, 6 s in all
            try:
                s.sendall(bytes([byte]))
            except OSError:  # the server closed the connection
                closed = True
                break
            time.sleep(0.2)
        try:
            reply = read_to_end(s)
            closed = True
        except OSError:
            reply = b""
    assert closed and time.monotonic() - t0 < 5
    if reply:  # the 408 may be lost to a reset when the client was still sending
        assert _json_error(reply, 408)["type"] == "RequestTimeout"


def test_a_request_in_time_is_answered_and_kept_alive(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        for _ in range(3):
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.3)
            assert s.recv(65536).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("head", [b"Content-Length: -1", b"Content-Length: abc", b"Content-Length: 5\r\nContent-Length: 7"])
def test_a_request_the_parser_refuses_gets_a_json_400(server, head):
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(b"POST /v1/upsert HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + head +
                  b"\r\n\r\n{}")
        reply = read_to_end(s)
    error = _json_error(reply, 400)
    assert error["type"] == "InvalidInputError" and "Traceback" not in error["message"]


def test_the_serve_command_closes_an_idle_connection_and_answers_parser_errors_in_json(tmp_path):
    """The same through `vecstore-ref serve` itself, with its default head deadline (10 s)."""
    import os
    import subprocess
    import sys
    import urllib.request

    from vecstore_ref.server.protocol import HEAD_TIMEOUT_S

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "vecstore_ref", "serve", "--data", str(tmp_path / "data"),
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"POST /v1/upsert HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n")
            assert _json_error(read_to_end(s), 400)["type"] == "InvalidInputError"
        with socket.create_connection(("127.0.0.1", port), timeout=HEAD_TIMEOUT_S + 20) as s:
            t0 = time.monotonic()
            reply = read_to_end(s)
            assert time.monotonic() - t0 < HEAD_TIMEOUT_S + 15
        assert _json_error(reply, 408)["type"] == "RequestTimeout"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_request_followed_by_bytes_that_are_not_http_gets_its_answer_first(server):
    """Sent in one write: the whole request reaches the app before the parser fails on what follows. The client
    must see that request's own answer (it was applied), then the 400, then the close."""
    body = b'{"id": "first", "vector": [1, 0, 0]}'
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(b"POST /v1/upsert HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body + b"GARBAGE\r\n\r\n")
        reply = read_to_end(s)
    assert reply.startswith(b"HTTP/1.1 200"), reply
    second = reply[reply.index(b"HTTP/1.1", 8):]
    assert _json_error(second, 400)["type"] == "InvalidInputError"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(b"GET /v1/records/first HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_to_end(s).startswith(b"HTTP/1.1 200")


def test_a_declared_body_over_the_limit_gets_413_and_the_connection_closes(server):
    """Answered from the head alone, and closed: the server does not read in the rest only to discard it."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(b"POST /v1/upsert HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n{" % (64 * 2**20))
        reply = read_to_end(s)  # returns once the server closes; the client never sent the body
    assert _json_error(reply, 413)["type"] == "PayloadTooLarge"


def test_a_malformed_chunk_gets_its_400_at_once(server):
    """The parser fails inside the request's own body: nothing waits for the rest of it (no 408 after 10 s)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(b"POST /v1/upsert HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n5\r\n{\"id\"\r\nZZZ\r\n")
        t0 = time.monotonic()
        reply = read_to_end(s)
        assert time.monotonic() - t0 < 5
    assert _json_error(reply, 400)["type"] == "InvalidInputError"


def test_a_pipelined_request_with_a_malformed_chunk_does_not_hide_the_answer_before_it(server):
    """The whole first request is applied; the second, queued behind it, breaks the parser in its first chunk.
    The client gets the first request's 200, then the 400; the second is never applied."""
    body = b'{"id": "first", "vector": [1, 0, 0]}'
    second = (b"POST /v1/upsert HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Transfer-Encoding: chunked\r\n\r\nzz\r\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(b"POST /v1/upsert HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body + second)
        reply = read_to_end(s)
    assert reply.startswith(b"HTTP/1.1 200"), reply
    assert _json_error(reply[reply.index(b"HTTP/1.1", 8):], 400)["type"] == "InvalidInputError"


def test_a_request_head_over_the_limit_gets_431_and_is_closed(server):
    from vecstore_ref.server.protocol import MAX_HEAD_BYTES

    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (MAX_HEAD_BYTES + 1024))
            reply = read_to_end(s)
        except ConnectionResetError:  # refused and closed with bytes unread: the answer may be lost to a reset
            reply = b""
    if reply.startswith(b"HTTP/1.1 400"):  # h11 has a head limit of its own (its 400 is turned into JSON)
        assert _json_error(reply, 400)["type"] == "InvalidInputError"
    elif reply:
        assert _json_error(reply, 431)["type"] == "RequestHeaderFieldsTooLarge"


@pytest.mark.parametrize("pieces", [1, 3])
def test_a_head_over_the_limit_is_refused_even_when_its_last_piece_completes_it(server, pieces):
    from vecstore_ref.server.protocol import MAX_HEAD_BYTES

    head = (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (MAX_HEAD_BYTES + 8 * 1024)
            + b"\r\nConnection: close\r\n\r\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        step = len(head) // pieces + 1
        try:
            for i in range(0, len(head), step):
                s.sendall(head[i:i + step])
        except OSError:  # refused and closed before the last piece went out
            pass
        try:
            reply = read_to_end(s)
        except ConnectionResetError:  # the close came while bytes were unread: the answer may be lost to a reset
            reply = b""
    if reply.startswith(b"HTTP/1.1 400"):  # h11's own head limit
        assert _json_error(reply, 400)["type"] == "InvalidInputError"
    elif reply:
        assert _json_error(reply, 431)["type"] == "RequestHeaderFieldsTooLarge"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:  # just under the limit: answered
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: "
                  + b"a" * (MAX_HEAD_BYTES - 200) + b"\r\n\r\n")
        assert read_to_end(s).startswith(b"HTTP/1.1 200")


def test_more_than_a_hundred_header_lines_get_431(server):
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(101))
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        reply = read_to_end(s)
    assert _json_error(reply, 431)["type"] == "RequestHeaderFieldsTooLarge"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  + b"".join(b"X-H%d: v\r\n" % i for i in range(98)) + b"\r\n")  # 100 lines in all
        assert read_to_end(s).startswith(b"HTTP/1.1 200")


def test_big_bodies_on_a_kept_alive_connection_are_not_counted_as_a_request_head(server):
    """The bound on the head must not count body bytes: a 1.5 MB body sent with its head, twice on one connection
    (as http.client sends them), is answered 200 each time."""
    import http.client

    rows = [{"op": "upsert", "id": f"r{i}", "vector": [float(i % 7), 1.0, 2.0]} for i in range(30_000)]
    body = json.dumps({"operations": rows}).encode()
    assert len(body) > 10 * 96 * 1024
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        for _ in range(2):
            conn.request("POST", "/v1/batch-execute", body=body, headers={"content-type": "application/json"})
            r = conn.getresponse()
            assert (r.status, json.loads(r.read())["failed"]) == (200, 0)
    finally:
        conn.close()
