"""One adapter per library, so every benchmark drives vecstore_ref and its peers through the same five calls.

Each adapter answers in row numbers of the base matrix (int64, -1 where fewer than k were found) and controls its
own library's threads: builds and batches get the thread count they are given, single queries get one thread.
BLAS pools (numpy's, faiss's) are limited by the caller around a whole timed pass (:func:`benchmarks.blas_threads`),
never per call: entering a threadpoolctl limit costs about a millisecond.

=====================  =====================================================================================
adapter                parameters (the same graph size and build effort for every HNSW)
=====================  =====================================================================================
``vecstore_ref store``  ``VecStore`` (HNSW, ``m=16, ef_construction=200``), the way users call it: ``upsert_many`` +
                       ``flush_index()`` to build, ``query`` one at a time, ``query_batch``
``vecstore_ref hnsw``  the raw ``HNSWIndex`` under the store, ``HNSWParams(m=16, ef_construction=200)``;
                       threads through ``numba.set_num_threads``
``hnswlib``            ``M=16, ef_construction=200``; ``num_threads``
``faiss hnsw``         ``IndexHNSWFlat(d, 16)``, ``efConstruction=200``; ``faiss.omp_set_num_threads``
``usearch``            ``connectivity=16, expansion_add=200``, f32; ``threads=`` per call
``vecstore_ref flat``  ``FlatIndex``; numba threads and BLAS threads
``faiss flat``         ``IndexFlatIP`` (``IndexFlatL2`` for euclidean)
``numpy``              ``Q @ X.T`` + ``argpartition`` + sort of the k
=====================  =====================================================================================

Cosine peers that lack it natively (faiss) get unit-normalized vectors and inner product, which ranks the same;
their queries are normalized once before timing (:meth:`Peer.prepare`), which only favours the peer.
Memory is "raw vectors + links": vecstore_ref's table rows plus :meth:`HNSWIndex.memory_bytes` (for the store,
also everything it keeps per record: ids and their hash table, slot states, expiry times, metadata rows); for the
peers, the size of the serialized index (hnswlib ``index_file_size``, faiss ``serialize_index``, usearch
``serialized_length``), which holds exactly the vectors, links and per-node bookkeeping.

Peers are optional (``pip install -e ".[bench]"``); :func:`make` raises ImportError for one that is missing.
"""

from __future__ import annotations

import os
import tempfile
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from . import set_numba_threads

M = 16
EF_CONSTRUCTION = 200
GRAPH_PEERS = ("vecstore_ref store", "vecstore_ref hnsw", "hnswlib", "faiss hnsw", "usearch")
EXACT_PEERS = ("vecstore_ref flat", "faiss flat", "numpy")


def _unit(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)


class Peer(ABC):
    """The interface: ``build`` once, then ``set_ef`` / ``search_one`` / ``search_batch``; ``memory_bytes``."""

    name = "?"
    exact = False

    def __init__(self, metric: str):
        self.metric = metric

    def warmup(self, dim: int) -> None:
        """Compile or load anything lazily compiled, so builds and searches time only the work."""
        return None  # nothing to do unless an adapter says otherwise

    @abstractmethod
    def build(self, x: np.ndarray, threads: int) -> None:
        """Implemented by every adapter."""

    def prepare(self, Q: np.ndarray) -> np.ndarray:
        """Queries in the form the library wants (done once, outside timing); the default keeps them as they are."""
        return Q

    def set_ef(self, ef: int) -> None:
        """Search width; exact peers ignore it."""
        return None  # nothing to do unless an adapter says otherwise

    def single_thread(self) -> None:
        """Put the library in one-thread mode for a loop of :meth:`search_one` calls."""
        return None  # nothing to do unless an adapter says otherwise

    # The timed loops call `ask_one` / `ask_batch`: the library's own call and nothing else, whatever it returns.
    # `rows_of_one` / `rows_of_batch` turn those answers into int64 row numbers for the recall, after the clock has
    # stopped (a store's string ids, hnswlib's uint64 labels, usearch's padded keys), so no library is charged for
    # the benchmark's own bookkeeping. An adapter whose call already returns row numbers only needs `search_*`.

    def ask_one(self, q: np.ndarray, k: int) -> Any:
        return self.search_one(q, k)

    def rows_of_one(self, answer: Any) -> np.ndarray:
        return answer

    def ask_batch(self, Q: np.ndarray, k: int, threads: int) -> Any:
        return self.search_batch(Q, k, threads)

    def rows_of_batch(self, answer: Any) -> np.ndarray:
        return answer

    def search_one(self, q: np.ndarray, k: int) -> np.ndarray:
        """Row numbers (int64) of the top ``k`` for one query."""
        return self.rows_of_one(self.ask_one(q, k))

    def search_batch(self, Q: np.ndarray, k: int, threads: int) -> np.ndarray:
        """Row numbers (int64, (nq, k)) of the top ``k`` for every query, on ``threads`` threads."""
        return self.rows_of_batch(self.ask_batch(Q, k, threads))

    @abstractmethod
    def memory_bytes(self) -> int:
        """Implemented by every adapter."""


