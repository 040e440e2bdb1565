"""ShardedStore: N stores behind the API of one (SPEC section 12).

A record lives on the shard a stable hash of its id picks (``.routing``). A single-record call goes to its
shard; a batch is split by shard, each part runs as one atomic batch there, and every per-operation result comes
back at the caller's index; a query asks every shard for its top k at once and merges them (``.merge``), which
with the flat index is exactly one store's answer.

Where the shards run:

- ``executor=None`` (default): in this process, one ``VecStore`` per shard, searched side by side on
  persistent threads (``.fanout``); the store kernels release the GIL.
- ``executor=<a concurrent.futures.Executor>``: the same stores, the calls on that executor.
- ``executor="ray"`` or a ``RayExecutor``: one Ray actor per shard, each owning its directory and lock
  (``.ray_shards``), possibly each on its own machine; queries travel on a binary channel (``.wire``).

Not atomic across shards: a batch or bulk load that touches several shards is one atomic record *per shard*. After
a crash, or when a shard is unavailable, each shard holds all or none of its part.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from .._fs import add_root, get_fs, remove_root
from ..batch import check_bulk_rows, check_ops
from ..config import MAX_K, CheckpointConfig, CompactionConfig
from ..errors import (
    DimensionMismatchError,
    FilterTypeError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidIdTypeError,
    ShardUnavailableError,
    StoreClosedError,
    VecStoreError,
)
from ..metadata import validate_metadata
from ..opening import check_open_options, opened_by_owner
from ..query import batch_width
from ..storage.format import MANIFEST_NAME
from ..storage.manifest import read_manifest
from ..types import (
    QUERY_AND_ARGUMENTS,
    BatchError,
    BatchResult,
    CompactionResult,
    ExplainResult,
    Query,
    QueryEstimate,
    ShardedStats,
    Upsert,
    VerifyReport,
    unpack_query,
)
from ..validation import (
    validate_dim,
    validate_ef,
    validate_id,
    validate_id_list,
    validate_k,
    validate_query_vector,
    validate_ttl,
    validate_vector,
    validate_vectors,
)
from . import routing, wire
from .fanout import ExecutorFanout, ShardThreads
from .merge import ShardedBatchQueryResult, ShardedNeighbors, merge_batches, merge_neighbors
from .ray_shards import RayExecutor, RayShard

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from ..filter import Filter
    from ..store import VecStore
    from ..types import Metadata, Operation, Record

T = TypeVar("T")


class _LocalShards:
    """Shards as ``VecStore`` objects in this process, called through a fan-out (threads)."""

    def __init__(self, root: str, n: int, options: dict[str, Any], executor: Executor | None,
                 must_exist: bool) -> None:
        from ..store import VecStore

        self.fanout = ExecutorFanout(executor) if executor is not None else ShardThreads(n - 1)
        self.handles: list[VecStore] = []
        try:
            for i in range(n):
                if must_exist:
                    routing.check_shard_dir(routing.shard_dir(root, i), i)
                with opened_by_owner():
                    self.handles.append(VecStore.open(routing.shard_dir(root, i), **options))
        except BaseException:
            self.close()
            raise

    def each(self, fn: Callable[[VecStore, T], Any], items: Iterable[T]) -> list[Any]:
        """``fn(shard, item)`` for every (shard, item) pair at once; outcomes (values or exceptions) in order."""
        return self.fanout.run(lambda pair: fn(*pair), list(zip(self.handles, items)))

    def call_each(self, name: str, args_per_shard: Sequence[tuple[Any, ...] | None],
                  kwargs: dict[str, Any]) -> list[Any]:
        """``shard.name(*args, **kwargs)`` on every shard whose args are not None (the others give None)."""
        def run(shard: VecStore, args: tuple[Any, ...] | None) -> Any:
            return None if args is None else getattr(shard, name)(*args, **kwargs)

        return self.each(run, args_per_shard)

    def query(self, vectors: np.ndarray, k: int, flt: Filter | None, ef: int | None, single: bool) -> list[Any]:
        # The split holds every shard's read lock while the searches run, so it needs a fan-out that never
        # queues a part behind other work: the shard threads run a part themselves when no worker is free. On a
        # caller's executor a part could wait behind a write that waits for those very locks.
        if single and flt is None and isinstance(self.fanout, ShardThreads):
            return self._query_split(vectors, k, ef)
        if single:
            return self.each(lambda s, _: s.query(vectors, k=k, filter=flt, ef=ef), self.handles)
        return self.each(lambda s, _: s.query_batch(vectors, k=k, filter=flt, ef=ef), self.handles)

    def _query_split(self, vector: np.ndarray, k: int, ef: int | None) -> list[Any]:
        """An unfiltered single query: each shard's Python (lock, mask, plan, results) runs here, in the calling
        thread, and only the searches are handed out (`vecstore_ref.query.QueryPart`), so the workers hardly
        ever need the GIL the caller holds. Outcomes (results or exceptions) in shard order."""
        parts: list[Any] = []
        try:
            for shard in self.handles:
                try:
                    parts.append(shard._query_part(vector, k, ef))
                except BaseException as exc:
                    parts.append(exc)
            live = [p for p in parts if not isinstance(p, BaseException)]
            found = iter(self.fanout.run(_search_part, live))
            out: list[Any] = []
            for p in parts:
                if isinstance(p, BaseException):
                    out.append(p)
                    continue
                f = next(found)
                if isinstance(f, BaseException):
                    out.append(f)
                    continue
                try:
                    out.append(p.finish(f))
                except BaseException as exc:
                    out.append(exc)
            return out
        finally:
            for p in parts:
                if not isinstance(p, BaseException):
                    p.release()

    def close(self) -> None:
        for s in self.handles:
            s.close()
        self.fanout.close()


def _search_part(part: Any) -> Any:
    return part.search()


class _RayShards:
    """Shards as Ray actors: Ray calls are submitted to every shard, then waited for; queries are frames sent to
    every shard, then read back. No thread is needed to have all shards work at once."""

    def __init__(self, root: str, n: int, options: dict[str, Any], executor: RayExecutor, must_exist: bool) -> None:
        from .ray_shards import _ray, check_nodes, new_key

        if executor.node_ids is not None:
            check_nodes(_ray(), executor.node_ids)
        key = new_key()
        self.handles: list[RayShard] = []
        try:
            for i in range(n):  # every actor starts, then each is waited for: they open their shards at once
                self.handles.append(RayShard(i, routing.shard_dir(root, i), options, key, executor, must_exist))
            for h in self.handles:
                h.finish_start()
        except BaseException:
            self.close()
            raise

    def _wait_all(self, pending: list[Any]) -> list[Any]:
        out = []
        for shard, p in zip(self.handles, pending):
            if p is None or isinstance(p, BaseException):
                out.append(p)
                continue
            try:
                out.append(shard.wait(p))
            except BaseException as exc:
                out.append(exc)
        return out

    def _submit(self, shard: RayShard, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            return shard.submit(name, *args, **kwargs)
        except BaseException as exc:
            return exc

    def call_each(self, name: str, args_per_shard: Sequence[tuple[Any, ...] | None],
                  kwargs: dict[str, Any]) -> list[Any]:
        pending = [None if args is None else self._submit(s, name, args, kwargs)
                   for s, args in zip(self.handles, args_per_shard)]
        return self._wait_all(pending)

    def query(self, vectors: np.ndarray, k: int, flt: Filter | None, ef: int | None, single: bool) -> list[Any]:
        parts = wire.encode_request(vectors[None, :] if single else vectors, k, ef,
                                    None if flt is None else flt.text, single)  # one frame, sent to every shard
        tickets: list[Any] = []
        for s in self.handles:
            try:
                tickets.append(s.send_query(parts))
            except BaseException as exc:
                tickets.append(exc)
        out: list[Any] = []
        for s, t in zip(self.handles, tickets):
            if isinstance(t, BaseException):
                out.append(t)
                continue
            try:
                out.append(s.receive_query(t, single, k))
            except BaseException as exc:
                out.append(exc)
        return out

    def close(self) -> None:
        closing = [s.start_close() for s in self.handles]
        for s, c in zip(self.handles, closing):
            s.finish_close(c)


def _raise_first(outcomes: list[Any]) -> list[Any]:
    for r in outcomes:
        if isinstance(r, BaseException):
            raise r
    return outcomes


def _vector_length(vector: Any) -> int | None:  # anything a caller passed as a vector
    """The length of something that may be a vector (None if it has none; the shard then says what is wrong)."""
    shape = getattr(vector, "shape", None)
    if shape is not None:
        return int(shape[0]) if len(shape) == 1 else None
    try:
        return len(vector) if not isinstance(vector, (str, bytes, dict)) else None
    except TypeError:
        return None


def _wrote_something(outcome: Any) -> bool:
    """Whether a write's outcome stored anything: a batch whose every op failed fixes no dimension."""
    if isinstance(outcome, BatchResult):
        return outcome.succeeded > 0
    if isinstance(outcome, list):  # one outcome per shard (None where the shard had no part)
        return any(r is not None and _wrote_something(r) for r in outcome)
    return True


