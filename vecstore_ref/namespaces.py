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

Backups are online and consistent: the files are copied while the store's lock is held (writes wait), after the log
is synced, so every write acknowledged before the backup started is in it and nothing half-written is. Archives
(``export_backup``/``import_backup``) are plain tar files of a backup directory; import accepts only regular files
with plain names and caps what it reads, then verifies every checksum before the backup appears.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import tarfile
import threading
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from . import _crash
from ._fs import get_fs
from .errors import (
    AlreadyExistsError,
    BackupCorruptError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidNameError,
    NotFoundError,
    QuotaExceededError,
    StorageError,
    UnsafeArchiveError,
    UnsupportedFormatError,
)
from .opening import check_open_options
from .storage.manifest import read_manifest

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
NAMESPACE_FILE = "NAMESPACE.json"
BACKUP_FILE = "BACKUP.json"
BACKUPS_DIR = "backups"
FORMAT_VERSION = 1
MAX_ARCHIVE_BYTES = 64 * 2**30  # import_backup reads at most this much
_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")  # the files a backup may hold
_COPY_CHUNK = 4 * 2**20
NAMESPACE_OPTIONS = ("dim", "metric", "index", "hnsw", "durability", "clock", "max_k")  # of VecStore.open


@dataclass(frozen=True)
class Quotas:
    """Limits of one namespace: ``max_vectors`` records held (visible and soft-deleted), ``max_bytes`` of store
    files on disk. None = no limit. A write that would pass one raises :class:`QuotaExceededError`."""

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

    def to_dict(self) -> dict:
        return asdict(self)

    def check(self, store, effects: list[dict], payload_bytes: int) -> None:
        """Raise :class:`QuotaExceededError` if committing ``effects`` would pass a limit (called before the log
        append, so nothing changes)."""
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
        if self.max_bytes is not None:
            log_bytes, snap_bytes = store._file_bytes()
            total = log_bytes + snap_bytes + payload_bytes
            if total > self.max_bytes:
                raise QuotaExceededError(f"the write would take the namespace to {total:,} bytes on disk; it "
                                         f"allows {self.max_bytes:,}")


@dataclass
class BackupInfo:
    """What :meth:`NamespaceManager.backup_namespace` wrote."""

    namespace: str
    name: str
    created_at: datetime
    count: int
    dim: int | None
    metric: str
    bytes: int
    files: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["created_at"] = self.created_at.isoformat()
        return d


def validate_name(name: object, what: str = "namespace") -> str:
    """A namespace or backup name: ``^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$``, not ``.`` or ``..``."""
    if not isinstance(name, str):
        raise InvalidNameError(f"{what} name must be a str, got {type(name).__name__}")
    if not NAME_RE.match(name) or name in (".", ".."):
        raise InvalidNameError(f"{what} name {name!r} must match {NAME_RE.pattern}")
    return name


