"""The commands that are about no particular store: `demo` (a guided tour on generated data), `warmup` (compile
every kernel ahead of the first query) and `serve` (the HTTP API over a namespace root)."""

from __future__ import annotations

import argparse

from .common import CommandError, positive_int, tcp_port

DEMO_MAX_N = 1_000_000  # the demo holds its corpus in memory (vectors and metadata dicts): a tour, not a load test
DEMO_MAX_DIM = 4096


def demo_size(text: str) -> int:
    value = positive_int(text)
    if value > DEMO_MAX_N:
        raise argparse.ArgumentTypeError(f"the demo takes at most {DEMO_MAX_N:,} vectors, got {value:,} (load real "
                                         "data with ingest)")
    return value


def demo_dim(text: str) -> int:
    value = positive_int(text)
    if value > DEMO_MAX_DIM:
        raise argparse.ArgumentTypeError(f"the demo takes at most {DEMO_MAX_DIM:,} dimensions, got {value:,}")
    return value


def run_demo(args, out) -> int:
    from ..demo import run_demo as demo

    if out.json:
        return demo(args.data, n=args.n, dim=args.dim, out=lambda line: out.result({"message": line}))
    return demo(args.data, n=args.n, dim=args.dim)


def run_warmup(args, out) -> int:
    """Compile every kernel once (or find them all in the cache) and say where the cache is."""
    from ..jit import warmup

    report = warmup()
    cache = report.cache_dir or "none (no writable directory: the kernels compile in every process)"
    text = [f"kernel cache: {cache}"]
    text += [f"  {m['module']:<12} {'compiled' if m['compiled'] else 'loaded'} in {m['seconds']:.2f} s"
             for m in report.modules]
    text.append(f"{report.compiled} kernels compiled in {report.seconds:.1f} s" if report.compiled
                else f"every kernel was in the cache ({report.seconds:.2f} s)")
    out.result(report.to_dict(), text)
    return 0


def run_serve(args, out) -> int:
    try:
        import fastapi  # noqa: F401
        import orjson  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise CommandError('the HTTP server needs the [server] extra: pip install "vecstore-ref[server]" (from a '
                           'checkout: pip install -e ".[server]")') from None
    from ..http_api import serve

    def listening(url: str) -> None:
        out.note({"event": "serving", "data": args.data, "url": url},
                 f"serving {args.data} on {url} (API docs: /docs); Ctrl+C stops")

    serve(args.data, host=args.host, port=args.port, token=args.token, access_log=args.access_log,
          on_listening=listening)
    return 0


def register(sub, common) -> None:
    d = sub.add_parser("demo", parents=[common], help="create a store under DATA/demo, load generated vectors, "
                       "run filtered queries, check recall",
                       description="A guided tour: a store under DATA/demo, a few thousand generated vectors "
                       "with metadata, filtered queries, and HNSW recall checked against an exact scan.")
    d.add_argument("--data", default="./data", help="directory for the demo store (default ./data)")
    d.add_argument("--n", type=demo_size, default=5000, help=f"number of vectors (default 5000, at most "
                   f"{DEMO_MAX_N:,})")
    d.add_argument("--dim", type=demo_dim, default=64, help=f"dimension (default 64, at most {DEMO_MAX_DIM:,})")
    d.set_defaults(run=run_demo, parser=d)

    w = sub.add_parser("warmup", parents=[common], help="compile every kernel once (for container images and CI) "
                       "and print the cache directory",
                       description="Compile every Numba kernel once, or find them all in the cache, and print "
                       "the cache directory and the time per kernel module.")
    w.set_defaults(run=run_warmup, parser=w)

    v = sub.add_parser("serve", parents=[common], help="the HTTP API over the namespaces under --data (needs the "
                       "[server] extra)",
                       description="Serve the HTTP API over the namespaces under --data until interrupted.")
    v.add_argument("--data", default="./data", help="root directory of the namespaces (default ./data)")
    v.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    v.add_argument("--port", type=tcp_port, default=8080, help="1 to 65535 (default 8080)")
    v.add_argument("--token", default=None,
                   help="require 'Authorization: Bearer TOKEN' on every route (or set VECSTORE_TOKEN)")
    v.add_argument("--access-log", action="store_true",
                   help="log one line per request (off by default: it costs throughput)")
    v.set_defaults(run=run_serve, parser=v)
