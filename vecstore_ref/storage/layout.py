"""File names in a store directory, and keeping the directory tidy.

A store directory holds ``LOCK``, ``MANIFEST``, at most one live snapshot ``snap-<seq>.vss`` and the log segments
``log-<n>.vsl`` written since it. Anything else of ours (``*.tmp``, snapshots and segments the manifest does not name)
is a leftover of an interrupted checkpoint and is removed on the next writable open. Files we do not recognise are
never touched. See ``docs/concepts/storage-format.md``.
"""

from __future__ import annotations

import contextlib
import os
import re

from ..errors import CorruptStoreError
from .format import (
    LOCK_NAME,
    MANIFEST_NAME,
    SEGMENT_PREFIX,
    SEGMENT_SUFFIX,
    SNAPSHOT_PREFIX,
    SNAPSHOT_SUFFIX,
    TMP_SUFFIX,
)

_SEGMENT_RE = re.compile(r"^log-(\d{8})\.vsl$")
_SNAPSHOT_RE = re.compile(r"^snap-(\d{16})\.vss$")


def segment_name(number: int) -> str:
    return f"{SEGMENT_PREFIX}{number:08d}{SEGMENT_SUFFIX}"


def snapshot_name(seq: int) -> str:
    return f"{SNAPSHOT_PREFIX}{seq:016d}{SNAPSHOT_SUFFIX}"


def parse_segment_name(name: str) -> int:
    m = _SEGMENT_RE.match(name)
    if not m:
        raise CorruptStoreError(f"{name!r} is not a log segment name")
    return int(m.group(1))


def is_segment_name(name: str) -> bool:
    return bool(_SEGMENT_RE.match(name))


def is_snapshot_name(name: str) -> bool:
    return bool(_SNAPSHOT_RE.match(name))


def is_ours(name: str) -> bool:
    base = name[: -len(TMP_SUFFIX)] if name.endswith(TMP_SUFFIX) else name
    return is_segment_name(base) or is_snapshot_name(base) or base == MANIFEST_NAME


def check_referenced_files(fs, directory: str, manifest) -> None:
    """Every file the manifest names exists, and the segment numbers have no gap."""
    names = ([manifest.snapshot] if manifest.snapshot else []) + list(manifest.logs)
    for name in names:
        if not fs.exists(os.path.join(directory, name)):
            raise CorruptStoreError(f"{name}, named by the manifest of {directory}, is missing")
    numbers = [parse_segment_name(n) for n in manifest.logs]
    if not numbers:
        raise CorruptStoreError(f"the manifest of {directory} names no log segment")
    if numbers != list(range(numbers[0], numbers[0] + len(numbers))):
        raise CorruptStoreError(f"the log segments of {directory} have a gap: {manifest.logs}")


def cleanup_orphans(fs, directory: str, manifest) -> list[str]:
    """Remove our leftovers (``*.tmp``, unreferenced snapshots and segments); returns their names."""
    keep = {MANIFEST_NAME, LOCK_NAME, *manifest.logs}
    if manifest.snapshot:
        keep.add(manifest.snapshot)
    removed = []
    for name in sorted(fs.listdir(directory)):
        if name in keep or not is_ours(name):
            continue
        with contextlib.suppress(FileNotFoundError):
            fs.unlink(os.path.join(directory, name))
            removed.append(name)
    if removed:
        fs.fsync_dir(directory)
    return removed


def prepare_new_store(fs, directory: str) -> None:
    """Before creating a store where no MANIFEST exists: remove leftovers of an interrupted creation.

    A creation writes the first segment, then the manifest; a crash in between leaves a segment holding only its
    header. Anything more (a segment with records, a snapshot) without a manifest is not ours to delete.
    """
    from .format import LOG_HEADER_SIZE

    for name in sorted(fs.listdir(directory)):
        path = os.path.join(directory, name)
        if name.endswith(TMP_SUFFIX) and is_ours(name):
            fs.unlink(path)
        elif is_segment_name(name) and fs.size(path) <= LOG_HEADER_SIZE:
            fs.unlink(path)
        elif is_ours(name):
            raise CorruptStoreError(f"{directory} holds {name} but no MANIFEST; refusing to overwrite it")
