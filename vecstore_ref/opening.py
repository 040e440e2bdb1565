"""Opening a store: checking the options, creating a new store, and recovering one (SPEC section 6).

Recovery loads the newest snapshot the manifest names, replays the log records after it through the same
``StoreState.apply`` as live writes, truncates a torn tail (or refuses corruption), and opens the log for appends.
Mixed into `VecStore`, like `vecstore_ref.query`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from . import _crash
from .config import (
    DURABILITY_MODES,
    INDEX_KINDS,
    MAX_K,
    MAX_K_LIMIT,
    METRICS,
    CheckpointConfig,
    CompactionConfig,
    HNSWParams,
)
from .cost import CostModel
from .errors import (
    CorruptLogError,
    CorruptSnapshotError,
    CorruptStoreError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    NotFoundError,
    StorageError,
)
from .state import SnapshotBuffers, StoreState
from .storage import layout
from .storage.format import BACKUP_FILE, FORMAT_VERSION, LOG_HEADER_SIZE, NAMESPACE_FILE, SHARDS_FILE
from .storage.log import LogWriter, create_segment, cut_segments, read_segments
from .storage.manifest import Manifest, read_manifest, write_manifest
from .storage.snapshot import read_snapshot

if TYPE_CHECKING:
    import numpy as np

    from ._fs import OSFileSystem
    from .index.base import Index, VectorTable
    from .types import RecoveryReport

log = logging.getLogger("vecstore_ref.store")


def _index_factory(kind: str, params: HNSWParams) -> Callable[[VectorTable], Index]:
    def make(table: VectorTable) -> Index:
        if kind == "hnsw":
            try:
                from .index.hnsw import HNSWIndex
            except ImportError:  # pragma: no cover - a build without the graph index answers exactly
                HNSWIndex = None  # type: ignore[misc, assignment]
            if HNSWIndex is not None:
                return HNSWIndex(table, params, background=True)
        from .index.flat import FlatIndex

        return FlatIndex(table)

    return make


def _close_index(state: StoreState | None) -> None:
    """Stop the index's background thread, if it has one (an HNSW index links new vectors in the background)."""
    close = getattr(getattr(state, "index", None), "close", None)
    if close is not None:
        close()


_preloaded: set[str] = set()


def preload_kernels(kind: str, metric: str) -> None:
    """Load the query kernels of ``kind`` on a daemon thread (once per process): opening a store reads its
    snapshot meanwhile, so the first query finds Numba imported and its kernel loaded. Best effort: a failure
    here only means the first query loads the kernel itself."""
    if kind in _preloaded or os.environ.get("NUMBA_DISABLE_JIT") == "1":
        return
    _preloaded.add(kind)

    def run() -> None:
        try:
            if kind == "hnsw":
                from .index.hnsw import HNSWIndex

                HNSWIndex.preload_kernels(metric)
            else:
                from .index.flat import FlatIndex

                FlatIndex.preload_kernels(metric)
        except Exception:  # pragma: no cover - the query path reports real problems itself
            log.debug("preloading the %s kernels failed", kind, exc_info=True)

    threading.Thread(target=run, name="vecstore-preload", daemon=True).start()


def _check_stored_options(opts: dict[str, Any], path: str) -> None:
    """The options a MANIFEST holds have the types the store gives them (its checksum only says it is whole):
    `CorruptStoreError` otherwise, before any of them sizes an allocation or picks a kernel."""
    from .config import MAX_DIM

    def bad(what: str) -> CorruptStoreError:
        return CorruptStoreError(f"the manifest of {path} holds a bad {what}")

    dim = opts.get("dim")
    if dim is not None and (type(dim) is not int or not 1 <= dim <= MAX_DIM):
        raise bad(f"dim {dim!r:.40}")
    if "metric" in opts and opts["metric"] not in METRICS:
        raise bad(f"metric {opts['metric']!r:.40}")
    if "index" in opts and opts["index"] not in INDEX_KINDS:
        raise bad(f"index kind {opts['index']!r:.40}")
    for key in ("hnsw", "compaction", "checkpoint"):
        if key in opts and type(opts[key]) is not dict:
            raise bad(f"{key} section {opts[key]!r:.40}")


