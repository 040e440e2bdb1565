"""The commands that are about no particular store: `demo` (a guided tour on generated data) and `serve` (the
HTTP API over a namespace root). Commands of this kind (one that prepares the machine, say) register here."""

from __future__ import annotations

from .common import CommandError, positive_int


def run_demo(args, out) -> int:
    from ..demo import run_demo as demo

    if out.json:
        return demo(args.data, n=args.n, dim=args.dim, out=lambda line: out.result({"message": line}))
    return demo(args.data, n=args.n, dim=args.dim)


def run_serve(args, out) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise CommandError('the HTTP server needs the [server] extra: pip install "vecstore-ref[server]"') from None
    from ..http_api import serve

    out.note({"event": "serving", "data": args.data, "url": f"http://{args.host}:{args.port}"}, None)
    serve(args.data, host=args.host, port=args.port, token=args.token)
    return 0


def register(sub, common) -> None:
    d = sub.add_parser("demo", parents=[common], help="create a store under DATA/demo, load generated vectors, "
                       "run filtered queries, check recall",
                       description="A guided tour: a store under DATA/demo, a few thousand generated vectors "
                       "with metadata, filtered queries, and HNSW recall checked against an exact scan.")
    d.add_argument("--data", default="./data", help="directory for the demo store (default ./data)")
    d.add_argument("--n", type=positive_int, default=5000, help="number of vectors (default 5000)")
    d.add_argument("--dim", type=positive_int, default=64, help="dimension (default 64)")
    d.set_defaults(run=run_demo, parser=d)

    v = sub.add_parser("serve", parents=[common], help="the HTTP API over the namespaces under --data (needs the "
                       "[server] extra)",
                       description="Serve the HTTP API over the namespaces under --data until interrupted.")
    v.add_argument("--data", default="./data", help="root directory of the namespaces (default ./data)")
    v.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    v.add_argument("--port", type=positive_int, default=8080, help="default 8080")
    v.add_argument("--token", default=None,
                   help="require 'Authorization: Bearer TOKEN' on every route (or set VECSTORE_TOKEN)")
    v.set_defaults(run=run_serve, parser=v)
