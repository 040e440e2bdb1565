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


# --- fan-out, merge, dimensions, layout ------------------------------------------------------------------------

def test_shard_threads_run_every_call_and_hand_back_errors_as_values():
    import threading
    import time

    from vecstore_ref.scale.fanout import ShardThreads

    done = []
    lock = threading.Lock()

    def work(i):
        time.sleep(0.001 * (i % 3))
        with lock:
            done.append(i)
        if i == 2:
            raise vs.NotFoundError("two")
        return threading.current_thread().name, i * i

    pool = ShardThreads(3)
    try:
        for _ in range(20):
            done.clear()
            out = pool.run(work, list(range(5)))
            assert sorted(done) == [0, 1, 2, 3, 4]  # every call finished before run returned
            assert isinstance(out[2], vs.NotFoundError)
            assert [o[1] for i, o in enumerate(out) if i != 2] == [0, 1, 9, 16]
            assert out[0][0] == threading.current_thread().name  # the first runs in the calling thread
        names = pool.run(lambda i: threading.current_thread().name, range(4))
        workers = min(3, len(os.sched_getaffinity(0)) - 1)  # no more workers than cores beyond the caller's
        assert len(set(names)) == 1 + workers
    finally:
        pool.close()
    pool.close()  # idempotent


def test_a_caller_runs_a_busy_workers_part_itself_and_close_waits_for_running_calls():
    """Two callers at once never queue behind each other: while the one worker holds the first caller's slow
    call, a second caller runs both of its parts in its own thread. ``close`` returns only after that slow call."""
    import threading

    from vecstore_ref.scale.fanout import ShardThreads

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: ShardThreads starts no worker")
    started, release = threading.Event(), threading.Event()

    def work(item):
        if item == "slow":
            started.set()
            assert release.wait(30)
        return threading.get_ident()

    pool = ShardThreads(1)
    first: list = []
    caller = threading.Thread(target=lambda: first.extend(pool.run(work, ["fast", "slow"])))
    caller.start()
    try:
        assert started.wait(30)
        me = threading.get_ident()
        assert pool.run(work, ["a", "b"]) == [me, me]  # the worker is busy: both parts ran here
        closed = threading.Event()
        closer = threading.Thread(target=lambda: (pool.close(), closed.set()))
        closer.start()
        assert not closed.wait(0.2)  # the slow call is still running
    finally:
        release.set()
    caller.join(30)
    closer.join(30)
    assert closed.is_set() and not closer.is_alive()
    assert first[0] == caller.ident and first[1] not in (caller.ident, me)  # the slow part ran on the worker
    from vecstore_ref.handoff import IN_PYTHON

    assert not IN_PYTHON.any()  # no thread, sleeping or stopped, is left marked as being in Python
    with pytest.raises(RuntimeError):
        pool.run(work, ["x"])


