"""Exact search side by side: vecstore_ref's FlatIndex vs faiss IndexFlatIP vs numpy matmul + argpartition.

Default: 100k x 128 clustered vectors, cosine, 1,000 held-out queries, k = 10. Batch search on 2 threads (Numba and
BLAS pools alike), and single queries on 1 thread over a prefix of the queries. Each library's answers are checked
against vecstore_ref's own (agreement < 1 only where distances tie at the k-th place or float rounding differs).

    python -m benchmarks.flat [--n 100000] [--dim 128] [--queries 1000] [--quick]
"""

from __future__ import annotations

import argparse

from . import blas_threads, machine, machine_line, md_table, write_json
from .ann import _batch_pass, _single_pass
from .datasets import clustered
from .peers import EXACT_PEERS, available, recall_at_k

K = 10


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--single", type=int, default=200, help="queries timed one at a time (1 thread)")
    p.add_argument("--metric", default="cosine", choices=["cosine", "euclidean", "dot"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None, help="results directory (default benchmarks/results)")
    p.add_argument("--quick", action="store_true", help="a toy-size run (smoke test)")
    a = p.parse_args(argv)
    if a.quick:
        a.n, a.dim, a.queries, a.single, a.repeats = 3000, 32, 300, 20, 1
    ds = clustered(a.n, a.dim, n_queries=a.queries, metric=a.metric)
    peers, skipped = available(EXACT_PEERS, ds.metric)
    m = machine()
    print(f"# exact search: {ds.describe()}, k = {K}\n\nmachine: {machine_line(m)}\n\nbatch: all queries in one "
          f"call on {a.threads} threads; single: {a.single} queries one at a time on 1 thread; Numba kernels "
          f"warmed before timing; best of {a.repeats}.\n")
    if skipped:
        print(f"(not installed, skipped: {', '.join(skipped)})\n")
    results = {}
    for peer in peers:
        peer.warmup(ds.dim)
        peer.build(ds.base, a.threads)
        Q = peer.prepare(ds.queries)
        peer.single_thread()
        with blas_threads(1):
            qps1, found1 = _single_pass(peer, Q[: a.single], K, a.repeats)
        with blas_threads(a.threads):
            qpsb, foundb = _batch_pass(peer, Q, K, a.threads, a.repeats)
        results[peer.name] = {"single_qps": qps1, "batch_qps": qpsb,
                              "agreement": recall_at_k(foundb, ds.truth),
                              "single_agreement": recall_at_k(found1, ds.truth[: a.single])}
    ref = results.get("faiss flat")
    rows = [[name, f"{r['batch_qps']:,.0f}", f"{r['single_qps']:,.0f}",
             f"{r['batch_qps'] / ref['batch_qps']:.2f}x" if ref else "n/a",
             f"{r['single_qps'] / ref['single_qps']:.2f}x" if ref else "n/a", f"{r['agreement']:.4f}"]
            for name, r in results.items()]
    print(md_table(["library", f"batch QPS ({a.threads} thr)", "single QPS (1 thr)", "batch vs faiss",
                    "single vs faiss", "top-10 agreement"], rows))
    path = write_json("flat", {"machine": m, "settings": vars(a), "dataset": ds.info, "results": results}, a.out)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
