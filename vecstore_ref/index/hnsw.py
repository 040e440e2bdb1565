"""HNSW: the approximate index (Malkov & Yashunin 2018), as Python orchestration over Numba kernels.

The graph is a handful of arrays indexed by slot (the kernels' docstrings give the layouts):

==============  ==============================  ==========================================================
array           dtype, shape                    meaning
==============  ==============================  ==========================================================
``levels``      int8 (capacity,)                a node's top layer; -1 = not in the graph
``links0``      int32 (capacity, 2m)            layer-0 neighbours, -1 = empty
``deg0``        int32 (capacity,)               how many of them are set
``upper_row``   int32 (capacity,)               the node's row in ``links_up`` (-1 for level-0 nodes)
``links_up``    int32 (rows, MAX_LEVEL, m)      neighbours on layers 1.., for the ~1/m nodes that reach them
``deg_up``      int32 (rows, MAX_LEVEL)         their counts
``deleted``     bool (capacity,)                marked deleted: traversed, never returned
==============  ==============================  ==========================================================

Levels are drawn here, in Python, from ``np.random.Generator(seed)`` (``floor(-ln(U) / ln(m))``), and passed to
the kernels as arrays, so the same inserts with the same seed give the same graph. The generator's state is saved
with the graph. The parameter guide is ``docs/concepts/hnsw.md``.
"""

from __future__ import annotations

import math

import numpy as np

from ..config import HNSWParams
from ..errors import CorruptSnapshotError
from .base import DTYPE_SLOT, DTYPE_VEC, SearchStats, VectorTable, query_inv_norm

MAX_LEVEL = 16  # P(level >= 16) = m**-16: never reached in practice; draws are clamped to 15
BUILD_BATCH = 512  # nodes whose neighbour searches run in parallel before they are linked in order


def _threads() -> int:
    from numba import get_num_threads

    return max(1, get_num_threads())


