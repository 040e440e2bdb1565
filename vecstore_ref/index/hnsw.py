"""HNSW: the approximate index (Malkov & Yashunin 2018), as Python orchestration over Numba kernels.

The graph is a handful of arrays indexed by slot, sized to the vector table's capacity:

==============  ==============================  ==========================================================
array           dtype, shape                    meaning
==============  ==============================  ==========================================================
``levels``      int8 (capacity,)                a node's top layer; -1 = not in the graph
``links0``      int32 (capacity, 2m)            layer-0 neighbours, packed first, -1 = empty
``up_offset``   int32 (capacity,)               first row in ``links_up`` of a node with level >= 1, else -1
``links_up``    int32 (rows, m)                 layers 1.. (row ``up_offset[node] + l - 1`` for layer l)
``deleted``     uint8 (capacity,)               1 = marked deleted: traversed, never returned
==============  ==============================  ==========================================================

plus two scalars, the entry point ``ep`` and the top layer ``max_level``. Only about one node in ``m`` has upper
layers, so ``links_up`` holds ``n / (m - 1)`` rows on average. The kernels are in
:mod:`vecstore_ref.kernels.hnsw_search` and :mod:`vecstore_ref.kernels.hnsw_build`; how it all works, and how to
choose the parameters, is in ``docs/concepts/hnsw.md``.

Levels are drawn here, in Python, from ``np.random.Generator(seed)`` (``floor(-ln(U) / ln(m))``) in insertion order
and passed to the kernels as arrays; the generator's state is saved with the graph, so the same inserts with the
same seed give the same graph, before and after a save and load, and for any thread count.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from ..config import HNSWParams
from ..errors import CorruptSnapshotError, InvalidArgumentError, InvalidArgumentTypeError
from ..jit import load as load_kernels
from .base import DTYPE_SLOT, DTYPE_VEC, SearchStats, VectorTable, numba_threads
from .hnsw_checks import MAX_LEVEL, graph_problems, validate_saved_graph
from .link_queue import LinkQueue, start_linker
from .parallel import run_split

BUILD_BATCH = 256  # nodes whose neighbour searches run in parallel before their links are applied in order
SWEEP_EVERY = 64  # the reachability sweep runs once n_nodes / SWEEP_EVERY nodes were (re)linked since the last
# A filtered search scans the allowed nodes exactly when allowed**2 <= EXACT_SCAN_FACTOR * nodes * ef * m (and at
# most half the nodes are allowed): see HNSWIndex.scan_limit.
EXACT_SCAN_FACTOR = 1.0
FORMAT_VERSION = 1
# With background linking, a write that finds more than this many vectors waiting links the excess itself, so
# that the exact scan every query makes of the waiting vectors stays short (65,536 x 128 floats: ~2 ms).
MAX_UNLINKED = 65_536

_EMPTY_SLOTS = np.zeros(0, dtype=DTYPE_SLOT)
_EMPTY_DISTS = np.zeros(0, dtype=DTYPE_VEC)


_SEARCH = None


def _search_kernels():
    """:mod:`vecstore_ref.kernels.hnsw_search`, imported on first use (numba loads only when a search runs)."""
    global _SEARCH
    if _SEARCH is None:
        _SEARCH = load_kernels("hnsw_search")
    return _SEARCH


class HNSWIndex:
    """Hierarchical Navigable Small World graph over the slots of a :class:`VectorTable`.

    ``add`` inserts new slots and relinks slots whose vector changed, ``remove`` marks slots deleted (still walked
    through, never returned, until compaction builds a new index), ``search``/``search_batch`` answer top-k queries
    among an allowed mask.

    With ``background=True`` (the store's setting), ``add`` only queues the slots (:mod:`.link_queue`) and a
    daemon thread links them; searches scan the queued slots exactly until then. Otherwise ``add`` links at once.
    Every method may be called from any thread: the graph arrays change only under ``self.lock``.
    """

    kind = "hnsw"

    def __init__(self, table: VectorTable, params: HNSWParams, *, background: bool = False):
        if not isinstance(params, HNSWParams):
            raise InvalidArgumentTypeError(f"params must be HNSWParams, got {type(params).__name__}")
        self.table = table
        self.params = params
        self.background = bool(background)
        self.max_unlinked = MAX_UNLINKED
        self.lock = threading.RLock()  # held while the graph arrays are read or changed
        self._queue = LinkQueue()
        self._linker: threading.Thread | None = None
        self._in_flight = 0  # slots taken from the queue and being linked
        self.m = params.m
        self._rng = np.random.default_rng(params.seed)
        self._level_mult = 1.0 / math.log(self.m)
        self.ep = -1
        self.max_level = -1
        self.n_nodes = 0
        self.n_up_rows = 0
        self._unswept = 0  # nodes (re)linked since the last reachability sweep
        self._cap = 0
        self.levels = np.zeros(0, dtype=np.int8)
        self.links0 = np.zeros((0, 2 * self.m), dtype=DTYPE_SLOT)
        self.up_offset = np.zeros(0, dtype=DTYPE_SLOT)
        self.deleted = np.zeros(0, dtype=np.uint8)
        self.links_up = np.full((16, self.m), -1, dtype=DTYPE_SLOT)
        self.exact_scan_factor = EXACT_SCAN_FACTOR
        self._n_scratch = 1
        self._room = max(64, params.ef_search)  # W's room after the candidate heap in each scratch row
        self._grow()

    # --- storage ----------------------------------------------------------------------------------------------

    def _grow(self) -> None:
        """Follow the vector table's capacity (the store grows the table; the graph grows with it)."""
        cap = self.table.capacity
        old = self._cap
        if cap <= old:
            return

        def grown(arr, fill, shape):
            out = np.full(shape, fill, dtype=arr.dtype)
            out[:old] = arr[:old]
            return out

        self.levels = grown(self.levels, -1, cap)
        self.links0 = grown(self.links0, -1, (cap, 2 * self.m))
        self.up_offset = grown(self.up_offset, -1, cap)
        self.deleted = grown(self.deleted, 0, cap)
        self._cap = cap
        self._alloc_scratch(self._n_scratch, self._room)

    def _alloc_scratch(self, n_threads: int, room: int) -> None:
        """Per-thread search buffers: an epoch visited array, and a row holding the candidate heap (capacity
        entries) followed by the result heap (``room`` entries)."""
        cap = self._cap
        self._n_scratch, self._room = n_threads, room
        self._visited = np.zeros((n_threads, cap), dtype=np.uint16)
        self._tags = np.zeros(n_threads, dtype=np.int64)
        self._sd = np.empty((n_threads, cap + room), dtype=DTYPE_VEC)
        self._ss = np.empty((n_threads, cap + room), dtype=DTYPE_SLOT)
        self._visited0, self._sd0, self._ss0 = self._visited[0], self._sd[0], self._ss[0]

    def _scratch(self, n_threads: int, ef: int = 0) -> None:
        if n_threads > self._n_scratch or ef > self._room:
            self._alloc_scratch(max(n_threads, self._n_scratch), max(ef, self._room))

    def _alloc_up_rows(self, n_new: int) -> int:
        """Reserve ``n_new`` rows of ``links_up``; returns the first."""
        first = self.n_up_rows
        need = first + n_new
        if need > self.links_up.shape[0]:
            rows = np.full((max(need, 2 * self.links_up.shape[0]), self.m), -1, dtype=DTYPE_SLOT)
            rows[:first] = self.links_up[:first]
            self.links_up = rows
        self.n_up_rows = need
        return first

    def _draw_levels(self, n: int) -> np.ndarray:
        u = 1.0 - self._rng.random(n)  # in (0, 1]
        return np.minimum(np.floor(-np.log(u) * self._level_mult), MAX_LEVEL).astype(np.int8)

    # --- the Index protocol: updates --------------------------------------------------------------------------

    def _slots_arg(self, slots) -> np.ndarray:
        s = np.asarray(slots)
        if s.ndim != 1 or not (s.size == 0 or np.issubdtype(s.dtype, np.integer)):
            raise InvalidArgumentTypeError("slots must be a 1-D array of integers")
        s = s.astype(DTYPE_SLOT, copy=False)
        if s.size and (int(s.min()) < 0 or int(s.max()) >= self.table.n_slots):
            raise InvalidArgumentError(f"slots must be in [0, {self.table.n_slots}), the table's used slots")
        return s

    def add(self, slots: np.ndarray) -> None:
        """Insert new slots (INSERT, Alg. 1) and relink slots already in the graph whose vectors changed.

        The slots are linked in the given order (a repeated slot once, at its first place), in batches of
        ``BUILD_BATCH`` whose neighbour searches run in parallel; a big add is the fast bulk-build path. In the
        background mode they are queued, and linked here only beyond ``max_unlinked`` waiting slots.
        """
        slots = self._slots_arg(slots)
        if slots.size == 0:
            return
        if slots.size > 1:
            _, first = np.unique(slots, return_index=True)
            if first.size != slots.size:
                slots = slots[np.sort(first)]
        self._queue.push(slots)
        if not self.background:
            self.link_queued()
            return
        if self._linker is None or not self._linker.is_alive():
            self._linker = start_linker(self, self._queue)
        excess = len(self._queue) - self.max_unlinked
        if excess > 0:
            self.link_queued(excess)

    def link_queued(self, max_nodes: int | None = None) -> int:
        """Link up to ``max_nodes`` (None = all) of the oldest queued slots into the graph; returns how many."""
        with self.lock:
            chunk = self._sync(max_nodes)
            if chunk.size:
                self._in_flight = int(chunk.size)
                try:
                    self._link(chunk)
                except BaseException:  # e.g. MemoryError: the chunk waits again, so queries still scan it
                    self.n_nodes = int(np.count_nonzero(self.levels >= 0))
                    self.up_offset[chunk[self.levels[chunk] < 0]] = -1  # rows reserved for nodes never written
                    self._queue.push(chunk, front=True)
                    raise
                finally:
                    self._in_flight = 0
            return int(chunk.size)

    @property
    def n_unlinked(self) -> int:
        """Slots written but not linked yet (queued, or being linked right now)."""
        return len(self._queue) + self._in_flight

    def close(self) -> None:
        """Stop the linker thread (what it has not linked stays queued; the store's log still holds it)."""
        self._queue.close()
        linker, self._linker = self._linker, None
        if linker is not None and linker is not threading.current_thread():
            linker.join()

    def _sync(self, max_nodes: int | None = 0) -> np.ndarray:
        """Apply what the queue gathered since the last call (under ``self.lock``); returns the chunk to link, and
        keeps the slots still waiting in ``self._waiting``."""
        self._grow()
        taken = self._queue.take(max_nodes)
        if taken.to_mark.size:
            self.deleted[taken.to_mark] = 1  # not returned by a walk until (re)linked, see link_queue
        if taken.to_delete.size:
            self.deleted[taken.to_delete] = 1
        self._waiting = taken.waiting
        return taken.chunk

    def _link(self, slots: np.ndarray) -> None:
        """Link distinct ``slots`` now, in order (under ``self.lock``)."""
        node_levels = self.levels[slots].copy()
        is_new = node_levels < 0
        new = slots[is_new]
        if new.size:
            lv = self._draw_levels(new.size)
            node_levels[is_new] = lv
            high = lv > 0
            if high.any():
                first_row = self._alloc_up_rows(int(lv[high].sum(dtype=np.int64)))
                starts = first_row + np.cumsum(lv[high], dtype=np.int64) - lv[high]
                self.up_offset[new[high]] = starts.astype(DTYPE_SLOT)
        self.deleted[slots] = 0
        is_new_u8 = is_new.astype(np.uint8)
        for start in range(0, slots.size, BUILD_BATCH):
            end = start + BUILD_BATCH
            self._insert_batch(slots[start:end], node_levels[start:end], is_new_u8[start:end])
        self.n_nodes += int(new.size)
        self._unswept += int(slots.size)
        if self._unswept * SWEEP_EVERY >= self.n_nodes:
            self._repair()

    def _insert_batch(self, nodes: np.ndarray, node_levels: np.ndarray, is_new: np.ndarray) -> None:
        """The three phases of a batch insert (see :mod:`vecstore_ref.kernels.hnsw_build`)."""
        build = load_kernels("hnsw_build")
        t = self.table
        m = self.m
        b = nodes.size
        per_node = node_levels.astype(np.int64) + 1
        fwd_off = np.cumsum(per_node) - per_node
        n_rows = int(fwd_off[-1] + per_node[-1])
        fwd = np.full((n_rows, m), -1, dtype=DTYPE_SLOT)
        fwd_n = np.zeros(n_rows, dtype=np.int32)
        n_threads = max(1, min(numba_threads(), b))
        self._scratch(n_threads)
        if self.ep >= 0 or b > 1:
            run_split(build.plan_links, n_threads, t.metric_code, t.vectors, t.inv_norms, self.links0, self.links_up,
                      self.up_offset, self.deleted, self.ep, self.max_level, nodes, node_levels, is_new, m,
                      max(self.params.ef_construction, m), self._visited[:n_threads], self._tags,
                      self._sd[:n_threads], self._ss[:n_threads], fwd, fwd_n, fwd_off)
        ep, max_level = build.write_links(self.links0, self.links_up, self.up_offset, self.levels, self.ep,
                                          self.max_level, nodes, node_levels, is_new, fwd, fwd_n, fwd_off)
        self.ep, self.max_level = int(ep), int(max_level)
        # Reverse links, grouped by (layer, target) so that each target's list is updated by one thread.
        n_links = fwd_n.astype(np.int64)
        if not n_links.any():
            return
        row_level = np.arange(n_rows, dtype=np.int64) - np.repeat(fwd_off, per_node)
        targets = fwd[np.arange(m)[None, :] < fwd_n[:, None]]
        sources = np.repeat(np.repeat(nodes, per_node), n_links)
        key = np.repeat(row_level, n_links) * self._cap + targets
        order = np.argsort(key, kind="stable")
        key, sources = key[order], sources[order]
        starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
        group_start = np.append(starts, key.size).astype(np.int64)
        group_key = key[starts]
        run_split(build.connect_back, n_threads, t.metric_code, t.vectors, t.inv_norms, self.links0, self.links_up,
                  self.up_offset, group_key // self._cap, (group_key % self._cap).astype(DTYPE_SLOT), group_start,
                  np.ascontiguousarray(sources), int(np.diff(group_start).max()))

    def remove(self, slots: np.ndarray) -> None:
        """Mark deleted: excluded from results, still used for traversal until compaction rebuilds the graph."""
        slots = self._slots_arg(slots)
        self._queue.remove(slots)
        if not self.background:
            with self.lock:
                self._sync()

    @property
    def n_deleted(self) -> int:
        """Nodes in the graph marked deleted (not counting those waiting for a relink)."""
        with self.lock:
            self._sync()
            n = self.table.n_slots
            dead = (self.deleted[:n] != 0) & (self.levels[:n] >= 0)
            dead[self._waiting] = False
            return int(np.count_nonzero(dead))

    def repair_connectivity(self, max_rounds: int = 8) -> int:
        """Link everything queued, then :meth:`_repair` the graph's reachability; returns the links added."""
        with self.lock:
            self.link_queued()
            return self._repair(max_rounds)

    def _repair(self, max_rounds: int = 8) -> int:
        """Link every live node that layer 0 no longer reaches from the entry point; returns the links added.

        SELECT-NEIGHBORS-HEURISTIC may drop a node's last incoming link when it shrinks a full list, and such a
        node can never be found. This sweep (a breadth-first search, O(n * m)) finds them and links each from its
        nearest reachable node. Linking runs it by itself once ``n_nodes / SWEEP_EVERY`` nodes have been
        (re)linked since the last sweep, which amortizes it to a few percent of the insert cost. Runs under
        ``self.lock``; the table may grow meanwhile (the linker thread does not hold the store's lock).
        """
        repair = load_kernels("hnsw_repair")
        self._unswept = 0
        if self.ep < 0:
            return 0
        self._grow()
        t = self.table
        n = min(t.n_slots, self._cap)
        total = 0
        queue = np.empty(self._cap, dtype=DTYPE_SLOT)
        for _ in range(max_rounds):
            seen = np.zeros(self._cap, dtype=bool)
            repair.reachable_from(self.links0, np.array([self.ep], dtype=DTYPE_SLOT), seen, queue)
            lost = np.flatnonzero((self.levels[:n] >= 0) & (self.deleted[:n] == 0) & ~seen[:n]).astype(DTYPE_SLOT)
            if lost.size == 0:
                break
            added, replaced = repair.repair_reachability(t.metric_code, t.vectors, t.inv_norms, self.links0,
                                                         self.links_up, self.up_offset, self.deleted, self.ep,
                                                         self.max_level, lost, max(self.params.ef_construction, self.m),
                                                         seen, queue, self._visited0, self._tags, self._sd0, self._ss0)
            total += int(added)
            if replaced == 0:
                break
        return total

    # --- the Index protocol: search ---------------------------------------------------------------------------

    # Arrays reach the kernels C-contiguous and writable, so each kernel is compiled for one set of types only.

    def _query(self, query) -> np.ndarray:
        q = query
        if not (type(q) is np.ndarray and q.dtype == DTYPE_VEC and q.ndim == 1 and q.flags.c_contiguous
                and q.flags.writeable):
            q = np.array(q, dtype=DTYPE_VEC, order="C")
            if q.ndim != 1:
                raise InvalidArgumentError(f"query must be 1-D, got shape {q.shape}")
        if q.shape[0] != self.table.dim:
            raise InvalidArgumentError(f"query has {q.shape[0]} dimensions, the table {self.table.dim}")
        return q

    def _mask(self, allowed) -> np.ndarray:
        if not (type(allowed) is np.ndarray and allowed.dtype == np.bool_ and allowed.ndim == 1
                and allowed.flags.c_contiguous and allowed.flags.writeable):
            allowed = np.array(allowed, dtype=np.bool_, order="C")
            if allowed.ndim != 1:
                raise InvalidArgumentError("allowed must be a 1-D bool mask")
        if allowed.shape[0] < self.table.n_slots:
            raise InvalidArgumentError(f"allowed has {allowed.shape[0]} entries, fewer than the "
                                       f"{self.table.n_slots} slots")
        return allowed

    def scan_limit(self, ef: int) -> int:
        """The most allowed nodes for which a search scans them exactly instead of walking the graph.

        A filtered walk fills ``W`` only after visiting about ``ef / selectivity`` nodes (~m distances each); an
        exact scan costs one sequential distance per allowed node. With ``a`` of ``n`` nodes allowed the scan wins
        about when ``a * a <= exact_scan_factor * n * ef * m``: at 100k nodes, ef=64 and m=16 that is up to ~10k
        allowed nodes (10%). ``exact_scan_factor = 0`` always walks (-1 is returned).
        """
        if self.exact_scan_factor <= 0:
            return -1
        return min(int(math.sqrt(self.exact_scan_factor * self.n_nodes * ef * self.m)), self.n_nodes // 2)

    def _ef(self, k: int, ef: int | None) -> int:
        """Effective search width: ``max(ef or ef_search, k)``, never beyond the number of nodes (or k)."""
        e = max(int(ef) if ef else self.params.ef_search, k)
        return max(1, min(e, max(self.n_nodes, k)))

    def _unlinked_for_search(self) -> np.ndarray:
        """The queued slots a search scans exactly (under ``self.lock``), after applying the queue's changes."""
        if self._queue.idle:
            return _EMPTY_SLOTS
        self._sync()
        return self._waiting

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray, ef: int | None = None):
        """K-NN-SEARCH (Alg. 5) for one query among the ``allowed`` live slots.

        Args:
            query: float32 (dim,).
            k: results wanted; fewer come back if fewer nodes are allowed.
            allowed: bool (>= n_slots,): the slots that may be returned (all nodes are walked through).
            ef: search width (default ``params.ef_search``; at least ``k`` is used).

        Returns:
            ``(slots int32 (m,), distances float32 (m,), SearchStats)``, m <= k, best first by (distance, slot).
        """
        with self.lock:
            unlinked = self._unlinked_for_search()
            k = min(int(k), self.n_nodes + unlinked.size)
            if k <= 0:
                return _EMPTY_SLOTS, _EMPTY_DISTS, SearchStats()
            t = self.table
            if t.capacity != self._cap:
                self._grow()
            q = self._query(query)
            allowed = self._mask(allowed)
            e = self._ef(k, ef)
            if e > self._room:
                self._scratch(1, e)
            found, n_dist, hops = _search_kernels().knn_search(
                t.metric_code, q, t.vectors, t.inv_norms, self.links0, self.links_up, self.up_offset, self.levels,
                self.deleted, allowed, self.ep, self.max_level, k, e, self._visited0, self._tags, 0, self._sd0,
                self._ss0, self.scan_limit(e), unlinked)
            cap = self._cap
            return self._ss0[cap:cap + found].copy(), self._sd0[cap:cap + found].copy(), SearchStats(n_dist, hops)

    def search_batch(self, queries: np.ndarray, k: int, allowed: np.ndarray, ef: int | None = None):
        """K-NN-SEARCH for every row of ``queries`` (float32 (nq, dim)), the queries spread over the threads.

        Returns:
            ``(slots int32 (nq, w) padded -1, distances float32 (nq, w) padded +inf, distance computations int64
            (nq,), hops int64 (nq,))`` with ``w = min(k, n_slots)``; row i equals ``search(queries[i], ...)``.
        """
        t = self.table
        Q = queries
        if not (type(Q) is np.ndarray and Q.dtype == DTYPE_VEC and Q.flags.c_contiguous and Q.flags.writeable):
            Q = np.array(Q, dtype=DTYPE_VEC, order="C")
        if Q.ndim != 2 or Q.shape[1] != t.dim:
            raise InvalidArgumentError(f"queries must have shape (nq, {t.dim}), got {Q.shape}")
        nq = Q.shape[0]
        w = max(0, min(int(k), t.n_slots))
        out_d = np.full((nq, w), np.inf, dtype=DTYPE_VEC)
        out_s = np.full((nq, w), -1, dtype=DTYPE_SLOT)
        n_dist = np.zeros(nq, dtype=np.int64)
        hops = np.zeros(nq, dtype=np.int64)
        with self.lock:
            unlinked = self._unlinked_for_search()
            kk = min(w, self.n_nodes + unlinked.size)
            if nq == 0 or kk == 0:
                return out_s, out_d, n_dist, hops
            self._grow()
            allowed = self._mask(allowed)
            n_threads = max(1, min(numba_threads(), nq))
            e = self._ef(kk, ef)
            self._scratch(n_threads, e)
            res_d = out_d if kk == w else np.full((nq, kk), np.inf, dtype=DTYPE_VEC)
            res_s = out_s if kk == w else np.full((nq, kk), -1, dtype=DTYPE_SLOT)
            run_split(
                load_kernels("hnsw_batch").knn_search_batch, n_threads, t.metric_code, Q, t.vectors, t.inv_norms,
                self.links0, self.links_up, self.up_offset, self.levels, self.deleted, allowed, self.ep, self.max_level, e,
                self._visited[:n_threads], self._tags, self._sd[:n_threads], self._ss[:n_threads], self.scan_limit(e),
                unlinked, res_d, res_s, n_dist, hops)
        if kk != w:
            out_d[:, :kk], out_s[:, :kk] = res_d, res_s
        return out_s, out_d, n_dist, hops

    # --- persistence ------------------------------------------------------------------------------------------

    def to_arrays(self) -> tuple[dict, dict[str, np.ndarray]]:
        """``(meta, arrays)`` for a snapshot: JSON values, and numeric arrays covering the table's used slots.

        Everything queued is linked first: a saved graph holds every vector of the table."""
        with self.lock:
            self.link_queued()
            return self._to_arrays()

    def _to_arrays(self) -> tuple[dict, dict[str, np.ndarray]]:
        n = self.table.n_slots
        self._grow()
        state = self._rng.bit_generator.state
        meta = {"format": FORMAT_VERSION, "m": self.m, "ep": self.ep, "max_level": self.max_level,
                "n_nodes": self.n_nodes, "n_up_rows": self.n_up_rows, "unswept": self._unswept,
                "rng": {"bit_generator": state["bit_generator"], "state": str(state["state"]["state"]),
                        "inc": str(state["state"]["inc"]), "has_uint32": int(state["has_uint32"]),
                        "uinteger": int(state["uinteger"])}}
        arrays = {"levels": self.levels[:n].copy(), "links0": self.links0[:n].copy(),
                  "up_offset": self.up_offset[:n].copy(), "deleted": self.deleted[:n].copy(),
                  "links_up": self.links_up[: self.n_up_rows].copy()}
        return meta, arrays

    @classmethod
    def from_arrays(cls, table: VectorTable, params: HNSWParams, meta: dict, arrays: dict, *,
                    background: bool = False) -> HNSWIndex:
        """Load a saved graph without rebuilding it, after checking every shape and bound.

        A graph that fails a check raises :class:`CorruptSnapshotError`: no bad index ever reaches a kernel.
        """
        idx = cls(table, params, background=background)
        try:
            fields = validate_saved_graph(meta, arrays, table.n_slots, params.m, FORMAT_VERSION)
            idx._rng.bit_generator.state = {
                "bit_generator": meta["rng"]["bit_generator"],
                "state": {"state": int(meta["rng"]["state"]), "inc": int(meta["rng"]["inc"])},
                "has_uint32": int(meta["rng"]["has_uint32"]), "uinteger": int(meta["rng"]["uinteger"])}
        except CorruptSnapshotError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as exc:
            raise CorruptSnapshotError(f"the saved HNSW graph is malformed: {exc!r}") from None
        n = table.n_slots
        idx.levels[:n] = arrays["levels"]
        idx.links0[:n] = arrays["links0"]
        idx.up_offset[:n] = arrays["up_offset"]
        idx.deleted[:n] = arrays["deleted"]
        idx._alloc_up_rows(fields["n_up_rows"])
        idx.links_up[: fields["n_up_rows"]] = arrays["links_up"]
        idx.ep, idx.max_level = fields["ep"], fields["max_level"]
        idx.n_nodes, idx._unswept = fields["n_nodes"], fields["unswept"]
        return idx

    def memory_bytes(self) -> int:
        """Bytes held by the graph arrays (not the vectors, which the table holds, nor per-thread scratch)."""
        return int(self.levels.nbytes + self.links0.nbytes + self.up_offset.nbytes + self.deleted.nbytes
                   + self.links_up.nbytes)

    # --- diagnostics ------------------------------------------------------------------------------------------

    def check_integrity(self) -> list[str]:
        """Problems found in the graph (an empty list means none): self-links, duplicate links, degrees out of
        bounds, links to slots outside the graph or below the layer, a bad entry point, and live nodes not
        reachable from the entry point on layer 0."""
        with self.lock:
            self.link_queued()
            return graph_problems(self)