class NamespaceManager:
    """Namespaces under ``root``, each one store with its own quotas and backups. Thread-safe."""

    def __init__(self, root, *, read_only: bool = False):
        """``read_only=True`` creates and cleans nothing (the root must exist, else `NotFoundError`), opens
        the namespaces read-only, and refuses every write with `ReadOnlyError`: for inspecting a root that
        another process may be writing."""
        self.root = os.path.abspath(os.fspath(root))
        self._fs = get_fs()
        self._read_only = bool(read_only)
        if os.path.islink(self.root):
            raise InvalidArgumentError(f"the namespace root {self.root} is a symbolic link")
        if self._read_only and not os.path.isdir(self.root):
            raise NotFoundError(f"no namespace root at {self.root}")
        self._lock = threading.RLock()
        self._handles: dict = {}
        self._runtime: dict[str, dict] = {}  # per namespace: clock and max_k given at creation (not persisted)
        self._closed = False
        if self._read_only:
            return
        self._fs.makedirs(self.root)
        for name in self._fs.listdir(self.root):
            if name.startswith(".deleting-") or name.startswith(".creating-"):
                shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)

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
        if not os.path.isfile(os.path.join(path, NAMESPACE_FILE)):
            raise NotFoundError(f"no namespace {ns!r}")
        return path

    def _read_config(self, path: str) -> dict:
        try:
            cfg = json.loads(self._fs.read_bytes(os.path.join(path, NAMESPACE_FILE)))
        except (OSError, ValueError) as exc:
            raise StorageError(f"{path}/{NAMESPACE_FILE} is unreadable: {exc}") from exc
        if cfg.get("format") != FORMAT_VERSION or not _FILE_RE.match(str(cfg.get("store", ""))):
            raise StorageError(f"{path}/{NAMESPACE_FILE} has an unknown format")
        return cfg

    def _write_config(self, path: str, cfg: dict) -> None:
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

    def create_namespace(self, ns: str, *, quotas: Quotas | None = None, **open_options):
        """Create namespace ``ns`` (a new store opened with ``open_options``) and return its shared handle."""
        from .store import VecStore

        quotas = quotas or Quotas()
        if not isinstance(quotas, Quotas):
            raise InvalidArgumentTypeError("quotas must be a Quotas")
        quotas.validate()
        with self._lock:
            self._check_writable()
            path = self._ns_dir(ns)
            if os.path.lexists(path):
                raise AlreadyExistsError(f"namespace {ns!r} exists")
            check_open_options(open_options, NAMESPACE_OPTIONS)
            staging = os.path.join(self.root, f".creating-{ns}-{uuid.uuid4().hex[:8]}")
            self._fs.makedirs(staging)
            try:
                VecStore.open(os.path.join(staging, "store-0001"), **open_options).close()
                cfg = {"format": FORMAT_VERSION, "created_at": _now_iso(), "quotas": quotas.to_dict(),
                       "store": "store-0001", "durability": open_options.get("durability", "fsync")}
                self._write_config(staging, cfg)
                self._fs.makedirs(os.path.join(staging, BACKUPS_DIR))
                self._fs.replace(staging, path)
                self._fs.fsync_dir(self.root)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            return self._open_handle(ns, path, open_options)

    def get_namespace(self, ns: str):
        """The one shared :class:`VecStore` handle of ``ns`` (opened on first use)."""
        with self._lock:
            self._check_open()
            h = self._handles.get(ns)
            if h is not None and not h._closed:
                return h
            return self._open_handle(ns, self._existing(ns), {})

    def _open_handle(self, ns: str, path: str, open_options: dict):
        from .store import VecStore

        cfg = self._read_config(path)
        if not self._read_only:
            self._cleanup_generations(path, cfg["store"])
        runtime = self._runtime.setdefault(ns, {})
        runtime.update({k: v for k, v in open_options.items() if k in ("clock", "max_k")})
        store = VecStore.open(os.path.join(path, cfg["store"]), durability=cfg.get("durability", "fsync"),
                              read_only=self._read_only, **runtime)
        q = cfg.get("quotas") or {}
        quotas = Quotas(q.get("max_vectors"), q.get("max_bytes"))
        store._quota = quotas if (quotas.max_vectors is not None or quotas.max_bytes is not None) else None
        self._handles[ns] = store
        return store

    def _cleanup_generations(self, path: str, current: str) -> None:
        """Remove what an interrupted restore left: staging directories and generations not in use."""
        for name in self._fs.listdir(path):
            if name != current and (name.startswith("store-") or name.startswith(".staging-")):
                shutil.rmtree(os.path.join(path, name), ignore_errors=True)
        bdir = os.path.join(path, BACKUPS_DIR)
        for name in self._fs.listdir(bdir) if os.path.isdir(bdir) else []:
            if name.startswith(".tmp-") or name.startswith(".deleting-"):  # an interrupted backup or import
                shutil.rmtree(os.path.join(bdir, name), ignore_errors=True)

    def list_namespaces(self) -> list[str]:
        with self._lock:
            self._check_open()
            return sorted(n for n in self._fs.listdir(self.root)
                          if NAME_RE.match(n) and not os.path.islink(os.path.join(self.root, n))
                          and os.path.isfile(os.path.join(self.root, n, NAMESPACE_FILE)))

    def delete_namespace(self, ns: str) -> None:
        """Close and remove ``ns`` with its backups. It disappears at once (one rename), then the files go."""
        with self._lock:
            self._check_writable()
            path = self._existing(ns)
            self._close_handle(ns)
            self._runtime.pop(ns, None)
            trash = os.path.join(self.root, f".deleting-{ns}-{uuid.uuid4().hex[:8]}")
            self._fs.replace(path, trash)
            self._fs.fsync_dir(self.root)
            shutil.rmtree(trash, ignore_errors=True)

    def _close_handle(self, ns: str) -> None:
        h = self._handles.pop(ns, None)
        if h is not None:
            h.close()

    def close(self) -> None:
        """Close every namespace handle. Idempotent."""
        with self._lock:
            for ns in list(self._handles):
                self._close_handle(ns)
            self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- backups ----------------------------------------------------------------------------------------------

    def _backup_dir(self, ns: str, name: str) -> str:
        validate_name(name, "backup")
        return os.path.join(self._existing(ns), BACKUPS_DIR, name)

    def backup_namespace(self, ns: str, backup_name: str) -> BackupInfo:
        """Copy ``ns`` into the backup ``backup_name``, online: writes wait while the files are copied."""
        with self._lock:
            self._check_writable()
            target = self._backup_dir(ns, backup_name)
            if os.path.lexists(target):
                raise AlreadyExistsError(f"namespace {ns!r} has a backup {backup_name!r}")
            store = self.get_namespace(ns)
            tmp = os.path.join(os.path.dirname(target), f".tmp-{backup_name}-{uuid.uuid4().hex[:8]}")
            self._fs.makedirs(tmp)
            try:
                with store._lock:
                    store._check_open()
                    if store._writer is not None:
                        store._writer.sync()
                    manifest = read_manifest(self._fs, store.path)
                    names = ["MANIFEST"] + ([manifest.snapshot] if manifest.snapshot else []) + list(manifest.logs)
                    files = [_copy_file(os.path.join(store.path, n), os.path.join(tmp, n)) | {"name": n}
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
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return BackupInfo(ns, backup_name, created, count, dim, metric, sum(f["size"] for f in files), files)

    def list_namespace_backups(self, ns: str) -> list[tuple[str, datetime, int]]:
        """``(name, created_at UTC, count)`` of each complete backup of ``ns``, newest first."""
        with self._lock:
            self._check_open()
            bdir = os.path.join(self._existing(ns), BACKUPS_DIR)
            out = []
            for name in self._fs.listdir(bdir) if os.path.isdir(bdir) else []:
                if not NAME_RE.match(name):
                    continue
                try:
                    info = _read_backup_manifest(os.path.join(bdir, name))
                except BackupCorruptError:
                    continue
                out.append((name, datetime.fromisoformat(info["created_at"]), int(info["count"])))
            return sorted(out, key=lambda r: (r[1], r[0]), reverse=True)

    def delete_namespace_backup(self, ns: str, backup_name: str) -> None:
        with self._lock:
            self._check_writable()
            target = self._backup_dir(ns, backup_name)
            if not os.path.isdir(target) or os.path.islink(target):
                raise NotFoundError(f"namespace {ns!r} has no backup {backup_name!r}")
            trash = os.path.join(os.path.dirname(target), f".deleting-{backup_name}-{uuid.uuid4().hex[:8]}")
            self._fs.replace(target, trash)
            self._fs.fsync_dir(os.path.dirname(target))
            shutil.rmtree(trash, ignore_errors=True)

    def restore_namespace(self, ns: str, backup_name: str) -> None:
        """Replace ``ns`` by the backup: verified in a staging directory, then switched in by one atomic replace.

        The namespace's handle is closed and reopened: handles taken before the restore are closed.
        """
        from .store import VecStore

        with self._lock:
            self._check_writable()
            source = self._backup_dir(ns, backup_name)
            if not os.path.isdir(source) or os.path.islink(source):
                raise NotFoundError(f"namespace {ns!r} has no backup {backup_name!r}")
            path = self._existing(ns)
            info = _read_backup_manifest(source)
            staging = os.path.join(path, f".staging-{uuid.uuid4().hex[:8]}")
            self._fs.makedirs(staging)
            try:
                for f in info["files"]:
                    _copy_verified(os.path.join(source, f["name"]), os.path.join(staging, f["name"]), f)
                self._fs.fsync_dir(staging)
                with VecStore.open(staging, read_only=True) as staged:  # it opens: the store's own checks pass
                    held = staged._state.n_live + staged._state.n_soft
                    if held != info["count"] or staged._state.dim != info["dim"]:
                        raise BackupCorruptError(f"backup {backup_name!r} holds {held} records of dim "
                                                 f"{staged._state.dim}; its manifest says {info['count']} of dim "
                                                 f"{info['dim']}")
                _crash.crashpoint("restore.staged")
                cfg = self._read_config(path)
                new_gen = _next_generation(cfg["store"])
                self._close_handle(ns)
                self._fs.replace(staging, os.path.join(path, new_gen))
                self._fs.fsync_dir(path)
                _crash.crashpoint("restore.generation_renamed")
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            old_gen, cfg["store"] = cfg["store"], new_gen
            self._write_config(path, cfg)  # the commit: from here the namespace is the restored one
            _crash.crashpoint("restore.switched")
            shutil.rmtree(os.path.join(path, old_gen), ignore_errors=True)
            self._open_handle(ns, path, {})

    def export_backup(self, ns: str, backup_name: str, file) -> None:
        """Write the backup as a tar archive to ``file`` (a path or a binary file object)."""
        with self._lock:
            self._check_open()
            source = self._backup_dir(ns, backup_name)
            if not os.path.isdir(source) or os.path.islink(source):
                raise NotFoundError(f"namespace {ns!r} has no backup {backup_name!r}")
            info = _read_backup_manifest(source)
            names = [f["name"] for f in info["files"]] + [BACKUP_FILE]
            kw = {"fileobj": file} if hasattr(file, "write") else {"name": os.fspath(file)}
            with tarfile.open(mode="w", format=tarfile.PAX_FORMAT, **kw) as tar:
                for n in names:
                    tar.add(os.path.join(source, n), arcname=n, recursive=False)

    def import_backup(self, ns: str, file, backup_name: str, *, max_bytes: int = MAX_ARCHIVE_BYTES) -> BackupInfo:
        """Read an archive made by :meth:`export_backup` into the backup ``backup_name`` of ``ns``.

        Only regular files with plain names are accepted (:class:`UnsafeArchiveError` otherwise), at most
        ``max_bytes`` are read, and every checksum is verified (:class:`BackupCorruptError`) before the backup
        appears.
        """
        with self._lock:
            self._check_writable()
            target = self._backup_dir(ns, backup_name)
            if os.path.lexists(target):
                raise AlreadyExistsError(f"namespace {ns!r} has a backup {backup_name!r}")
            tmp = os.path.join(os.path.dirname(target), f".tmp-{backup_name}-{uuid.uuid4().hex[:8]}")
            self._fs.makedirs(tmp)
            try:
                _extract_safely(file, tmp, max_bytes)
                info = _read_backup_manifest(tmp)
                for f in info["files"]:
                    _verify_file(os.path.join(tmp, f["name"]), f)
                extra = set(os.listdir(tmp)) - {f["name"] for f in info["files"]} - {BACKUP_FILE}
                if extra:
                    raise UnsafeArchiveError(f"the archive holds files its manifest does not list: {sorted(extra)}")
                self._fs.replace(tmp, target)
                self._fs.fsync_dir(os.path.dirname(target))
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return BackupInfo(ns, backup_name, datetime.fromisoformat(info["created_at"]), int(info["count"]),
                              info["dim"], info["metric"], sum(f["size"] for f in info["files"]), info["files"])


# --- files --------------------------------------------------------------------------------------------------------

def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def _next_generation(current: str) -> str:
    try:
        n = int(current.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        n = 0
    return f"store-{n + 1:04d}"


def _copy_file(src: str, dst: str, limit: int | None = None) -> dict:
    """Copy ``src`` to ``dst`` (fsynced), refusing anything but a regular file; returns size and SHA-256."""
    st = os.lstat(src)
    if not stat.S_ISREG(st.st_mode):
        raise BackupCorruptError(f"{src} is not a regular file")
    h = hashlib.sha256()
    size = 0
    with open(src, "rb") as fin, open(dst, "xb") as fout:
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
        fout.flush()
        os.fsync(fout.fileno())
    return {"size": size, "sha256": h.hexdigest()}


def _copy_verified(src: str, dst: str, entry: dict) -> None:
    got = _copy_file(src, dst, limit=int(entry["size"]))
    if got["size"] != entry["size"] or got["sha256"] != entry["sha256"]:
        raise BackupCorruptError(f"{os.path.basename(src)} does not match the backup's checksum")


def _verify_file(path: str, entry: dict) -> None:
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode) or st.st_size != entry["size"]:
        raise BackupCorruptError(f"{os.path.basename(path)} does not match the backup's manifest")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_COPY_CHUNK), b""):
            h.update(chunk)
    if h.hexdigest() != entry["sha256"]:
        raise BackupCorruptError(f"{os.path.basename(path)} does not match the backup's checksum")


