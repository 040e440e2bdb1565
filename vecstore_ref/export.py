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
from dataclasses import dataclass

import numpy as np

from ._fs import get_fs
from .errors import BackupCorruptError, DimensionMismatchError, InvalidArgumentError, UnsupportedFormatError

FORMAT_VERSION = 1
VECTORS, RECORDS, MANIFEST = "vectors.npy", "records.jsonl", "manifest.json"
RECORD_KEYS = frozenset({"id", "metadata", "expires_at"})
MAX_MANIFEST_BYTES = 2**20  # 1 MiB: a manifest is a few hundred bytes
MAX_RECORD_LINE_BYTES = 2**20  # 1 MiB: an id is at most 512 bytes and metadata at most 64 KiB as JSON
METRICS = ("cosine", "dot", "euclidean")


def _sha256(path: str) -> dict:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(4 * 2**20), b""):
            h.update(chunk)
    return {"size": os.path.getsize(path), "sha256": h.hexdigest()}


# --- writing ------------------------------------------------------------------------------------------------------

def export_records(stores: list, path) -> dict:
    """Write the visible records of ``stores`` (stores sharing dim and metric: one `VecStore`, or the shards of a
    `ShardedStore`) to the directory ``path``, which must not exist or be empty, nor lie inside a store; returns
    the manifest. If writing fails, what it wrote is removed again."""
    path = os.path.abspath(os.fspath(path))
    if os.path.lexists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise InvalidArgumentError(f"{path} exists and is not an empty directory; an export needs a new one")
    for store in stores:
        home = getattr(store, "path", None)
        if isinstance(home, str) and _inside(path, home):
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
    try:
        fs.fsync_dir(os.path.dirname(path))
        with open(os.path.join(path, VECTORS), "wb") as f:
            np.save(f, np.ascontiguousarray(vectors, dtype=np.float32), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        with open(os.path.join(path, RECORDS), "w", encoding="utf-8") as f:
            for ids, _, metas, expires, _ in parts:
                for id_, md, exp in zip(ids, metas, expires):
                    f.write(json.dumps({"id": id_, "metadata": md,
                                        "expires_at": exp if math.isfinite(exp) else None},
                                       ensure_ascii=False, allow_nan=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        manifest = {"format": FORMAT_VERSION, "count": int(vectors.shape[0]), "dim": dim, "metric": metric,
                    "files": {VECTORS: _sha256(os.path.join(path, VECTORS)),
                              RECORDS: _sha256(os.path.join(path, RECORDS))}}
        fs.write_atomic(os.path.join(path, MANIFEST), [json.dumps(manifest, indent=1).encode()])  # fsyncs path
    except BaseException:
        for name in (VECTORS, RECORDS):  # never a half export that looks like the start of one
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(path, name))
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(path)
        raise
    return manifest


def _inside(path: str, directory: str) -> bool:
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return os.path.commonpath([path, directory]) == directory


def _read_consistently(stores: list) -> list[dict]:
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

def read_manifest(path) -> dict:
    """The checked manifest of the export at ``path`` (the files are checked by `open_export`)."""
    path = os.path.abspath(os.fspath(path))
    file = os.path.join(path, MANIFEST)
    try:
        if os.path.islink(file) or not os.path.isfile(file):
            raise OSError("not a regular file")
        with open(file, "rb") as f:
            manifest = json.loads(f.read(MAX_MANIFEST_BYTES + 1))
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

    def __init__(self, path: str, manifest: dict, vectors: np.ndarray):
        self.path, self.manifest, self.vectors = path, manifest, vectors
        self.count, self.dim, self.metric = manifest["count"], manifest["dim"], manifest["metric"]

    def batches(self, batch_size: int = 10_000):
        """Yield ``(ids, vectors, metadatas, expires_at)`` batches: ``vectors`` is a float32 (n, dim) slice of the
        memory-mapped `vectors.npy`, ``expires_at`` holds Unix seconds or None per record. A line that is not a
        record is `BackupCorruptError` when it is reached."""
        path, count, vectors = self.path, self.count, self.vectors
        row = 0
        with open(os.path.join(path, RECORDS), "rb") as f:
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


def open_export(path) -> Export:
    """Check the export at ``path`` (manifest, both files' size and SHA-256, the array's dtype and shape)."""
    path = os.path.abspath(os.fspath(path))
    manifest = read_manifest(path)
    for name in (VECTORS, RECORDS):
        want = manifest["files"].get(name)
        file = os.path.join(path, name)
        if not want or not os.path.isfile(file) or os.path.islink(file) or _sha256(file) != want:
            raise BackupCorruptError(f"{path}/{name} does not match the export's manifest")
    count, dim = manifest["count"], manifest["dim"]
    try:  # an empty array cannot be mapped
        vectors = np.load(os.path.join(path, VECTORS), mmap_mode="r" if count else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise BackupCorruptError(f"{path}/{VECTORS} does not load: {exc}") from None
    if vectors.ndim != 2 or vectors.shape[0] != count or vectors.dtype != np.float32 or \
            (count and vectors.shape[1] != dim):
        raise BackupCorruptError(f"{path}/{VECTORS} holds {vectors.dtype} {vectors.shape}; the manifest says "
                                 f"{count} rows of dim {dim}")
    return Export(path, manifest, vectors)


def read_export(path, batch_size: int = 10_000):
    """Yield ``(ids, vectors, metadatas, expires_at)`` batches of the export at ``path``, after checking every
    checksum (`open_export`, `Export.batches`)."""
    yield from open_export(path).batches(batch_size)


def _parse_record(line: bytes, path: str, number: int) -> tuple:
    where = f"{path}/{RECORDS} line {number}"
    if len(line) > MAX_RECORD_LINE_BYTES:
        raise BackupCorruptError(f"{where} is longer than {MAX_RECORD_LINE_BYTES} bytes")
    try:
        rec = json.loads(line)
    except ValueError as exc:
        raise BackupCorruptError(f"{where} is not JSON: {exc}") from None
    if not isinstance(rec, dict) or rec.keys() != RECORD_KEYS:
        raise BackupCorruptError(f"{where} is not a record {{\"id\", \"metadata\", \"expires_at\"}}")
    exp = rec["expires_at"]
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

    def to_dict(self) -> dict:
        return {"imported": self.imported, "expired": self.expired}


def import_records(store, export, *, batch_size: int = 10_000, progress=None) -> ImportReport:
    """Upsert every record of ``export`` (a path, or an `Export` from `open_export`) into the `VecStore`
    ``store``, in batches.

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