# --- vecstore_ref ------------------------------------------------------------------------------------------------

def _table(x: np.ndarray, metric: str):
    from vecstore_ref.index.base import VectorTable

    t = VectorTable(x.shape[1], metric, x.shape[0])
    t.write(t.allocate(x.shape[0]), x)
    return t


class VecstoreHNSW(Peer):
    name = "vecstore_ref hnsw"

    def __init__(self, metric: str, m: int = M, ef_construction: int = EF_CONSTRUCTION):
        super().__init__(metric)
        from vecstore_ref.config import HNSWParams

        self.params = HNSWParams(m=m, ef_construction=ef_construction, ef_search=64, seed=0)
        self.ef = 64

    def warmup(self, dim: int) -> None:
        from vecstore_ref.index.hnsw import HNSWIndex

        rng = np.random.default_rng(7)
        x = rng.standard_normal((600, dim), dtype=np.float32)
        t = _table(x, self.metric)
        h = HNSWIndex(t, self.params)
        h.add(np.arange(600, dtype=np.int32))
        allowed = np.ones(t.capacity, dtype=bool)
        h.search(x[0], 10, allowed, 16)
        h.search_batch(x[:4], 10, allowed, 16)

    def build(self, x: np.ndarray, threads: int) -> None:
        from vecstore_ref.index.hnsw import HNSWIndex

        set_numba_threads(threads)
        self.n = x.shape[0]
        self.table = _table(x, self.metric)
        self.index = HNSWIndex(self.table, self.params)
        self.allowed = np.ones(self.table.capacity, dtype=bool)
        self.index.add(np.arange(self.n, dtype=np.int32))

    def set_ef(self, ef: int) -> None:
        self.ef = ef

    def single_thread(self) -> None:
        set_numba_threads(1)

    def search_one(self, q: np.ndarray, k: int) -> np.ndarray:
        return self.index.search(q, k, self.allowed, self.ef)[0]

    def search_batch(self, Q: np.ndarray, k: int, threads: int) -> np.ndarray:
        set_numba_threads(threads)
        return self.index.search_batch(Q, k, self.allowed, self.ef)[0]

    def memory_bytes(self) -> int:
        t = self.table
        return int(t.vectors[: self.n].nbytes + t.inv_norms[: self.n].nbytes + self.index.memory_bytes())


