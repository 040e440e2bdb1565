"""The documentation's figures, drawn by one command from the code itself and from committed benchmark results.

    python -m benchmarks.figures                         # draw every figure whose inputs exist into docs/figures/
    python -m benchmarks.figures --check                 # exit 1 if a figure is missing or not drawn from its inputs
    python -m benchmarks.figures --measure filtered      # measure, write docs/figures/data/filtered.json, draw
    python -m benchmarks.figures --measure cost-model    # estimate_query against timed query()
    python -m benchmarks.figures --measure hnsw-params   # m, ef_construction, ef_search trade-offs
    python -m benchmarks.ann --datasets clustered --json docs/figures/data/ann.json   # the ANN results

There are two kinds of figure (the table ``FIGURES`` below lists them all):

- **From the code.** The HNSW figures run the real index (`vecstore_ref.index.hnsw.HNSWIndex`) on a few
  hundred 2-d points and re-walk its arrays in Python (`hnsw_trace`), step by step; the re-walk must find the
  same results with the same work counters as the Numba kernel, or no figure is drawn. The storage diagrams are
  drawn from the constants of ``vecstore_ref/storage/format.py`` and from bytes the real encoders write.
- **From results files** under ``docs/figures/data/`` (small JSON, committed): the benchmark scripts write them,
  and the figures are drawn from them, so CI can check figures against results without re-running benchmarks.

Every figure carries the SHA-256 of its inputs (the trace, or the results file) in its SVG metadata, and
``--check`` recomputes it: a figure is up to date when it was drawn from today's inputs. That check needs numpy and
numba only (the suite runs it, ``tests/test_docs_figures.py``); drawing needs matplotlib (the ``[bench]`` extra).
The results files' schemas are in ``docs/figures/data/README.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIG_DIR = ROOT / "docs" / "figures"
DATA_DIR = FIG_DIR / "data"
MAX_FIGURE_BYTES = 200_000  # every committed figure stays well under this
DIGEST_PREFIX = "source-sha256:"  # written into the SVG metadata (<dc:description>)

# The HNSW figures' graph: a few hundred 2-d points on a 1/256 grid in [0, 1)^2, so that every squared euclidean
# distance is exact in float32 (differences are multiples of 2**-8, squares of 2**-16, sums below 2): the kernel,
# this re-walk and any CPU compute the same bits, and the figure is the same on every machine.
GRID = 256
HNSW_POINTS = 240
HNSW_PARAMS = {"m": 4, "ef_construction": 32, "ef_search": 8, "seed": 6}  # m = 4: ~1 node in 4 per layer up
HNSW_QUERY = (0.390625, 0.5859375)  # 100/256, 150/256: inside a cluster, a move on every layer
HNSW_K = 4
HNSW_EF = 10


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- HNSW: the real graph, and a search re-walked step by step ------------------------------------------------------

def hnsw_points() -> np.ndarray:
    """float32 (n, 2): points on the 1/256 grid, in five loose clusters, no two equal."""
    rng = np.random.default_rng(11)
    centres = rng.uniform(0.15, 0.85, size=(5, 2))
    pts = centres[rng.integers(0, 5, 4 * HNSW_POINTS)] + rng.normal(0, 0.11, size=(4 * HNSW_POINTS, 2))
    grid = np.clip(np.round(pts * GRID), 0, GRID - 1).astype(np.int64)
    _, first = np.unique(grid[:, 0] * GRID + grid[:, 1], return_index=True)
    grid = grid[np.sort(first)][:HNSW_POINTS]
    return (grid / GRID).astype(np.float32)


def build_hnsw(points: np.ndarray):
    """The real index over ``points`` (euclidean), linked at once (no background thread), deterministic."""
    from vecstore_ref.config import HNSWParams
    from vecstore_ref.index.base import VectorTable
    from vecstore_ref.index.hnsw import HNSWIndex

    table = VectorTable(points.shape[1], "euclidean", points.shape[0])
    table.write(table.allocate(points.shape[0]), points)
    index = HNSWIndex(table, HNSWParams(**HNSW_PARAMS))
    index.add(np.arange(points.shape[0], dtype=np.int32))
    return index


def layer_links(index, node: int, level: int) -> list[int]:
    """The neighbour list of ``node`` on ``level``, read from the index's arrays (a list ends at its first -1)."""
    row = index.links0[node] if level == 0 else index.links_up[int(index.up_offset[node]) + level - 1]
    out = []
    for e in row.tolist():
        if e < 0:
            break
        out.append(int(e))
    return out


def hnsw_trace() -> dict:
    """Build the index, search it with the kernel, and re-walk the same search in Python, recording every step.

    The re-walk follows ``greedy_descend`` and ``search_layer`` of ``vecstore_ref/kernels/hnsw_search.py`` line for
    line (Malkov & Yashunin 2018, Alg. 5 then Alg. 2): ``C`` is a min-heap and ``W`` a bounded max-heap, both
    ordered by (distance, slot). Raises AssertionError unless it finds what the kernel found, with the same
    distance computations and hops.
    """
    from vecstore_ref.index.base import SearchStats

    points = hnsw_points()
    index = build_hnsw(points)
    n = points.shape[0]
    q = np.array(HNSW_QUERY, dtype=np.float32)
    allowed = np.zeros(index.table.capacity, dtype=bool)
    allowed[:n] = True
    k_slots, k_dists, stats = index.search(q, HNSW_K, allowed, HNSW_EF)
    assert isinstance(stats, SearchStats)

    def dist(i: int) -> float:
        d = points[i].astype(np.float64) - q.astype(np.float64)
        return float(d @ d)  # exact: see GRID

    # Greedy descent through the upper layers (Alg. 5 lines 1-5).
    ep = int(index.ep)
    cur, cur_d = ep, dist(ep)
    n_dist, hops = 1, 0  # the entry point's distance
    descent = [{"level": int(index.max_level), "node": cur, "d": cur_d, "evaluated": []}]
    for level in range(int(index.max_level), 0, -1):
        changed = True
        while changed:
            changed = False
            hops += 1
            evaluated = []
            for e in layer_links(index, cur, level):
                d = dist(e)
                n_dist += 1
                evaluated.append(e)
                if d < cur_d or (d == cur_d and e < cur):
                    cur, cur_d, changed = e, d, True
            descent.append({"level": level, "node": cur, "d": cur_d, "evaluated": evaluated})

    # SEARCH-LAYER on layer 0 (Alg. 2), ef = HNSW_EF.
    ef = max(HNSW_EF, HNSW_K)
    visited = {cur}
    cand = [(cur_d, cur)]  # C: min-heap of (distance, slot)
    res = [(cur_d, cur)]  # W: kept sorted ascending by (distance, slot), at most ef
    steps = []
    while cand:
        c_d, c = heapq.heappop(cand)
        if len(res) >= ef and c_d > res[-1][0]:
            steps.append({"stop": c, "stop_d": c_d, "worst_w": res[-1][0]})
            break
        hops += 1
        new = []
        for e in layer_links(index, c, 0):
            if e in visited:
                continue
            visited.add(e)
            new.append(e)
        entered = []
        for e in new:
            d = dist(e)
            n_dist += 1
            if len(res) < ef or (res[-1][0], res[-1][1]) > (d, e):
                heapq.heappush(cand, (d, e))
                res.append((d, e))
                res.sort()
                del res[ef:]
                entered.append(e)
        steps.append({"expand": c, "new": new, "entered": entered, "W": [s for _, s in res],
                      "C": sorted(s for _, s in cand)})
    found = [s for _, s in res[:HNSW_K]]
    assert found == [int(s) for s in k_slots], (found, k_slots)
    assert [d for d, _ in res[:HNSW_K]] == [float(d) for d in k_dists]
    assert (n_dist, hops) == (stats.distance_computations, stats.hops), ((n_dist, hops), stats)

    levels = index.levels[:n].astype(int).tolist()
    layers = []
    for level in range(int(index.max_level) + 1):
        nodes = [i for i in range(n) if levels[i] >= level]
        edges = sorted({(min(a, b), max(a, b)) for a in nodes for b in layer_links(index, a, level)})
        layers.append({"level": level, "nodes": nodes, "edges": [list(e) for e in edges]})
    return {"params": HNSW_PARAMS, "grid": GRID, "points": np.round(points * GRID).astype(int).tolist(),
            "query": [int(round(x * GRID)) for x in HNSW_QUERY], "k": HNSW_K, "ef": ef, "ep": ep,
            "max_level": int(index.max_level), "layers": layers, "descent": descent, "steps": steps,
            "found": found, "distance_computations": n_dist, "hops": hops}


