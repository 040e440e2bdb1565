"""Read every file of a store and check every checksum, changing nothing (``VecStore.verify``)."""

from __future__ import annotations

import os

from ..errors import VecStoreError
from ..types import VerifyReport
from .log import read_segments
from .manifest import read_manifest
from .records import RecordDecodeError, decode_batch
from .snapshot import read_snapshot


def verify_files(fs, path: str) -> VerifyReport:
    """The manifest, the snapshot it names (checksum and arrays) and every log record (CRC and payload)."""
    errors: list[str] = []
    files = records = 0
    try:
        manifest = read_manifest(fs, path)
        files += 1
    except VecStoreError as exc:
        return VerifyReport(False, files, records, [f"MANIFEST: {exc}"])
    if manifest is None:
        return VerifyReport(False, 0, 0, ["MANIFEST is missing"])
    if manifest.snapshot:
        try:
            header, _ = read_snapshot(fs, os.path.join(path, manifest.snapshot))
            if "seq" in header and header["seq"] != manifest.snapshot_seq:
                errors.append(f"{manifest.snapshot}: holds the state at sequence {header['seq']!r}; the manifest "
                              f"expects {manifest.snapshot_seq}")
        except (VecStoreError, OSError) as exc:  # also a directory, or nothing, where the file should be
            errors.append(f"{manifest.snapshot}: {_problem(exc)}")
        files += 1
    paths = [os.path.join(path, n) for n in manifest.logs]
    try:
        scan = read_segments(fs, paths, manifest.snapshot_seq, repair=False, truncate_tail=False)
        records = len(scan.records)
        for rec in scan.records:
            try:
                decode_batch(rec.payload)
            except RecordDecodeError as exc:
                errors.append(f"{os.path.basename(rec.path)}@{rec.offset}: {exc}")
        if scan.truncated_bytes:
            errors.append(f"{os.path.basename(scan.truncated_path)}: torn tail of "  # type: ignore[type-var]
                          f"{scan.truncated_bytes} bytes")
    except (VecStoreError, OSError) as exc:
        errors.append(_problem(exc))
    files += len(paths)
    return VerifyReport(not errors, files, records, errors)


def _problem(exc: BaseException) -> str:
    """One line for a report: a library error's message, or an OS error's reason and the file it names."""
    if isinstance(exc, OSError) and not isinstance(exc, VecStoreError):
        return f"{exc.strerror or type(exc).__name__}: {exc.filename}" if exc.filename else str(exc)
    return str(exc)