class VecstoreStore(Peer):
    """The store API a user calls; ids are the row numbers as strings."""

    name = "vecstore_ref store"

    def __init__(self, metric: str, m: int = M, ef_construction: int = EF_CONSTRUCTION):
        super().__init__(metric)
        import vecstore_ref as vs

        self._vs = vs
        self.params = vs.HNSWParams(m=m, ef_construction=ef_construction, ef_search=64, seed=0)
        self.ef = 64
        self._dir = tempfile.mkdtemp(prefix="vs-bench-store-")
        self.store = None

    def _open(self, name: str, dim: int):
        return self._vs.VecStore.open(os.path.join(self._dir, name), dim=dim, metric=self.metric, hnsw=self.params)

    def warmup(self, dim: int) -> None:
        rng = np.random.default_rng(7)
        x = rng.standard_normal((600, dim), dtype=np.float32)
        with self._open("warmup", dim) as s:
            s.upsert_many([str(i) for i in range(600)], x)
            s.flush_index()
            s.query(x[0], k=10, ef=16)
            s.query_batch(x[:4], k=10, ef=16)

    def build(self, x: np.ndarray, threads: int) -> None:
        set_numba_threads(threads)
        if self.store is not None:
            self.store.close()
        self.store = self._open("bench", x.shape[1])
        self.store.upsert_many([str(i) for i in range(x.shape[0])], x)
        self.store.flush_index()
        self.n = x.shape[0]

    def set_ef(self, ef: int) -> None:
        self.ef = ef

    def single_thread(self) -> None:
        set_numba_threads(1)

    def ask_one(self, q: np.ndarray, k: int) -> Any:
        return self.store.query(q, k=k, ef=self.ef)

    def rows_of_one(self, answer: Any) -> np.ndarray:
        return np.array([int(h.id) for h in answer], dtype=np.int64)

    def ask_batch(self, Q: np.ndarray, k: int, threads: int) -> Any:
        set_numba_threads(threads)
        return self.store.query_batch(Q, k=k, ef=self.ef)

    def rows_of_batch(self, answer: Any) -> np.ndarray:
        ids = answer.ids
        if (answer.n_found < ids.shape[1]).any():
            ids = np.where(np.equal(ids, None), "-1", ids)
        return ids.astype(np.int64)

    def memory_bytes(self) -> int:
        st = self.store._state
        n = st.n_slots
        idm = st.id_map
        table = idm._table.nbytes if idm._table is not None else 0
        per_slot = (st.state[:n].nbytes + st.live[:n].nbytes + st.expires[:n].nbytes + idm._ends[: n + 1].nbytes
                    + st.columns._start[:n].nbytes + st.columns._length[:n].nbytes + st.columns._row_state[:n].nbytes)
        g = st.index
        graph = (g.levels[:n].nbytes + g.links0[:n].nbytes + g.up_offset[:n].nbytes + g.deleted[:n].nbytes
                 + g.links_up[: g.n_up_rows].nbytes)
        return int(st.table.vectors[:n].nbytes + st.table.inv_norms[:n].nbytes + graph + idm._bytes.size + table
                   + per_slot)


class VecstoreFlat(Peer):
    name = "vecstore_ref flat"
    exact = True

    def warmup(self, dim: int) -> None:
        from vecstore_ref.index.flat import FlatIndex

        x = np.random.default_rng(7).standard_normal((600, dim), dtype=np.float32)
        f = FlatIndex(_table(x, self.metric))
        allowed = np.ones(f.table.capacity, dtype=bool)
        f.search(x[0], 10, allowed)
        f.search_batch(x[:4], 10, allowed)
        f.search_batch(x[:300], 10, allowed)  # big batches take the BLAS shortlist path

    def build(self, x: np.ndarray, threads: int) -> None:
        from vecstore_ref.index.flat import FlatIndex

        self.n = x.shape[0]
        self.table = _table(x, self.metric)
        self.index = FlatIndex(self.table)
        self.allowed = np.ones(self.table.capacity, dtype=bool)

    def single_thread(self) -> None:
        set_numba_threads(1)

    def search_one(self, q: np.ndarray, k: int) -> np.ndarray:
        return self.index.search(q, k, self.allowed)[0]

    def search_batch(self, Q: np.ndarray, k: int, threads: int) -> np.ndarray:
        set_numba_threads(threads)
        return self.index.search_batch(Q, k, self.allowed)[0]

    def memory_bytes(self) -> int:
        return int(self.table.vectors[: self.n].nbytes + self.table.inv_norms[: self.n].nbytes)


