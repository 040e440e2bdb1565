"""Numba compile time, per entry point and per kernel, each in a fresh process with an empty kernel cache.

A new user pays the compile once per machine (and again for every new venv, Python or numba version, and every CI
run). This script measures what that first run costs and what the kernel cache saves afterwards:

- **per entry point**: one fresh interpreter per public call (the first ``flush_index`` of a bulk load, the first
  HNSW query, filtered query, ``query_batch``, the flat index's query and batches, ``vecstore-ref demo``), each
  pointed at an *empty* ``NUMBA_CACHE_DIR`` (**cold**), then again at the same directory once filled (**warm**);
- **per kernel**: Numba's compile events (``numba.core.event``, ``numba:compile``) in the cold runs, with the time
  each kernel took including and excluding the kernels compiled inside it;
- ``import vecstore_ref`` on its own.

The stores a query entry opens are built beforehand with a cache of their own, so a query entry compiles the search
kernels only.

    python -m benchmarks.compile_times [--n 2000] [--dim 64] [--entries build,hnsw_query,...] [--runs 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from . import machine, machine_line, md_table, write_json

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAT_ROWS = 5000  # the flat store: enough rows (>= 4096) for the BLAS path of a big batch
SMALL_BATCH = 16  # below the flat index's BLAS threshold (32 queries)
BIG_BATCH = 100

ENTRIES = {
    "import": "import vecstore_ref",
    "build": "open an empty HNSW store, upsert_many(n), flush_index()",
    "hnsw_query": "open the HNSW store, query(k=10)",
    "hnsw_filtered": "open the HNSW store, query(k=10, filter=\"lang = 'en'\")",
    "hnsw_batch": f"open the HNSW store, query_batch({BIG_BATCH} queries)",
    "flat_query": "open the flat store, query(k=10)",
    "flat_batch": f"open the flat store, query_batch({SMALL_BATCH} queries)",
    "flat_batch_blas": f"open the flat store, query_batch({BIG_BATCH} queries) (BLAS shortlist)",
    "sequence": "one process: build, query, filtered query, query_batch (the first-run story)",
    "demo": "vecstore-ref demo in an empty directory",
}


# --- the child: one entry point in this process -------------------------------------------------------------

class _CompileRecorder:
    """Collects ``numba:compile`` events: per kernel, the time with and without the kernels compiled inside it."""

    def __init__(self):
        import numba  # noqa: F401 - the package first (the linker thread may be importing it)
        from numba.core import event

        class Listener(event.Listener):
            def on_start(inner, ev):  # noqa: N805 - the recorder is the outer self
                self._stack.append([time.perf_counter(), time.process_time(), 0.0, 0.0])

            def on_end(inner, ev):  # noqa: N805
                t0, c0, nested, nested_cpu = self._stack.pop()
                total = time.perf_counter() - t0
                cpu = time.process_time() - c0
                if self._stack:
                    self._stack[-1][2] += total
                    self._stack[-1][3] += cpu
                disp = ev.data["dispatcher"]
                name = f"{disp.py_func.__module__.rsplit('.', 1)[-1]}.{disp.py_func.__qualname__}"
                self.kernels.append({"kernel": name, "inclusive_s": total, "self_s": total - nested,
                                     "inclusive_cpu_s": cpu, "self_cpu_s": cpu - nested_cpu,
                                     "top_level": not self._stack, "args": str(ev.data["args"])})

        self._stack: list[list[float]] = []
        self.kernels: list[dict] = []
        self._listener = Listener()
        event.register("numba:compile", self._listener)


def _child(entry: str, stores: str) -> dict:
    t0 = time.perf_counter()
    import vecstore_ref as vs

    import_s = time.perf_counter() - t0
    if entry == "import":
        return {"import_s": import_s, "steps": {}, "kernels": []}
    import numpy as np

    rec = _CompileRecorder()
    steps: dict[str, float] = {}

    def step(name, fn):
        t = time.perf_counter()
        out = fn()
        steps[name] = time.perf_counter() - t
        return out

    q = np.load(os.path.join(stores, "queries.npy"))
    if entry in ("build", "sequence"):
        x = np.load(os.path.join(stores, "base.npy"))
        work = tempfile.mkdtemp(prefix="vs-compile-build-")
        store = step("open", lambda: vs.VecStore.open(os.path.join(work, "s"), dim=x.shape[1], index="hnsw",
                                                      durability="none"))
        step("upsert_many", lambda: store.upsert_many([f"v{i}" for i in range(len(x))], x,
                                                      [{"lang": ("en", "de", "fr", "ja")[i % 4]}
                                                       for i in range(len(x))]))
        step("flush_index", store.flush_index)
        if entry == "sequence":
            step("first query", lambda: store.query(q[0], k=10))
            step("first filtered query", lambda: store.query(q[1], k=10, filter="lang = 'en'"))
            step("first query_batch", lambda: store.query_batch(q[:BIG_BATCH], k=10))
        store.close()
        shutil.rmtree(work, ignore_errors=True)
    else:
        index = "flat" if entry.startswith("flat") else "hnsw"
        store = step("open", lambda: vs.VecStore.open(os.path.join(stores, index)))
        if entry in ("hnsw_query", "flat_query"):
            step("first query", lambda: store.query(q[0], k=10))
        elif entry == "hnsw_filtered":
            step("first filtered query", lambda: store.query(q[0], k=10, filter="lang = 'en'"))
        elif entry == "hnsw_batch":
            step("first query_batch", lambda: store.query_batch(q[:BIG_BATCH], k=10))
        elif entry == "flat_batch":
            step("first query_batch", lambda: store.query_batch(q[:SMALL_BATCH], k=10))
        elif entry == "flat_batch_blas":
            step("first query_batch", lambda: store.query_batch(q[:BIG_BATCH], k=10))
        else:
            raise SystemExit(f"unknown entry {entry!r}")
        store.close()
    return {"import_s": import_s, "steps": steps, "kernels": rec.kernels}


# --- the parent ---------------------------------------------------------------------------------------------

def _env(cache_dir: str) -> dict:
    env = dict(os.environ)
    env["NUMBA_CACHE_DIR"] = cache_dir
    env.pop("NUMBA_DISABLE_JIT", None)
    return env


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_entry(entry: str, stores: str, cache_dir: str) -> dict:
    """One fresh interpreter running ``entry`` against ``cache_dir``; returns its figures, its wall time and its
    CPU time (user + system: what a busy machine inflates least)."""
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    if entry == "demo":
        data = tempfile.mkdtemp(prefix="vs-compile-demo-")
        try:
            out = subprocess.run([sys.executable, "-m", "vecstore_ref", "demo", "--data", data], capture_output=True,
                                 text=True, env=_env(cache_dir), cwd=REPO_ROOT, timeout=1800)
        finally:
            shutil.rmtree(data, ignore_errors=True)
        res = {"import_s": None, "steps": {}, "kernels": []}
    else:
        out = subprocess.run([sys.executable, "-m", "benchmarks.compile_times", "--child", entry, stores],
                             capture_output=True, text=True, env=_env(cache_dir), cwd=REPO_ROOT, timeout=1800)
        res = None
    wall = time.perf_counter() - t0
    cpu = _children_cpu() - cpu0
    if out.returncode != 0:
        raise RuntimeError(f"{entry}: child failed ({out.returncode}): {out.stderr[-3000:]}")
    if res is None:
        res = json.loads(out.stdout.strip().splitlines()[-1])
    res["wall_s"] = wall
    res["cpu_s"] = cpu
    return res


def build_stores(root: str, n: int, dim: int) -> None:
    """The HNSW store (n x dim) and the flat store the query entries open, built with a cache of their own."""
    code = f"""
