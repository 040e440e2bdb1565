"""First-query latency in a fresh process: import, open an existing store, answer one query.

Numba compiles the kernels on first use; with ``cache=True`` later processes load the compiled code instead. This
script measures both sides in child processes pointed at their own ``NUMBA_CACHE_DIR``: **cold** (an empty cache
directory: what the very first run on a machine pays) and **warm** (the same directory once filled: every later
run). Targets (2 cores): open + first query <= 3 s cold and <= 0.4 s warm.

It also measures the fixed cost of a bulk load into an empty HNSW store with a warm cache: in a fresh process,
loading the build kernels from the cache, then ``upsert_many`` + ``flush_index`` of ``--bulk`` vectors, against the
same load into a second store of the same process (where nothing is loaded or started any more). Target: <= 0.3 s.

    python -m benchmarks.first_query [--n 20000] [--dim 128] [--runs 3] [--bulk 2000] [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from . import machine, machine_line, md_table, write_json
from .datasets import clustered_vectors

TARGET_COLD_S = 3.0
TARGET_WARM_S = 0.4
TARGET_BULK_FIXED_S = 0.3
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import sys, time
t0 = time.perf_counter()
import numpy as np
import vecstore_ref as vs
t1 = time.perf_counter()
c1 = time.process_time()
s = vs.VecStore.open(sys.argv[1])
t2 = time.perf_counter()
q = np.load(sys.argv[2])
hits = s.query(q[0], k=10)
t3 = time.perf_counter()
c3 = time.process_time()
s.query(q[1], k=10)
t4 = time.perf_counter()
s.close()
assert len(hits) == 10, hits
print(f"{t1 - t0:.6f} {t2 - t1:.6f} {t3 - t2:.6f} {t4 - t3:.6f} {c3 - c1:.6f}")
"""

FIELDS = ("import_s", "open_s", "first_query_s", "second_query_s", "open_query_cpu_s")

BULK_CHILD = r"""
import sys, tempfile, time
import numpy as np
import vecstore_ref as vs
from vecstore_ref.jit import warmup
n, dim = int(sys.argv[1]), int(sys.argv[2])
x = np.random.default_rng(0).normal(size=(2 * n, dim)).astype(np.float32)
root = tempfile.mkdtemp()
tn = time.perf_counter()
import numba  # noqa: F401 - numba's own start-up, timed apart
t0 = time.perf_counter()
warmup(["hnsw_build", "hnsw_repair"])  # the build kernels from the cache (and Numba's first-load set-up)
t1 = time.perf_counter()
def load(path, rows):
    t = time.perf_counter()
    with vs.VecStore.open(path, dim=dim, index="hnsw", durability="none") as s:
        s.upsert_many([f"v{i}" for i in range(len(rows))], rows)
        s.flush_index()
    return time.perf_counter() - t
first = load(root + "/a", x[:n])
second = load(root + "/b", x[n:])
print(f"{t0 - tn:.6f} {t1 - t0:.6f} {first:.6f} {second:.6f}")
"""
BULK_FIELDS = ("numba_import_s", "kernel_load_s", "first_load_s", "second_load_s")


def child_run(store: str, queries: str, cache_dir: str | None) -> dict:
    """One fresh interpreter: import, open ``store``, two queries. ``cache_dir`` None keeps Numba's default."""
    env = dict(os.environ)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    out = subprocess.run([sys.executable, "-c", CHILD, store, queries], capture_output=True, text=True, env=env,
                         cwd=REPO_ROOT, timeout=900)  # cwd: ``-c`` puts it first on sys.path
    if out.returncode != 0:
        raise RuntimeError(f"child failed ({out.returncode}): {out.stderr[-2000:]}")
    return dict(zip(FIELDS, (float(v) for v in out.stdout.split())))


def bulk_run(n: int, dim: int, cache_dir: str | None) -> dict:
    env = dict(os.environ)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    out = subprocess.run([sys.executable, "-c", BULK_CHILD, str(n), str(dim)], capture_output=True, text=True,
                         env=env, cwd=REPO_ROOT, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"child failed ({out.returncode}): {out.stderr[-2000:]}")
    return dict(zip(BULK_FIELDS, (float(v) for v in out.stdout.split())))


