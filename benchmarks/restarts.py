"""Restarts as a user lives them: build, close, then open in a new process and answer a first query.

A store is written the way the README does it (``upsert_many`` with metadata, ``flush_index()``, ``close()``; no
``snapshot()`` call), then a fresh interpreter opens it and answers queries. The same data goes into the peers in
the same run: hnswlib (``save_index`` / ``load_index``), and the store-level peers Chroma, LanceDB and Qdrant's
local mode when they are installed. Each open is measured in its own child process, ``--runs`` times, with the page
cache warm (the files were just written or read) and the Numba cache warm.

    python -m benchmarks.restarts [--n 100000] [--dim 128] [--runs 5] [--peers hnswlib,chroma,lancedb]
    python -m benchmarks.restarts --n 1000000 --peers hnswlib --recall      # the 1M x 128 targets
    python -m benchmarks.restarts --n 100000 --checkpoint-load               # latency while a checkpoint runs

Reported per system: build (s), open (s), first query (s), open + first query (s), steady-state query p50 (ms),
RSS after open (MB); for vecstore_ref also ``stats().unindexed`` and the records replayed after open. With
``--recall``: recall@10 at ef 64 of vecstore_ref and hnswlib against an exact scan. With ``--checkpoint-load``:
p50/p99 of fsynced single upserts and of queries, each from its own thread, without and with checkpoints running.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from . import machine, machine_line, md_table, write_json
from .datasets import clustered_vectors

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
M, EF_CONSTRUCTION, EF_SEARCH = 16, 200, 64

_RSS = """
def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
"""

# --- children: build ----------------------------------------------------------------------------------------------

BUILD = {
    "vecstore_ref": """
import sys, time, numpy as np, vecstore_ref as vs
x = np.load(sys.argv[1], mmap_mode="r"); path = sys.argv[2]
ids = [f"doc-{i}" for i in range(x.shape[0])]
metas = [{"i": i, "tag": f"t{i % 10}"} for i in range(x.shape[0])]
t0 = time.perf_counter()
s = vs.VecStore.open(path, dim=x.shape[1], metric="euclidean", hnsw=vs.HNSWParams(m=16, ef_construction=200))
s.upsert_many(ids, np.ascontiguousarray(x), metas)
t1 = time.perf_counter()
s.flush_index()
t2 = time.perf_counter()
s.close()
t3 = time.perf_counter()
print(json.dumps({"ingest_s": t1 - t0, "build_s": t2 - t0, "close_s": t3 - t2}))
""",
    "hnswlib": """
import sys, time, numpy as np, hnswlib
x = np.ascontiguousarray(np.load(sys.argv[1], mmap_mode="r")); path = sys.argv[2]
t0 = time.perf_counter()
idx = hnswlib.Index(space="l2", dim=x.shape[1])
idx.init_index(max_elements=x.shape[0], M=16, ef_construction=200, random_seed=0)
idx.set_num_threads(2)
idx.add_items(x, np.arange(x.shape[0]))
t1 = time.perf_counter()
idx.save_index(path)
t2 = time.perf_counter()
print(json.dumps({"build_s": t1 - t0, "close_s": t2 - t1}))
""",
    "chroma": """
import sys, time, numpy as np, chromadb
x = np.load(sys.argv[1], mmap_mode="r"); path = sys.argv[2]
t0 = time.perf_counter()
c = chromadb.PersistentClient(path=path)
col = c.create_collection("bench", metadata={"hnsw:space": "l2", "hnsw:M": 16, "hnsw:construction_ef": 200,
                                             "hnsw:search_ef": 64})
step = c.get_max_batch_size()
for a in range(0, x.shape[0], step):
    b = min(x.shape[0], a + step)
    col.add(ids=[f"doc-{i}" for i in range(a, b)], embeddings=np.ascontiguousarray(x[a:b]),
            metadatas=[{"i": i, "tag": f"t{i % 10}"} for i in range(a, b)])
