"""Filtered queries by selectivity, with the plan the store chose, against unfiltered queries of the same run.

    python -m benchmarks.filtered                      # clustered 100k x 128 (euclidean) and MiniLM 20k x 384
    python -m benchmarks.filtered --datasets clustered --n 20000 --queries 100
    python -m benchmarks.filtered --quick              # toy size (the smoke test)

Each data set gets seeded metadata: ``u`` uniform in 0..9999 (filters ``u < T`` keep T / 100 percent) and
``side``, which half of the space a record lies in (the sign of its projection on a fixed random direction,
split at the median). The anti-correlated set asks queries from side 0 for records of side 1: the matching
records all lie on the far side of the query. The store is built (``upsert_many`` + ``flush_index``),
snapshotted, closed and reopened; the first estimate calibrates the cost model (timed and reported apart); then
every set, the unfiltered one included, is timed in the same rounds on one thread: ``--rounds`` passes over all
sets, each query timed alone through ``store.query``, and each query's best time over the rounds kept (a busy
moment of the shared machine slows a round, never speeds it up). Per set: queries/s (from the sum of those
best times), p50, recall@10 against the flat index over the same data with the same filter, the plan, and
``estimate_query``'s ``estimated_duration_ms`` against the measured p50.

Writes ``docs/figures/data/filtered.json`` (schema ``vecstore_ref.figures.filtered/1``) and
``docs/figures/data/cost_model.json`` (``vecstore_ref.figures.cost_model/1``: one point per set), from which
``python -m benchmarks.figures`` draws ``filtered.svg`` and ``cost-model.svg``; ``--out DIR`` writes them
elsewhere (the smoke test does). Prints the table of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import machine, machine_line, md_table, set_numba_threads, write_json

DATA_DIR = Path(__file__).resolve().parent.parent / "docs" / "figures" / "data"
THRESHOLDS = (5000, 2000, 1000, 500, 200, 100, 10)  # u < T keeps T / 10,000 of the records
QPS_TARGET = 0.5  # of the unfiltered queries/s of the same run
RECALL_TARGET = 0.95


def metadata_for(base: np.ndarray, seed: int = 5) -> tuple[list[dict], np.ndarray, float]:
    """``u`` and ``side`` for every row; returns ``(metadata, direction, median projection)``."""
    rng = np.random.default_rng(seed)
    u = rng.integers(0, 10_000, base.shape[0])
    direction = np.random.default_rng(seed + 1).standard_normal(base.shape[1]).astype(np.float32)
    proj = base @ direction
    median = float(np.median(proj))
    side = proj > median
    return [{"u": int(a), "side": int(b)} for a, b in zip(u, side)], direction, median


def load(name: str, n: int, n_queries: int):
    """``(label, metric, base, queries)`` of one data set (queries held out of the base)."""
    from .datasets import clustered_vectors, sentence_embeddings

    if name == "clustered":
        base, queries = clustered_vectors(n, 128, n_queries=4 * n_queries)
        return f"clustered {n // 1000}k x 128", "euclidean", base, queries
    ds = sentence_embeddings(max_n=n, n_queries=max(1000, 4 * n_queries), verbose=True)  # 1,000: the cached set
    return f"MiniLM {ds.n // 1000}k x {ds.dim}", "cosine", ds.base, ds.queries


def build(path: str, base: np.ndarray, metric: str, metadata: list[dict]) -> float:
    import vecstore_ref as vs

    t0 = time.perf_counter()
    with vs.VecStore.open(path, dim=base.shape[1], metric=metric, durability="none") as store:
        ids = [f"r{i}" for i in range(base.shape[0])]
        for start in range(0, len(ids), 10_000):
            store.upsert_many(ids[start:start + 10_000], base[start:start + 10_000], metadata[start:start + 10_000])
        store.flush_index()
        store.snapshot()
    return time.perf_counter() - t0


def time_sets(store, sets: list[dict], rounds: int) -> None:
    """Each query's best time (seconds) over ``rounds`` passes over every set, into ``set["best"]``."""
    for s in sets:
        s["best"] = [float("inf")] * len(s["queries"])
        for q in s["queries"][:3]:
            store.query(q, k=10, filter=s["filter"])  # warm: kernels, parsed filter, cached mask
    clock = time.perf_counter
    for _ in range(rounds):
        for s in sets:
            best, flt = s["best"], s["filter"]
            for i, q in enumerate(s["queries"]):
                t0 = clock()
                store.query(q, k=10, filter=flt)
                dt = clock() - t0
                if dt < best[i]:
                    best[i] = dt