def _read_backup_manifest(directory: str) -> dict:
    path = os.path.join(directory, BACKUP_FILE)
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode) or os.lstat(path).st_size > 2**24:
            raise BackupCorruptError(f"{path} is not a regular file of a sane size")
        with open(path, "rb") as f:
            info = json.loads(f.read())
        fmt = info.get("format")
        if isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > FORMAT_VERSION:
            raise UnsupportedFormatError(f"{path}: backup format {fmt} is newer than this library's "
                                         f"{FORMAT_VERSION}")
        if fmt != FORMAT_VERSION:
            raise BackupCorruptError(f"{path}: unknown backup format {fmt!r}")
        datetime.fromisoformat(info["created_at"])
        int(info["count"])
        files = info["files"]
        if not isinstance(files, list) or not files:
            raise BackupCorruptError(f"{path} lists no files")
        for f in files:
            if not _FILE_RE.match(str(f["name"])) or f["name"] == BACKUP_FILE:
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
    except (BackupCorruptError, UnsupportedFormatError):
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BackupCorruptError(f"{path} is unreadable: {exc}") from None


def _extract_safely(file, directory: str, max_bytes: int) -> None:
    """Extract the regular, plainly named members of a tar archive, reading at most ``max_bytes``."""
    kw = {"fileobj": file} if hasattr(file, "read") else {"name": os.fspath(file)}
    total = 0
    try:
        with tarfile.open(mode="r:*", **kw) as tar:
            for member in tar:
                if not member.isreg():
                    raise UnsafeArchiveError(f"archive member {member.name!r} is not a regular file")
                if not _FILE_RE.match(member.name) or member.name in (".", ".."):
                    raise UnsafeArchiveError(f"archive member {member.name!r} is not a plain file name")
                total += member.size
                if total > max_bytes:
                    raise UnsafeArchiveError(f"the archive holds more than {max_bytes:,} bytes")
                dst = os.path.join(directory, member.name)
                if os.path.lexists(dst):
                    raise UnsafeArchiveError(f"archive member {member.name!r} appears twice")
                src = tar.extractfile(member)
                with open(dst, "xb") as out:
                    left = member.size
                    while left > 0:
                        chunk = src.read(min(_COPY_CHUNK, left))
                        if not chunk:
                            raise BackupCorruptError(f"archive member {member.name!r} is truncated")
                        out.write(chunk)
                        left -= len(chunk)
                    out.flush()
                    os.fsync(out.fileno())
    except tarfile.TarError as exc:
        raise BackupCorruptError(f"not a readable tar archive: {exc}") from None


__all__ = ["NamespaceManager", "Quotas", "BackupInfo", "validate_name"]