# --- drawing helpers ---------------------------------------------------------------------------------------------

def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("drawing figures needs matplotlib: pip install -e '.[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "vecstore_ref", "font.size": 9,
                         "axes.titlesize": 9, "axes.spines.top": False, "axes.spines.right": False})
    return plt


_GEOMETRY_ATTR = re.compile(r'\b(d|x|y|transform)="([^"]*)"')
_LONG_DECIMAL = re.compile(r"(\d+\.\d)\d+")


def _compact_svg(text: str) -> str:
    """Coordinates to 0.1 px, path commands on one line: a third of matplotlib's output, the same picture."""
    def shorten(m: re.Match) -> str:
        value = _LONG_DECIMAL.sub(r"\1", m.group(2))
        return f'{m.group(1)}="{" ".join(value.split())}"'

    return _GEOMETRY_ATTR.sub(shorten, text)


def _save(fig, path: Path, digest: str) -> None:
    import io

    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": "benchmarks/figures.py",
                                             "Description": f"{DIGEST_PREFIX}{digest}"})
    plt.close(fig)
    path.write_text(_compact_svg(buf.getvalue()), encoding="utf-8")
    size = path.stat().st_size
    if size > MAX_FIGURE_BYTES:
        raise SystemExit(f"{path.name} is {size:,} bytes, over the {MAX_FIGURE_BYTES:,} allowed")


def _suptitle(fig, text: str, width: int = 120) -> None:
    """A figure title wrapped to the figure's width (a long one-line title is cut off at the edges)."""
    import textwrap

    fig.suptitle("\n".join(textwrap.wrap(text, width)), fontsize=9)


def _segments(ax, pts: np.ndarray, edges, **style) -> None:
    """All ``edges`` as one SVG path (a LineCollection would write one element per segment)."""
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path as MPath

    if not edges:
        return
    verts = np.empty((2 * len(edges), 2))
    verts[0::2] = pts[[a for a, _ in edges]]
    verts[1::2] = pts[[b for _, b in edges]]
    codes = np.tile([MPath.MOVETO, MPath.LINETO], len(edges))
    ax.add_patch(PathPatch(MPath(verts, codes), fill=False, **style))


def _dots(ax, pts: np.ndarray, colour: str, half: float = 0.004) -> None:
    """Small square dots as one SVG path: the grey context points, drawn cheaply (a scatter writes one element
    per point)."""
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path as MPath

    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1], [-1, -1]], dtype=float) * half
    verts = (pts[:, None, :] + corners[None, :, :]).reshape(-1, 2)
    codes = np.tile([MPath.MOVETO, MPath.LINETO, MPath.LINETO, MPath.LINETO, MPath.CLOSEPOLY], len(pts))
    ax.add_patch(PathPatch(MPath(verts, codes), facecolor=colour, edgecolor="none"))


def _square(ax) -> None:
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ("left", "bottom"):
        ax.spines[side].set_visible(False)


def draw_hnsw_layers(trace: dict, path: Path, digest: str) -> None:
    plt = _pyplot()
    pts = np.array(trace["points"], dtype=float) / trace["grid"]
    layers = trace["layers"][::-1]
    cols = 2 if len(layers) == 4 else min(3, len(layers))
    rows = -(-len(layers) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(layers):]:
        ax.set_visible(False)
    for ax, layer in zip(axes.flat, layers):
        nodes = layer["nodes"]
        if layer["level"] > 0:
            _dots(ax, pts, "#d8d8d8")
        _segments(ax, pts, layer["edges"], edgecolor="#4c72b0", linewidth=0.5, alpha=0.6)
        ax.scatter(pts[nodes, 0], pts[nodes, 1], s=9 if layer["level"] == 0 else 16, color="#1f3b70", zorder=3,
                   linewidths=0)
        ep = trace["ep"]
        ax.scatter([pts[ep, 0]], [pts[ep, 1]], s=120, marker="*", color="#d62728", zorder=4, linewidths=0)
        ax.set_title(f"layer {layer['level']}: {len(nodes)} nodes, {len(layer['edges'])} links")
        _square(ax)
    p = trace["params"]
    fig.suptitle(f"The layers of a real HNSW graph: {len(pts)} points, m = {p['m']} (2m = {2 * p['m']} links on "
                 f"layer 0), ef_construction = {p['ef_construction']}\nred star: the entry point; grey: the points "
                 "not on the layer", fontsize=9)
    fig.tight_layout()
    _save(fig, path, digest)