import numpy as np, vecstore_ref as vs
from benchmarks.datasets import clustered_vectors
x, q = clustered_vectors({max(n, FLAT_ROWS)}, {dim}, n_queries={BIG_BATCH})
np.save({root!r} + "/base.npy", x[:{n}])
np.save({root!r} + "/queries.npy", q)
md = [{{"lang": ("en", "de", "fr", "ja")[i % 4]}} for i in range(len(x))]
for index, rows in (("hnsw", {n}), ("flat", {max(n, FLAT_ROWS)})):
    with vs.VecStore.open({root!r} + "/" + index, dim={dim}, index=index, durability="none") as s:
        s.upsert_many([f"v{{i}}" for i in range(rows)], x[:rows], md[:rows])
        s.flush_index()
        s.snapshot()
"""
    cache = tempfile.mkdtemp(prefix="vs-numba-prep-")
    try:
        subprocess.run([sys.executable, "-c", code], check=True, env=_env(cache), cwd=REPO_ROOT, timeout=1800)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def kernel_table(runs: list[dict]) -> list[list[str]]:
    """One row per kernel compiled in any cold run: the largest time seen (kernels shared by entries compile in
    each of them)."""
    best: dict[str, dict] = {}
    for r in runs:
        per_entry: dict[str, list] = {}
        for k in r["kernels"]:
            per_entry.setdefault(k["kernel"], []).append(k)
        for name, ks in per_entry.items():
            cur = best.setdefault(name, {"self_cpu_s": 0.0, "inclusive_cpu_s": 0.0, "copies": 0, "entries": set()})
            cur["self_cpu_s"] = max(cur["self_cpu_s"], sum(k["self_cpu_s"] for k in ks))
            cur["inclusive_cpu_s"] = max(cur["inclusive_cpu_s"], max(k["inclusive_cpu_s"] for k in ks))
            cur["copies"] = max(cur["copies"], len(ks))
            cur["entries"].add(r["entry"])
    rows = sorted(best.items(), key=lambda kv: -kv[1]["self_cpu_s"])
    return [[name, f"{v['self_cpu_s']:.2f}", f"{v['inclusive_cpu_s']:.2f}", str(v["copies"]),
             ", ".join(sorted(v["entries"]))] for name, v in rows]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="vectors in the HNSW store and the bulk load")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--entries", default=",".join(ENTRIES), help="comma list of: " + ", ".join(ENTRIES))
    p.add_argument("--runs", type=int, default=1, help="cold runs per entry (each with a new empty cache; the "
                                                        "median is shown)")
    p.add_argument("--out", default=None, help="results directory (default benchmarks/results)")
    p.add_argument("--quick", action="store_true", help="a toy-size run (smoke test): two entries, tiny data")
    p.add_argument("--child", nargs=2, metavar=("ENTRY", "STORES"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(_child(*a.child)))
        return 0
    if a.quick:
        a.n, a.dim, a.entries = 300, 8, "import,flat_query"
    entries = [e.strip() for e in a.entries.split(",") if e.strip()]
    unknown = sorted(set(entries) - set(ENTRIES))
    if unknown:
        p.error(f"unknown entries: {unknown}")
    root = tempfile.mkdtemp(prefix="vs-compile-")
    results = []
    try:
        build_stores(root, a.n, a.dim)
        for entry in entries:
            cold, warm = [], []
            for _ in range(max(1, a.runs)):
                cache = tempfile.mkdtemp(prefix="vs-numba-")
                try:
                    cold.append(run_entry(entry, root, cache))
                    warm.append(run_entry(entry, root, cache))
                finally:
                    shutil.rmtree(cache, ignore_errors=True)
            results.append({"entry": entry, "cold": cold, "warm": warm,
                            "kernels": cold[len(cold) // 2]["kernels"]})
            print(f"  {entry}: cold {statistics.median(r['wall_s'] for r in cold):.2f} s, "
                  f"warm {statistics.median(r['wall_s'] for r in warm):.2f} s", file=sys.stderr)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    m = machine()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"# Numba compile time: {a.n:,} x {a.dim} (HNSW), {max(a.n, FLAT_ROWS):,} x {a.dim} (flat), cosine\n\n"
          f"machine: {machine_line(m)}" + (f"; load average {load[0]:.2f}" if load else "") + "\n\n"
          "Each figure is a fresh process. cold = an empty NUMBA_CACHE_DIR (the kernels compile), warm = the same "
          "directory afterwards (they load). Process = the whole interpreter's wall time, CPU = its user + system "
          "time (the fairer figure on a busy machine); the steps are timed inside it.\n")

    def med(rs, f):
        vals = [f(r) for r in rs]
        vals = [v for v in vals if v is not None]
        return statistics.median(vals) if vals else None

    rows = []
    for r in results:
        step_names = list(r["cold"][0]["steps"])
        detail = "; ".join(f"{s} {med(r['cold'], lambda x, s=s: x['steps'][s]):.2f} / "
                           f"{med(r['warm'], lambda x, s=s: x['steps'][s]):.2f}" for s in step_names)
        compiled = sum(k["inclusive_cpu_s"] for k in r["kernels"] if k["top_level"])
        imp_c = med(r["cold"], lambda x: x["import_s"])
        rows.append([r["entry"], f"{med(r['cold'], lambda x: x['wall_s']):.2f}",
                     f"{med(r['warm'], lambda x: x['wall_s']):.2f}", f"{med(r['cold'], lambda x: x['cpu_s']):.2f}",
                     f"{med(r['warm'], lambda x: x['cpu_s']):.2f}", f"{compiled:.2f}",
                     str(len(r["kernels"])), "" if imp_c is None else f"{imp_c:.3f}", detail])
    print(md_table(["entry point", "cold process (s)", "warm process (s)", "cold CPU (s)", "warm CPU (s)",
                    "compiling, CPU (s)", "kernels compiled",
                    "import (s)", "steps cold / warm (s)"], rows))
    print("\nPer kernel (cold runs, CPU time; self = excluding the kernels compiled inside it; copies = compiled "
          "specializations in one process; the largest figure over the entry points):\n")
    print(md_table(["kernel", "self CPU (s)", "with callees (s)", "copies", "compiled by"], kernel_table(
        [{"entry": r["entry"], "kernels": r["kernels"]} for r in results])))
    path = write_json("compile_times", {"machine": m, "load_average": load, "settings": vars(a),
                                        "results": results}, a.out)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
