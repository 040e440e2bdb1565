"""The docs' figures exist, are small, are referenced, and were drawn from today's code and results files.

``python -m benchmarks.figures --check`` does the same from the command line. Drawing needs matplotlib (the
[bench] extra); this check needs only numpy and numba: it recomputes the HNSW trace and the results files' digests
and compares them with the digests the SVGs carry.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np

from benchmarks import figures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pages() -> dict[str, str]:
    out = {}
    for dirpath, _, names in os.walk(os.path.join(ROOT, "docs")):
        for name in names:
            if name.endswith(".md"):
                path = os.path.join(dirpath, name)
                with open(path, encoding="utf-8") as f:
                    out[os.path.relpath(path, ROOT)] = f.read()
    return out


def test_figures_are_up_to_date():
    assert figures.check() == []


def test_every_figure_is_small_and_referenced_and_every_reference_exists():
    pages = _pages()
    referenced = set()
    for rel, text in pages.items():
        for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
            path = os.path.normpath(os.path.join(ROOT, os.path.dirname(rel), target))
            assert os.path.isfile(path), f"{rel} shows {target}, which does not exist"
            referenced.add(os.path.basename(path))
    for fig in figures.FIGURES:
        path = figures.FIG_DIR / fig.name
        if not path.exists():
            continue  # a results-file figure whose results do not exist yet
        assert path.stat().st_size < figures.MAX_FIGURE_BYTES, fig.name
        assert fig.name in referenced, f"{fig.name} is drawn but no page shows it"


def test_the_hnsw_figures_come_from_the_real_index():
    trace = figures.hnsw_trace()  # raises unless the re-walk found what the kernel found, with its counters
    layers = trace["layers"]
    sizes = [len(layer["nodes"]) for layer in layers]
    assert sizes[0] == figures.HNSW_POINTS and sizes == sorted(sizes, reverse=True) and len(sizes) >= 3
    assert trace["ep"] in layers[-1]["nodes"]
    for layer in layers:  # no node keeps more links than the layer allows
        degree = np.zeros(figures.HNSW_POINTS, dtype=int)
        for a, b in layer["edges"]:
            degree[a] += 1
            degree[b] += 1
        assert degree.max() <= 2 * (2 * trace["params"]["m"] if layer["level"] == 0 else trace["params"]["m"])
    expansions = [s for s in trace["steps"] if "expand" in s]
    assert expansions and set(trace["found"]) <= set(expansions[-1]["W"])
    assert trace["descent"][-1]["node"] == expansions[0]["expand"]  # layer 0 starts where the descent ended


def test_results_files_follow_their_schemas():
    schemas = {"filtered.json": ("vecstore_ref.figures.filtered/1", "rows",
                                 {"filter", "selectivity", "plan", "recall", "qps"}),
               "cost_model.json": ("vecstore_ref.figures.cost_model/1", "points",
                                   {"plan", "estimated_ms", "measured_ms", "estimated_distances",
                                    "measured_distances"}),
               "hnsw_params.json": ("vecstore_ref.figures.hnsw_params/1", "configs",
                                    {"m", "ef_construction", "build_s", "rows"})}
    for name, (schema, key, fields) in schemas.items():
        path = figures.DATA_DIR / name
        if not path.exists():
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        assert data["schema"] == schema and data["machine"]["cores"] >= 1 and "settings" in data
        assert data[key] and all(fields <= set(row) for row in data[key]), name
    ann = json.loads((figures.DATA_DIR / "ann.json").read_text(encoding="utf-8"))
    for ds in ann["results"].values():
        for r in ds.values():
            assert {"build_s", "memory_bytes", "rows", "exact"} <= set(r)


def test_the_byte_diagrams_follow_the_format_constants():
    from vecstore_ref.storage import format as F

    svg = figures.log_record_svg()
    assert f"RECORD_HEADER, {F.RECORD_HEADER_SIZE} bytes" in svg and "56</text>" in svg  # 'V' of the magic
    snap = figures.snapshot_svg()
    assert snap.count("padded to 64") == 2 and f"format {F.SNAPSHOT_FORMAT_VERSION}" in snap


def test_check_notices_a_results_file_that_changed(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    for fig in figures.FIGURES:
        if fig.source != "code" and (figures.DATA_DIR / fig.source).exists():
            (data / fig.source).write_bytes((figures.DATA_DIR / fig.source).read_bytes())
    monkeypatch.setattr(figures, "DATA_DIR", data)
    assert figures.check() == []
    changed = (data / "filtered.json").read_bytes().replace(b'"recall": 1.0', b'"recall": 0.9', 1)
    (data / "filtered.json").write_bytes(changed)
    assert [p.split(":")[0] for p in figures.check()] == ["filtered.svg"]