def draw_hnsw_search(trace: dict, path: Path, digest: str) -> None:
    plt = _pyplot()
    pts = np.array(trace["points"], dtype=float) / trace["grid"]
    q = np.array(trace["query"], dtype=float) / trace["grid"]
    steps = [s for s in trace["steps"] if "expand" in s]
    stop = next((s for s in trace["steps"] if "stop" in s), None)
    picks = sorted({0, len(steps) // 3, (2 * len(steps)) // 3, len(steps) - 1})[-3:]
    fig, axes = plt.subplots(2, 2, figsize=(8.4, 8.8))
    axes = axes.flat
    layer_colour = {3: "#9467bd", 2: "#d62728", 1: "#ff7f0e", 0: "#1f77b4"}

    ax = axes[0]
    _dots(ax, pts, "#d8d8d8")
    top = trace["max_level"]
    for a, b in zip(trace["descent"], trace["descent"][1:]):
        if a["node"] != b["node"]:
            ax.annotate("", xy=pts[b["node"]], xytext=pts[a["node"]],
                        arrowprops={"arrowstyle": "->", "color": layer_colour.get(b["level"], "black"), "lw": 1.6})
    for level in range(top, 0, -1):
        evaluated = sorted({e for d in trace["descent"] if d["level"] == level for e in d["evaluated"]})
        if evaluated:
            ax.scatter(*pts[evaluated].T, s=12, color=layer_colour.get(level, "black"), linewidths=0,
                       label=f"layer {level}: neighbours compared")
    ax.scatter([pts[trace["ep"], 0]], [pts[trace["ep"], 1]], s=140, marker="*", color="#d62728", zorder=4,
               linewidths=0, label="entry point")
    ax.scatter([q[0]], [q[1]], s=70, marker="X", color="black", zorder=5, linewidths=0, label="query")
    moves = sum(1 for a, b in zip(trace["descent"], trace["descent"][1:]) if a["node"] != b["node"])
    n_desc = sum(len(d["evaluated"]) for d in trace["descent"])
    ax.set_title(f"1. greedy descent through layers {top}..1 (ef = 1):\n{moves} moves, {n_desc} distances; "
                 "arrows: each move")
    ax.legend(fontsize=7, loc="lower right")
    _square(ax)

    visited_all = sorted({e for s in steps for e in s["new"]} | {s["expand"] for s in steps} | {int(x) for x in
                                                                                                  [steps[0]["expand"]]})
    box = np.vstack([pts[visited_all], q[None, :]])
    pad = 0.04
    lo, hi = box.min(axis=0) - pad, box.max(axis=0) + pad
    span = max(hi - lo)
    mid = (lo + hi) / 2
    seen: set[int] = set()
    expanded: list[int] = []
    upto = 0
    edges_of = trace["layers"][0]["edges_of"]
    for n_panel, (ax, pick) in enumerate(zip(axes[1:], picks), start=2):
        while upto <= pick:
            s = steps[upto]
            expanded.append(s["expand"])
            seen.update(s["new"])
            upto += 1
        s = steps[pick]
        edges = [(a, b) for a in expanded for b in edges_of.get(str(a), [])]
        _dots(ax, pts, "#d8d8d8", half=0.002)
        _segments(ax, pts, edges, edgecolor="#aaaaaa", linewidth=0.5)
        seen_l = sorted(seen)
        ax.scatter(*pts[seen_l].T, s=14, color="#bbbbbb", linewidths=0, label="distance computed")
        ax.scatter(*pts[s["C"]].T, s=30, color="#ff7f0e", linewidths=0, label="in C: to expand", zorder=3)
        ax.scatter(*pts[s["W"]].T, s=90, facecolors="none", edgecolors="#1f77b4", linewidths=1.2,
                   label=f"in W: best {trace['ef']} so far", zorder=4)
        ax.scatter(*pts[expanded].T, s=10, color="black", linewidths=0, label="expanded (a hop)", zorder=5)
        last = pick == len(steps) - 1
        if last:
            ax.scatter(*pts[trace["found"]].T, s=170, marker="o", facecolors="none", edgecolors="#2ca02c",
                       linewidths=2, zorder=6, label=f"the answer: top {trace['k']} of W")
        ax.scatter([q[0]], [q[1]], s=70, marker="X", color="black", zorder=7, linewidths=0, label="query")
        title = f"{n_panel}. SEARCH-LAYER on layer 0, after hop {pick + 1} of {len(steps)}"
        if last and stop is not None:
            title += "\nthen stop: the closest in C is farther than W's worst"
        else:
            title += f"\n|C| = {len(s['C'])}, |W| = {len(s['W'])}"
        ax.set_title(title)
        ax.set_xlim(mid[0] - span / 2, mid[0] + span / 2)
        ax.set_ylim(mid[1] - span / 2, mid[1] + span / 2)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ("top", "right"):
            ax.spines[side].set_visible(True)
        if last:
            ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"One search on that graph (k = {trace['k']}, ef = {trace['ef']}), re-walked from the index's "
                 f"arrays:\n{trace['distance_computations']} distance computations and {trace['hops']} hops, "
                 "equal to the kernel's own counters; panels 2-4 are zoomed on layer 0", fontsize=9)
    fig.tight_layout()
    _save(fig, path, digest)


def _trace_with_neighbours(trace: dict) -> dict:
    """The layer-0 neighbour lists, for drawing the links a search followed (derived, not hashed)."""
    edges_of: dict[str, list[int]] = {}
    for a, b in trace["layers"][0]["edges"]:
        edges_of.setdefault(str(a), []).append(b)
        edges_of.setdefault(str(b), []).append(a)
    out = dict(trace)
    out["layers"] = [dict(trace["layers"][0], edges_of=edges_of)] + trace["layers"][1:]
    return out


# --- the storage format as byte diagrams (plain SVG from format.py's constants and the real encoders) -------------

def _svg(width: int, height: int, body: list[str], title: str) -> str:
    return "\n".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans Mono, monospace" font-size="11">',
        f"<title>{title}</title>", '<rect width="100%" height="100%" fill="white"/>', *body, "</svg>", ""])


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cells(x0: int, y: int, data: bytes, colour: str, cell: int = 26) -> list[str]:
    out = []
    for i, b in enumerate(data):
        x = x0 + i * cell
        out.append(f'<rect x="{x}" y="{y}" width="{cell}" height="22" fill="{colour}" stroke="#555"/>')
        out.append(f'<text x="{x + cell / 2}" y="{y + 15}" text-anchor="middle">{b:02x}</text>')
    return out


def _brace(x0: int, x1: int, y: int, label: str, sub: str = "") -> list[str]:
    mid = (x0 + x1) / 2
    out = [f'<path d="M{x0 + 2},{y} v6 H{x1 - 2} v-6" fill="none" stroke="#333"/>',
           f'<text x="{mid}" y="{y + 19}" text-anchor="middle" font-family="DejaVu Sans, sans-serif">'
           f"{_esc(label)}</text>"]
    if sub:
        out.append(f'<text x="{mid}" y="{y + 32}" text-anchor="middle" fill="#555" '
                   f'font-family="DejaVu Sans, sans-serif" font-size="10">{_esc(sub)}</text>')
    return out


