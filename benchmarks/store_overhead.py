"""What the store adds to a query: ``store.query()`` vs the raw ``HNSWIndex.search`` on the same graph.

The store validates the vector and ``k``, takes its lock, builds the visibility mask, runs the index search, turns
slots into ids and scores (and metadata, if records carry any) and sorts ties by id. This script times that against
the bare index call on the very graph the store holds, so the difference is the store's own cost. Beside it, the
unchecked index call the store itself makes (``HNSWIndex.top``, which skips the checks ``search`` does on its own
arguments): the store's time over that one is all of its Python. Single queries run on 1 thread; ``query_batch`` vs
``search_batch`` on 2 threads. The target: at most 10 us per single query over the raw search.

    python -m benchmarks.store_overhead [--n 100000] [--dim 128] [--queries 1000] [--efs 10,16,64,128] [--quick]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time

import numpy as np

import vecstore_ref as vs

from . import machine, machine_line, md_table, set_numba_threads, write_json
from .datasets import clustered_vectors

TARGET_US = 10.0  # the store's own microseconds per query over the raw search
K = 10


def _raw_index(store):
    """The index object the store searches (a private attribute: benchmarks may look inside, callers may not)."""
    state = getattr(store, "_state", None)
    index = getattr(state, "index", None)
    if index is None or getattr(index, "kind", "") != "hnsw":
        raise RuntimeError("this store does not expose its HNSW index; update benchmarks/store_overhead.py")
    return index


CHUNK = 50  # queries per timed chunk


def _time_chunked(funcs, Q: np.ndarray, repeats: int) -> list[float]:
    """Seconds per pass over ``Q`` of each callable (called once per query), robust to a shared VM.

    The queries are cut into chunks of ``CHUNK``; each chunk runs through every callable, one right after the
    other, ``repeats`` times, the order rotated every time (a later one finds the earlier ones' rows in the
    cache). A chunk's time is its fastest run, and a pass is the sum over chunks: a neighbour's burst or a
    preemption spoils one run of one chunk, not a whole pass, so differences of a few microseconds per query show.
    """
    n_chunks = max(1, len(Q) // CHUNK)
    best = np.full((len(funcs), n_chunks), np.inf)
    for r in range(repeats):
        for c in range(n_chunks):
            chunk = Q[c * CHUNK:(c + 1) * CHUNK]
            shift = (r + c) % len(funcs)
            for which in list(range(len(funcs)))[shift:] + list(range(len(funcs)))[:shift]:
                f = funcs[which]
                t0 = time.perf_counter()
                for q in chunk:
                    f(q)
                best[which, c] = min(best[which, c], time.perf_counter() - t0)
    return [float(b.sum()) for b in best]


def _time_batch_pair(raw, via_store, repeats: int) -> tuple[float, float]:
    """Fastest of ``repeats`` calls of two callables, run alternately so drift hits both alike."""
    best_raw = best_store = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        raw()
        t1 = time.perf_counter()
        via_store()
        t2 = time.perf_counter()
        best_raw, best_store = min(best_raw, t1 - t0), min(best_store, t2 - t1)
    return best_raw, best_store


def measure(store, Q: np.ndarray, efs, threads: int, repeats: int) -> list[dict]:
    index = _raw_index(store)
    allowed = np.ones(index.table.capacity, dtype=bool)
    n_allowed = int(index.n_nodes)
    ids = store._state.id_map.array()  # slot -> id, to check both paths return the same records
    out = []
    for ef in efs:
        set_numba_threads(1)
        raw_s, call_s, store_s = _time_chunked([lambda q, ef=ef: index.search(q, K, allowed, ef),
                                                lambda q, ef=ef: index.top(q, K, allowed, ef, n_allowed),
                                                lambda q, ef=ef: store.query(q, k=K, ef=ef)], Q, repeats)
        same = np.mean([{ids[s] for s in index.search(q, K, allowed, ef)[0].tolist()}
                        == {n.id for n in store.query(q, k=K, ef=ef)} for q in Q[:100]])
        set_numba_threads(threads)
        raw_b, store_b = _time_batch_pair(lambda ef=ef: index.search_batch(Q, K, allowed, ef),
                                          lambda ef=ef: store.query_batch(Q, k=K, ef=ef), repeats)
        nq = len(Q)
        n_timed = max(1, nq // CHUNK) * CHUNK if nq >= CHUNK else nq
        out.append({"ef": ef, "raw_us": raw_s / n_timed * 1e6, "store_us": store_s / n_timed * 1e6,
                    "share_us": (store_s - raw_s) / n_timed * 1e6, "overhead": store_s / raw_s - 1,
                    "unchecked_us": call_s / n_timed * 1e6, "share_over_unchecked_us": (store_s - call_s) / n_timed * 1e6, "raw_batch_us": raw_b / nq * 1e6,
                    "store_batch_us": store_b / nq * 1e6, "batch_overhead": store_b / raw_b - 1,
                    "same_results": float(same)})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--efs", default="10,16,64,128")
    p.add_argument("--metadata", default="none,small", help="comma list: none (no metadata), small (3 fields)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--out", default=None, help="results directory (default benchmarks/results)")
    p.add_argument("--quick", action="store_true", help="a toy-size run (smoke test)")
    a = p.parse_args(argv)
    if a.quick:
        a.n, a.dim, a.queries, a.repeats, a.efs = 1000, 16, 50, 1, "32"
    efs = [int(e) for e in a.efs.split(",")]
    set_numba_threads(a.threads)
    x, Q = clustered_vectors(a.n, a.dim, n_queries=a.queries)
    ids = [f"doc-{i}" for i in range(a.n)]
    results = []
    root = tempfile.mkdtemp(prefix="vs-overhead-")
    try:
        for md in a.metadata.split(","):
            metas = None if md == "none" else [{"i": i, "kind": "even" if i % 2 == 0 else "odd", "score": i / a.n}
                                               for i in range(a.n)]
            with vs.VecStore.open(f"{root}/{md}", dim=a.dim, metric="cosine", index="hnsw",
                                  durability="none") as s:
                s.upsert_many(ids, x, metas)
                s.flush_index()  # link the whole graph now (writes do not wait for it)
                s.query(Q[0], k=K)
                s.query_batch(Q[:4], k=K)  # warm every kernel both paths use
                for r in measure(s, Q, efs, a.threads, a.repeats):
                    results.append({"metadata": md, **r})
    finally:
        shutil.rmtree(root, ignore_errors=True)
    m = machine()
    print(f"# store overhead: store.query vs HNSWIndex.search on the same graph\n\n{a.n:,} x {a.dim}, cosine, "
          f"{a.queries:,} queries, k = {K}; machine: {machine_line(m)}\n\nsingle: 1 thread, microseconds per query; "
          f"batch: one call of all queries on {a.threads} threads, microseconds per query. Single queries: chunks of "
          f"{CHUNK} queries, each through both paths {a.repeats} times in alternating order, the fastest run of "
          f"each chunk summed; batches: best of {a.repeats}.\n")
    rows = [[r["metadata"], r["ef"], f"{r['raw_us']:.1f}", f"{r['store_us']:.1f}", f"{r['share_us']:+.1f}",
             f"{r['overhead'] * 100:+.0f}%", "yes" if r["share_us"] <= TARGET_US else "no",
             f"{r['unchecked_us']:.1f}", f"{r['share_over_unchecked_us']:+.1f}",
             f"{r['raw_batch_us']:.1f}", f"{r['store_batch_us']:.1f}",
             f"{r['batch_overhead'] * 100:+.0f}%", f"{r['same_results']:.2f}"] for r in results]
    print(md_table(["metadata", "ef", "raw search (us)", "store.query (us)", "store's share (us)", "overhead",
                    f"<= {TARGET_US:.0f} us", "unchecked call (us)", "store over it (us)", "raw search_batch (us/q)", "store.query_batch (us/q)",
                    "batch overhead", "same results"], rows))
    path = write_json("store_overhead", {"machine": m, "settings": vars(a), "results": results}, a.out)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
