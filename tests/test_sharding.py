"""ShardedStore (SPEC section 12): routing, batches mapped back, exact merged queries, stats, export/import."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import vecstore_ref as vs
from vecstore_ref.scale import shard_of


def data(n, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    return [f"doc-{i}" for i in range(n)], rng.normal(size=(n, dim)).astype(np.float32)


def test_routing_is_stable_across_processes():
    ids = [f"id-{i}" for i in range(50)] + ["é", "日本", "a b"]
    here = [shard_of(i, 7) for i in ids]
    code = "import json,sys; from vecstore_ref.scale import shard_of; " \
           "print(json.dumps([shard_of(i, 7) for i in json.loads(sys.argv[1])]))"
    out = subprocess.run([sys.executable, "-c", code, json.dumps(ids)], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONHASHSEED="123"))
    assert json.loads(out.stdout) == here
    assert len(set(here)) > 3


def test_flat_sharded_queries_equal_one_store_exactly(tmp_path):
    ids, x = data(600, seed=1)
    md = [{"g": i % 3} for i in range(600)]
    with vs.ShardedStore.open(tmp_path / "sh", 4, dim=8, index="flat", durability="none") as sh, \
            vs.VecStore.open(tmp_path / "one", dim=8, index="flat", durability="none") as one:
        assert sh.upsert_many(ids, x, md) == 600
        one.upsert_many(ids, x, md)
        assert len(sh) == 600 and sorted(sh) == sorted(one)
        assert all(len(s) > 100 for s in sh.shards)
        qs = np.random.default_rng(2).normal(size=(20, 8)).astype(np.float32)
        for q in qs:
            a = [(n.id, n.score) for n in sh.query(q, k=7, filter="g = 1")]
            b = [(n.id, n.score) for n in one.query(q, k=7, filter="g = 1")]
            assert a == b
        ra, rb = sh.query_batch(qs, k=9), one.query_batch(qs, k=9)
        assert (ra.ids == rb.ids).all() and np.array_equal(ra.scores, rb.scores)
        assert (ra.n_found == rb.n_found).all()


def test_batch_errors_come_back_at_the_callers_indexes(tmp_path):
    with vs.ShardedStore.open(tmp_path / "sh", 3, dim=4, durability="none") as sh:
        ops = [vs.Upsert(f"u{i}", [1, i, 0, 0]) for i in range(10)]
        ops[4] = vs.Delete("missing")
        ops[7] = vs.Upsert("bad", [1, 2, 3])  # wrong dimension
        ops.append(vs.Delete(5))  # not a str id
        res = sh.batch_execute(ops)
        assert res.succeeded == 8 and res.failed == 3
        assert [e.index for e in res.errors] == [4, 7, 10]
        assert len(sh) == 8 and "u3" in sh and "missing" not in sh


def test_single_record_calls_go_to_one_shard(tmp_path):
    with vs.ShardedStore.open(tmp_path / "sh", 4, dim=3, durability="none", clock=lambda: 1000.0) as sh:
        sh.upsert("a", [1, 0, 0], {"k": 1})
        sh.upsert_with_ttl("b", [0, 1, 0], None, 10)
        owner = sh.shards[shard_of("a", 4)]
        assert "a" in owner and sum("a" in s for s in sh.shards) == 1
        assert sh.soft_delete("a") and not sh.soft_delete("a")
        assert sh.restore("a")
        sh.update_metadata("a", {"k": 2})
        assert sh.get("a").metadata == {"k": 2}
        sh.set_ttl("a", 5)
        sh.delete("b")
        with pytest.raises(vs.NotFoundError):
            sh.get("b")
        st = sh.stats()
        assert st["visible"] == 1 and st["n_shards"] == 4 and len(st["shards"]) == 4
        assert sh.compact() == 1 and sh.verify().ok


def test_reopen_keeps_the_shard_count(tmp_path):
    ids, x = data(100)
    with vs.ShardedStore.open(tmp_path / "sh", 5, dim=8) as sh:
        sh.upsert_many(ids, x)
    with vs.ShardedStore.open(tmp_path / "sh") as sh:
        assert sh.n_shards == 5 and len(sh) == 100
    with pytest.raises(vs.InvalidArgumentError):
        vs.ShardedStore.open(tmp_path / "sh", 3)
    with pytest.raises(vs.InvalidArgumentError):
        vs.ShardedStore.open(tmp_path / "other", 0, dim=8)


def test_bad_bulk_input_writes_nothing(tmp_path):
    ids, x = data(50)
    with vs.ShardedStore.open(tmp_path / "sh", 3, dim=8) as sh:
        x[30, 2] = np.nan
        with pytest.raises(vs.InvalidVectorError):
            sh.upsert_many(ids, x)
        x[30, 2] = 0.5
        with pytest.raises(vs.InvalidArgumentError):  # 10 ids for 50 finite vectors
            sh.upsert_many(ids[:10], x)
        assert len(sh) == 0


def test_export_then_import_gives_the_same_records(tmp_path):
    ids, x = data(300, seed=4)
    md = [{"i": i} for i in range(300)]
    with vs.ShardedStore.open(tmp_path / "a", 3, dim=8, index="flat", durability="none") as a:
        a.upsert_many(ids, x, md)
        a.soft_delete("doc-5")
        a.upsert_with_ttl("ttl", x[0], None, 3600)
        manifest = a.export(tmp_path / "exp")
        assert manifest["count"] == 300 and manifest["dim"] == 8
        assert sorted(os.listdir(tmp_path / "exp")) == ["manifest.json", "records.jsonl", "vectors.npy"]
    with vs.ShardedStore.open(tmp_path / "b", 2, dim=8, index="flat", durability="none") as b:
        assert b.import_(tmp_path / "exp", batch_size=64) == 300
        assert "doc-5" not in b and "ttl" in b and b.get("ttl").expires_at is not None
        assert b.get("doc-7").metadata == {"i": 7}
        assert b.get("doc-7").vector.tobytes() == x[7].tobytes()
        with open(tmp_path / "exp" / "records.jsonl", "ab") as f:
            f.write(b"tampered\n")
        with pytest.raises(vs.BackupCorruptError):
            b.import_(tmp_path / "exp")


def test_ray_actors_hold_the_shards(tmp_path):
    ray = pytest.importorskip("ray")
    ids, x = data(200, seed=6)
    try:
        with vs.ShardedStore.open(tmp_path / "sh", 3, executor="ray", dim=8, index="flat", durability="none") as sh, \
                vs.VecStore.open(tmp_path / "one", dim=8, index="flat", durability="none") as one:
            assert sh.upsert_many(ids, x) == 200
            one.upsert_many(ids, x)
            q = x[17]
            assert [(n.id, n.score) for n in sh.query(q, k=5)] == [(n.id, n.score) for n in one.query(q, k=5)]
            res = sh.batch_execute([vs.Delete("doc-1"), vs.Delete("nope"), vs.SoftDelete("doc-2")])
            assert res.succeeded == 2 and [e.index for e in res.errors] == [1]
            assert len(sh) == 198 and "doc-3" in sh
            with pytest.raises(vs.NotFoundError):
                sh.get("doc-1")
            with pytest.raises(vs.StoreLockedError):  # the actor holds the shard's directory lock
                vs.VecStore.open(tmp_path / "sh" / "shard-0000")
            sh.export(tmp_path / "exp")
        with vs.ShardedStore.open(tmp_path / "sh") as again:  # the actors released the locks
            assert len(again) == 198
    finally:
        ray.shutdown()


@pytest.mark.parametrize("bad", ["id", "metadata", "ttl"])
def test_a_bad_row_on_any_shard_writes_nothing(tmp_path, bad):
    from vecstore_ref._fs import dir_digest

    ids, x = data(60)
    md = [None] * 60
    ttl = None
    if bad == "id":
        ids[41] = ""
    elif bad == "metadata":
        md[41] = {"k": {"nested": 1}}
    else:
        ttl = -1
    with vs.ShardedStore.open(tmp_path / "sh", 4, dim=8) as sh:
        before = dir_digest(str(tmp_path / "sh"))
        with pytest.raises(vs.InvalidInputError):
            sh.upsert_many(ids, x, md, ttl=ttl)
        assert dir_digest(str(tmp_path / "sh")) == before and len(sh) == 0


def test_unknown_options_are_typed_errors_and_write_nothing(tmp_path):
    with pytest.raises(TypeError, match="bogus") as info:
        vs.ShardedStore.open(tmp_path / "sh", 2, dim=4, bogus=1)
    assert isinstance(info.value, vs.InvalidInputError)
    assert not os.path.exists(tmp_path / "sh")


def test_a_malformed_export_record_is_a_typed_error(tmp_path):
    import hashlib

    ids, x = data(5)
    with vs.ShardedStore.open(tmp_path / "a", 2, dim=8, durability="none") as a:
        a.upsert_many(ids, x)
        a.export(tmp_path / "exp")
    rec = tmp_path / "exp" / "records.jsonl"
    rec.write_bytes(rec.read_bytes().replace(b'"id"', b'"ID"', 1))  # well-formed JSON, not a record
    man = json.loads((tmp_path / "exp" / "manifest.json").read_text())
    man["files"]["records.jsonl"] = {"size": rec.stat().st_size, "sha256": hashlib.sha256(rec.read_bytes()).hexdigest()}
    (tmp_path / "exp" / "manifest.json").write_text(json.dumps(man))
    with vs.ShardedStore.open(tmp_path / "b", 2, dim=8, durability="none") as b:
        with pytest.raises(vs.BackupCorruptError):
            b.import_(tmp_path / "exp")
        assert len(b) == 0
