"""Bulk loading through the store: one ``upsert`` per vector vs ``batch_execute`` vs ``upsert_many``.

A batch is one log record, one fsync and one index pass; single upserts pay all three per vector. The issue's target
is a batch at least 10x faster per vector than single upserts at the same durability.

    python -m benchmarks.bulk_load [--n 20000] [--dim 128] [--index hnsw|flat] [--quick]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile

import vecstore_ref as vs

from .common import Timer, clustered, machine


def run(n: int, dim: int, index: str, durabilities=("fsync", "none"), batch_size: int = 1000, single_n: int | None = None):
    vectors, _ = clustered(n, dim, seed=1)
    ids = [f"v{i}" for i in range(n)]
    single_n = single_n or min(n, 2000)
    rows = []
    root = tempfile.mkdtemp(prefix="vs-bulk-")
    try:
        with vs.VecStore.open(f"{root}/warm", dim=dim, index=index, durability="none") as s:  # compile kernels
            s.upsert_many(ids[:600], vectors[:600])
            s.upsert("w", vectors[0])
        for dur in durabilities:
            with vs.VecStore.open(f"{root}/single-{dur}", dim=dim, index=index, durability=dur) as s:
                with Timer() as t_single:
                    for i in range(single_n):
                        s.upsert(ids[i], vectors[i])
            with vs.VecStore.open(f"{root}/batch-{dur}", dim=dim, index=index, durability=dur) as s:
                with Timer() as t_batch:
                    for start in range(0, n, batch_size):
                        s.batch_execute([vs.Upsert(ids[i], vectors[i]) for i in range(start, min(n, start + batch_size))])
            with vs.VecStore.open(f"{root}/many-{dur}", dim=dim, index=index, durability=dur) as s:
                with Timer() as t_many:
                    s.upsert_many(ids, vectors)
            per_single = t_single.s / single_n
            per_batch = t_batch.s / n
            per_many = t_many.s / n
            rows.append((dur, per_single, per_batch, per_many, per_single / per_batch, per_single / per_many))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--index", default="hnsw", choices=["hnsw", "flat"])
    p.add_argument("--quick", action="store_true", help="a tiny run (smoke test)")
    a = p.parse_args(argv)
    n = 1500 if a.quick else a.n
    rows = run(n, a.dim if not a.quick else 16, a.index, single_n=300 if a.quick else None)
    print(f"# bulk load, {n} x {a.dim}, index={a.index}\n\nmachine: {machine()}\n")
    print("| durability | single upsert (us/vec) | batch_execute x1000 (us/vec) | upsert_many (us/vec) "
          "| batch speedup | upsert_many speedup |")
    print("|---|---|---|---|---|---|")
    for dur, s, b, m, rb, rm in rows:
        print(f"| {dur} | {s * 1e6:.1f} | {b * 1e6:.1f} | {m * 1e6:.1f} | {rb:.1f}x | {rm:.1f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
