"""The checks every request passes before routing: bearer token, body size, body timeout, content type.

A plain ASGI middleware, in front of FastAPI. It reads the body itself (so it can refuse one over the limit with 413
before reading it, when the declared length says so, or as soon as what arrives passes the limit) and keeps it in
``scope["state"]["raw_body"]``, where the routes find it; nothing reads it twice. A client that stops sending a body
it announced gets 408 and its connection closed when no byte has come for ``body_timeout_s``, without holding up
anyone else: the wait is on the event loop, not in a worker thread.
"""

from __future__ import annotations

import asyncio
import hmac
import sys
from urllib.parse import parse_qsl

_WITH_BODY = frozenset(("POST", "PUT", "PATCH", "DELETE"))  # a DELETE body is refused unless empty or {}
DOCS_PREFIX = "/docs"  # the one page that may be given a query string (a browser's); every other route refuses one


def _takes_a_query_string(path: str) -> bool:
    """Only the docs page: every route of the API declares all of its arguments (path and body), and so do
    `/healthz` and `/openapi.json`. Leading slashes are the router's to ignore (``//v1/query`` is ``/v1/query``)."""
    path = "/" + path.lstrip("/")
    return path == DOCS_PREFIX or path.startswith(DOCS_PREFIX + "/")


def _unsupported_body(headers: dict, encodings: list[bytes]) -> str | None:
    """Why a body cannot be read as the API's JSON, or None: another media type, a charset other than UTF-8, or
    a Content-Encoding (a compressed body would be parsed as if it were plain)."""
    media, _, params = headers.get(b"content-type", b"").partition(b";")
    if media.strip().lower() != b"application/json":
        return "the body must be application/json"
    for param in params.split(b";"):
        key, _, value = param.partition(b"=")
        if key.strip().lower() == b"charset" and value.strip().strip(b'"').lower() not in (b"utf-8", b"utf8"):
            return "the body must be UTF-8 JSON (charset=utf-8, or none)"
    for encoding in encodings:  # every Content-Encoding header, not only the last
        encoding = encoding.strip().lower()
        if encoding not in (b"", b"identity"):
            return f"Content-Encoding {encoding.decode('latin-1')!r} is not accepted: send the body uncompressed"
    return None

if sys.version_info >= (3, 11):
    async def _receive_within(receive, seconds: float):
        async with asyncio.timeout(seconds):  # a timer, not a task per message as wait_for makes
            return await receive()
else:  # pragma: no cover - Python 3.10
    async def _receive_within(receive, seconds: float):
        return await asyncio.wait_for(receive(), seconds)


MAX_HEADERS = 100  # header lines per request, as Python's http.client allows; more is a 431
BODY_DEADLINE_FACTOR = 6  # a whole body must arrive within 6 x body_timeout_s (60 s by default) of its head


async def _refuse_websocket(scope, receive, send) -> None:
    """Deny a WebSocket handshake: with a JSON 403 where the server can send one (the ASGI "websocket.http.response"
    extension), else by closing (the server then answers 403). ``vecstore-ref serve`` runs uvicorn with
    ``ws="none"``, so there an upgrade request is an ordinary HTTP request and never reaches this."""
    await receive()  # websocket.connect
    if "websocket.http.response" in scope.get("extensions", {}):
        body = b'{"error":{"type":"Forbidden","code":"forbidden","message":"this server does not speak WebSocket"}}'
        await send({"type": "websocket.http.response.start", "status": 403,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})


def _token_matches(header: bytes, token: bytes) -> bool:
    """Whether an Authorization header is ``Bearer <token>``: the scheme in any case (RFC 7235), the token exact,
    compared in constant time."""
    scheme, _, given = header.partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(given.lstrip(b" "), token)


