"""Approximate search side by side: vecstore_ref HNSW vs hnswlib, faiss (HNSW), usearch; flat vs faiss IndexFlatIP.

On a seeded clustered dataset (default 100k x 128, cosine), with exact ground truth from vecstore_ref's flat index.
For each library: build time on 2 threads, recall@10 against single-query QPS (1 thread) and batch QPS (2 threads)
over a sweep of ef, and index memory (raw vectors + links). Ratios against hnswlib are taken at matched recall
(QPS interpolated at recall 0.95). Peers that are not installed are skipped.

    python -m benchmarks.ann [--n 100000] [--dim 128] [--queries 1000] [--plot benchmarks/results/ann.png]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from .common import Timer, clustered, machine

EFS = (16, 32, 48, 64, 96, 128, 256)
THREADS = 2


def recall_at_10(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(f[f >= 0].tolist()) & set(t.tolist())) for f, t in zip(found, truth))
    return hits / truth.size


def qps_single(search, queries) -> tuple[float, np.ndarray]:
    out = []
    t0 = time.perf_counter()
    for q in queries:
        out.append(search(q))
    return len(queries) / (time.perf_counter() - t0), np.array(out)


def bench_vecstore(x, qs, truth, metric):
    import numba

    from vecstore_ref.config import HNSWParams
    from vecstore_ref.index.base import VectorTable
    from vecstore_ref.index.hnsw import HNSWIndex

    numba.set_num_threads(THREADS)
    warm = VectorTable(x.shape[1], metric, 2048)  # compile (or load) the kernels before timing
    ws = warm.allocate(2048)
    warm.write(ws, x[:2048])
    wh = HNSWIndex(warm, HNSWParams())
    wh.add(ws)
    wh.search(qs[0], 10, np.ones(warm.capacity, bool))
    wh.search_batch(qs[:4], 10, np.ones(warm.capacity, bool))
    t = VectorTable(x.shape[1], metric, len(x))
    slots = t.allocate(len(x))
    t.write(slots, x)
    h = HNSWIndex(t, HNSWParams(m=16, ef_construction=200, ef_search=64))
    with Timer() as build:
        h.add(slots)
    allowed = np.ones(t.capacity, dtype=bool)
    rows = []
    for ef in EFS:
        numba.set_num_threads(1)
        qps1, found = qps_single(lambda q, ef=ef: h.search(q, 10, allowed, ef)[0], qs)
        numba.set_num_threads(THREADS)
        with Timer() as tb:
            h.search_batch(qs, 10, allowed, ef)
        rows.append((ef, recall_at_10(found, truth), qps1, len(qs) / tb.s))
    memory = t.vectors[: len(x)].nbytes + h.memory_bytes()
    return {"build_s": build.s, "memory": memory, "rows": rows}


def bench_hnswlib(x, qs, truth, metric):
    import hnswlib

    space = {"cosine": "cosine", "dot": "ip", "euclidean": "l2"}[metric]
    p = hnswlib.Index(space=space, dim=x.shape[1])
    p.init_index(max_elements=len(x), M=16, ef_construction=200, random_seed=0)
    p.set_num_threads(THREADS)
    with Timer() as build:
        p.add_items(x, np.arange(len(x)))
    rows = []
    for ef in EFS:
        p.set_ef(ef)
        p.set_num_threads(1)
        qps1, found = qps_single(lambda q: p.knn_query(q, k=10)[0][0], qs)
        p.set_num_threads(THREADS)
        with Timer() as tb:
            p.knn_query(qs, k=10)
        rows.append((ef, recall_at_10(found.astype(np.int64), truth), qps1, len(qs) / tb.s))
    # hnswlib keeps per element: links0 (4 + 2M*4 bytes) + vector + label (8), plus upper layers (~M*4/ln M)
    memory = len(x) * (4 + 2 * 16 * 4 + 4 * x.shape[1] + 8) + int(len(x) / np.log(16)) * (4 + 16 * 4)
    return {"build_s": build.s, "memory": memory, "rows": rows}


def bench_faiss_hnsw(x, qs, truth, metric):
    import faiss

    faiss.omp_set_num_threads(THREADS)
    xx, qq = x, qs
    if metric == "cosine":
        xx = x / np.linalg.norm(x, axis=1, keepdims=True)
        qq = qs / np.linalg.norm(qs, axis=1, keepdims=True)
    mt = faiss.METRIC_L2 if metric == "euclidean" else faiss.METRIC_INNER_PRODUCT
    index = faiss.IndexHNSWFlat(x.shape[1], 16, mt)
    index.hnsw.efConstruction = 200
    with Timer() as build:
        index.add(xx)
    rows = []
    for ef in EFS:
        index.hnsw.efSearch = ef
        faiss.omp_set_num_threads(1)
        qps1, found = qps_single(lambda q: index.search(q[None, :], 10)[1][0], qq)
        faiss.omp_set_num_threads(THREADS)
        with Timer() as tb:
            index.search(qq, 10)
        rows.append((ef, recall_at_10(found, truth), qps1, len(qs) / tb.s))
    memory = len(faiss.serialize_index(index))
    return {"build_s": build.s, "memory": memory, "rows": rows}


def bench_usearch(x, qs, truth, metric):
    from usearch.index import Index

    m = {"cosine": "cos", "dot": "ip", "euclidean": "l2sq"}[metric]
    index = Index(ndim=x.shape[1], metric=m, dtype="f32", connectivity=16, expansion_add=200)
    with Timer() as build:
        index.add(np.arange(len(x)), x, threads=THREADS)
    rows = []
    for ef in EFS:
        index.expansion_search = ef
        qps1, found = qps_single(lambda q: index.search(q, 10, threads=1).keys, qs)
        with Timer() as tb:
            index.search(qs, 10, threads=THREADS)
        rows.append((ef, recall_at_10(found.astype(np.int64), truth), qps1, len(qs) / tb.s))
    return {"build_s": build.s, "memory": index.memory_usage, "rows": rows}


def qps_at_recall(rows, target=0.95, col=2) -> float | None:
    """QPS at ``target`` recall, interpolated linearly between the sweep points around it."""
    pts = sorted((r[1], r[col]) for r in rows)
    for (r0, q0), (r1, q1) in zip(pts, pts[1:]):
        if r0 <= target <= r1:
            return q0 if r1 == r0 else q0 + (q1 - q0) * (target - r0) / (r1 - r0)
    return None


def flat_vs_faiss(x, qs, metric):
    """Exact batch search: vecstore_ref FlatIndex vs faiss IndexFlatIP/L2 vs numpy matmul + argpartition."""
    import numba

    from vecstore_ref.index.base import VectorTable
    from vecstore_ref.index.flat import FlatIndex

    numba.set_num_threads(THREADS)
    t = VectorTable(x.shape[1], metric, len(x))
    t.write(t.allocate(len(x)), x)
    f = FlatIndex(t)
    allowed = np.ones(t.capacity, dtype=bool)
    f.search_batch(qs[:8], 10, allowed)
    with Timer() as ours:
        f.search_batch(qs, 10, allowed)
    out = {"vecstore_ref flat": len(qs) / ours.s}
    xx = x / np.linalg.norm(x, axis=1, keepdims=True) if metric == "cosine" else x
    qq = qs / np.linalg.norm(qs, axis=1, keepdims=True) if metric == "cosine" else qs
    with Timer() as npt:
        scores = qq @ xx.T
        np.argpartition(-scores, 10, axis=1)[:, :10]
    out["numpy matmul+argpartition"] = len(qs) / npt.s
    try:
        import faiss

        faiss.omp_set_num_threads(THREADS)
        index = faiss.IndexFlatL2(x.shape[1]) if metric == "euclidean" else faiss.IndexFlatIP(x.shape[1])
        index.add(xx)
        with Timer() as ft:
            index.search(qq, 10)
        out["faiss IndexFlat"] = len(qs) / ft.s
    except ImportError:
        pass
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--metric", default="cosine", choices=["cosine", "euclidean", "dot"])
    p.add_argument("--peers", default="hnswlib,faiss,usearch")
    p.add_argument("--plot", default="benchmarks/results/ann.png")
    p.add_argument("--quick", action="store_true", help="a tiny run (smoke test)")
    a = p.parse_args(argv)
    n, nq = (3000, 50) if a.quick else (a.n, a.queries)
    x, centres = clustered(n, a.dim, seed=0)
    rng = np.random.default_rng(1)
    qs = (centres[rng.integers(0, len(centres), nq)] + 0.5 * rng.normal(size=(nq, a.dim))).astype(np.float32)
    from vecstore_ref.index.base import VectorTable
    from vecstore_ref.index.flat import FlatIndex

    t = VectorTable(a.dim, a.metric, n)
    t.write(t.allocate(n), x)
    truth = FlatIndex(t).search_batch(qs, 10, np.ones(t.capacity, bool))[0]

    results = {"vecstore_ref": bench_vecstore(x, qs, truth, a.metric)}
    runners = {"hnswlib": bench_hnswlib, "faiss": bench_faiss_hnsw, "usearch": bench_usearch}
    for name in a.peers.split(","):
        try:
            results[name] = runners[name](x, qs, truth, a.metric)
        except ImportError:
            print(f"({name} is not installed: skipped)")
    print(f"# ANN benchmark: {n} x {a.dim}, {a.metric}, {nq} queries, k=10\n\nmachine: {machine()}; "
          f"single-query QPS on 1 thread, batch QPS and builds on {THREADS} threads; kernels warmed before timing\n")
    print("| library | build (s) | memory (MB) | ef | recall@10 | single QPS | batch QPS |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        for ef, rec, q1, qb in r["rows"]:
            print(f"| {name} | {r['build_s']:.1f} | {r['memory'] / 1e6:.1f} | {ef} | {rec:.3f} | {q1:,.0f} | {qb:,.0f} |")
    base = results.get("hnswlib")
    if base:
        print("\n| ratio vs hnswlib | single QPS @0.95 | batch QPS @0.95 | build time | memory |")
        print("|---|---|---|---|---|")
        for name, r in results.items():
            s1, s0 = qps_at_recall(r["rows"], col=2), qps_at_recall(base["rows"], col=2)
            b1, b0 = qps_at_recall(r["rows"], col=3), qps_at_recall(base["rows"], col=3)
            fmt = lambda a_, b_: f"{a_ / b_:.2f}x" if a_ and b_ else "n/a"  # noqa: E731
            print(f"| {name} | {fmt(s1, s0)} | {fmt(b1, b0)} | {r['build_s'] / base['build_s']:.2f}x | "
                  f"{r['memory'] / base['memory']:.2f}x |")
    flat = flat_vs_faiss(x, qs, a.metric)
    print("\n| exact batch search | QPS |\n|---|---|")
    for name, q in flat.items():
        print(f"| {name} | {q:,.0f} |")
    if "faiss IndexFlat" in flat:
        print(f"\nflat ratio vs faiss: {flat['vecstore_ref flat'] / flat['faiss IndexFlat']:.2f}x")
    if a.plot:
        os.makedirs(os.path.dirname(a.plot) or ".", exist_ok=True)
        with open(os.path.splitext(a.plot)[0] + ".json", "w") as fh:
            json.dump({"machine": machine(), "results": results, "flat": flat}, fh, indent=1)
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(1, 2, figsize=(11, 4))
            for name, r in results.items():
                recs = [row[1] for row in r["rows"]]
                ax[0].plot(recs, [row[2] for row in r["rows"]], marker="o", label=name)
                ax[1].plot(recs, [row[3] for row in r["rows"]], marker="o", label=name)
            for axis, title in zip(ax, ("single query, 1 thread", f"batch, {THREADS} threads")):
                axis.set_xlabel("recall@10")
                axis.set_ylabel("queries per second")
                axis.set_yscale("log")
                axis.set_title(title)
                axis.legend()
            fig.tight_layout()
            fig.savefig(a.plot, dpi=100)
            print(f"\nplot: {a.plot}")
        except ImportError:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
