"""Namespaces: several stores under one root directory, each with quotas, backups and restore (SPEC section 7).

A namespace is a directory holding a small JSON file and the store itself, in a *generation* subdirectory::

    root/
      docs/                      the namespace "docs"
        NAMESPACE.json           {"format", "created_at", "quotas", "store": "store-0001"}
        store-0001/              a VecStore directory (MANIFEST, snap-*.vss, log-*.vsl, LOCK)
        backups/
          nightly/               a backup: copies of the store's files, and BACKUP.json written last
      ...

Why generations: a restore must leave either the whole old or the whole new namespace after a crash at any point.
It copies and verifies the backup into a staging directory, renames it to the next generation, and then switches
``NAMESPACE.json`` to it with an atomic file replace; that replace is the commit. Files of a generation the JSON
does not name are leftovers of an interrupted restore and are removed at the next start.

Nothing below the root is reached through a symbolic link: the manager registers its root with the file-system
layer (``vecstore_ref._fs.add_root``), which then opens every path below it one directory at a time without
following links, for the manager and for the stores it opens. A link planted anywhere below the root (a namespace,
``backups``, a backup, a store directory, a file in one) makes the call raise ``UnsafePathError`` (a namespace that
is itself a link: ``InvalidNameError``) before anything is read, written or deleted.

Backups are online and consistent: the files are copied while the store's lock is held (writes wait), after the log
is synced, so every write acknowledged before the backup started is in it and nothing half-written is. Archives
(``export_backup``/``import_backup``) are plain tar files of a backup directory; import accepts only regular files
with plain names and caps what it reads, then verifies every checksum before the backup appears.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import stat
import tarfile
import threading
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, BinaryIO, ParamSpec, TypeVar

from . import _crash
from ._fs import OSFileSystem, add_root, get_fs, is_inside, open_file, open_regular_file, remove_root, root_of
from .config import MAX_DIM, METRICS
from .errors import (
    AlreadyExistsError,
    BackupCorruptError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidNameError,
    InvalidNameTypeError,
    NotFoundError,
    QuotaExceededError,
    StorageError,
    UnsafeArchiveError,
    UnsafePathError,
    UnsupportedFormatError,
    VecStoreError,
)
from .opening import check_open_options, opened_by_owner
from .storage.format import BACKUP_FILE, MANIFEST_NAME, NAMESPACE_FILE
from .storage.lock import DirectoryLock
from .storage.manifest import read_manifest
from .validation import validate_store_path

if TYPE_CHECKING:
    from io import BufferedReader

    from .storage.manifest import Manifest
    from .store import VecStore

# Every name rule is applied with re.fullmatch: re.match with "$" also accepts a name ending in "\n".
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
BACKUPS_DIR = "backups"
FORMAT_VERSION = 1
MAX_ARCHIVE_BYTES = 64 * 2**30  # import_backup reads at most this much
_FILE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # the files a backup may hold
_COPY_CHUNK = 4 * 2**20
NAMESPACE_OPTIONS = ("dim", "metric", "index", "hnsw", "durability", "clock", "max_k")  # of VecStore.open


# Operations that remove records for good. A write made only of them is never refused for ``max_bytes``: its
# small log record is how a full namespace gets its space back (the next compaction drops what it removed), and
# refusing it would leave a namespace at its limit nothing to do but be deleted.
_FREES_SPACE = frozenset(("delete", "expire"))


@dataclass(frozen=True)
class Quotas:
    """Limits of one namespace: ``max_vectors`` records held (visible and soft-deleted), ``max_bytes`` of store
    files on disk. None = no limit. A write that would pass one raises
    [`QuotaExceededError`][vecstore_ref.errors.QuotaExceededError], except that hard deletes (and TTL expiry) always
    pass ``max_bytes``: they are how a namespace at its limit frees space."""

    max_vectors: int | None = None
    max_bytes: int | None = None

    def validate(self) -> None:
        for name in ("max_vectors", "max_bytes"):
            v = getattr(self, name)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int):
                raise InvalidArgumentTypeError(f"{name} must be an int or None, got {type(v).__name__}")
            if v < 0:
                raise InvalidArgumentError(f"{name} must be >= 0, got {v}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check(self, store: VecStore, effects: list[dict[str, Any]], payload_bytes: int) -> None:
        """Raise [`QuotaExceededError`][vecstore_ref.errors.QuotaExceededError] if committing ``effects`` would
        pass a limit (called before the log append, so nothing changes)."""
        if self.max_vectors is not None:
            held = store._state.n_live + store._state.n_soft
            mapped: dict[str, bool] = {}
            for op in effects:
                id_ = op["id"]
                was = mapped.get(id_, store._state.lookup(id_) >= 0)
                now = op["op"] == "upsert" or (was and op["op"] not in ("delete", "expire"))
                mapped[id_] = now
                held += int(now) - int(was)
            if held > self.max_vectors:
                raise QuotaExceededError(f"the write would hold {held} records; the namespace allows "
                                         f"{self.max_vectors}")
        if self.max_bytes is not None and not all(op["op"] in _FREES_SPACE for op in effects):
            log_bytes, snap_bytes = store._file_bytes()
            total = log_bytes + snap_bytes + payload_bytes
            if total > self.max_bytes:
                raise QuotaExceededError(f"the write would take the namespace to {total:,} bytes on disk; it "
                                         f"allows {self.max_bytes:,}")


@dataclass
class BackupInfo:
    """What [`NamespaceManager.backup_namespace`][vecstore_ref.NamespaceManager.backup_namespace] wrote."""

    namespace: str
    name: str
    created_at: datetime
    count: int
    dim: int | None
    metric: str
    bytes: int
    files: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["created_at"] = self.created_at.isoformat()
        return d


def is_name(name: object) -> bool:
    """True for a namespace or backup name: a str matching ``NAME_RE`` in full (SPEC section 7).

    The pattern starts with a letter or digit, so ``.``, ``..``, ``../x`` and ``/abs`` never match.
    """
    return isinstance(name, str) and NAME_RE.fullmatch(name) is not None


def is_plain_name(name: object, pattern: re.Pattern[str] = _FILE_RE) -> bool:
    """True for a file name a backup manifest or an archive may list: a str that matches ``pattern`` in full and
    does not end in a dot.

    These names come from files, not from the caller, so they are held to the stricter rule: some file systems
    (Windows, SMB shares) drop a trailing dot, which would make ``a.`` and ``a`` one file.
    """
    return isinstance(name, str) and pattern.fullmatch(name) is not None and not name.endswith(".")


def validate_name(name: object, what: str = "namespace") -> str:
    """A namespace or backup name: ``[A-Za-z0-9][A-Za-z0-9_.-]{0,63}`` matched in full."""
    if not isinstance(name, str):
        raise InvalidNameTypeError(f"{what} name must be a str, got {type(name).__name__}")
    if not is_name(name):
        raise InvalidNameError(f"{what} name {name!r} must be 1 to 64 of A-Z a-z 0-9 _ . - and start with a "
                               "letter or digit")
    return name


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _storage_errors_typed(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Let no bare `OSError` out of a manager call: a full disk, an I/O error or a permission refused while it
    works on its files is a `StorageError` naming the call (as every `VecStore` call reports them)."""

    @functools.wraps(method)
    def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except OSError as exc:
            if isinstance(exc, VecStoreError):
                raise
            root = getattr(args[0], "root", "") if args else ""
            raise StorageError(f"{method.__name__} under {root} failed: {exc}") from exc

    return call


