"""Structural checks of an HNSW graph: a saved graph before it is loaded, and a live one on demand.

Every value a kernel uses as an index is checked here, so a corrupt or hostile snapshot raises
`CorruptSnapshotError` instead of reaching compiled code, and `HNSWIndex.check_integrity` can list what is wrong
with a graph in memory.
"""

from __future__ import annotations

import numpy as np

from ..errors import CorruptSnapshotError
from .base import DTYPE_SLOT

MAX_LEVEL = 15  # levels are int8; P(level > 15) = m**-16 is never met in practice, and draws are clamped to it


def _int_field(meta: dict, name: str, lo: int, hi: int) -> int:
    v = meta[name]
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise CorruptSnapshotError(f"the saved HNSW graph has {name}={v!r}, expected an int in [{lo}, {hi}]")
    return v


def _array(arrays: dict, name: str, dtype, shape: tuple) -> np.ndarray:
    a = arrays[name]
    if not isinstance(a, np.ndarray) or a.dtype != dtype or a.shape != shape:
        got = (getattr(a, "dtype", type(a).__name__), getattr(a, "shape", None))
        raise CorruptSnapshotError(f"the saved HNSW array {name!r} is {got}, expected {np.dtype(dtype)} {shape}")
    return a


def validate_saved_graph(meta: dict, arrays: dict, n: int, m: int, format_version: int) -> dict:
    """Check a saved graph against the table's ``n`` slots and ``m``; returns its scalar fields.

    Every value a kernel uses as an index is bounds-checked here (links, row offsets, the entry point, and on
    layer l that every linked node reaches layer l, since its row there is looked up), so a corrupt or hostile
    snapshot raises `CorruptSnapshotError` instead of reaching compiled code.
    """
    if meta.get("format") != format_version:
        raise CorruptSnapshotError(f"unknown HNSW graph format {meta.get('format')!r}")
    if _int_field(meta, "m", 2, 256) != m:
        raise CorruptSnapshotError(f"the saved HNSW graph has m={meta['m']}, the store's parameters m={m}")
    n_up_rows = _int_field(meta, "n_up_rows", 0, max(0, n * MAX_LEVEL))
    levels = _array(arrays, "levels", np.int8, (n,))
    links0 = _array(arrays, "links0", DTYPE_SLOT, (n, 2 * m))
    up_offset = _array(arrays, "up_offset", DTYPE_SLOT, (n,))
    deleted = _array(arrays, "deleted", np.uint8, (n,))
    links_up = _array(arrays, "links_up", DTYPE_SLOT, (n_up_rows, m))
    fields = {"n_up_rows": n_up_rows, "unswept": _int_field(meta, "unswept", 0, 2**62),
              "n_nodes": _int_field(meta, "n_nodes", 0, n), "ep": _int_field(meta, "ep", -1, n - 1),
              "max_level": _int_field(meta, "max_level", -1, MAX_LEVEL)}
    if ((levels < -1) | (levels > MAX_LEVEL)).any() or (deleted > 1).any():
        raise CorruptSnapshotError("the saved HNSW graph has levels or deletion flags out of range")
    in_graph = levels >= 0
    if int(in_graph.sum()) != fields["n_nodes"]:
        raise CorruptSnapshotError("the saved HNSW graph's node count does not match its levels")
    ep, max_level = fields["ep"], fields["max_level"]
    if fields["n_nodes"] == 0:
        if ep != -1 or max_level != -1:
            raise CorruptSnapshotError("an empty saved HNSW graph has an entry point")
    elif ep < 0 or levels[ep] != max_level or max_level != int(levels.max()):
        raise CorruptSnapshotError("the saved HNSW entry point is not a node of the top layer")
    problem = _layer0_bounds_problem(links0, n)
    high = np.flatnonzero(levels >= 1)
    lv = levels[high].astype(np.int64)
    first = up_offset[high].astype(np.int64)
    if problem is None and ((first < 0) | (first + lv > n_up_rows)).any():
        problem = "an upper-layer row offset is out of range"
    if problem is None and (up_offset[levels < 1] != -1).any():
        problem = "a node without upper layers has a row offset"
    if problem is None and high.size:
        rows = np.repeat(first - np.cumsum(lv) + lv, lv) + np.arange(int(lv.sum()))
        if int(np.bincount(rows, minlength=1).max()) > 1:  # rows are in [0, n_up_rows): checked above
            problem = "two nodes share an upper-layer row"
        layer = np.arange(rows.size) - np.repeat(np.cumsum(lv) - lv, lv) + 1
        for level in range(1, MAX_LEVEL + 1):
            at = layer == level
            if problem is None and at.any():
                problem = _link_problem(links_up[rows[at]], levels, level, np.repeat(high, lv)[at], n)
    if problem is not None:
        raise CorruptSnapshotError(f"the saved HNSW graph is inconsistent: {problem}")
    return fields


