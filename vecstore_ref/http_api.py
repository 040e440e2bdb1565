"""The HTTP API (SPEC section 8): a FastAPI app over a :class:`~vecstore_ref.namespaces.NamespaceManager`.

Install with ``pip install -e ".[server]"`` and run ``vecstore-ref serve --data ./data`` (127.0.0.1:8080). Routes
act on the namespace ``default`` (created at start if missing); the same routes exist under
``/v1/namespaces/{ns}/...``. Every handler is a thin wrapper over the Python API.

Bodies are parsed here, not by FastAPI's models, so that every bad input gets the same answer: status 400 and
``{"error": {"type", "message"}}``, also for malformed JSON, ``NaN``/``Infinity`` literals and duplicate keys.
Errors of the library map to their ``http_status`` (404 not found, 409 exists or locked, 413 quota). Bodies
over the limit (32 MiB by default) are refused with 413 before they are read; a body that is not
``application/json`` gets 415, and a body that stops arriving for 10 s gets 408. With a token set, every route
wants ``Authorization: Bearer <token>`` (401). No traceback or server path ever reaches a response.
"""

import asyncio
import hmac
import json
import logging
import math
import os

from .errors import InvalidArgumentError, InvalidArgumentTypeError, VecStoreError

log = logging.getLogger("vecstore_ref.http")

DEFAULT_NAMESPACE = "default"
MAX_BODY_BYTES = 32 * 2**20
BODY_TIMEOUT_S = 10.0  # the longest wait for the next piece of a request body
TOKEN_ENV = "VECSTORE_TOKEN"


class _BadJSON(InvalidArgumentError):
    code = "invalid_json"


def _reject_constant(name: str):
    raise _BadJSON(f"{name} is not valid JSON")


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise _BadJSON(f"duplicate key {k!r} in the JSON body")
        out[k] = v
    return out