t1 = time.perf_counter()
print(json.dumps({"build_s": t1 - t0, "close_s": 0.0}))
""",
    "lancedb": """
import sys, time, numpy as np, lancedb, pyarrow as pa
x = np.load(sys.argv[1], mmap_mode="r"); path = sys.argv[2]
t0 = time.perf_counter()
db = lancedb.connect(path)
n, d = x.shape
vec = pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(x).reshape(-1)), d)
tbl = db.create_table("bench", pa.table({"id": [f"doc-{i}" for i in range(n)], "i": np.arange(n),
                                          "tag": [f"t{i % 10}" for i in range(n)], "vector": vec}))
t1 = time.perf_counter()
print(json.dumps({"build_s": t1 - t0, "close_s": 0.0, "note": "no ANN index (exact scan)"}))
""",
    "qdrant": """
import sys, time, numpy as np
from qdrant_client import QdrantClient, models
x = np.load(sys.argv[1], mmap_mode="r"); path = sys.argv[2]
t0 = time.perf_counter()
c = QdrantClient(path=path)
c.create_collection("bench", vectors_config=models.VectorParams(size=x.shape[1], distance=models.Distance.EUCLID),
                    hnsw_config=models.HnswConfigDiff(m=16, ef_construct=200))
for a in range(0, x.shape[0], 2000):
    b = min(x.shape[0], a + 2000)
    c.upsert("bench", points=models.Batch(ids=list(range(a, b)), vectors=np.ascontiguousarray(x[a:b]).tolist(),
                                          payloads=[{"i": i, "tag": f"t{i % 10}"} for i in range(a, b)]))
c.close()
t1 = time.perf_counter()
print(json.dumps({"build_s": t1 - t0, "close_s": 0.0, "note": "local mode: exact scan"}))
""",
}

# The same build, ended by kill -9 right after flush_index() returns instead of by close(): what a crash after a
# bulk load leaves to the next open (it must link nothing again).
BUILD["vecstore_ref kill -9"] = BUILD["vecstore_ref"].replace(
    "s.close()\n", "print(json.dumps({'build_s': t2 - t0, 'close_s': 0.0}), flush=True)\n"
                   "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")

# --- children: open and query -------------------------------------------------------------------------------------

OPEN = {
    "vecstore_ref": """
import sys, time
t_import = time.perf_counter()
import numpy as np, vecstore_ref as vs
t0 = time.perf_counter()
s = vs.VecStore.open(sys.argv[1])
t1 = time.perf_counter()
Q = np.load(sys.argv[2])
first = s.query(Q[0], k=10)
t2 = time.perf_counter()
st = s.stats()
extra = {"unindexed": st.unindexed, "replayed": s.recovery_report.records_replayed}
def query(q): return s.query(q, k=10)
""",
    "hnswlib": """
import sys, time
t_import = time.perf_counter()
import numpy as np, hnswlib
t0 = time.perf_counter()
idx = hnswlib.Index(space="l2", dim=int(sys.argv[3]))
idx.load_index(sys.argv[1])
idx.set_ef(64)
idx.set_num_threads(1)
t1 = time.perf_counter()
Q = np.load(sys.argv[2])
first = idx.knn_query(Q[0], k=10)
t2 = time.perf_counter()
extra = {}
def query(q): return idx.knn_query(q, k=10)
""",
    "chroma": """
import sys, time
t_import = time.perf_counter()
import numpy as np, chromadb
t0 = time.perf_counter()
col = chromadb.PersistentClient(path=sys.argv[1]).get_collection("bench")
t1 = time.perf_counter()
Q = np.load(sys.argv[2])
first = col.query(query_embeddings=Q[:1], n_results=10)
t2 = time.perf_counter()
extra = {}
def query(q): return col.query(query_embeddings=q[None, :], n_results=10)
""",
    "lancedb": """