def run_dataset(name: str, n: int, n_queries: int, rounds: int, tmp: str) -> dict:
    import vecstore_ref as vs

    label, metric, base, pool = load(name, n, n_queries)
    metadata, direction, median = metadata_for(base)
    path = os.path.join(tmp, name)
    build_s = build(path, base, metric, metadata)
    queries = pool[:n_queries]
    far = pool[(pool @ direction) < median][:n_queries]  # side 0: the anti-correlated set asks for side 1
    sets = [{"filter": None, "target": 1.0, "queries": queries, "anti": False}]
    sets += [{"filter": f"u < {t}", "target": t / 10_000, "queries": queries, "anti": False} for t in THRESHOLDS]
    sets.append({"filter": "side = 1", "target": 0.5, "queries": far, "anti": True})
    with vs.VecStore.open(path) as store, vs.VecStore.open(path, index="flat", read_only=True) as exact:
        t0 = time.perf_counter()
        store.estimate_query(queries[0], k=10, filter="u < 1000")  # the first estimate calibrates the model
        calibration_ms = (time.perf_counter() - t0) * 1e3
        time_sets(store, sets, rounds)
        rows = []
        for s in sets:
            flt, qs = s["filter"], s["queries"]
            est = store.estimate_query(qs[0], k=10, filter=flt)
            explained = store.query_explain(qs[0], k=10, filter=flt)
            got = [[h.id for h in store.query(q, k=10, filter=flt)] for q in qs]
            want = [[h.id for h in exact.query(q, k=10, filter=flt)] for q in qs]
            recall = sum(len(set(g) & set(w)) for g, w in zip(got, want)) / max(1, sum(len(w) for w in want))
            p50 = statistics.median(s["best"]) * 1e3
            rows.append({"dataset": label, "filter": flt, "selectivity_target": s["target"],
                         "selectivity": est.selectivity, "rows": int(round(est.selectivity * len(base))),
                         "anti_correlated": s["anti"], "plan": explained.plan, "recall": recall,
                         "qps": len(qs) / sum(s["best"]), "p50_ms": p50, "estimated_ms": est.estimated_duration_ms,
                         "estimated_distances": max(1, est.estimated_distance_computations),
                         "measured_distances": max(1, explained.distance_computations)})
        unfiltered = rows[0]["qps"]
        for r in rows:
            r["qps_ratio"] = r["qps"] / unfiltered
        calibration = store._cost.to_dict()
    return {"label": label, "n": len(base), "dim": base.shape[1], "metric": metric, "queries": n_queries,
            "build_s": build_s, "calibration_ms": calibration_ms, "calibration": calibration, "rows": rows}


def table(result: dict) -> str:
    head = ["filter", "rows", "plan", "queries/s", "x unfiltered", "p50 ms", "recall@10", "estimated ms",
            "estimated / p50"]
    body = []
    for r in result["rows"]:
        name = "none" if r["filter"] is None else r["filter"]
        if r["filter"] is not None:
            name += f" ({r['selectivity']:.1%}{', anti-correlated' if r['anti_correlated'] else ''})"
        body.append([name, f"{r['rows']:,}", r["plan"], f"{r['qps']:,.0f}", f"{r['qps_ratio']:.2f}",
                     f"{r['p50_ms']:.3f}", f"{r['recall']:.3f}", f"{r['estimated_ms']:.3f}",
                     f"{r['estimated_ms'] / r['p50_ms']:.2f}"])
    return md_table(head, body)


