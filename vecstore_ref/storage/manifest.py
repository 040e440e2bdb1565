"""The MANIFEST: which snapshot and which log segments make up the store, and the store's options.

Three lines of text (see ``docs/concepts/storage-format.md``)::

    VSREF-MANIFEST <format version>
    {"snapshot": ..., "snapshot_seq": ..., "logs": [...], "options": {...}}
    <CRC32 of the JSON line, 8 hex digits>

Replaced atomically (temp file, fsync, rename, directory fsync): its rename is the commit point of every checkpoint
and compaction.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, field

from ..errors import CorruptStoreError, UnsupportedFormatError
from .format import FORMAT_VERSION, MANIFEST_MAGIC, MANIFEST_NAME
from .layout import is_segment_name, is_snapshot_name


@dataclass
class Manifest:
    format_version: int
    snapshot: str | None
    snapshot_seq: int
    logs: list[str]
    options: dict = field(default_factory=dict)


def write_manifest(fs, directory: str, manifest: Manifest) -> None:
    body = json.dumps({"snapshot": manifest.snapshot, "snapshot_seq": manifest.snapshot_seq, "logs": manifest.logs,
                       "options": manifest.options}, allow_nan=False, separators=(",", ":"), sort_keys=True)
    text = f"{MANIFEST_MAGIC} {FORMAT_VERSION}\n{body}\n{zlib.crc32(body.encode('utf-8')):08x}\n"
    fs.write_atomic(os.path.join(directory, MANIFEST_NAME), text.encode("utf-8"), crash_prefix="manifest")


def read_manifest(fs, directory: str) -> Manifest | None:
    """The manifest, or None if the directory has none; damage raises :class:`CorruptStoreError`."""
    path = os.path.join(directory, MANIFEST_NAME)
    try:
        raw = fs.read_bytes(path)
    except FileNotFoundError:
        return None
    try:
        lines = raw.decode("utf-8").split("\n")
        magic, version = lines[0].split(" ")
        if magic != MANIFEST_MAGIC:
            raise ValueError("bad magic")
        if int(version) > FORMAT_VERSION:
            raise UnsupportedFormatError(f"{path}: manifest format version {version}; this library reads up to "
                                         f"{FORMAT_VERSION}")
        body, crc = lines[1], lines[2]
        if f"{zlib.crc32(body.encode('utf-8')):08x}" != crc:
            raise ValueError("checksum mismatch")
        d = json.loads(body)
        snapshot, seq, logs, options = d["snapshot"], int(d["snapshot_seq"]), list(d["logs"]), dict(d["options"])
    except UnsupportedFormatError:
        raise
    except (ValueError, IndexError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise CorruptStoreError(f"{path} is damaged: {exc}") from None
    if snapshot is not None and not (isinstance(snapshot, str) and is_snapshot_name(snapshot)):
        raise CorruptStoreError(f"{path} names an invalid snapshot file {snapshot!r}")
    if not all(isinstance(n, str) and is_segment_name(n) for n in logs):
        raise CorruptStoreError(f"{path} names an invalid log segment")
    return Manifest(int(version), snapshot, seq, logs, options)
