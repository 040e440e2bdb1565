"""First-query latency in a fresh process: open an existing store and answer one query.

Numba's compile time is a user-facing cost. With a warm cache (``cache=True`` files next to the modules) the kernels
load instead of compiling; a cold cache (an empty ``NUMBA_CACHE_DIR``) shows what the very first run on a machine
pays.

    python -m benchmarks.first_query [--n 20000] [--dim 128]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

from .common import clustered, machine

CHILD = r"""
import sys, time
t0 = time.perf_counter()
import numpy as np
import vecstore_ref as vs
t1 = time.perf_counter()
s = vs.VecStore.open(sys.argv[1], index=sys.argv[2], read_only=True)
t2 = time.perf_counter()
s.query(np.ones(int(sys.argv[3]), dtype=np.float32), k=10)
t3 = time.perf_counter()
s.query(np.ones(int(sys.argv[3]), dtype=np.float32) * 2, k=10)
t4 = time.perf_counter()
print(f"{t1 - t0:.3f} {t2 - t1:.3f} {t3 - t2:.3f} {t4 - t3:.4f}")
"""


def measure(path: str, index: str, dim: int, cache_dir: str | None) -> list[float]:
    env = dict(os.environ)
    if cache_dir:
        env["NUMBA_CACHE_DIR"] = cache_dir
    out = subprocess.run([sys.executable, "-c", CHILD, path, index, str(dim)], capture_output=True, text=True,
                         env=env, timeout=600, check=True)
    return [float(x) for x in out.stdout.split()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args(argv)
    n, dim = (500, 16) if a.quick else (a.n, a.dim)
    import vecstore_ref as vs

    root = tempfile.mkdtemp(prefix="vs-first-")
    try:
        x, _ = clustered(n, dim)
        for index in ("flat", "hnsw"):
            with vs.VecStore.open(f"{root}/{index}", dim=dim, index=index, durability="none") as s:
                s.upsert_many([f"v{i}" for i in range(n)], x)
                s.snapshot()
        print(f"# first query in a fresh process, {n} x {dim}\n\nmachine: {machine()}\n")
        print("| index | numba cache | import (s) | open (s) | first query (s) | second query (s) |")
        print("|---|---|---|---|---|---|")
        for index in ("flat", "hnsw"):
            cold = tempfile.mkdtemp(prefix="vs-numba-")
            try:
                rows = [("cold", measure(f"{root}/{index}", index, dim, cold)),
                        ("warm", measure(f"{root}/{index}", index, dim, cold))]
            finally:
                shutil.rmtree(cold, ignore_errors=True)
            for label, (imp, opn, q1, q2) in rows:
                print(f"| {index} | {label} | {imp:.2f} | {opn:.2f} | {q1:.2f} | {q2:.4f} |")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
