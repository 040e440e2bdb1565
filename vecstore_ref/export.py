"""Export and import of visible records as plain files any tool can read (`VecStore.export` / `import_`,
`ShardedStore.export` / `import_`, `vecstore-ref export` / `import`).

```
path/
  vectors.npy       float32 (n, dim), C order, saved without pickle
  records.jsonl     line i: {"id": str, "metadata": object or null, "expires_at": Unix seconds or null}, row i
  manifest.json     {"format": 1, "count": n, "dim": dim or null, "metric": str,
                     "files": {"vectors.npy": {"size", "sha256"}, "records.jsonl": {"size", "sha256"}}}
```

The manifest is written last (atomically): a directory without one is not an export. An export is one consistent
picture: the records are copied from the store at one moment (`_visible_records`, which holds the store's lock only
for the copy, so readers and writers wait for a memory copy, not for the files), then written without any lock.
Soft-deleted and expired records are not exported. Reading an export checks the manifest, the size and SHA-256 of
both files, the array's shape and dtype, and every line before a record is handed out; any mismatch is
`BackupCorruptError`, a newer format `UnsupportedFormatError`.

The documented loaders for other stores (Qdrant, LanceDB) read this format: see `docs/guide/scale-out.md`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import numbers
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, TypeAlias

import numpy as np

from ._fs import NotRegularFileError, get_fs, is_inside, open_file
from .errors import (
    BackupCorruptError,
    DimensionMismatchError,
    InvalidArgumentError,
    StorageError,
    UnsafePathError,
    UnsupportedFormatError,
    VecStoreError,
)
from .validation import validate_path

if TYPE_CHECKING:
    from .scale.ray_shards import RayShard
    from .scale.sharded_store import ShardedStore
    from .store import VecStore

# One batch of records read back: (ids, float32 (n, dim) vectors, metadata, expires_at Unix seconds or None), the
# ids and metadata as the export's JSON holds them (the store checks them when they are written).
Batch: TypeAlias = tuple[list[Any], np.ndarray, list[Any], list[float | None]]

FORMAT_VERSION = 1
VECTORS, RECORDS, MANIFEST = "vectors.npy", "records.jsonl", "manifest.json"
RECORD_KEYS = frozenset({"id", "metadata", "expires_at"})
MAX_MANIFEST_BYTES = 2**20  # 1 MiB: a manifest is a few hundred bytes
MAX_RECORD_LINE_BYTES = 2**20  # 1 MiB: an id is at most 512 bytes and metadata at most 64 KiB as JSON
METRICS = ("cosine", "dot", "euclidean")


class _NewFile:
    """A file the export creates (``O_EXCL``, never through a symbolic link: one planted in the directory after
    its emptiness check is refused with `UnsafePathError`), hashed as it is written, so that the manifest's
    checksums are those of the bytes written and nothing is read back by name."""

    def __init__(self, path: str) -> None:
        self._f = os.fdopen(open_file(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "wb")
        self._sha = hashlib.sha256()
        self._size = 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._sha.update(view)
        self._size += view.nbytes
        return self._f.write(view)

    def finish(self) -> dict[str, Any]:
        """Flush and fsync the file, close it; its size and SHA-256 for the manifest."""
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        return {"size": self._size, "sha256": self._sha.hexdigest()}

    def close(self) -> None:
        self._f.close()


def _open_regular(file: str) -> BinaryIO:
    """``file`` opened for reading, never through a symbolic link (the file itself, and below a namespace root no
    component of its path: `vecstore_ref._fs.open_file`), and only if it is a regular file: the checks are made on
    the open file, so a link or a FIFO swapped in after a check cannot be read."""
    try:
        fd = open_file(file, os.O_RDONLY)  # (opened non-blocking and checked there: a FIFO never blocks it)
    except NotRegularFileError:
        raise OSError(f"{file} is not a regular file") from None
    f = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        f.close()
        raise OSError(f"{file} is not a regular file")
    return f


def _identity(f: BinaryIO) -> tuple[int, int, int, int]:
    st = os.fstat(f.fileno())
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _checked_file(path: str, name: str, want: Any) -> tuple[BinaryIO, tuple[int, int, int, int]]:
    """The export's file ``name`` open, after its size and SHA-256 matched ``want`` (read from that same open
    file), with the identity a later reopening must find."""
    file = os.path.join(path, name)
    try:
        f = _open_regular(file)
    except UnsafePathError:
        raise
    except OSError:
        raise BackupCorruptError(f"{path}/{name} does not match the export's manifest") from None
    try:
        h = hashlib.sha256()
        size = 0
        for chunk in iter(lambda: f.read(4 * 2**20), b""):
            h.update(chunk)
            size += len(chunk)
        if not isinstance(want, dict) or want != {"size": size, "sha256": h.hexdigest()}:
            raise BackupCorruptError(f"{path}/{name} does not match the export's manifest")
        f.seek(0)
        return f, _identity(f)
    except BaseException:
        f.close()
        raise


def _load_vectors(f: BinaryIO, count: int) -> np.ndarray:
    """The array of an open ``.npy`` file, memory-mapped from that file (``np.load`` maps only by path, which
    could name another file by now); an empty array is read (it cannot be mapped)."""
    if not count:
        return np.load(f, allow_pickle=False)
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ValueError(f"unsupported .npy version {version}")
    if dtype.hasobject:
        raise ValueError("the array holds Python objects")
    return np.memmap(f, dtype=dtype, mode="r", shape=shape, order="F" if fortran else "C", offset=f.tell())


# --- writing ------------------------------------------------------------------------------------------------------

def export_records(stores: Sequence[VecStore | RayShard], path: str | os.PathLike[str]) -> dict[str, Any]:
    """Write the visible records of ``stores`` (stores sharing dim and metric: one `VecStore`, or the shards of a
    `ShardedStore`) to the directory ``path``, which must not exist or be empty, nor lie inside a store; returns
    the manifest. If writing fails, what it wrote is removed again, and a failure of the file system (a full
    disk, an I/O error) is a `StorageError`."""
    try:
        return _export_records(stores, path)
    except OSError as exc:
        if isinstance(exc, VecStoreError):
            raise
        raise StorageError(f"the export to {os.fspath(path)} failed: {exc}") from exc


def _export_records(stores: Sequence[VecStore | RayShard], path: str | os.PathLike[str]) -> dict[str, Any]:
    path = validate_path(path, "export path")
    if os.path.lexists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise InvalidArgumentError(f"{path} exists and is not an empty directory; an export needs a new one")
    for store in stores:
        home = getattr(store, "path", None)
        if isinstance(home, str) and is_inside(path, home):
            raise InvalidArgumentError(f"{path} is inside the store at {home}; export to a directory of its own")
    got = _read_consistently(stores)
    parts = [(g["ids"], g["vectors"], g["metadata"], g["expires_at"], g["dim"]) for g in got if g["dim"] is not None]
    metric = got[0]["metric"] if got else "cosine"
    dims = {p[4] for p in parts}
    if len(dims) > 1:
        raise InvalidArgumentError(f"the stores hold different dimensions {sorted(dims)}")
    dim = dims.pop() if dims else None
    if len(parts) == 1:
        vectors = parts[0][1]  # already a copy made under the store's lock
    else:
        vectors = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, dim or 0), dtype=np.float32)
    fs = get_fs()
    created = not os.path.lexists(path)
    fs.makedirs(path)
    made: list[str] = []  # the files this export created (only those are removed if it fails)
    try:
        fs.fsync_dir(os.path.dirname(path))
        out = _NewFile(os.path.join(path, VECTORS))
        made.append(VECTORS)
        with contextlib.closing(out):
            np.save(out, np.ascontiguousarray(vectors, dtype=np.float32), allow_pickle=False)
            vectors_sum = out.finish()
        out = _NewFile(os.path.join(path, RECORDS))
        made.append(RECORDS)
        with contextlib.closing(out):
            for ids, _, metas, expires, _ in parts:
                for id_, md, exp in zip(ids, metas, expires):
                    out.write((json.dumps({"id": id_, "metadata": md,
                                           "expires_at": exp if math.isfinite(exp) else None},
                                          ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8"))
            records_sum = out.finish()
        manifest = {"format": FORMAT_VERSION, "count": int(vectors.shape[0]), "dim": dim, "metric": metric,
                    "files": {VECTORS: vectors_sum, RECORDS: records_sum}}
        fs.write_atomic(os.path.join(path, MANIFEST), [json.dumps(manifest, indent=1).encode()])  # fsyncs path
    except BaseException:
        for name in made:  # never a half export that looks like the start of one
            with contextlib.suppress(OSError):
                fs.unlink(os.path.join(path, name))
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(path)
        raise
    return manifest


def _read_consistently(stores: Sequence[VecStore | RayShard]) -> list[dict[str, Any]]:
    """Each store's visible records. One store reads itself consistently; the shards of a sharded store in this
    process are read with all their locks held at once, so the export is one picture across shards too (a
    remote shard, e.g. a Ray actor, is consistent on its own)."""
    from .store import VecStore

    if len(stores) == 1:
        return [stores[0]._visible_records()]
    locks = [s._lock for s in stores if isinstance(s, VecStore)]
    for lk in locks:
        lk.acquire()
    try:
        return [s._visible_records() for s in stores]
    finally:
        for lk in reversed(locks):
            lk.release()


# --- reading ------------------------------------------------------------------------------------------------------

def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checked manifest of the export at ``path`` (the files are checked by `open_export`)."""
    path = validate_path(path, "export path")
    file = os.path.join(path, MANIFEST)
    try:
        with _open_regular(file) as f:
            manifest = json.loads(f.read(MAX_MANIFEST_BYTES + 1))
    except UnsafePathError:
        raise
    except (OSError, ValueError) as exc:
        raise BackupCorruptError(f"{path} has no readable {MANIFEST}: {exc}") from None
    if not isinstance(manifest, dict):
        raise BackupCorruptError(f"{path}/{MANIFEST} is not a JSON object")
    fmt = manifest.get("format")
    if isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > FORMAT_VERSION:
        raise UnsupportedFormatError(f"{path}: export format {fmt} is newer than {FORMAT_VERSION}")
    if fmt != FORMAT_VERSION:
        raise BackupCorruptError(f"{path}: unknown export format {fmt!r}")
    count, dim, metric = manifest.get("count"), manifest.get("dim"), manifest.get("metric")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise BackupCorruptError(f"{path}/{MANIFEST}: count must be an int >= 0, got {count!r}")
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
        raise BackupCorruptError(f"{path}/{MANIFEST}: dim must be a positive int or null, got {dim!r}")
    if metric not in METRICS:
        raise BackupCorruptError(f"{path}/{MANIFEST}: unknown metric {metric!r}")
    if not isinstance(manifest.get("files"), dict):
        raise BackupCorruptError(f"{path}/{MANIFEST}: no file list")
    return manifest


