"""The ``vecstore-ref`` command line: thin wrappers over the Python API, no logic of its own.

Every command prints human-readable text, or JSON with ``--json``; errors print one line and exit with status 1.
"""

from __future__ import annotations

import argparse
import json
import sys


def _open(args, **kw):
    import vecstore_ref as vs

    return vs.VecStore.open(args.path, read_only=getattr(args, "read_only", False), **kw)


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args.data, n=args.n, dim=args.dim)


def cmd_stats(args) -> int:
    with _open(args) as store:
        _print(args, store.stats().to_dict())
    return 0


def cmd_verify(args) -> int:
    with _open(args) as store:
        report = store.verify()
        _print(args, report.to_dict())
    return 0 if report.ok else 2


def cmd_compact(args) -> int:
    with _open(args) as store:
        if args.if_needed:
            _print(args, store.maybe_compact().to_dict())
        else:
            _print(args, {"removed_count": store.compact()})
    return 0


def cmd_snapshot(args) -> int:
    with _open(args) as store:
        store.snapshot()
        _print(args, {"ok": True, "snapshot_bytes": store.stats().snapshot_bytes})
    return 0


def cmd_expire(args) -> int:
    with _open(args) as store:
        _print(args, {"expired": store.expire_ttl_records()})
    return 0


def cmd_get(args) -> int:
    with _open(args) as store:
        _print(args, store.get(args.id, include_deleted=args.include_deleted).to_dict())
    return 0


def cmd_query(args) -> int:
    try:
        vector = json.loads(args.vector)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"error: --vector must be a JSON list of numbers: {exc}") from None
    with _open(args) as store:
        hits = store.query(vector, k=args.k, filter=args.filter, ef=args.ef)
        _print(args, {"results": [h.to_dict() for h in hits]})
    return 0


def cmd_warmup(args) -> int:
    """Compile every kernel once (or find them all in the cache) and say where the cache is."""
    from .jit import warmup

    report = warmup()
    if args.json:
        _print(args, report.to_dict())
        return 0
    print(f"kernel cache: {report.cache_dir or 'none (no writable directory: the kernels compile in every process)'}")
    for m in report.modules:
        print(f"  {m['module']:<12} {'compiled' if m['compiled'] else 'loaded'} in {m['seconds']:.2f} s")
    print(f"{report.compiled} kernels compiled in {report.seconds:.1f} s" if report.compiled
          else f"every kernel was in the cache ({report.seconds:.2f} s)")
    return 0


def cmd_serve(args) -> int:
    try:
        import fastapi  # noqa: F401
        import orjson  # noqa: F401
        import uvicorn  # noqa: F401

        from .http_api import serve
    except ImportError:
        print('error: the HTTP server needs the [server] extra: pip install "vecstore-ref[server]"', file=sys.stderr)
        return 2
    serve(args.data, host=args.host, port=args.port, token=args.token, access_log=args.access_log)
    return 0


def _print(args, obj) -> None:
    if getattr(args, "json", False):
        print(json.dumps(obj, indent=2, default=str))
        return
    if isinstance(obj, dict) and list(obj) == ["results"]:
        for h in obj["results"]:
            print(f"{h['id']}\t{h['score']:.6f}\t{json.dumps(h['metadata'])}")
        return
    for key, value in obj.items():
        print(f"{key}: {json.dumps(value, default=str) if isinstance(value, (dict, list)) else value}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vecstore-ref", description="An embedded vector store: demo and maintenance.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="create a store under DATA/demo, ingest generated vectors, run filtered queries")
    d.add_argument("--data", default="./data", help="directory for the demo store (default ./data)")
    d.add_argument("--n", type=int, default=5000, help="number of vectors (default 5000)")
    d.add_argument("--dim", type=int, default=64, help="dimension (default 64)")
    d.set_defaults(func=cmd_demo)

    w = sub.add_parser("warmup", help="compile every kernel once (for container images and CI) and print the cache "
                                      "directory")
    w.add_argument("--json", action="store_true", help="print JSON")
    w.set_defaults(func=cmd_warmup)

    v = sub.add_parser("serve", help="the HTTP API over the namespaces under DATA (needs the [server] extra)")
    v.add_argument("--data", default="./data", help="root directory of the namespaces (default ./data)")
    v.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    v.add_argument("--port", type=int, default=8080)
    v.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN' on every route (or set "
                                                 "VECSTORE_TOKEN)")
    v.add_argument("--access-log", action="store_true", help="log one line per request (off: it costs throughput)")
    v.set_defaults(func=cmd_serve)

    def store_cmd(name, func, help_, read_only_default=False):
        c = sub.add_parser(name, help=help_)
        c.add_argument("path", help="store directory")
        c.add_argument("--json", action="store_true", help="print JSON")
        if read_only_default:
            c.add_argument("--read-only", action="store_true", help="open without the write lock")
        c.set_defaults(func=func)
        return c

    store_cmd("stats", cmd_stats, "print the store's statistics", True)
    store_cmd("verify", cmd_verify, "check every file and checksum (exit 2 if anything is wrong)", True)
    c = store_cmd("compact", cmd_compact, "remove deleted and expired records for good")
    c.add_argument("--if-needed", action="store_true", help="only if the compaction config says so")
    store_cmd("snapshot", cmd_snapshot, "write a snapshot and start a fresh log")
    store_cmd("expire", cmd_expire, "tombstone records whose TTL has passed")
    g = store_cmd("get", cmd_get, "print one record", True)
    g.add_argument("id")
    g.add_argument("--include-deleted", action="store_true")
    q = store_cmd("query", cmd_query, "top-k nearest records", True)
    q.add_argument("--vector", required=True, help="JSON list of numbers")
    q.add_argument("--k", type=int, default=10)
    q.add_argument("--filter", default=None, help="filter text, e.g. \"lang = 'en' AND year >= 2020\"")
    q.add_argument("--ef", type=int, default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    from .errors import VecStoreError
    from .jit import report_compiles

    args = build_parser().parse_args(argv)
    try:
        with report_compiles(lambda line: print(line, file=sys.stderr)):  # a first run's compile is never silent
            return int(args.func(args) or 0)
    except VecStoreError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