def _median(runs: list[dict], fields=FIELDS) -> dict:
    return {f: statistics.median(r[f] for r in runs) for f in fields}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--runs", type=int, default=3, help="warm runs per index (the median is shown)")
    p.add_argument("--bulk", type=int, default=2000, help="vectors (of 64 dimensions) in the bulk-load runs")
    p.add_argument("--out", default=None, help="results directory (default benchmarks/results)")
    p.add_argument("--quick", action="store_true",
                   help="a toy-size run (smoke test): warm only, with Numba's default cache location")
    a = p.parse_args(argv)
    if a.quick:
        a.n, a.dim, a.runs, a.bulk = 300, 16, 1, 200
    import numpy as np

    import vecstore_ref as vs

    root = tempfile.mkdtemp(prefix="vs-first-")
    results = []
    try:
        x, q = clustered_vectors(a.n, a.dim, n_queries=2)
        np.save(f"{root}/queries.npy", q)
        for index in ("flat", "hnsw"):
            with vs.VecStore.open(f"{root}/{index}", dim=a.dim, index=index, durability="none") as s:
                s.upsert_many([f"v{i}" for i in range(a.n)], x)
                s.snapshot()
        for index in ("flat", "hnsw"):
            store = f"{root}/{index}"
            if a.quick:
                child_run(store, f"{root}/queries.npy", None)  # fill the default cache if it is empty
                results.append({"index": index, "cache": "warm", **child_run(store, f"{root}/queries.npy", None)})
                continue
            cache = tempfile.mkdtemp(prefix="vs-numba-")
            try:
                results.append({"index": index, "cache": "cold", **child_run(store, f"{root}/queries.npy", cache)})
                warm = [child_run(store, f"{root}/queries.npy", cache) for _ in range(a.runs)]
                results.append({"index": index, "cache": "warm", **_median(warm)})
            finally:
                shutil.rmtree(cache, ignore_errors=True)
        cache = tempfile.mkdtemp(prefix="vs-numba-")
        try:
            if not a.quick:
                bulk_run(a.bulk, 64, cache)  # fills the cache
            bulk = _median([bulk_run(a.bulk, 64, None if a.quick else cache) for _ in range(a.runs)], BULK_FIELDS)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    m = machine()
    load = f"; load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    print(f"# first query in a fresh process: {a.n:,} x {a.dim}, cosine, k = 10\n\nmachine: {machine_line(m)}{load}\n\n"
          f"cold = empty NUMBA_CACHE_DIR (kernels compile); warm = the same directory afterwards (median of "
          f"{a.runs}).\n")
    rows = []
    for r in results:
        total = r["open_s"] + r["first_query_s"]
        target = TARGET_WARM_S if r["cache"] == "warm" else TARGET_COLD_S
        rows.append([r["index"], r["cache"], f"{r['import_s']:.2f}", f"{r['open_s']:.3f}", f"{r['first_query_s']:.3f}",
                     f"{r['second_query_s'] * 1e3:.2f}", f"{total:.2f}", f"{r['open_query_cpu_s']:.2f}",
                     f"{'yes' if total <= target else 'no'} (<= {target} s)"])
    print(md_table(["index", "numba cache", "import (s)", "open (s)", "first query (s)", "second query (ms)",
                    "open + first query (s)", "its CPU time (s)", "target met"], rows))
    fixed = bulk["numba_import_s"] + bulk["kernel_load_s"] + bulk["first_load_s"] - bulk["second_load_s"]
    print(f"\nBulk load of {a.bulk:,} x 64 into an empty HNSW store, warm cache, fresh process (median of {a.runs}): "
          f"import numba {bulk['numba_import_s']:.3f} s, loading the build kernels {bulk['kernel_load_s']:.3f} s, "
          f"first load {bulk['first_load_s']:.3f} s, the same load again in that process "
          f"{bulk['second_load_s']:.3f} s: fixed cost {fixed:.3f} s, of which numba's import "
          f"{bulk['numba_import_s']:.3f} s (target <= {TARGET_BULK_FIXED_S} s: "
          f"{'met' if fixed <= TARGET_BULK_FIXED_S else 'not met'}).")
    path = write_json("first_query", {"machine": m, "settings": vars(a), "results": results, "bulk": bulk}, a.out)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