class Export:
    """An export directory whose manifest, file sizes, SHA-256 and array shape have been checked (`open_export`);
    `batches` then reads its records."""

    def __init__(self, path: str, manifest: dict[str, Any], vectors: np.ndarray,
                 records_identity: tuple[int, int, int, int] | None = None) -> None:
        self.path, self.manifest, self.vectors = path, manifest, vectors
        self.count, self.dim, self.metric = manifest["count"], manifest["dim"], manifest["metric"]
        self._records_identity = records_identity  # (device, inode, size, mtime) of the checked records.jsonl

    def batches(self, batch_size: int = 10_000) -> Iterator[Batch]:
        """Yield ``(ids, vectors, metadatas, expires_at)`` batches: ``vectors`` is a float32 (n, dim) slice of the
        memory-mapped `vectors.npy`, ``expires_at`` holds Unix seconds or None per record. A line that is not a
        record is `BackupCorruptError` when it is reached."""
        path, count, vectors = self.path, self.count, self.vectors
        row = 0
        try:
            f = _open_regular(os.path.join(path, RECORDS))
        except OSError as exc:
            raise BackupCorruptError(f"{path}/{RECORDS} cannot be read: {exc}") from None
        if self._records_identity is not None and _identity(f) != self._records_identity:
            f.close()
            raise BackupCorruptError(f"{path}/{RECORDS} was replaced or changed after it was checked")
        with f:
            ids: list[Any]
            metas: list[Any]
            expires: list[float | None]
            ids, metas, expires = [], [], []
            while True:
                line = f.readline(MAX_RECORD_LINE_BYTES + 1)
                if not line:
                    break
                if row + len(ids) >= count:
                    raise BackupCorruptError(f"{path}/{RECORDS} has more records than the manifest's {count}")
                id_, md, exp = _parse_record(line, path, row + len(ids) + 1)
                ids.append(id_)
                metas.append(md)
                expires.append(exp)
                if len(ids) == batch_size:
                    yield ids, vectors[row:row + len(ids)], metas, expires
                    row += len(ids)
                    ids, metas, expires = [], [], []
            if ids:
                yield ids, vectors[row:row + len(ids)], metas, expires
                row += len(ids)
        if row != count:
            raise BackupCorruptError(f"{path}/{RECORDS} has {row} records; the manifest says {count}")


