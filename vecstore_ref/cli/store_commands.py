"""Commands on one store directory: inspect it (`stats`, `verify`, `get`, `query`), change one record (`upsert`,
`update-metadata`, `delete`, `soft-delete`, `restore`, `set-ttl`) and maintain it (`compact`, `snapshot`,
`expire`).

Each is one call of the Python API. The reads open the store read-only (see `common`), so they work on a store
another process has open for writing, and on a path with no store they fail without creating anything.
"""

from __future__ import annotations

import os

from .common import (
    add_create_options,
    json_metadata,
    json_vector,
    namespace_at,
    namespace_store_dir,
    no_store,
    open_for_reading,
    open_for_writing,
    open_namespace,
    positive_int,
    seconds,
    store_exists,
)
from .output import iso_time, plural

EXIT_DAMAGED = 3  # verify found a problem

# Fields of StoreStats that describe the command's own handle (always read-only here), not the store.
_HANDLE_FIELDS = ("read_only", "durability")


# --- reads ------------------------------------------------------------------------------------------------------

def run_stats(args, out) -> int:
    with open_for_reading(args.path) as store:
        stats = store.stats().to_dict()
    for key in _HANDLE_FIELDS:
        stats.pop(key, None)
    out.result(stats)
    return 0


def run_verify(args, out) -> int:
    """Check every file; exit 3 when anything is wrong, including a store too damaged to open."""
    from .._fs import get_fs
    from ..errors import StorageError
    from ..storage.verify import verify_files
    from ..store import VecStore

    if not store_exists(args.path):
        raise no_store(args.path)
    namespace = namespace_at(args.path)
    try:
        store = open_namespace(args.path, read_only=True) if namespace else VecStore.open(args.path, read_only=True)
    except StorageError as exc:  # corrupt enough not to open: still say what the files hold
        files = namespace_store_dir(args.path) if namespace else args.path
        report = verify_files(get_fs(), os.path.abspath(files))
        if namespace and files == args.path:  # the namespace's own file is unreadable: that is the problem
            report.ok, report.errors = False, [f"the namespace does not open: {type(exc).__name__}: {exc}"]
        elif report.ok:  # the files check out, yet together they do not make a store
            report.ok = False
            report.errors.append(f"the store does not open: {type(exc).__name__}: {exc}")
    else:
        with store:
            report = store.verify()
    result = report.to_dict()
    if report.ok:
        text: str | list[str] = (f"ok: {plural(report.files_checked, 'file')}, "
                                 f"{plural(report.records_checked, 'log record')} checked")
    else:
        text = [f"damaged: {len(report.errors)} problem(s) in {report.files_checked} files"]
        text += [f"  {e}" for e in report.errors]
    out.result(result, text)
    return 0 if report.ok else EXIT_DAMAGED


def run_get(args, out) -> int:
    with open_for_reading(args.path) as store:
        record = store.get(args.id, include_deleted=args.include_deleted).to_dict()
    out.result(record)
    return 0


def run_query(args, out) -> int:
    """Top-k hits: one NDJSON line each, or `id<TAB>score<TAB>metadata` lines."""
    import json

    with open_for_reading(args.path) as store:
        hits = store.query(args.vector, k=args.k, filter=args.filter, ef=args.ef)
    for rank, hit in enumerate(hits, 1):
        d = hit.to_dict()
        out.result({"rank": rank, **d}, f"{d['id']}\t{d['score']:.6f}\t{json.dumps(d['metadata'], ensure_ascii=False)}")
    return 0


# --- one-record writes ------------------------------------------------------------------------------------------

def run_upsert(args, out) -> int:
    if not store_exists(args.path):  # the record is checked before a store is created for it
        from ..metadata import validate_metadata
        from ..validation import validate_id, validate_ttl, validate_vector

        validate_id(args.id)
        validate_vector(args.vector, args.dim, args.metric or "cosine")
        validate_metadata(args.metadata)
        validate_ttl(args.ttl, allow_none=True)
    with open_for_writing(args.path, create=True, metric=args.metric, index=args.index, dim=args.dim) as store:
        store.upsert(args.id, args.vector, args.metadata, ttl=args.ttl)
        expires_at = store._expires_at_of(args.id)
    out.result({"id": args.id, "upserted": True, "expires_at": expires_at}, f"upserted {args.id}")
    return 0


def run_update_metadata(args, out) -> int:
    with open_for_writing(args.path) as store:
        store.update_metadata(args.id, args.metadata)
    out.result({"id": args.id, "updated": True}, f"updated the metadata of {args.id}")
    return 0


def run_delete(args, out) -> int:
    with open_for_writing(args.path) as store:
        store.delete(args.id)
    out.result({"id": args.id, "deleted": True}, f"deleted {args.id}")
    return 0


def run_soft_delete(args, out) -> int:
    with open_for_writing(args.path) as store:
        changed = store.soft_delete(args.id)
    out.result({"id": args.id, "changed": changed},
               f"soft-deleted {args.id}" if changed else f"{args.id} was already soft-deleted")
    return 0


