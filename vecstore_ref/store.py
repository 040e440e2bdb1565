"""VecStore: the public face of a store directory.

A store is a directory holding a lock file, a manifest, at most one live snapshot and the log segments written since
(see ``docs/concepts/storage-format.md`` and ``docs/concepts/durability.md``). This module orchestrates: it validates,
plans batches (`.batch`), appends one log record per call, applies the record to the in-memory state
(`.state`) and answers queries through the index. It owns no format details and no kernels.

Durability (``durability=``):

- ``"fsync"`` (default): a write returns only after its record is fsynced.
- ``"batch"``: records reach the OS at once and are fsynced at most every 100 ms and at close; a kill -9 loses
  nothing that returned, a power cut may lose the last interval.
- ``"none"``: fsync only at snapshot and close; for bulk loads and tests.

Threads (``docs/concepts/concurrency.md``): writes are serialized by the store's write lock; reads share a
read-write lock that a write takes alone only while it applies its record to memory, after the record is
durable. So reads run in parallel with each other and with fsyncs, graph linking, checkpoints and compactions,
and each read sees every write acknowledged before it began and, of a write in flight, all of it or none.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _crash
from . import _fs as fsmod
from .batch import check_bulk_rows, check_ops, plan_batch
from .checkpoint import CheckpointMethods
from .compaction import compaction_decision
from .config import MAX_K, CheckpointConfig, CompactionConfig, HNSWParams
from .cost import CostModel
from .errors import (
    CorruptLogError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidVectorError,
    NotFoundError,
    ReadOnlyError,
    StorageError,
    StoreClosedError,
    VecStoreError,
)
from .filter import Filter
from .opening import OpeningMethods, _close_index, check_not_owned
from .query import Match, QueryMethods
from .rwlock import ReadWriteLock
from .state import SOFT
from .storage.format import (
    FORMAT_VERSION,
    LOCK_NAME,
    LOG_HEADER_SIZE,
    MANIFEST_NAME,
    RECORD_BATCH,
    SHARDS_FILE,
)
from .storage.lock import DirectoryLock
from .storage.log import LogWriter
from .storage.records import RecordDecodeError, decode_batch, encode_batch, encode_upserts
from .storage.verify import verify_files
from .types import (
    BatchResult,
    CompactionResult,
    Delete,
    Record,
    RecoveryReport,
    Restore,
    SetTTL,
    SoftDelete,
    StoreStats,
    UpdateMetadata,
    Upsert,
    VerifyReport,
)
from .validation import (
    check_cosine_norms,
    validate_id,
    validate_id_list,
    validate_store_path,
    validate_vectors,
)

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from .namespaces import Quotas
    from .types import Metadata, Operation

log = logging.getLogger(__name__)

BATCH_FSYNC_INTERVAL_S = 0.1  # durability="batch": fsync at most this often
UPSERT_MANY_CHUNK_BYTES = 32 * 2**20  # 32 MiB of vectors per log record in upsert_many
READ_ONLY_OPEN_ATTEMPTS = 20  # a read-only open beside a writer that checkpoints: tries again on the new manifest
class _Moments(threading.local):
    """Per thread: id(store) -> the clock reading a multi-step read of that store uses throughout."""

    def __init__(self) -> None:
        self.by_store: dict[int, float] = {}


_PINNED = _Moments()
_open_stores: weakref.WeakSet[VecStore] = weakref.WeakSet()  # every open VecStore of this process (closed at exit)


def _close_open_stores() -> None:
    """At interpreter exit, while background threads still run: close every store left open, as ``close()``
    would (a forgotten ``close`` otherwise meant a hang at exit, or a graph linked again at the next open)."""
    for store in list(_open_stores):
        try:
            store.close()
        except Exception:  # pragma: no cover - exit goes on; the log holds every acknowledged write
            log.exception("closing the store at %s at exit failed", getattr(store, "path", "?"))


atexit.register(_close_open_stores)
if hasattr(os, "register_at_fork"):  # a forked child does not own its parent's stores: it must not close them
    os.register_at_fork(after_in_child=_open_stores.clear)


class VecStore(OpeningMethods, QueryMethods, CheckpointMethods):
    """An embedded vector store on a local directory. Open it with [`VecStore.open`][vecstore_ref.VecStore.open]."""

    # Reads never wait for a lock held across I/O (a write's fsync, a checkpoint, a compaction): at most for a
    # write's in-memory apply (see vecstore_ref.rwlock). The HTTP server then runs them on its event loop.
    reads_wait_for_io = False

    # --- opening and closing ----------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        dim: int | None = None,
        metric: str | None = None,
        index: str | None = None,
        hnsw: HNSWParams | None = None,
        durability: str = "fsync",
        read_only: bool = False,
        repair: bool = False,
        clock: Callable[[], float] | None = None,
        max_k: int = MAX_K,
        fs: fsmod.OSFileSystem | None = None,
    ) -> VecStore:
        """Open the store at ``path``, creating the directory and an empty store if missing.

        ``metric``, ``index`` and ``hnsw`` default to what the store was created with (``"cosine"``, ``"hnsw"`` and
        ``HNSWParams()`` for a new store). ``dim`` and ``metric`` that conflict with an existing store raise
        [`InvalidArgumentError`][vecstore_ref.errors.InvalidArgumentError]. ``clock`` (seconds, like
        ``time.time``) judges TTLs; tests inject a fake one.
        """
        return cls(path, dim=dim, metric=metric, index=index, hnsw=hnsw, durability=durability,
                   read_only=read_only, repair=repair, clock=clock, max_k=max_k, fs=fs)

    def __init__(self, path: str | os.PathLike[str], *, dim: int | None = None, metric: str | None = None,
                 index: str | None = None, hnsw: HNSWParams | None = None, durability: str = "fsync",
                 read_only: bool = False, repair: bool = False, clock: Callable[[], float] | None = None,
                 max_k: int = MAX_K, fs: fsmod.OSFileSystem | None = None) -> None:
        self._closed = True
        self._root: str | None = None  # the directory registered as a root while the store is open
        self._lock = threading.RLock()  # the write lock: one writer (or checkpoint switch) at a time
        self._rw = ReadWriteLock()  # readers share it; a write takes it alone only to apply to memory
        self._ckpt_lock = threading.Lock()  # one checkpoint (or compaction) at a time
        self._manifest_lock = threading.Lock()  # one manifest write at a time (taken after _lock, never before)
        self._close_lock = threading.Lock()
        self.path = validate_store_path(path)
        if fs is not None and not isinstance(fs, fsmod.OSFileSystem):
            raise InvalidArgumentTypeError(f"fs must be an OSFileSystem (or FaultFS), got {type(fs).__name__}")
        self._fs = fs or fsmod.get_fs()
        self._check_open_options(dim, metric, index, hnsw, durability, read_only, repair, clock, max_k)
        if dim is not None:
            dim = int(dim)  # a numpy integer is a valid dim, and is written to the manifest as a plain int
        self._clock = clock or time.time
        self._durability = durability
        self._read_only = bool(read_only)
        self._poisoned: str | None = None
        self._max_k = max_k
        self._filter_cache: dict[str, Filter] = {}
        self._mask_cache: dict[str, Match] = {}  # filter text -> query.Match of one store version
        self._mask_lock = threading.Lock()
        self._cost = CostModel()
        self._compaction_config = CompactionConfig()
        self._checkpoint_config = CheckpointConfig()
        self._last_compaction: dict[str, float] | None = None
        self._last_checkpoint_at: float | None = None
        self._snapshot_bytes = 0  # size of the live snapshot file
        self._older_log_bytes = 0  # log bytes since the last checkpoint in segments other than the current one
        self._linked_at_checkpoint = 0  # the index's linked_count when the live snapshot was captured
        self._seq_seen, self._seq_seen_at = -1, 0.0  # when the checkpoint thread last saw a new write
        self._ckpt_thread: threading.Thread | None = None
        self._ckpt_wake = threading.Event()
        self._ckpt_stop = threading.Event()
        self._ckpt_retry_at = 0.0
        self._writer: LogWriter | None = None
        self._dir_lock: DirectoryLock | None = None
        self._flusher: threading.Thread | None = None
        self._flush_stop = threading.Event()
        self._dirty = False
        self._quota: Quotas | None = None  # a namespace's quotas, checked before each log append
        self.recovery_report = RecoveryReport()

        if not read_only:
            check_not_owned(self._fs, self.path)
        if not self._fs.isdir(self.path):
            if read_only:
                raise NotFoundError(f"no store at {self.path}")
            try:
                self._fs.makedirs(self.path)
            except OSError as exc:  # e.g. a parent that is a file, a name too long, no permission
                if isinstance(exc, StorageError):
                    raise
                raise StorageError(f"cannot create the store directory {self.path}: {exc}") from exc
        elif not self._fs.exists(os.path.join(self.path, MANIFEST_NAME)) and self._fs.exists(
                os.path.join(self.path, SHARDS_FILE)):  # (a new store inside it would answer for none of its records)
            raise InvalidArgumentError(f"{self.path} holds a sharded store: open it with vs.ShardedStore.open")
        # From here on the directory is the one opened: a link the caller named is followed once, now, and the
        # directory is registered as a root (`vecstore_ref._fs.add_root`), so that a directory swapped in later,
        # or a link put in its place, is refused (UnsafePathError) instead of being written and deleted through.
        self.path = os.path.realpath(self.path)
        self._root = fsmod.add_root(self.path)
        lock_path = os.path.join(self.path, LOCK_NAME)
        lock_was_there = self._fs.exists(lock_path)
        if not read_only:
            try:
                self._dir_lock = DirectoryLock(self.path)
                self._dir_lock.acquire()
            except BaseException:  # locked by another writer, or a LOCK that is a link or a FIFO: nothing is kept
                self._dir_lock = None
                fsmod.remove_root(self.path)
                self._root = None
                raise
        attempts = 0
        while True:
            # A read-only open takes no lock: a writer in another process may checkpoint meanwhile, replacing the
            # manifest and removing the files the old one named. Such an open is tried again on the new manifest.
            seen = self._manifest_bytes() if read_only else None
            try:
                self._recover(dim, metric, index, hnsw, repair)
                break
            except BaseException as exc:
                if getattr(self, "_state", None) is not None:
                    _close_index(self._state)
                if self._writer is not None:
                    self._writer.close()
                if (read_only and isinstance(exc, (OSError, VecStoreError)) and attempts < READ_ONLY_OPEN_ATTEMPTS
                        and self._manifest_bytes() != seen):
                    attempts += 1
                    self._state = None  # type: ignore[assignment]  # loaded again by the next attempt
                    self.recovery_report = RecoveryReport()
                    continue
                if self._dir_lock is not None:
                    self._dir_lock.release()
                    if not lock_was_there:  # a refused open (a conflicting dim=, say) leaves the directory as it was
                        with contextlib.suppress(OSError):
                            self._fs.unlink(lock_path)
                fsmod.remove_root(self.path)
                self._root = None
                if isinstance(exc, OSError) and not isinstance(exc, StorageError):
                    raise StorageError(f"opening the store at {self.path} failed: {exc}") from exc
                raise
        self._closed = False
        if durability == "batch" and not read_only:
            self._flusher = threading.Thread(target=self._flush_loop, name="vecstore-fsync", daemon=True)
            self._flusher.start()
        if not read_only:
            self._start_checkpoint_thread()
        _open_stores.add(self)

    def _manifest_bytes(self) -> bytes | None:
        """The manifest's bytes now (None if it cannot be read): what tells a read-only open that a writer
        checkpointed while it read."""
        try:
            return self._fs.read_bytes(os.path.join(self.path, MANIFEST_NAME))
        except OSError:
            return None

    def close(self) -> None:
        """Make every acknowledged write durable, save the graph, and release the directory. Idempotent.

        What it waits for: a checkpoint in progress; then, if anything was linked into the HNSW graph (or 1 MiB of
        log written) since the last checkpoint, one more checkpoint, so that the next open reads the graph
        instead of linking it again; the fsync of the log; the linker thread to stop (after the chunk it is
        linking, about 20 ms). What it does not wait for: vectors still queued for linking. They are saved
        unlinked and linked in the background after the next open (queries scan them exactly meanwhile;
        call ``flush_index()`` first to link them now). A failure of the final checkpoint is logged, not
        raised: the log holds every acknowledged write either way.
        """
        with self._close_lock:
            if self._closed:
                return
            self._stop_checkpoint_thread()  # waits for a checkpoint in progress
            with self._ckpt_lock:
                try:
                    if self._close_checkpoint_due():
                        self._checkpoint()
                    elif not self._refuses_writes() and self._options_changed():
                        with self._lock:  # e.g. a new cost model calibration: saved for the next open
                            self._rewrite_manifest()
                except Exception as exc:  # every acknowledged write is in the log; the next open replays it
                    log.warning("store %s: the checkpoint at close failed (%s); the next open replays the log",
                                self.path, exc)
                # Closed before the checkpoint lock is let go: a snapshot() waiting for it then finds the store
                # closed, instead of writing a manifest while (or after) the rest of close() runs.
                with self._lock:
                    self._closed = True
                    _open_stores.discard(self)
                    self._flush_stop.set()
            if self._flusher is not None:
                self._flusher.join()
            with self._lock, self._rw.write():
                try:
                    if self._writer is not None and self._poisoned is None and not self._writer.poisoned:
                        self._writer.sync()
                finally:
                    _close_index(self._state)
                    if self._writer is not None:
                        self._writer.close()
                    if self._dir_lock is not None:
                        self._dir_lock.release()
                    if self._root is not None:
                        fsmod.remove_root(self._root)
                        self._root = None

    def __enter__(self) -> VecStore:
        self._check_open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort for forgotten handles
        # Not while the interpreter shuts down: a background thread may be frozen holding a lock close() takes,
        # and the process would hang; `_close_open_stores` has closed every store by then.
        if sys.is_finalizing():
            return
        try:
            if not self._closed:
                self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self)} records"
        return f"<VecStore {self.path!r} ({state})>"

    # --- internals shared by writes ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"the store at {self.path} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self._read_only:
            raise ReadOnlyError(f"the store at {self.path} was opened read_only=True")
        if self._poisoned is None and self._writer is not None and self._writer.poisoned:
            self._poisoned = "an fsync of the log failed"
        if self._poisoned is not None:
            raise ReadOnlyError(f"the store at {self.path} refuses writes until reopened: {self._poisoned}")

    def _refuses_writes(self) -> bool:
        return (self._read_only or self._poisoned is not None
                or (self._writer is not None and self._writer.poisoned))

    def _now(self) -> float:
        pinned = _PINNED.by_store.get(id(self))
        return float(self._clock()) if pinned is None else pinned

    @contextlib.contextmanager
    def _one_moment(self) -> Iterator[None]:
        """The clock read once for a whole read that asks it several times (explain, a batch of queries): what
        is visible cannot change between the read's steps when a TTL runs out meanwhile. Per thread and store."""
        key, moments = id(self), _PINNED.by_store
        if key in moments:  # a read inside a read: the outer moment holds
            yield
            return
        moments[key] = float(self._clock())
        try:
            yield
        finally:
            del moments[key]

    def _apply_record(self, rtype: int, payload: bytes, seq: int, path: str, offset: int) -> None:
        if rtype != RECORD_BATCH:  # read_segments already refuses unknown types; keep replay total anyway
            raise CorruptLogError(path, offset, seq, f"record type {rtype} cannot be replayed")
        try:
            dim, ops, vectors = decode_batch(payload)
        except RecordDecodeError as exc:
            raise CorruptLogError(path, offset, seq, str(exc)) from None
        if dim is not None and self._state.dim is not None and dim != self._state.dim:
            raise CorruptLogError(path, offset, seq, f"record of dim {dim} in a store of dim {self._state.dim}")
        if vectors is not None and self._metric == "cosine":  # the record's decoder does not know the metric
            try:
                check_cosine_norms(vectors, "a logged vector")
            except InvalidVectorError as exc:
                raise CorruptLogError(path, offset, seq, str(exc)) from None
        try:
            self._state.apply(ops, vectors, dim, seq)
        except CorruptLogError as exc:
            raise CorruptLogError(path, offset, seq, exc.reason) from None

    def _commit(self, effects: list[dict[str, Any]], vectors: np.ndarray | None, dim: int | None) -> int:
        """Write one record holding ``effects``, make it durable per the durability mode, then apply it.

        Nothing reaches memory unless the record reached the log: a failed append leaves state and file as they
        were (the writer truncates back); a failed fsync poisons the store (PostgreSQL's lesson: never retry).
        """
        payload = encode_batch(dim, effects, vectors)
        if self._quota is not None:
            self._quota.check(self, effects, len(payload))
        _crash.crashpoint("batch.before_append")
        seq = self._append(payload)
        _crash.crashpoint("batch.after_fsync")
        with self._rw.write():
            self._last_seq = seq
            self._dirty = True
            self._state.apply(effects, vectors, dim, seq)
        self._after_commit()
        _crash.crashpoint("batch.before_ack")
        return seq

    def _append(self, payload: bytes) -> int:
        """Append one record and make it durable per the durability mode; returns its sequence number."""
        try:
            return self._writer.append(RECORD_BATCH, payload,  # type: ignore[union-attr]  # writable: a writer
                                       sync=self._durability == "fsync")
        except ReadOnlyError:
            self._poisoned = "an earlier fsync failed"
            raise
        except OSError as exc:
            if getattr(self._writer, "poisoned", False):
                self._poisoned = f"the log could not be made durable ({exc})"
            if isinstance(exc, StorageError):
                raise
            raise StorageError(f"writing the log failed: {exc}") from exc

    def _after_commit(self) -> None:
        link_backlog = getattr(self._state.index, "link_backlog", None)
        if link_backlog is not None:
            link_backlog()  # back-pressure on a bulk load, outside the read-write lock
        self._maybe_request_checkpoint()

    def _run_ops(self, ops: list[Operation]) -> list[object]:
        """Plan and commit single-call ops: raise the first error (nothing written), else return per-op results."""
        plan = plan_batch(ops, self._state, self._now())
        for result in plan.results:
            if isinstance(result, VecStoreError):
                raise result
        if plan.effects:
            self._commit(plan.effects, plan.vector_matrix(), plan.dim)
        return plan.results

    def _flush_loop(self) -> None:
        while not self._flush_stop.wait(BATCH_FSYNC_INTERVAL_S):
            with self._lock:
                if self._closed or not self._dirty or self._poisoned is not None:
                    continue
                try:
                    self._writer.sync()  # type: ignore[union-attr]  # the flusher runs only with a writer
                    self._dirty = False
                except OSError as exc:
                    self._poisoned = f"a background fsync failed ({exc})"
                    log.error("store %s: background fsync failed; refusing writes until reopened", self.path)

    # --- single-record writes ---------------------------------------------------------------------------------

    def upsert(self, id: str, vector: ArrayLike, metadata: Metadata | None = None, *,
               ttl: float | None = None) -> None:
        """Insert a record or replace it whole (vector, metadata, and TTL, which is cleared unless given)."""
        with self._lock:
            self._check_writable()
            self._run_ops([Upsert(id, vector, metadata, ttl)])

    def upsert_with_ttl(self, id: str, vector: ArrayLike, metadata: Metadata | None, ttl: float) -> None:
        """``upsert(id, vector, metadata, ttl=ttl)``: the record expires ``ttl`` seconds from now."""
        self.upsert(id, vector, metadata, ttl=ttl)

    def delete(self, id: str) -> None:
        """Hard delete: the record is gone at once and its id free; compaction reclaims the space."""
        with self._lock:
            self._check_writable()
            self._run_ops([Delete(id)])

    def soft_delete(self, id: str) -> bool:
        """Hide a record but keep it restorable. False if it was already soft-deleted."""
        with self._lock:
            self._check_writable()
            return bool(self._run_ops([SoftDelete(id)])[0])

    def restore(self, id: str) -> bool:
        """Un-hide a soft-deleted record. False if it was already live."""
        with self._lock:
            self._check_writable()
            return bool(self._run_ops([Restore(id)])[0])

    def update_metadata(self, id: str, metadata: Metadata | None) -> None:
        """Replace the metadata of a visible record."""
        with self._lock:
            self._check_writable()
            self._run_ops([UpdateMetadata(id, metadata)])

    def set_ttl(self, id: str, ttl: float | None) -> None:
        """Expire a visible record ``ttl`` seconds from now; ``ttl=None`` removes its TTL."""
        with self._lock:
            self._check_writable()
            self._run_ops([SetTTL(id, ttl)])

    def expire_ttl_records(self) -> int:
        """Tombstone every record whose time has passed; returns how many. Expired records are invisible
        before this runs too: the sweep only makes their space reclaimable."""
        with self._lock:
            self._check_writable()
            slots = self._state.expired_slots(self._now())
            if slots.size == 0:
                return 0
            effects = [{"op": "expire", "id": self._state.id_of(s)} for s in slots.tolist()]
            self._commit(effects, None, None)
            return len(effects)

    # --- batches ----------------------------------------------------------------------------------------------

    def batch_execute(self, ops: Sequence[Operation]) -> BatchResult:
        """Apply a list of operations in order; the ones that succeed are written as one atomic log record."""
        t0 = time.perf_counter()
        self._check_open()  # a closed store says so, whatever the arguments
        ops = check_ops(ops)
        with self._lock:
            self._check_writable()
            plan = plan_batch(ops, self._state, self._now())
            if plan.effects:
                self._commit(plan.effects, plan.vector_matrix(), plan.dim)
        return BatchResult(plan.succeeded, len(plan.errors), plan.errors, (time.perf_counter() - t0) * 1e3)

    def upsert_many(self, ids: Iterable[str], vectors: ArrayLike, metadatas: Iterable[Metadata | None] | None = None,
                    *, ttl: float | None = None, progress: bool | Callable[[int, int], object] | None = None) -> int:
        """Bulk upsert: every row is validated first (an error names the row and writes nothing), then the rows
        are written in chunks of up to 32 MiB, each one atomic log record. ``progress`` is True (a tqdm bar) or a
        callable ``(done, total)``. Returns the number of rows written."""
        from .validation import validate_ttl

        self._check_open()  # a closed store says so, whatever the arguments
        ids = validate_id_list(ids)
        with self._lock:
            self._check_writable()
            mat = validate_vectors(vectors, self._state.dim, self._metric)
            if mat.shape[0] != len(ids):
                raise InvalidArgumentError(f"{len(ids)} ids but {mat.shape[0]} vectors")
            ttl = validate_ttl(ttl, allow_none=True)
            checked_md = check_bulk_rows(ids, metadatas)
            total = len(ids)
            report = _progress_reporter(progress, total)
            rows_per_chunk = max(1, UPSERT_MANY_CHUNK_BYTES // max(1, 4 * mat.shape[1]))
            done = 0
            dim = mat.shape[1] if total else self._state.dim
            try:
                while done < total:
                    end = min(total, done + rows_per_chunk)
                    expires_at = None if ttl is None else self._now() + ttl
                    if self._quota is None and self._state.dim in (None, dim) and self._state.all_new(ids[done:end]):
                        self._commit_new_rows(ids[done:end], mat[done:end], checked_md[done:end], expires_at,
                                              dim)  # type: ignore[arg-type]  # rows to write: a dim
                    else:  # ids the store holds (or a quota to check): the general path, one effect per row
                        effects = [
                            {"op": "upsert", "id": ids[i], "row": i - done, "metadata": checked_md[i],
                             "expires_at": expires_at}
                            for i in range(done, end)
                        ]
                        self._commit(effects, mat[done:end], dim)
                    done = end
                    report(done)
            finally:
                report(None)
            return total

    def _commit_new_rows(self, ids: list[str], mat: np.ndarray, metas: list[Metadata | None],
                         expires_at: float | None, dim: int) -> None:
        """`_commit` for a chunk of new records, without a dict per row: the record is encoded as text
        (`encode_upserts`: the same bytes the effects would give) and applied with array operations. Each row's
        metadata is encoded once, for the log and for the columns."""
        from .columns import encode_row

        rows = [encode_row(md) for md in metas]
        payload = encode_upserts(dim, ids, rows, expires_at, mat)
        _crash.crashpoint("batch.before_append")
        seq = self._append(payload)
        _crash.crashpoint("batch.after_fsync")
        expires = np.full(len(ids), np.inf if expires_at is None else float(expires_at), dtype=np.float64)
        with self._rw.write():
            self._last_seq = seq
            self._dirty = True
            if self._state.dim is None:
                self._state.set_dim(dim)
            self._state.insert_rows(ids, mat, metas, rows, expires)
        self._after_commit()
        _crash.crashpoint("batch.before_ack")

    # --- reads ------------------------------------------------------------------------------------------------

    def get(self, id: str, *, include_deleted: bool = False) -> Record:
        """The visible record with this id (or a soft-deleted one with ``include_deleted=True``)."""
        if self._closed:  # before the arguments: any call after close says that the store is closed
            raise StoreClosedError(f"the store at {self.path} is closed")
        id_ = validate_id(id)
        if not isinstance(include_deleted, (bool, np.bool_)):  # "no" would read as true
            raise InvalidArgumentTypeError(f"include_deleted must be a bool, got {type(include_deleted).__name__}")
        with self._rw.read():
            self._check_open()
            st = self._state
            slot = st.lookup(id_)
            now = self._now()
            if slot < 0 or st.is_expired(slot, now):
                raise NotFoundError(f"no record with id {id_!r}")
            soft = st.state[slot] == SOFT
            if soft and not include_deleted:
                raise NotFoundError(f"no record with id {id_!r} (it is soft-deleted)")
            exp = float(st.expires[slot])
            return Record(id_, st.vector(slot), st.metadata(slot), exp if np.isfinite(exp) else None, bool(soft))

    def _expires_at_of(self, id_: str) -> float | None:
        """The expiry time stored for ``id_`` (None: no TTL, or no such record), even once it has passed: what a
        command that just set a TTL reports, though a TTL of a microsecond has already expired."""
        with self._rw.read():
            st = self._state
            slot = st.lookup(id_)
            exp = float(st.expires[slot]) if slot >= 0 else float("inf")
            return exp if np.isfinite(exp) else None

    def __len__(self) -> int:
        with self._rw.read():
            self._check_open()
            return self._state.counts(self._now())["visible"] if self._state.n_ttl else self._state.n_live

    def __contains__(self, id: object) -> bool:
        if not isinstance(id, str):
            return False
        with self._rw.read():
            self._check_open()
            slot = self._state.lookup(id)
            return slot >= 0 and bool(self._state.live[slot]) and not self._state.is_expired(slot, self._now())

    def __iter__(self) -> Iterator[str]:
        """The ids of the visible records, in slot order (a record moves to the end when its vector changes); a
        snapshot of the moment of the call."""
        with self._rw.read():
            self._check_open()
            st = self._state
            mask = st.visible_mask(self._now())[: st.n_slots]
            ids = st.id_map.array()[: st.n_slots][mask].tolist()
        return iter(ids)

    def ids(self) -> list[str]:
        return list(iter(self))

    def _visible_records(self) -> dict[str, Any]:
        """Every visible record as arrays (ids, float32 vectors, metadata, expires_at), one consistent picture:
        what an export writes (see `vecstore_ref.export`)."""
        with self._rw.read():
            self._check_open()
            st = self._state
            if st.dim is None:
                return {"dim": None, "metric": self._metric, "ids": [], "vectors": None, "metadata": [],
                        "expires_at": []}
            slots = np.flatnonzero(st.visible_mask(self._now())[: st.n_slots])
            return {"dim": st.dim, "metric": self._metric, "ids": st.id_map.array()[slots].tolist(),
                    "vectors": st.table.vectors[slots].copy(),
                    "metadata": [st.metadata(s) for s in slots.tolist()],
                    "expires_at": st.expires[slots].tolist()}

    def export(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Write every visible record to the new directory ``path`` as `vectors.npy` + `records.jsonl` +
        `manifest.json` (one consistent picture; format in `vecstore_ref.export`); returns the manifest."""
        from .export import export_records

        return export_records([self], path)

    def import_(self, path: str | os.PathLike[str], *, batch_size: int = 10_000,
                progress: Callable[[int, int], object] | None = None) -> int:
        """Upsert every record of the export at ``path`` (its checksums checked first) in batches of
        ``batch_size``, TTLs carried as the time left; ``progress`` is a callable ``(done, total)``. Returns how
        many were imported (records expired since the export are left out)."""
        from .export import import_records

        return import_records(self, path, batch_size=batch_size, progress=progress).imported

    def deleted_count(self) -> int:
        """Records compaction would remove: soft-deleted + expired + hard-deleted not yet reclaimed."""
        with self._rw.read():
            self._check_open()
            return self._state.counts(self._now())["deleted_count"]

    # --- checkpoints, compaction, stats -----------------------------------------------------------------------

    def snapshot(self) -> None:
        """Write a snapshot of the current state and start a fresh log (a checkpoint), now.

        The store checkpoints by itself (see `CheckpointConfig`) and at ``close()``; call this to bound the
        replay of the next open at a moment of your choosing. It first links the vectors waiting for the HNSW
        graph (as `flush_index` does), so the snapshot holds the whole graph and the next open links nothing; an
        automatic checkpoint does not wait for that (it saves the waiting vectors as not linked). Writes and
        queries go on while the vectors are linked and while the file is written.
        """
        self._check_writable()
        self._link_waiting()  # (not flush_index(), whose own checkpoint would write the snapshot twice)
        with self._ckpt_lock:
            self._check_writable()
            self._checkpoint()

    def checkpoint_config(self) -> CheckpointConfig:
        self._check_open()
        return self._checkpoint_config

    def set_checkpoint_config(self, cfg: CheckpointConfig) -> None:
        """Set when the store checkpoints by itself; persisted in the manifest."""
        if not isinstance(cfg, CheckpointConfig):
            raise InvalidArgumentTypeError("set_checkpoint_config takes a CheckpointConfig")
        cfg.validate()
        with self._lock:
            self._check_writable()
            old = self._checkpoint_config
            self._checkpoint_config = cfg
            try:
                self._rewrite_manifest()
            except BaseException:
                self._checkpoint_config = old
                raise
        self._maybe_request_checkpoint()

    def compaction_config(self) -> CompactionConfig:
        self._check_open()
        return self._compaction_config

    def set_compaction_config(self, cfg: CompactionConfig) -> None:
        """Set when [`maybe_compact`][vecstore_ref.VecStore.maybe_compact] runs; persisted in the manifest."""
        if not isinstance(cfg, CompactionConfig):
            raise InvalidArgumentTypeError("set_compaction_config takes a CompactionConfig")
        cfg.validate()
        with self._lock:
            self._check_writable()
            old = self._compaction_config
            self._compaction_config = cfg
            try:
                self._rewrite_manifest()
            except BaseException:
                self._compaction_config = old
                raise

    def maybe_compact(self) -> CompactionResult:
        """Compact if the configuration says so (see `CompactionConfig`)."""
        with self._ckpt_lock, self._lock:
            self._check_writable()
            c = self._state.counts(self._now())
            run, reason = compaction_decision(self._compaction_config, c["deleted_count"], c["visible"])
            if not run:
                return CompactionResult(False, 0, 0.0, reason)
            removed, ms = self._compact()
            return CompactionResult(True, removed, ms, reason)

    def compact(self) -> int:
        """Remove soft-deleted, expired and hard-deleted records for good (and the old versions of replaced
        vectors); returns how many records were removed.

        Queries go on meanwhile, on the state as it was; writes wait until the compacted state is durable. The
        graph of the compacted state is built with one core fewer than the machine has, so queries keep one.
        """
        with self._ckpt_lock, self._lock:
            self._check_writable()
            return self._compact()[0]

    def _compact(self) -> tuple[int, float]:
        t0 = time.perf_counter()
        new_state, removed = self._state.compacted(self._now())
        _crash.crashpoint("compact.state_built")
        try:
            _link_all_leaving_a_core(new_state.index)
            self._checkpoint(new_state, compacting=True)
        except BaseException:
            _close_index(new_state)
            raise
        with self._rw.write():
            old, self._state = self._state, new_state
        self._linked_at_checkpoint = int(getattr(new_state.index, "linked_count", 0))
        _close_index(old)
        ms = (time.perf_counter() - t0) * 1e3
        self._last_compaction = {"removed_count": removed, "duration_ms": ms, "at": time.time()}
        return removed, ms

    def _file_bytes(self) -> tuple[int, int]:
        """(bytes of the live log segments, bytes of the live snapshot), from what the store knows in memory (a
        checkpoint may be deleting the old files right now)."""
        manifest = self._manifest
        log_bytes = self.log_bytes_since_checkpoint() + LOG_HEADER_SIZE * len(manifest.logs)
        return log_bytes, (self._snapshot_bytes if manifest.snapshot else 0)

    def stats(self) -> StoreStats:
        with self._rw.read():
            self._check_open()
            st = self._state
            c = st.counts(self._now())
            log_bytes, snap_bytes = self._file_bytes()
            per_record = 4 * (st.dim or 0) + 64
            index = st.index
            effective = getattr(index, "kind", self._index_kind) if index is not None else self._index_kind
            params = self._hnsw.to_dict() if self._index_kind == "hnsw" else {}
            return StoreStats(
                dim=st.dim, metric=self._metric, index=self._index_kind, index_params=params,
                index_effective=effective, visible=c["visible"], soft_deleted=c["soft_deleted"],
                expired_pending=c["expired_pending"], hard_deleted_pending=c["hard_deleted_pending"],
                deleted_count=c["deleted_count"], slots=st.n_slots, log_bytes=log_bytes,
                snapshot_bytes=snap_bytes, reclaimable_bytes=(c["deleted_count"] + c["superseded"]) * per_record,
                compaction_config=self._compaction_config.to_dict(), last_compaction=self._last_compaction,
                recovery_report=self.recovery_report.to_dict(), format_version=FORMAT_VERSION,
                durability=self._durability, read_only=self._refuses_writes(),
                last_seq=self._last_seq, unindexed=int(getattr(index, "n_unlinked", 0)),
                superseded=c["superseded"], log_bytes_since_checkpoint=self.log_bytes_since_checkpoint(),
                last_checkpoint_at=self._last_checkpoint_at,
                checkpoint_config=self._checkpoint_config.to_dict(),
            )

    def flush_index(self) -> int:
        """Link every vector still waiting into the HNSW graph now, in the calling thread, and save the graph;
        returns how many were linked.

        Writes do not wait for graph linking: a background thread does it, and until then queries scan the waiting
        vectors exactly (``stats().unindexed`` says how many). Call this after a bulk load to pay the linking at a
        time of your choosing, e.g. before measuring query speed. When anything was linked since the last
        checkpoint, it then writes one (as `snapshot` does), so that no open after this, not even one after a
        crash, links these vectors again. A flat index has nothing to link (returns 0, writes nothing).
        """
        linked = self._link_waiting()
        if linked or self._linked_since_checkpoint() > 0:
            self._save_linked_graph()
        return linked

    def _link_waiting(self) -> int:
        """Link every vector waiting for the HNSW graph, in this thread; returns how many (0 for a flat index)."""
        with self._rw.read():
            self._check_open()
            link = getattr(self._state.index, "link_queued", None)
        return 0 if link is None else int(link())

    def verify(self) -> VerifyReport:
        """Read every file and check every checksum. Changes nothing (a checkpoint of this handle waits for it;
        on a read-only handle, a writer in another process that checkpoints meanwhile makes it read again)."""
        with self._ckpt_lock, self._lock:
            self._check_open()
            for _ in range(READ_ONLY_OPEN_ATTEMPTS):
                seen = self._manifest_bytes() if self._read_only else None
                report = verify_files(self._fs, self.path)
                if report.ok or not self._read_only or self._manifest_bytes() == seen:
                    return report
            return report


def _link_all_leaving_a_core(index: Any) -> None:
    """Link everything queued in ``index`` in this thread, on every core but one (a compaction's rebuild: the
    queries still running on the old state keep a core)."""
    link = getattr(index, "link_queued", None)
    if link is None:
        return
    import numba

    before = numba.get_num_threads()
    cores = max(1, numba.config.NUMBA_NUM_THREADS - 1)
    index.link_threads = cores
    numba.set_num_threads(min(before, cores))
    try:
        link()
    finally:
        numba.set_num_threads(before)
        index.link_threads = None


def _progress_reporter(progress: bool | Callable[[int, int], object] | None,
                       total: int) -> Callable[[int | None], object]:
    """A callable(done | None): ``None`` closes. tqdm is imported only when asked for."""
    if progress is None or progress is False:
        return lambda done: None
    if progress is True:
        try:
            from tqdm.auto import tqdm
        except ImportError as exc:  # pragma: no cover - tqdm is in the [progress] extra
            raise InvalidArgumentError("progress=True needs tqdm: pip install 'vecstore-ref[progress]' (from a checkout: "
                                       "pip install -e '.[progress]')") from exc
        bar = tqdm(total=total, unit="vec")
        last = [0]

        def report(done: int | None) -> None:
            if done is None:
                bar.close()
                return
            bar.update(done - last[0])
            last[0] = done

        return report
    if callable(progress):
        return lambda done: None if done is None else progress(done, total)
    raise InvalidArgumentTypeError("progress must be None, True or a callable (done, total)")