def open_export(path: str | os.PathLike[str]) -> Export:
    """Check the export at ``path`` (manifest, both files' size and SHA-256, the array's dtype and shape)."""
    path = validate_path(path, "export path")
    manifest = read_manifest(path)
    count, dim = manifest["count"], manifest["dim"]
    records, records_identity = _checked_file(path, RECORDS, manifest["files"].get(RECORDS))
    records.close()  # `Export.batches` reopens it and checks it is the same file, unchanged
    vectors_file, _ = _checked_file(path, VECTORS, manifest["files"].get(VECTORS))
    with vectors_file:  # the array is read (or mapped) from the very file whose checksum matched
        try:
            vectors = _load_vectors(vectors_file, count)
        except (OSError, ValueError, EOFError) as exc:
            raise BackupCorruptError(f"{path}/{VECTORS} does not load: {exc}") from None
    if vectors.ndim != 2 or vectors.shape[0] != count or vectors.dtype != np.float32 or \
            (count and vectors.shape[1] != dim):
        raise BackupCorruptError(f"{path}/{VECTORS} holds {vectors.dtype} {vectors.shape}; the manifest says "
                                 f"{count} rows of dim {dim}")
    return Export(path, manifest, vectors, records_identity)


def read_export(path: str | os.PathLike[str], batch_size: int = 10_000) -> Iterator[Batch]:
    """Yield ``(ids, vectors, metadatas, expires_at)`` batches of the export at ``path``, after checking every
    checksum (`open_export`, `Export.batches`)."""
    yield from open_export(path).batches(batch_size)


