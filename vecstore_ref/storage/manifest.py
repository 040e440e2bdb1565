"""The MANIFEST: which snapshot and which log segments make up the store, and the store's options.

Three lines of UTF-8 text, each ending in ``\\n`` (see ``docs/concepts/storage-format.md``)::

    VSREF-MANIFEST <format version>
    {"logs":[...],"options":{...},"snapshot":...,"snapshot_seq":...}
    <CRC32 of the JSON line, 8 lower-case hex digits>

It is only ever replaced whole (``fs.write_atomic``: temp file, fsync, rename, directory fsync; crash points
``manifest.*``), and its rename is the commit point of every checkpoint and compaction. The files it names are
plain names matching the layout patterns (``storage/layout.py``), never paths, so a damaged or hostile manifest
cannot point outside the store directory.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, field

from ..errors import CorruptStoreError, InvalidArgumentError, UnsupportedFormatError
from .format import FORMAT_VERSION, MANIFEST_MAGIC, MANIFEST_MAX_BYTES, MANIFEST_NAME
from .layout import is_segment_name, is_snapshot_name, parse_snapshot_name

_KEYS = frozenset({"snapshot", "snapshot_seq", "logs", "options"})


@dataclass
class Manifest:
    """The live files of a store.

    Attributes:
        format_version: the version the file was written with (always FORMAT_VERSION when written).
        snapshot: the snapshot file name (``snap-<seq>.vss``), or None before the first checkpoint.
        snapshot_seq: the sequence number the snapshot holds (0 without one); log replay starts after it. Equals
            the number in the snapshot's name.
        logs: segment file names, oldest first, with consecutive numbers; at least one.
        options: the store's options (dim, metric, index, hnsw, compaction): JSON values only.
    """

    format_version: int
    snapshot: str | None
    snapshot_seq: int
    logs: list[str]
    options: dict = field(default_factory=dict)


def _problem(snapshot, snapshot_seq, logs, options) -> str | None:
    """Why these fields do not make a valid manifest, or None."""
    if type(snapshot_seq) is not int or snapshot_seq < 0:
        return f"snapshot_seq must be an int >= 0; got {snapshot_seq!r:.40}"
    if snapshot is not None:
        if not is_snapshot_name(snapshot):
            return f"invalid snapshot file name {snapshot!r:.80}"
        if parse_snapshot_name(snapshot) != snapshot_seq:
            return f"snapshot {snapshot} does not hold seq {snapshot_seq}"
    if type(logs) is not list or not logs:
        return "logs must be a non-empty list of segment names"
    for name in logs:
        if not is_segment_name(name):
            return f"invalid log segment name {name!r:.80}"
    if len(set(logs)) != len(logs):
        return "a log segment is named twice"
    if type(options) is not dict:
        return "options must be an object"
    return None


def encode_manifest(manifest: Manifest) -> bytes:
    """The bytes of a MANIFEST file. Raises InvalidArgumentError for fields no reader would accept."""
    problem = _problem(manifest.snapshot, manifest.snapshot_seq, manifest.logs, manifest.options)
    if problem:
        raise InvalidArgumentError(f"refusing to write an invalid manifest: {problem}")
    try:
        body = json.dumps({"snapshot": manifest.snapshot, "snapshot_seq": manifest.snapshot_seq,
                           "logs": list(manifest.logs), "options": manifest.options},
                          allow_nan=False, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"manifest options are not JSON: {exc}") from None
    raw = body.encode("utf-8")
    return f"{MANIFEST_MAGIC} {FORMAT_VERSION}\n".encode() + raw + f"\n{zlib.crc32(raw):08x}\n".encode()


def write_manifest(fs, directory: str, manifest: Manifest) -> int:
    """Replace ``directory/MANIFEST`` atomically; returns the bytes written."""
    return fs.write_atomic(os.path.join(directory, MANIFEST_NAME), encode_manifest(manifest),
                           crash_prefix="manifest")


def _reject_constant(name: str):
    raise ValueError(f"non-finite number {name}")


def decode_manifest(raw: bytes, path: str = MANIFEST_NAME) -> Manifest:
    """Parse and check the bytes of a MANIFEST file.

    Raises:
        CorruptStoreError: anything malformed (names the problem).
        UnsupportedFormatError: a format version above this library's.
    """

    def corrupt(why: str) -> CorruptStoreError:
        return CorruptStoreError(f"{path} is damaged: {why}")

    if len(raw) > MANIFEST_MAX_BYTES:
        raise corrupt(f"{len(raw)} bytes is far too large for a manifest")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise corrupt("not UTF-8") from None
    lines = text.split("\n")
    if len(lines) < 2:
        raise corrupt("no header line")
    magic, _, version = lines[0].partition(" ")
    if magic != MANIFEST_MAGIC or not version.isascii() or not version.isdigit():
        raise corrupt("first line is not 'VSREF-MANIFEST <version>'")
    version_n = int(version)
    if version_n > FORMAT_VERSION:
        raise UnsupportedFormatError(f"{path}: manifest format version {version_n}; this library reads versions "
                                     f"up to {FORMAT_VERSION}")
    if version_n < 1:
        raise corrupt(f"format version {version_n}")
    if len(lines) != 4 or lines[3] != "":
        raise corrupt("expected exactly three newline-terminated lines")
    body, crc = lines[1], lines[2]
    if len(crc) != 8 or crc != f"{zlib.crc32(body.encode('utf-8')):08x}":
        raise corrupt("checksum mismatch")
    try:
        d = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise corrupt(f"JSON does not parse: {exc}") from None
    if type(d) is not dict or d.keys() != _KEYS:
        raise corrupt(f"expected exactly the keys {sorted(_KEYS)}")
    problem = _problem(d["snapshot"], d["snapshot_seq"], d["logs"], d["options"])
    if problem:
        raise corrupt(problem)
    return Manifest(version_n, d["snapshot"], d["snapshot_seq"], d["logs"], d["options"])


def read_manifest(fs, directory: str) -> Manifest | None:
    """The manifest of ``directory``, or None if it has none. Damage raises CorruptStoreError, a newer format
    UnsupportedFormatError; neither modifies anything."""
    path = os.path.join(directory, MANIFEST_NAME)
    try:
        if fs.isdir(path):
            raise CorruptStoreError(f"{path} is a directory")
        raw = fs.read_bytes(path)
    except FileNotFoundError:
        return None
    return decode_manifest(raw, path)
