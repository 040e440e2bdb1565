"""VecStore: the public face of a store directory.

A store is a directory holding a lock file, a manifest, at most one live snapshot and the log segments written since
(see ``docs/concepts/storage-format.md`` and ``docs/concepts/durability.md``). This module orchestrates: it validates,
plans batches (:mod:`.batch`), appends one log record per call, applies the record to the in-memory state
(:mod:`.state`) and answers queries through the index. It owns no format details and no kernels.

Durability (``durability=``):

- ``"fsync"`` (default): a write returns only after its record is fsynced.
- ``"batch"``: records reach the OS at once and are fsynced at most every 100 ms and at close; a kill -9 loses
  nothing that returned, a power cut may lose the last interval.
- ``"none"``: fsync only at snapshot and close; for bulk loads and tests.

Every public method takes the store's lock, so a store may be shared by threads; readers wait for writers.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator

import numpy as np

from . import _crash
from . import _fs as fsmod
from .batch import check_bulk_rows, check_ops, plan_batch
from .compaction import compaction_decision
from .config import MAX_K, CompactionConfig, HNSWParams
from .cost import CostModel
from .errors import (
    CorruptLogError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    NotFoundError,
    ReadOnlyError,
    StorageError,
    StoreClosedError,
    VecStoreError,
)
from .filter import Filter
from .opening import OpeningMethods, _close_index
from .query import QueryMethods
from .state import SOFT, StoreState
from .storage import layout
from .storage.format import FORMAT_VERSION, RECORD_BATCH
from .storage.lock import DirectoryLock
from .storage.log import LogWriter, create_segment
from .storage.records import RecordDecodeError, decode_batch, encode_batch
from .storage.snapshot import write_snapshot
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
from .validation import validate_id, validate_vectors

log = logging.getLogger(__name__)

BATCH_FSYNC_INTERVAL_S = 0.1  # durability="batch": fsync at most this often
UPSERT_MANY_CHUNK_BYTES = 32 * 2**20  # 32 MiB of vectors per log record in upsert_many


class VecStore(OpeningMethods, QueryMethods):
    """An embedded vector store on a local directory. Open it with :meth:`VecStore.open`."""

    # --- opening and closing ----------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
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
        :class:`InvalidArgumentError`. ``clock`` (seconds, like ``time.time``) judges TTLs; tests inject a fake one.
        """
        return cls(path, dim=dim, metric=metric, index=index, hnsw=hnsw, durability=durability,
                   read_only=read_only, repair=repair, clock=clock, max_k=max_k, fs=fs)

    def __init__(self, path, *, dim=None, metric=None, index=None, hnsw=None, durability="fsync",
                 read_only=False, repair=False, clock=None, max_k=MAX_K, fs=None):
        self._closed = True
        self._lock = threading.RLock()
        self.path = os.path.abspath(os.fspath(path))
        self._fs = fs or fsmod.get_fs()
        self._check_open_options(dim, metric, index, hnsw, durability, read_only, repair, clock, max_k)
        self._clock = clock or time.time
        self._durability = durability
        self._read_only = bool(read_only)
        self._poisoned: str | None = None
        self._max_k = max_k
        self._filter_cache: OrderedDict[str, Filter] = OrderedDict()
        self._cost = CostModel()
        self._compaction_config = CompactionConfig()
        self._last_compaction: dict | None = None
        self._writer: LogWriter | None = None
        self._dir_lock: DirectoryLock | None = None
        self._flusher: threading.Thread | None = None
        self._flush_stop = threading.Event()
        self._dirty = False
        self._quota = None  # a namespace's Quotas (vecstore_ref.namespaces), checked before each log append
        self.recovery_report = RecoveryReport()

        if not self._fs.isdir(self.path):
            if read_only:
                raise NotFoundError(f"no store at {self.path}")
            self._fs.makedirs(self.path)
        if not read_only:
            self._dir_lock = DirectoryLock(self.path)
            self._dir_lock.acquire()
        try:
            self._recover(dim, metric, index, hnsw, repair)
        except BaseException as exc:
            if getattr(self, "_state", None) is not None:
                _close_index(self._state)
            if self._writer is not None:
                self._writer.close()
            if self._dir_lock is not None:
                self._dir_lock.release()
            if isinstance(exc, OSError) and not isinstance(exc, StorageError):
                raise StorageError(f"opening the store at {self.path} failed: {exc}") from exc
            raise
        self._closed = False
        if durability == "batch" and not read_only:
            self._flusher = threading.Thread(target=self._flush_loop, name="vecstore-fsync", daemon=True)
            self._flusher.start()

    def close(self) -> None:
        """Flush, fsync and release the lock. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._flush_stop.set()
        if self._flusher is not None:
            self._flusher.join()
        with self._lock:
            try:
                if self._writer is not None and self._poisoned is None and not self._writer.poisoned:
                    self._writer.sync()
            finally:
                _close_index(self._state)
                if self._writer is not None:
                    self._writer.close()
                if self._dir_lock is not None:
                    self._dir_lock.release()

    def __enter__(self) -> VecStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # pragma: no cover - best effort for forgotten handles
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

    def _now(self) -> float:
        return float(self._clock())

    def _apply_record(self, rtype: int, payload: bytes, seq: int, path: str, offset: int) -> None:
        if rtype != RECORD_BATCH:  # read_segments already refuses unknown types; keep replay total anyway
            raise CorruptLogError(path, offset, seq, f"record type {rtype} cannot be replayed")
        try:
            dim, ops, vectors = decode_batch(payload)
        except RecordDecodeError as exc:
            raise CorruptLogError(path, offset, seq, str(exc)) from None
        if dim is not None and self._state.dim is not None and dim != self._state.dim:
            raise CorruptLogError(path, offset, seq, f"record of dim {dim} in a store of dim {self._state.dim}")
        try:
            self._state.apply(ops, vectors, dim, seq)
        except CorruptLogError as exc:
            raise CorruptLogError(path, offset, seq, exc.reason) from None

    def _commit(self, effects: list[dict], vectors: np.ndarray | None, dim: int | None) -> int:
        """Write one record holding ``effects``, make it durable per the durability mode, then apply it.

        Nothing reaches memory unless the record reached the log: a failed append leaves state and file as they
        were (the writer truncates back); a failed fsync poisons the store (PostgreSQL's lesson: never retry).
        """
        payload = encode_batch(dim, effects, vectors)
        if self._quota is not None:
            self._quota.check(self, effects, len(payload))
        _crash.crashpoint("batch.before_append")
        try:
            seq = self._writer.append(RECORD_BATCH, payload, sync=self._durability == "fsync")
        except ReadOnlyError:
            self._poisoned = "an earlier fsync failed"
            raise
        except OSError as exc:
            if getattr(self._writer, "poisoned", False):
                self._poisoned = f"the log could not be made durable ({exc})"
            if isinstance(exc, StorageError):
                raise
            raise StorageError(f"writing the log failed: {exc}") from exc
        _crash.crashpoint("batch.after_fsync")
        self._last_seq = seq
        self._dirty = True
        self._state.apply(effects, vectors, dim, seq)
        _crash.crashpoint("batch.before_ack")
        return seq

    def _run_ops(self, ops: list) -> list:
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
                    self._writer.sync()
                    self._dirty = False
                except OSError as exc:
                    self._poisoned = f"a background fsync failed ({exc})"
                    log.error("store %s: background fsync failed; refusing writes until reopened", self.path)

    # --- single-record writes ---------------------------------------------------------------------------------

    def upsert(self, id: str, vector, metadata: dict | None = None, *, ttl: float | None = None) -> None:
        """Insert a record or replace it whole (vector, metadata, and TTL, which is cleared unless given)."""
        with self._lock:
            self._check_writable()
            self._run_ops([Upsert(id, vector, metadata, ttl)])

    def upsert_with_ttl(self, id: str, vector, metadata: dict | None, ttl: float) -> None:
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

    def update_metadata(self, id: str, metadata: dict | None) -> None:
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
            effects = [{"op": "expire", "id": self._state.ids[s]} for s in slots.tolist()]
            self._commit(effects, None, None)
            return len(effects)

    # --- batches ----------------------------------------------------------------------------------------------

    def batch_execute(self, ops) -> BatchResult:
        """Apply a list of operations in order; the ones that succeed are written as one atomic log record."""
        t0 = time.perf_counter()
        ops = check_ops(ops)
        with self._lock:
            self._check_writable()
            plan = plan_batch(ops, self._state, self._now())
            if plan.effects:
                self._commit(plan.effects, plan.vector_matrix(), plan.dim)
        return BatchResult(plan.succeeded, len(plan.errors), plan.errors, (time.perf_counter() - t0) * 1e3)

    def upsert_many(self, ids, vectors, metadatas=None, *, ttl: float | None = None, progress=None) -> int:
        """Bulk upsert: every row is validated first (an error names the row and writes nothing), then the rows
        are written in chunks of up to 32 MiB, each one atomic log record. ``progress`` is True (a tqdm bar) or a
        callable ``(done, total)``. Returns the number of rows written."""
        from .validation import validate_ttl

        if isinstance(ids, (str, bytes)):
            raise InvalidArgumentTypeError("ids must be a sequence of str, not a single str")
        ids = list(ids)
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

    # --- reads ------------------------------------------------------------------------------------------------

    def get(self, id: str, *, include_deleted: bool = False) -> Record:
        """The visible record with this id (or a soft-deleted one with ``include_deleted=True``)."""
        id_ = validate_id(id)
        with self._lock:
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

    def __len__(self) -> int:
        with self._lock:
            self._check_open()
            return self._state.counts(self._now())["visible"] if self._state.n_ttl else self._state.n_live

    def __contains__(self, id: object) -> bool:
        if not isinstance(id, str):
            return False
        with self._lock:
            self._check_open()
            slot = self._state.lookup(id)
            return slot >= 0 and bool(self._state.live[slot]) and not self._state.is_expired(slot, self._now())

    def __iter__(self) -> Iterator[str]:
        """The ids of the visible records, in slot (insertion) order; a snapshot of the moment of the call."""
        with self._lock:
            self._check_open()
            mask = self._state.visible_mask(self._now())[: self._state.n_slots]
            ids = self._state.ids[: self._state.n_slots][mask].tolist()
        return iter(ids)

    def ids(self) -> list[str]:
        return list(iter(self))

    def _visible_records(self) -> dict:
        """Every visible record as arrays (ids, float32 vectors, metadata, expires_at), read under the lock: what
        an export writes (see :mod:`vecstore_ref.export`)."""
        with self._lock:
            self._check_open()
            st = self._state
            if st.dim is None:
                return {"dim": None, "metric": self._metric, "ids": [], "vectors": None, "metadata": [],
                        "expires_at": []}
            slots = np.flatnonzero(st.visible_mask(self._now())[: st.n_slots])
            return {"dim": st.dim, "metric": self._metric, "ids": st.ids[slots].tolist(),
                    "vectors": st.table.vectors[slots].copy(), "metadata": st.meta[slots].tolist(),
                    "expires_at": st.expires[slots].tolist()}

    def export(self, path) -> dict:
        """Write every visible record to the new directory ``path`` as `vectors.npy` + `records.jsonl` +
        `manifest.json` (one consistent picture; format in `vecstore_ref.export`); returns the manifest."""
        from .export import export_records

        return export_records([self], path)

    def import_(self, path, *, batch_size: int = 10_000, progress=None) -> int:
        """Upsert every record of the export at ``path`` (its checksums checked first) in batches of
        ``batch_size``, TTLs carried as the time left; ``progress`` is a callable ``(done, total)``. Returns how
        many were imported (records expired since the export are left out)."""
        from .export import import_records

        return import_records(self, path, batch_size=batch_size, progress=progress).imported

    def deleted_count(self) -> int:
        """Records compaction would remove: soft-deleted + expired + hard-deleted not yet reclaimed."""
        with self._lock:
            self._check_open()
            return self._state.counts(self._now())["deleted_count"]

    # --- checkpoints, compaction, stats -----------------------------------------------------------------------

    def snapshot(self) -> None:
        """Write a snapshot of the current state and start a fresh log (a checkpoint)."""
        with self._lock:
            self._check_writable()
            self._checkpoint(self._state)

    def _checkpoint(self, state: StoreState, compacting: bool = False) -> None:
        """Snapshot ``state`` at the current seq, rotate the log, swap the manifest, then delete old files.

        Until the new manifest is durable the old snapshot and logs stay valid and complete, so a crash at any
        step leaves a store that opens to the same visible state.
        """
        fs = self._fs
        if self._writer is not None:
            self._writer.sync()
        seq = self._last_seq
        name = layout.snapshot_name(seq)
        if name == self._manifest.snapshot:
            # A second snapshot at the same seq (e.g. compaction right after a checkpoint): advance seq with an
            # empty record so that file names never repeat.
            seq = self._writer.append(RECORD_BATCH, encode_batch(None, [], None), sync=True)
            self._last_seq = seq
            name = layout.snapshot_name(seq)
        repair = getattr(state.index, "repair_connectivity", None)
        if repair is not None:
            repair()  # nodes orphaned by link pruning since the last bulk insert get an in-link again
        header, arrays = state.to_snapshot()
        header["seq"] = seq
        old_logs = list(self._manifest.logs)
        old_snapshot = self._manifest.snapshot
        next_number = layout.parse_segment_name(old_logs[-1]) + 1
        try:
            write_snapshot(fs, self.path, name, header, arrays)
            if compacting:
                _crash.crashpoint("compact.snapshot_written")
            new_seg = create_segment(fs, self.path, next_number)
            new_writer = LogWriter(fs, new_seg, seq + 1)
        except OSError as exc:  # nothing referenced changed: the store goes on with its old files
            if isinstance(exc, StorageError):
                raise
            raise StorageError(f"writing a snapshot of {self.path} failed: {exc}") from exc
        try:
            self._write_manifest(name, seq, [os.path.basename(new_seg)])
        except BaseException:
            new_writer.close()
            raise
        _crash.crashpoint("compact.manifest_swapped" if compacting else "snapshot.log_rotated")
        old_writer = self._writer
        self._writer = new_writer
        old_writer.close()
        try:
            for old in old_logs + ([old_snapshot] if old_snapshot else []):
                try:
                    fs.unlink(os.path.join(self.path, old))
                except FileNotFoundError:
                    pass
            fs.fsync_dir(self.path)
        except OSError as exc:  # the new state is committed; leftovers are removed at the next open
            log.warning("store %s: could not remove old files after a checkpoint: %s", self.path, exc)
        _crash.crashpoint("compact.old_files_unlinked")
        self._dirty = False

    def compaction_config(self) -> CompactionConfig:
        with self._lock:
            return self._compaction_config

    def set_compaction_config(self, cfg: CompactionConfig) -> None:
        """Set when :meth:`maybe_compact` runs; persisted in the manifest."""
        if not isinstance(cfg, CompactionConfig):
            raise InvalidArgumentTypeError("set_compaction_config takes a CompactionConfig")
        cfg.validate()
        with self._lock:
            self._check_writable()
            old = self._compaction_config
            self._compaction_config = cfg
            try:
                self._write_manifest(self._manifest.snapshot, self._manifest.snapshot_seq, self._manifest.logs)
            except BaseException:
                self._compaction_config = old
                raise

    def maybe_compact(self) -> CompactionResult:
        """Compact if the configuration says so (see :class:`CompactionConfig`)."""
        with self._lock:
            self._check_writable()
            c = self._state.counts(self._now())
            run, reason = compaction_decision(self._compaction_config, c["deleted_count"], c["visible"])
            if not run:
                return CompactionResult(False, 0, 0.0, reason)
            removed, ms = self._compact()
            return CompactionResult(True, removed, ms, reason)

    def compact(self) -> int:
        """Remove soft-deleted, expired and hard-deleted records for good; returns how many were removed."""
        with self._lock:
            self._check_writable()
            return self._compact()[0]

    def _compact(self) -> tuple[int, float]:
        t0 = time.perf_counter()
        new_state, removed = self._state.compacted(self._now())
        _crash.crashpoint("compact.state_built")
        try:
            self._checkpoint(new_state, compacting=True)
        except BaseException:
            _close_index(new_state)
            raise
        old, self._state = self._state, new_state
        _close_index(old)
        ms = (time.perf_counter() - t0) * 1e3
        self._last_compaction = {"removed_count": removed, "duration_ms": ms, "at": time.time()}
        return removed, ms

    def _file_bytes(self) -> tuple[int, int]:
        fs = self._fs
        log_bytes = sum(fs.size(os.path.join(self.path, n)) for n in self._manifest.logs)
        snap = self._manifest.snapshot
        return log_bytes, (fs.size(os.path.join(self.path, snap)) if snap else 0)

    def stats(self) -> StoreStats:
        with self._lock:
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
                snapshot_bytes=snap_bytes, reclaimable_bytes=c["deleted_count"] * per_record,
                compaction_config=self._compaction_config.to_dict(), last_compaction=self._last_compaction,
                recovery_report=self.recovery_report.to_dict(), format_version=FORMAT_VERSION,
                durability=self._durability, read_only=self._read_only or self._poisoned is not None,
                last_seq=self._last_seq, unindexed=int(getattr(index, "n_unlinked", 0)),
            )

    def flush_index(self) -> int:
        """Link every vector still waiting into the HNSW graph now, in the calling thread; returns how many.

        Writes do not wait for graph linking: a background thread does it, and until then queries scan the waiting
        vectors exactly (``stats().unindexed`` says how many). Call this after a bulk load to pay the linking at a
        time of your choosing, e.g. before measuring query speed. A flat index has nothing to link (returns 0).
        """
        with self._lock:
            self._check_open()
            link = getattr(self._state.index, "link_queued", None)
            return int(link()) if link is not None else 0

    def verify(self) -> VerifyReport:
        """Read every file and check every checksum. Changes nothing."""
        with self._lock:
            self._check_open()
            return verify_files(self._fs, self.path)


def _progress_reporter(progress, total: int):
    """A callable(done | None): ``None`` closes. tqdm is imported only when asked for."""
    if progress is None or progress is False:
        return lambda done: None
    if progress is True:
        try:
            from tqdm.auto import tqdm
        except ImportError as exc:  # pragma: no cover - tqdm is in the [progress] extra
            raise InvalidArgumentError("progress=True needs tqdm: pip install 'vecstore-ref[progress]'") from exc
        bar = tqdm(total=total, unit="vec")
        last = [0]

        def report(done):
            if done is None:
                bar.close()
                return
            bar.update(done - last[0])
            last[0] = done

        return report
    if callable(progress):
        return lambda done: None if done is None else progress(done, total)
    raise InvalidArgumentTypeError("progress must be None, True or a callable (done, total)")
