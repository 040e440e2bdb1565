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
`vecstore_ref.kernels.hnsw_search` and `vecstore_ref.kernels.hnsw_build`; how it all works, and how to
choose the parameters, is in ``docs/concepts/hnsw.md``.

Levels are drawn here, in Python, from ``np.random.Generator(seed)`` (``floor(-ln(U) / ln(m))``) in insertion order
and passed to the kernels as arrays; the generator's state is saved with the graph, so the same inserts with the
same seed give the same graph, before and after a save and load, and for any thread count.

Threads. Searches take no lock: they read the arrays while the linker thread writes links into them, which is safe
because a link is one aligned int32 (a reader sees the old or the new value) and every slot a link can name is a
node whose own rows were written first. Each search borrows its scratch buffers from a pool. Arrays are replaced
(grown) only by the thread that adds slots, which the store runs with readers kept out, and the linker publishes
the upper layers together with the entry point (``_upper``), so a search never pairs an entry point with rows it
cannot reach. A checkpoint pauses the linker (`pause_linking`) while it writes the graph out.

A slot's links are made for its vector, and the store never changes the vector of a linked slot (a new vector
gets a new slot, see `vecstore_ref.state`). ``add`` of a slot already in the graph still relinks it, for callers
of the index itself; that hides the node until it is relinked.
"""

from __future__ import annotations

import math
import threading
import time
from typing import NamedTuple

import numpy as np

from ..config import HNSWParams
from ..errors import CorruptSnapshotError, InvalidArgumentError, InvalidArgumentTypeError
from ..handoff import FLAGS, IN_PYTHON
from ..jit import load as load_kernels
from .base import DTYPE_SLOT, DTYPE_VEC, SearchStats, VectorTable, numba_threads
from .hnsw_checks import MAX_LEVEL, graph_problems, validate_saved_graph
from .link_queue import LinkQueue, start_linker
from .parallel import run_split

BUILD_BATCH = 256  # nodes whose neighbour searches run in parallel before their links are applied in order
# The most nodes linked in one hold of the graph lock when a whole backlog is linked (flush_index, snapshot): a
# write that must grow the graph's arrays waits for the lock while it holds the store's write lock, and every
# read then waits too, so the wait is one chunk (tens of milliseconds), never the whole backlog (seconds).
LINK_CHUNK = 4 * BUILD_BATCH
SWEEP_EVERY = 64  # the reachability sweep runs once n_nodes / SWEEP_EVERY nodes were (re)linked since the last
# A filtered search scans the allowed nodes exactly when allowed**2 <= EXACT_SCAN_FACTOR * nodes * ef * m (and at
# most half the nodes are allowed): see HNSWIndex.scan_limit.
EXACT_SCAN_FACTOR = 1.0
# Format 2: a saved graph may hold only part of the table (slots never linked have level -1 and empty rows; the
# loader queues them again), and every node's links were made for its current vector. Format 1 graphs were built
# by relinking nodes in place, which leaves stale neighbourhoods; they are rebuilt once when loaded.
FORMAT_VERSION = 2
# With background linking, a write that finds more than this many vectors waiting links the excess itself, so
# that the exact scan every query makes of the waiting vectors stays short (65,536 x 128 floats: ~2 ms).
MAX_UNLINKED = 65_536
# A filtered walk that starts among non-matching nodes first crosses them until it has found this many allowed
# ones, and widens its search by this factor when the filter proves anti-correlated with the query (see
# vecstore_ref.kernels.filtered_search).
FILTER_SEEDS = 128
FILTER_WIDEN = 1.5
FILTER_GATHER = 1  # x m: new candidates one expansion of a filtered walk collects (ACORN's M)

_EMPTY_SLOTS = np.zeros(0, dtype=DTYPE_SLOT)
_EMPTY_DISTS = np.zeros(0, dtype=DTYPE_VEC)


_SEARCH = None


def _search_kernels():
    """`vecstore_ref.kernels.hnsw_search`, imported on first use (numba loads only when a search runs)."""
    global _SEARCH
    if _SEARCH is None:
        _SEARCH = load_kernels("hnsw_search")
    return _SEARCH


class _Scratch(NamedTuple):
    """Buffers of one search (or one batch): per thread an epoch array and a row holding the candidate heap
    (capacity entries) followed by the result heap (``room`` entries)."""

    cap: int
    room: int
    visited: np.ndarray  # uint16 (threads, cap)
    tags: np.ndarray  # int64 (threads,)
    sd: np.ndarray  # float32 (threads, cap + room)
    ss: np.ndarray  # int32 (threads, cap + room)
    visited0: np.ndarray  # the first rows of the three, made once: a single query uses only them
    sd0: np.ndarray
    ss0: np.ndarray

    @classmethod
    def new(cls, threads: int, cap: int, room: int) -> _Scratch:
        visited = np.zeros((threads, cap), dtype=np.uint16)
        sd = np.empty((threads, cap + room), dtype=DTYPE_VEC)
        ss = np.empty((threads, cap + room), dtype=DTYPE_SLOT)
        return cls(cap, room, visited, np.zeros(threads, dtype=np.int64), sd, ss, visited[0], sd[0], ss[0])


class HNSWIndex:
    """Hierarchical Navigable Small World graph over the slots of a `VectorTable`.

    ``add`` inserts new slots, ``remove`` marks slots deleted (still walked through, never returned, until
    compaction builds a new index), ``search``/``search_batch`` answer top-k queries among an allowed mask.

    With ``background=True`` (the store's setting), ``add`` only queues the slots (`vecstore_ref.index.link_queue`)
    and a daemon thread links them; searches scan the queued slots exactly until then. Otherwise ``add`` links at
    once. Links change only under ``self.lock``; searches take no lock (module docstring).
    """

    kind = "hnsw"

    def __init__(self, table: VectorTable, params: HNSWParams, *, background: bool = False):
        if not isinstance(params, HNSWParams):
            raise InvalidArgumentTypeError(f"params must be HNSWParams, got {type(params).__name__}")
        self.table = table
        self.params = params
        self.background = bool(background)
        self.max_unlinked = MAX_UNLINKED
        self.lock = threading.RLock()  # held while links are written (one chunk at a time)
        self._unpaused = threading.Condition(self.lock)
        self._paused = 0  # pause_linking() calls not yet resumed
        self._lock_wanted = 0  # writers waiting for the graph lock to grow the arrays (a hint for the linker)
        self._queue = LinkQueue()
        self._linker: threading.Thread | None = None
        self.m = params.m
        self._rng = np.random.default_rng(params.seed)
        self._level_mult = 1.0 / math.log(self.m)
        self.n_nodes = 0
        self.n_up_rows = 0
        self.linked_count = 0  # slots (re)linked since this object was made (a checkpoint remembers it)
        self.link_threads: int | None = None  # at most this many Numba threads link a backlog (None = all)
        self._unswept = 0  # nodes (re)linked since the last reachability sweep
        self._cap = 0
        self.levels = np.zeros(0, dtype=np.int8)
        self.links0 = np.zeros((0, 2 * self.m), dtype=DTYPE_SLOT)
        self.up_offset = np.zeros(0, dtype=DTYPE_SLOT)
        self.deleted = np.zeros(0, dtype=np.uint8)
        self._upper = (np.full((16, self.m), -1, dtype=DTYPE_SLOT), -1, -1)  # (links_up, ep, max_level)
        self.exact_scan_factor = EXACT_SCAN_FACTOR
        self._room = max(64, params.ef_search)  # W's room after the candidate heap in each scratch row
        self._pool: list[_Scratch] = []  # scratch of finished searches, for the next ones
        self._build: _Scratch | None = None  # the linker's scratch (under self.lock)
        self._grow()

    # the upper layers and the entry point are published together (see the module docstring)
    @property
    def links_up(self) -> np.ndarray:
        return self._upper[0]

    @links_up.setter
    def links_up(self, value: np.ndarray) -> None:
        self._upper = (value, self._upper[1], self._upper[2])

    @property
    def ep(self) -> int:
        return self._upper[1]

    @ep.setter
    def ep(self, value: int) -> None:
        self._upper = (self._upper[0], int(value), self._upper[2])

    @property
    def max_level(self) -> int:
        return self._upper[2]

    @max_level.setter
    def max_level(self, value: int) -> None:
        self._upper = (self._upper[0], self._upper[1], int(value))

    # --- storage ----------------------------------------------------------------------------------------------

    def _grow_locked(self) -> None:
        """`_grow` under the graph lock, announced so that a linker between two chunks lets this thread in first."""
        self._lock_wanted += 1
        try:
            with self.lock:
                self._grow()
        finally:
            self._lock_wanted -= 1

    def _grow(self) -> None:
        """Follow the vector table's capacity (the store grows the table; the graph grows with it).

        Rows of slots outside the graph are left unwritten (``links0``: ``np.empty``): no kernel reads them, and
        untouched pages cost no memory. Called by the thread that adds slots, under ``self.lock``."""
        cap = self.table.capacity
        old = self._cap
        if cap <= old:
            return

        def grown(arr, fill, shape):
            out = np.empty(shape, dtype=arr.dtype) if fill is None else np.full(shape, fill, dtype=arr.dtype)
            out[:old] = arr[:old]
            return out

        self.levels = grown(self.levels, -1, cap)
        self.links0 = grown(self.links0, None, (cap, 2 * self.m))
        self.up_offset = grown(self.up_offset, -1, cap)
        self.deleted = grown(self.deleted, 0, cap)
        self._cap = cap
        self._pool = []

    def _scratch_for(self, threads: int, room: int) -> _Scratch:
        """Scratch for a search on the current arrays: from the pool (list.pop is atomic), or new. Each row has
        ``room`` entries after the capacity, and 2m more at its end for one neighbour list (`knn_search`)."""
        room += 2 * self.m
        cap = self._cap
        pool = self._pool
        while pool:
            try:
                sc = pool.pop()
            except IndexError:
                break
            if sc.cap == cap and sc.room >= room and sc.visited.shape[0] >= threads:
                return sc
        return _Scratch.new(threads, cap, max(room, self._room))

    def _give_back(self, sc: _Scratch) -> None:
        if sc.cap == self._cap and len(self._pool) < 8:
            self._pool.append(sc)

    def _build_scratch(self, threads: int) -> _Scratch:
        """The linker's scratch (under ``self.lock``)."""
        b = self._build
        if b is None or b.cap != self._cap or b.visited.shape[0] < threads:
            b = self._build = _Scratch.new(max(threads, 1), self._cap, max(self.params.ef_construction, self.m))
        return b

    def _alloc_up_rows(self, n_new: int) -> int:
        """Reserve ``n_new`` rows of ``links_up``; returns the first. A larger array is published with the next
        links (searches keep the one they started with)."""
        first = self.n_up_rows
        need = first + n_new
        links_up, ep, max_level = self._upper
        if need > links_up.shape[0]:
            rows = np.full((max(need, 2 * links_up.shape[0]), self.m), -1, dtype=DTYPE_SLOT)
            rows[:first] = links_up[:first]
            self._upper = (rows, ep, max_level)
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
        """Insert new slots (INSERT, Alg. 1); relink slots already in the graph (their vectors changed).

        The slots are linked in the given order (a repeated slot once, at its first place), in batches of
        ``BUILD_BATCH`` whose neighbour searches run in parallel; a big add is the fast bulk-build path. In the
        background mode they are queued (see `link_backlog`).
        """
        slots = self._slots_arg(slots)
        if slots.size == 0:
            return
        if slots.size > 1:
            _, first = np.unique(slots, return_index=True)
            if first.size != slots.size:
                slots = slots[np.sort(first)]
        if self.table.capacity > self._cap:
            self._grow_locked()
        relink = slots[self.levels[slots] >= 0]
        if relink.size:
            self.deleted[relink] = 1  # walked through, never returned, until relinked (its links are stale)
        self._queue.push(slots)
        if not self.background:
            self.link_queued()
            return
        if self._linker is None or not self._linker.is_alive():
            self._linker = start_linker(self, self._queue)

    def link_backlog(self) -> int:
        """Link, in the calling thread, what is queued beyond ``max_unlinked`` (the exact scan every query makes of
        the queue stays short); returns how many. The store calls it after a write, outside its read-write lock,
        so a bulk load is slowed down to the linking speed instead of queries."""
        excess = len(self._queue) - self.max_unlinked
        return self.link_queued(excess) if excess > 0 else 0

    def link_queued(self, max_nodes: int | None = None, from_linker: bool = False) -> int:
        """Link up to ``max_nodes`` (None = all) of the oldest queued slots into the graph; returns how many.

        The graph lock is held for at most `LINK_CHUNK` nodes at a time, and let go in between (to a writer that
        waits for it first). Waits while a checkpoint has paused linking (`pause_linking`)."""
        total = 0
        while True:
            with self.lock:
                while self._paused:
                    self._unpaused.wait()
                    if from_linker:
                        return total  # the linker thread takes the next chunk on its next turn
                want = LINK_CHUNK if max_nodes is None else min(LINK_CHUNK, max_nodes - total)
                chunk = self._queue.take(want)
                if chunk.size == 0:
                    if max_nodes is None and total and self._unswept:
                        self._repair()  # a whole backlog linked (flush_index): leave every node reachable
                    return total
                try:
                    self._link(chunk)
                except BaseException:  # e.g. MemoryError: the chunk waits again, so queries still scan it
                    self.n_nodes = int(np.count_nonzero(self.levels >= 0))
                    self.up_offset[chunk[self.levels[chunk] < 0]] = -1  # rows reserved for nodes never written
                    removed = self._queue.done(failed=True)
                    if removed.size:
                        self.deleted[removed] = 1
                    raise
                removed = self._queue.done()
                if removed.size:
                    self.deleted[removed] = 1  # removed by the store while they were being linked
                total += int(chunk.size)
                if max_nodes is not None and total >= max_nodes:
                    return total
            for _ in range(200):  # a writer waiting to grow the arrays gets the lock before the next chunk
                if not self._lock_wanted:
                    break
                time.sleep(0.0005)

    @property
    def n_unlinked(self) -> int:
        """Slots written but not linked yet (queued, or being linked right now)."""
        return self._queue.n_unlinked

    def unlinked_slots(self) -> np.ndarray:
        """The slots waiting or being linked (int32)."""
        return self._queue.for_search()

    def pause_linking(self) -> None:
        """Stop linking after the chunk in progress (waits for it) until `resume_linking`: a checkpoint writes
        the arrays out meanwhile. Writers that would link themselves (``max_unlinked``) wait too."""
        with self.lock:
            self._paused += 1

    def resume_linking(self) -> None:
        with self.lock:
            self._paused -= 1
            if not self._paused:
                self._unpaused.notify_all()

    def close(self) -> None:
        """Stop the linker thread (what it has not linked stays queued; the store's log still holds it)."""
        self._queue.close()
        linker, self._linker = self._linker, None
        if linker is not None and linker is not threading.current_thread():
            linker.join()

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
        is_new_u8 = is_new.astype(np.uint8)
        for start in range(0, slots.size, BUILD_BATCH):
            end = start + BUILD_BATCH
            self._insert_batch(slots[start:end], node_levels[start:end], is_new_u8[start:end])
        relinked = slots[~is_new]
        if relinked.size:
            self.deleted[relinked] = 0
        self.n_nodes += int(new.size)
        self.linked_count += int(slots.size)
        self._unswept += int(slots.size)
        if self._unswept * SWEEP_EVERY >= self.n_nodes:
            self._repair()

    def _insert_batch(self, nodes: np.ndarray, node_levels: np.ndarray, is_new: np.ndarray) -> None:
        """The three phases of a batch insert (see `vecstore_ref.kernels.hnsw_build`)."""
        build = load_kernels("hnsw_build")
        t = self.table
        m = self.m
        b = nodes.size
        links_up, ep, max_level = self._upper
        per_node = node_levels.astype(np.int64) + 1
        fwd_off = np.cumsum(per_node) - per_node
        n_rows = int(fwd_off[-1] + per_node[-1])
        fwd = np.full((n_rows, m), -1, dtype=DTYPE_SLOT)
        fwd_n = np.zeros(n_rows, dtype=np.int32)
        n_threads = max(1, min(numba_threads(), b))
        sc = self._build_scratch(n_threads)
        if ep >= 0 or b > 1:
            run_split(build.plan_links, n_threads, t.metric_code, t.vectors, t.inv_norms, self.links0, links_up,
                      self.up_offset, self.deleted, ep, max_level, nodes, node_levels, is_new, m,
                      max(self.params.ef_construction, m), sc.visited[:n_threads], sc.tags,
                      sc.sd[:n_threads], sc.ss[:n_threads], fwd, fwd_n, fwd_off)
        ep, max_level = build.write_links(self.links0, links_up, self.up_offset, self.levels, ep, max_level,
                                          nodes, node_levels, is_new, fwd, fwd_n, fwd_off)
        self._upper = (links_up, int(ep), int(max_level))
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
        run_split(build.connect_back, n_threads, t.metric_code, t.vectors, t.inv_norms, self.links0, links_up,
                  self.up_offset, group_key // self._cap, (group_key % self._cap).astype(DTYPE_SLOT), group_start,
                  np.ascontiguousarray(sources), int(np.diff(group_start).max()))

    def remove(self, slots: np.ndarray) -> None:
        """Mark deleted: excluded from results, still used for traversal until compaction rebuilds the graph."""
        slots = self._slots_arg(slots)
        if slots.size == 0:
            return
        self._queue.remove(slots)
        if self.table.capacity > self._cap:
            self._grow_locked()
        self.deleted[slots] = 1

    @property
    def n_deleted(self) -> int:
        """Nodes in the graph marked deleted (not counting those waiting for a relink)."""
        n = self.table.n_slots
        dead = (self.deleted[:n] != 0) & (self.levels[:n] >= 0)
        waiting = self._queue.for_search()
        dead[waiting[waiting < n]] = False
        return int(np.count_nonzero(dead))

    def repair_connectivity(self, max_rounds: int = 8) -> int:
        """Link everything queued, then `_repair` the graph's reachability; returns the links added."""
        with self.lock:
            self.link_queued()
            return self._repair(max_rounds)

    def _repair(self, max_rounds: int = 8) -> int:
        """Link every live node that layer 0 no longer reaches from the entry point; returns the links added.

        SELECT-NEIGHBORS-HEURISTIC may drop a node's last incoming link when it shrinks a full list, and such a
        node can never be found. This sweep (a breadth-first search, O(n * m)) finds them and links each from its
        nearest reachable node. Linking runs it by itself once ``n_nodes / SWEEP_EVERY`` nodes have been
        (re)linked since the last sweep, which amortizes it to a few percent of the insert cost. Runs under
        ``self.lock``.
        """
        repair = load_kernels("hnsw_repair")
        self._unswept = 0
        links_up, ep, max_level = self._upper
        if ep < 0:
            return 0
        t = self.table
        n = min(t.n_slots, self._cap)
        total = 0
        queue = np.empty(self._cap, dtype=DTYPE_SLOT)
        sc = self._build_scratch(1)
        for _ in range(max_rounds):
            seen = np.zeros(self._cap, dtype=bool)
            repair.reachable_from(self.links0, np.array([ep], dtype=DTYPE_SLOT), seen, queue)
            lost = np.flatnonzero((self.levels[:n] >= 0) & (self.deleted[:n] == 0) & ~seen[:n]).astype(DTYPE_SLOT)
            # The entry point counts as reached because the search starts there, but layer 0 starts where the
            # descent ends: with no layer-0 link to it, the entry point (and what only it leads to) is found by
            # no query that descends elsewhere. It then gets a link like a lost node.
            if self.n_nodes > 1 and self.deleted[ep] == 0 and not (self.links0[:n] == ep).any():
                seen[ep] = False
                lost = np.concatenate([np.array([ep], dtype=DTYPE_SLOT), lost])
            if lost.size == 0:
                break
            added, replaced = repair.repair_reachability(t.metric_code, t.vectors, t.inv_norms, self.links0, links_up,
                                                         self.up_offset, self.deleted, ep, max_level, lost,
                                                         max(self.params.ef_construction, self.m), seen, queue,
                                                         sc.visited[0], sc.tags, sc.sd[0], sc.ss[0])
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

    def _scans_instead(self, allowed: np.ndarray, n_allowed: int | None, ef: int) -> bool:
        """Whether a query whose mask allows ``n_allowed`` slots (counted here if None) scans them exactly rather
        than walking the graph (see `scan_limit`)."""
        limit = self.scan_limit(ef)
        if limit < 0:
            return False
        if n_allowed is None:
            n_allowed = int(np.count_nonzero(allowed[: self.table.n_slots]))
        return n_allowed <= limit

    def _ef(self, k: int, ef: int | None, n_unlinked: int = 0) -> int:
        """Effective search width: ``max(ef or ef_search, k)``, never beyond the number of candidates (or k)."""
        e = max(int(ef) if ef else self.params.ef_search, k)
        return max(1, min(e, max(self.n_nodes + n_unlinked, k)))

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray, ef: int | None = None, *,
               spare: bool = False, n_allowed: int | None = None) -> tuple[np.ndarray, np.ndarray, SearchStats]:
        """K-NN-SEARCH (Alg. 5) for one query among the ``allowed`` live slots.

        Args:
            query: float32 (dim,).
            k: results wanted; fewer come back if fewer nodes are allowed.
            allowed: bool (>= n_slots,): the slots that may be returned (all nodes are walked through).
            ef: search width (default ``params.ef_search``; at least ``k`` is used).
            spare: return all of ``W`` (up to ``ef`` results), not just the first ``k``: the caller breaks a tie
                at the k-th place by id (they are ordered by distance, then slot).
            n_allowed: how many slots ``allowed`` allows, if the caller knows (else it is counted when the choice
                between a walk and an exact scan depends on it).

        Returns:
            ``(slots int32 (m,), distances float32 (m,), SearchStats)``, m <= k (or ef), best first by
                (distance, slot).
        """
        unlinked = self._queue.for_search()
        k = min(int(k), self.n_nodes + unlinked.size)
        if k <= 0:
            return _EMPTY_SLOTS, _EMPTY_DISTS, SearchStats()
        t = self.table
        q = self._query(query)
        allowed = self._mask(allowed)
        e = self._ef(k, ef, unlinked.size)
        kk = e if spare else k
        links_up, ep, max_level = self._upper
        levels, links0, up_offset, deleted = self.levels, self.links0, self.up_offset, self.deleted
        sc = self._scratch_for(1, e)
        try:
            if self._scans_instead(allowed, n_allowed, e):
                found, n_dist, hops = load_kernels("hnsw_exact").exact_knn_search(
                    t.metric_code, q, t.vectors, t.inv_norms, levels, deleted, allowed, kk, sc.visited[0], sc.tags, 0,
                    sc.sd[0], sc.ss[0], unlinked)
            else:
                found, n_dist, hops = _search_kernels().knn_search(
                    t.metric_code, q, t.vectors, t.inv_norms, links0, links_up, up_offset, levels, deleted, allowed,
                    ep, max_level, kk, e, sc.visited[0], sc.tags, 0, sc.sd[0], sc.ss[0], unlinked, IN_PYTHON, -1)
                if unlinked.shape[0]:  # a backlog: merge its exact distances in
                    found, nd = load_kernels("hnsw_exact").fold_unlinked_into(
                        t.metric_code, q, t.vectors, t.inv_norms, allowed, unlinked, sc.sd[0], sc.ss[0], sc.cap, e,
                        found, kk)
                    n_dist += nd
            cap = sc.cap
            out = sc.ss[0, cap:cap + found].copy(), sc.sd[0, cap:cap + found].copy(), SearchStats(n_dist, hops)
        finally:
            self._give_back(sc)
        return out

    def top(self, q: np.ndarray, k: int, allowed: np.ndarray, ef: int | None,
            n_allowed: int | None = None, slot: int = -1) -> tuple[np.ndarray, np.ndarray, int]:
        """`search` with ``spare=True`` for the store's query path, which has already checked its arguments (``q``
        float32 (dim,) C-contiguous and writable, ``allowed`` bool (>= n_slots,) likewise, ``1 <= k``): no checks,
        no copies beyond the results.

        ``slot``: the calling thread's slot in `vecstore_ref.handoff.IN_PYTHON`, set by `VecStore.query` (or -1):
        the walk hands the GIL over through it. Paths with a second kernel (an exact scan, a backlog to fold in)
        clear the slot first and do not use it.

        Returns:
            ``(slots int32, distances float32, distance computations)``: up to ``ef`` results by (distance, slot).
        """
        unlinked = self._queue.for_search()
        n_cand = self.n_nodes + unlinked.shape[0]
        if n_cand <= 0:
            return _EMPTY_SLOTS, _EMPTY_DISTS, 0
        if k > n_cand:
            k = n_cand
        e = ef or self.params.ef_search
        if e < k:
            e = k
        if e > n_cand:
            e = max(n_cand, k)
        t = self.table
        links_up, ep, max_level = self._upper
        sc = self._scratch_for(1, e)
        try:
            # (most queries allow more than half the nodes, which `scan_limit` never scans: no arithmetic then)
            if (n_allowed is None or 2 * n_allowed <= self.n_nodes) and self._scans_instead(allowed, n_allowed, e):
                if slot >= 0:
                    FLAGS[slot] = 0
                found, n_dist, _ = load_kernels("hnsw_exact").exact_knn_search(
                    t.metric_code, q, t.vectors, t.inv_norms, self.levels, self.deleted, allowed, e, sc.visited[0],
                    sc.tags, 0, sc.sd[0], sc.ss[0], unlinked)
            else:
                if unlinked.shape[0] and slot >= 0:
                    FLAGS[slot] = 0
                    slot = -1
                found, n_dist, _ = _search_kernels().knn_search(
                    t.metric_code, q, t.vectors, t.inv_norms, self.links0, links_up, self.up_offset, self.levels,
                    self.deleted, allowed, ep, max_level, e, e, sc.visited0, sc.tags, 0, sc.sd0, sc.ss0,
                    unlinked, IN_PYTHON, slot)
                if slot >= 0:
                    FLAGS[slot] = 1  # back in this query's Python, holding the GIL
                if unlinked.shape[0]:  # a backlog: merge its exact distances in
                    found, nd = load_kernels("hnsw_exact").fold_unlinked_into(
                        t.metric_code, q, t.vectors, t.inv_norms, allowed, unlinked, sc.sd[0], sc.ss[0], sc.cap, e,
                        found, e)
                    n_dist += nd
            cap = sc.cap
            slots = sc.ss0[cap:cap + found].copy()
            dists = sc.sd0[cap:cap + found].copy()
        finally:
            self._give_back(sc)
        return slots, dists, n_dist

    # --- filtered walks (kernels in vecstore_ref.kernels.filtered_search) --------------------------------------

    def filtered_top(self, q: np.ndarray, k: int, allowed: np.ndarray, ef: int | None, selectivity: float
                     ) -> tuple[list[int], np.ndarray, int, int]:
        """The graph walk restricted to the ``allowed`` nodes (ACORN-style, see
        `vecstore_ref.kernels.filtered_search`), for the store's checked arguments as `top` takes them.

        ``selectivity``: the fraction of the nodes that are allowed (the walk compares it with what it meets
        near its entry point, to notice a filter anti-correlated with the query).

        Returns:
            ``(slots, distances float32, distance computations, hops)``: up to ``ef`` results (``ef x
            FILTER_WIDEN`` for an anti-correlated filter) by (distance, slot).
        """
        unlinked = self._queue.for_search()
        n_cand = self.n_nodes + unlinked.shape[0]
        if n_cand <= 0:
            return [], _EMPTY_DISTS, 0, 0
        e = self._ef(min(k, n_cand), ef, unlinked.shape[0])
        wide = max(e, int(e * FILTER_WIDEN))
        t = self.table
        links_up, ep, max_level = self._upper
        sc = self._scratch_for(1, wide)
        try:
            found, n_dist, hops = load_kernels("filtered_search").filtered_knn_search(
                t.metric_code, q, t.vectors, t.inv_norms, self.links0, links_up, self.up_offset, self.levels,
                self.deleted, allowed, ep, max_level, e, wide, sc.visited[0], sc.tags, 0, sc.sd[0], sc.ss[0],
                unlinked, self.m * FILTER_GATHER, FILTER_SEEDS, float(selectivity))
            cap = sc.cap
            slots = sc.ss[0, cap:cap + found].tolist()
            dists = sc.sd[0, cap:cap + found].copy()
        finally:
            self._give_back(sc)
        return slots, dists, int(n_dist), int(hops)

    def filtered_search_batch(self, queries: np.ndarray, k: int, allowed: np.ndarray, ef: int | None,
                              selectivity: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """`filtered_top` for every row of ``queries`` (float32 (nq, dim), checked by the caller), in parallel.

        Returns:
            ``(slots, distances, distance computations, hops)``: int32 (nq, w) padded -1, float32 (nq, w) padded
            +inf, int64 (nq,) and int64 (nq,), ``w`` the widest ``W``; row i holds what `filtered_top` returns
            for query i.
        """
        nq = queries.shape[0]
        unlinked = self._queue.for_search()
        n_cand = self.n_nodes + unlinked.shape[0]
        e = self._ef(max(1, min(k, n_cand)), ef, unlinked.shape[0])
        wide = max(e, int(e * FILTER_WIDEN))
        out_d = np.full((nq, wide), np.inf, dtype=DTYPE_VEC)
        out_s = np.full((nq, wide), -1, dtype=DTYPE_SLOT)
        n_dist = np.zeros(nq, dtype=np.int64)
        hops = np.zeros(nq, dtype=np.int64)
        if nq == 0 or n_cand <= 0:
            return out_s, out_d, n_dist, hops
        t = self.table
        n_threads = max(1, min(numba_threads(), nq))
        links_up, ep, max_level = self._upper
        sc = self._scratch_for(n_threads, wide)
        try:
            run_split(
                load_kernels("filtered_batch").filtered_knn_search_batch, n_threads, t.metric_code, queries,
                t.vectors, t.inv_norms, self.links0, links_up, self.up_offset, self.levels, self.deleted, allowed, ep,
                max_level, e, wide, sc.visited[:n_threads], sc.tags, sc.sd[:n_threads], sc.ss[:n_threads], unlinked,
                self.m * FILTER_GATHER, FILTER_SEEDS, float(selectivity), out_d, out_s, n_dist, hops)
        finally:
            self._give_back(sc)
        return out_s, out_d, n_dist, hops

    def search_batch(self, queries: np.ndarray, k: int, allowed: np.ndarray, ef: int | None = None, *,
                     spare: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """K-NN-SEARCH for every row of ``queries`` (float32 (nq, dim)), the queries spread over the threads.

        Returns:
            ``(slots int32 (nq, w) padded -1, distances float32 (nq, w) padded +inf, distance computations int64
                (nq,), hops int64 (nq,))`` with ``w = min(k, n_slots)`` (with ``spare``: up to ``ef`` columns, as
                for `search`); row i equals ``search(queries[i], ...)``.
        """
        t = self.table
        Q = queries
        if not (type(Q) is np.ndarray and Q.dtype == DTYPE_VEC and Q.flags.c_contiguous and Q.flags.writeable):
            Q = np.array(Q, dtype=DTYPE_VEC, order="C")
        if Q.ndim != 2 or Q.shape[1] != t.dim:
            raise InvalidArgumentError(f"queries must have shape (nq, {t.dim}), got {Q.shape}")
        nq = Q.shape[0]
        unlinked = self._queue.for_search()
        # (n_nodes is read once: the linker changes it, and counts a chunk in flight that `unlinked` holds too)
        n_cand = self.n_nodes + unlinked.size
        kk = min(int(k), t.n_slots, n_cand)
        e = self._ef(max(kk, 1), ef, unlinked.size)
        w = max(0, min(e if spare else int(k), t.n_slots))
        out_d = np.full((nq, w), np.inf, dtype=DTYPE_VEC)
        out_s = np.full((nq, w), -1, dtype=DTYPE_SLOT)
        n_dist = np.zeros(nq, dtype=np.int64)
        hops = np.zeros(nq, dtype=np.int64)
        if nq == 0 or kk == 0:
            return out_s, out_d, n_dist, hops
        if spare:
            kk = min(e, w, n_cand)
        allowed = self._mask(allowed)
        n_threads = max(1, min(numba_threads(), nq))
        links_up, ep, max_level = self._upper
        levels, links0, up_offset, deleted = self.levels, self.links0, self.up_offset, self.deleted
        res_d = out_d if kk == w else np.full((nq, kk), np.inf, dtype=DTYPE_VEC)
        res_s = out_s if kk == w else np.full((nq, kk), -1, dtype=DTYPE_SLOT)
        sc = self._scratch_for(n_threads, e)
        try:
            run_split(
                load_kernels("hnsw_batch").knn_search_batch, n_threads, t.metric_code, Q, t.vectors, t.inv_norms,
                links0, links_up, up_offset, levels, deleted, allowed, ep, max_level, e, sc.visited[:n_threads],
                sc.tags, sc.sd[:n_threads], sc.ss[:n_threads], self.scan_limit(e), unlinked, res_d, res_s, n_dist,
                hops)
        finally:
            self._give_back(sc)
        if kk != w:
            out_d[:, :kk], out_s[:, :kk] = res_d, res_s
        return out_s, out_d, n_dist, hops

    # --- persistence ------------------------------------------------------------------------------------------

    def capture(self, n: int) -> tuple[dict, dict[str, np.ndarray]]:
        """``(meta, arrays)`` of the graph over slots ``0 .. n-1`` for a snapshot, without linking anything.

        Slots not linked yet are saved with level -1 (the loader queues them again). The caller keeps linking
        paused (`pause_linking`) until the arrays are written: they are views, except ``deleted``, which writers
        change and is copied.
        """
        links_up, ep, max_level = self._upper
        levels = self.levels[:n]
        links0 = self.links0[:n]
        outside = np.flatnonzero(levels < 0)
        if outside.size:
            links0[outside] = -1  # rows never written (np.empty) or of nodes whose linking failed
        state = self._rng.bit_generator.state
        meta = {"format": FORMAT_VERSION, "m": self.m, "ep": ep, "max_level": max_level,
                "n_nodes": int(np.count_nonzero(levels >= 0)), "n_up_rows": self.n_up_rows,
                "unswept": self._unswept,
                "rng": {"bit_generator": state["bit_generator"], "state": str(state["state"]["state"]),
                        "inc": str(state["state"]["inc"]), "has_uint32": int(state["has_uint32"]),
                        "uinteger": int(state["uinteger"])}}
        arrays = {"levels": levels, "links0": links0, "up_offset": self.up_offset[:n],
                  "deleted": self.deleted[:n].copy(), "links_up": links_up[: self.n_up_rows]}
        return meta, arrays

    def to_arrays(self) -> tuple[dict, dict[str, np.ndarray]]:
        """``(meta, arrays)`` of the whole graph as copies (for callers of the index itself)."""
        self.pause_linking()
        try:
            with self.lock:
                meta, arrays = self.capture(self.table.n_slots)
                return meta, {k: v.copy() for k, v in arrays.items()}
        finally:
            self.resume_linking()

    @classmethod
    def from_arrays(cls, table: VectorTable, params: HNSWParams, meta: dict, arrays: dict, *,
                    background: bool = False, mapped: np.ndarray | None = None,
                    buffers: dict | None = None) -> HNSWIndex | None:
        """Load a saved graph without rebuilding it, after checking every shape and bound.

        ``mapped`` (bool (n_slots,)): the slots holding records; those the saved graph did not link yet are
        queued. ``buffers``: capacity-sized arrays the snapshot reader filled in place (``levels``, ``links0``,
        ``up_offset``, ``deleted``), adopted instead of copied. Returns None for a graph of format 1 (rebuilt by
        the caller from the vectors). A graph that fails a check raises `CorruptSnapshotError`: no bad index ever
        reaches a kernel.
        """
        if meta.get("format") == 1:
            return None
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
        for name in ("levels", "links0", "up_offset", "deleted"):
            full = (buffers or {}).get(name)
            if full is not None and full.shape[0] >= idx._cap and np.shares_memory(full, arrays[name]):
                setattr(idx, name, full[: idx._cap])
            else:
                getattr(idx, name)[:n] = arrays[name]
        links_up = np.full((max(16, fields["n_up_rows"]), params.m), -1, dtype=DTYPE_SLOT)
        links_up[: fields["n_up_rows"]] = arrays["links_up"]
        idx._upper = (links_up, fields["ep"], fields["max_level"])
        idx.n_up_rows = fields["n_up_rows"]
        idx.n_nodes, idx._unswept = fields["n_nodes"], fields["unswept"]
        if mapped is not None:
            pending = np.flatnonzero(mapped[:n] & (idx.levels[:n] < 0)).astype(DTYPE_SLOT)
            if pending.size:
                idx.add(pending)
        return idx

    @classmethod
    def preload_kernels(cls, metric: str = "euclidean") -> None:
        """Load (or compile) the search kernel by one search on a graph of one node, through `search` itself, so
        that the argument types are exactly those of a real query. The store calls it on a thread while it reads
        its snapshot, so that a first query does not wait for Numba."""
        table = VectorTable(4, metric, 16)
        table.write(table.allocate(1), np.ones((1, 4), dtype=DTYPE_VEC))
        idx = cls(table, HNSWParams(m=2, ef_construction=4, ef_search=4))
        idx.levels[0] = 0
        idx.links0[0] = -1
        idx._upper = (idx._upper[0], 0, 0)
        idx.n_nodes = 1
        allowed = np.ones(table.capacity, dtype=np.bool_)
        idx.search(np.ones(4, dtype=DTYPE_VEC), 1, allowed, spare=True)

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
            n = self.table.n_slots
            outside = np.flatnonzero(self.levels[:n] < 0)
            if outside.size:
                self.links0[outside] = -1  # rows never written (see _grow): the checks read every row
            return graph_problems(self)