OPEN_OPTIONS = ("dim", "metric", "index", "hnsw", "durability", "read_only", "repair", "clock", "max_k")


def check_open_options(options: dict[str, Any], allowed: tuple[str, ...] = OPEN_OPTIONS) -> None:
    """Check ``VecStore.open`` keyword options given as a dict (by the namespace manager and the sharded store,
    before they write anything): unknown names raise `InvalidArgumentTypeError`, bad values the errors of
    ``VecStore.open``."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise InvalidArgumentTypeError(f"unknown option(s) {', '.join(map(repr, unknown))}; allowed: "
                                       f"{', '.join(allowed)}")
    OpeningMethods._check_open_options(options.get("dim"), options.get("metric"), options.get("index"),
                                       options.get("hnsw"), options.get("durability", "fsync"),
                                       options.get("read_only", False), options.get("repair", False),
                                       options.get("clock"), options.get("max_k", MAX_K))


# A store inside a namespace, a shard of a sharded store or a namespace backup belongs to its owner: written through
# anything else, it would take writes the owner never sees (a stray generation a restore deletes, records the
# shard routing never finds, quotas skipped) or stop being a backup. The owners open their stores inside
# `opened_by_owner`; any other writable open of such a directory is refused.
_OPENED_BY_OWNER: ContextVar[bool] = ContextVar("opened_by_owner", default=False)


@contextlib.contextmanager
def opened_by_owner() -> Iterator[None]:
    """Mark the `VecStore.open` calls inside as made by a `NamespaceManager` or a `ShardedStore` for its own
    stores."""
    token = _OPENED_BY_OWNER.set(True)
    try:
        yield
    finally:
        _OPENED_BY_OWNER.reset(token)


def check_not_owned(fs, path: str) -> None:
    """Refuse a writable open of a directory that belongs to a namespace, a sharded store or a backup, unless its
    owner is opening it (`opened_by_owner`)."""
    if _OPENED_BY_OWNER.get():
        return
    if fs.exists(os.path.join(path, BACKUP_FILE)):
        raise InvalidArgumentError(f"{path} is a namespace backup: restore it with "
                                   "NamespaceManager.restore_namespace (or open it with read_only=True)")
    for real in {path, os.path.realpath(path)}:
        parent = os.path.dirname(real)
        if fs.exists(os.path.join(parent, NAMESPACE_FILE)):
            raise InvalidArgumentError(f"{path} belongs to the namespace {parent}: open the namespace with "
                                       "vs.NamespaceManager(root).get_namespace(name) (or this with read_only=True)")
        if fs.exists(os.path.join(parent, SHARDS_FILE)):
            raise InvalidArgumentError(f"{path} is a shard of the sharded store {parent}: open that with "
                                       "vs.ShardedStore.open (or this shard with read_only=True)")


def _last_compaction(saved: object) -> dict[str, float] | None:
    """The manifest's record of the last compaction (``stats().last_compaction`` across restarts), checked: a
    ValueError for anything but ``{"removed_count", "duration_ms", "at"}`` of finite non-negative numbers."""
    if saved is None:
        return None
    keys = ("removed_count", "duration_ms", "at")
    if (type(saved) is not dict or sorted(saved) != sorted(keys)
            or not all(type(saved[k]) in (int, float) and math.isfinite(saved[k]) and saved[k] >= 0 for k in keys)):
        raise ValueError(f"last_compaction is not {{{', '.join(keys)}}} of non-negative numbers: {saved!r}")
    return dict(saved)


class OpeningMethods:
    """Mixed into `VecStore`: what ``VecStore.__init__`` runs to open a directory."""

    if TYPE_CHECKING:  # the store's fields these methods use (set by VecStore.__init__ or by _recover)
        path: str
        _fs: OSFileSystem
        _read_only: bool
        _poisoned: str | None
        recovery_report: RecoveryReport
        _state: StoreState
        _metric: str
        _index_kind: str
        _hnsw: HNSWParams
        _compaction_config: CompactionConfig
        _last_compaction: dict[str, float] | None
        _checkpoint_config: CheckpointConfig
        _manifest_lock: threading.Lock
        _manifest: Manifest
        _writer: LogWriter | None
        _last_seq: int
        _snapshot_bytes: int
        _older_log_bytes: int
        _linked_at_checkpoint: int
        _last_checkpoint_at: float | None

        def _apply_record(self, rtype: int, payload: bytes, seq: int, path: str, offset: int) -> None: ...

    @staticmethod
    def _check_open_options(dim: object, metric: object, index: object, hnsw: object, durability: object,
                            read_only: object, repair: object, clock: object, max_k: object) -> None:
        if dim is not None:
            from .validation import validate_dim

            validate_dim(dim)
        for name, value, choices in (("metric", metric, METRICS), ("index", index, INDEX_KINDS),
                                     ("durability", durability, DURABILITY_MODES)):
            if value is None and name != "durability":
                continue
            if type(value) is not str:  # a wrong type is also a TypeError (SPEC section 9)
                raise InvalidArgumentTypeError(f"{name} must be a str, one of {', '.join(choices)}; got "
                                               f"{type(value).__name__}")
            if value not in choices:
                raise InvalidArgumentError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
        if hnsw is not None and not isinstance(hnsw, HNSWParams):
            raise InvalidArgumentTypeError("hnsw must be an HNSWParams")
        for name, flag in (("read_only", read_only), ("repair", repair)):
            if not isinstance(flag, bool):
                raise InvalidArgumentTypeError(f"{name} must be a bool")
        if read_only and repair:
            raise InvalidArgumentError("repair=True needs a writable store (read_only=False)")
        if clock is not None and not callable(clock):
            raise InvalidArgumentTypeError("clock must be a callable returning seconds")
        if isinstance(max_k, bool) or not isinstance(max_k, int):
            raise InvalidArgumentTypeError(f"max_k must be a positive int, got {type(max_k).__name__}")
        if not 1 <= max_k <= MAX_K_LIMIT:
            raise InvalidArgumentError(f"max_k must be between 1 and 2**62, got {max_k}")

    def _recover(self, dim: int | None, metric: str | None, index: str | None, hnsw: HNSWParams | None,
                 repair: bool) -> None:
        """Load the newest snapshot, replay the log after it, and open the log for appends."""
        t0 = time.perf_counter()
        fs, report = self._fs, self.recovery_report
        manifest = read_manifest(fs, self.path)
        if manifest is None:
            manifest = self._create(dim, metric, index, hnsw)
        opts = manifest.options
        _check_stored_options(opts, self.path)
        stored_dim, stored_metric = opts.get("dim"), opts.get("metric", "cosine")
        if metric is not None and metric != stored_metric:
            raise InvalidArgumentError(f"this store uses metric {stored_metric!r}; it was opened with {metric!r}")
        if dim is not None and stored_dim is not None and dim != stored_dim:
            raise InvalidArgumentError(f"this store holds {stored_dim}-dimensional vectors; opened with dim={dim}")
        self._metric = stored_metric
        self._euclidean = 1 if stored_metric == "euclidean" else 0  # the score kernel's flag (`QueryMethods`)
        self._index_kind = index or opts.get("index", "hnsw")
        try:  # values a damaged or hostile manifest may hold: a typed error, never a TypeError
            stored_params = HNSWParams.from_dict(opts.get("hnsw", {}))
            compaction = CompactionConfig(**opts["compaction"]) if "compaction" in opts else None
            checkpoint = CheckpointConfig(**opts["checkpoint"]) if "checkpoint" in opts else None
            self._last_compaction = _last_compaction(opts.get("last_compaction"))
        except (TypeError, ValueError) as exc:
            raise CorruptStoreError(f"the manifest of {self.path} holds bad options: {exc}") from None
        self._hnsw = hnsw or stored_params
        if compaction is not None:
            self._compaction_config = compaction
        if checkpoint is not None:
            self._checkpoint_config = checkpoint
        self._cost = CostModel(opts.get("cost_model"))  # measured costs, if this store saved some
        self._manifest = manifest
        if manifest.snapshot is not None and opts.get("dim"):
            preload_kernels(self._index_kind, stored_metric)  # while the snapshot is read
        layout.check_referenced_files(fs, self.path, manifest)
        if not self._read_only:
            report.orphans_removed = layout.cleanup_orphans(fs, self.path, manifest)

        paths = [os.path.join(self.path, name) for name in manifest.logs]
        bad_record: tuple[str, int] | None = None  # a CRC-valid record whose content replay refused
        while True:
            self._state = self._load_state(manifest, stored_dim, dim)
            # Nothing is cut before every record read has been replayed: a refused open modifies no byte.
            scan = read_segments(fs, paths, manifest.snapshot_seq, repair=repair, truncate_tail=False,
                                 bad_record=bad_record)
            try:
                for rec in scan.records:
                    _crash.crashpoint("recover.replaying")
                    self._apply_record(rec.rtype, rec.payload, rec.seq, rec.path, rec.offset)
            except CorruptLogError:
                if not repair or bad_record is not None:
                    raise
                # With repair, such a record is a bad record like any other: the log is cut there. The state may
                # hold part of it, so it is loaded again and the log replayed up to the cut.
                bad_record = (rec.path, rec.offset)
                _close_index(self._state)  # the discarded state's linker, if it started one
                log.warning("store %s: repair cuts the log at a record that cannot be replayed (%s offset %d)",
                            self.path, os.path.basename(rec.path), rec.offset)
                continue
            break
        if not self._read_only:
            cut_segments(fs, paths, scan)
        report.records_replayed = len(scan.records)
        report.last_seq = scan.last_seq
        report.truncated_bytes = scan.truncated_bytes
        report.truncated_path = scan.truncated_path and os.path.basename(scan.truncated_path)
        report.truncated_offset = scan.truncated_offset
        report.records_lost = getattr(scan, "lost_records", 0)
        report.repaired = bool(repair and report.records_lost)
        if scan.truncated_bytes:
            log.warning("store %s: truncated a torn log tail of %d bytes", self.path, scan.truncated_bytes)
        self._last_seq = scan.last_seq
        self._older_log_bytes = sum(max(0, fs.size(p) - LOG_HEADER_SIZE) for p in paths[:-1])
        if self._read_only:  # no writer: count the last segment too
            self._older_log_bytes += max(0, fs.size(paths[-1]) - LOG_HEADER_SIZE)
        # Nothing this index object linked is in the snapshot (it counts only what it links itself, and the
        # linker may already have linked some of what the open queued): all of it is saved by the next checkpoint.
        self._linked_at_checkpoint = 0
        if not self._read_only:
            self._writer = LogWriter(fs, paths[-1], scan.last_seq + 1)
            if (stored_dim is None and self._state.dim is not None) or self._options_changed():
                self._rewrite_manifest()
        report.duration_ms = (time.perf_counter() - t0) * 1e3

    def _load_state(self, manifest: Manifest, stored_dim: int | None, dim: int | None) -> StoreState:
        """The state the manifest's snapshot holds (an empty one if it names none), before the log's replay."""
        fs, report = self._fs, self.recovery_report
        make_index = self._make_index_factory()
        state = StoreState(stored_dim if stored_dim is not None else dim, self._metric, make_index)
        if manifest.snapshot is not None:
            snap_path = os.path.join(self.path, manifest.snapshot)
            buffers = SnapshotBuffers()
            header, arrays = read_snapshot(fs, snap_path, destination=buffers)
            if "seq" in header and header["seq"] != manifest.snapshot_seq:
                # another snapshot under the live name (an older one of this store, or another store's): its state
                # is not the one the log continues, and loading it would silently drop or invent records
                raise CorruptSnapshotError(f"{manifest.snapshot} holds the state at sequence {header['seq']!r}; the "
                                           f"manifest of {self.path} expects {manifest.snapshot_seq}")
            state = StoreState(None, self._metric, make_index)
            state.load_snapshot(header, arrays, self._load_index, buffers)
            del arrays, buffers
            report.snapshot = manifest.snapshot
            report.snapshot_seq = manifest.snapshot_seq
            self._snapshot_bytes = fs.size(snap_path)
            created = header.get("created_at")
            self._last_checkpoint_at = float(created) if isinstance(created, (int, float)) else None
        if state.dim is None and dim is not None:
            state.set_dim(dim)
        return state

    def _create(self, dim: int | None, metric: str | None, index: str | None, hnsw: HNSWParams | None) -> Manifest:
        """Lay out a new, empty store: first log segment, then the manifest that names it."""
        if self._read_only:
            raise NotFoundError(f"no store at {self.path} (no MANIFEST)")
        layout.prepare_new_store(self._fs, self.path)
        seg = create_segment(self._fs, self.path, 1)
        options = {
            "dim": dim,
            "metric": metric or "cosine",
            "index": index or "hnsw",
            "hnsw": (hnsw or HNSWParams()).to_dict(),
            "compaction": CompactionConfig().to_dict(),
            "checkpoint": CheckpointConfig().to_dict(),
        }
        manifest = Manifest(FORMAT_VERSION, None, 0, [os.path.basename(seg)], options)
        write_manifest(self._fs, self.path, manifest)
        return manifest

    def _make_index_factory(self) -> Callable[[VectorTable], Index]:
        return _index_factory(self._index_kind, self._hnsw)

    def _load_index(self, table: VectorTable, kind: str, meta: dict[str, Any], arrays: dict[str, np.ndarray],
                    mapped: np.ndarray, buffers: dict[str, np.ndarray | None]) -> Index | None:
        """Rebuild the index object from snapshot arrays when the kinds match; None means 'build from vectors'.

        ``mapped``: bool (n_slots,), the slots holding records (an HNSW graph queues those it had not linked);
        ``buffers``: capacity-sized arrays the snapshot was read into, adopted by the graph."""
        if kind != self._index_kind:
            return None
        if kind == "hnsw":
            try:
                from .index.hnsw import HNSWIndex
            except ImportError:  # pragma: no cover
                return None

            try:  # the snapshot's own parameters: values a hostile file may hold, so a typed error
                stored = HNSWParams.from_dict(meta["params"]) if "params" in meta else self._hnsw
            except (TypeError, ValueError, AttributeError) as exc:
                raise CorruptSnapshotError(f"the snapshot's HNSW parameters are malformed: {exc}") from None
            params = HNSWParams(stored.m, stored.ef_construction, self._hnsw.ef_search, stored.seed)
            self._hnsw = params
            return HNSWIndex.from_arrays(table, params, meta, arrays, background=True, mapped=mapped, buffers=buffers)
        from .index.flat import FlatIndex

        return FlatIndex.from_arrays(table, meta, arrays)

    def _options(self) -> dict[str, Any]:
        return {
            "dim": self._state.dim,
            "metric": self._metric,
            "index": self._index_kind,
            "hnsw": self._hnsw.to_dict(),
            "compaction": self._compaction_config.to_dict(),
            "checkpoint": self._checkpoint_config.to_dict(),
            **({"cost_model": cost} if (cost := self._cost.to_dict()) is not None else {}),
            **({"last_compaction": self._last_compaction} if self._last_compaction is not None else {}),
        }

    def _options_changed(self) -> bool:
        return self._manifest.options != self._options()

    def _rewrite_manifest(self) -> None:
        """Write the manifest again as it stands, with the current options (a setter changed one)."""
        with self._manifest_lock:
            m = self._manifest
            self._write_manifest(m.snapshot, m.snapshot_seq, m.logs)

    def _write_manifest(self, snapshot: str | None, snapshot_seq: int, logs: list[str]) -> None:
        """Replace the manifest. If that fails we cannot know which manifest a reopen will read, so the store
        refuses writes until reopened (both candidates describe a complete, consistent store)."""
        manifest = Manifest(FORMAT_VERSION, snapshot, snapshot_seq, list(logs), self._options())
        try:
            write_manifest(self._fs, self.path, manifest)
        except OSError as exc:
            self._poisoned = f"replacing the manifest failed ({exc})"
            if isinstance(exc, StorageError):
                raise
            raise StorageError(f"replacing the manifest of {self.path} failed: {exc}") from exc
        self._manifest = manifest
