"""The HTTP API (SPEC section 8): a FastAPI app over a `NamespaceManager`, and `serve()` to run it.

Every route is a thin wrapper over the Python API: read the body into its model (`bodies`), call the store, write
the answer as JSON (`json_body`). The routes that act on one namespace exist twice, as `/v1/...` for the namespace
`default` and as `/v1/namespaces/{ns}/...`. Errors of the library become their `http_status` and
`{"error": {"type", "code", "message", "field"?}}`; no traceback and no server path ever reaches a response.

Where a call runs: writes (and anything that touches files) go to a worker thread, since an fsync must not stall
the event loop; reads (query, estimate, explain, get, stats) run on the loop when they cannot block: see
`reads_run_inline`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import time
import weakref
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from .. import errors as _errors
from ..errors import InvalidArgumentError, StoreClosedError, VecStoreError, error_code
from . import models as m
from .bodies import read_body
from .docs_page import add_docs_routes
from .guard import Guard
from .json_body import encode_json
from .protocol import HEAD_TIMEOUT_S, protocol_class  # noqa: F401  # HEAD_TIMEOUT_S: re-exported
from .routing import SegmentRouter

log = logging.getLogger("vecstore_ref.http")

DEFAULT_NAMESPACE = "default"
MAX_BODY_BYTES = 32 * 2**20  # 32 MiB
BODY_TIMEOUT_S = 10.0  # the longest wait for the next piece of a request body
TOKEN_ENV = "VECSTORE_TOKEN"
PARSE_IN_THREAD_BYTES = 256 * 2**10  # bodies above 256 KiB are parsed off the event loop
_PUBLIC_ERRORS = frozenset(_errors.__all__)


def reads_run_inline(store) -> bool:
    """Whether reads of ``store`` (query, estimate, explain, get, stats) may run on the event loop, with no hand-off to a
    worker thread.

    A query on a linked graph takes a fraction of a millisecond, less than the hand-off to a thread costs. But on the
    event loop, a read that waits for a lock held across I/O (a write's fsync, a snapshot, a compaction) would
    stall every connection. So reads run inline only on a store whose reads never do: ``VecStore`` says so with
    ``reads_wait_for_io = False`` (its reads wait at most for a write's in-memory apply; SPEC section 13). Even
    then the first read of each handle runs in a thread (`Namespaces.read`), so that loading or compiling its
    kernels never happens on the loop.
    """
    return getattr(store, "reads_wait_for_io", True) is False


class VecstoreAPI(FastAPI):
    """The FastAPI app, entered through the guard and the segment router (see `routing`): the API's own routes
    never pass through FastAPI's per-request machinery, which keeps the schema, `/docs` and the 404/405 answers."""

    entry: Guard | None = None  # set by create_app: Guard(SegmentRouter(FastAPI.__call__))

    async def __call__(self, scope, receive, send):
        await self.entry(scope, receive, send)


class JSONBytes(Response):
    media_type = "application/json"

    def render(self, content) -> bytes:
        return encode_json(content)


class Namespaces:
    """The store handles of the routes: the manager's, remembered once open, so that finding a hot namespace
    takes no lock (the manager holds its lock through a backup). A handle found closed (a restore or a delete
    closes it) is forgotten and looked up again, once: a call on a closed store has done nothing."""

    def __init__(self, manager, inline_reads: bool | None):
        self.manager = manager
        self.inline_reads = inline_reads
        self._open: dict[str, object] = {}
        self._warm: weakref.WeakSet = weakref.WeakSet()  # handles that have answered a read in a thread

    async def store(self, ns: str):
        store = self._open.get(ns)
        if store is None:
            store = await run_in_threadpool(self.manager.get_namespace, ns)
            self._open[ns] = store
        return store

    def forget(self, ns: str) -> None:
        self._open.pop(ns, None)

    async def read(self, ns: str, call, *args):
        """``call(store, *args)`` for a read: inline when it cannot block, else in a worker thread."""
        async def run(store):
            inline = self.inline_reads if self.inline_reads is not None else reads_run_inline(store)
            if inline and store in self._warm:
                return call(store, *args)
            result = await run_in_threadpool(call, store, *args)
            self._warm.add(store)
            return result

        return await self._on_open_store(ns, run)

    async def call(self, ns: str, call, *args):
        """``call(store, *args)`` in a worker thread (writes, and reads that touch files)."""
        return await self._on_open_store(ns, lambda store: run_in_threadpool(call, store, *args))

    async def _on_open_store(self, ns: str, run):
        store = await self.store(ns)
        try:
            return await run(store)
        except StoreClosedError:
            if self._open.get(ns) is store:
                self.forget(ns)
            return await run(await self.store(ns))


async def body(request: Request, model, *, empty_ok: bool = False):
    """The request's body as ``model`` (read by the guard; parsed in a thread when large)."""
    raw = request.scope.get("state", {}).get("raw_body", b"")
    if len(raw) > PARSE_IN_THREAD_BYTES:
        return await run_in_threadpool(read_body, raw, model, empty_ok=empty_ok)
    return read_body(raw, model, empty_ok=empty_ok)


def _error_responses(*statuses: int) -> dict:
    return {s: {"model": m.ErrorBody, "description": d} for s, d in (
        (400, "Invalid input: bad JSON, an unknown field, a wrong type, or a value the store refuses"),
        (401, "A valid bearer token is required"),
        (404, "No such record, namespace, backup or route"),
        (408, "The body stopped arriving"),
        (409, "Already exists, or the store is locked or closed"),
        (413, "The body is over the limit, or a quota would be passed"),
        (415, "The body is not application/json"),
    ) if s in statuses or not statuses}


ERRORS = _error_responses()


def create_app(data_dir: str, *, token: str | None = None, max_body_bytes: int = MAX_BODY_BYTES,
               body_timeout_s: float = BODY_TIMEOUT_S, inline_reads: bool | None = None) -> FastAPI:
    """The ASGI app serving the namespaces under ``data_dir`` (the namespace `default` is created if missing).

    Args:
        data_dir: root of the namespaces (a `NamespaceManager` root).
        token: bearer token wanted on every route; None reads the environment variable `VECSTORE_TOKEN`.
        max_body_bytes: larger bodies get 413.
        body_timeout_s: a body silent this long gets 408.
        inline_reads: run reads on the event loop (True), always in a worker thread (False), or decide per store
            with `reads_run_inline` (None, the default).
    """
    import vecstore_ref as vs

    manager = vs.NamespaceManager(data_dir)
    if DEFAULT_NAMESPACE not in manager.list_namespaces():
        manager.create_namespace(DEFAULT_NAMESPACE)
    token = token if token is not None else (os.environ.get(TOKEN_ENV) or None)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await run_in_threadpool(manager.close)  # a clean stop (uvicorn re-raises SIGTERM after this)

    app = VecstoreAPI(title="vecstore_ref", version=vs.__version__, docs_url=None, redoc_url=None,
                      lifespan=lifespan, redirect_slashes=False, description="An embedded vector store over HTTP. Every error is "
                                                     '`{"error": {"type", "code", "message", "field"?}}`; see the HTTP guide.')
    app.state.manager = manager
    spaces = app.state.namespaces = Namespaces(manager, inline_reads)
    root = manager.root
    roots = sorted({root, os.path.realpath(root)}, key=len, reverse=True)

    def error(status: int, type_: str, message: str, headers: dict | None = None, field: str | None = None,
              code: str | None = None):
        for shown in roots:  # no server path in a response (a store names its directory resolved)
            message = message.replace(shown, "<data>")
        detail = {"type": type_, "code": code or error_code(type_, status), "message": message}
        if field is not None:
            detail["field"] = field
        return JSONBytes({"error": detail}, status_code=status, headers=headers)

    def library_error(exc: VecStoreError):
        public = next(c for c in type(exc).__mro__ if c.__name__ in _PUBLIC_ERRORS)  # the class users know
        return error(exc.http_status, public.__name__, str(exc), field=getattr(exc, "field", None), code=exc.code)

    @app.exception_handler(VecStoreError)
    async def on_library_error(request, exc: VecStoreError):
        return library_error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request, exc):
        return error(exc.status_code, "HTTPError", str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def on_request_error(request, exc):  # only path parameters are left to FastAPI, and they are strings
        return error(400, "InvalidInputError", "the request does not match the route")

    def bug(method: str, path: str):  # logged here, never shown to the client
        log.exception("unexpected error on %s %s", method, path)
        return error(500, "InternalError", "internal error", code="internal_error")

    @app.exception_handler(Exception)
    async def on_bug(request, exc):
        return bug(request.method, request.url.path)

    routers = [("/v1", store_routes(spaces), []),
               ("/v1/namespaces/{ns}", store_routes(spaces), [Depends(_namespace)]),
               ("/v1", namespace_routes(spaces), []),
               ("", service_routes(), [])]
    for prefix, router, dependencies in routers:
        app.include_router(router, prefix=prefix, dependencies=dependencies)
    table = [(method, prefix + route.path, route.endpoint)  # type: ignore[attr-defined]  # APIRoute objects
             for prefix, router, _ in routers for route in router.routes
             for method in route.methods]  # type: ignore[attr-defined]
    fastapi_entry = super(VecstoreAPI, app).__call__
    def not_allowed(allow: str):
        return error(405, "HTTPError", "Method Not Allowed", {"allow": allow})

    app.entry = Guard(SegmentRouter(fastapi_entry, routes=table, on_error=library_error, on_bug=bug,
                                    not_allowed=not_allowed),
                      token=token, max_body_bytes=max_body_bytes, body_timeout_s=body_timeout_s, error=error)
    add_docs_routes(app, title="vecstore_ref")
    document_bodies(app)
    return app


async def _namespace(ns: Annotated[str, Path(description="Namespace name")]):
    """Declares `{ns}` in the schema of the namespaced routes (the handlers read it from the path)."""


def service_routes() -> APIRouter:
    r = APIRouter()

    @_route(r, "GET", "/healthz", response=m.Ok, summary="Liveness (answered on the event loop)",
            errors=_error_responses(401))
    async def healthz(request: Request):
        return JSONBytes({"ok": True})

    return r


def _ns(request: Request) -> str:
    return request.path_params.get("ns", DEFAULT_NAMESPACE)


def _route(router: APIRouter, method: str, path: str, *, response, summary: str, body=None,
           body_optional: bool = False, errors: dict = ERRORS):
    """Register a handler with its documented body model (read by the handler itself, see `body`), its 200
    answer and its error answers."""
    extra = None
    if body is not None:
        extra = {"requestBody": {"required": not body_optional, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{body.__name__}"}}}},
                 "x-body-model": body.__name__}  # for document_bodies
    return router.api_route(path, methods=[method], response_model=response, responses=errors, summary=summary,
                            openapi_extra=extra)


def store_routes(spaces: Namespaces) -> APIRouter:
    """The routes on one namespace (mounted at `/v1` for `default` and at `/v1/namespaces/{ns}`)."""
    r = APIRouter()

    @_route(r, "POST", "/upsert", body=m.UpsertBody, response=m.Ok, summary="Insert or replace a record")
    async def upsert(request: Request):
        b = await body(request, m.UpsertBody)
        await spaces.call(_ns(request), lambda s: s.upsert(b.id, b.vector, b.metadata, ttl=b.ttl))
        return JSONBytes({"ok": True})

    @_route(r, "POST", "/batch-execute", body=m.BatchBody, response=m.BatchResponse,
            summary="Apply operations in order, as one atomic write")
    async def batch_execute(request: Request):
        b = await body(request, m.BatchBody)
        ops = [_to_op(o) for o in b.operations]
        result = await spaces.call(_ns(request), lambda s: s.batch_execute(ops))
        return JSONBytes(result.to_dict())

    @_route(r, "POST", "/query", body=m.QueryBody, response=m.QueryResponse, summary="k nearest neighbours")
    async def query(request: Request):
        b = await body(request, m.QueryBody)
        hits = await spaces.read(_ns(request), _query, b)
        return JSONBytes({"results": [h.to_dict() for h in hits]})

    @_route(r, "POST", "/query-estimate", body=m.QueryBody, response=m.EstimateResponse,
            summary="What a query would cost, and whether it is valid")
    async def query_estimate(request: Request):
        b = await body(request, m.QueryBody)
        est = await spaces.read(_ns(request), lambda s, b: s.estimate_query(b.vector, k=b.k, filter=b.filter, ef=b.ef), b)
        return JSONBytes(est.to_dict())

    @_route(r, "POST", "/query-explain", body=m.QueryBody, response=m.ExplainResponse,
            summary="Run a query and report its plan and work")
    async def query_explain(request: Request):
        b = await body(request, m.QueryBody)
        exp = await spaces.read(_ns(request), lambda s, b: s.query_explain(b.vector, k=b.k, filter=b.filter, ef=b.ef), b)
        return JSONBytes(exp.to_dict())

    @_route(r, "POST", "/compact", body=m.CompactBody, body_optional=True, response=m.CompactResponse,
            summary="Remove dead records for good")
    async def compact(request: Request):
        b = await body(request, m.CompactBody, empty_ok=True)
        result = await spaces.call(_ns(request), _compact, b.if_needed)
        return JSONBytes(result)

    @_route(r, "GET", "/stats", response=m.StatsResponse, summary="Counts, sizes and settings")
    async def stats(request: Request):
        st = await spaces.read(_ns(request), lambda s: s.stats())
        return JSONBytes(st.to_dict())

    @_route(r, "GET", "/records/{id}", response=m.RecordResponse, summary="One visible record")
    async def get_record(request: Request, id: str):
        rec = await spaces.read(_ns(request), lambda s, i: s.get(i), id)
        return JSONBytes({"id": rec.id, "vector": rec.vector, "metadata": rec.metadata,
                          "expires_at": rec.expires_at, "deleted": rec.deleted})

    @_route(r, "DELETE", "/records/{id}", body=m.EmptyBody, body_optional=True, response=m.Ok, summary="Hard delete")
    async def delete_record(request: Request, id: str):
        await body(request, m.EmptyBody, empty_ok=True)
        await spaces.call(_ns(request), lambda s: s.delete(id))
        return JSONBytes({"ok": True})

    @_route(r, "POST", "/records/{id}/soft-delete", body=m.EmptyBody, body_optional=True, response=m.Changed,
            summary="Hide a record, restorably")
    async def soft_delete(request: Request, id: str):
        await body(request, m.EmptyBody, empty_ok=True)
        return JSONBytes({"changed": await spaces.call(_ns(request), lambda s: s.soft_delete(id))})

    @_route(r, "POST", "/records/{id}/restore", body=m.EmptyBody, body_optional=True, response=m.Changed,
            summary="Un-hide a soft-deleted record")
    async def restore(request: Request, id: str):
        await body(request, m.EmptyBody, empty_ok=True)
        return JSONBytes({"changed": await spaces.call(_ns(request), lambda s: s.restore(id))})

    @_route(r, "PUT", "/records/{id}/metadata", body=m.MetadataBody, response=m.Ok,
            summary="Replace a record's metadata")
    async def update_metadata(request: Request, id: str):
        b = await body(request, m.MetadataBody)
        await spaces.call(_ns(request), lambda s: s.update_metadata(id, b.metadata))
        return JSONBytes({"ok": True})

    @_route(r, "PUT", "/records/{id}/ttl", body=m.TtlBody, response=m.Ok, summary="Set or remove a record's TTL")
    async def set_ttl(request: Request, id: str):
        b = await body(request, m.TtlBody)
        await spaces.call(_ns(request), lambda s: s.set_ttl(id, b.ttl))
        return JSONBytes({"ok": True})

    @_route(r, "POST", "/expire", body=m.EmptyBody, body_optional=True, response=m.Expired,
            summary="Tombstone every expired record now")
    async def expire(request: Request):
        await body(request, m.EmptyBody, empty_ok=True)
        return JSONBytes({"expired": await spaces.call(_ns(request), lambda s: s.expire_ttl_records())})

    return r


def _query(store, b: m.QueryBody):
    return store.query(b.vector, k=b.k, filter=b.filter, ef=b.ef)


def _compact(store, if_needed: bool) -> dict:
    if if_needed:
        return store.maybe_compact().to_dict()
    t0 = time.perf_counter()
    removed = store.compact()
    return {"removed_count": removed, "duration_ms": (time.perf_counter() - t0) * 1e3, "triggered": True,
            "reason": "compaction was asked for"}


def _to_op(o):
    import vecstore_ref as vs

    if o.op == "upsert":
        return vs.Upsert(o.id, o.vector, o.metadata, o.ttl)
    if o.op == "update_metadata":
        return vs.UpdateMetadata(o.id, o.metadata)
    if o.op == "set_ttl":
        return vs.SetTTL(o.id, o.ttl)
    return {"delete": vs.Delete, "soft_delete": vs.SoftDelete, "restore": vs.Restore}[o.op](o.id)


def namespace_routes(spaces: Namespaces) -> APIRouter:
    """Namespaces and their backups."""
    import vecstore_ref as vs

    r = APIRouter()
    manager = spaces.manager

    @_route(r, "GET", "/namespaces", response=m.NamespaceList, summary="Every namespace")
    async def list_namespaces():
        return JSONBytes({"namespaces": await run_in_threadpool(manager.list_namespaces)})

    @_route(r, "POST", "/namespaces", body=m.CreateNamespaceBody, response=m.NamespaceCreated,
            summary="Create a namespace")
    async def create_namespace(request: Request):
        b = await body(request, m.CreateNamespaceBody)
        options = {k: v for k, v in (("dim", b.dim), ("metric", b.metric), ("index", b.index),
                                      ("durability", b.durability)) if v is not None}
        if b.hnsw is not None:
            options["hnsw"] = vs.HNSWParams.from_dict(b.hnsw.model_dump(exclude_none=True))
        quotas = vs.Quotas(*(b.quotas.max_vectors, b.quotas.max_bytes) if b.quotas else ())
        await run_in_threadpool(lambda: manager.create_namespace(b.name, quotas=quotas, **options))
        return JSONBytes({"ok": True, "name": b.name})

    @_route(r, "DELETE", "/namespaces/{ns}", body=m.EmptyBody, body_optional=True, response=m.Ok,
            summary="Delete a namespace and its backups")
    async def delete_namespace(request: Request, ns: str):
        await body(request, m.EmptyBody, empty_ok=True)
        spaces.forget(ns)
        await run_in_threadpool(manager.delete_namespace, ns)
        spaces.forget(ns)
        return JSONBytes({"ok": True})

    @_route(r, "GET", "/namespaces/{ns}/backups", response=m.BackupList, summary="Backups, newest first")
    async def list_backups(ns: str):
        backups = await run_in_threadpool(manager.list_namespace_backups, ns)
        return JSONBytes({"backups": [{"name": n, "created_at": c.isoformat(), "count": k} for n, c, k in backups]})

    @_route(r, "POST", "/namespaces/{ns}/backups", body=m.BackupBody, response=m.BackupInfo,
            summary="Back a namespace up, online")
    async def create_backup(request: Request, ns: str):
        b = await body(request, m.BackupBody)
        return JSONBytes((await run_in_threadpool(manager.backup_namespace, ns, b.name)).to_dict())

    @_route(r, "POST", "/namespaces/{ns}/backups/{name}/restore", body=m.EmptyBody, body_optional=True,
            response=m.Ok, summary="Replace a namespace by one of its backups")
    async def restore_backup(request: Request, ns: str, name: str):
        await body(request, m.EmptyBody, empty_ok=True)
        spaces.forget(ns)
        await run_in_threadpool(manager.restore_namespace, ns, name)
        spaces.forget(ns)
        return JSONBytes({"ok": True})

    @_route(r, "DELETE", "/namespaces/{ns}/backups/{name}", body=m.EmptyBody, body_optional=True, response=m.Ok,
            summary="Delete a backup")
    async def delete_backup(request: Request, ns: str, name: str):
        await body(request, m.EmptyBody, empty_ok=True)
        await run_in_threadpool(manager.delete_namespace_backup, ns, name)
        return JSONBytes({"ok": True})

    return r


def document_bodies(app: FastAPI) -> None:
    """Complete FastAPI's schema: the body models the routes read themselves go into `components`, and the 422
    FastAPI adds for path parameters goes (bad input is a 400 here, in the error shape)."""
    from pydantic.json_schema import models_json_schema

    plain = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = plain()
        wanted = {op.pop("x-body-model") for item in schema["paths"].values() for op in item.values()
                  if "x-body-model" in op}
        models = [getattr(m, name) for name in sorted(wanted)]
        _, defs = models_json_schema([(x, "validation") for x in models], ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(defs.get("$defs", {}))
        for item in schema["paths"].values():
            for op in item.values():
                op.get("responses", {}).pop("422", None)
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's way to extend the schema


def serve(data_dir: str, host: str = "127.0.0.1", port: int = 8080, token: str | None = None, *,
          access_log: bool = False, inline_reads: bool | None = None, http: str = "auto", loop: str = "auto",
          on_listening: Callable[[str], object] | None = None) -> None:
    """Run the server until interrupted: one process, which owns the store directories (see the HTTP guide).

    The address is bound before anything else starts, so a port in use or a host that does not resolve is one
    `OSError` naming the address (the command line's one error line), and ``on_listening(url)`` is called only
    once the server can be reached there.

    ``http`` and ``loop`` are uvicorn's: with the `[server]` extra, "auto" means httptools and uvloop. The HTTP
    protocol is wrapped by `protocol.protocol_class`: a connection whose request head does not arrive within
    `HEAD_TIMEOUT_S` gets 408 and is closed, and a request the HTTP parser refuses gets a JSON 400.
    """
    import uvicorn

    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidArgumentError(f"port must be an int from 1 to 65535, got {port!r}")
    sock, url = _listen(host, port)
    held = None
    try:
        held = _own_root(data_dir)  # before the manager cleans or creates anything there
        app = create_app(data_dir, token=token, inline_reads=inline_reads)
    except BaseException:
        sock.close()
        if held is not None:
            os.close(held)
        raise
    try:
        config = uvicorn.Config(app, log_level="info", access_log=access_log, http=protocol_class(http), loop=loop,
                                ws="none")  # (no route speaks WebSocket)
        if on_listening is not None:
            on_listening(url)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        app.state.manager.close()
        os.close(held)


SERVER_LOCK = ".server.lock"  # in the data root: held (flock) by the one server that serves it


def _own_root(data_dir: str) -> int:
    """Take the data root for this server: a second server on the same root would open each namespace in
    whichever process asked first and refuse it in the other (and clean up what the first is creating), so it
    is refused at its start instead (`StoreLockedError` naming the first one's pid). Returns the lock's
    descriptor, held until the server stops."""
    import fcntl

    from .._fs import open_file
    from ..validation import validate_store_path

    root = validate_store_path(data_dir, "namespace root")
    if os.path.islink(root):
        raise InvalidArgumentError(f"the namespace root {root} is a symbolic link")
    try:
        os.makedirs(root, exist_ok=True)
        fd = open_file(os.path.join(root, SERVER_LOCK), os.O_RDWR | os.O_CREAT)
    except OSError as exc:
        raise _errors.StorageError(f"cannot take the data directory {root}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        raise _errors.StoreLockedError(f"another server serves {root} (pid {holder}); one server per data "
                                       "directory") from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _listen(host: str, port: int) -> tuple[socket.socket, str]:
    """A listening TCP socket on ``host:port`` (the first address the name resolves to) and its URL."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (OSError, UnicodeError) as exc:
        raise OSError(errno.EADDRNOTAVAIL, f"cannot listen on {host}:{port}: the host does not resolve ({exc})") \
            from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a restart reuses the port
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    shown = f"[{address[0]}]" if family == socket.AF_INET6 else address[0]
    return sock, f"http://{shown}:{port}"