def test_a_callers_executor_runs_the_fan_out_and_stays_usable(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    ids, x = data(200, seed=9)
    with ThreadPoolExecutor(2) as pool:
        with vs.ShardedStore.open(tmp_path / "sh", 3, executor=pool, dim=8, index="flat", durability="none") as sh, \
                vs.VecStore.open(tmp_path / "one", dim=8, index="flat", durability="none") as one:
            sh.upsert_many(ids, x)
            one.upsert_many(ids, x)
            assert [(n.id, n.score) for n in sh.query(x[3], k=6)] == [(n.id, n.score) for n in one.query(x[3], k=6)]
        assert pool.submit(lambda: 42).result() == 42


def test_ties_across_shards_are_broken_by_id_as_in_one_store(tmp_path):
    ids, x = data(400, seed=10)
    x[50:70] = x[0]  # twenty-one records at the same place, spread over the shards
    with vs.ShardedStore.open(tmp_path / "sh", 4, dim=8, index="flat", durability="none") as sh, \
            vs.VecStore.open(tmp_path / "one", dim=8, index="flat", durability="none") as one:
        sh.upsert_many(ids, x)
        one.upsert_many(ids, x)
        assert len({shard_of(f"doc-{i}", 4) for i in [0, *range(50, 70)]}) == 4
        for k in (1, 5, 21, 22, 30):
            a, b = sh.query(x[0], k=k), one.query(x[0], k=k)
            assert [(n.id, n.score) for n in a] == [(n.id, n.score) for n in b]
        qs = np.stack([x[0], x[1], x[50]])
        for k in (3, 21, 25):
            ra, rb = sh.query_batch(qs, k=k), one.query_batch(qs, k=k)
            assert (ra.ids == rb.ids).all() and np.array_equal(ra.scores, rb.scores)


def test_results_say_no_shard_was_missing(tmp_path):
    ids, x = data(30)
    with vs.ShardedStore.open(tmp_path / "sh", 2, dim=8, durability="none") as sh:
        sh.upsert_many(ids, x)
        hits = sh.query(x[0], k=3)
        assert isinstance(hits, list) and hits.missing_shards == () and hits == list(hits)
        assert hits.to_dict()["missing_shards"] == [] and len(hits.to_dict()["results"]) == 3
        batch = sh.query_batch(x[:2], k=3)
        assert batch.missing_shards == () and batch.to_dict()["missing_shards"] == []


def test_the_first_write_fixes_the_dimension_for_every_shard(tmp_path):
    with vs.ShardedStore.open(tmp_path / "sh", 4, durability="none") as sh:
        assert sh.query(np.ones(3, np.float32)) == []  # empty: any dimension is fine to ask
        sh.upsert("first", np.ones(3, np.float32))
        others = [i for i in (f"o{j}" for j in range(40)) if shard_of(i, 4) != shard_of("first", 4)]
        with pytest.raises(vs.DimensionMismatchError):
            sh.upsert(others[0], np.ones(5, np.float32))  # a shard with no vector yet would have taken it
        with pytest.raises(vs.DimensionMismatchError):
            sh.upsert_many(others[:2], np.ones((2, 5), np.float32))
        res = sh.batch_execute([vs.Upsert(others[1], [1, 2, 3]), vs.Upsert(others[2], [1, 2, 3, 4, 5])])
        assert res.succeeded == 1 and [(e.index, e.type) for e in res.errors] == [(1, "DimensionMismatchError")]
        assert all(s.stats().dim in (None, 3) for s in sh.shards) and len(sh) == 2
    with vs.ShardedStore.open(tmp_path / "sh") as sh:
        with pytest.raises(vs.DimensionMismatchError):
            sh.upsert(others[3], np.ones(4, np.float32))
    with vs.ShardedStore.open(tmp_path / "b", 3, durability="none") as sh:  # a batch sets it too
        res = sh.batch_execute([vs.Upsert("bad", [np.nan, 1.0]), vs.Upsert("a", [1, 2, 3, 4]),
                                vs.Upsert("b", [1, 2])])
        assert res.succeeded == 1 and [e.index for e in res.errors] == [0, 2]
        assert sh.stats()["dim"] == 4


def test_a_missing_shard_directory_is_an_error_not_an_empty_shard(tmp_path):
    import shutil

    ids, x = data(50)
    with vs.ShardedStore.open(tmp_path / "sh", 3, dim=8) as sh:
        sh.upsert_many(ids, x)
    shutil.move(tmp_path / "sh" / "shard-0002", tmp_path / "away")
    with pytest.raises(vs.CorruptStoreError, match="shard 2"):
        vs.ShardedStore.open(tmp_path / "sh")
    assert not os.path.exists(tmp_path / "sh" / "shard-0002")
    shutil.move(tmp_path / "away", tmp_path / "sh" / "shard-0002")
    with vs.ShardedStore.open(tmp_path / "sh") as sh:  # the other shards were not left locked
        assert len(sh) == 50


def test_shards_json_is_written_last(tmp_path):
    with vs.ShardedStore.open(tmp_path / "sh", 3, dim=8) as sh:
        sh.upsert("a", np.ones(8, np.float32))
    os.remove(tmp_path / "sh" / "SHARDS.json")  # as if creation had crashed before its commit point
    with vs.ShardedStore.open(tmp_path / "sh", 3, dim=8) as sh:
        assert "a" in sh
    assert json.loads((tmp_path / "sh" / "SHARDS.json").read_text())["n_shards"] == 3


def test_progress_hears_the_total(tmp_path, capsys):
    ids, x = data(20)
    seen = []
    with vs.ShardedStore.open(tmp_path / "sh", 2, dim=8, durability="none") as sh:
        sh.upsert_many(ids, x, progress=lambda done, total: seen.append((done, total)))
        sh.upsert_many(ids, x, progress=True)
        with pytest.raises(TypeError):
            sh.upsert_many(ids, x, progress="yes")
    assert seen == [(20, 20)]


def test_shard_unavailable_error_is_a_typed_503():
    import pickle

    exc = vs.ShardUnavailableError("shard 3 is unavailable: gone", (3,))
    assert isinstance(exc, vs.VecStoreError) and exc.http_status == 503 and exc.code == "shard_unavailable"
    again = pickle.loads(pickle.dumps(exc))
    assert again.shards == (3,) and str(again) == str(exc)
    assert "ShardUnavailableError" in vs.__all__


def test_every_call_on_a_closed_sharded_store_raises_store_closed(tmp_path):
    ss = vs.ShardedStore.open(str(tmp_path / "s"), 2, dim=2, metric="euclidean", index="flat")
    ss.upsert("a", [1, 1])
    ss.close()
    calls = [lambda: ss.query([1, 1]), lambda: ss.query_batch(np.ones((1, 2))), ss.stats, ss.compact,
             lambda: ss.batch_execute([]), lambda: list(ss), lambda: len(ss),
             lambda: ss.upsert_many(["b"], np.ones((1, 2))), lambda: ss.export(str(tmp_path / "e")),
             lambda: ss.upsert("b", [1, 1]), lambda: ss.get("a")]
    for call in calls:
        with pytest.raises(vs.StoreClosedError):
            call()


def _tree_digest(root) -> dict:
    import hashlib

    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            out[os.path.relpath(p, root)] = (hashlib.sha256(open(p, "rb").read()).hexdigest()
                                             if os.path.isfile(p) else "dir")
    return out


def test_a_reopen_with_another_dim_is_refused_before_any_shard_changes(tmp_path):
    """The empty shards used to save the new dimension before the shard holding vectors refused it: shards that
    disagreed, and a store that took no more writes."""
    path = tmp_path / "sh"
    last = next(f"id{i}" for i in range(1000) if shard_of(f"id{i}", 4) == 3)  # the shard opened last
    with vs.ShardedStore.open(path, 4, index="flat") as sh:
        sh.upsert(last, [1.0, 2.0, 3.0, 4.0])
    before = _tree_digest(path)
    with pytest.raises(vs.InvalidArgumentError, match="4-dimensional"):
        vs.ShardedStore.open(path, dim=5)
    assert _tree_digest(path) == before
    with vs.ShardedStore.open(path) as sh:
        assert [s.stats().dim for s in sh.shards].count(4) == 1 and sh.stats()["dim"] == 4
        ids, x = data(40, dim=4)
        assert sh.upsert_many(ids, x) == 40


def test_a_batch_fixes_the_dimension_by_its_first_upsert_that_succeeds(tmp_path):
    """As in one store: an upsert refused for its metadata fixes nothing, and the next one sets the dimension."""
    bad_first = [vs.Upsert("a", [1.0, 2.0, 3.0], {"x": {"nested": 1}}), vs.Upsert("b", [1.0, 2.0])]
    for open_store in (lambda p: vs.VecStore.open(p, index="flat"), lambda p: vs.ShardedStore.open(p, 3, index="flat")):
        with open_store(tmp_path / f"s{len(os.listdir(tmp_path))}") as s:
            res = s.batch_execute(bad_first)
            assert (res.succeeded, [(e.index, e.type) for e in res.errors]) == (1, [(0, "InvalidMetadataTypeError")])
            assert len(s) == 1
    with vs.ShardedStore.open(tmp_path / "only_failed", 3, index="flat") as sh:
        assert sh.batch_execute([vs.Upsert("a", [1.0, 2.0, 3.0], {"x": {"n": 1}})]).succeeded == 0
        sh.upsert("b", [1.0, 2.0])  # the failed batch fixed no dimension
        assert sh.stats()["dim"] == 2


def test_import_is_checked_like_a_vecstores_and_a_bad_batch_writes_nothing(tmp_path):
    ids, x = data(50, dim=4)
    with vs.VecStore.open(tmp_path / "src", dim=4, index="flat") as src:
        src.upsert_many(ids, x)
        src.export(tmp_path / "exp")
    records = (tmp_path / "exp" / "records.jsonl").read_text().splitlines()
    bad = json.loads(records[30])
    bad["metadata"] = {"x": {"nested": 1}}
    records[30] = json.dumps(bad)
    (tmp_path / "exp" / "records.jsonl").write_text("\n".join(records) + "\n")
    manifest = json.loads((tmp_path / "exp" / "manifest.json").read_text())
    import hashlib

    data_bytes = (tmp_path / "exp" / "records.jsonl").read_bytes()  # the manifest made to match the edited rows
    entry = manifest["files"]["records.jsonl"]
    entry["sha256"], entry["size"] = hashlib.sha256(data_bytes).hexdigest(), len(data_bytes)
    (tmp_path / "exp" / "manifest.json").write_text(json.dumps(manifest))
    with vs.ShardedStore.open(tmp_path / "sh", 3, dim=4, index="flat") as sh:
        sh.upsert("keep", [1.0, 2.0, 3.0, 4.0])
        before = _tree_digest(tmp_path / "sh")
        with pytest.raises(vs.InvalidMetadataTypeError):
            sh.import_(tmp_path / "exp")
        for size in (0, -3, "x", 2.5):
            with pytest.raises(vs.InvalidArgumentError):
                sh.import_(tmp_path / "exp", batch_size=size)
        assert len(sh) == 1 and _tree_digest(tmp_path / "sh") == before
    with vs.VecStore.open(tmp_path / "d8", dim=8, index="flat") as other:
        other.upsert("z", np.ones(8))
        other.export(tmp_path / "exp8")
    with vs.ShardedStore.open(tmp_path / "sh") as sh:
        with pytest.raises(vs.DimensionMismatchError):
            sh.import_(tmp_path / "exp8")
        assert _tree_digest(tmp_path / "sh") == before
    seen: list = []
    with vs.ShardedStore.open(tmp_path / "sh8", 2, index="flat") as sh8:
        assert sh8.import_(tmp_path / "exp8", progress=lambda done, total: seen.append((done, total))) == 1
        assert seen == [(1, 1)] and sh8.get("z").vector.tolist() == [1.0] * 8


@pytest.mark.parametrize("ids", [None, 5])
def test_bulk_ids_that_are_not_a_sequence_are_a_typed_error(tmp_path, ids):
    with vs.VecStore.open(tmp_path / "one", dim=4) as one, vs.ShardedStore.open(tmp_path / "sh", 2, dim=4) as sh:
        for s in (one, sh):
            with pytest.raises(vs.InvalidArgumentTypeError):
                s.upsert_many(ids, np.ones((2, 4)))


def test_a_store_of_the_other_kind_is_refused_and_left_alone(tmp_path):
    with vs.ShardedStore.open(tmp_path / "sh", 2, dim=4) as sh:
        sh.upsert("a", [1.0, 2.0, 3.0, 4.0])
    with vs.VecStore.open(tmp_path / "one", dim=4) as one:
        one.upsert("a", [1.0, 2.0, 3.0, 4.0])
    before = (_tree_digest(tmp_path / "sh"), _tree_digest(tmp_path / "one"))
    with pytest.raises(vs.InvalidArgumentError, match="sharded store"):
        vs.VecStore.open(tmp_path / "sh")
    with pytest.raises(vs.InvalidArgumentError, match="holds a VecStore"):
        vs.ShardedStore.open(tmp_path / "one", 2)
    assert (_tree_digest(tmp_path / "sh"), _tree_digest(tmp_path / "one")) == before


def test_stats_read_like_a_vecstores(tmp_path):
    ids, x = data(60, dim=4)
    with vs.ShardedStore.open(tmp_path / "sh", 3, dim=4, index="flat") as sh, \
            vs.VecStore.open(tmp_path / "one", dim=4, index="flat") as one:
        for s in (sh, one):
            s.upsert_many(ids, x)
            s.soft_delete(ids[0])
        a, b = sh.stats(), one.stats()
        assert isinstance(a, vs.ShardedStats) and len(a.shards) == 3
        for name in ("visible", "soft_deleted", "deleted_count", "dim", "metric", "index", "unindexed"):
            assert getattr(a, name) == getattr(b, name), name
        assert a["visible"] == 59 and a.to_dict()["n_shards"] == 3 and json.dumps(a.to_dict())


def test_compaction_and_checkpoint_configs_are_set_on_every_shard(tmp_path):
    with vs.ShardedStore.open(tmp_path / "sh", 3, dim=4) as sh:
        sh.set_compaction_config(vs.CompactionConfig(min_deleted_ratio=0.5))
        sh.set_checkpoint_config(vs.CheckpointConfig(enabled=False))
        with pytest.raises(vs.InvalidArgumentTypeError):
            sh.set_compaction_config({"min_deleted_ratio": 0.5})
        assert sh.compaction_config().min_deleted_ratio == 0.5 and not sh.checkpoint_config().enabled
    with vs.ShardedStore.open(tmp_path / "sh") as sh:  # persisted by each shard
        assert all(s.compaction_config().min_deleted_ratio == 0.5 for s in sh.shards)
        assert not any(s.checkpoint_config().enabled for s in sh.shards)


def test_a_planted_shard_link_is_refused_before_another_shard_saves_a_new_dim(tmp_path):
    import shutil

    with vs.ShardedStore.open(tmp_path / "sh", 2, index="flat"):
        pass
    with vs.VecStore.open(tmp_path / "outside", dim=4, index="flat") as outside:
        outside.upsert("x", [1.0, 2.0, 3.0, 4.0])
    shutil.rmtree(tmp_path / "sh" / "shard-0001")
    os.symlink(tmp_path / "outside", tmp_path / "sh" / "shard-0001")
    before = (_tree_digest(tmp_path / "sh" / "shard-0000"), _tree_digest(tmp_path / "outside"))
    with pytest.raises(vs.UnsafePathError):
        vs.ShardedStore.open(tmp_path / "sh", dim=5)
    assert (_tree_digest(tmp_path / "sh" / "shard-0000"), _tree_digest(tmp_path / "outside")) == before


def _rare_field_store(tmp_path, index="flat"):
    """A 2-shard store whose field ``rare`` only one shard has seen (a str there), and ``g`` on every record."""
    ids, x = data(300, seed=5)
    md = [{"g": i % 4} for i in range(300)]
    md[7] = {"g": 3, "rare": "yes"}
    sh = vs.ShardedStore.open(tmp_path / "sh", 2, dim=8, index=index, durability="none")
    sh.upsert_many(ids, x, md)
    return sh, ids, x, md


def test_estimate_query_combines_the_shards_as_one_store(tmp_path):
    sh, ids, x, md = _rare_field_store(tmp_path)
    with sh, vs.VecStore.open(tmp_path / "one", dim=8, index="flat", durability="none") as one:
        one.upsert_many(ids, x, md)
        rare_shard = shard_of("doc-7", 2)
        assert "rare" not in sh.shards[1 - rare_shard]._field_kinds()
        for flt in (None, "g = 1", "rare = 'yes'", "rare = 3", "NOT rare = 3", "nope = 1 OR g < 2", "g = 'x'"):
            a, b = sh.estimate_query(x[0], k=5, filter=flt), one.estimate_query(x[0], k=5, filter=flt)
            assert (a.valid, a.errors, a.selectivity, a.recommendations) == \
                (b.valid, b.errors, b.selectivity, b.recommendations), flt
            parts = [s.estimate_query(x[0], k=5, filter=flt) for s in sh.shards]
            assert a.estimated_distance_computations == sum(p.estimated_distance_computations for p in parts)
            assert a.estimated_duration_ms >= max(p.estimated_duration_ms for p in parts) * 0.5
        # the shard without the field alone calls the filter a mistake; the store as a whole does not
        assert not sh.shards[1 - rare_shard].estimate_query(x[0], filter="rare = 'yes'").valid
        assert sh.estimate_query(vs.Query(x[0], k=3, filter="g = 2")).valid


@pytest.mark.parametrize("args", [
    (("not a vector",), {}), (([1.0, 2.0],), {"k": 0}), ((np.ones(8),), {"k": "3"}), ((np.ones(8),), {"ef": -1}),
    ((np.ones(8),), {"filter": "g ="}), ((np.ones(8),), {"filter": 12}), ((np.full(8, np.nan),), {}),
    ((vs.Query(np.ones(8), k=2),), {"k": 3}), ((None,), {"filter": object()}),
])
def test_estimate_query_never_raises_for_a_bad_query_and_names_each_problem(tmp_path, args):
    sh, ids, x, md = _rare_field_store(tmp_path)
    with sh:
        pos, kw = args
        est = sh.estimate_query(*pos, **kw)
        assert not est.valid and est.errors
        try:
            single = sh.shards[0].estimate_query(*pos, **kw)
        except Exception as exc:  # pragma: no cover - a VecStore estimate never raises either
            pytest.fail(f"a shard's estimate raised {exc!r}")
        assert est.errors == single.errors


def test_query_explain_merges_the_shards_and_ranks_again(tmp_path):
    sh, ids, x, md = _rare_field_store(tmp_path)
    with sh:
        for flt in (None, "g = 1 OR rare = 'yes'", "g = 9"):
            e = sh.query_explain(x[7], k=6, filter=flt)
            q = sh.query(x[7], k=6, filter=flt)
            assert [(n.id, n.score) for n in e.neighbors] == [(n.id, n.score) for n in q]
            assert [n.rank for n in e.neighbors] == list(range(1, len(q) + 1))
            parts = [s.query_explain(x[7], k=6, filter=flt) for s in sh.shards]
            assert e.distance_computations == sum(p.distance_computations for p in parts)
            assert e.candidates_filtered_out == sum(p.candidates_filtered_out for p in parts)
            assert {"validate", "shards", "merge", "shards.search"} <= set(e.phases_ms)
        e = sh.query_explain(x[7], k=2, filter="g = 1 OR rare = 'yes'")
        assert e.neighbors[0].id == "doc-7" and e.neighbors[0].matched_clauses == ["rare = 'yes'"]
        assert e.to_dict()["neighbors"][0]["rank"] == 1
        with pytest.raises(vs.DimensionMismatchError):
            sh.query_explain(x[0][:3])
        with pytest.raises(vs.FilterSyntaxError):
            sh.query_explain(x[0], filter="g =")
        with pytest.raises(vs.InvalidArgumentError):
            sh.query_explain(vs.Query(x[0], k=2), k=3)
    with pytest.raises(vs.StoreClosedError):
        sh.query_explain(x[0])
    with pytest.raises(vs.StoreClosedError):
        sh.estimate_query(x[0])


def test_no_thread_is_left_flagged_in_python_after_a_sharded_query(tmp_path):
    """The hand-off hint (`vecstore_ref.handoff`): a thread flagged "in a query's Python" that is not makes every
    other walk spin at its end. A sharded query's searches run on the executor's threads and must leave their
    flags as they found them."""
    from concurrent.futures import ThreadPoolExecutor

    from vecstore_ref.handoff import FLAGS

    ids, x = data(400, seed=7)
    with ThreadPoolExecutor(2) as pool, vs.ShardedStore.open(tmp_path / "sh", 2, dim=8, executor=pool,
                                                             durability="none") as sh:
        sh.upsert_many(ids, x)
        sh.flush_index()
        for q in x[:20]:
            assert len(sh.query(q, k=5)) == 5
        assert not any(FLAGS), [i for i, f in enumerate(FLAGS) if f]


def test_sharded_batches_have_one_stores_shape_for_every_k(tmp_path):
    from vecstore_ref.config import MAX_K

    ids, x = data(60, seed=8)
    with vs.ShardedStore.open(tmp_path / "sh", 4, dim=8, index="flat", durability="none", max_k=10**12) as sh, \
            vs.VecStore.open(tmp_path / "one", dim=8, index="flat", durability="none", max_k=10**12) as one:
        sh.upsert_many(ids, x)
        one.upsert_many(ids, x)
        for k in (5, 60, 100, MAX_K, MAX_K + 1, 10**9):
            a, b = sh.query_batch(x[:7], k=k), one.query_batch(x[:7], k=k)
            assert a.ids.shape == b.ids.shape == a.scores.shape, k
            assert (a.ids == b.ids).all() and np.array_equal(a.scores, b.scores) and (a.n_found == b.n_found).all()


def test_queries_and_writes_on_a_callers_small_executor_never_deadlock(tmp_path):
    """A read holding every shard's lock while its parts wait in a two-thread pool that a write's parts (waiting
    for those locks) fill up would wait for ever; each part takes its own lock instead on a caller's executor."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    ids, x = data(200, seed=9)
    done = {"q": 0, "w": 0}
    with ThreadPoolExecutor(2) as pool, vs.ShardedStore.open(tmp_path / "sh", 2, dim=8, index="flat",
                                                             executor=pool, durability="none") as sh:
        sh.upsert_many(ids, x)

        def reads():
            for q in x[:150]:
                sh.query(q, k=5)
                done["q"] += 1

        def writes():
            for i in range(60):
                sh.batch_execute([vs.Upsert(f"w{i}-{j}", x[j]) for j in range(8)])
                done["w"] += 1

        threads = [threading.Thread(target=reads, daemon=True), threading.Thread(target=writes, daemon=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)  # a bound against hanging the suite, not a timing assertion
        assert done == {"q": 150, "w": 60}, done


def test_a_closed_store_says_so_before_it_looks_at_the_arguments(tmp_path):
    s = vs.VecStore.open(tmp_path / "s", dim=2, index="flat")
    s.close()
    for call in (lambda: s.get(""), lambda: s.get(123), lambda: s.get("a", include_deleted="x"),
                 lambda: s.query(vs.Query([1.0, 0.0]), k=3)):
        with pytest.raises(vs.StoreClosedError):
            call()
    sh = vs.ShardedStore.open(tmp_path / "sh", 2, dim=2)
    sh.close()
    with pytest.raises(vs.StoreClosedError):
        sh.get("")
