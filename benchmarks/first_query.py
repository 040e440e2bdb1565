"""First-query latency in a fresh process: import, open an existing store, answer one query.

Numba compiles the kernels on first use; with ``cache=True`` later processes load the compiled code instead. This
script measures both sides in child processes pointed at their own ``NUMBA_CACHE_DIR``: **cold** (an empty cache
directory: what the very first run on a machine pays) and **warm** (the same directory once filled: every later
run). The target is open + first query under 1 s with a warm cache.

    python -m benchmarks.first_query [--n 20000] [--dim 128] [--runs 3] [--quick]
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

TARGET_S = 1.0
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import sys, time
t0 = time.perf_counter()
import numpy as np
import vecstore_ref as vs
t1 = time.perf_counter()
s = vs.VecStore.open(sys.argv[1])
t2 = time.perf_counter()
q = np.load(sys.argv[2])
hits = s.query(q[0], k=10)
t3 = time.perf_counter()
s.query(q[1], k=10)
t4 = time.perf_counter()
s.close()
assert len(hits) == 10, hits
print(f"{t1 - t0:.6f} {t2 - t1:.6f} {t3 - t2:.6f} {t4 - t3:.6f}")
"""

FIELDS = ("import_s", "open_s", "first_query_s", "second_query_s")


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


def _median(runs: list[dict]) -> dict:
    return {f: statistics.median(r[f] for r in runs) for f in FIELDS}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--runs", type=int, default=3, help="warm runs per index (the median is shown)")
    p.add_argument("--out", default=None, help="results directory (default benchmarks/results)")
    p.add_argument("--quick", action="store_true",
                   help="a toy-size run (smoke test): warm only, with Numba's default cache location")
    a = p.parse_args(argv)
    if a.quick:
        a.n, a.dim, a.runs = 300, 16, 1
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
    finally:
        shutil.rmtree(root, ignore_errors=True)
    m = machine()
    print(f"# first query in a fresh process: {a.n:,} x {a.dim}, cosine, k = 10\n\nmachine: {machine_line(m)}\n\n"
          f"cold = empty NUMBA_CACHE_DIR (kernels compile); warm = the same directory afterwards (median of "
          f"{a.runs}).\n")
    rows = [[r["index"], r["cache"], f"{r['import_s']:.2f}", f"{r['open_s']:.3f}", f"{r['first_query_s']:.3f}",
             f"{r['second_query_s'] * 1e3:.2f}", f"{r['open_s'] + r['first_query_s']:.2f}",
             ("yes" if r["open_s"] + r["first_query_s"] < TARGET_S else "no") if r["cache"] == "warm" else ""]
            for r in results]
    print(md_table(["index", "numba cache", "import (s)", "open (s)", "first query (s)", "second query (ms)",
                    "open + first query (s)", f"< {TARGET_S:.0f} s"], rows))
    path = write_json("first_query", {"machine": m, "settings": vars(a), "results": results}, a.out)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
