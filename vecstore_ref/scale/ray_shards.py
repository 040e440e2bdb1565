"""Shards as Ray actors (the optional ``[ray]`` extra): each actor opens one shard directory and holds its lock.

``ShardedStore.open(path, n, executor="ray")`` (or ``executor=RayExecutor(...)``) starts one actor per shard. The
store talks to each through a ``RayShard``:

- writes, maintenance, stats and exports are Ray actor calls (``call``, or ``submit`` then ``wait`` to have
  several shards work at once); an error raised in the actor is raised again here as itself;
- queries go over the shard's query channel (``wire``): a binary frame each way on a
  connection kept open, which costs tens of microseconds where an actor call costs a millisecond.

**Placement.** ``RayExecutor(node_ids=[...])`` pins shard ``i`` to node ``node_ids[i]`` with Ray's
``NodeAffinitySchedulingStrategy(soft=False)``: its directory is ``path/shard-000i`` on that node's own disk, and
the actor never runs anywhere else (a shard directory is not shared storage). ``actor_options`` go to Ray's
``.options()`` (``num_cpus``, ``resources``, ``runtime_env`` ...); by default an actor reserves no CPU, so more
shards than cores fit on one machine.

**Failure.** When a shard's actor dies (its process is killed, its node is lost), the call that finds out raises
``ShardUnavailableError``; a write that fails so may or may not be in that shard's log (one record: all of it
or none). The shard's next call starts a new actor on the same node, which opens the directory and replays its log:
every acknowledged write is there. If the restart fails, calls fail fast with the same error until a retry time
(1 s, doubling to 30 s) has passed. Ray's own actor restarts are off: only this class restarts a shard, so it always
knows which actor and which channel address are current.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from ..errors import (
    FilterTypeError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    ShardUnavailableError,
    StoreLockedError,
    VecStoreError,
)
from ..opening import opened_by_owner
from ..types import BatchQueryResult, Neighbor
from ..validation import validate_ef, validate_k, validate_vector, validate_vectors
from . import wire
from .routing import check_shard_dir

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from ..filter import Filter
    from ..store import VecStore
    from ..types import Query

RESTART_BACKOFF_S = (1.0, 30.0)  # first wait after a failed restart, and the longest
LOCK_WAIT_S = 30.0
WIRE_MAX_K = 2**31 - 1  # what a request frame can carry; each shard enforces its own max_k  # a restarted actor waits this long for the dead one's directory lock to be released


@dataclass(frozen=True)
class RayExecutor:
    """Where and how the shard actors run (``ShardedStore.open(..., executor=RayExecutor(...))``).

    Attributes:
        node_ids: one Ray node id (hex) per shard: shard ``i`` runs on ``node_ids[i]``, always (its directory lives
            on that node's disk). None: Ray places the actors, which on one machine is the only node.
        actor_options: given to each actor's ``.options()``, e.g. ``{"num_cpus": 1}``; ``scheduling_strategy``,
            ``max_restarts`` and ``max_task_retries`` are set here and cannot be overridden.
        call_timeout_s: a shard call that waits longer raises ``ShardUnavailableError`` (None: no limit; set
            it on many machines, where a lost node can leave a call waiting on the network).
        start_timeout_s: how long an actor may take to start and open (recover) its shard.
    """

    node_ids: Sequence[str] | None = None
    actor_options: dict[str, Any] = field(default_factory=dict)
    call_timeout_s: float | None = None
    start_timeout_s: float = 300.0

    def check(self, n_shards: int) -> None:
        if self.node_ids is not None:
            if isinstance(self.node_ids, (str, bytes)) or len(self.node_ids) != n_shards:
                raise InvalidArgumentError(f"node_ids must list one Ray node id per shard ({n_shards})")
            if not all(isinstance(n, str) for n in self.node_ids):
                raise InvalidArgumentTypeError("node_ids must be strings (Ray node ids in hex)")
        if not isinstance(self.actor_options, dict):
            raise InvalidArgumentTypeError("actor_options must be a dict")
        fixed = {"scheduling_strategy", "max_restarts", "max_task_retries"} & set(self.actor_options)
        if fixed and (self.node_ids is not None or fixed - {"scheduling_strategy"}):
            raise InvalidArgumentError(f"actor_options may not set {', '.join(sorted(fixed))}")
        for name in ("call_timeout_s", "start_timeout_s"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise InvalidArgumentError(f"{name} must be a positive number of seconds")


def _ray() -> Any:  # the ray module (Ray is optional: not analysed by the type checker)
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - the [ray] extra
        raise InvalidArgumentError("executor='ray' needs Ray: pip install 'vecstore-ref[ray]'") from exc
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    return ray


def check_nodes(ray: Any, node_ids: Sequence[str]) -> None:
    """Every node id must name a node of this Ray cluster (a dead one gives ShardUnavailableError later)."""
    known = {n["NodeID"] for n in ray.nodes()}
    unknown = sorted(set(node_ids) - known)
    if unknown:
        raise InvalidArgumentError(f"no node {unknown[0]!r} in this Ray cluster (ray.nodes() lists its nodes)")


# --- the actor's side -----------------------------------------------------------------------------------------

class _ShardActor:
    """Runs in the actor's process: one open store, and the query channel's server."""

    def __init__(self, index: int, path: str, options: dict[str, Any], key: bytes, must_exist: bool,
                 lock_wait_s: float) -> None:
        from ..store import VecStore

        self.error: BaseException | None = None
        # Both are set unless the open failed; then ready() raises the error and the actor gets no other call.
        self.store: VecStore = None  # type: ignore[assignment]
        self.server: wire.QueryServer = None  # type: ignore[assignment]
        try:
            if must_exist:
                check_shard_dir(path, index)
            deadline = time.monotonic() + lock_wait_s
            while True:
                try:
                    with opened_by_owner():
                        self.store = VecStore.open(path, **options)
                    break
                except StoreLockedError:
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(0.05)  # the previous actor's process is still exiting
            import ray

            self.server = wire.QueryServer(self._answer, key, ray.util.get_node_ip_address())
        except VecStoreError as exc:
            self.error = exc

    def ready(self) -> dict[str, Any]:
        """Where the query channel listens; the open's error (typed) if the store did not open."""
        if self.error is not None:
            raise self.error
        import ray

        ctx = ray.get_runtime_context()
        return {"address": self.server.address, "node_id": ctx.get_node_id(), "pid": os.getpid(),
                "resources": ctx.get_assigned_resources()}

    def call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return getattr(self.store, name)(*args, **kwargs)

    def length(self) -> int:
        return len(self.store)

    def contains(self, id_: object) -> bool:
        return id_ in self.store

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.store is not None:
            self.store.close()

    def _answer(self, frame: bytes | bytearray) -> wire.Parts:
        req = wire.decode_request(frame)
        if req.single:
            hits = self.store.query(req.vectors[0], k=req.k, filter=req.filter, ef=req.ef)
            return wire.encode_hits([h.id for h in hits], [h.score for h in hits], [h.metadata for h in hits])
        res = self.store.query_batch(req.vectors, k=req.k, filter=req.filter, ef=req.ef)
        width = int(res.n_found.max()) if res.n_found.size else 0
        found = np.arange(width) < res.n_found[:, None]
        return wire.encode_result(res.ids[:, :width][found].tolist(), res.n_found, res.scores[:, :width], None)


# --- the store's side -----------------------------------------------------------------------------------------

@dataclass
class _Incarnation:
    """One actor of a shard (a restart makes a new one)."""

    actor: Any  # a Ray actor handle
    client: wire.QueryClient
    number: int


class RayShard:
    """One shard in a Ray actor, called like a ``VecStore`` (plus ``submit``/``wait`` and the query channel)."""

    _REMOTE = ("upsert", "upsert_with_ttl", "upsert_many", "get", "delete", "soft_delete", "restore",
               "update_metadata", "set_ttl", "batch_execute", "ids", "expire_ttl_records", "deleted_count",
               "compact", "maybe_compact", "snapshot", "flush_index", "verify", "stats", "_visible_records", "_field_kinds",
               "estimate_query", "query_explain", "set_compaction_config", "compaction_config",
               "set_checkpoint_config", "checkpoint_config")

    def __init__(self, index: int, path: str, options: dict[str, Any], key: bytes, executor: RayExecutor,
                 must_exist: bool) -> None:
        self.index = index
        self.path = path
        self.info: dict[str, Any] = {}  # the running actor's node_id, pid, query channel address and assigned resources
        self._options = options
        self._key = key
        self._executor = executor
        self._must_exist = must_exist
        self._ray = _ray()
        self._lock = threading.Lock()
        self._current: _Incarnation | None = None
        self._started = 0
        self._retry_at = 0.0
        self._backoff = RESTART_BACKOFF_S[0]
        self._last_failure = ""
        self._closed = False
        self._pending_start: tuple[Any, Any] | None = self._launch(lock_wait_s=0.0)

    # --- starting and restarting ----------------------------------------------------------------------------

    def _launch(self, lock_wait_s: float) -> tuple[Any, Any]:
        """Create the actor; returns (actor, ref of its ready() answer)."""
        opts = {"num_cpus": 0, **self._executor.actor_options, "max_restarts": 0, "max_task_retries": 0}
        if self._executor.node_ids is not None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(self._executor.node_ids[self.index],
                                                                         soft=False)
        actor = self._ray.remote(_ShardActor).options(**opts).remote(
            self.index, self.path, self._options, self._key, self._must_exist, lock_wait_s)
        return actor, actor.ready.remote()

    def finish_start(self) -> None:
        """Wait for the actor launched by ``__init__`` (so that several shards start at once)."""
        with self._lock:
            actor, ready = self._pending_start  # type: ignore[misc]  # set by __init__, taken once
            self._pending_start = None
            self._adopt(actor, ready)

    def _adopt(self, actor: Any, ready: Any) -> None:
        ray = self._ray
        try:
            info = ray.get(ready, timeout=self._executor.start_timeout_s)
            client = wire.QueryClient(tuple(info["address"]), self._key, self._executor.call_timeout_s)
        except BaseException as exc:
            ray.kill(actor)
            if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(exc.cause, VecStoreError):
                raise exc.cause from None  # the store did not open: StoreLockedError, CorruptLogError, ...
            if isinstance(exc, (ray.exceptions.RayError, OSError)):
                raise self._unavailable(f"its actor did not start: {_describe(exc)}") from None
            raise
        self.info = info
        self._must_exist = True  # from now on the directory exists: a restart that finds none must not make one
        self._started += 1
        self._current = _Incarnation(actor, client, self._started)
        self._backoff = RESTART_BACKOFF_S[0]

    @property
    def actor(self) -> Any:
        """The shard's current Ray actor handle (None after its loss, until the next call starts another)."""
        cur = self._current
        return None if cur is None else cur.actor

    @property
    def restarts(self) -> int:
        """How many times this shard's actor was started again after a loss."""
        return max(0, self._started - 1)

    def _alive(self) -> _Incarnation:
        """The current actor; after a loss, start a new one (here, in the calling thread) unless a failed restart
        asked to wait."""
        cur = self._current
        if cur is not None:
            return cur
        with self._lock:
            if self._closed:
                from ..errors import StoreClosedError

                raise StoreClosedError(f"the sharded store holding {self.path} is closed")
            if self._current is not None:
                return self._current
            now = time.monotonic()
            if now < self._retry_at:
                raise self._unavailable(f"{self._last_failure}; the next restart is in {self._retry_at - now:.1f} s")
            try:
                self._adopt(*self._launch(lock_wait_s=LOCK_WAIT_S))
            except VecStoreError as exc:  # e.g. its node is gone, or its directory no longer opens
                self._last_failure = f"restarting it failed: {exc}"
                self._retry_at = time.monotonic() + self._backoff
                self._backoff = min(2 * self._backoff, RESTART_BACKOFF_S[1])
                raise self._unavailable(self._last_failure) from None
            return self._current  # type: ignore[return-value]  # _adopt set it

    def _lose(self, incarnation: _Incarnation, why: str) -> None:
        """Forget a dead actor (once, even if several calls find out); the next call starts a new one."""
        with self._lock:
            if self._current is incarnation:
                self._current = None
                self._last_failure = why
                incarnation.client.close()
                try:
                    self._ray.kill(incarnation.actor)  # make sure it is gone, and its lock with it
                except Exception:
                    pass

    def _unavailable(self, why: str) -> ShardUnavailableError:
        return ShardUnavailableError(f"shard {self.index} ({self.path}) is unavailable: {why}", (self.index,))

    # --- Ray calls ------------------------------------------------------------------------------------------

    def submit(self, name: str, *args: Any, **kwargs: Any) -> tuple[_Incarnation, Any]:
        """Start ``name(*args, **kwargs)`` in the actor; ``wait`` gives its value."""
        cur = self._alive()
        method = {"__len__": cur.actor.length, "__contains__": cur.actor.contains}.get(name)
        if method is not None:
            return cur, method.remote(*args)
        return cur, cur.actor.call.remote(name, args, kwargs)

    def wait(self, pending: tuple[_Incarnation, Any]) -> Any:
        cur, ref = pending
        ray = self._ray
        try:
            return ray.get(ref, timeout=self._executor.call_timeout_s)
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, BaseException):
                raise exc.cause from None
            raise
        except ray.exceptions.ActorUnavailableError as exc:
            raise self._unavailable(f"its actor is temporarily unreachable ({_describe(exc)})") from None
        except ray.exceptions.RayActorError as exc:
            self._lose(cur, f"its actor died ({_describe(exc)})")
            raise self._unavailable("its actor died; it reopens from its directory on the next call") from None
        except ray.exceptions.GetTimeoutError:
            raise self._unavailable(f"no answer within {self._executor.call_timeout_s} s") from None

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.wait(self.submit(name, *args, **kwargs))

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name not in RayShard._REMOTE:
            raise AttributeError(name)

        def remote_call(*args: Any, **kwargs: Any) -> Any:
            return self.call(name, *args, **kwargs)

        remote_call.__name__ = name
        return remote_call

    def __len__(self) -> int:
        return cast(int, self.call("__len__"))

    def __contains__(self, id_: object) -> bool:
        return cast(bool, self.call("__contains__", id_))

    # --- the query channel ----------------------------------------------------------------------------------

    def send_query(self, parts: wire.Parts) -> tuple[_Incarnation, wire.Parts, socket.socket]:
        """Send a request frame; ``receive_query`` reads the answer. A connection that fails is replaced once
        (queries are safe to repeat); if the shard's server is gone, its actor is dead."""
        cur = self._alive()
        try:
            return cur, parts, cur.client.send(parts)
        except TimeoutError:
            raise self._unavailable(f"no answer within {self._executor.call_timeout_s} s") from None
        except (OSError, wire.ChannelError):
            return self._resend(cur, parts)

    def receive_query(self, ticket: tuple[_Incarnation, wire.Parts, socket.socket], single: bool,
                      k: int) -> list[Neighbor] | BatchQueryResult:
        cur, parts, sock = ticket
        try:
            frame = cur.client.receive(sock)
        except TimeoutError:  # slow, not gone: no second try, no restart (the late answer dies with the socket)
            raise self._unavailable(f"no answer within {self._executor.call_timeout_s} s") from None
        except (OSError, wire.ChannelError):
            cur, parts, sock = self._resend(cur, parts)
            try:
                frame = cur.client.receive(sock)
            except (OSError, wire.ChannelError) as exc:
                raise self._unavailable(f"its query channel failed twice ({_describe(exc)})") from None
        try:
            if single:
                return [Neighbor(i, s, md) for i, s, md in zip(*wire.decode_hits(frame))]
            return _batch(wire.decode_result(frame), k)
        except wire.ChannelError as exc:
            raise self._unavailable(f"it answered a malformed frame ({exc})") from None

    def _resend(self, cur: _Incarnation, parts: wire.Parts) -> tuple[_Incarnation, wire.Parts, socket.socket]:
        try:
            return cur, parts, cur.client.send(parts)
        except ConnectionRefusedError:
            self._lose(cur, "its query channel refuses connections (the actor is gone)")
        except (OSError, wire.ChannelError) as exc:
            if isinstance(exc, TimeoutError):
                raise self._unavailable(f"no answer within {self._executor.call_timeout_s} s") from None
            self._lose(cur, f"its query channel failed ({_describe(exc)})")
        raise self._unavailable("its actor is gone; it reopens from its directory on the next call")

    def query(self, q: ArrayLike | Query, k: int = 10, filter: str | Filter | None = None,
              ef: int | None = None) -> list[Neighbor]:
        """``VecStore.query`` on this shard alone, over the query channel."""
        from ..types import Query

        if isinstance(q, Query):
            k, filter, ef, q = q.k, q.filter, q.ef, q.vector  # q last: mypy reads the pairs in order
        vec = validate_vector(q, None, None, "query vector")  # the shard checks the rest (dim, norm)
        parts = encode_query(vec[None, :], k, filter, ef, single=True)
        return cast("list[Neighbor]", self.receive_query(self.send_query(parts), True, validate_k(k, WIRE_MAX_K)))

    def query_batch(self, vectors: ArrayLike, k: int = 10, filter: str | Filter | None = None,
                    ef: int | None = None) -> BatchQueryResult:
        """``VecStore.query_batch`` on this shard alone, over the query channel."""
        mat = validate_vectors(vectors, None, None, "query vectors")
        parts = encode_query(mat, k, filter, ef, single=False)
        return cast(BatchQueryResult, self.receive_query(self.send_query(parts), False, validate_k(k, WIRE_MAX_K)))

    # --- closing --------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the store in the actor (its lock is released), then end the actor. Idempotent."""
        self.finish_close(self.start_close())

    def start_close(self) -> tuple[_Incarnation, Any] | None:
        """Ask the actor to close its store; ``finish_close`` waits for it (so several shards close at once)."""
        with self._lock:
            if self._closed:
                return None
            self._closed = True
            cur, self._current = self._current, None
            pending, self._pending_start = self._pending_start, None
        if pending is not None:
            self._ray.kill(pending[0])
        if cur is None:
            return None
        cur.client.close()
        return cur, cur.actor.close.remote()

    def finish_close(self, closing: tuple[_Incarnation, Any] | None) -> None:
        if closing is None:
            return
        cur, ref = closing
        try:
            self._ray.get(ref, timeout=self._executor.call_timeout_s)
        except self._ray.exceptions.RayError:
            pass  # a dead actor holds nothing any more
        finally:
            self._ray.kill(cur.actor)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def encode_query(vectors: np.ndarray, k: object, filter: object, ef: object, single: bool) -> wire.Parts:
    """A request frame for float32 ``vectors`` (n, dim); ``k``, ``ef`` and ``filter`` are checked as far as the
    frame needs (the shard checks them against its own limits)."""
    from ..filter import Filter

    if isinstance(filter, Filter):
        filter = filter.text
    elif filter is not None and not isinstance(filter, str):
        raise FilterTypeError(f"a filter must be a str or a parse_filter() result, got {type(filter).__name__}", 0)
    return wire.encode_request(vectors, validate_k(k, WIRE_MAX_K), validate_ef(ef), filter, single)


def _batch(result: wire.Result, k: int) -> BatchQueryResult:
    n, width = result.scores.shape
    if width > k:
        raise wire.ChannelError(f"result frame: {width} results per row for k = {k}")
    n_found = result.n_found.astype(np.int64)
    ids = np.full((n, k), None, dtype=object)
    scores = np.full((n, k), -np.inf, dtype=np.float32)
    found = np.arange(width) < n_found[:, None]
    view = ids[:, :width]
    view[found] = np.array(result.ids, dtype=object)
    scores[:, :width] = np.where(found, result.scores, -np.inf)
    return BatchQueryResult(ids, scores, n_found)


def new_key() -> bytes:
    """The random key a sharded store gives its actors for the query channel's handshake."""
    return secrets.token_bytes(32)