class HNSWIndex:
    kind = "hnsw"

    def __init__(self, table: VectorTable, params: HNSWParams):
        self.table = table
        self.params = params
        self.m = params.m
        self._rng = np.random.default_rng(params.seed)
        self._level_mult = 1.0 / math.log(max(2, self.m))
        self.ep = -1
        self.max_level = -1
        self.n_nodes = 0
        self.n_upper = 0
        self._cap = 0
        self.levels = np.zeros(0, dtype=np.int8)
        self.links0 = np.zeros((0, 2 * self.m), dtype=DTYPE_SLOT)
        self.deg0 = np.zeros(0, dtype=np.int32)
        self.upper_row = np.zeros(0, dtype=DTYPE_SLOT)
        self.deleted = np.zeros(0, dtype=bool)
        self.links_up = np.full((16, MAX_LEVEL, self.m), -1, dtype=DTYPE_SLOT)
        self.deg_up = np.zeros((16, MAX_LEVEL), dtype=np.int32)
        self._visited = np.zeros((1, 0), dtype=np.uint32)
        self._tags = np.zeros(1, dtype=np.uint32)
        self._scratch_d = np.zeros(0, dtype=DTYPE_VEC)
        self._scratch_s = np.zeros(0, dtype=DTYPE_SLOT)
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
        self.deg0 = grown(self.deg0, 0, cap)
        self.upper_row = grown(self.upper_row, -1, cap)
        self.deleted = grown(self.deleted, False, cap)
        visited = np.zeros((self._visited.shape[0], cap), dtype=np.uint32)
        visited[:, :old] = self._visited[:, :old]
        self._visited = visited
        self._scratch_d = np.empty(cap, dtype=DTYPE_VEC)
        self._scratch_s = np.empty(cap, dtype=DTYPE_SLOT)
        self._cap = cap

    def _visited_rows(self, n: int) -> None:
        if self._visited.shape[0] < n:
            visited = np.zeros((n, self._cap), dtype=np.uint32)
            visited[: self._visited.shape[0]] = self._visited
            tags = np.zeros(n, dtype=np.uint32)
            tags[: self._tags.shape[0]] = self._tags
            self._visited, self._tags = visited, tags

    def _upper_rows(self, n_new: int) -> np.ndarray:
        """Allocate ``n_new`` rows of the upper-layer arrays; returns their numbers."""
        need = self.n_upper + n_new
        if need > self.links_up.shape[0]:
            size = max(need, 2 * self.links_up.shape[0])
            links = np.full((size, MAX_LEVEL, self.m), -1, dtype=DTYPE_SLOT)
            links[: self.n_upper] = self.links_up[: self.n_upper]
            deg = np.zeros((size, MAX_LEVEL), dtype=np.int32)
            deg[: self.n_upper] = self.deg_up[: self.n_upper]
            self.links_up, self.deg_up = links, deg
        rows = np.arange(self.n_upper, need, dtype=DTYPE_SLOT)
        self.n_upper = need
        return rows

    def _draw_levels(self, n: int) -> np.ndarray:
        u = 1.0 - self._rng.random(n)  # in (0, 1]
        return np.minimum(np.floor(-np.log(u) * self._level_mult), MAX_LEVEL - 1).astype(np.int8)

    # --- the Index protocol -----------------------------------------------------------------------------------

    def add(self, slots: np.ndarray) -> None:
        """Insert new slots (INSERT, Alg. 1) and relink slots already in the graph whose vectors changed."""
        self._grow()
        slots = np.asarray(slots, dtype=DTYPE_SLOT)
        if slots.size == 0:
            return
        self.deleted[slots] = False
        in_graph = self.levels[slots] >= 0
        new = slots[~in_graph]
        if new.size:
            lv = self._draw_levels(new.size)
            high = new[lv > 0]
            if high.size:
                self.upper_row[high] = self._upper_rows(high.size)
            for start in range(0, new.size, BUILD_BATCH):
                self._insert_batch(new[start : start + BUILD_BATCH], lv[start : start + BUILD_BATCH], True)
            self.n_nodes += new.size
        old = slots[in_graph]
        for start in range(0, old.size, BUILD_BATCH):
            chunk = old[start : start + BUILD_BATCH]
            self._insert_batch(chunk, self.levels[chunk].copy(), False)
        if slots.size >= BUILD_BATCH:
            self.repair_connectivity()

    def _reachable(self) -> np.ndarray:
        """bool (n_slots,): nodes reachable from the entry point on layer 0 (breadth-first, vectorized)."""
        n = self.table.n_slots
        seen = np.zeros(n, dtype=bool)
        if self.ep < 0:
            return seen
        seen[self.ep] = True
        frontier = np.array([self.ep])
        while frontier.size:
            nb = self.links0[frontier]
            nb = np.unique(nb[nb >= 0])
            nb = nb[~seen[nb]]
            seen[nb] = True
            frontier = nb
        return seen

    def repair_connectivity(self, max_rounds: int = 8) -> int:
        """Give every live node that the heuristic's pruning left unreachable an in-link from its nearest
        reachable node (replacing that node's farthest link). Returns how many links were added.

        Pruning in SELECT-NEIGHBORS-HEURISTIC can drop a node's last in-link; such a node can never be found.
        hnswlib leaves them; a reference that promises ``check_integrity()`` repairs them after bulk inserts.
        """
        added = 0
        n = self.table.n_slots
        for _ in range(max_rounds):
            live = (self.levels[:n] >= 0) & ~self.deleted[:n]
            lost = np.flatnonzero(live & ~self._reachable())
            if lost.size == 0:
                break
            allowed = self._reachable()
            allowed_full = np.zeros(self._cap, dtype=bool)
            allowed_full[:n] = allowed
            X = self.table.vectors
            for u in lost.tolist():
                slots, _, _ = self.search(X[u], 16, allowed_full, ef=self.params.ef_construction)
                if slots.size == 0:
                    continue
                spare = slots[self.deg0[slots] < 2 * self.m]  # prefer a near node with room: nothing is displaced
                w = int(spare[0]) if spare.size else int(slots[0])
                deg = int(self.deg0[w])
                if deg < 2 * self.m:
                    self.links0[w, deg] = u
                    self.deg0[w] = deg + 1
                else:
                    row = self.links0[w, :deg]
                    far = int(np.argmax(((X[row] - X[w]) ** 2).sum(axis=1)))
                    self.links0[w, far] = u
                added += 1
        return added

    def _insert_batch(self, nodes: np.ndarray, node_levels: np.ndarray, are_new: bool) -> None:
        from ..kernels.hnsw_build import link_batch, search_candidates_batch

        t = self.table
        b = nodes.size
        ef = max(self.params.ef_construction, self.m)
        cand_d = np.empty((b, ef), dtype=DTYPE_VEC)
        cand_s = np.empty((b, ef), dtype=DTYPE_SLOT)
        cand_n = np.zeros(b, dtype=np.int64)
        counters = np.zeros((max(1, min(_threads(), b)), 2), dtype=np.int64)
        if self.ep >= 0:
            n_chunks = counters.shape[0]
            self._visited_rows(n_chunks)
            search_candidates_batch(t.metric_code, t.vectors, t.inv_norms, self.links0, self.deg0, self.links_up,
                                    self.deg_up, self.upper_row, self.ep, self.max_level, nodes, ef,
                                    self._visited[:n_chunks], self._tags[:n_chunks], cand_d, cand_s, cand_n,
                                    counters)
        before = np.full(b, 1 if are_new else 0, dtype=np.int8)
        ep, max_level, tag = link_batch(t.metric_code, t.vectors, t.inv_norms, self.links0, self.deg0, self.links_up,
                                        self.deg_up, self.upper_row, self.levels, self.ep, self.max_level, nodes,
                                        node_levels.astype(np.int8), cand_d, cand_s, cand_n, before, self.m, ef,
                                        self._visited[0], self._tags[0], counters[0])
        self.ep, self.max_level, self._tags[0] = int(ep), int(max_level), tag

    def remove(self, slots: np.ndarray) -> None:
        """Mark deleted: excluded from results, still used for traversal until compaction rebuilds the graph."""
        self.deleted[np.asarray(slots, dtype=DTYPE_SLOT)] = True

    @property
    def n_deleted(self) -> int:
        return int(np.count_nonzero(self.deleted[: self.table.n_slots] & (self.levels[: self.table.n_slots] >= 0)))

    def _ef(self, k: int, ef: int | None) -> int:
        return max(int(ef or self.params.ef_search), int(k), 1)

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray, ef: int | None = None):
        """K-NN-SEARCH (Alg. 5) for one query among ``allowed`` slots; ``(slots, dists, SearchStats)``."""
        from ..kernels.hnsw_search import knn_search

        t = self.table
        k = min(int(k), self.n_nodes)
        if k <= 0 or self.ep < 0:
            return np.zeros(0, DTYPE_SLOT), np.zeros(0, DTYPE_VEC), SearchStats()
        self._grow()
        ef = self._ef(k, ef)
        q = np.ascontiguousarray(query, dtype=DTYPE_VEC)
        res_d = np.empty(ef, dtype=DTYPE_VEC)
        res_s = np.empty(ef, dtype=DTYPE_SLOT)
        counters = np.zeros(2, dtype=np.int64)
        tag = self._tags[0] + np.uint32(1)
        if tag == 0:
            self._visited[0, :] = 0
            tag = np.uint32(1)
        self._tags[0] = tag
        found = knn_search(t.metric_code, q, query_inv_norm(t.metric, q), t.vectors, t.inv_norms, self.links0,
                           self.deg0, self.links_up, self.deg_up, self.upper_row, self.ep, self.max_level, allowed,
                           self._visited[0], tag, self._scratch_d, self._scratch_s, res_d, res_s, counters)
        n = min(found, k)
        return res_s[:n].copy(), res_d[:n].copy(), SearchStats(int(counters[0]), int(counters[1]))

    def search_batch(self, queries: np.ndarray, k: int, allowed: np.ndarray, ef: int | None = None):
        """K-NN-SEARCH for every row of ``queries`` in parallel; padded ``(slots, dists, n_dist, hops)``."""
        from ..kernels.hnsw_search import knn_search_batch

        t = self.table
        Q = np.ascontiguousarray(queries, dtype=DTYPE_VEC)
        nq = Q.shape[0]
        kk = max(0, min(int(k), self.n_nodes))
        out_d = np.full((nq, kk), np.inf, dtype=DTYPE_VEC)
        out_s = np.full((nq, kk), -1, dtype=DTYPE_SLOT)
        counters = np.zeros((nq, 2), dtype=np.int64)
        if nq and kk and self.ep >= 0:
            self._grow()
            if t.metric == "cosine":
                inv = (1.0 / np.linalg.norm(Q.astype(np.float64), axis=1)).astype(DTYPE_VEC)
            else:
                inv = np.ones(nq, dtype=DTYPE_VEC)
            n_chunks = max(1, min(_threads(), nq))
            self._visited_rows(n_chunks)
            found = np.zeros(nq, dtype=np.int64)
            knn_search_batch(t.metric_code, Q, inv, t.vectors, t.inv_norms, self.links0, self.deg0, self.links_up,
                             self.deg_up, self.upper_row, self.ep, self.max_level, allowed,
                             self._visited[:n_chunks], self._tags[:n_chunks], self._ef(kk, ef), out_d, out_s, found,
                             counters)
        return out_s, out_d, counters[:, 0].copy(), counters[:, 1].copy()

    # --- persistence ------------------------------------------------------------------------------------------

    def to_arrays(self) -> tuple[dict, dict[str, np.ndarray]]:
        n = self.table.n_slots
        meta = {"params": self.params.to_dict(), "ep": self.ep, "max_level": self.max_level,
                "n_nodes": self.n_nodes, "n_upper": self.n_upper, "rng": self._rng.bit_generator.state}
        arrays = {"levels": self.levels[:n], "links0": self.links0[:n], "deg0": self.deg0[:n],
                  "upper_row": self.upper_row[:n], "deleted": self.deleted[:n],
                  "links_up": self.links_up[: self.n_upper], "deg_up": self.deg_up[: self.n_upper]}
        return meta, arrays

    @classmethod
    def from_arrays(cls, table: VectorTable, params: HNSWParams, meta: dict, arrays: dict) -> HNSWIndex:
        """Load a saved graph, checking every shape and bound first (a bad graph must never reach a kernel)."""
        idx = cls(table, params)
        n = table.n_slots
        try:
            levels, links0, deg0 = arrays["levels"], arrays["links0"], arrays["deg0"]
            upper_row, deleted = arrays["upper_row"], arrays["deleted"]
            links_up, deg_up = arrays["links_up"], arrays["deg_up"]
            n_upper, ep, max_level = int(meta["n_upper"]), int(meta["ep"]), int(meta["max_level"])
            ok = (
                levels.shape == (n,) and links0.shape == (n, 2 * idx.m) and deg0.shape == (n,)
                and upper_row.shape == (n,) and deleted.shape == (n,)
                and links_up.shape == (n_upper, MAX_LEVEL, idx.m) and deg_up.shape == (n_upper, MAX_LEVEL)
                and -1 <= ep < n and -1 <= max_level < MAX_LEVEL
                and ((levels >= -1) & (levels < MAX_LEVEL)).all()
                and ((deg0 >= 0) & (deg0 <= 2 * idx.m)).all() and ((deg_up >= 0) & (deg_up <= idx.m)).all()
                and ((links0 >= -1) & (links0 < n)).all() and ((links_up >= -1) & (links_up < n)).all()
                and ((upper_row >= -1) & (upper_row < n_upper)).all()
                and ((levels <= 0) | (upper_row >= 0)).all()
                and (ep < 0 or levels[ep] == max_level)
            )
            if ok:
                # Every link inside a node's degree must point at a node in the graph.
                used0 = np.arange(2 * idx.m)[None, :] < deg0[:, None]
                targets = links0[used0]
                ok = bool((targets >= 0).all() and (levels[targets] >= 0).all())
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise CorruptSnapshotError(f"the saved HNSW graph is malformed: {exc}") from None
        if not ok:
            raise CorruptSnapshotError("the saved HNSW graph has out-of-range shapes or links")
        idx.levels[:n], idx.links0[:n], idx.deg0[:n] = levels, links0, deg0
        idx.upper_row[:n], idx.deleted[:n] = upper_row, deleted
        idx._upper_rows(n_upper)
        idx.links_up[:n_upper], idx.deg_up[:n_upper] = links_up, deg_up
        idx.ep, idx.max_level = ep, max_level
        idx.n_nodes = int(np.count_nonzero(levels >= 0))
        if "rng" in meta:
            try:
                idx._rng.bit_generator.state = meta["rng"]
            except (TypeError, ValueError, KeyError) as exc:
                raise CorruptSnapshotError(f"the saved HNSW generator state is malformed: {exc}") from None
        return idx

    def memory_bytes(self) -> int:
        """Bytes held by the graph (not the vectors, which the store's table holds)."""
        return int(sum(a.nbytes for a in (self.levels, self.links0, self.deg0, self.upper_row, self.deleted))
                   + self.links_up[: self.n_upper].nbytes + self.deg_up[: self.n_upper].nbytes)

    # --- diagnostics ------------------------------------------------------------------------------------------

    def check_integrity(self) -> list[str]:
        """Problems found in the graph (an empty list means none): self-links, duplicate links, degrees out of
        bounds, links to slots outside the graph, and live nodes not reachable from the entry point on layer 0."""
        problems: list[str] = []
        n = self.table.n_slots
        in_graph = self.levels[:n] >= 0
        nodes = np.flatnonzero(in_graph)
        if self.n_nodes != nodes.size:
            problems.append(f"n_nodes is {self.n_nodes} but {nodes.size} slots are in the graph")
        layers = [(0, self.links0[:n], self.deg0[:n], 2 * self.m, nodes)]
        for level in range(1, MAX_LEVEL):
            members = nodes[self.levels[nodes] >= level]
            if members.size == 0:
                break
            rows = self.upper_row[members]
            layers.append((level, self.links_up[rows, level - 1], self.deg_up[rows, level - 1], self.m, members))
        for level, links, deg, max_deg, members in layers:
            links_m = links[members] if level == 0 else links
            deg_m = deg[members] if level == 0 else deg
            if (deg_m > max_deg).any() or (deg_m < 0).any():
                problems.append(f"layer {level}: degree out of [0, {max_deg}]")
                continue
            used = np.arange(links_m.shape[1])[None, :] < deg_m[:, None]
            if (links_m[used] < 0).any() or (links_m[~used] != -1).any():
                problems.append(f"layer {level}: link slots and degrees disagree")
                continue
            if (links_m == members[:, None]).any():
                problems.append(f"layer {level}: a node links to itself")
            s = np.sort(np.where(used, links_m, -1), axis=1)
            if ((s[:, 1:] == s[:, :-1]) & (s[:, 1:] >= 0)).any():
                problems.append(f"layer {level}: duplicate links")
            targets = links_m[used]
            if targets.size and ((targets >= n) | ~in_graph[np.minimum(targets, n - 1)]).any():
                problems.append(f"layer {level}: a link points outside the graph")
            if targets.size and (self.levels[targets] < level).any():
                problems.append(f"layer {level}: a link points at a node below this layer")
        if nodes.size:
            if self.ep < 0 or not in_graph[self.ep]:
                problems.append("the entry point is not in the graph")
                return problems
            seen = np.zeros(n, dtype=bool)
            seen[self.ep] = True
            frontier = np.array([self.ep])
            while frontier.size:
                nb = self.links0[frontier]
                nb = nb[nb >= 0]
                nb = nb[~seen[nb]]
                nb = np.unique(nb)
                seen[nb] = True
                frontier = nb
            live = in_graph & ~self.deleted[:n]
            unreachable = int(np.count_nonzero(live & ~seen))
            if unreachable:
                problems.append(f"{unreachable} live nodes are not reachable from the entry point on layer 0")
        return problems