# --- peers -------------------------------------------------------------------------------------------------------

class Hnswlib(Peer):
    name = "hnswlib"

    def __init__(self, metric: str):
        super().__init__(metric)
        import hnswlib

        self._lib = hnswlib
        self.space = {"cosine": "cosine", "dot": "ip", "euclidean": "l2"}[metric]

    def build(self, x: np.ndarray, threads: int) -> None:
        self.index = self._lib.Index(space=self.space, dim=x.shape[1])
        self.index.init_index(max_elements=x.shape[0], M=M, ef_construction=EF_CONSTRUCTION, random_seed=0)
        self.index.set_num_threads(threads)
        self.index.add_items(x, np.arange(x.shape[0]))

    def set_ef(self, ef: int) -> None:
        self.index.set_ef(ef)

    def single_thread(self) -> None:
        self.index.set_num_threads(1)

    def ask_one(self, q: np.ndarray, k: int) -> Any:
        return self.index.knn_query(q, k=k)

    def rows_of_one(self, answer: Any) -> np.ndarray:
        return answer[0][0].astype(np.int64)

    def ask_batch(self, Q: np.ndarray, k: int, threads: int) -> Any:
        self.index.set_num_threads(threads)
        return self.index.knn_query(Q, k=k)

    def rows_of_batch(self, answer: Any) -> np.ndarray:
        return answer[0].astype(np.int64)

    def memory_bytes(self) -> int:
        try:
            return int(self.index.index_file_size())
        except AttributeError:  # older hnswlib: save and measure
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, "index.bin")
                self.index.save_index(path)
                return os.path.getsize(path)


class _Faiss(Peer):
    def __init__(self, metric: str):
        super().__init__(metric)
        import faiss

        self._lib = faiss
        self.mt = faiss.METRIC_L2 if metric == "euclidean" else faiss.METRIC_INNER_PRODUCT

    def _prep(self, x: np.ndarray) -> np.ndarray:
        return _unit(x) if self.metric == "cosine" else np.ascontiguousarray(x, dtype=np.float32)

    def single_thread(self) -> None:
        self._lib.omp_set_num_threads(1)

    def prepare(self, Q: np.ndarray) -> np.ndarray:
        return self._prep(Q)  # unit-normalized for cosine, outside timing: the most favourable setup for faiss

    def ask_one(self, q: np.ndarray, k: int) -> Any:
        return self.index.search(q[None, :], k)

    def rows_of_one(self, answer: Any) -> np.ndarray:
        return answer[1][0]

    def ask_batch(self, Q: np.ndarray, k: int, threads: int) -> Any:
        self._lib.omp_set_num_threads(threads)
        return self.index.search(Q, k)

    def rows_of_batch(self, answer: Any) -> np.ndarray:
        return answer[1]

    def memory_bytes(self) -> int:
        return int(len(self._lib.serialize_index(self.index)))


class FaissHNSW(_Faiss):
    name = "faiss hnsw"

    def build(self, x: np.ndarray, threads: int) -> None:
        self._lib.omp_set_num_threads(threads)
        self.index = self._lib.IndexHNSWFlat(x.shape[1], M, self.mt)
        self.index.hnsw.efConstruction = EF_CONSTRUCTION
        self.index.add(self._prep(x))

    def set_ef(self, ef: int) -> None:
        self.index.hnsw.efSearch = ef


class FaissFlat(_Faiss):
    name = "faiss flat"
    exact = True

    def build(self, x: np.ndarray, threads: int) -> None:
        d = x.shape[1]
        self.index = self._lib.IndexFlatL2(d) if self.metric == "euclidean" else self._lib.IndexFlatIP(d)
        self.index.add(self._prep(x))


