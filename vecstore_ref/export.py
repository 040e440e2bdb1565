"""Export and import of visible records as plain files any tool can read (used by :class:`ShardedStore`).

::

    path/
      vectors.npy       float32 (n, dim), saved without pickle
      records.jsonl     line i: {"id": ..., "metadata": ..., "expires_at": unix seconds or null} for row i
      manifest.json     {"format", "count", "dim", "metric", "files": {name: {"size", "sha256"}}}, written last

An export reads every store under its lock at once, so it is one consistent picture even while writers wait.
Soft-deleted and expired records are not exported. Reading checks the manifest and every checksum first.
"""

from __future__ import annotations

import hashlib
import json
import math
import os

import numpy as np

from ._fs import get_fs
from .errors import BackupCorruptError, InvalidArgumentError, UnsupportedFormatError

FORMAT_VERSION = 1
VECTORS, RECORDS, MANIFEST = "vectors.npy", "records.jsonl", "manifest.json"


def _sha256(path: str) -> dict:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(4 * 2**20), b""):
            h.update(chunk)
    return {"size": os.path.getsize(path), "sha256": h.hexdigest()}


def export_records(stores: list, path) -> dict:
    """Write the visible records of ``stores`` (VecStore objects sharing dim and metric) to ``path``; returns the
    manifest."""
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(os.path.join(path, MANIFEST)):
        raise InvalidArgumentError(f"{path} already holds an export")
    os.makedirs(path, exist_ok=True)
    from .store import VecStore

    local = [s for s in stores if isinstance(s, VecStore)]
    locks = [s._lock for s in local]  # in-process stores: all locks at once, one consistent picture
    for lk in locks:
        lk.acquire()
    try:
        got = [s._visible_records() for s in stores]  # a remote shard: consistent per shard
    finally:
        for lk in reversed(locks):
            lk.release()
    parts = [(g["ids"], g["vectors"], g["metadata"], g["expires_at"], g["dim"]) for g in got if g["dim"] is not None]
    metric = got[0]["metric"] if got else "cosine"
    dims = {p[4] for p in parts}
    if len(dims) > 1:
        raise InvalidArgumentError(f"the stores hold different dimensions {sorted(dims)}")
    dim = dims.pop() if dims else None
    vectors = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, dim or 0), dtype=np.float32)
    with open(os.path.join(path, VECTORS), "wb") as f:
        np.save(f, vectors, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    with open(os.path.join(path, RECORDS), "w", encoding="utf-8") as f:
        for ids, _, metas, expires, _ in parts:
            for id_, md, exp in zip(ids, metas, expires):
                f.write(json.dumps({"id": id_, "metadata": md, "expires_at": exp if math.isfinite(exp) else None},
                                   ensure_ascii=False, allow_nan=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    manifest = {"format": FORMAT_VERSION, "count": int(vectors.shape[0]), "dim": dim, "metric": metric,
                "files": {VECTORS: _sha256(os.path.join(path, VECTORS)),
                          RECORDS: _sha256(os.path.join(path, RECORDS))}}
    get_fs().write_atomic(os.path.join(path, MANIFEST), [json.dumps(manifest, indent=1).encode()])
    return manifest


def read_export(path, batch_size: int = 10_000):
    """Yield ``(ids, vectors, metadatas, expires_at)`` batches of an export, after checking every checksum."""
    path = os.path.abspath(os.fspath(path))
    try:
        with open(os.path.join(path, MANIFEST), "rb") as f:
            manifest = json.loads(f.read())
    except (OSError, ValueError) as exc:
        raise BackupCorruptError(f"{path} has no readable {MANIFEST}: {exc}") from None
    fmt = manifest.get("format")
    if isinstance(fmt, int) and fmt > FORMAT_VERSION:
        raise UnsupportedFormatError(f"{path}: export format {fmt} is newer than {FORMAT_VERSION}")
    if fmt != FORMAT_VERSION:
        raise BackupCorruptError(f"{path}: unknown export format {fmt!r}")
    for name in (VECTORS, RECORDS):
        want = manifest.get("files", {}).get(name)
        file = os.path.join(path, name)
        if not want or not os.path.isfile(file) or os.path.islink(file) or _sha256(file) != want:
            raise BackupCorruptError(f"{path}/{name} does not match the export's manifest")
    try:
        vectors = np.load(os.path.join(path, VECTORS), allow_pickle=False)
    except ValueError as exc:
        raise BackupCorruptError(f"{path}/{VECTORS} does not load: {exc}") from None
    count = manifest.get("count")
    if vectors.ndim != 2 or vectors.shape[0] != count or vectors.dtype != np.float32:
        raise BackupCorruptError(f"{path}/{VECTORS} has shape {vectors.shape}; the manifest says {count} rows")
    with open(os.path.join(path, RECORDS), encoding="utf-8") as f:
        ids, metas, expires = [], [], []
        row = 0
        for line in f:
            try:
                rec = json.loads(line)
                ids.append(rec["id"])
                metas.append(rec["metadata"])
                expires.append(rec["expires_at"])
            except (ValueError, KeyError, TypeError) as exc:
                raise BackupCorruptError(f"{path}/{RECORDS} line {row + len(ids) + 1} is not a record: {exc}") \
                    from None
            if len(ids) == batch_size:
                yield ids, vectors[row:row + len(ids)], metas, expires
                row += len(ids)
                ids, metas, expires = [], [], []
        if ids:
            yield ids, vectors[row:row + len(ids)], metas, expires
            row += len(ids)
    if row != count:
        raise BackupCorruptError(f"{path}/{RECORDS} has {row} records; the manifest says {count}")