def _check_requested_dim(root: str, n: int, dim: int | None) -> None:
    """Refuse ``dim=`` before any shard opens when a shard on this machine already holds vectors of another
    dimension: opened one by one, the empty shards would each have saved the new dimension before the one holding
    vectors refused it, leaving shards that disagree."""
    if dim is None:
        return
    fs = get_fs()
    for i in range(n):
        directory = routing.shard_dir(root, i)
        if not os.path.lexists(directory):
            continue  # (on another node, or not created yet: that shard's own open checks it)
        manifest = read_manifest(fs, directory)  # (through the root's checks: a planted link is refused here)
        stored = None if manifest is None else manifest.options.get("dim")
        if stored is not None and stored != dim:
            raise InvalidArgumentError(f"this store holds {stored}-dimensional vectors; opened with dim={dim}")


class ShardedStore:
    """Records spread over ``n_shards`` ``VecStore`` directories under ``path``.

    Open it with ``open``. Writes and reads take the arguments of the same ``VecStore`` calls.
    """

    def __init__(self, path: str | os.PathLike[str], n_shards: int | None = None, *,
                 executor: Executor | RayExecutor | str | None = None, **open_options: Any) -> None:
        self._closed = True
        if executor == "ray":
            executor = RayExecutor()
        if executor is not None and not isinstance(executor, (Executor, RayExecutor)):
            raise InvalidArgumentError(f"executor must be None, a concurrent.futures.Executor, 'ray' or a "
                                       f"RayExecutor, got {executor!r}")
        check_open_options(open_options)  # everything is checked before anything is written
        if n_shards is not None:
            routing.check_shard_count(n_shards)
        self.path = os.path.abspath(os.fspath(path))
        self._clock = open_options.get("clock") or time.time
        self._max_k = open_options.get("max_k", MAX_K)
        self._closed = True
        # Below its root nothing is reached through a symbolic link (vecstore_ref._fs.add_root), as for namespaces.
        self._root = add_root(self.path)
        try:
            existing = routing.read_shard_count(self.path, n_shards)
            if existing is None and get_fs().exists(os.path.join(self.path, MANIFEST_NAME)):
                raise InvalidArgumentError(f"{self.path} holds a VecStore, not a sharded store: open it with "
                                           "vs.VecStore.open (or export it and import it into a new ShardedStore)")
            self.n_shards = existing or routing.check_shard_count(n_shards)
            if isinstance(executor, RayExecutor):
                executor.check(self.n_shards)
            if existing is None:
                get_fs().makedirs(self.path)
            else:
                _check_requested_dim(self.path, self.n_shards, open_options.get("dim"))
        except BaseException:
            remove_root(self._root)
            raise
        try:
            self._group: _LocalShards | _RayShards
            if isinstance(executor, RayExecutor):
                self._group = _RayShards(self.path, self.n_shards, open_options, executor, must_exist=bool(existing))
            else:
                self._group = _LocalShards(self.path, self.n_shards, open_options, executor,
                                           must_exist=bool(existing))
        except BaseException:
            remove_root(self._root)
            raise
        self._closed = False
        try:
            if existing is None:
                routing.write_shard_count(self.path, self.n_shards)  # last: the commit point of a new store
            stats = _raise_first(self._group.call_each("stats", [()] * self.n_shards, {}))
        except BaseException:
            self.close()
            raise
        self._metric: str = stats[0].metric
        self._dim: int | None = next((s.dim for s in stats if s.dim is not None), None)
        self._dim_lock = threading.Lock()  # held by writes while the dimension is not known yet

    @classmethod
    def open(cls, path: str | os.PathLike[str], n_shards: int | None = None, *,
             executor: Executor | RayExecutor | str | None = None, **open_options: Any) -> ShardedStore:
        """Open (or create, with ``n_shards``, default 4) a sharded store.

        Args:
            path: the directory holding ``SHARDS.json`` and (on one machine) the shard directories.
            n_shards: the shard count of a new store; an existing store keeps its own (another count is an
                ``InvalidArgumentError``).
            executor: where the shards run: None (threads in this process), a ``concurrent.futures.Executor``,
                ``"ray"`` or a ``RayExecutor`` (one Ray actor per shard).
            **open_options: as for ``open``, given to every shard.
        """
        return cls(path, n_shards, executor=executor, **open_options)

    @property
    def shards(self) -> list[VecStore] | list[RayShard]:
        """The shards: ``VecStore`` objects, or ``RayShard`` handles with the same methods."""
        return self._group.handles

    def close(self) -> None:
        """Close every shard (and end the shard threads or actors). Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._group.close()
        finally:
            remove_root(self._root)

    def __enter__(self) -> ShardedStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ShardedStore {self.path!r} ({self.n_shards} shards)>"

    # --- plumbing ---------------------------------------------------------------------------------------------

    def _shard(self, id_: str) -> VecStore | RayShard:
        self._check_open()  # a closed store says so, whatever the id
        return self._group.handles[routing.shard_of(id_, self.n_shards)]

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"the sharded store at {self.path} is closed")

    def _on_all(self, name: str, *args: Any, **kwargs: Any) -> list[Any]:
        """``name(*args, **kwargs)`` on every shard at once; the first error is raised after all have finished."""
        self._check_open()
        return _raise_first(self._group.call_each(name, [args] * self.n_shards, kwargs))

    def _check_dim(self, length: int | None, what: str = "vector") -> None:
        if self._dim is not None and length is not None and length != self._dim:
            raise DimensionMismatchError(f"{what} has {length} dimensions; this store holds {self._dim}")

    def _write_vectors(self, length: int | None, write: Callable[[], T]) -> T:
        """Run ``write()``, which stores vectors of ``length`` dimensions. Until the store knows its dimension,
        such writes take turns, and the first that succeeds sets it for every shard: otherwise two shards could
        each accept a different dimension."""
        if self._dim is not None:
            self._check_dim(length)
            return write()
        with self._dim_lock:
            self._check_dim(length)
            out = write()
            if self._dim is None and length is not None and _wrote_something(out):
                self._dim = length
            return out

    # --- single records ---------------------------------------------------------------------------------------

    def upsert(self, id: str, vector: ArrayLike, metadata: Metadata | None = None, *,
               ttl: float | None = None) -> None:
        shard = self._shard(id)
        self._write_vectors(_vector_length(vector), lambda: shard.upsert(id, vector, metadata, ttl=ttl))

    def upsert_with_ttl(self, id: str, vector: ArrayLike, metadata: Metadata | None, ttl: float) -> None:
        self.upsert(id, vector, metadata, ttl=ttl)

    def get(self, id: str, *, include_deleted: bool = False) -> Record:
        return self._shard(id).get(id, include_deleted=include_deleted)

    def delete(self, id: str) -> None:
        self._shard(id).delete(id)

    def soft_delete(self, id: str) -> bool:
        return self._shard(id).soft_delete(id)

    def restore(self, id: str) -> bool:
        return self._shard(id).restore(id)

    def update_metadata(self, id: str, metadata: Metadata | None) -> None:
        self._shard(id).update_metadata(id, metadata)

    def set_ttl(self, id: str, ttl: float | None) -> None:
        self._shard(id).set_ttl(id, ttl)

    def __contains__(self, id: object) -> bool:
        return isinstance(id, str) and id in self._shard(id)

    def __len__(self) -> int:
        return sum(self._on_all("__len__"))

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids())

    def ids(self) -> list[str]:
        return [i for part in self._on_all("ids") for i in part]

    # --- bulk writes ------------------------------------------------------------------------------------------

    def upsert_many(self, ids: Iterable[str], vectors: ArrayLike, metadatas: Iterable[Metadata | None] | None = None,
                    *, ttl: float | None = None, progress: bool | Callable[[int, int], object] | None = None) -> int:
        """Split the rows by shard and load every shard's part at once; returns the rows written.

        Every row is checked first (vectors, ids, metadata, the TTL), so a bad input fails before any shard is
        written; the shards check again what they receive. ``progress`` (True for a tqdm bar, or a callable
        ``(done, total)``) hears once, when every shard has finished.
        """
        self._check_open()
        ids = validate_id_list(ids)
        mat = validate_vectors(vectors, self._dim, self._metric)  # every check for all shards: all or nothing
        if mat.shape[0] != len(ids):
            raise InvalidArgumentError(f"{len(ids)} ids but {mat.shape[0]} vectors")
        metadatas = check_bulk_rows(ids, metadatas)
        validate_ttl(ttl, allow_none=True)
        if progress is not None and progress is not True and progress is not False and not callable(progress):
            raise InvalidArgumentTypeError("progress must be None, True or a callable (done, total)")
        owner = np.fromiter((routing.shard_of(i, self.n_shards) for i in ids), dtype=np.int64, count=len(ids))
        parts: list[tuple[list[str], np.ndarray, list[Metadata | None]] | None] = []
        for s in range(self.n_shards):
            rows = np.flatnonzero(owner == s)
            picked = rows.tolist()
            parts.append(None if not picked else ([ids[r] for r in picked], mat[rows], [metadatas[r] for r in picked]))

        def write() -> int:
            return sum(r or 0 for r in _raise_first(self._group.call_each("upsert_many", parts, {"ttl": ttl})))

        done = self._write_vectors(mat.shape[1] if len(ids) else None, write)
        if progress is True:
            from tqdm.auto import tqdm

            with tqdm(total=len(ids), unit="vec") as bar:
                bar.update(done)
        elif callable(progress):
            progress(done, len(ids))
        return done

    def batch_execute(self, ops: Sequence[Operation]) -> BatchResult:
        """Split ``ops`` by shard (order kept within each shard), run every shard's part at once as one atomic
        batch there, and report every error at the caller's index.

        If a shard is unavailable, ``ShardUnavailableError`` is raised after the other shards finished their
        parts; that shard's part is all there or not at all.
        """
        self._check_open()
        t0 = time.perf_counter()
        ops = check_ops(ops)
        length, fixed_at = self._batch_dim(ops)
        by_shard: list[list[int]] = [[] for _ in range(self.n_shards)]
        early: list[BatchError] = []
        expected = self._dim if self._dim is not None else length
        for i, op in enumerate(ops):
            try:
                shard = routing.shard_of(op.id, self.n_shards)
            except InvalidIdTypeError as exc:
                early.append(BatchError(i, _describe(op), str(exc), type(exc).__name__))
                continue
            # (an upsert before the one that fixes the dimension fails in its shard, for its own reason)
            if isinstance(op, Upsert) and expected is not None and i >= fixed_at:
                n = _vector_length(op.vector)
                if n is not None and n != expected:
                    err = DimensionMismatchError(f"vector has {n} dimensions; this store holds {expected}")
                    early.append(BatchError(i, _describe(op), str(err), type(err).__name__))
                    continue
            by_shard[shard].append(i)
        parts = [[ops[i] for i in idx] if idx else None for idx in by_shard]

        def write() -> list[Any]:
            return _raise_first(self._group.call_each("batch_execute", [None if p is None else (p,) for p in parts],
                                                      {}))

        results = self._write_vectors(length, write)
        errors = list(early)
        succeeded = 0
        for idx, res in zip(by_shard, results):
            if res is None:
                continue
            succeeded += res.succeeded
            errors += [BatchError(idx[e.index], e.operation, e.error, e.type) for e in res.errors]
        errors.sort(key=lambda e: e.index)
        return BatchResult(succeeded, len(errors), errors, (time.perf_counter() - t0) * 1e3)

    def _batch_dim(self, ops: list[Operation]) -> tuple[int | None, int]:
        """The dimension a batch's upserts set while the store has none: that of its first upsert that succeeds
        (as in one store, where ops apply in order: an upsert refused for its id, metadata or TTL fixes nothing).

        Returns ``(dimension, index of that upsert)``; ``(store's dimension, 0)`` once it has one, ``(None, 0)`` if
        no upsert succeeds."""
        if self._dim is not None:
            return self._dim, 0
        for i, op in enumerate(ops):
            if isinstance(op, Upsert):
                try:
                    validate_id(op.id)
                    dim = validate_dim(int(validate_vector(op.vector, None, self._metric).shape[0]))
                    if op.metadata is not None:
                        validate_metadata(op.metadata)
                    if op.ttl is not None:
                        validate_ttl(op.ttl)
                except VecStoreError:
                    continue
                return dim, i
        return None, 0

    # --- queries ----------------------------------------------------------------------------------------------

    def _gather(self, outcomes: list[Any], allow_partial: bool) -> tuple[list[Any], tuple[int, ...]]:
        """The shards' answers, and the shards that did not answer (an error unless ``allow_partial``)."""
        missing = tuple(i for i, r in enumerate(outcomes) if isinstance(r, ShardUnavailableError))
        for r in outcomes:
            if isinstance(r, BaseException) and not isinstance(r, ShardUnavailableError):
                raise r
        if missing and not allow_partial:
            if len(missing) == 1:
                raise outcomes[missing[0]]
            raise ShardUnavailableError(f"shards {', '.join(map(str, missing))} are unavailable: "
                                        + "; ".join(str(outcomes[i]) for i in missing), missing)
        return [r for r in outcomes if not isinstance(r, BaseException)], missing

    def _query_args(self, k: object, filter: object, ef: object) -> tuple[int, Filter | None, int | None]:
        if type(k) is not int or not 1 <= k <= self._max_k:
            k = validate_k(k, self._max_k)
        if ef is not None:
            ef = validate_ef(ef)
        if filter is None:
            return k, None, ef
        from ..filter import Filter, parse_filter

        if isinstance(filter, str):
            filter = parse_filter(filter)  # once, here: a syntax error costs no shard a call
        elif filter is not None and not isinstance(filter, Filter):
            raise FilterTypeError(f"a filter must be a str or a parse_filter() result, got {type(filter).__name__}",
                                  0)
        return k, filter, ef

    def query(self, q: ArrayLike | Query, k: int = 10, filter: str | Filter | None = None, ef: int | None = None,
              *, allow_partial: bool = False) -> ShardedNeighbors:
        """The global top k: every shard's top k at once, merged by score (ties by id).

        A shard that cannot answer raises ``ShardUnavailableError``; with ``allow_partial=True`` the other
        shards' results come back instead, and ``missing_shards`` on the result names the shards left out.
        """
        if self._closed:
            raise StoreClosedError(f"the sharded store at {self.path} is closed")
        if type(q) is not np.ndarray:  # (an array is the common case: no call)
            q, k, filter, ef, conflict = unpack_query(q, k, filter, ef)
            if conflict:
                raise InvalidArgumentError(QUERY_AND_ARGUMENTS)
        k, flt, ef = self._query_args(k, filter, ef)
        vec = validate_query_vector(q, self._dim, self._metric)
        if self._dim is None:
            return ShardedNeighbors()
        parts, missing = self._gather(self._group.query(vec, k, flt, ef, single=True), allow_partial)
        return ShardedNeighbors(merge_neighbors(parts, k), missing)

    def query_batch(self, vectors: ArrayLike, k: int = 10, filter: str | Filter | None = None,
                    ef: int | None = None, *, allow_partial: bool = False) -> ShardedBatchQueryResult:
        """The same for each row of ``vectors``: one call per shard for the whole batch, merged as matrices."""
        self._check_open()
        k, flt, ef = self._query_args(k, filter, ef)
        mat = validate_vectors(vectors, self._dim, self._metric, "query vectors")
        if self._dim is None or mat.shape[0] == 0:
            n = mat.shape[0]
            w = batch_width(k, 0)
            return ShardedBatchQueryResult(np.full((n, w), None, dtype=object), np.full((n, w), -np.inf, np.float32),
                                           np.zeros(n, dtype=np.int64))
        parts, missing = self._gather(self._group.query(mat, k, flt, ef, single=False), allow_partial)
        if not parts:
            n = mat.shape[0]
            w = batch_width(k, 0)
            return ShardedBatchQueryResult(np.full((n, w), None, dtype=object), np.full((n, w), -np.inf, np.float32),
                                           np.zeros(n, dtype=np.int64), missing)
        ids, scores, n_found = merge_batches(parts, k)
        width = batch_width(k, int(n_found.max()) if n_found.size else 0)  # as one store's (a huge k)
        if ids.shape[1] > width:
            ids, scores = ids[:, :width], scores[:, :width]
        elif ids.shape[1] < width:  # padded as one store's rows are: None ids, -inf scores
            pad = width - ids.shape[1]
            ids = np.concatenate([ids, np.full((ids.shape[0], pad), None, dtype=object)], axis=1)
            scores = np.concatenate([scores, np.full((scores.shape[0], pad), -np.inf, np.float32)], axis=1)
        return ShardedBatchQueryResult(ids, scores, n_found, missing)

    def estimate_query(self, q: ArrayLike | Query, k: int = 10, filter: str | Filter | None = None,
                       ef: int | None = None) -> QueryEstimate:
        """Validate a query and estimate its cost on the shards without running it; never raises for a bad query.

        Every shard estimates its part at once; the parts combine as one store's estimate would read: distance
        computations add up, the time is the slowest shard's (the shards run side by side), and the filter
        is checked against the fields of all shards together (`vecstore_ref.scale.explain`)."""
        self._check_open()
        from .explain import estimate_across

        return estimate_across(self, q, k, filter, ef)

    def query_explain(self, q: ArrayLike | Query, k: int = 10, filter: str | Filter | None = None,
                      ef: int | None = None) -> ExplainResult:
        """Run a query on every shard with its explain: the merged results ranked again, the work counters
        summed, and the time of each phase of the slowest shard (``shards.<phase>``) beside the fan-out's
        (``shards``) and the merge's."""
        self._check_open()
        from .explain import explain_across

        return explain_across(self, q, k, filter, ef)

    # --- maintenance ------------------------------------------------------------------------------------------

    def expire_ttl_records(self) -> int:
        return sum(self._on_all("expire_ttl_records"))

    def deleted_count(self) -> int:
        return sum(self._on_all("deleted_count"))

    def compact(self) -> int:
        return sum(self._on_all("compact"))

    def compaction_config(self) -> CompactionConfig:
        """The shards' `CompactionConfig` (one for all: `set_compaction_config` sets every shard's)."""
        cfg: CompactionConfig = self._on_all("compaction_config")[0]
        return cfg

    def set_compaction_config(self, cfg: CompactionConfig) -> None:
        """Set when every shard's `maybe_compact` compacts it; persisted in each shard's manifest."""
        if not isinstance(cfg, CompactionConfig):
            raise InvalidArgumentTypeError("set_compaction_config takes a CompactionConfig")
        cfg.validate()
        self._on_all("set_compaction_config", cfg)

    def checkpoint_config(self) -> CheckpointConfig:
        """The shards' `CheckpointConfig` (one for all: `set_checkpoint_config` sets every shard's)."""
        cfg: CheckpointConfig = self._on_all("checkpoint_config")[0]
        return cfg

    def set_checkpoint_config(self, cfg: CheckpointConfig) -> None:
        """Set when every shard checkpoints by itself; persisted in each shard's manifest."""
        if not isinstance(cfg, CheckpointConfig):
            raise InvalidArgumentTypeError("set_checkpoint_config takes a CheckpointConfig")
        cfg.validate()
        self._on_all("set_checkpoint_config", cfg)

    def maybe_compact(self) -> CompactionResult:
        """Each shard decides for itself; the result sums what ran."""
        results = self._on_all("maybe_compact")
        ran = [r for r in results if r.triggered]
        reason = f"{len(ran)} of {self.n_shards} shards compacted: " + "; ".join(
            f"shard {i}: {r.reason}" for i, r in enumerate(results))
        return CompactionResult(bool(ran), sum(r.removed_count for r in ran),
                                max((r.duration_ms for r in ran), default=0.0), reason)

    def snapshot(self) -> None:
        self._on_all("snapshot")

    def flush_index(self) -> int:
        return sum(self._on_all("flush_index"))

    def verify(self) -> VerifyReport:
        reports = self._on_all("verify")
        errors = [f"shard {i}: {e}" for i, r in enumerate(reports) for e in r.errors]
        return VerifyReport(all(r.ok for r in reports), sum(r.files_checked for r in reports),
                            sum(r.records_checked for r in reports), errors)

    def stats(self) -> ShardedStats:
        """Totals over the shards, the options they share, and each shard's ``StoreStats`` (``.shards``)."""
        return ShardedStats.of(self._on_all("stats"))

    # --- export and import ------------------------------------------------------------------------------------

    def export(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Write every visible record to ``path``: ``vectors.npy``, ``records.jsonl``, ``manifest.json`` (see
        ``export_records``). In-process shards are read under all their locks at once (one
        consistent picture); Ray shards each under their own lock."""
        self._check_open()
        from ..export import export_records

        return export_records(self.shards, path)

    def import_(self, path: str | os.PathLike[str], *, batch_size: int = 10_000,
                progress: Callable[[int, int], object] | None = None) -> int:
        """Upsert every record of an export at ``path`` (its checksums and dimension checked before the first
        write), as `VecStore.import_` does; returns how many were imported (records expired since the export are
        left out).

        Re-sharding is an export from the old store and an import into a new one with another shard count."""
        self._check_open()
        from ..export import import_records

        return import_records(self, path, batch_size=batch_size, progress=progress).imported

    def _now(self) -> float:
        """The store's clock (the one its shards use), for TTLs carried as time left."""
        return self._clock()


def _describe(op: Operation) -> str:
    try:
        return op.describe()
    except Exception:
        return type(op).__name__.lower()