def log_record_svg() -> str:
    """A segment header and the record ``upsert("a", [1.0, 2.0])`` writes, byte by byte, labelled from format.py."""
    from vecstore_ref.storage import format as F
    from vecstore_ref.storage.log import frame, segment_header
    from vecstore_ref.storage.records import encode_batch

    effect = {"op": "upsert", "id": "a", "row": 0, "metadata": None, "expires_at": None}
    payload = encode_batch(2, [effect], np.array([[1.0, 2.0]], dtype=np.float32))
    record = frame(F.RECORD_BATCH, 1, payload)
    header = segment_header()
    cell, x0 = 26, 20
    body = ['<text x="20" y="22" font-family="DejaVu Sans, sans-serif" font-size="13" font-weight="bold">'
            "Log segment header (LOG_HEADER, 16 bytes)</text>"]
    body += _cells(x0, 34, header, "#e8eef8")
    for lo, hi, name, sub in ((F.LOG_HEADER_MAGIC_OFFSET, F.LOG_HEADER_VERSION_OFFSET, "magic", "LOG_MAGIC"),
                              (F.LOG_HEADER_VERSION_OFFSET, F.LOG_HEADER_CRC_OFFSET, "version",
                               f"u32 = {F.FORMAT_VERSION}"),
                              (F.LOG_HEADER_CRC_OFFSET, F.LOG_HEADER_SIZE, "crc32",
                               f"of bytes 0..{F.LOG_HEADER_CRC_COVERS - 1}")):
        body += _brace(x0 + lo * cell, x0 + hi * cell, 60, name, sub)
    body.append('<text x="20" y="128" font-family="DejaVu Sans, sans-serif" font-size="13" font-weight="bold">'
                f"One record (RECORD_HEADER, {F.RECORD_HEADER_SIZE} bytes, then the payload): "
                'upsert("a", [1.0, 2.0])</text>')
    head = record[: F.RECORD_PAYLOAD_OFFSET]
    length, _, rtype, seq = F.RECORD_HEADER.unpack(head)
    body += _cells(x0, 140, head, "#fdf0e0")
    for lo, hi, name, sub in ((F.RECORD_LEN_OFFSET, F.RECORD_CRC_OFFSET, "length", f"u32 = {length}"),
                              (F.RECORD_CRC_OFFSET, F.RECORD_TYPE_OFFSET, "crc32", "of type..payload end"),
                              (F.RECORD_TYPE_OFFSET, F.RECORD_SEQ_OFFSET, "type", f"{rtype}"),
                              (F.RECORD_SEQ_OFFSET, F.RECORD_PAYLOAD_OFFSET, "seq", f"u64 = {seq}")):
        body += _brace(x0 + lo * cell, x0 + hi * cell, 166, name, sub)
    body.append('<text x="20" y="232" font-family="DejaVu Sans, sans-serif" font-size="13" font-weight="bold">'
                f"Its payload (type {F.RECORD_BATCH}: a batch of effects), {len(payload)} bytes</text>")
    ph = payload[: F.BATCH_JSON_OFFSET]
    json_len, n_vectors, dim = F.BATCH_PAYLOAD_HEADER.unpack(ph)
    body += _cells(x0, 244, ph, "#e6f4e6")
    for lo, hi, name, sub in ((F.BATCH_JSON_LEN_OFFSET, F.BATCH_N_VECTORS_OFFSET, "json_len", f"u32 = {json_len}"),
                              (F.BATCH_N_VECTORS_OFFSET, F.BATCH_DIM_OFFSET, "n_vectors", f"u32 = {n_vectors}"),
                              (F.BATCH_DIM_OFFSET, F.BATCH_JSON_OFFSET, "dim", f"u32 = {dim}")):
        body += _brace(x0 + lo * cell, x0 + hi * cell, 270, name, sub)
    text = payload[F.BATCH_JSON_OFFSET:F.BATCH_JSON_OFFSET + json_len].decode()
    body.append(f'<rect x="{x0}" y="318" width="{cell * 26}" height="22" fill="#f4f4f4" stroke="#555"/>')
    body.append(f'<text x="{x0 + 6}" y="333">{_esc(text)}</text>')
    body += _brace(x0, x0 + cell * 26, 344, f"JSON effects, {json_len} bytes (UTF-8, compact)")
    vec = payload[F.BATCH_JSON_OFFSET + json_len:]
    body += _cells(x0, 392, vec, "#f3e6f4")
    body += _brace(x0, x0 + 4 * cell, 418, "1.0f", "float32 LE")
    body += _brace(x0 + 4 * cell, x0 + 8 * cell, 418, "2.0f", "float32 LE")
    body.append(f'<text x="{x0 + 9 * cell}" y="408" font-family="DejaVu Sans, sans-serif">the vectors: '
                "n_vectors x dim float32, row-major</text>")
    body.append(f'<text x="20" y="478" font-family="DejaVu Sans, sans-serif" fill="#555">The record is '
                f"{len(record)} bytes; the CRC covers bytes {F.RECORD_CRC_START}..{len(record) - 1} (type, seq, "
                "payload).</text>")
    body.append('<text x="20" y="495" font-family="DejaVu Sans, sans-serif" fill="#555">All integers are '
                "little-endian; every offset is a constant of vecstore_ref/storage/format.py.</text>")
    return _svg(720, 510, body, "A log segment header and one log record, byte by byte")