def summary(results: list[dict]) -> dict:
    rows = [r for res in results for r in res["rows"]]
    filtered = [r for r in rows if r["filter"] is not None]
    within = [0.5 <= r["estimated_ms"] / r["p50_ms"] <= 2.0 for r in rows]
    return {"sets": len(rows), "filtered_sets": len(filtered),
            "min_qps_ratio": min(r["qps_ratio"] for r in filtered),
            "min_recall": min(r["recall"] for r in filtered),
            "qps_target_met": sum(r["qps_ratio"] >= QPS_TARGET for r in filtered),
            "recall_target_met": sum(r["recall"] >= RECALL_TARGET for r in filtered),
            "estimates_within_2x": sum(within) / len(within)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="clustered,minilm", help="comma list: clustered, minilm")
    p.add_argument("--n", type=int, default=100_000, help="clustered base size (MiniLM: up to 20,000)")
    p.add_argument("--sentences", type=int, default=20_000, help="MiniLM base size")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default=None, help="directory for the results files (default: docs/figures/data)")
    p.add_argument("--quick", action="store_true", help="toy size: checks that the script runs")
    a = p.parse_args(argv)
    if a.quick:
        a.datasets, a.n, a.queries, a.rounds = "clustered", 3000, 20, 1
    set_numba_threads(1)
    from .figures import _machine_block

    print(machine_line(machine()))
    load_start = open("/proc/loadavg", encoding="ascii").read().split()[:3] if os.path.exists("/proc/loadavg") else []
    print("load average at start:", " ".join(load_start))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.datasets.split(","):
            try:
                res = run_dataset(name, a.sentences if name == "minilm" else a.n, a.queries, a.rounds, tmp)
            except ImportError as exc:
                print(f"({name} skipped: {exc})", file=sys.stderr)
                continue
            results.append(res)
            print(f"\n### {res['label']}, {res['metric']}: build {res['build_s']:.1f} s, cost model calibrated in "
                  f"{res['calibration_ms']:.0f} ms\n")
            print(table(res))
    load_end = open("/proc/loadavg", encoding="ascii").read().split()[:3] if os.path.exists("/proc/loadavg") else []
    summ = summary(results)
    print(f"\nload average at the end: {' '.join(load_end)}")
    print(f"filtered sets: {summ['qps_target_met']}/{summ['filtered_sets']} at >= {QPS_TARGET}x the unfiltered "
          f"queries/s (lowest {summ['min_qps_ratio']:.2f}x), {summ['recall_target_met']}/{summ['filtered_sets']} at "
          f"recall >= {RECALL_TARGET} (lowest {summ['min_recall']:.3f}); estimates within 2x of p50: "
          f"{summ['estimates_within_2x']:.0%} of {summ['sets']} sets")
    import vecstore_ref as vs

    command = "python -m benchmarks.filtered " + " ".join(argv if argv is not None else sys.argv[1:])
    block = _machine_block()
    block["load_average_end"] = " ".join(load_end)
    first = results[0] if results else {"label": "none", "n": 0, "dim": 0, "metric": ""}
    settings = {"dataset": ", ".join(r["label"] for r in results), "n": first["n"], "dim": first["dim"],
                "metric": ", ".join(r["metric"] for r in results), "k": 10, "ef": vs.HNSWParams().ef_search,
                "queries": a.queries, "threads": 1, "index": "hnsw", "hnsw": vs.HNSWParams().to_dict(),
                "metadata": "u uniform in 0..9999 (seeded); side = which half of the space (projection on a "
                            "random direction above its median)",
                "timing": f"each query timed alone through store.query, best of {a.rounds} rounds over all sets; "
                          "qps = queries / sum of those times; p50 of them",
                "command": command.strip(),
                "datasets": [{k: r[k] for k in ("label", "n", "dim", "metric", "build_s", "calibration_ms",
                                                "calibration")} for r in results]}
    rows = [r for res in results for r in res["rows"]]
    out = Path(a.out) if a.out else DATA_DIR
    write_json("filtered", {"schema": "vecstore_ref.figures.filtered/1", **block, "settings": settings,
                            "summary": summ, "rows": rows}, out)
    points = [{"index": "hnsw", "k": 10, "ef": settings["ef"], "filter": r["filter"], "dataset": r["dataset"],
               "plan": r["plan"], "estimated_ms": r["estimated_ms"], "measured_ms": r["p50_ms"],
               "estimated_distances": r["estimated_distances"], "measured_distances": r["measured_distances"]}
              for r in rows]

    def err(key_est, key_got):
        e = np.abs(np.log2([p[key_got] / p[key_est] for p in points])) if points else np.zeros(1)
        return float(np.median(e)), float(np.mean(e <= 1.0))

    t_med, t_in = err("estimated_ms", "measured_ms")
    d_med, d_in = err("estimated_distances", "measured_distances")
    write_json("cost_model", {"schema": "vecstore_ref.figures.cost_model/1", **block,
                              "settings": {**settings, "queries": len(points),
                                           "points": f"the {len(points)} sets of benchmarks/filtered.py "
                                                     f"({settings['dataset']}), p50 of {a.queries} queries each",
                                           "timing": "measured_ms: the p50 of the filtered benchmark's set"},
                              "summary": {"time_median_abs_log2": t_med, "time_within_2x": t_in,
                                          "dist_median_abs_log2": d_med, "dist_within_2x": d_in},
                              "points": points}, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