class NamespaceManager:
    """Namespaces under ``root``, each one store with its own quotas and backups. Thread-safe."""

    def __init__(self, root: str | os.PathLike[str], *, read_only: bool = False) -> None:
        """``read_only=True`` creates and cleans nothing (the root must exist, else `NotFoundError`), opens
        the namespaces read-only, and refuses every write with `ReadOnlyError`: for inspecting a root that
        another process may be writing."""
        self.root = validate_store_path(root, "namespace root")
        self._fs = get_fs()
        self._read_only = bool(read_only)
        if os.path.islink(self.root):
            raise InvalidArgumentError(f"the namespace root {self.root} is a symbolic link")
        if self._read_only and not os.path.isdir(self.root):
            raise NotFoundError(f"no namespace root at {self.root}")
        if not self._read_only:
            try:
                self._fs.makedirs(self.root)
            except OSError as exc:
                raise StorageError(f"cannot create the namespace root {self.root}: {exc}") from exc
        self._lock = threading.RLock()
        self._handles: dict[str, VecStore] = {}
        self._runtime: dict[str, dict[str, Any]] = {}  # per namespace: clock and max_k given at creation
        self._closed = False
        # From here on no path below the root is reached through a symbolic link, by this manager or by the
        # stores it opens (vecstore_ref._fs.add_root); close() gives the registration back.
        add_root(self.root)
        if self._read_only:
            return
        for name in self._fs.listdir(self.root):
            if (name.startswith(".deleting-") or name.startswith(".creating-")) and _left_behind(name):
                self._remove_tree(os.path.join(self.root, name))

    # --- paths ------------------------------------------------------------------------------------------------

    def _ns_dir(self, ns: str) -> str:
        validate_name(ns)
        path = os.path.join(self.root, ns)
        if os.path.dirname(os.path.abspath(path)) != self.root:
            raise InvalidNameError(f"namespace {ns!r} resolves outside the root")
        if os.path.islink(path):
            raise InvalidNameError(f"namespace {ns!r} is a symbolic link; refused")
        return path

    def _existing(self, ns: str) -> str:
        path = self._ns_dir(ns)
        if not self._fs.isfile(os.path.join(path, NAMESPACE_FILE)):
            raise NotFoundError(f"no namespace {ns!r}")
        return path

    def _read_config(self, path: str) -> dict[str, Any]:
        return read_namespace_config(self._fs, path)

    def _remove_tree(self, path: str) -> None:
        """Remove a directory tree we own, best effort (leftovers are retried at the next start). A symbolic link
        inside is removed, never followed; ``path`` being one is left alone."""
        with contextlib.suppress(OSError):
            self._fs.rmtree(path)

    def _backups_dir(self, ns_path: str) -> str | None:
        """``<ns>/backups``, or None if the namespace has none yet; a symbolic link there is UnsafePathError."""
        bdir = os.path.join(ns_path, BACKUPS_DIR)
        if self._fs.isdir(bdir):
            return bdir
        if self._fs.exists(bdir):
            raise UnsafePathError(f"{bdir} is not a directory (a symbolic link?); refused")
        return None

    def _write_config(self, path: str, cfg: dict[str, Any]) -> None:
        data = json.dumps(cfg, indent=1, sort_keys=True).encode()
        self._fs.write_atomic(os.path.join(path, NAMESPACE_FILE), [data])

    def _check_open(self) -> None:
        if self._closed:
            from .errors import StoreClosedError

            raise StoreClosedError("the namespace manager is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self._read_only:
            from .errors import ReadOnlyError

            raise ReadOnlyError(f"the namespace root {self.root} was opened read_only=True")

    # --- namespaces -------------------------------------------------------------------------------------------

    @_storage_errors_typed
    def create_namespace(self, ns: str, *, quotas: Quotas | None = None, **open_options: Any) -> VecStore:
        """Create namespace ``ns`` (a new store opened with ``open_options``) and return its shared handle."""
        from .store import VecStore

        quotas = quotas or Quotas()
        if not isinstance(quotas, Quotas):
            raise InvalidArgumentTypeError("quotas must be a Quotas")
        quotas.validate()
        with self._lock:
            self._check_writable()
            path = self._ns_dir(ns)
            if self._fs.exists(path):
                if self._is_namespace(ns):
                    raise AlreadyExistsError(f"namespace {ns!r} exists")
                what = "a store" if self._fs.exists(os.path.join(path, MANIFEST_NAME)) else "something else"
                raise AlreadyExistsError(f"{path} exists and is not a namespace (it holds {what}): choose another "
                                         "name or another root")
            check_open_options(open_options, NAMESPACE_OPTIONS)
            staging = os.path.join(self.root, _in_progress(".creating-", ns))
            self._fs.makedirs(staging)
            try:
                with opened_by_owner():
                    VecStore.open(os.path.join(staging, "store-0001"), **open_options).close()
                cfg = {"format": FORMAT_VERSION, "created_at": _now_iso(), "quotas": quotas.to_dict(),
                       "store": "store-0001", "durability": open_options.get("durability", "fsync")}
                self._write_config(staging, cfg)
                self._fs.makedirs(os.path.join(staging, BACKUPS_DIR))
                self._fs.replace(staging, path)
                self._fs.fsync_dir(self.root)
            except BaseException:
                self._remove_tree(staging)
                raise
            return self._open_handle(ns, path, open_options)

    @_storage_errors_typed
    def get_namespace(self, ns: str) -> VecStore:
        """The one shared [`VecStore`][vecstore_ref.VecStore] handle of ``ns`` (opened on first use)."""
        validate_name(ns)
        with self._lock:
            self._check_open()
            h = self._handles.get(ns)
            if h is not None and not h._closed:
                return h
            return self._open_handle(ns, self._existing(ns), {})

    def _open_handle(self, ns: str, path: str, open_options: dict[str, Any]) -> VecStore:
        from .store import VecStore

        cfg = self._read_config(path)
        runtime = self._runtime.setdefault(ns, {})
        runtime.update({k: v for k, v in open_options.items() if k in ("clock", "max_k")})
        with opened_by_owner():
            store = VecStore.open(os.path.join(path, cfg["store"]), durability=cfg.get("durability", "fsync"),
                                  read_only=self._read_only, **runtime)
        if not self._read_only:
            # Only now, holding the current generation's lock: a restore renames its new generation in only
            # while it holds that lock, so another generation seen here is one a crash left behind (and a
            # namespace another process holds open was refused above, before anything was cleaned).
            try:
                self._cleanup_generations(path, cfg["store"])
            except BaseException:
                store.close()
                raise
        q = cfg.get("quotas") or {}
        quotas = Quotas(q.get("max_vectors"), q.get("max_bytes"))
        store._quota = quotas if (quotas.max_vectors is not None or quotas.max_bytes is not None) else None
        self._handles[ns] = store
        return store

    def _cleanup_generations(self, path: str, current: str) -> None:
        """Remove what an interrupted restore left: staging directories and generations not in use."""
        for name in self._fs.listdir(path):
            if name != current and (name.startswith("store-") or (name.startswith(".staging-") and _left_behind(name))):
                self._remove_tree(os.path.join(path, name))
        try:
            bdir = self._backups_dir(path)
        except UnsafePathError:
            return  # nothing is cleaned through a link; the backup calls refuse it
        for name in self._fs.listdir(bdir) if bdir else []:
            if (name.startswith(".tmp-") or name.startswith(".deleting-")) and _left_behind(name):  # interrupted
                self._remove_tree(os.path.join(bdir, name))  # type: ignore[arg-type]  # a name: bdir is set

    @_storage_errors_typed
    def list_namespaces(self) -> list[str]:
        with self._lock:
            self._check_open()
            return sorted(n for n in self._fs.listdir(self.root) if is_name(n) and self._is_namespace(n))

    def _is_namespace(self, name: str) -> bool:
        try:
            return self._fs.isfile(os.path.join(self.root, name, NAMESPACE_FILE))
        except UnsafePathError:  # a symbolic link planted under the root is no namespace
            return False

    @_storage_errors_typed
    def delete_namespace(self, ns: str) -> None:
        """Close and remove ``ns`` with its backups. It disappears at once (one rename), then the files go.

        Refused with `StoreLockedError` (nothing changed) while another process has the namespace open for writing.
        """
        with self._lock:
            self._check_writable()
            path = self._existing(ns)
            self._close_handle(ns)
            try:
                generation: str | None = self._read_config(path)["store"]
            except VecStoreError:  # a broken NAMESPACE.json opens nowhere: nobody can be writing to it
                generation = None
            with self._store_locked(path, generation):
                self._runtime.pop(ns, None)
                trash = os.path.join(self.root, _in_progress(".deleting-", ns))
                self._fs.replace(path, trash)
                self._fs.fsync_dir(self.root)
                self._remove_tree(trash)

    @contextlib.contextmanager
    def _store_locked(self, path: str, generation: str | None) -> Iterator[None]:
        """Hold the write lock of the namespace's store ``path/generation`` (if it exists) while a restore or a
        delete replaces or removes it: a writer in another process would otherwise go on appending, and
        acknowledging, writes to a directory that is no longer the namespace's."""
        if generation is None:
            yield
            return
        lock = DirectoryLock(os.path.join(path, generation))
        try:
            lock.acquire()
        except FileNotFoundError:  # never opened: no store directory yet, nobody can be writing to it
            yield
            return
        try:
            yield
        finally:
            lock.release()

    def _close_handle(self, ns: str) -> None:
        h = self._handles.pop(ns, None)
        if h is not None:
            h.close()

    def close(self) -> None:
        """Close every namespace handle. Idempotent."""
        with self._lock:
            for ns in list(self._handles):
                self._close_handle(ns)
            if not self._closed:
                remove_root(self.root)
            self._closed = True

    def __enter__(self) -> NamespaceManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- backups ----------------------------------------------------------------------------------------------

    def _backup_dir(self, ns: str, name: str) -> str:
        validate_name(name, "backup")
        return os.path.join(self._existing(ns), BACKUPS_DIR, name)

    def _existing_backup(self, ns: str, name: str) -> str:
        """The directory of backup ``name`` of ``ns``; NotFoundError if there is none, UnsafePathError if it (or
        ``<ns>/backups``) is a symbolic link."""
        target = self._backup_dir(ns, name)
        if not self._fs.isdir(target):
            if self._fs.exists(target):
                raise UnsafePathError(f"backup {name!r} of namespace {ns!r} is not a directory (a symbolic link?); "
                                      "refused")
            raise NotFoundError(f"namespace {ns!r} has no backup {name!r}")
        return target

    @_storage_errors_typed
    def backup_namespace(self, ns: str, backup_name: str) -> BackupInfo:
        """Copy ``ns`` into the backup ``backup_name``, online: writes wait while the files are copied."""
        with self._lock:
            self._check_writable()
            target = self._backup_dir(ns, backup_name)
            if self._fs.exists(target):
                raise AlreadyExistsError(f"namespace {ns!r} has a backup {backup_name!r}")
            store = self.get_namespace(ns)
            tmp = os.path.join(os.path.dirname(target), _in_progress(".tmp-", backup_name))
            self._fs.makedirs(tmp)
            try:
                # No checkpoint may run meanwhile: it rewrites the manifest (and removes the files the old one
                # named) under its own lock, not the write lock, so a copy could name files it does not hold.
                with store._ckpt_lock, store._lock:
                    store._check_open()
                    if store._writer is not None:
                        store._writer.sync()
                    manifest: Manifest = read_manifest(self._fs, store.path)  # type: ignore[assignment]  # open: one
                    names = ["MANIFEST"] + ([manifest.snapshot] if manifest.snapshot else []) + list(manifest.logs)
                    files = [_copy_file(self._fs, os.path.join(store.path, n), os.path.join(tmp, n)) | {"name": n}
                             for n in names]
                    st = store._state
                    count, dim = st.n_live + st.n_soft, st.dim
                    metric = store._metric
                created = datetime.now(timezone.utc)
                info = {"format": FORMAT_VERSION, "namespace": ns, "name": backup_name,
                        "created_at": created.isoformat(), "count": count, "dim": dim, "metric": metric,
                        "files": files}
                self._fs.write_atomic(os.path.join(tmp, BACKUP_FILE), [json.dumps(info, indent=1).encode()])
                _crash.crashpoint("backup.files_written")
                self._fs.replace(tmp, target)
                self._fs.fsync_dir(os.path.dirname(target))
            except BaseException:
                self._remove_tree(tmp)
                raise
            return BackupInfo(ns, backup_name, created, count, dim, metric, sum(f["size"] for f in files), files)

    @_storage_errors_typed
    def list_namespace_backups(self, ns: str) -> list[tuple[str, datetime, int]]:
        """``(name, created_at UTC, count)`` of each complete backup of ``ns``, newest first."""
        with self._lock:
            self._check_open()
            bdir = self._backups_dir(self._existing(ns))
            out = []
            for name in self._fs.listdir(bdir) if bdir else []:
                if not is_name(name):
                    continue
                try:
                    info = _read_backup_manifest(self._fs, os.path.join(bdir, name))  # type: ignore[arg-type]
                except (BackupCorruptError, UnsafePathError):  # not a (complete) backup: not listed
                    continue
                out.append((name, datetime.fromisoformat(info["created_at"]), int(info["count"])))
            return sorted(out, key=lambda r: (r[1], r[0]), reverse=True)

    @_storage_errors_typed
    def delete_namespace_backup(self, ns: str, backup_name: str) -> None:
        with self._lock:
            self._check_writable()
            target = self._existing_backup(ns, backup_name)
            trash = os.path.join(os.path.dirname(target), _in_progress(".deleting-", backup_name))
            self._fs.replace(target, trash)
            self._fs.fsync_dir(os.path.dirname(target))
            self._remove_tree(trash)

    @_storage_errors_typed
    def restore_namespace(self, ns: str, backup_name: str) -> None:
        """Replace ``ns`` by the backup: verified in a staging directory, then switched in by one atomic replace.

        The namespace's handle is closed and reopened: handles taken before the restore are closed.
        """
        with self._lock:
            self._check_writable()
            source = self._existing_backup(ns, backup_name)
            path = self._existing(ns)
            info = _read_backup_manifest(self._fs, source)
            staging = os.path.join(path, _in_progress(".staging-", ns))
            self._fs.makedirs(staging)
            with contextlib.ExitStack() as held:
                try:
                    for f in info["files"]:
                        _copy_verified(self._fs, os.path.join(source, f["name"]), os.path.join(staging, f["name"]),
                                       f)
                    self._fs.fsync_dir(staging)
                    _check_staged_store(staging, info, backup_name)
                    _crash.crashpoint("restore.staged")
                    cfg = self._read_config(path)
                    _check_restore_quota(cfg, info["count"], sum(f["size"] for f in info["files"]), ns, backup_name)
                    new_gen = _next_generation(cfg["store"])
                    self._close_handle(ns)
                    # StoreLockedError while another process writes to the namespace: nothing has changed
                    held.enter_context(self._store_locked(path, cfg["store"]))
                    target = os.path.join(path, new_gen)
                    if self._fs.exists(target):  # a restore that crashed before its switch left it: never current
                        self._remove_tree(target)
                    self._fs.replace(staging, target)
                    self._fs.fsync_dir(path)
                    _crash.crashpoint("restore.generation_renamed")
                except BaseException:
                    self._remove_tree(staging)
                    raise
                old_gen, cfg["store"] = cfg["store"], new_gen
                self._write_config(path, cfg)  # the commit: from here the namespace is the restored one
                _crash.crashpoint("restore.switched")
                self._remove_tree(os.path.join(path, old_gen))
            self._open_handle(ns, path, {})

    @_storage_errors_typed
    def export_backup(self, ns: str, backup_name: str, file: str | os.PathLike[str] | BinaryIO) -> None:
        """Write the backup as a tar archive to ``file`` (a path or a binary file object).

        A path is written whole or not at all: into a new temporary file beside it, renamed over it once complete
        (a file already there is replaced; a symbolic link there is replaced, never followed; a device, a FIFO or
        a socket there is refused with `InvalidArgumentError`, a directory with `StorageError`, and either is
        left as it is). A path inside the
        manager's root is refused with `InvalidArgumentError`: an archive written there could land on a store's
        own files.
        """
        with self._lock:
            self._check_open()
            kw = _archive_arg(file, "w")
            source = self._existing_backup(ns, backup_name)
            info = _read_backup_manifest(self._fs, source)
            names = [f["name"] for f in info["files"]] + [BACKUP_FILE]
            if "fileobj" in kw:
                self._write_archive(kw["fileobj"], source, names)
                return
            target = os.path.abspath(kw["name"])
            # The root itself, a path below it, or a link below it (which the rename would replace inside the root).
            if is_inside(target, self.root) or is_inside(os.path.dirname(target), self.root):
                raise InvalidArgumentError(f"{target} is inside the namespace root {self.root}; write the archive "
                                           "elsewhere")
            _check_replaceable(target)
            tmp = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.{uuid.uuid4().hex[:8]}.tmp")
            try:
                fd = open_file(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            except OSError as exc:
                raise StorageError(f"cannot write the archive: {exc}") from exc
            try:
                with os.fdopen(fd, "wb") as f:
                    self._write_archive(f, source, names)
                    f.flush()
                    os.fsync(f.fileno())
                try:
                    _check_replaceable(target)  # again: nothing may have taken the name meanwhile
                    os.replace(tmp, target)
                except OSError as exc:  # e.g. a directory at that path
                    raise StorageError(f"cannot write the archive to {target}: {exc}") from exc
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            with contextlib.suppress(OSError):  # the rename is durable once the directory is
                self._fs.fsync_dir(os.path.dirname(target))

    def _write_archive(self, out: BinaryIO, source: str, names: list[str]) -> None:
        """The backup directory ``source``'s files ``names`` as a tar archive written to ``out``."""
        try:
            with tarfile.open(mode="w", format=tarfile.PAX_FORMAT, fileobj=out) as tar:
                for n in names:
                    with _open_regular(self._fs, os.path.join(source, n)) as f:  # never through a link
                        st = os.fstat(f.fileno())
                        member = tarfile.TarInfo(n)
                        member.size, member.mtime, member.mode = st.st_size, int(st.st_mtime), 0o644
                        tar.addfile(member, f)
        except StorageError:
            raise
        except OSError as exc:  # writing the caller's file
            raise StorageError(f"cannot write the archive: {exc}") from exc

    @_storage_errors_typed
    def import_backup(self, ns: str, file: str | os.PathLike[str] | BinaryIO, backup_name: str, *,
                      max_bytes: int = MAX_ARCHIVE_BYTES) -> BackupInfo:
        """Read an archive made by [`export_backup`][vecstore_ref.NamespaceManager.export_backup] into the
        backup ``backup_name`` of ``ns``.

        Only regular files with plain names are accepted
        ([`UnsafeArchiveError`][vecstore_ref.errors.UnsafeArchiveError] otherwise), at most ``max_bytes`` are
        read, and every checksum is verified ([`BackupCorruptError`][vecstore_ref.errors.BackupCorruptError])
        before the backup appears.
        """
        kw = _archive_arg(file, "r")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
            raise InvalidArgumentTypeError(f"max_bytes must be an int, got {type(max_bytes).__name__}")
        if max_bytes < 0:
            raise InvalidArgumentError(f"max_bytes must be >= 0, got {max_bytes}")
        with self._lock:
            self._check_writable()
            target = self._backup_dir(ns, backup_name)
            if self._fs.exists(target):
                raise AlreadyExistsError(f"namespace {ns!r} has a backup {backup_name!r}")
            tmp = os.path.join(os.path.dirname(target), _in_progress(".tmp-", backup_name))
            self._fs.makedirs(tmp)
            try:
                _extract_safely(self._fs, kw, tmp, max_bytes)
                info = _read_backup_manifest(self._fs, tmp)
                for f in info["files"]:
                    _verify_file(self._fs, os.path.join(tmp, f["name"]), f)
                extra = set(self._fs.listdir(tmp)) - {f["name"] for f in info["files"]} - {BACKUP_FILE}
                if extra:
                    raise UnsafeArchiveError(f"the archive holds files its manifest does not list: {sorted(extra)}")
                _check_staged_store(tmp, info, backup_name, index="flat")  # a lying count is refused now
                self._fs.fsync_dir(tmp)  # the extracted files' entries are durable before the backup appears
                self._fs.replace(tmp, target)
                self._fs.fsync_dir(os.path.dirname(target))
            except BaseException:
                self._remove_tree(tmp)
                raise
            return BackupInfo(ns, backup_name, datetime.fromisoformat(info["created_at"]), int(info["count"]),
                              info["dim"], info["metric"], sum(f["size"] for f in info["files"]), info["files"])


# --- files --------------------------------------------------------------------------------------------------------

def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def _check_restore_quota(cfg: dict[str, Any], held: int, nbytes: int, ns: str, backup_name: str) -> None:
    """A restore may not take a namespace past its quotas (a backup imported from elsewhere may hold more)."""
    q = cfg.get("quotas") or {}
    if q.get("max_vectors") is not None and held > q["max_vectors"]:
        raise QuotaExceededError(f"backup {backup_name!r} holds {held} records; namespace {ns!r} allows "
                                 f"{q['max_vectors']}")
    if q.get("max_bytes") is not None and nbytes > q["max_bytes"]:
        raise QuotaExceededError(f"backup {backup_name!r} holds {nbytes:,} bytes of store files; namespace {ns!r} "
                                 f"allows {q['max_bytes']:,}")


def _next_generation(current: str) -> str:
    try:
        n = int(current.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        n = 0
    return f"store-{n + 1:04d}"


def _open_regular(fs: OSFileSystem, path: str) -> BufferedReader:
    """``fs.open_read(path)`` (never through a symbolic link), refusing anything but a regular file."""
    f = fs.open_read(path)
    if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
        f.close()
        raise BackupCorruptError(f"{path} is not a regular file")
    return f


def _copy_file(fs: OSFileSystem, src: str, dst: str, limit: int | None = None) -> dict[str, Any]:
    """Copy ``src`` to the new file ``dst`` (fsynced), refusing anything but a regular file; returns size and
    SHA-256. Both are opened through ``fs``, so neither is ever reached through a symbolic link."""
    h = hashlib.sha256()
    size = 0
    with _open_regular(fs, src) as fin, fs.open_append(dst, create=True) as fout:
        while True:
            want = _COPY_CHUNK if limit is None else min(_COPY_CHUNK, limit + 1 - size)
            chunk = fin.read(want) if want > 0 else b""
            if not chunk:
                break
            size += len(chunk)
            if limit is not None and size > limit:
                raise BackupCorruptError(f"{src} is larger than its manifest says")
            h.update(chunk)
            fout.write(chunk)
        fout.fsync()
    return {"size": size, "sha256": h.hexdigest()}


def _copy_verified(fs: OSFileSystem, src: str, dst: str, entry: dict[str, Any]) -> None:
    try:
        got = _copy_file(fs, src, dst, limit=int(entry["size"]))
    except FileNotFoundError:
        raise BackupCorruptError(f"the backup lacks {os.path.basename(src)}, which its manifest lists") from None
    if got["size"] != entry["size"] or got["sha256"] != entry["sha256"]:
        raise BackupCorruptError(f"{os.path.basename(src)} does not match the backup's checksum")


def _verify_file(fs: OSFileSystem, path: str, entry: dict[str, Any]) -> None:
    try:
        f = _open_regular(fs, path)
    except FileNotFoundError:
        raise BackupCorruptError(f"the backup lacks {os.path.basename(path)}, which its manifest lists") from None
    with f:
        if os.fstat(f.fileno()).st_size != entry["size"]:
            raise BackupCorruptError(f"{os.path.basename(path)} does not match the backup's manifest")
        h = hashlib.sha256()
        for chunk in iter(lambda: f.read(_COPY_CHUNK), b""):
            h.update(chunk)
    if h.hexdigest() != entry["sha256"]:
        raise BackupCorruptError(f"{os.path.basename(path)} does not match the backup's checksum")


def _check_staged_store(directory: str, info: dict[str, Any], backup_name: str, index: str | None = None) -> None:
    """Open the store files of a backup read-only and check them against its manifest (count, dim, metric).

    The checksums only say the files are the ones the manifest lists; opening says they form a store, and the
    counts say the manifest tells the truth about it. ``index="flat"`` skips building a graph (an import only
    checks; the restore that follows builds it). Anything wrong is `BackupCorruptError`: the files come
    from outside, so their store's errors (a corrupt log, say) are reported as a corrupt backup.
    """
    from .store import VecStore

    try:
        with VecStore.open(directory, read_only=True, index=index) as staged:
            st = staged._state
            held, dim, metric = st.n_live + st.n_soft, st.dim, staged._metric
            _check_staged_rows(st)
    except BackupCorruptError:
        raise
    except (VecStoreError, ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError,
            AttributeError, ZeroDivisionError) as exc:
        raise BackupCorruptError(f"the store in backup {backup_name!r} does not open: {exc}") from None
    if (held, dim, metric) != (info["count"], info["dim"], info["metric"]):
        raise BackupCorruptError(f"backup {backup_name!r} holds {held} records of dim {dim} under {metric}; its "
                                 f"manifest says {info['count']} of dim {info['dim']} under {info['metric']}")


def _check_staged_rows(st: Any) -> None:
    """Decode and validate every record's metadata, which opening a store checks only as far as it can without
    work per record (`vecstore_ref.columns.decode_row`): a backup comes from outside, and a restore is the one
    moment a full read is cheap next to what it protects."""
    import numpy as np

    from .metadata import validate_metadata
    from .state import FREE

    columns = st.columns
    if not columns.any_text:
        return
    for slot in np.flatnonzero(st.state[: st.n_slots] != FREE).tolist():
        validate_metadata(columns.get(slot))


def _read_backup_manifest(fs: OSFileSystem, directory: str) -> dict[str, Any]:
    path = os.path.join(directory, BACKUP_FILE)
    try:
        with _open_regular(fs, path) as f:
            if os.fstat(f.fileno()).st_size > 2**24:
                raise BackupCorruptError(f"{path} is larger than a backup manifest can be")
            info = json.loads(f.read())
        if not isinstance(info, dict):
            raise BackupCorruptError(f"{path} is not a JSON object")
        fmt = info.get("format")
        if isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > FORMAT_VERSION:
            raise UnsupportedFormatError(f"{path}: backup format {fmt} is newer than this library's "
                                         f"{FORMAT_VERSION}")
        if fmt != FORMAT_VERSION:
            raise BackupCorruptError(f"{path}: unknown backup format {fmt!r}")
        datetime.fromisoformat(info["created_at"])
        count, dim, metric = info["count"], info["dim"], info["metric"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise BackupCorruptError(f"{path} gives a bad record count {count!r}")
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= MAX_DIM):
            raise BackupCorruptError(f"{path} gives a bad dimension {dim!r}")
        if metric not in METRICS:
            raise BackupCorruptError(f"{path} gives an unknown metric {metric!r}")
        files = info["files"]
        if not isinstance(files, list) or not files:
            raise BackupCorruptError(f"{path} lists no files")
        for f in files:
            if not isinstance(f, dict):
                raise BackupCorruptError(f"{path} lists a file that is not a JSON object")
            if not is_plain_name(f["name"], _FILE_RE) or f["name"] == BACKUP_FILE:
                raise BackupCorruptError(f"{path} lists an unsafe file name {f['name']!r}")
            if isinstance(f["size"], bool) or not isinstance(f["size"], int) or f["size"] < 0:
                raise BackupCorruptError(f"{path} gives a bad size for {f['name']!r}")
            if not re.fullmatch(r"[0-9a-f]{64}", str(f["sha256"])):
                raise BackupCorruptError(f"{path} gives a bad checksum for {f['name']!r}")
        if len({f["name"] for f in files}) != len(files):
            raise BackupCorruptError(f"{path} lists a file twice")
        return info
    except FileNotFoundError:
        raise BackupCorruptError(f"{directory} has no {BACKUP_FILE}") from None
    except (BackupCorruptError, UnsupportedFormatError, UnsafePathError):
        raise
    except RecursionError:
        raise BackupCorruptError(f"{path} is nested too deeply to be a backup manifest") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BackupCorruptError(f"{path} is unreadable: {exc}") from None


def _check_replaceable(target: str) -> None:
    """Refuse an archive path that holds something a rename would destroy: a directory, a device, a FIFO or a
    socket (``/dev/null`` given by mistake, say). A regular file or a symbolic link is replaced."""
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StorageError(f"cannot write the archive to {target}: {exc}") from exc
    if stat.S_ISDIR(mode):  # (as the rename over it would fail)
        raise StorageError(f"cannot write the archive to {target}: it is a directory (left as it is)")
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise InvalidArgumentError(f"the archive path {target} is not a regular file (a device, a FIFO or a "
                                   "socket): refused, left as it is")


# --- work in progress ----------------------------------------------------------------------------------------
#
# A call that builds something under the root (a namespace being created, a restore's staging copy, a backup
# being written, a tree being deleted) works in a directory whose name says which process made it. A manager
# cleans up at its start what calls interrupted by a crash left behind, and only that: the directories of a
# process that is still running (another process's manager working on the same root, the server's, say) are
# its work in flight and are left alone.

_PID_MARK = re.compile(r"-p(\d+)-[0-9a-f]{8}$")


def _in_progress(prefix: str, label: str) -> str:
    """The name of a directory of work in progress: ``prefix``, ``label``, this process's pid, a random part."""
    return f"{prefix}{label}-p{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _left_behind(name: str) -> bool:
    """Whether a directory of work in progress was left by a process that has ended (one without a pid in its
    name is from a version before pids were recorded: left behind too)."""
    m = _PID_MARK.search(name)
    if m is None:
        return True
    pid = int(m.group(1))
    if pid == os.getpid():
        return False  # this process's own call, running now on another thread
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # (PermissionError: it exists, under another user)
        return False
    return False


def read_namespace_config(fs: OSFileSystem, path: str) -> dict[str, Any]:
    """The checked ``NAMESPACE.json`` of the namespace directory ``path`` (a `StorageError` if it is unreadable,
    of an unknown format, or names a store generation that is not a plain name)."""
    try:
        cfg = json.loads(fs.read_bytes(os.path.join(path, NAMESPACE_FILE)))
    except StorageError:
        raise
    except (OSError, ValueError, RecursionError) as exc:
        raise StorageError(f"{path}/{NAMESPACE_FILE} is unreadable: {exc}") from exc
    if (not isinstance(cfg, dict) or cfg.get("format") != FORMAT_VERSION
            or not is_plain_name(cfg.get("store"), _FILE_RE)):
        raise StorageError(f"{path}/{NAMESPACE_FILE} has an unknown format")
    q = cfg.get("quotas")
    try:
        if q is not None:
            if type(q) is not dict:
                raise InvalidArgumentError("quotas is not an object")
            Quotas(q.get("max_vectors"), q.get("max_bytes")).validate()
    except InvalidArgumentError as exc:
        raise StorageError(f"{path}/{NAMESPACE_FILE} holds bad quotas: {exc}") from None
    return cfg


def open_namespace_store(ns_dir: str | os.PathLike[str], *, read_only: bool) -> VecStore:
    """The store of the namespace whose directory is ``ns_dir`` (``ROOT/NS``), opened as its owner, with its
    quotas and durability, but without a `NamespaceManager`: nothing under the root is cleaned up and no root
    lock is taken, so a process that reaches one namespace this way (the command line's per-store commands)
    never touches what another process is doing elsewhere under the root. A server that holds the namespace
    open holds its store's lock: a writable open is then a `StoreLockedError`.

    Refused: a namespace directory or root that is a symbolic link, a name that is not a namespace name, an
    unreadable ``NAMESPACE.json``, and a current generation that holds no store (a copied ``NAMESPACE.json``
    never makes a directory a namespace).
    """
    from .opening import opened_by_owner
    from .store import VecStore
    from .validation import validate_store_path

    path = validate_store_path(ns_dir, "namespace directory").rstrip(os.sep) or os.sep
    root, name = os.path.split(path)
    if os.path.islink(path):
        raise InvalidNameError(f"the namespace directory {path} is a symbolic link; refused")
    if os.path.islink(root):
        raise InvalidArgumentError(f"the namespace root {root} is a symbolic link")
    validate_name(name)
    fs = get_fs()
    cfg = read_namespace_config(fs, path)
    store_dir = os.path.join(path, cfg["store"])
    if os.path.islink(store_dir) or not fs.isfile(os.path.join(store_dir, MANIFEST_NAME)):
        raise NotFoundError(f"the namespace at {path} has no store {cfg['store']!r} (not a namespace)")
    with opened_by_owner():
        store = VecStore.open(store_dir, durability=cfg.get("durability", "fsync"), read_only=read_only)
    q = cfg.get("quotas") or {}
    quotas = Quotas(q.get("max_vectors"), q.get("max_bytes"))
    store._quota = quotas if (quotas.max_vectors is not None or quotas.max_bytes is not None) else None
    return store


def _archive_arg(file: object, mode: str) -> dict[str, Any]:
    """The ``tarfile.open`` keywords for an archive given as a path or a binary file object (``mode`` "r" or "w")."""
    if hasattr(file, "read" if mode == "r" else "write"):
        if isinstance(file, io.TextIOBase):
            raise InvalidArgumentTypeError("the archive must be a binary file object (opened with 'rb' or 'wb'), "
                                           "not a text one")
        return {"fileobj": file}
    try:
        path = os.fspath(file)  # type: ignore[call-overload]  # anything else: TypeError
    except TypeError:
        raise InvalidArgumentTypeError(f"the archive must be a path or a binary file object, got "
                                       f"{type(file).__name__}") from None
    if not isinstance(path, str) or "\x00" in path:
        raise InvalidArgumentError(f"the archive path {path!r} must be a str without NUL bytes")
    return {"name": path}


def _extract_safely(fs: OSFileSystem, archive: dict[str, Any], directory: str, max_bytes: int) -> None:
    """Extract the regular, plainly named members of a tar archive (``archive``: the keywords of `_archive_arg`),
    reading at most ``max_bytes``; files are created through ``fs`` (never through a symbolic link). An archive
    path below a namespace root is opened as every path there is, without following a link; any archive path
    must name a regular file (a FIFO is refused, never waited on)."""
    total = 0
    opened = None
    try:
        name = archive.get("name")
        if name is not None:  # below a namespace root, opened as every path there is, without following a link
            path = os.path.abspath(name)
            fd = open_file(path, os.O_RDONLY) if root_of(path) is not None else open_regular_file(path)
            opened = os.fdopen(fd, "rb")
            archive = {"fileobj": opened}
        with tarfile.open(mode="r:*", **archive) as tar:
            for member in tar:
                if not member.isreg():
                    raise UnsafeArchiveError(f"archive member {member.name!r} is not a regular file")
                if not is_plain_name(member.name, _FILE_RE):
                    raise UnsafeArchiveError(f"archive member {member.name!r} is not a plain file name")
                total += member.size
                if total > max_bytes:
                    raise UnsafeArchiveError(f"the archive holds more than {max_bytes:,} bytes")
                dst = os.path.join(directory, member.name)
                if fs.exists(dst):
                    raise UnsafeArchiveError(f"archive member {member.name!r} appears twice")
                src = tar.extractfile(member)  # a file object: the member is a regular file
                with fs.open_append(dst, create=True) as out:
                    left = member.size
                    while left > 0:
                        chunk = src.read(min(_COPY_CHUNK, left))  # type: ignore[union-attr]
                        if not chunk:
                            raise BackupCorruptError(f"archive member {member.name!r} is truncated")
                        out.write(chunk)
                        left -= len(chunk)
                    out.fsync()
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError) as exc:
        # EOFError, zlib.error: a cut compressed archive; BadGzipFile (an OSError): a gzip CRC that fails
        raise BackupCorruptError(f"not a readable tar archive: {exc}") from None
    except StorageError:
        raise
    except OSError as exc:  # the caller's file cannot be read (missing, a directory), or extracting failed
        raise StorageError(f"importing the archive failed: {exc}") from exc
    finally:
        if opened is not None:
            opened.close()


__all__ = ["NamespaceManager", "Quotas", "BackupInfo", "validate_name"]
