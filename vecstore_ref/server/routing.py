"""Dispatch of the API routes by path segments, ahead of FastAPI's router.

FastAPI's routing and dependency machinery costs more per request than a query of a hot namespace (about 0.4 ms
on the 2-core machine of docs/benchmarks.md, against 0.1 to 0.3 ms for the query). The routes of this API need none
of it: each handler takes the request and the path's names (`ns`, `id`, `name`) as strings, reads its own body and
writes its own answer. So `SegmentRouter` matches a request against the same route templates FastAPI was given
(split at `/`, each `{name}` one non-empty segment, as in Starlette) and calls the handler itself.

The path is split *before* it is percent-decoded (``scope["raw_path"]``), and each segment is decoded on its own,
strictly as UTF-8: a record id may hold a ``/`` (SPEC section 1), and ``/v1/records/a%2Fb`` names the record
``a/b``, never a route with one more segment; ``/v1/records/s%2F`` names the record ``s/``, never a redirect to
``/v1/records/s`` (another record). A segment that is not valid UTF-8 once decoded is a 400. FastAPI keeps
everything else: the schema, `/docs`, and the answers for paths and methods no route takes (404, 405 with `Allow`).

``HEAD`` is answered for every ``GET`` route (RFC 9110): the same status and headers, no body.
"""

from __future__ import annotations

import inspect
from urllib.parse import unquote_to_bytes

from starlette.requests import Request

from ..errors import InvalidArgumentError, VecStoreError


def _pattern(template: str) -> tuple[tuple[str | None, ...], tuple[str, ...]]:
    """``"/v1/records/{id}/ttl"`` -> ``(("v1", "records", None, "ttl"), ("id",))``: None marks a parameter."""
    parts: list[str | None] = []
    names: list[str] = []
    for part in template.strip("/").split("/"):
        if part.startswith("{") and part.endswith("}"):
            parts.append(None)
            names.append(part[1:-1])
        else:
            parts.append(part)
    return tuple(parts), tuple(names)


class SegmentRouter:
    """ASGI middleware: requests that match one of ``routes`` (``(method, template, handler)``) go straight to
    the handler; the rest go on to ``app``. ``on_error(exc)`` answers a `VecStoreError` the handler raised, and
    ``on_bug(method, path)`` any other exception (from within an ``except`` block, so that it can log it).

    A handler is called with the path's parameters it declares, and the request if it declares ``request``.
    """

    def __init__(self, app, *, routes, on_error, on_bug, not_allowed=None) -> None:
        self.app = app
        self.on_error = on_error
        self.on_bug = on_bug
        self.not_allowed = not_allowed  # not_allowed(allow) answers a 405 with the header Allow: allow
        self._table: dict[tuple[str, int], list] = {}
        for method, template, handler in routes:
            parts, names = _pattern(template)
            takes = set(inspect.signature(handler).parameters)
            self._table.setdefault((method, len(parts)), []).append((parts, names, handler, takes))

    def match(self, method: str, path: str | list[str]):
        """(handler, path parameters, names the handler takes) for a request, or None. ``path`` is a decoded path,
        or the list of its decoded segments."""
        segments = path.strip("/").split("/") if isinstance(path, str) else path
        for parts, names, handler, takes in self._table.get((method, len(segments)), ()):
            values = []
            for want, got in zip(parts, segments):
                if want is None:
                    if not got:
                        break
                    values.append(got)
                elif want != got:
                    break
            else:
                return handler, dict(zip(names, values)), takes
        return None

    def allowed(self, path: str | list[str]) -> list[str]:
        """Every method some route takes for ``path`` (sorted), for the Allow header of a 405."""
        methods = {method for method, _ in self._table if self.match(method, path) is not None}
        if "GET" in methods:
            methods.add("HEAD")
        return sorted(methods)

    async def __call__(self, scope, receive, send):
        path = scope["path"] if scope["type"] == "http" else "/"
        raw = scope.get("raw_path") if scope["type"] == "http" else None
        try:
            segments = _segments(raw) if raw else path
        except UnicodeDecodeError:
            segments = None
        if segments is None:
            exc = InvalidArgumentError("the request path is not valid UTF-8 once percent-decoded")
            return await self.on_error(exc)(scope, receive, send)
        trailing = raw.endswith(b"/") if raw else path.endswith("/")
        head = scope.get("method") == "HEAD"
        found = None if trailing else self.match("GET" if head else scope["method"], segments)
        if found is None:
            allowed = None if trailing or self.not_allowed is None else self.allowed(segments)
            if allowed:  # Starlette's own 405 names only the first route of the path it finds
                return await self.not_allowed(", ".join(allowed))(scope, receive, send)
            return await self.app(scope, receive, send)
        handler, params, takes = found
        scope["path_params"] = params
        kwargs = {k: v for k, v in params.items() if k in takes}
        if "request" in takes:
            kwargs["request"] = Request(scope, receive)
        try:
            response = await handler(**kwargs)
        except VecStoreError as exc:
            response = self.on_error(exc)
        except Exception:
            response = self.on_bug(scope["method"], path)
        await response(scope, receive, _without_body(send) if head else send)


def _without_body(send):
    """``send`` for a HEAD request: the GET answer's status and headers, its body left out."""
    async def send_head(message):
        if message["type"] == "http.response.body":
            if message.get("more_body", False):
                return
            message = {"type": "http.response.body", "body": b"", "more_body": False}
        await send(message)

    return send_head


def _segments(raw_path: bytes) -> list[str]:
    """The segments of a raw (still percent-encoded) path, each decoded on its own, strictly as UTF-8."""
    return [unquote_to_bytes(part).decode("utf-8") for part in raw_path.strip(b"/").split(b"/")]
