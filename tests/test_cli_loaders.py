"""The documented loaders (docs/examples/) move an export into Qdrant and LanceDB, and those stores then answer
the same exact top-k as ours. Each test runs where its client library is installed and is skipped otherwise
(`pip install qdrant-client lancedb`)."""

from __future__ import annotations

import importlib.util
import json
import os
import re

import numpy as np
import pytest
from cli_helpers import ROOT

import vecstore_ref as vs


def load_example(name: str):
    path = os.path.join(ROOT, "docs", "examples", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module", params=["cosine", "euclidean"])
def exported(request, tmp_path_factory):
    """A flat store (the exact answer) and its export, made at a (fake) time when the record "gone" had not
    expired yet: by the real clock of the loaders it has, so they must leave it out."""
    tmp = tmp_path_factory.mktemp(f"loaders-{request.param}")
    rng = np.random.default_rng(11)
    x = rng.normal(size=(300, 12)).astype(np.float32)
    ids = [f"doc-{i}" for i in range(300)]
    clock = [1_000.0]
    path = str(tmp / "store")
    with vs.VecStore.open(path, dim=12, metric=request.param, index="flat", clock=lambda: clock[0]) as s:
        s.upsert_many(ids, x, [{"i": i, "lang": ["en", "de"][i % 2]} if i % 5 else None for i in range(300)])
        s.soft_delete("doc-3")
        s.upsert_with_ttl("gone", x[0], None, 1.0)  # expires at t = 1001 s, i.e. in 1970
        assert s.export(tmp / "exp")["count"] == 300  # 299 without the soft-deleted "doc-3", plus "gone"
    queries = rng.normal(size=(5, 12)).astype(np.float32)
    with vs.VecStore.open(path, read_only=True) as s:  # the real clock: "gone" has expired
        truth = [[h.id for h in s.query(q, k=10)] for q in queries]
    return {"dir": str(tmp / "exp"), "metric": request.param, "x": x, "queries": queries, "truth": truth}


def test_qdrant_loader_gives_the_same_top_k(exported):
    pytest.importorskip("qdrant_client")
    loader = load_example("load_into_qdrant")
    from qdrant_client import QdrantClient

    client = QdrantClient(":memory:")
    assert loader.load(exported["dir"], client, "docs", batch_size=64) == 299  # not "gone"
    assert client.count("docs").count == 299
    point = client.retrieve("docs", [loader.point_id("doc-11")], with_payload=True, with_vectors=True)[0]
    assert point.payload == {"i": 11, "lang": "de", "vecstore_id": "doc-11"}
    if exported["metric"] == "euclidean":  # cosine vectors are normalized by Qdrant
        assert np.array(point.vector, dtype=np.float32).tobytes() == exported["x"][11].tobytes()
    for q, truth in zip(exported["queries"], exported["truth"]):
        hits = client.query_points("docs", query=q.tolist(), limit=10, with_payload=True).points
        assert [h.payload["vecstore_id"] for h in hits] == truth
    client.close()


def test_lancedb_loader_gives_the_same_top_k(exported, tmp_path):
    lancedb = pytest.importorskip("lancedb")
    loader = load_example("load_into_lancedb")
    table = lancedb.connect(str(tmp_path / "lance"))
    assert loader.load(exported["dir"], table, "docs", batch_size=64) == 299
    t = table.open_table("docs")
    assert t.count_rows() == 299
    row = t.search().where("id = 'doc-11'").limit(1).to_list()[0]
    assert json.loads(row["metadata"]) == {"i": 11, "lang": "de"} and row["expires_at"] is None
    assert np.array(row["vector"], dtype=np.float32).tobytes() == exported["x"][11].tobytes()
    for q, truth in zip(exported["queries"], exported["truth"]):
        hits = t.search(q).distance_type(loader.DISTANCE[exported["metric"]]).limit(10).to_list()
        assert [h["id"] for h in hits] == truth


def test_the_guide_shows_the_loaders_as_they_are():
    page = open(os.path.join(ROOT, "docs", "guide", "scale-out.md"), encoding="utf-8").read()
    for name in ("load_into_qdrant", "load_into_lancedb"):
        source = open(os.path.join(ROOT, "docs", "examples", f"{name}.py"), encoding="utf-8").read()
        body = re.search(r"^def load\(.*?(?=^\n\ndef )", source, re.S | re.M).group(0).rstrip()
        assert body in page, f"docs/guide/scale-out.md does not show the load() of docs/examples/{name}.py as it is"
        assert f"docs/examples/{name}.py" in page