class Guard:
    """ASGI middleware: token (401); a query string anywhere but the docs page (400: no route takes one); a body
    on GET or HEAD (400); then for POST/PUT/PATCH/DELETE the body's length (400 if malformed, 413 if over
    ``max_body_bytes``), its arrival (408 after ``body_timeout_s`` of silence) and its type (415 unless UTF-8
    JSON without a Content-Encoding).

    ``error(status, type, message, headers)`` builds the JSON error response, as the app's handlers do.
    """

    def __init__(self, app, *, token: str | None, max_body_bytes: int, body_timeout_s: float, error):
        self.app = app
        self.expected = None if token is None else token.encode()
        self.limit = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.error = error

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":  # no route speaks WebSocket: refused before any route, token or not
            return await _refuse_websocket(scope, receive, send)
        if scope["type"] != "http":  # lifespan
            return await self.app(scope, receive, send)
        if len(scope["headers"]) > MAX_HEADERS:
            return await self.error(431, "RequestHeaderFieldsTooLarge", f"more than {MAX_HEADERS} header lines",
                                    {"connection": "close"})(scope, receive, send)
        headers = dict(scope["headers"])
        if self.expected is not None and not _token_matches(headers.get(b"authorization", b""), self.expected):
            return await self.error(401, "Unauthorized", "a valid bearer token is required")(scope, receive, send)
        if scope.get("query_string") and not _takes_a_query_string(scope["path"]):
            return await self._query_string(scope["query_string"])(scope, receive, send)
        if scope["method"] not in _WITH_BODY:
            if scope["method"] not in ("GET", "HEAD"):  # no route takes it (OPTIONS, TRACE ...): the router's 405
                return await self.app(scope, receive, send)
            if headers.get(b"content-length", b"0").strip() not in (b"", b"0") or b"transfer-encoding" in headers:
                # GET and HEAD routes declare no body: one sent anyway would be ignored, so it is refused
                return await self.error(400, "InvalidInputError", f"a {scope['method']} request takes no body",
                                        {"connection": "close"})(scope, receive, send)
            return await self.app(scope, receive, send)
        length = headers.get(b"content-length")
        if length is not None and not length.isdigit():
            return await self.error(400, "InvalidInputError",
                                    "Content-Length must be a non-negative integer")(scope, receive, send)
        if length is not None and int(length) > self.limit:
            return await self._too_big(scope, receive, send)
        chunks, size, more = [], 0, True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout_s * BODY_DEADLINE_FACTOR
        while more:
            # each piece within body_timeout_s of the last, and the whole body within the overall deadline: a body
            # sent a byte every few seconds would otherwise hold its connection for ever
            wait = min(self.body_timeout_s, deadline - loop.time())
            try:
                if wait <= 0:
                    raise asyncio.TimeoutError
                message = await _receive_within(receive, wait)
            except asyncio.TimeoutError:
                return await self.error(408, "RequestTimeout", "the body did not arrive in time",
                                        {"connection": "close"})(scope, receive, send)
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return await self._too_big(scope, receive, send)
            chunks.append(chunk)
            more = message.get("more_body", False)
        raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        types = [v for k, v in scope["headers"] if k == b"content-type"]
        if raw and len(types) > 1:  # two types: which one the body is would be a guess
            return await self.error(400, "InvalidInputError",
                                    "the request has more than one Content-Type header")(scope, receive, send)
        if raw:
            refused = _unsupported_body(headers, [v for k, v in scope["headers"] if k == b"content-encoding"])
            if refused:
                return await self.error(415, "UnsupportedMediaType", refused)(scope, receive, send)
        scope.setdefault("state", {})["raw_body"] = raw
        return await self.app(scope, _no_more_body(receive), send)

    def _query_string(self, raw: bytes):
        """No route of the API takes a query parameter (its arguments are in the path and the JSON body): one given
        would be silently ignored, so it is a 400 that names it."""
        params = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
        name = params[0][0] if params else raw.decode("latin-1")
        shown = name if len(name) <= 64 else name[:61] + "..."
        return self.error(400, "InvalidArgumentError", f"unknown query parameter {shown!r}: the API takes its "
                          "arguments in the path and the JSON body", {"connection": "close"},  # (body unread)
                          field=shown)

    def _too_big(self, scope, receive, send):
        # The connection closes after the answer: the rest of a body that size is never read in to be discarded.
        return self.error(413, "PayloadTooLarge", f"the body is over {self.limit:,} bytes",
                          {"connection": "close"})(scope, receive, send)


def _no_more_body(receive):
    """What the app sees of the request stream once the guard has read the body: an empty last chunk, then the
    client's disconnect."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return await receive()

    return replay