def _layer0_bounds_problem(links0: np.ndarray, n: int) -> str | None:
    """What an open checks of layer 0, the one array of the graph as big as the vectors: that every link is -1 or
    a slot of the table. That is all a search needs to stay in bounds there: a layer-0 link is only ever used as
    a row of ``vectors`` and of ``links0``, and a link to a slot outside the graph (level -1) is harmless, since
    results are masked by visibility and that slot's row holds its own bounded links once it is linked. Gaps,
    self-links and repeats, which cost recall but never safety, are left to `HNSWIndex.check_integrity`: the
    sort they need would take longer than reading the snapshot. The upper layers, where a link's row is found
    through ``up_offset``, get every check (`_link_problem`); they hold about 1/m of the nodes."""
    if links0.size == 0:
        return None
    if int(links0.min()) < -1 or int(links0.max()) >= n:
        return "layer 0: a link points outside the table"
    return None


def _link_problem(rows: np.ndarray, levels: np.ndarray, level: int, owners: np.ndarray, n: int) -> str | None:
    """The first structural problem of neighbour ``rows`` (one per node of ``owners``) on ``level``, or None."""
    if rows.size == 0:
        return None
    if level == 0:
        rows = rows[owners]
    if ((rows < -1) | (rows >= n)).any():
        return f"layer {level}: a link points outside the table"
    used = rows >= 0
    if (used[:, 1:] & ~used[:, :-1]).any():
        return f"layer {level}: a neighbour list has a gap"
    targets = rows[used]
    if (levels[targets] < level).any():
        return f"layer {level}: a link points at a node that is not on this layer"
    if (rows == owners[:, None]).any():
        return f"layer {level}: a node links to itself"
    s = np.sort(rows, axis=1)
    if ((s[:, 1:] == s[:, :-1]) & (s[:, 1:] >= 0)).any():
        return f"layer {level}: a neighbour list repeats a node"
    return None


def graph_problems(idx) -> list[str]:
    """What `HNSWIndex.check_integrity` reports, collected over every layer."""
    from ..jit import load

    reachable_from = load("hnsw_repair").reachable_from
    n = idx.table.n_slots
    levels = idx.levels[:n]
    in_graph = levels >= 0
    nodes = np.flatnonzero(in_graph)
    problems: list[str] = []
    if idx.n_nodes != nodes.size:
        problems.append(f"n_nodes is {idx.n_nodes} but {nodes.size} slots are in the graph")
    p = _link_problem(idx.links0[:n], levels, 0, nodes, n)
    if p:
        problems.append(p)  # (rows of slots outside the graph are never read, so a live graph leaves them unset)
    for level in range(1, MAX_LEVEL + 1):
        members = nodes[levels[nodes] >= level]
        if members.size == 0:
            break
        rows = idx.up_offset[members].astype(np.int64) + level - 1
        if ((rows < 0) | (rows >= idx.n_up_rows)).any():
            problems.append(f"layer {level}: a row offset is out of range")
            continue
        p = _link_problem(idx.links_up[rows], levels, level, members, n)
        if p:
            problems.append(p)
    if nodes.size == 0:
        if idx.ep != -1:
            problems.append("an empty graph has an entry point")
        return problems
    if not (0 <= idx.ep < n and in_graph[idx.ep]):
        problems.append("the entry point is not in the graph")
        return problems
    if levels[idx.ep] != idx.max_level or idx.max_level != int(levels.max()):
        problems.append("the entry point is not on the top layer")
    if (idx.links0[nodes] >= n).any():
        problems.append("reachability not checked: layer-0 links point outside the table")
        return problems
    seen = np.zeros(idx.links0.shape[0], dtype=bool)
    reachable_from(idx.links0, np.array([idx.ep], dtype=DTYPE_SLOT), seen, np.empty(seen.size, dtype=DTYPE_SLOT))
    lost = int(np.count_nonzero(in_graph & (idx.deleted[:n] == 0) & ~seen[:n]))
    if lost:
        problems.append(f"{lost} live nodes are not reachable from the entry point on layer 0")
    return problems