def _parse_record(line: bytes, path: str, number: int) -> tuple[Any, Any, float | None]:
    where = f"{path}/{RECORDS} line {number}"
    if len(line) > MAX_RECORD_LINE_BYTES:
        raise BackupCorruptError(f"{where} is longer than {MAX_RECORD_LINE_BYTES} bytes")
    try:
        rec = json.loads(line)
    except ValueError as exc:
        raise BackupCorruptError(f"{where} is not JSON: {exc}") from None
    if not isinstance(rec, dict) or rec.keys() != RECORD_KEYS:
        raise BackupCorruptError(f"{where} is not a record {{\"id\", \"metadata\", \"expires_at\"}}")
    exp: float | None = rec["expires_at"]
    if exp is not None and (isinstance(exp, bool) or not isinstance(exp, numbers.Real) or not math.isfinite(exp)):
        raise BackupCorruptError(f"{where}: expires_at must be a number or null")
    return rec["id"], rec["metadata"], exp


# --- importing into a store ---------------------------------------------------------------------------------------

@dataclass
class ImportReport:
    """What `import_records` did: ``imported`` records upserted, ``expired`` left out because their time passed
    between the export and the import."""

    imported: int
    expired: int

    def to_dict(self) -> dict[str, int]:
        return {"imported": self.imported, "expired": self.expired}


def import_records(store: VecStore | ShardedStore, export: str | os.PathLike[str] | Export, *,
                   batch_size: int = 10_000, progress: Callable[[int, int], object] | None = None) -> ImportReport:
    """Upsert every record of ``export`` (a path, or an `Export` from `open_export`) into ``store`` (a
    `VecStore` or a `ShardedStore`), in batches.

    The files and the dimension are checked before the first write. Each batch is one `upsert_many` for the
    records without a TTL, plus one `batch_execute` for those with one (a TTL is carried as the time left:
    ``expires_at - now`` by the store's clock). The import as a whole is not atomic, but upserts are idempotent:
    an import cut short can simply be run again. ``progress`` is a callable ``(done, total)`` called after each
    batch.
    """
    from .types import Upsert

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(export, Export):
        export = open_export(export)
    path, dim, total = export.path, export.dim, export.count
    store_dim = store.stats().dim
    if dim is not None and store_dim is not None and dim != store_dim:
        raise DimensionMismatchError(f"the export holds vectors of dimension {dim}; the store holds {store_dim}")
    imported = expired = done = 0
    for ids, vectors, metadatas, expires in export.batches(batch_size):
        plain = [i for i, e in enumerate(expires) if e is None]
        if plain:
            sel = plain if len(plain) < len(ids) else slice(None)
            store.upsert_many([ids[i] for i in plain], vectors[sel], [metadatas[i] for i in plain])
            imported += len(plain)
        now = store._now()
        ops = [Upsert(ids[i], vectors[i], metadatas[i], e - now) for i, e in enumerate(expires)
               if e is not None and e > now]
        expired += len(ids) - len(plain) - len(ops)
        if ops:
            res = store.batch_execute(ops)
            if res.failed:
                err = res.errors[0]
                raise InvalidArgumentError(f"import of {path} failed at record {ops[err.index].id!r}: {err.error}")
            imported += res.succeeded
        done += len(ids)
        if progress is not None:
            progress(done, total)
    return ImportReport(imported, expired)
