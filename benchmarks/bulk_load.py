"""Bulk loading through the store: one ``upsert`` call per vector vs ``batch_execute`` vs ``upsert_many``.

A batch is one log record, one fsync and one index pass; one call per vector pays all three per vector. Each way
loads the same ``n`` vectors into a fresh store, at each durability (``fsync``: every call returns after its
record is fsynced; ``none``: no fsync at all). The target is a batch at least 10x faster per vector than single
upserts at the same durability. Kernels are warmed in a throw-away store first; the time to build the ``Upsert``
objects is counted (a user pays it).

With HNSW a write returns before its vector is linked into the graph (a background thread links it; queries scan
it exactly meanwhile), so the speedups are those of acknowledged writes. The "until linked" columns add the time
to link what is still waiting (``flush_index()``): the whole cost of a load, which graph linking bounds.

    python -m benchmarks.bulk_load [--n 20000] [--dim 128] [--index flat,hnsw] [--durability fsync,none] [--quick]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile

import vecstore_ref as vs

from . import Timer, machine, machine_line, md_table, set_numba_threads, write_json
from .datasets import clustered_vectors

TARGET = 10.0


def load_three_ways(root: str, x, index: str, durability: str, batch_size: int) -> dict:
    """Seconds per vector for each way of loading ``x`` (float32 (n, dim)) into a fresh store."""
    n, dim = x.shape
    ids = [f"v{i}" for i in range(n)]
    opts = {"dim": dim, "metric": "cosine", "index": index, "durability": durability}
    with vs.VecStore.open(f"{root}/{index}-{durability}-single", **opts) as s:
        with Timer() as single:
            for i in range(n):
                s.upsert(ids[i], x[i])
        with Timer() as single_link:
            s.flush_index()
    with vs.VecStore.open(f"{root}/{index}-{durability}-batch", **opts) as s:
        with Timer() as batch:
            for start in range(0, n, batch_size):
                res = s.batch_execute([vs.Upsert(ids[i], x[i]) for i in range(start, min(n, start + batch_size))])
                if res.failed:
                    raise RuntimeError(f"batch_execute failed: {res.errors[:3]}")
        with Timer() as batch_link:
            s.flush_index()
    with vs.VecStore.open(f"{root}/{index}-{durability}-many", **opts) as s:
        with Timer() as many:
            s.upsert_many(ids, x)
        assert len(s) == n, "upsert_many lost records"
    single_total, batch_total = single.s + single_link.s, batch.s + batch_link.s
    return {"single_s": single.s / n, "batch_s": batch.s / n, "many_s": many.s / n,
            "batch_speedup": single.s / batch.s, "many_speedup": single.s / many.s,
            "single_linked_s": single_total / n, "batch_linked_s": batch_total / n,
            "linked_speedup": single_total / batch_total}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--index", default="flat,hnsw")
    p.add_argument("--durability", default="fsync,none")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dir", default=None, help="where to put the stores (default: a temp dir; fsync cost depends "
                                                 "on the file system)")
    p.add_argument("--out", default=None, help="results directory (default benchmarks/results)")
    p.add_argument("--quick", action="store_true", help="a toy-size run (smoke test)")
    a = p.parse_args(argv)
    if a.quick:
        a.n, a.dim, a.batch_size = 300, 16, 100
    set_numba_threads(a.threads)
    x, _ = clustered_vectors(a.n, a.dim, seed=1)
    root = tempfile.mkdtemp(prefix="vs-bulk-", dir=a.dir)
    results = []
    try:
        for index in a.index.split(","):
            with vs.VecStore.open(f"{root}/warm-{index}", dim=a.dim, index=index, durability="none") as s:
                s.upsert_many([f"w{i}" for i in range(600)], clustered_vectors(600, a.dim, seed=2)[0])
                s.upsert("w", x[0])
                s.batch_execute([vs.Upsert("w2", x[1])])
            for dur in a.durability.split(","):
                r = load_three_ways(root, x, index, dur, a.batch_size)
                results.append({"index": index, "durability": dur, **r})
    finally:
        shutil.rmtree(root, ignore_errors=True)
    m = machine()
    print(f"# bulk load through the store: {a.n:,} x {a.dim}, cosine, batches of {a.batch_size:,}\n\n"
          f"machine: {machine_line(m)}; Numba threads: {a.threads}; stores under {tempfile.gettempdir() if not a.dir else a.dir}\n")
    rows = [[r["index"], r["durability"], f"{r['single_s'] * 1e6:.1f}", f"{r['batch_s'] * 1e6:.1f}",
             f"{r['many_s'] * 1e6:.1f}", f"{r['batch_speedup']:.1f}x", f"{r['many_speedup']:.1f}x",
             "yes" if r["batch_speedup"] >= TARGET else "no", f"{r['single_linked_s'] * 1e6:.1f}",
             f"{r['batch_linked_s'] * 1e6:.1f}", f"{r['linked_speedup']:.1f}x"] for r in results]
    print(md_table(["index", "durability", "one upsert per vector (us/vec)",
                    f"batch_execute x{a.batch_size} (us/vec)", "upsert_many (us/vec)", "batch speedup",
                    "upsert_many speedup", f"batch >= {TARGET:.0f}x", "single, until linked (us/vec)",
                    "batch, until linked (us/vec)", "speedup until linked"], rows))
    path = write_json("bulk_load", {"machine": m, "settings": vars(a), "results": results}, a.out)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