import sys, time
t_import = time.perf_counter()
import numpy as np, lancedb
t0 = time.perf_counter()
tbl = lancedb.connect(sys.argv[1]).open_table("bench")
t1 = time.perf_counter()
Q = np.load(sys.argv[2])
first = tbl.search(Q[0]).limit(10).to_list()
t2 = time.perf_counter()
extra = {}
def query(q): return tbl.search(q).limit(10).to_list()
""",
    "qdrant": """
import sys, time
t_import = time.perf_counter()
import numpy as np
from qdrant_client import QdrantClient
t0 = time.perf_counter()
c = QdrantClient(path=sys.argv[1])
t1 = time.perf_counter()
Q = np.load(sys.argv[2])
first = c.query_points("bench", query=Q[0].tolist(), limit=10)
t2 = time.perf_counter()
extra = {}
def query(q): return c.query_points("bench", query=q.tolist(), limit=10)
""",
}

OPEN_TAIL = _RSS + """
rss = rss_mb()
lat = []
for q in Q[1:int(sys.argv[4]) + 1]:
    a = time.perf_counter(); query(q); lat.append(time.perf_counter() - a)
lat.sort()
print(json.dumps({"import_s": t0 - t_import, "open_s": t1 - t0, "first_query_s": t2 - t1, "open_first_s": t2 - t0,
                  "steady_p50_ms": 1e3 * lat[len(lat) // 2], "rss_mb": rss, **extra}))
"""


def _int(v) -> str:
    return "" if v is None else f"{int(v):,}"


def _child(code: str, *args: str, timeout: float = 7200) -> dict:
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-c", "import json\n" + code, *args], capture_output=True, text=True,
                         cwd=REPO_ROOT, env=env, timeout=timeout)
    if out.returncode not in (0, -signal.SIGKILL):  # (a child that kills itself has printed its figures first)
        raise RuntimeError(f"child failed ({out.returncode}): {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _available(name: str) -> bool:
    module = {"vecstore_ref": "vecstore_ref", "hnswlib": "hnswlib", "chroma": "chromadb", "lancedb": "lancedb",
              "qdrant": "qdrant_client"}[name]
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def _median(runs: list[dict]) -> dict:
    out = {}
    for key in runs[0]:
        vals = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
        out[key] = statistics.median(vals) if vals else runs[0][key]
    out["open_first_range"] = (min(r["open_first_s"] for r in runs), max(r["open_first_s"] for r in runs))
    return out


# --- recall at 1M ---------------------------------------------------------------------------------------------------

RECALL = {
    "vecstore_ref": """
import sys, numpy as np, vecstore_ref as vs
s = vs.VecStore.open(sys.argv[1], read_only=True)
Q = np.load(sys.argv[2])
print(json.dumps({"ids": [[int(h.id[4:]) for h in s.query(q, k=10, ef=64)] for q in Q]}))
""",
    "hnswlib": """
import sys, numpy as np, hnswlib
idx = hnswlib.Index(space="l2", dim=int(sys.argv[3])); idx.load_index(sys.argv[1]); idx.set_ef(64)
Q = np.load(sys.argv[2])
print(json.dumps({"ids": idx.knn_query(Q, k=10)[0].tolist()}))
""",
}


def exact_top10(x: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """Exact euclidean top-10 ids, by blocks of the base set (float64 norms, float32 products)."""
    qn = (Q.astype(np.float64) ** 2).sum(1)
    best_d = np.full((Q.shape[0], 10), np.inf)
    best_i = np.zeros((Q.shape[0], 10), dtype=np.int64)
    for a in range(0, x.shape[0], 200_000):
        blk = np.ascontiguousarray(x[a:a + 200_000])
        d = qn[:, None] + (blk.astype(np.float64) ** 2).sum(1)[None, :] - 2.0 * (Q @ blk.T)
        cand_d = np.concatenate([best_d, d], axis=1)
        cand_i = np.concatenate([best_i, np.arange(a, a + blk.shape[0])[None, :].repeat(Q.shape[0], 0)], axis=1)
        order = np.argsort(cand_d, axis=1)[:, :10]
        best_d = np.take_along_axis(cand_d, order, 1)
        best_i = np.take_along_axis(cand_i, order, 1)
    return best_i


# --- latency while a checkpoint runs ----------------------------------------------------------------------------

def checkpoint_load(n: int, dim: int, seconds: float) -> dict:
    """p50/p99 of fsynced single upserts and of queries (each from its own thread), in a window without
    checkpoints and in a window where a third thread checkpoints back to back."""
    import vecstore_ref as vs

    x, q = clustered_vectors(n, dim, n_clusters=200, seed=0, n_queries=500)
    d = tempfile.mkdtemp(prefix="vs-ckload-")
    try:
        s = vs.VecStore.open(os.path.join(d, "s"), dim=dim, metric="euclidean")
        s.set_checkpoint_config(vs.CheckpointConfig(enabled=False))
        s.upsert_many([f"doc-{i}" for i in range(n)], x, [{"i": i} for i in range(n)])
        s.flush_index()
        s.snapshot()
        rng = np.random.default_rng(1)
        fresh = rng.normal(size=(100_000, dim)).astype(np.float32)

        def window(with_checkpoints: bool) -> dict:
            stop = threading.Event()
            up, qu, ckpts = [], [], [0]

            def writer():
                i = 0
                while not stop.is_set():
                    a = time.perf_counter()
                    s.upsert(f"new-{with_checkpoints}-{i}", fresh[i % len(fresh)])
                    up.append(time.perf_counter() - a)
                    i += 1

            def reader():
                i = 0
                while not stop.is_set():
                    a = time.perf_counter()
                    s.query(q[i % len(q)], k=10)
                    qu.append(time.perf_counter() - a)
                    i += 1

            def checkpointer():
                while not stop.is_set():
                    s.snapshot()
                    ckpts[0] += 1

            threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
            if with_checkpoints:
                threads.append(threading.Thread(target=checkpointer))
            for t in threads:
                t.start()
            time.sleep(seconds)
            stop.set()
            for t in threads:
                t.join()

            def pct(v, p):
                v = sorted(v)
                return 1e3 * v[min(len(v) - 1, int(p * len(v)))]

            return {"upsert_p50_ms": pct(up, 0.5), "upsert_p99_ms": pct(up, 0.99), "upserts": len(up),
                    "query_p50_ms": pct(qu, 0.5), "query_p99_ms": pct(qu, 0.99), "queries": len(qu),
                    "checkpoints": ckpts[0]}

        without = window(False)
        with_ = window(True)
        s.close()
        return {"without": without, "with": with_}
    finally:
        shutil.rmtree(d, ignore_errors=True)


# --- main -----------------------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--queries", type=int, default=200, help="steady-state queries after the first")
    ap.add_argument("--peers", default="hnswlib,chroma,lancedb",
                    help="comma list of hnswlib, chroma, lancedb, qdrant (Qdrant's local mode takes ~5 min per "
                         "20k vectors to build)")
    ap.add_argument("--recall", action="store_true", help="recall@10 at ef 64 against an exact scan")
    ap.add_argument("--checkpoint-load", action="store_true", help="latency while checkpoints run")
    ap.add_argument("--seconds", type=float, default=10.0, help="each window of --checkpoint-load")
    ap.add_argument("--kill", action="store_true",
                    help="also a store killed with kill -9 right after flush_index(), then opened the same way")
    ap.add_argument("--workdir", default=None, help="keep the stores here (default: a temporary directory)")
    args = ap.parse_args(argv)

    result: dict = {"machine": machine(), "n": args.n, "dim": args.dim}
    print(machine_line(result["machine"]))
    if args.checkpoint_load:
        res = checkpoint_load(args.n, args.dim, args.seconds)
        result["checkpoint_load"] = res
        rows = [[name, f"{w['upsert_p50_ms']:.2f}", f"{w['upsert_p99_ms']:.2f}", f"{w['query_p50_ms']:.2f}",
                 f"{w['query_p99_ms']:.2f}", w["checkpoints"]] for name, w in (("no checkpoint", res["without"]),
                                                                              ("checkpoints back to back", res["with"]))]
        print(md_table(["window", "upsert p50 ms", "upsert p99 ms", "query p50 ms", "query p99 ms",
                        "checkpoints"], rows))
        w0, w1 = res["without"], res["with"]
        print(f"ratios with/without: upsert p99 {w1['upsert_p99_ms'] / w0['upsert_p99_ms']:.2f}x, query p99 "
              f"{w1['query_p99_ms'] / w0['query_p99_ms']:.2f}x")
        write_json("restarts_checkpoint_load", result)
        return 0

    systems = ["vecstore_ref"] + (["vecstore_ref kill -9"] if args.kill else []) + [p for p in args.peers.split(",")
                                                                                  if p]
    systems = [s for s in systems if s in BUILD and _available(s.split()[0])]
    work = args.workdir or tempfile.mkdtemp(prefix="vs-restarts-")
    os.makedirs(work, exist_ok=True)
    try:
        x, Q = clustered_vectors(args.n, args.dim, n_clusters=max(100, args.n // 500), seed=0,
                                 n_queries=max(args.queries + 1, 200))
        xf, qf = os.path.join(work, "x.npy"), os.path.join(work, "q.npy")
        np.save(xf, x)
        np.save(qf, Q)
        del x
        rows, table = {}, []
        for name in systems:
            path = os.path.join(work, name.replace(" kill -9", "_killed") + (".bin" if name == "hnswlib" else ""))
            if name == "hnswlib" and os.path.exists(path):
                os.unlink(path)
            elif os.path.isdir(path):
                shutil.rmtree(path)
            build = _child(BUILD[name], xf, path)
            runs = [_child(OPEN[name.split()[0]] + OPEN_TAIL, path, qf, str(args.dim), str(args.queries))
                    for _ in range(args.runs)]
            rows[name] = {"build": build, "open": _median(runs), "runs": runs}
            o = rows[name]["open"]
            lo, hi = o["open_first_range"]
            table.append([name, f"{build['build_s']:.1f}", f"{o['open_s']:.3f}", f"{o['first_query_s']:.3f}",
                          f"**{o['open_first_s']:.3f}** ({lo:.3f}-{hi:.3f})", f"{o['steady_p50_ms']:.3f}",
                          f"{o['rss_mb']:.0f}", _int(o.get("unindexed")), _int(o.get("replayed"))])
            print(f"{name}: built in {build['build_s']:.1f} s, open + first query {o['open_first_s']:.3f} s",
                  flush=True)
        result["systems"] = rows
        if args.recall:
            truth = exact_top10(np.load(xf, mmap_mode="r"), Q[:200])
            result["recall@10_ef64"] = {}
            for name in ("vecstore_ref", "hnswlib"):
                if name in rows:
                    path = os.path.join(work, name + (".bin" if name == "hnswlib" else ""))
                    got = np.array(_child(RECALL[name], path, qf, str(args.dim))["ids"])[:200]
                    rec = float(np.mean([len(set(g) & set(t)) / 10 for g, t in zip(got, truth)]))
                    result["recall@10_ef64"][name] = rec
        print(md_table(["system", "build s", "open s", "first query s", "open + first query s (min-max)",
                        "steady p50 ms", "RSS after open MB", "unindexed", "replayed"], table))
        base = rows.get("hnswlib")
        if base:
            v = rows["vecstore_ref"]
            print(f"vecstore_ref / hnswlib: build {v['build']['build_s'] / base['build']['build_s']:.2f}x, "
                  f"RSS after open {v['open']['rss_mb'] / base['open']['rss_mb']:.2f}x")
        if "recall@10_ef64" in result:
            print("recall@10 at ef 64:", ", ".join(f"{k} {v:.4f}" for k, v in result["recall@10_ef64"].items()))
        write_json(f"restarts_{args.n}", result)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
