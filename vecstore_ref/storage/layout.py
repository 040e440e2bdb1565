"""File names in a store directory, and keeping the directory tidy.

A store directory holds ``LOCK``, ``MANIFEST``, at most one live snapshot ``snap-<seq>.vss`` and the log segments
``log-<n>.vsl`` written since it (``docs/concepts/storage-format.md``). Anything else of ours (``<our name>.tmp``,
snapshots and segments the manifest does not name) is a leftover of an interrupted checkpoint, compaction or
creation and is removed on the next writable open. Files we do not recognise are never touched, and neither is
``LOCK``. No name in this directory is ever derived from user input.
"""

from __future__ import annotations

import os
import re

from ..errors import CorruptStoreError
from .format import (
    LOCK_NAME,
    LOG_HEADER_SIZE,
    MANIFEST_NAME,
    SEGMENT_DIGITS,
    SEGMENT_NAME_PATTERN,
    SEGMENT_PREFIX,
    SEGMENT_SUFFIX,
    SNAPSHOT_DIGITS,
    SNAPSHOT_NAME_PATTERN,
    SNAPSHOT_PREFIX,
    SNAPSHOT_SUFFIX,
    TMP_SUFFIX,
)

LOCK = LOCK_NAME
MANIFEST = MANIFEST_NAME
MAX_SEGMENT_NUMBER = 10**SEGMENT_DIGITS - 1
MAX_SNAPSHOT_SEQ = 10**SNAPSHOT_DIGITS - 1

_SEGMENT_RE = re.compile(SEGMENT_NAME_PATTERN)
_SNAPSHOT_RE = re.compile(SNAPSHOT_NAME_PATTERN)


def segment_name(number: int) -> str:
    """``log-<number, 8 digits>.vsl``; numbers start at 1 and rise by one per new segment."""
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= MAX_SEGMENT_NUMBER:
        raise ValueError(f"segment number must be an int in 1..{MAX_SEGMENT_NUMBER}; got {number!r}")
    return f"{SEGMENT_PREFIX}{number:0{SEGMENT_DIGITS}d}{SEGMENT_SUFFIX}"


def snapshot_name(seq: int) -> str:
    """``snap-<seq, 16 digits>.vss``: the snapshot holding every record up to ``seq``."""
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_SNAPSHOT_SEQ:
        raise ValueError(f"snapshot seq must be an int in 0..{MAX_SNAPSHOT_SEQ}; got {seq!r}")
    return f"{SNAPSHOT_PREFIX}{seq:0{SNAPSHOT_DIGITS}d}{SNAPSHOT_SUFFIX}"


def is_segment_name(name) -> bool:
    return isinstance(name, str) and _SEGMENT_RE.fullmatch(name) is not None


def is_snapshot_name(name) -> bool:
    return isinstance(name, str) and _SNAPSHOT_RE.fullmatch(name) is not None


def parse_segment_name(name: str) -> int:
    """The number in a segment name; CorruptStoreError if ``name`` is not one."""
    m = _SEGMENT_RE.fullmatch(name) if isinstance(name, str) else None
    if m is None:
        raise CorruptStoreError(f"{name!r} is not a log segment name")
    return int(m.group(1))


def parse_snapshot_name(name: str) -> int:
    """The sequence number in a snapshot name; CorruptStoreError if ``name`` is not one."""
    m = _SNAPSHOT_RE.fullmatch(name) if isinstance(name, str) else None
    if m is None:
        raise CorruptStoreError(f"{name!r} is not a snapshot name")
    return int(m.group(1))


def is_ours(name: str) -> bool:
    """A name this library writes into a store directory (other than LOCK), or its ``.tmp`` twin."""
    base = name[: -len(TMP_SUFFIX)] if name.endswith(TMP_SUFFIX) else name
    return is_segment_name(base) or is_snapshot_name(base) or base == MANIFEST_NAME


def referenced_names(manifest) -> list[str]:
    """The files a manifest names: its snapshot (if any), then its log segments."""
    return ([manifest.snapshot] if manifest.snapshot else []) + list(manifest.logs)


def check_referenced_files(fs, directory: str, manifest) -> None:
    """Every file the manifest names exists, and its segment numbers are consecutive.

    Raises:
        CorruptStoreError: naming the missing file, or the gap in the segment numbers.
    """
    for name in referenced_names(manifest):
        path = os.path.join(directory, name)
        if not fs.exists(path) or fs.isdir(path):
            raise CorruptStoreError(f"{name}, named by the manifest of {directory}, is missing")
    if not manifest.logs:
        raise CorruptStoreError(f"the manifest of {directory} names no log segment")
    numbers = [parse_segment_name(n) for n in manifest.logs]
    for a, b in zip(numbers, numbers[1:]):
        if b <= a:
            raise CorruptStoreError(f"the log segments of {directory} are out of order: {manifest.logs}")
        if b != a + 1:
            raise CorruptStoreError(f"the log segments of {directory} have a gap: {segment_name(a + 1)} is "
                                    f"missing between {segment_name(a)} and {segment_name(b)}")


def cleanup_orphans(fs, directory: str, manifest) -> list[str]:
    """Remove our leftovers: ``*.tmp`` twins of our names, and snapshots and segments the manifest does not name.

    Never touches LOCK, MANIFEST, files the manifest names, directories, or names we do not recognise. The
    directory is fsynced if anything was removed.

    Returns:
        The names removed, sorted.
    """
    keep = {MANIFEST_NAME, LOCK_NAME, *referenced_names(manifest)}
    removed = []
    for name in sorted(fs.listdir(directory)):
        if name in keep or not is_ours(name):
            continue
        path = os.path.join(directory, name)
        if fs.isdir(path):
            continue
        try:
            fs.unlink(path)
        except FileNotFoundError:
            continue
        removed.append(name)
    if removed:
        fs.fsync_dir(directory)
    return removed


def prepare_new_store(fs, directory: str) -> None:
    """Before creating a store in a directory without MANIFEST: remove leftovers of an interrupted creation.

    A creation writes the first segment, then the manifest; a crash in between leaves a segment holding at most
    its header, and perhaps ``MANIFEST.tmp``. Anything more (a segment with records, a snapshot) without a
    manifest is not ours to delete: CorruptStoreError.
    """
    removed = False
    for name in sorted(fs.listdir(directory)):
        path = os.path.join(directory, name)
        if not is_ours(name) or fs.isdir(path):
            continue
        if name.endswith(TMP_SUFFIX) or (is_segment_name(name) and fs.size(path) <= LOG_HEADER_SIZE):
            fs.unlink(path)
            removed = True
        else:
            raise CorruptStoreError(f"{directory} holds {name} but no MANIFEST; refusing to overwrite it")
    if removed:
        fs.fsync_dir(directory)
