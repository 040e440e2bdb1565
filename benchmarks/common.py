"""Shared pieces of the benchmark scripts: the machine description, seeded data, timing."""

from __future__ import annotations

import os
import platform
import time

import numpy as np


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import numba

    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}, "
            f"numba {numba.__version__}")


def clustered(n: int, dim: int, n_clusters: int = 100, seed: int = 0, spread: float = 0.5):
    """``n`` float32 vectors around ``n_clusters`` gaussian centres (seeded) plus the centres themselves."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, n_clusters, n)] + spread * rng.normal(size=(n, dim)).astype(np.float32)
    return x.astype(np.float32), centres


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.s = time.perf_counter() - self.t0
