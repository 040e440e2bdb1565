"""Scale-out on one machine: ``ShardedStore`` with 1, 2 and 4 shards, on threads and on Ray actors, against one store.

Every configuration loads the same vectors (``upsert_many`` + ``flush_index``, timed), then answers the same
held-out queries: one ``query`` call at a time from one caller (single queries/s), all of them in one
``query_batch`` call (batch queries/s), and, with ``--clients``, single calls from several threads at once.
recall@10 is measured against the exact top 10. Timings are taken in rounds, each round visiting every
configuration in turn with a short pass, and the best round counts: a change of load on a shared machine hits every
configuration alike, and a quiet moment serves all. The load average is printed.

It also measures what a model of many machines needs, in CPU time (steadier than wall time on a busy machine):
each shard's own work (a store of n, n/2, n/4 records queried alone), what a Ray shard's process spends per query
beyond that search, and what the calling process spends per query and per shard (framing, waiting, decoding,
merging). The scale-out guide (docs/guide/scale-out.md) explains the model; the script prints its predictions.

    python -m benchmarks.sharding [--n 50000] [--dim 128] [--queries 1000] [--shards 1,2,4]
                                  [--executors threads,ray] [--rounds 10] [--single 300] [--clients 4] [--quick]

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
TARGETS = {  # (executor, shards): minimum ratio to one store's queries/s
    ("ray", 2): {"single": 0.5, "batch": 1.0},
    ("threads", 2): {"single": 0.8},
}


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def process_cpu_s(pid: int) -> float:
    """CPU seconds the threads of process ``pid`` have run so far (Linux schedstat, nanoseconds; NaN elsewhere)."""
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue  # a thread that just ended
    except OSError:
        return float("nan")
    return total * 1e-9


class Config:
    """One store under test, and the best (lowest) figures its rounds gave."""

    def __init__(self, label: str, executor: str | None, shards: int | None):
        self.label, self.executor, self.n_shards = label, executor, shards
        self.store = None
        self.build_s = self.recall = float("nan")
        self.single_s = self.batch_s = self.concurrent_s = float("inf")  # seconds per query
        self.single_cpu: list[float] = []  # calling thread's CPU seconds per query, per round
        self.batch_cpu: list[float] = []
        self.actor_cpu: list[float] = []  # Ray shard processes' CPU seconds per query and shard, per round

    def open(self, root: str, dim: int):
        path = os.path.join(root, self.label.replace(" ", "-").replace(",", ""))
        opts = {"dim": dim, "metric": "cosine", "durability": "none"}
        if self.executor is None:
            self.store = vs.VecStore.open(path, **opts)
        else:
            self.store = vs.ShardedStore.open(path, self.n_shards, executor=None if self.executor == "threads"
                                              else self.executor, **opts)
        return self.store

    def actor_pids(self) -> list[int]:
        return [s.info["pid"] for s in self.store.shards] if self.executor == "ray" else []


def timed(fn) -> tuple[float, float]:
    """(wall seconds, this thread's CPU seconds) of ``fn()``."""
    c0, t0 = time.thread_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.thread_time() - c0


def single_pass(store, Q) -> tuple[float, float]:
    def run():
        for q in Q:
            store.query(q, k=K)
    wall, cpu = timed(run)
    return wall / len(Q), cpu / len(Q)


def batch_pass(store, Q) -> tuple[float, float]:
    wall, cpu = timed(lambda: store.query_batch(Q, k=K))
    return wall / len(Q), cpu / len(Q)


def concurrent_pass(store, Q, clients: int) -> float:
    """Seconds per query with ``clients`` threads each sending its share, one ``query`` call at a time."""
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
    return (time.perf_counter() - t0) / len(Q)


def recall_at_k(store, Q, truth) -> float:
    res = store.query_batch(Q, k=K)
    found = [{int(i[1:]) for i in row if i is not None} for row in res.ids]
    return float(np.mean([len(f & set(t.tolist())) / K for f, t in zip(found, truth)]))


def shard_work(x, Q, sizes: list[int], root: str, rounds: int, n_single: int) -> list[dict]:
    """What one shard does per query, alone in this process: a store of each size, single and batch queries."""
    stores = []
    for m in sizes:
        s = vs.VecStore.open(os.path.join(root, f"alone-{m}"), dim=x.shape[1], metric="cosine", durability="none")
        s.upsert_many([f"v{i}" for i in range(m)], x[:m])
        s.flush_index()
        stores.append(s)
    best = [[float("inf")] * 3 for _ in sizes]
    for r in range(rounds):
        sample = Q[(r * n_single) % len(Q):][:n_single]
        for j, s in enumerate(stores):
            wall, cpu = single_pass(s, sample)
            best[j][0], best[j][1] = min(best[j][0], wall), min(best[j][1], cpu)
            best[j][2] = min(best[j][2], batch_pass(s, Q)[0])
    for s in stores:
        s.close()
    return [{"records": m, "single_ms": b[0] * 1e3, "single_cpu_ms": b[1] * 1e3, "batch_us": b[2] * 1e6}
            for m, b in zip(sizes, best)]


def fit(xs, ys) -> tuple[float, float]:
    """Least-squares ``a + b * x`` (a line through one point is flat)."""
    if len(xs) < 2:
        return float(ys[0]), 0.0
    b, a = np.polyfit(np.asarray(xs, dtype=float), np.asarray(ys, dtype=float), 1)
    return float(a), float(b)


def model(work: list[dict], ray_rows: list[dict], n: int, rtt_ms: float, machines=(1, 2, 4, 8, 16)) -> dict:
    """Predictions for N machines holding one shard each (see docs/guide/scale-out.md, "What to expect").

    single query (ms) = search(n / N) + shard process extra + caller(N) + network round trip (N > 1)
    batch queries/s   = 1 / max(batch work per query on one machine at n / N, caller's batch cost per query(N))

    search(m) and the batch work are fitted as a + b log2(m) to the stores measured alone; the shard process extra
    (decoding, encoding, waking up) is a Ray shard's CPU per query minus the search's own; the caller's costs are
    its CPU per query with 1, 2, 4 Ray shards, fitted as a + b N.
    """
    logs = [np.log2(w["records"]) for w in work]
    s_a, s_b = fit(logs, [w["single_ms"] for w in work])
    b_a, b_b = fit(logs, [w["batch_us"] * 1e-3 for w in work])
    cpu_at = {w["records"]: w["single_cpu_ms"] for w in work}
    extras = [r["actor_cpu_ms"] - cpu_at[n // r["shards"]] for r in ray_rows if np.isfinite(r["actor_cpu_ms"])]
    extra = max(0.0, float(np.median(extras))) if extras else 0.0
    c_a, c_b = fit([r["shards"] for r in ray_rows], [r["caller_cpu_ms"] for r in ray_rows]) if ray_rows else (0, 0)
    d_a, d_b = fit([r["shards"] for r in ray_rows], [r["caller_batch_cpu_ms"] for r in ray_rows]) \
        if ray_rows else (0, 0)
    rows = []
    for nm in machines:
        m = n / nm
        search = max(0.0, s_a + s_b * np.log2(m))
        caller = max(0.0, c_a + c_b * nm)
        single = search + extra + caller + (rtt_ms if nm > 1 else 0.0)
        batch_ms = max(b_a + b_b * np.log2(m), d_a + d_b * nm)
        rows.append({"machines": nm, "records_per_shard": int(m), "search_ms": search, "shard_extra_ms": extra,
                     "caller_ms": caller, "single_ms": single,
                     "single_qps": 1e3 / single if single > 0 else float("nan"),
                     "batch_qps": 1e3 / batch_ms if batch_ms > 0 else float("nan")})  # nan: too few points to fit
    return {"search_ms": [s_a, s_b], "batch_ms": [b_a, b_b], "shard_extra_ms": extra, "caller_ms": [c_a, c_b],
            "caller_batch_ms": [d_a, d_b], "rtt_ms": rtt_ms, "rows": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=50_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--shards", default="1,2,4")
    p.add_argument("--executors", default="threads,ray")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--single", type=int, default=300, help="queries in each round's single-query pass")
    p.add_argument("--clients", type=int, default=4, help="threads for the concurrent single-query pass (0: skip)")
    p.add_argument("--rtt-ms", type=float, default=0.1, help="network round trip the model assumes between machines")
    p.add_argument("--out", default=None, help="results directory (default benchmarks/results)")
    p.add_argument("--quick", action="store_true", help="a toy-size run (smoke test)")
    a = p.parse_args(argv)
    if a.quick:
        a.n, a.dim, a.queries, a.rounds, a.single, a.clients = 2000, 16, 50, 1, 50, 2
    shard_counts = [int(s) for s in a.shards.split(",")]
    executors = [e for e in a.executors.split(",") if e]
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
            single_pass(store, Q[: min(50, len(Q))])  # warm the path (connections, threads)
        loads.append(("built", load_average()))
        for r in range(a.rounds):
            sample = Q[(r * a.single) % len(Q):][: a.single]
            for c in configs:
                pids = c.actor_pids()
                before = [process_cpu_s(pid) for pid in pids]
                wall, cpu = single_pass(c.store, sample)
                if pids:
                    used = [process_cpu_s(pid) - b for pid, b in zip(pids, before)]
                    c.actor_cpu.append(float(np.mean(used)) / len(sample))
                c.single_s = min(c.single_s, wall)
                c.single_cpu.append(cpu)
                wall, cpu = batch_pass(c.store, Q)
                c.batch_s = min(c.batch_s, wall)
                c.batch_cpu.append(cpu)
                if a.clients > 1:
                    c.concurrent_s = min(c.concurrent_s, concurrent_pass(c.store, sample, a.clients))
            loads.append((f"round {r + 1}", load_average()))
        work = shard_work(x, Q, sorted({a.n // s for s in shard_counts}, reverse=True), root, a.rounds, a.single)
        loads.append(("end", load_average()))
    finally:
        for c in configs:
            if c.store is not None:
                c.store.close()
        shutil.rmtree(root, ignore_errors=True)

    base = configs[0]
    search_ms = {w["records"]: w["single_ms"] for w in work}
    rows, out, ray_rows = [], [], []
    for c in configs:
        ratio_s, ratio_b = base.single_s / c.single_s, base.batch_s / c.batch_s
        over = float("nan") if c.executor is None else c.single_s * 1e3 - search_ms[a.n // c.n_shards]
        target = TARGETS.get((c.executor, c.n_shards), {})
        met = [f"{k} {'>=' if v >= target[k] else '<'} {target[k]}x" for k, v in (("single", ratio_s),
                                                                                 ("batch", ratio_b)) if k in target]
        conc = 1 / c.concurrent_s if a.clients > 1 else float("nan")
        rows.append([c.label, f"{c.build_s:.1f}", f"{1 / c.single_s:,.0f}", f"{ratio_s:.2f}x",
                     f"{1 / c.batch_s:,.0f}", f"{ratio_b:.2f}x", "-" if a.clients < 2 else f"{conc:,.0f}",
                     f"{c.recall:.3f}", "-" if c.executor is None else f"{over:+.3f}", ", ".join(met) or "-"])
        row = {"config": c.label, "executor": c.executor, "shards": c.n_shards, "build_s": c.build_s,
               "single_qps": 1 / c.single_s, "single_ratio": ratio_s, "batch_qps": 1 / c.batch_s,
               "batch_ratio": ratio_b, "concurrent_qps": conc, "recall": c.recall,
               "overhead_over_one_shard_alone_ms": over,
               "caller_cpu_ms": float(np.median(c.single_cpu)) * 1e3,
               "caller_batch_cpu_ms": float(np.median(c.batch_cpu)) * 1e3,
               "actor_cpu_ms": float(np.median(c.actor_cpu)) * 1e3 if c.actor_cpu else float("nan")}
        out.append(row)
        if c.executor == "ray":
            ray_rows.append(row)
    predicted = model(work, ray_rows, a.n, a.rtt_ms)
    m = machine()
    print(f"# ShardedStore on one machine: {a.n:,} x {a.dim}, cosine, HNSW defaults, {len(Q):,} held-out queries, "
          f"k = {K}\n\nmachine: {machine_line(m)}\nload average (1 min): "
          + ", ".join(f"{name} {v:.1f}" for name, v in loads) + "\n")
    print(md_table(["store", "build (s)", "single q/s", "vs VecStore", "batch q/s", "vs VecStore",
                    f"single q/s, {a.clients} callers", "recall@10", "ms over one shard alone", "target"], rows))
    print("\nWhere a single query's time goes (CPU ms per query, medians over the rounds):\n")
    print(md_table(["store", "calling thread", "each Ray shard process", "calling thread, per batch query"],
                   [[r["config"], f"{r['caller_cpu_ms']:.3f}",
                     "-" if not np.isfinite(r["actor_cpu_ms"]) else f"{r['actor_cpu_ms']:.3f}",
                     f"{r['caller_batch_cpu_ms']:.4f}"] for r in out]))
    print("\nOne store alone, at each shard size (what a shard does per query):\n")
    print(md_table(["records", "single query (ms)", "single query CPU (ms)", "batch, per query (us)"],
                   [[f"{w['records']:,}", f"{w['single_ms']:.3f}", f"{w['single_cpu_ms']:.3f}",
                     f"{w['batch_us']:.1f}"] for w in work]))
    print(f"\nModel for N machines, one shard each, {a.rtt_ms} ms network round trip (docs/guide/scale-out.md): "
          f"shard process extra {predicted['shard_extra_ms']:.3f} ms; caller {predicted['caller_ms'][0]:.3f} + "
          f"{predicted['caller_ms'][1]:.3f} N ms\n")
    print(md_table(["machines", "records per shard", "search (ms)", "caller (ms)", "single query (ms)",
                    "single q/s, one caller", "batch q/s"],
                   [[r["machines"], f"{r['records_per_shard']:,}", f"{r['search_ms']:.3f}", f"{r['caller_ms']:.3f}",
                     f"{r['single_ms']:.3f}", f"{r['single_qps']:,.0f}", f"{r['batch_qps']:,.0f}"]
                    for r in predicted["rows"]]))
    path = write_json("sharding", {"machine": m, "settings": vars(a), "load": loads, "results": out,
                                   "shard_work": work, "model": predicted}, a.out)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