def parse_body(raw: bytes) -> dict:
    """A JSON object from ``raw``, strictly: no NaN/Infinity, no duplicate keys."""
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except _BadJSON:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _BadJSON(f"the body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(value, dict):
        raise _BadJSON("the body must be a JSON object")
    return value


def _field(body: dict, name: str, types, required: bool = True, default=None):
    if name not in body:
        if required:
            raise InvalidArgumentError(f"the body needs {name!r}")
        return default
    v = body[name]
    if types is not None and not isinstance(v, types):
        raise InvalidArgumentTypeError(f"{name!r} has the wrong type ({type(v).__name__})")
    if types is int and isinstance(v, bool):
        raise InvalidArgumentTypeError(f"{name!r} must be an integer, not a boolean")
    return v


_NUMBER_TYPES = {int, float}


def _vector(value, in_batch: bool = False):
    """A JSON vector: a list of numbers (``true``/``false`` are not numbers here); the store checks the rest.

    In a batch a bad vector fails its own operation only: it is handed on as an object array, which the store
    refuses with a per-operation error.
    """
    if isinstance(value, list) and not set(map(type, value)) <= _NUMBER_TYPES:
        if in_batch:
            import numpy as np

            return np.asarray(value, dtype=object)
        raise InvalidArgumentTypeError("a vector must be a list of numbers")
    return value


def _float_field(body: dict, name: str):
    v = _field(body, name, (int, float), required=False)
    if v is None:
        return None
    if isinstance(v, bool):
        raise InvalidArgumentTypeError(f"{name!r} must be a number, not a boolean")
    if not math.isfinite(float(v)):
        raise InvalidArgumentError(f"{name!r} must be finite")
    return v


def _ops_from_json(items) -> list:
    import vecstore_ref as vs

    if not isinstance(items, list):
        raise InvalidArgumentTypeError("'operations' must be a list")
    makers = {
        "upsert": lambda o: vs.Upsert(o.get("id"), _vector(o.get("vector"), True), o.get("metadata"),
                                      _float_field(o, "ttl")),
        "delete": lambda o: vs.Delete(o.get("id")),
        "soft_delete": lambda o: vs.SoftDelete(o.get("id")),
        "restore": lambda o: vs.Restore(o.get("id")),
        "update_metadata": lambda o: vs.UpdateMetadata(o.get("id"), o.get("metadata")),
        "set_ttl": lambda o: vs.SetTTL(o.get("id"), _float_field(o, "ttl")),
    }
    ops = []
    for i, o in enumerate(items):
        if not isinstance(o, dict) or o.get("op") not in makers:
            raise InvalidArgumentError(f"operation {i} needs an 'op' among {sorted(makers)}")
        ops.append(makers[o["op"]](o))
    return ops


def _name_field(body: dict, alias: str) -> str:
    """``"name"`` (or its longer spelling ``alias``, e.g. ``"namespace"``) of a body."""
    if "name" in body and alias in body:
        raise InvalidArgumentError(f"give 'name' or '{alias}', not both")
    return _field(body, alias if alias in body else "name", str)


def _query_args(body: dict) -> dict:
    k = body.get("limit", body.get("k", 10))
    if "limit" in body and "k" in body:
        raise InvalidArgumentError("give 'limit' or 'k', not both")
    if not isinstance(k, int) or isinstance(k, bool):
        raise InvalidArgumentTypeError("'limit' must be an integer")
    flt = _field(body, "filter", str, required=False)
    ef = _field(body, "ef", int, required=False)
    return {"vector": _vector(_field(body, "vector", None)), "k": k, "filter": flt, "ef": ef}


class _Guard:
    """ASGI middleware in front of every route: the bearer token, then for a request with a body, its size (413
    before reading when the declared length is too big, or as soon as what arrives is) and its content type (415).
    The body is kept in ``scope["state"]["raw_body"]`` and replayed to the app."""

    _WITH_BODY = ("POST", "PUT", "PATCH")

    def __init__(self, app, *, token, max_body_bytes, error, body_timeout_s):
        self.app, self.token, self.limit, self.error = app, token, max_body_bytes, error
        self.body_timeout_s = body_timeout_s
        self.expected = None if token is None else f"Bearer {token}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.expected is not None and not hmac.compare_digest(headers.get(b"authorization", b""),
                                                                 self.expected):
            return await self.error(401, "Unauthorized", "a valid bearer token is required")(scope, receive, send)
        if scope["method"] not in self._WITH_BODY:
            return await self.app(scope, receive, send)
        length = headers.get(b"content-length")
        if length is not None and not length.isdigit():
            return await self.error(400, "InvalidInputError",
                                    "Content-Length must be a non-negative integer")(scope, receive, send)
        too_big = self.error(413, "PayloadTooLarge", f"the body is over {self.limit:,} bytes")
        if length is not None and int(length) > self.limit:
            return await too_big(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            try:  # a client that stops sending its body gets 408 instead of holding a worker forever
                message = await asyncio.wait_for(receive(), self.body_timeout_s)
            except asyncio.TimeoutError:
                return await self.error(408, "RequestTimeout", "the body did not arrive in time",
                                        {"connection": "close"})(scope, receive, send)
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return await too_big(scope, receive, send)
            chunks.append(chunk)
            more = message.get("more_body", False)
        raw = b"".join(chunks)
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if raw and ctype != b"application/json":
            return await self.error(415, "UnsupportedMediaType",
                                    "the body must be application/json")(scope, receive, send)
        scope.setdefault("state", {})["raw_body"] = raw
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


def create_app(data_dir: str, *, token: str | None = None, max_body_bytes: int = MAX_BODY_BYTES,
               body_timeout_s: float = BODY_TIMEOUT_S):
    """The ASGI app serving the namespaces under ``data_dir``."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    import vecstore_ref as vs

    manager = vs.NamespaceManager(data_dir)
    if DEFAULT_NAMESPACE not in manager.list_namespaces():
        manager.create_namespace(DEFAULT_NAMESPACE)
    token = token if token is not None else (os.environ.get(TOKEN_ENV) or None)
    app = FastAPI(title="vecstore_ref", version=vs.__version__,
                  description="An embedded vector store over HTTP. Errors: {\"error\": {\"type\", \"message\"}}.")
    app.state.manager = manager

    root = manager.root

    def error(status: int, type_: str, message: str, headers: dict | None = None) -> JSONResponse:
        message = message.replace(root, "<data>")  # no server path in a response
        return JSONResponse({"error": {"type": type_, "message": message}}, status_code=status, headers=headers)

    @app.exception_handler(VecStoreError)
    async def library_error(request, exc: VecStoreError):
        public = next(c for c in type(exc).__mro__ if not c.__name__.startswith("_"))  # the class users know
        return error(getattr(exc, "http_status", 400), public.__name__, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        return error(exc.status_code, "HTTPError", str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def request_error(request, exc):
        return error(400, "InvalidInputError", "the request does not match the route")

    @app.exception_handler(Exception)
    async def unexpected(request, exc):  # pragma: no cover - a bug; logged here, never shown to the client
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error(500, "InternalError", "internal error")

    app.add_middleware(_Guard, token=token, max_body_bytes=max_body_bytes, error=error,
                       body_timeout_s=body_timeout_s)

    def body_of(request: Request) -> dict:
        raw = getattr(request.state, "raw_body", b"")
        return parse_body(raw) if raw else {}

    def store(ns: str):
        return manager.get_namespace(ns)

    # --- routes on one namespace, registered twice: /v1/... (default) and /v1/namespaces/{ns}/... --------------

    def add_store_routes(prefix: str):
        def ns_of(request: Request) -> str:
            return request.path_params.get("ns", DEFAULT_NAMESPACE)

        @app.post(prefix + "/upsert")
        def upsert(request: Request):
            b = body_of(request)
            store(ns_of(request)).upsert(_field(b, "id", None), _vector(_field(b, "vector", None)),
                                         _field(b, "metadata", None, required=False), ttl=_float_field(b, "ttl"))
            return {"ok": True}

        @app.post(prefix + "/batch-execute")
        def batch_execute(request: Request):
            ops = _ops_from_json(_field(body_of(request), "operations", list))
            return store(ns_of(request)).batch_execute(ops).to_dict()

        @app.post(prefix + "/query")
        def query(request: Request):
            a = _query_args(body_of(request))
            hits = store(ns_of(request)).query(a["vector"], k=a["k"], filter=a["filter"], ef=a["ef"])
            return {"results": [h.to_dict() for h in hits]}

        @app.post(prefix + "/query-estimate")
        def query_estimate(request: Request):
            a = _query_args(body_of(request))
            return store(ns_of(request)).estimate_query(a["vector"], k=a["k"], filter=a["filter"], ef=a["ef"]).to_dict()

        @app.post(prefix + "/query-explain")
        def query_explain(request: Request):
            a = _query_args(body_of(request))
            return store(ns_of(request)).query_explain(a["vector"], k=a["k"], filter=a["filter"], ef=a["ef"]).to_dict()

        @app.post(prefix + "/compact")
        def compact(request: Request):
            if_needed = _field(body_of(request), "if_needed", bool, required=False, default=False)
            s = store(ns_of(request))
            if if_needed:
                return s.maybe_compact().to_dict()
            import time as _time

            t0 = _time.perf_counter()
            removed = s.compact()
            return {"removed_count": removed, "duration_ms": (_time.perf_counter() - t0) * 1e3, "triggered": True,
                    "reason": "compaction was asked for"}

        @app.get(prefix + "/stats")
        def stats(request: Request):
            return store(ns_of(request)).stats().to_dict()

        @app.get(prefix + "/records/{id}")
        def get_record(request: Request, id: str):
            return store(ns_of(request)).get(id).to_dict()

        @app.delete(prefix + "/records/{id}")
        def delete_record(request: Request, id: str):
            store(ns_of(request)).delete(id)
            return {"ok": True}

        @app.post(prefix + "/records/{id}/soft-delete")
        def soft_delete(request: Request, id: str):
            return {"changed": store(ns_of(request)).soft_delete(id)}

        @app.post(prefix + "/records/{id}/restore")
        def restore(request: Request, id: str):
            return {"changed": store(ns_of(request)).restore(id)}

        @app.put(prefix + "/records/{id}/metadata")
        def update_metadata(request: Request, id: str):
            b = body_of(request)
            # {"metadata": {...}}, or the metadata object itself as the body
            md = b["metadata"] if set(b) == {"metadata"} else b
            store(ns_of(request)).update_metadata(id, md)
            return {"ok": True}

        @app.put(prefix + "/records/{id}/ttl")
        def set_ttl(request: Request, id: str):
            b = body_of(request)
            if "ttl" not in b:
                raise InvalidArgumentError("the body needs 'ttl' (a number of seconds, or null)")
            store(ns_of(request)).set_ttl(id, _float_field(b, "ttl"))
            return {"ok": True}

        @app.post(prefix + "/expire")
        def expire(request: Request):
            return {"expired": store(ns_of(request)).expire_ttl_records()}

    add_store_routes("/v1")
    add_store_routes("/v1/namespaces/{ns}")

    # --- namespaces and backups -------------------------------------------------------------------------------

    @app.get("/v1/namespaces")
    def list_namespaces():
        return {"namespaces": manager.list_namespaces()}

    @app.post("/v1/namespaces")
    def create_namespace(request: Request):
        b = body_of(request)
        name = _name_field(b, "namespace")
        q = _field(b, "quotas", dict, required=False, default={})
        unknown = set(q) - {"max_vectors", "max_bytes"}
        if unknown:
            raise InvalidArgumentError(f"unknown quota fields {sorted(unknown)}")
        options = {}
        for key, types in (("dim", int), ("metric", str), ("index", str), ("durability", str)):
            v = _field(b, key, types, required=False)
            if v is not None:
                options[key] = v
        hnsw = _field(b, "hnsw", dict, required=False)
        if hnsw is not None:
            options["hnsw"] = vs.HNSWParams.from_dict(hnsw)
        manager.create_namespace(name, quotas=vs.Quotas(q.get("max_vectors"), q.get("max_bytes")), **options)
        return {"ok": True, "name": name}

    @app.delete("/v1/namespaces/{ns}")
    def delete_namespace(ns: str):
        manager.delete_namespace(ns)
        return {"ok": True}

    @app.get("/v1/namespaces/{ns}/backups")
    def list_backups(ns: str):
        return {"backups": [{"name": n, "created_at": c.isoformat(), "count": k}
                            for n, c, k in manager.list_namespace_backups(ns)]}

    @app.post("/v1/namespaces/{ns}/backups")
    def create_backup(request: Request, ns: str):
        return manager.backup_namespace(ns, _name_field(body_of(request), "backup_name")).to_dict()

    @app.post("/v1/namespaces/{ns}/backups/{name}/restore")
    def restore_backup(ns: str, name: str):
        manager.restore_namespace(ns, name)
        return {"ok": True}

    @app.delete("/v1/namespaces/{ns}/backups/{name}")
    def delete_backup(ns: str, name: str):
        manager.delete_namespace_backup(ns, name)
        return {"ok": True}

    @app.get("/healthz")
    async def healthz():
        return {"ok": True}

    return app


def serve(data_dir: str, host: str = "127.0.0.1", port: int = 8080, token: str | None = None) -> None:
    """Run the server until interrupted (uvicorn, one process)."""
    import uvicorn

    app = create_app(data_dir, token=token)
    try:
        uvicorn.run(app, host=host, port=port, log_level="info")
    finally:
        app.state.manager.close()
