"""Reads that never wait: queries from several threads, and queries while a compaction or a checkpoint runs.

Through the public API on one store (clustered vectors, euclidean, HNSW defaults, k = 10, linked before timing):

1. **Threads.** Queries per second with 1 and 2 query threads (each its own share of the queries), and the ratio,
   from five pairs of adjacent windows (the median of the five ratios). With ``--ceiling``, the same for the raw
   index and for hnswlib on the same vectors: what two threads reach when almost no Python runs per query.
2. **Compaction.** Query latency (p50, p99) from one thread, in a window without maintenance and in a window during
   which another thread compacts the store (every record soft-deleted beforehand is reclaimed, so the compaction
   rebuilds the whole graph), and the ratio of the p99s.
3. **Checkpoints.** p50/p99 of fsynced single upserts and of queries, each from its own thread, without and with
   checkpoints written back to back (see ``benchmarks.restarts --checkpoint-load``).

    python -m benchmarks.concurrency [--n 100000] [--dim 128] [--seconds 10] [--skip-checkpoints] [--ceiling]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time

import numpy as np

from . import machine, machine_line, md_table, write_json
from .datasets import clustered_vectors
from .restarts import checkpoint_load


def _pct(v: list[float], p: float) -> float:
    v = sorted(v)
    return 1e3 * v[min(len(v) - 1, int(p * len(v)))] if v else float("nan")


def _qps(ask, Q: np.ndarray, seconds: float, n_threads: int) -> float:
    counts = [0] * n_threads
    stop = threading.Event()
    barrier = threading.Barrier(n_threads + 1)

    def run(t):
        barrier.wait()
        i = t
        while not stop.is_set():
            ask(Q[i % len(Q)])
            counts[t] += 1
            i += n_threads

    threads = [threading.Thread(target=run, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    barrier.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for th in threads:
        th.join()
    return sum(counts) / (time.perf_counter() - t0)


def threads_qps(ask, Q: np.ndarray, seconds: float, rounds: int = 5) -> dict:
    """Queries/s with 1 and 2 threads calling ``ask(query)``, measured in ``rounds`` pairs of short windows (``seconds`` in all per
    thread count), in alternating order; the ratio is the median of the pairs' ratios. On a shared VM the speed of
    one window can move by a fifth when a neighbour wakes up; a pair of adjacent windows sees mostly the same
    neighbours, so its ratio moves far less than two long windows taken one after the other."""
    window = seconds / rounds
    pairs = []
    for r in range(rounds):
        order = (1, 2) if r % 2 == 0 else (2, 1)
        got = {n: _qps(ask, Q, window, n) for n in order}
        pairs.append((got[1], got[2]))
    one, two = (np.array(v) for v in zip(*pairs))
    return {1: float(np.median(one)), 2: float(np.median(two)), "ratio": float(np.median(two / one)),
            "ratios": (two / one).round(3).tolist(), "rounds": rounds}


def ceiling(store, x: np.ndarray, Q: np.ndarray, seconds: float) -> dict:
    """The same two-thread measurement on the store's own graph called raw (``HNSWIndex.search``: the walk, with a
    few microseconds of Python around it) and on hnswlib built from the same vectors with the same M and ef; then
    one batch call of all queries on 1 and on 2 kernel threads, for both: how the walk itself scales when no
    Python runs between queries."""
    index, live = store._state.index, store._state.live
    asks = {"raw HNSWIndex.search": lambda q: index.search(q, 10, live)}
    try:
        import hnswlib
    except ImportError:
        hnswlib = None
    if hnswlib is not None:
        p = store._state.index.params
        peer = hnswlib.Index(space="l2", dim=x.shape[1])
        peer.init_index(max_elements=len(x), M=p.m, ef_construction=p.ef_construction, random_seed=0)
        peer.set_num_threads(os.cpu_count() or 1)
        peer.add_items(x)
        peer.set_num_threads(1)
        peer.set_ef(p.ef_search)
        asks["hnswlib knn_query"] = lambda q: peer.knn_query(q, k=10)
    out: dict = {}
    for name, ask in asks.items():
        out[name] = tq = threads_qps(ask, Q, seconds)
        print(f"{name}: 1 thread {tq[1]:,.0f} q/s, 2 threads {tq[2]:,.0f} q/s, {tq['ratio']:.2f}x "
              f"(pairs {', '.join(f'{r:.2f}' for r in tq['ratios'])})")
    # The walk's own scaling, with no Python between queries: one batch call on 1, then on 2 kernel threads.
    import numba

    batches = {"store.query_batch": lambda nt: store.query_batch(Q, k=10)}
    if hnswlib is not None:
        batches["hnswlib knn_query (batch)"] = lambda nt: (peer.set_num_threads(nt), peer.knn_query(Q, k=10))
    before = numba.get_num_threads()
    try:
        for name, run in batches.items():
            rates: dict[int, list[float]] = {1: [], 2: []}
            for r in range(5):
                for nt in ((1, 2) if r % 2 == 0 else (2, 1)):
                    numba.set_num_threads(min(nt, numba.config.NUMBA_NUM_THREADS))
                    t0 = time.perf_counter()
                    run(nt)
                    rates[nt].append(len(Q) / (time.perf_counter() - t0))
            ratios = np.array(rates[2]) / np.array(rates[1])
            out[name] = b = {1: float(np.median(rates[1])), 2: float(np.median(rates[2])),
                             "ratio": float(np.median(ratios)), "ratios": ratios.round(3).tolist()}
            print(f"{name}: 1 kernel thread {b[1]:,.0f} q/s, 2 threads {b[2]:,.0f} q/s, {b['ratio']:.2f}x")
    finally:
        numba.set_num_threads(before)
    return out


def compaction_latency(store, Q: np.ndarray, seconds: float) -> dict:
    def window(compacting: bool) -> dict:
        lat: list[float] = []
        done = threading.Event()
        result = {}

        def compactor():
            t0 = time.perf_counter()
            result["removed"] = store.compact()
            result["compact_s"] = time.perf_counter() - t0
            done.set()

        th = threading.Thread(target=compactor) if compacting else None
        if th:
            th.start()
        t_end = time.perf_counter() + seconds
        i = 0
        while (not done.is_set()) if compacting else time.perf_counter() < t_end:
            a = time.perf_counter()
            store.query(Q[i % len(Q)], k=10)
            lat.append(time.perf_counter() - a)
            i += 1
        if th:
            th.join()
        return {"p50_ms": _pct(lat, 0.5), "p99_ms": _pct(lat, 0.99), "queries": len(lat), **result}

    return {"without": window(False), "during": window(True)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--skip-checkpoints", action="store_true")
    ap.add_argument("--ceiling", action="store_true",
                    help="also time two threads on the raw index and on hnswlib (same vectors, M, ef): what the "
                         "machine allows a walk without the store's Python")
    ap.add_argument("--out", default=None, help="results directory (default benchmarks/results)")
    args = ap.parse_args(argv)
    import vecstore_ref as vs

    m = machine()
    print(machine_line(m))
    result: dict = {"machine": m, "n": args.n, "dim": args.dim}
    x, Q = clustered_vectors(args.n, args.dim, n_clusters=200, seed=0, n_queries=1000)
    d = tempfile.mkdtemp(prefix="vs-conc-")
    try:
        with vs.VecStore.open(os.path.join(d, "s"), dim=args.dim, metric="euclidean", durability="none") as s:
            s.upsert_many([f"doc-{i}" for i in range(args.n)], x)
            s.flush_index()
            result["threads"] = tq = threads_qps(lambda q: s.query(q, k=10), Q, args.seconds)
            print(md_table(["query threads", "queries/s"], [[1, f"{tq[1]:,.0f}"], [2, f"{tq[2]:,.0f}"]]))
            print(f"2 threads / 1 thread: {tq['ratio']:.2f}x (median of {tq['rounds']} paired windows: "
                  f"{', '.join(f'{r:.2f}' for r in tq['ratios'])})")
            if args.ceiling:
                result["ceiling"] = ceiling(s, x, Q, args.seconds)
            # a compaction that rebuilds everything: soft-delete a tenth, so every record moves
            s.batch_execute([vs.SoftDelete(f"doc-{i}") for i in range(0, args.n, 10)])
            result["compaction"] = cl = compaction_latency(s, Q, args.seconds)
            w0, w1 = cl["without"], cl["during"]
            print(md_table(["window", "query p50 ms", "query p99 ms", "queries"],
                           [["no compaction", f"{w0['p50_ms']:.3f}", f"{w0['p99_ms']:.3f}", w0["queries"]],
                            [f"compacting ({w1.get('compact_s', 0):.1f} s)", f"{w1['p50_ms']:.3f}",
                             f"{w1['p99_ms']:.3f}", w1["queries"]]]))
            print(f"query p99 during / without compaction: {w1['p99_ms'] / w0['p99_ms']:.2f}x")
    finally:
        shutil.rmtree(d, ignore_errors=True)
    if not args.skip_checkpoints:
        result["checkpoints"] = ck = checkpoint_load(args.n, args.dim, args.seconds)
        w0, w1 = ck["without"], ck["with"]
        print(md_table(["window", "upsert p50 ms", "upsert p99 ms", "query p50 ms", "query p99 ms", "checkpoints"],
                       [["no checkpoint", f"{w0['upsert_p50_ms']:.2f}", f"{w0['upsert_p99_ms']:.2f}",
                         f"{w0['query_p50_ms']:.3f}", f"{w0['query_p99_ms']:.3f}", 0],
                        ["checkpoints back to back", f"{w1['upsert_p50_ms']:.2f}", f"{w1['upsert_p99_ms']:.2f}",
                         f"{w1['query_p50_ms']:.3f}", f"{w1['query_p99_ms']:.3f}", w1["checkpoints"]]]))
        print(f"with / without checkpoints: upsert p99 {w1['upsert_p99_ms'] / w0['upsert_p99_ms']:.2f}x, "
              f"query p99 {w1['query_p99_ms'] / w0['query_p99_ms']:.2f}x")
    write_json("concurrency", result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
