"""Scale-out on one machine: ``ShardedStore`` with 1, 2 and 4 shards, on threads and on Ray actors, against one store.

Every configuration loads the same vectors (``upsert_many`` + ``flush_index``, timed), then answers the same
held-out queries: one ``query`` call at a time from one caller (single queries/s), and all of them in one
``query_batch`` call (batch queries/s). recall@10 is measured against the exact top 10. Timings are taken in
rounds, each round visiting every configuration in turn, and the best round counts, so a change of load on a shared
machine hits every configuration alike; the load average is printed with each round.

It also measures what a model of many machines needs: each shard's own work (one shard, queried alone, at n, n/2
and n/4 records), what the fan-out adds on top of the slowest shard, and what merging costs; the scale-out guide
(docs/guide/scale-out.md) turns them into predictions for N machines.

    python -m benchmarks.sharding [--n 50000] [--dim 128] [--queries 1000] [--shards 1,2,4]
                                  [--executors threads,ray] [--rounds 3] [--clients 4] [--quick]

Ray runs as ``ray.init(num_cpus=2)`` on this machine; its actors reserve no CPU, so 4 shards fit on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time

import numpy as np

import vecstore_ref as vs

from . import machine, machine_line, md_table, set_numba_threads, write_json
from .datasets import clustered

K = 10
TARGETS = {  # (executor, shards): minimum ratio to one store's queries/s, single and batch
    ("ray", 2): {"single": 0.5, "batch": 1.0},
    ("threads", 2): {"single": 0.8},
}


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


class Config:
    """One store under test: a label, how to open it, and what was measured."""

    def __init__(self, label: str, executor: str | None, shards: int | None):
        self.label, self.executor, self.n_shards = label, executor, shards
        self.store = None
        self.build_s = float("nan")
        self.single_s = float("inf")
        self.batch_s = float("inf")
        self.concurrent_s = float("inf")
        self.recall = float("nan")

    def open(self, root: str, dim: int):
        path = os.path.join(root, self.label.replace(" ", "-").replace(",", ""))
        opts = {"dim": dim, "metric": "cosine", "durability": "none"}
        if self.executor is None:
            self.store = vs.VecStore.open(path, **opts)
        else:
            self.store = vs.ShardedStore.open(path, self.n_shards, executor=None if self.executor == "threads"
                                              else self.executor, **opts)
        return self.store


def _single_pass(store, Q) -> float:
    t0 = time.perf_counter()
    for q in Q:
        store.query(q, k=K)
    return time.perf_counter() - t0


def _batch_pass(store, Q) -> float:
    t0 = time.perf_counter()
    store.query_batch(Q, k=K)
    return time.perf_counter() - t0


def _concurrent_pass(store, Q, clients: int) -> float:
    """``clients`` threads, each sending its share of the queries one ``query`` call at a time."""
    chunks = np.array_split(np.arange(len(Q)), clients)
    barrier = threading.Barrier(clients + 1)

    def client(rows):
        barrier.wait()
        for r in rows:
            store.query(Q[r], k=K)

    threads = [threading.Thread(target=client, args=(c,)) for c in chunks]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def recall_at_k(store, Q, truth) -> float:
    res = store.query_batch(Q, k=K)
    found = [{int(i[1:]) for i in row if i is not None} for row in res.ids]
    return float(np.mean([len(f & set(t.tolist())) / K for f, t in zip(found, truth)]))


def shard_work(x, Q, sizes: list[int], root: str, rounds: int) -> list[dict]:
    """Seconds per single query and per batch query on one store of each size, alone in this process: the work
    one shard does for a query, without any fan-out."""
    out = []
    stores = []
    for m in sizes:
        s = vs.VecStore.open(os.path.join(root, f"alone-{m}"), dim=x.shape[1], metric="cosine", durability="none")
        s.upsert_many([f"v{i}" for i in range(m)], x[:m])
        s.flush_index()
        stores.append(s)
    best = [[float("inf"), float("inf")] for _ in sizes]
    for _ in range(rounds):
        for j, s in enumerate(stores):
            best[j][0] = min(best[j][0], _single_pass(s, Q))
            best[j][1] = min(best[j][1], _batch_pass(s, Q))
    for m, s, (single, batch) in zip(sizes, stores, best):
        out.append({"records": m, "single_ms": single / len(Q) * 1e3, "batch_us": batch / len(Q) * 1e6})
        s.close()
    return out


def merge_cost(n_queries: int, shards: int, rounds: int) -> float:
    """Microseconds per query and per shard to merge shard results of ``n_queries`` x 10 (``merge_batches``)."""
    from vecstore_ref.scale.merge import merge_batches
    from vecstore_ref.types import BatchQueryResult

    rng = np.random.default_rng(0)
    parts = []
    for s in range(shards):
        scores = -np.sort(rng.random((n_queries, K), dtype=np.float32), axis=1)
        ids = np.array([[f"s{s}-{i}-{j}" for j in range(K)] for i in range(n_queries)], dtype=object)
        parts.append(BatchQueryResult(ids, scores, np.full(n_queries, K)))
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        merge_batches(parts, K)
        best = min(best, time.perf_counter() - t0)
    return best / n_queries / shards * 1e6


def fit_log(sizes: list[int], values: list[float]) -> tuple[float, float]:
    """``a + b * log2(size)`` through the points (least squares): HNSW search cost grows with the log of n."""
    b, a = np.polyfit(np.log2(sizes), values, 1)
    return float(a), float(b)


def model(results: dict, n: int, rtt_ms: float, machines=(1, 2, 4, 8, 16)) -> list[dict]:
    """Predicted single-query latency and batch throughput on N machines, one shard each, C cores each.

    single latency(N) = t_shard(n / N) + fan-out(N) + network round trip
    batch queries/s(N) = 1 / max(w_shard(n / N) / C, merge(N))   (every machine searches every query; the caller
                                                                     merges N lists per query)
    with t_shard and w_shard fitted to the measured single shards (a + b log2 m), the fan-out cost fitted to the
    measured Ray overhead over the slowest shard (c0 + c1 N), and the merge measured per query and shard.
    """
    work = results["shard_work"]
    sizes = [w["records"] for w in work]
    a_s, b_s = fit_log(sizes, [w["single_ms"] for w in work])
    a_b, b_b = fit_log(sizes, [w["batch_us"] for w in work])  # per query, on C cores
    over = results["fanout_overhead_ms"].get("ray") or {}
    if len(over) >= 2:
        ns = sorted(int(s) for s in over)
        c1, c0 = np.polyfit(ns, [over[str(s)] for s in ns], 1)
    else:
        c0, c1 = (next(iter(over.values())), 0.0) if over else (0.0, 0.0)
    merge_us = results["merge_us_per_query_per_shard"]
    rows = []
    for nm in machines:
        m = n / nm
        t_shard = a_s + b_s * np.log2(m)
        fan = max(0.0, c0 + c1 * nm)
        single_ms = t_shard + fan + (rtt_ms if nm > 1 else 0.0)
        w = (a_b + b_b * np.log2(m)) * 1e-6  # seconds per query on one machine's cores
        merge_s = merge_us * nm * 1e-6 if nm > 1 else 0.0
        rows.append({"machines": nm, "records_per_shard": int(m), "shard_single_ms": t_shard, "fanout_ms": fan,
                     "single_ms": single_ms, "single_qps_one_caller": 1e3 / single_ms,
                     "batch_qps": 1.0 / max(w, merge_s)})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=50_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--shards", default="1,2,4")
    p.add_argument("--executors", default="threads,ray")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--clients", type=int, default=4, help="threads for the concurrent single-query pass (0: skip)")
    p.add_argument("--rtt-ms", type=float, default=0.1, help="network round trip assumed by the model")
    p.add_argument("--out", default=None, help="results directory (default benchmarks/results)")
    p.add_argument("--quick", action="store_true", help="a toy-size run (smoke test)")
    a = p.parse_args(argv)
    if a.quick:
        a.n, a.dim, a.queries, a.rounds, a.clients = 2000, 16, 50, 1, 2
    shard_counts = [int(s) for s in a.shards.split(",")]
    executors = [e for e in a.executors.split(",") if e]
    ray = None
    if "ray" in executors:
        try:
            import ray
        except ImportError:
            print("Ray is not installed: skipping the Ray configurations (pip install -e '.[ray]')")
            executors.remove("ray")
        else:
            if not ray.is_initialized():
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    set_numba_threads(2)
    ds = clustered(a.n, a.dim, n_queries=a.queries, metric="cosine", k=K)
    x, Q = ds.base, ds.queries
    ids = [f"v{i}" for i in range(a.n)]
    root = tempfile.mkdtemp(prefix="vs-sharding-")
    configs = [Config("VecStore", None, None)]
    configs += [Config(f"{e}, {s} shard{'s' if s > 1 else ''}", e, s) for e in executors for s in shard_counts]
    loads = [("start", load_average())]
    try:
        with vs.VecStore.open(os.path.join(root, "warm"), dim=a.dim, durability="none") as w:  # compile kernels
            w.upsert_many(ids[:500], x[:500])
            w.flush_index()
            w.query(Q[0], k=K)
            w.query_batch(Q[:4], k=K)
        for c in configs:
            store = c.open(root, a.dim)
            t0 = time.perf_counter()
            store.upsert_many(ids, x)
            store.flush_index()
            c.build_s = time.perf_counter() - t0
            c.recall = recall_at_k(store, Q, ds.truth)
            _single_pass(store, Q[: min(50, len(Q))])  # warm the path (connections, threads)
        loads.append(("built", load_average()))
        for r in range(a.rounds):
            for c in configs:
                c.single_s = min(c.single_s, _single_pass(c.store, Q))
                c.batch_s = min(c.batch_s, _batch_pass(c.store, Q))
                if a.clients > 1:
                    c.concurrent_s = min(c.concurrent_s, _concurrent_pass(c.store, Q, a.clients))
            loads.append((f"round {r + 1}", load_average()))
        # what one shard does alone, at the sizes the shards have
        work = shard_work(x, Q, sorted({a.n // s for s in shard_counts}, reverse=True), root, a.rounds)
        merge_us = merge_cost(a.queries, 2, a.rounds)
        loads.append(("end", load_average()))
    finally:
        for c in configs:
            if c.store is not None:
                c.store.close()
        shutil.rmtree(root, ignore_errors=True)

    nq = len(Q)
    base = configs[0]
    shard_ms = {w["records"]: w["single_ms"] for w in work}
    rows, out = [], []
    overhead: dict[str, dict[str, float]] = {}
    for c in configs:
        single_qps, batch_qps = nq / c.single_s, nq / c.batch_s
        conc_qps = nq / c.concurrent_s if a.clients > 1 else float("nan")
        ratio_s, ratio_b = single_qps / (nq / base.single_s), batch_qps / (nq / base.batch_s)
        latency_ms = c.single_s / nq * 1e3
        extra = float("nan")
        if c.executor is not None:
            extra = latency_ms - shard_ms[a.n // c.n_shards]
            overhead.setdefault(c.executor, {})[str(c.n_shards)] = extra
        target = TARGETS.get((c.executor, c.n_shards), {})
        met = [f"{k} {'>=' if v >= target[k] else '<'} {target[k]}x" for k, v in (("single", ratio_s),
                                                                                 ("batch", ratio_b)) if k in target]
        rows.append([c.label, f"{c.build_s:.1f}", f"{single_qps:,.0f}", f"{ratio_s:.2f}x", f"{batch_qps:,.0f}",
                     f"{ratio_b:.2f}x", f"{conc_qps:,.0f}" if a.clients > 1 else "-", f"{c.recall:.3f}",
                     "-" if c.executor is None else f"{extra:+.3f}", ", ".join(met) or "-"])
        out.append({"config": c.label, "executor": c.executor, "shards": c.n_shards, "build_s": c.build_s,
                    "single_qps": single_qps, "single_ratio": ratio_s, "batch_qps": batch_qps,
                    "batch_ratio": ratio_b, "concurrent_qps": conc_qps, "recall": c.recall,
                    "single_latency_ms": latency_ms, "overhead_over_slowest_shard_ms": extra})
    results = {"shard_work": work, "fanout_overhead_ms": overhead, "merge_us_per_query_per_shard": merge_us}
    predicted = model(results, a.n, a.rtt_ms)
    m = machine()
    print(f"# ShardedStore on one machine: {a.n:,} x {a.dim}, cosine, HNSW defaults, {nq:,} held-out queries, "
          f"k = {K}\n\nmachine: {machine_line(m)}\nload average (1 min): "
          + ", ".join(f"{name} {v:.1f}" for name, v in loads) + "\n")
    print(md_table(["store", "build (s)", "single q/s", "vs VecStore", "batch q/s", "vs VecStore",
                    f"single q/s, {a.clients} callers", "recall@10", "ms over slowest shard", "target"], rows))
    print("\nOne shard alone (the work each shard does per query):\n")
    print(md_table(["records", "single query (ms)", "batch, per query (us)"],
                   [[f"{w['records']:,}", f"{w['single_ms']:.3f}", f"{w['batch_us']:.1f}"] for w in work]))
    print(f"\nmerge of 2 shards' batch results: {merge_us:.2f} us per query per shard")
    print(f"\nModel for N machines (one shard each, {a.rtt_ms} ms network round trip; docs/guide/scale-out.md):\n")
    print(md_table(["machines", "records per shard", "shard work (ms)", "fan-out (ms)", "single query (ms)",
                    "single q/s, one caller", "batch q/s"],
                   [[r["machines"], f"{r['records_per_shard']:,}", f"{r['shard_single_ms']:.3f}",
                     f"{r['fanout_ms']:.3f}", f"{r['single_ms']:.3f}", f"{r['single_qps_one_caller']:,.0f}",
                     f"{r['batch_qps']:,.0f}"] for r in predicted]))
    path = write_json("sharding", {"machine": m, "settings": vars(a), "load": loads, "results": out, **results,
                                   "model": predicted}, a.out)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