class Usearch(Peer):
    name = "usearch"

    def __init__(self, metric: str):
        super().__init__(metric)
        from usearch.index import Index

        self._cls = Index
        self.m = {"cosine": "cos", "dot": "ip", "euclidean": "l2sq"}[metric]

    def build(self, x: np.ndarray, threads: int) -> None:
        self.n = x.shape[0]
        self.index = self._cls(ndim=x.shape[1], metric=self.m, dtype="f32", connectivity=M,
                               expansion_add=EF_CONSTRUCTION)
        self.index.add(np.arange(self.n), x, threads=threads)

    def set_ef(self, ef: int) -> None:
        self.index.expansion_search = ef

    def _rows(self, keys: np.ndarray) -> np.ndarray:
        out = keys.astype(np.int64)
        out[(keys >= self.n)] = -1  # usearch pads missing results with a sentinel key
        return out

    def ask_one(self, q: np.ndarray, k: int) -> Any:
        return self.index.search(q, k, threads=1)

    def rows_of_one(self, answer: Any) -> np.ndarray:
        return self._rows(answer.keys)

    def ask_batch(self, Q: np.ndarray, k: int, threads: int) -> Any:
        return self.index.search(Q, k, threads=threads)

    def rows_of_batch(self, answer: Any) -> np.ndarray:
        return self._rows(answer.keys)

    def memory_bytes(self) -> int:
        return int(self.index.serialized_length)


class NumpyFlat(Peer):
    name = "numpy"
    exact = True
    CHUNK = 256  # queries per matmul: bounds the (chunk, n) score matrix

    def build(self, x: np.ndarray, threads: int) -> None:
        self.x = _unit(x) if self.metric == "cosine" else np.ascontiguousarray(x, dtype=np.float32)
        self.sq = (self.x * self.x).sum(axis=1) if self.metric == "euclidean" else None

    def _topk(self, Q: np.ndarray, k: int) -> np.ndarray:
        if self.metric == "cosine":
            Q = Q / np.linalg.norm(Q, axis=1, keepdims=True)
        s = Q @ self.x.T  # higher is better
        if self.sq is not None:
            s = 2 * s - self.sq[None, :]  # -|x - q|^2 + |q|^2
        k = min(k, s.shape[1])
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, part, axis=1), axis=1, kind="stable")
        return np.take_along_axis(part, order, axis=1).astype(np.int64)

    def search_one(self, q: np.ndarray, k: int) -> np.ndarray:
        return self._topk(q[None, :], k)[0]

    def search_batch(self, Q: np.ndarray, k: int, threads: int) -> np.ndarray:
        return np.concatenate([self._topk(Q[i:i + self.CHUNK], k) for i in range(0, len(Q), self.CHUNK)])

    def memory_bytes(self) -> int:
        return int(self.x.nbytes)


_ADAPTERS = {cls.name: cls for cls in (VecstoreStore, VecstoreHNSW, Hnswlib, FaissHNSW, Usearch, VecstoreFlat, FaissFlat,
                                       NumpyFlat)}


def make(name: str, metric: str) -> Peer:
    """The adapter called ``name`` (see the module table). Raises ImportError when its library is missing."""
    try:
        cls = _ADAPTERS[name]
    except KeyError:
        raise ValueError(f"unknown peer {name!r}; known: {', '.join(_ADAPTERS)}") from None
    return cls(metric)


def available(names, metric: str) -> tuple[list[Peer], list[str]]:
    """Adapters for the installed ones among ``names``, and the names that were skipped (not installed)."""
    peers, skipped = [], []
    for name in names:
        try:
            peers.append(make(name, metric))
        except ImportError:
            skipped.append(name)
    return peers, skipped


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each row of ``truth`` (int (nq, k)) present in the same row of ``found`` (-1 ignored)."""
    k = truth.shape[1]
    hits = 0
    for f, t in zip(found, truth):
        hits += len(set(f[:k].tolist()) & set(t.tolist()))
    return hits / truth.size