def snapshot_svg() -> str:
    """The byte map of the worked example's snapshot (the real ``write_snapshot`` in a temporary directory)."""
    import tempfile

    from vecstore_ref._fs import OSFileSystem
    from vecstore_ref.storage import format as F
    from vecstore_ref.storage.snapshot import write_snapshot

    with tempfile.TemporaryDirectory() as tmp:
        name = "snap-0000000000000001.vss"
        write_snapshot(OSFileSystem(), tmp, name, {"seq": 1, "dim": 2},
                       {"vectors": np.array([[1.0, 2.0]], dtype=np.float32), "state": np.array([1], dtype=np.uint8)})
        data = (Path(tmp) / name).read_bytes()
    magic, version, json_len = F.SNAPSHOT_HEADER.unpack_from(data, 0)
    header = json.loads(data[F.SNAPSHOT_JSON_OFFSET:F.SNAPSHOT_JSON_OFFSET + json_len])
    data_start = -(-(F.SNAPSHOT_JSON_OFFSET + json_len) // F.SNAPSHOT_ALIGN) * F.SNAPSHOT_ALIGN
    size = len(data)
    body_len, block, _ = F.SNAPSHOT_TRAILER.unpack_from(data, size - F.SNAPSHOT_TRAILER_SIZE)
    n_blocks = -(-body_len // block)
    scale = 680 / size
    x0 = 20
    regions = [(0, F.SNAPSHOT_JSON_OFFSET, "fixed", "#e8eef8"),
               (F.SNAPSHOT_JSON_OFFSET, F.SNAPSHOT_JSON_OFFSET + json_len, "JSON header", "#fdf0e0"),
               (F.SNAPSHOT_JSON_OFFSET + json_len, data_start, "pad", "#ffffff")]
    for a in header["arrays"]:
        start = data_start + a["offset"]
        regions.append((start, start + a["nbytes"], a["name"], "#e6f4e6"))
        end_pad = start + -(-a["nbytes"] // F.SNAPSHOT_ALIGN) * F.SNAPSHOT_ALIGN
        if end_pad > start + a["nbytes"]:
            regions.append((start + a["nbytes"], end_pad, "pad", "#ffffff"))
    regions.append((body_len, body_len + 4 * n_blocks, "crc", "#f3e6f4"))
    regions.append((size - F.SNAPSHOT_TRAILER_SIZE, size, "trailer", "#f8e0e0"))
    body = ['<text x="20" y="22" font-family="DejaVu Sans, sans-serif" font-size="13" font-weight="bold">'
            f"A snapshot file (format {version}), to scale: the worked example, {size} bytes</text>"]
    last_x = -100.0
    for lo, hi, label, colour in regions:
        x, w = x0 + lo * scale, max(1.0, (hi - lo) * scale)
        body.append(f'<rect x="{x:.1f}" y="40" width="{w:.1f}" height="40" fill="{colour}" stroke="#555"/>')
        if label != "pad" and w > 30:
            body.append(f'<text x="{x + w / 2:.1f}" y="64" text-anchor="middle" '
                        f'font-family="DejaVu Sans, sans-serif">{_esc(label)}</text>')
        if label != "pad":  # offsets where a field starts; a pad's start is the field before it's end
            y = 96 if x - last_x > 24 else 108
            body.append(f'<text x="{x:.1f}" y="{y}" font-size="9" fill="#555">{lo}</text>')
            last_x = x if y == 96 else last_x
    body.append(f'<text x="{x0 + size * scale - 18:.1f}" y="96" font-size="9" fill="#555">{size}</text>')
    lines = [f"fixed (SNAPSHOT_HEADER, {F.SNAPSHOT_HEADER_SIZE} bytes): magic {magic.decode()!r}, "
             f"u32 version = {version}, u32 json_len = {json_len}",
             "JSON header: the store's fields + \"arrays\": one entry (name, dtype, shape, offset, nbytes) per "
             "array",
             f"data block at D = {F.SNAPSHOT_JSON_OFFSET} + json_len rounded up to SNAPSHOT_ALIGN = "
             f"{F.SNAPSHOT_ALIGN}: D = {data_start}",
             *(f"  {a['name']}: {a['dtype']} {tuple(a['shape'])} at D + {a['offset']} = {data_start + a['offset']}"
               f", {a['nbytes']} bytes, padded to {F.SNAPSHOT_ALIGN}" for a in header["arrays"]),
             f"crc: one u32 CRC32 per {block // 2**20} MiB block of the body (bytes 0..{body_len - 1}): "
             f"{n_blocks} here",
             f"trailer (SNAPSHOT_TRAILER, {F.SNAPSHOT_TRAILER_SIZE} bytes): u64 body length {body_len}, "
             "u32 block size, u32 CRC32 of the crcs"]
    for i, line in enumerate(lines):
        body.append(f'<text x="20" y="{134 + 17 * i}">{_esc(line)}</text>')
    return _svg(720, 142 + 17 * len(lines), body, "A snapshot file, to scale")


# --- figures from results files ------------------------------------------------------------------------------------

LIB_STYLE = {"vecstore_ref hnsw": ("#d62728", "o"), "hnswlib": ("#1f77b4", "s"), "faiss hnsw": ("#2ca02c", "^"),
             "usearch": ("#9467bd", "v"), "vecstore_ref flat": ("#d62728", "D"), "faiss flat": ("#2ca02c", "D"),
             "numpy": ("#7f7f7f", "D")}


def _load(name: str) -> dict:
    return json.loads((DATA_DIR / name).read_text(encoding="utf-8"))


def _machine_note(data: dict) -> str:
    m = data.get("machine") or {}
    note = f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores"
    if data.get("load_average"):
        note += f", load average {data['load_average']}"
    return note


def draw_ann_recall(path: Path, digest: str) -> None:
    plt = _pyplot()
    data = _load("ann.json")
    names = list(data["results"])
    fig, axes = plt.subplots(len(names), 2, figsize=(10, 3.8 * len(names)), squeeze=False)
    for i, ds in enumerate(names):
        info = data["datasets"][ds]
        for j, (key, title) in enumerate((("single_qps", "one query at a time, 1 thread"),
                                          ("batch_qps", f"one batch, {data['settings']['threads']} threads"))):
            ax = axes[i][j]
            for lib, r in data["results"][ds].items():
                colour, marker = LIB_STYLE.get(lib, ("black", "x"))
                rows = sorted(r["rows"], key=lambda row: row["recall"])
                ax.plot([row["recall"] for row in rows], [row[key] for row in rows], marker=marker, ms=4,
                        color=colour, label=lib, linestyle=":" if r["exact"] else "-")
            ax.set_yscale("log")
            ax.set_xlabel("recall@10")
            ax.set_ylabel("queries per second")
            ax.set_title(f"{ds} ({info['n']:,} x {info['dim']}, {info['metric']}): {title}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
    _suptitle(fig, f"recall@10 against queries/s over the ef sweep; {_machine_note(data)}")
    fig.tight_layout()
    _save(fig, path, digest)


def draw_ann_build(path: Path, digest: str) -> None:
    plt = _pyplot()
    data = _load("ann.json")
    names = list(data["results"])
    fig, axes = plt.subplots(len(names), 2, figsize=(10, 3.0 * len(names)), squeeze=False)
    for i, ds in enumerate(names):
        libs = [lib for lib, r in data["results"][ds].items() if not r["exact"]]
        res = data["results"][ds]
        for j, (key, label, scale) in enumerate((("build_s", "build time (s), 2 threads", 1.0),
                                                 ("memory_bytes", "index memory (MB): vectors + links", 1e-6))):
            ax = axes[i][j]
            vals = [res[lib][key] * scale for lib in libs]
            ax.barh(libs, vals, color=[LIB_STYLE.get(lib, ("grey", ""))[0] for lib in libs])
            for y, v in enumerate(vals):
                ax.text(v, y, f" {v:.1f}", va="center", fontsize=8)
            ax.invert_yaxis()
            ax.set_xlabel(label)
            ax.set_title(f"{ds}: {label.split(' (')[0]}")
            ax.set_xlim(0, max(vals) * 1.2)
    _suptitle(fig, "Build time and memory, M = 16, ef_construction = 200 for every library; "
                   f"{_machine_note(data)}")
    fig.tight_layout()
    _save(fig, path, digest)


PLAN_COLOUR = {"filtered-scan": "#ff7f0e", "filtered-hnsw": "#1f77b4", "hnsw": "#2ca02c", "flat": "#7f7f7f"}


def draw_filtered(path: Path, digest: str) -> None:
    """Recall and speed by selectivity, one line per data set, the plan chosen as the colour of each point. Rows
    with ``qps_ratio`` (written by ``benchmarks/filtered.py``) are drawn against the unfiltered queries/s of the
    same run; an ``anti_correlated`` row is a diamond."""
    plt = _pyplot()
    data = _load("filtered.json")
    s = data["settings"]
    relative = all("qps_ratio" in r for r in data["rows"])
    groups: dict = {}
    for r in data["rows"]:
        groups.setdefault(r.get("dataset", s["dataset"]), []).append(r)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    speed = ("qps_ratio", "queries/s, relative to unfiltered (same run)") if relative else ("qps", "queries per second")
    styles = ("-", "--", ":", "-.")
    for ax, (key, label) in zip(axes, (("recall", "recall@10"), speed)):
        for g, (name, rows) in enumerate(groups.items()):
            line = sorted((r for r in rows if r.get("filter") is not None and not r.get("anti_correlated")),
                          key=lambda r: r["selectivity"])
            ax.plot([r["selectivity"] for r in line], [r[key] for r in line], color="#999999", zorder=1,
                    linestyle=styles[g % len(styles)], label=name if len(groups) > 1 else None)
            for plan in PLAN_COLOUR:
                for anti, marker in ((False, "o"), (True, "D")):
                    pick = [r for r in rows if r["plan"] == plan and bool(r.get("anti_correlated")) == anti
                            and r.get("filter") is not None]
                    if pick:
                        ax.scatter([r["selectivity"] for r in pick], [r[key] for r in pick], s=30 if anti else 24,
                                   color=PLAN_COLOUR[plan], marker=marker, zorder=2,
                                   label=(f"plan: {plan}" + (" (anti-correlated)" if anti else "")) if g == 0
                                   else None)
        if key == "recall":
            ax.axhline(0.95, color="#d62728", linewidth=0.8, linestyle=":", label="target 0.95")
        elif relative:
            ax.axhline(0.5, color="#d62728", linewidth=0.8, linestyle=":", label="target 0.5x")
            ax.set_yscale("log")
        else:
            ax.set_yscale("log")
        ax.set_xscale("log")
        ax.set_xlabel("selectivity (fraction of the records the filter keeps)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylim(min(0.8, min(r["recall"] for r in data["rows"]) - 0.02), 1.01)
    _suptitle(fig, f"Filtered queries by selectivity, with the plan the store chose: {s['dataset']}, k = {s['k']}, "
                   f"ef = {s['ef']}, {s['queries']} queries per point, one thread; {_machine_note(data)}")
    fig.tight_layout()
    _save(fig, path, digest)


def draw_cost_model(path: Path, digest: str) -> None:
    plt = _pyplot()
    data = _load("cost_model.json")
    pts = data["points"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, (est, got, label) in zip(axes, (("estimated_ms", "measured_ms", "query time (ms)"),
                                            ("estimated_distances", "measured_distances",
                                             "distance computations"))):
        for plan, colour in PLAN_COLOUR.items():
            pick = [p for p in pts if p["plan"] == plan]
            if pick:
                ax.scatter([p[est] for p in pick], [p[got] for p in pick], s=14, color=colour, label=plan,
                           alpha=0.8)
        lo = min(min(p[est] for p in pts), min(p[got] for p in pts)) * 0.7
        hi = max(max(p[est] for p in pts), max(p[got] for p in pts)) * 1.4
        ax.plot([lo, hi], [lo, hi], color="black", linewidth=0.8, label="measured = estimated")
        ax.fill_between([lo, hi], [lo / 2, hi / 2], [lo * 2, hi * 2], color="#cccccc", alpha=0.3,
                        label="within 2x")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel(f"estimated {label} (estimate_query)")
        ax.set_ylabel(f"measured {label}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    summary = data["summary"]
    axes[0].set_title(f"time: median |log2 error| {summary['time_median_abs_log2']:.2f}, "
                      f"{summary['time_within_2x']:.0%} within 2x")
    axes[1].set_title(f"work: median |log2 error| {summary['dist_median_abs_log2']:.2f}, "
                      f"{summary['dist_within_2x']:.0%} within 2x")
    s = data["settings"]
    what = s.get("points") or (f"{len(pts)} queries on {s['n']:,} x {s['dim']} {s['dataset']} (k, ef, filters and "
                               "both indexes varied)")
    _suptitle(fig, f"The cost model against what queries did: {what}; {_machine_note(data)}")
    fig.tight_layout()
    _save(fig, path, digest)


def draw_hnsw_params(path: Path, digest: str) -> None:
    plt = _pyplot()
    data = _load("hnsw_params.json")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    colours = plt.get_cmap("tab10")
    for i, cfg in enumerate(data["configs"]):
        label = f"m={cfg['m']}, ef_c={cfg['ef_construction']} (build {cfg['build_s']:.1f} s)"
        rows = cfg["rows"]
        axes[0].plot([r["ef"] for r in rows], [r["recall"] for r in rows], marker="o", ms=3, color=colours(i),
                     label=label)
        axes[1].plot([r["recall"] for r in rows], [r["qps"] for r in rows], marker="o", ms=3, color=colours(i),
                     label=label)
    axes[0].set_xscale("log", base=2)
    axes[0].set_xlabel("ef_search")
    axes[0].set_ylabel("recall@10")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("recall@10")
    axes[1].set_ylabel("queries per second (store.query, 1 thread)")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    s = data["settings"]
    _suptitle(fig, f"HNSW parameters through the store: {s['n']:,} x {s['dim']} {s['dataset']}, {s['queries']} "
                 f"queries, k = 10; {_machine_note(data)}")
    fig.tight_layout()
    _save(fig, path, digest)


# --- the figure table ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Figure:
    """One committed figure: its file, how to get the digest of its inputs, and how to draw it."""

    name: str
    source: str  # "code" (recomputed by --check) or a results file under docs/figures/data/
    draw: Callable[[Path, str], None] | None = None  # matplotlib figures: draw(path, digest)
    text: Callable[[], str] | None = None  # plain SVG written by this module, compared byte for byte


_TRACE: dict | None = None


def _trace() -> dict:
    global _TRACE
    if _TRACE is None:
        _TRACE = hnsw_trace()
    return _TRACE


FIGURES = (
    Figure("hnsw-layers.svg", "code", lambda p, d: draw_hnsw_layers(_trace(), p, d)),
    Figure("hnsw-search.svg", "code", lambda p, d: draw_hnsw_search(_trace_with_neighbours(_trace()), p, d)),
    Figure("log-record.svg", "code", text=log_record_svg),
    Figure("snapshot.svg", "code", text=snapshot_svg),
    Figure("ann-recall-qps.svg", "ann.json", draw_ann_recall),
    Figure("ann-build-memory.svg", "ann.json", draw_ann_build),
    Figure("filtered.svg", "filtered.json", draw_filtered),
    Figure("cost-model.svg", "cost_model.json", draw_cost_model),
    Figure("hnsw-params.svg", "hnsw_params.json", draw_hnsw_params),
)


def source_digest(fig: Figure) -> str | None:
    """SHA-256 of a figure's inputs: the HNSW trace, or the results file's bytes (None if the file is absent)."""
    if fig.source == "code":
        return _sha256(_canonical(_trace()))
    path = DATA_DIR / fig.source
    return _sha256(path.read_bytes()) if path.exists() else None


def recorded_digest(path: Path) -> str | None:
    """The digest a drawn SVG carries in its metadata, or None."""
    m = re.search(re.escape(DIGEST_PREFIX) + r"([0-9a-f]{64})", path.read_text(encoding="utf-8"))
    return m.group(1) if m else None


def check(figures=FIGURES) -> list[str]:
    """Problems: figures missing, or not drawn from today's inputs. Needs no matplotlib."""
    problems = []
    for fig in figures:
        path = FIG_DIR / fig.name
        if fig.source != "code" and not (DATA_DIR / fig.source).exists():
            continue  # its results file does not exist yet: no figure expected
        if not path.exists():
            problems.append(f"{fig.name}: missing (python -m benchmarks.figures)")
        elif fig.text is not None:
            if path.read_text(encoding="utf-8") != fig.text():
                problems.append(f"{fig.name}: differs from what the code draws today (python -m benchmarks.figures)")
        elif recorded_digest(path) != source_digest(fig):
            problems.append(f"{fig.name}: drawn from other inputs than docs/figures/data/ or the code give today "
                            "(python -m benchmarks.figures)")
        elif path.stat().st_size > MAX_FIGURE_BYTES:
            problems.append(f"{fig.name}: {path.stat().st_size:,} bytes, over {MAX_FIGURE_BYTES:,}")
    return problems


def draw(figures=FIGURES, only: set[str] | None = None) -> list[str]:
    """Draw every figure whose inputs exist; returns the names written."""
    FIG_DIR.mkdir(parents=True, exist_ok=True)
    written = []
    for fig in figures:
        if only and fig.name not in only:
            continue
        path = FIG_DIR / fig.name
        if fig.text is not None:
            path.write_text(fig.text(), encoding="utf-8")
        else:
            digest = source_digest(fig)
            if digest is None:
                print(f"{fig.name}: skipped, docs/figures/data/{fig.source} does not exist")
                continue
            fig.draw(path, digest)
        written.append(fig.name)
        print(f"{fig.name}: {path.stat().st_size:,} bytes")
    return written


# --- measurements that write results files (all through the public API) ---------------------------------------------

def _machine_block() -> dict:
    from . import machine

    try:
        load = open("/proc/loadavg", encoding="ascii").read().split()[:3]
    except OSError:
        load = []
    try:
        import subprocess

        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"machine": machine(), "load_average": " ".join(load), "commit": commit}


def _write_data(name: str, payload: dict) -> Path:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    path = DATA_DIR / name
    path.write_text(json.dumps(payload, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    print(f"results: {path} ({path.stat().st_size:,} bytes)")
    return path


def _recall(got: list[list[str]], want: list[list[str]]) -> float:
    hits = sum(len(set(g) & set(w)) for g, w in zip(got, want))
    return hits / max(1, sum(len(w) for w in want))


def _load_store(tmp: str, base: np.ndarray, index: str, params=None, metadata=None):
    import vecstore_ref as vs

    store = vs.VecStore.open(tmp, dim=base.shape[1], metric="cosine", index=index, durability="none",
                             hnsw=params)
    ids = [f"r{i}" for i in range(base.shape[0])]
    t0 = time.perf_counter()
    for start in range(0, len(ids), 10_000):
        store.upsert_many(ids[start:start + 10_000], base[start:start + 10_000],
                          None if metadata is None else metadata[start:start + 10_000])
    store.flush_index()
    return store, time.perf_counter() - t0


def _timed_queries(store, queries, k, flt=None, ef=None, repeats=3) -> tuple[float, list[list[str]]]:
    """Queries per second of one-at-a-time ``store.query`` (best of ``repeats``) and the ids found."""
    best = float("inf")
    found = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        found = [[h.id for h in store.query(q, k=k, filter=flt, ef=ef)] for q in queries]
        best = min(best, time.perf_counter() - t0)
    return len(queries) / best, found


def measure_filtered(n: int, dim: int, n_queries: int) -> Path:
    """Recall@10 and QPS by selectivity, with the plan the store chose; the exact index answers the same."""
    import tempfile

    import vecstore_ref as vs

    from . import set_numba_threads
    from .datasets import clustered_vectors

    set_numba_threads(1)
    base, queries = clustered_vectors(n, dim, n_queries=n_queries)
    buckets = 1000
    metadata = [{"bucket": i % buckets} for i in range(n)]
    targets = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store, _ = _load_store(tmp, base, "hnsw", vs.HNSWParams(), metadata)
        store.close()
        hnsw = vs.VecStore.open(tmp)
        exact = vs.VecStore.open(tmp, index="flat", read_only=True)
        filters = [f"bucket < {int(round(t * buckets))}" for t in targets]
        best = {f: 0.0 for f in filters}
        found: dict[str, list] = {}
        for f in filters:
            hnsw.query(queries[0], k=10, filter=f)  # warm every path
        for _ in range(5):  # rounds over all selectivities: a busy spell of the machine hits them all alike
            for f in filters:
                qps, found[f] = _timed_queries(hnsw, queries, 10, f, repeats=1)
                best[f] = max(best[f], qps)
        for t, flt in zip(targets, filters):
            est = hnsw.estimate_query(queries[0], k=10, filter=flt)
            plan = hnsw.query_explain(queries[0], k=10, filter=flt).plan
            _, want = _timed_queries(exact, queries, 10, flt, repeats=1)
            rows.append({"filter": flt, "selectivity_target": t, "selectivity": est.selectivity, "plan": plan,
                         "recall": _recall(found[flt], want), "qps": best[flt]})
            print(f"{flt:>16}  selectivity {est.selectivity:.4f}  {plan:>13}  recall {rows[-1]['recall']:.3f}  "
                  f"{best[flt]:,.0f} q/s")
        hnsw.close()
        exact.close()
    return _write_data("filtered.json", {
        "schema": "vecstore_ref.figures.filtered/1", **_machine_block(),
        "settings": {"dataset": "clustered", "n": n, "dim": dim, "metric": "cosine", "k": 10, "ef": 64,
                     "queries": n_queries, "threads": 1, "index": "hnsw", "hnsw": vs.HNSWParams().to_dict(),
                     "timing": "best of 5 rounds over all selectivities, one pass of store.query each",
                     "metadata": f"bucket = i % {buckets}", "command": "python -m benchmarks.figures --measure "
                     f"filtered --n {n} --dim {dim} --queries {n_queries}"},
        "rows": rows})


def measure_cost_model(n: int, dim: int, n_queries: int) -> Path:
    """``estimate_query`` against a timed ``query`` and ``query_explain``'s counters, over a varied query set."""
    import tempfile

    import vecstore_ref as vs

    from . import set_numba_threads
    from .datasets import clustered_vectors

    set_numba_threads(1)
    base, queries = clustered_vectors(n, dim, n_queries=n_queries)
    metadata = [{"bucket": i % 1000} for i in range(n)]
    rng = np.random.default_rng(3)
    shapes = []
    for i in range(n_queries):
        shapes.append({"index": "hnsw" if i % 4 else "flat", "k": int(rng.choice([1, 10, 50, 100])),
                       "ef": int(rng.choice([16, 32, 64, 128, 256])),
                       "filter": None if rng.random() < 0.4 else f"bucket < {int(rng.choice([2, 10, 50, 200, 600]))}"})
    points = []
    with tempfile.TemporaryDirectory() as tmp:
        store, _ = _load_store(tmp, base, "hnsw", vs.HNSWParams(), metadata)
        store.close()
        stores = {"hnsw": vs.VecStore.open(tmp, read_only=True), "flat": vs.VecStore.open(tmp, index="flat",
                                                                                          read_only=True)}
        for s in stores.values():  # warm every kernel the plans use
            for flt in (None, "bucket < 2", "bucket < 600"):
                s.query(queries[0], k=10, filter=flt)
        for q, shape in zip(queries, shapes):
            s = stores[shape["index"]]
            args = {"k": shape["k"], "filter": shape["filter"], "ef": shape["ef"]}
            est = s.estimate_query(q, **args)
            explained = s.query_explain(q, **args)
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                s.query(q, **args)
                times.append(time.perf_counter() - t0)
            points.append({**shape, "plan": est.plan, "estimated_ms": est.estimated_duration_ms,
                           "measured_ms": float(np.median(times)) * 1e3,
                           "estimated_distances": max(1, est.estimated_distance_computations),
                           "measured_distances": max(1, explained.distance_computations)})
        for s in stores.values():
            s.close()

    def err(key_est, key_got):
        e = np.abs(np.log2([p[key_got] / p[key_est] for p in points]))
        return float(np.median(e)), float(np.mean(e <= 1.0))

    t_med, t_in = err("estimated_ms", "measured_ms")
    d_med, d_in = err("estimated_distances", "measured_distances")
    print(f"time: median |log2(measured/estimated)| {t_med:.2f}, {t_in:.0%} within 2x; "
          f"distances: {d_med:.2f}, {d_in:.0%} within 2x")
    return _write_data("cost_model.json", {
        "schema": "vecstore_ref.figures.cost_model/1", **_machine_block(),
        "settings": {"dataset": "clustered", "n": n, "dim": dim, "metric": "cosine", "queries": n_queries,
                     "threads": 1, "timing": "median of 5 store.query calls",
                     "command": f"python -m benchmarks.figures --measure cost-model --n {n} --dim {dim} "
                                f"--queries {n_queries}"},
        "summary": {"time_median_abs_log2": t_med, "time_within_2x": t_in, "dist_median_abs_log2": d_med,
                    "dist_within_2x": d_in},
        "points": points})


def measure_hnsw_params(n: int, dim: int, n_queries: int) -> Path:
    """Recall@10, QPS and build time for a few (m, ef_construction) over an ef_search sweep, through the store."""
    import tempfile

    import vecstore_ref as vs

    from . import set_numba_threads
    from .datasets import clustered_vectors

    base, queries = clustered_vectors(n, dim, n_queries=n_queries)
    configs = []
    with tempfile.TemporaryDirectory() as tmp:
        set_numba_threads(2)
        exact, _ = _load_store(f"{tmp}/flat", base, "flat")
        set_numba_threads(1)
        _, truth = _timed_queries(exact, queries, 10, repeats=1)
        exact.close()
        for m, efc in ((8, 100), (16, 100), (16, 200), (32, 200)):
            set_numba_threads(2)
            store, build_s = _load_store(f"{tmp}/m{m}-{efc}", base, "hnsw", vs.HNSWParams(m=m, ef_construction=efc))
            set_numba_threads(1)
            store.query(queries[0], k=10)  # warm
            rows = []
            for ef in (10, 16, 32, 64, 128, 256):
                qps, got = _timed_queries(store, queries, 10, ef=ef)
                rows.append({"ef": ef, "recall": _recall(got, truth), "qps": qps})
            size = store.stats().to_dict()
            store.close()
            configs.append({"m": m, "ef_construction": efc, "build_s": build_s, "rows": rows,
                            "stats_bytes": {k: v for k, v in size.items() if k.endswith("bytes")}})
            print(f"m={m:>2} ef_construction={efc:>3}: build {build_s:.1f} s; " + ", ".join(
                f"ef {r['ef']}: {r['recall']:.3f} @ {r['qps']:,.0f} q/s" for r in rows))
    return _write_data("hnsw_params.json", {
        "schema": "vecstore_ref.figures.hnsw_params/1", **_machine_block(),
        "settings": {"dataset": "clustered", "n": n, "dim": dim, "metric": "cosine", "queries": n_queries,
                     "build_threads": 2, "query_threads": 1, "timing": "best of 3 passes of store.query",
                     "command": f"python -m benchmarks.figures --measure hnsw-params --n {n} --dim {dim} "
                                f"--queries {n_queries}"},
        "configs": configs})


MEASURES = {"filtered": (measure_filtered, "filtered.svg", 50_000, 128, 200),
            "cost-model": (measure_cost_model, "cost-model.svg", 50_000, 128, 240),
            "hnsw-params": (measure_hnsw_params, "hnsw-params.svg", 20_000, 128, 300)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="report figures missing or out of date; exit 1 if any")
    p.add_argument("--measure", choices=sorted(MEASURES), help="run a measurement, write its results file, draw")
    p.add_argument("--n", type=int, default=None, help="base size for --measure")
    p.add_argument("--dim", type=int, default=None, help="dimension for --measure")
    p.add_argument("--queries", type=int, default=None, help="queries for --measure")
    p.add_argument("--only", default=None, help="comma list of figure file names to draw")
    a = p.parse_args(argv)
    if a.check:
        problems = check()
        for line in problems:
            print(line)
        print("figures up to date" if not problems else f"{len(problems)} figure(s) out of date")
        return 1 if problems else 0
    if a.measure:
        fn, fig_name, n, dim, nq = MEASURES[a.measure]
        fn(a.n or n, a.dim or dim, a.queries or nq)
        draw(only={fig_name})
        return 0
    draw(only=set(a.only.split(",")) if a.only else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