def run_restore(args, out) -> int:
    with open_for_writing(args.path) as store:
        changed = store.restore(args.id)
    out.result({"id": args.id, "changed": changed},
               f"restored {args.id}" if changed else f"{args.id} was not soft-deleted")
    return 0


def run_set_ttl(args, out) -> int:
    if (args.ttl is None) == (not args.clear):
        args.parser.error("give either TTL (seconds) or --clear")
    with open_for_writing(args.path) as store:
        store.set_ttl(args.id, None if args.clear else args.ttl)
        expires_at = store._expires_at_of(args.id)
    text = f"{args.id} has no TTL" if expires_at is None else f"{args.id} expires at {iso_time(expires_at)}"
    out.result({"id": args.id, "expires_at": expires_at}, text)
    return 0


# --- maintenance ------------------------------------------------------------------------------------------------

def run_compact(args, out) -> int:
    with open_for_writing(args.path) as store:
        if args.if_needed:
            result = store.maybe_compact().to_dict()
        else:
            import time

            t0 = time.perf_counter()
            removed = store.compact()
            result = {"triggered": True, "removed_count": removed, "duration_ms": (time.perf_counter() - t0) * 1e3,
                      "reason": "asked for"}
    if result["triggered"]:
        text = f"removed {plural(result['removed_count'], 'record')} in {result['duration_ms']:.1f} ms"
    else:
        text = f"not compacted: {result['reason']}"
    out.result(result, text)
    return 0


def run_snapshot(args, out) -> int:
    with open_for_writing(args.path) as store:
        store.snapshot()
        stats = store.stats()
    out.result({"snapshot_bytes": stats.snapshot_bytes, "last_seq": stats.last_seq},
               f"wrote a snapshot of {stats.snapshot_bytes:,} bytes (up to log record {stats.last_seq})")
    return 0


def run_expire(args, out) -> int:
    with open_for_writing(args.path) as store:
        n = store.expire_ttl_records()
    out.result({"expired": n}, f"expired {plural(n, 'record')}")
    return 0


# --- parsers ----------------------------------------------------------------------------------------------------

def _command(sub, common, name, run, help_):
    p = sub.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".", parents=[common])
    p.add_argument("path", metavar="PATH", help="the store directory")
    p.set_defaults(run=run, parser=p)
    return p


def register_reads(sub, common) -> None:
    _command(sub, common, "stats", run_stats, "print the store's statistics (read-only)")
    _command(sub, common, "verify", run_verify, "read every file and check every checksum (read-only; exit 3 if "
             "damaged)")
    p = _command(sub, common, "get", run_get, "print one record (read-only)")
    p.add_argument("id", metavar="ID")
    p.add_argument("--include-deleted", action="store_true", help="also a soft-deleted record")
    p = _command(sub, common, "query", run_query, "the k nearest records to a vector (read-only)")
    p.add_argument("--vector", type=json_vector, required=True, help="JSON list of numbers, or - to read it from "
                   "stdin")
    p.add_argument("--k", type=positive_int, default=10, help="how many hits (default 10)")
    p.add_argument("--filter", default=None, help="filter text, e.g. \"lang = 'en' AND year >= 2020\"")
    p.add_argument("--ef", type=positive_int, default=None, help="HNSW search breadth for this query")


def register_writes(sub, common) -> None:
    p = _command(sub, common, "upsert", run_upsert, "insert or replace one record (creates the store if missing)")
    p.add_argument("id", metavar="ID")
    p.add_argument("--vector", type=json_vector, required=True, help="JSON list of numbers, or - to read it from "
                   "stdin")
    p.add_argument("--metadata", type=json_metadata, default=None, help="JSON object")
    p.add_argument("--ttl", type=seconds, default=None, help="expire the record after this many seconds")
    add_create_options(p)
    p = _command(sub, common, "update-metadata", run_update_metadata, "replace the metadata of one record")
    p.add_argument("id", metavar="ID")
    p.add_argument("--metadata", type=json_metadata, required=True, help="JSON object, or null")
    p = _command(sub, common, "delete", run_delete, "delete one record for good (its id is free at once)")
    p.add_argument("id", metavar="ID")
    p = _command(sub, common, "soft-delete", run_soft_delete, "hide one record, restorable until compaction")
    p.add_argument("id", metavar="ID")
    p = _command(sub, common, "restore", run_restore, "bring back a soft-deleted record")
    p.add_argument("id", metavar="ID")
    p = _command(sub, common, "set-ttl", run_set_ttl, "expire one record TTL seconds from now, or --clear its TTL")
    p.add_argument("id", metavar="ID")
    p.add_argument("ttl", metavar="TTL", type=seconds, nargs="?", default=None, help="seconds from now")
    p.add_argument("--clear", action="store_true", help="remove the record's TTL")


def register_maintenance(sub, common) -> None:
    p = _command(sub, common, "compact", run_compact, "remove deleted and expired records for good")
    p.add_argument("--if-needed", action="store_true", help="only if the store's compaction config says so")
    _command(sub, common, "snapshot", run_snapshot, "write a snapshot and start a fresh log (a checkpoint)")
    _command(sub, common, "expire", run_expire, "tombstone the records whose TTL has passed")
