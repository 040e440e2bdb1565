"""Benchmark scripts for vecstore_ref, and the few pieces they share: the machine, timing, thread limits, output.

Benchmarks are scripts, never timed tests: each runs as ``python -m benchmarks.<name>``, prints a markdown table
and writes ``benchmarks/results/<name>.json`` (+ a PNG where a plot helps). Every speed claim is a ratio against a
peer run side by side in the same process, next to the machine it ran on. ``benchmarks/README.md`` lists them.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"  # git-ignored
CACHE_DIR = Path(__file__).resolve().parent / ".cache"  # git-ignored: corpus text and embeddings


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _mem_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20  # kB -> GiB
    except OSError:
        pass
    return None


def _version(module: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict:
    """What the figures ran on: CPU model, cores (and those this process may use), memory, library versions."""
    import numba
    import numpy as np

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem = _mem_gib()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gib": round(mem, 1) if mem else None,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba_threads_default": numba.config.NUMBA_NUM_THREADS,
        "peers": {name: _version(dist) for name, dist in
                  (("hnswlib", "hnswlib"), ("faiss", "faiss-cpu"), ("usearch", "usearch"))},
    }


def machine_line(m: dict | None = None) -> str:
    """One line for the top of a table."""
    m = m or machine()
    peers = ", ".join(f"{k} {v}" for k, v in m["peers"].items() if v)
    mem = f", {m['memory_gib']} GiB" if m.get("memory_gib") else ""
    return (f"{m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable){mem}, {m['os']}, Python {m['python']}, "
            f"numpy {m['numpy']}, numba {m['numba']}" + (f"; peers: {peers}" if peers else ""))


class Timer:
    """``with Timer() as t: ...`` then ``t.s`` is the wall time in seconds (``perf_counter``)."""

    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.s = time.perf_counter() - self.t0


def best_of(repeats: int, fn) -> float:
    """The shortest wall time of ``repeats`` calls of ``fn()``: the least disturbed run on a shared machine."""
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


@contextlib.contextmanager
def blas_threads(n: int):
    """Limit BLAS/OpenMP pools (numpy's and faiss's) to ``n`` threads when threadpoolctl is installed.

    Without threadpoolctl this does nothing; on a 2-core machine the pools default to 2 threads anyway.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=n):
        yield


def set_numba_threads(n: int) -> None:
    import numba

    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))


def write_json(name: str, payload: dict, out_dir: str | os.PathLike | None = None) -> Path:
    """Write ``<out_dir>/<name>.json`` (default ``benchmarks/results``) and return its path."""
    out = Path(out_dir) if out_dir else RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1, default=_jsonable) + "\n", encoding="utf-8")
    return path


def _jsonable(obj):
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON-serializable: {type(obj).__name__}")


def pyplot():
    """matplotlib's pyplot on the Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def md_table(header: list[str], rows: list[list]) -> str:
    """A markdown table from a header and rows of already formatted cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
