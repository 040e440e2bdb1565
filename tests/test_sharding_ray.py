"""ShardedStore on Ray actors: routing, batches, exact merged queries, export/import, placement, and shards whose
actor is killed mid-run (typed errors, automatic reopen from the directory, no acknowledged write lost).

One local Ray instance with 2 CPUs serves the whole session. Without Ray these tests are skipped, except where
``VECSTORE_REQUIRE_RAY=1`` (CI sets it): there a missing Ray fails them.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import vecstore_ref as vs
from vecstore_ref.scale import RayExecutor, shard_of


@pytest.fixture(scope="session")
def ray_cluster():
    if os.environ.get("VECSTORE_REQUIRE_RAY") == "1":
        import ray
    else:
        ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # tests send nothing anywhere
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 2**20)
    yield ray
    ray.shutdown()


def data(n, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    return [f"doc-{i}" for i in range(n)], rng.normal(size=(n, dim)).astype(np.float32)


def open_ray(path, n=2, **opts):
    opts.setdefault("dim", 8)
    opts.setdefault("index", "flat")
    return vs.ShardedStore.open(path, n, executor="ray", **opts)


def wait_for_exit(pid: int) -> None:
    """Block until process ``pid`` has exited (gone, or a zombie): its sockets and its lock are released then."""
    import time

    for _ in range(6000):  # a bound against hanging forever, not a timing assertion
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return
        except (FileNotFoundError, ProcessLookupError):  # gone between the open and the read: ESRCH
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} did not exit")


def kill_shard(ray, store, i: int) -> None:
    shard = store.shards[i]
    pid = shard.info["pid"]
    ray.kill(shard.actor)
    wait_for_exit(pid)


# --- the API over actors --------------------------------------------------------------------------------------

def test_records_live_on_the_shard_their_id_hashes_to(ray_cluster, tmp_path):
    ids, x = data(300, seed=1)
    with open_ray(tmp_path / "sh", 3, durability="none") as sh:
        assert sh.upsert_many(ids, x) == 300
        sh.upsert("single", x[0])
        for i, shard in enumerate(sh.shards):
            want = {j for j in ids + ["single"] if shard_of(j, 3) == i}
            assert set(shard.ids()) == want and len(want) > 50
        assert len(sh) == 301 and "single" in sh and "nope" not in sh
        assert sh.get("doc-7").vector.tobytes() == x[7].tobytes()


def test_a_batch_is_split_by_shard_with_errors_at_the_callers_indexes(ray_cluster, tmp_path):
    ids, x = data(40, seed=2)
    with open_ray(tmp_path / "sh", 3, durability="none") as sh:
        sh.upsert_many(ids, x)
        ops = [vs.Delete(ids[i]) for i in range(10)]
        ops[3] = vs.Delete("missing")
        ops[5] = vs.Upsert("short", [1.0, 2.0])  # wrong dimension
        ops[8] = vs.SoftDelete("missing-too")
        ops.append(vs.Upsert(7, x[0]))  # not a str id
        ops.append(vs.Restore(ids[40 - 1]))  # live already: succeeds, changes nothing
        res = sh.batch_execute(ops)
        assert [e.index for e in res.errors] == [3, 5, 8, 10]
        assert [e.type for e in res.errors] == ["NotFoundError", "DimensionMismatchError", "NotFoundError",
                                                "InvalidIdTypeError"]
        assert res.succeeded == 8 and res.failed == 4
        assert len(sh) == 40 - 7 and ids[3] in sh and ids[4] not in sh


def _pairs(hits):
    return [(n.id, n.score, n.metadata) for n in hits]


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_flat_merged_top_k_equals_one_store_score_for_score(ray_cluster, tmp_path, metric):
    ids, x = data(500, seed=3)
    x[100:110] = x[0]  # equal vectors under different ids: ties, broken by id across shards
    md = [{"g": i % 4, "i": i} for i in range(500)]
    qs = np.concatenate([np.random.default_rng(4).normal(size=(12, 8)).astype(np.float32), x[:1]])
    with open_ray(tmp_path / "sh", 3, metric=metric, durability="none") as sh, \
            vs.VecStore.open(tmp_path / "one", dim=8, index="flat", metric=metric, durability="none") as one:
        sh.upsert_many(ids, x, md)
        one.upsert_many(ids, x, md)
        for q in qs:
            for k, flt in ((10, None), (7, "g = 1"), (600, "i < 30"), (15, "g = 9")):
                a, b = sh.query(q, k=k, filter=flt), one.query(q, k=k, filter=flt)
                assert _pairs(a) == _pairs(b) and a.missing_shards == ()
        assert [n.id for n in sh.query(x[0], k=11)][:11] == sorted(["doc-0"] + [f"doc-{i}" for i in range(100, 110)])
        for k, flt in ((10, None), (25, "g != 2")):
            ra, rb = sh.query_batch(qs, k=k, filter=flt), one.query_batch(qs, k=k, filter=flt)
            assert (ra.ids == rb.ids).all() and np.array_equal(ra.scores, rb.scores)
            assert (ra.n_found == rb.n_found).all() and ra.missing_shards == ()
        query = vs.Query(qs[0], k=5, filter=vs.parse_filter("g = 3"))
        assert _pairs(sh.query(query)) == _pairs(one.query(query))
        one_shard = sh.shards[1]  # a shard alone, over its query channel: single and batch agree
        single, batch = one_shard.query(qs[1], k=4), one_shard.query_batch(qs[1:2], k=4)
        assert [n.id for n in single] == batch.ids[0].tolist() and all(shard_of(n.id, 3) == 1 for n in single)


def test_estimates_and_explains_over_actors_equal_those_of_threads(ray_cluster, tmp_path):
    ids, x = data(300, seed=6)
    md = [{"g": i % 4} for i in range(300)]
    md[5] = {"g": 1, "rare": "yes"}  # a field one shard alone has seen
    with open_ray(tmp_path / "ray", 2, durability="none") as on_ray, \
            vs.ShardedStore.open(tmp_path / "threads", 2, dim=8, index="flat", durability="none") as on_threads:
        on_ray.upsert_many(ids, x, md)
        on_threads.upsert_many(ids, x, md)
        for flt in (None, "g = 1", "rare = 'yes'", "rare = 2", "nope = 1"):
            a, b = on_ray.estimate_query(x[5], k=4, filter=flt), on_threads.estimate_query(x[5], k=4, filter=flt)
            assert (a.valid, a.errors, a.selectivity, a.plan, a.estimated_distance_computations) == \
                (b.valid, b.errors, b.selectivity, b.plan, b.estimated_distance_computations), flt
            ea, eb = on_ray.query_explain(x[5], k=4, filter=flt), on_threads.query_explain(x[5], k=4, filter=flt)
            assert [n.to_dict() for n in ea.neighbors] == [n.to_dict() for n in eb.neighbors]
            assert (ea.plan, ea.distance_computations) == (eb.plan, eb.distance_computations)
        assert not on_ray.estimate_query("junk").valid


def test_query_errors_are_typed_and_need_no_shard(ray_cluster, tmp_path):
    ids, x = data(50)
    with open_ray(tmp_path / "sh", 2, durability="none") as sh:
        sh.upsert_many(ids, x)
        with pytest.raises(vs.FilterSyntaxError):
            sh.query(x[0], filter="g = ")
        with pytest.raises(vs.DimensionMismatchError):
            sh.query(x[0][:3])
        with pytest.raises(vs.InvalidArgumentError):
            sh.query_batch(x[:2], k=0)
        with pytest.raises(vs.DimensionMismatchError):  # found by the shard, raised here as itself
            sh.shards[0].query(x[0][:3])
        assert sh.query_batch(np.zeros((0, 8), np.float32)).ids.shape == (0, 10)


def test_export_from_actors_and_import_with_another_shard_count(ray_cluster, tmp_path):
    ids, x = data(200, seed=5)
    md = [{"i": i} for i in range(200)]
    with open_ray(tmp_path / "a", 3, durability="none") as a:
        a.upsert_many(ids, x, md)
        a.soft_delete("doc-9")
        a.upsert_with_ttl("ttl", x[1], {"t": True}, 3600)
        assert a.export(tmp_path / "exp")["count"] == 200
    with vs.ShardedStore.open(tmp_path / "b", 2, dim=8, index="flat", durability="none") as b:
        assert b.import_(tmp_path / "exp") == 200
        assert "doc-9" not in b and b.get("ttl").expires_at is not None
        assert b.get("doc-3").metadata == {"i": 3} and b.get("doc-3").vector.tobytes() == x[3].tobytes()


def test_the_actors_hold_the_shard_locks_until_close(ray_cluster, tmp_path):
    ids, x = data(30)
    with open_ray(tmp_path / "sh", 2) as sh:
        sh.upsert_many(ids, x)
        with pytest.raises(vs.InvalidArgumentError, match="shard"):  # never a writer behind the sharded store
            vs.VecStore.open(tmp_path / "sh" / "shard-0000")
        from vecstore_ref.opening import opened_by_owner

        with opened_by_owner(), pytest.raises(vs.StoreLockedError):  # and the actor holds its lock
            vs.VecStore.open(tmp_path / "sh" / "shard-0000")
        with pytest.raises(vs.StoreLockedError):  # a second sharded store over the same directories
            open_ray(tmp_path / "sh")
        assert sh.stats()["visible"] == 30 and sh.verify().ok and sh.compact() == 0
    with vs.ShardedStore.open(tmp_path / "sh") as again:
        assert len(again) == 30


# --- placement ------------------------------------------------------------------------------------------------

def test_shards_are_pinned_to_the_nodes_given(ray_cluster, tmp_path):
    ray = ray_cluster
    me = ray.get_runtime_context().get_node_id()
    ex = RayExecutor(node_ids=[me, me], actor_options={"num_cpus": 0.5})
    with vs.ShardedStore.open(tmp_path / "sh", 2, executor=ex, dim=8, durability="none") as sh:
        assert [s.info["node_id"] for s in sh.shards] == [me, me]
        assert all(s.info["resources"].get("CPU") == 0.5 for s in sh.shards)
        sh.upsert("a", np.ones(8, np.float32))
        kill_shard(ray, sh, shard_of("a", 2))
        with pytest.raises(vs.ShardUnavailableError):
            sh.get("a")
        assert sh.get("a").id == "a"  # restarted on the same node
        assert sh.shards[shard_of("a", 2)].info["node_id"] == me


def test_bad_placements_are_typed_errors_and_leave_nothing_locked(ray_cluster, tmp_path):
    with pytest.raises(vs.InvalidArgumentError, match="one Ray node id per shard"):
        vs.ShardedStore.open(tmp_path / "sh", 2, executor=RayExecutor(node_ids=["x"]), dim=8)
    with pytest.raises(vs.InvalidArgumentError, match="no node"):
        vs.ShardedStore.open(tmp_path / "sh", 2, executor=RayExecutor(node_ids=["ab" * 28] * 2), dim=8)
    with pytest.raises(vs.InvalidArgumentError):
        vs.ShardedStore.open(tmp_path / "sh", 2, executor=RayExecutor(actor_options={"max_restarts": 3}), dim=8)
    with pytest.raises(vs.InvalidArgumentError):
        vs.ShardedStore.open(tmp_path / "sh", 2, executor="threads", dim=8)
    with open_ray(tmp_path / "sh", 2) as sh:
        assert len(sh) == 0


def test_a_shard_directory_missing_from_its_node_is_an_error_not_an_empty_shard(ray_cluster, tmp_path):
    ids, x = data(40)
    with open_ray(tmp_path / "sh", 2) as sh:
        sh.upsert_many(ids, x)
    os.rename(tmp_path / "sh" / "shard-0001", tmp_path / "elsewhere")
    with pytest.raises(vs.CorruptStoreError, match="shard 1"):
        open_ray(tmp_path / "sh")
    assert not os.path.exists(tmp_path / "sh" / "shard-0001")
    os.rename(tmp_path / "elsewhere", tmp_path / "sh" / "shard-0001")
    with open_ray(tmp_path / "sh") as sh:  # shard 0 was not left locked
        assert len(sh) == 40


# --- failure: a shard's actor killed mid-run ------------------------------------------------------------------

def ids_on(shard: int, n_shards: int, count: int, prefix: str) -> list[str]:
    out, i = [], 0
    while len(out) < count:
        if shard_of(f"{prefix}{i}", n_shards) == shard:
            out.append(f"{prefix}{i}")
        i += 1
    return out


def test_a_killed_shard_is_a_typed_error_then_reopens_with_every_acknowledged_write(ray_cluster, tmp_path):
    ray = ray_cluster
    rng = np.random.default_rng(7)
    acked: dict[str, np.ndarray] = {}
    with open_ray(tmp_path / "sh", 2) as sh:  # durability="fsync": acknowledged means in the log
        for i in ids_on(0, 2, 20, "a") + ids_on(1, 2, 20, "b"):
            v = rng.normal(size=8).astype(np.float32)
            sh.upsert(i, v, {"id": i})
            acked[i] = v
        kill_shard(ray, sh, 0)
        v = rng.normal(size=8).astype(np.float32)
        unlucky, late = ids_on(0, 2, 22, "a")[-2:]
        with pytest.raises(vs.ShardUnavailableError) as info:
            sh.upsert(unlucky, v)  # the call that finds the actor dead
        assert info.value.shards == (0,) and info.value.http_status == 503
        assert isinstance(info.value, vs.VecStoreError)
        sh.upsert(late, v)  # the next call to shard 0 starts a new actor, which replays the log
        acked[late] = v
        assert sh.shards[0].restarts == 1 and sh.shards[1].restarts == 0
        for i, vec in acked.items():
            rec = sh.get(i)
            assert rec.vector.tobytes() == vec.tobytes() and (rec.metadata == {"id": i} or i == late)
    with vs.ShardedStore.open(tmp_path / "sh") as again:  # and on disk, read by plain stores
        assert set(again) >= set(acked)


def test_writes_in_flight_when_the_actor_dies_are_all_or_nothing(ray_cluster, tmp_path):
    ray = ray_cluster
    dim = 8
    with open_ray(tmp_path / "sh", 2, dim=dim, durability="batch") as sh:
        names = ids_on(0, 2, 4000, "w")
        acked, failed = [], []
        started, killed = threading.Event(), threading.Event()

        def writer():
            after_kill = 0
            for j in range(0, len(names), 4):
                group = names[j:j + 4]
                try:
                    sh.upsert_many(group, np.full((len(group), dim), j + 1, dtype=np.float32))
                    acked.extend(group)
                except vs.ShardUnavailableError:
                    failed.extend(group)
                started.set()
                if killed.is_set():
                    after_kill += 1
                    if after_kill >= 3 and failed:
                        return

        t = threading.Thread(target=writer)
        t.start()
        started.wait()
        kill_shard(ray, sh, 0)
        killed.set()
        t.join()
        assert acked and failed  # a call after the death fails; the ones after it restart the shard
        present = set(sh.shards[0].ids())
        assert set(acked) <= present  # nothing acknowledged was lost
        for j in range(0, len(failed), 4):  # a failed bulk write is in the log whole, or not at all
            group = failed[j:j + 4]
            assert len({g in present for g in group}) == 1
            if group[0] in present:
                want = names.index(group[0]) + 1
                assert (sh.get(group[0]).vector == want).all()


def test_queries_report_a_dead_shard_or_answer_without_it_when_asked(ray_cluster, tmp_path):
    ray = ray_cluster
    ids, x = data(300, seed=8)
    with open_ray(tmp_path / "sh", 3, durability="none") as sh:
        sh.upsert_many(ids, x)
        sh.snapshot()
        q = x[:5]
        full = sh.query_batch(q, k=10)
        ranked = sh.query(q[0], k=300)
        kill_shard(ray, sh, 2)
        part = sh.query(q[0], k=10, allow_partial=True)  # finds shard 2 gone: left out, and named
        assert part.missing_shards == (2,)
        assert [n.id for n in part] == [n.id for n in ranked if shard_of(n.id, 3) != 2][:10]
        assert _pairs(sh.query(q[0], k=10)) == _pairs(ranked[:10])  # reopened from its directory: complete
        kill_shard(ray, sh, 1)
        with pytest.raises(vs.ShardUnavailableError) as info:
            sh.query_batch(q, k=10)
        assert info.value.shards == (1,)
        again = sh.query_batch(q, k=10)  # shard 1 reopened from its directory
        assert again.missing_shards == () and (again.ids == full.ids).all()
        kill_shard(ray, sh, 0)
        part = sh.query_batch(q, k=10, allow_partial=True)
        assert part.missing_shards == (0,)
        assert not any(shard_of(i, 3) == 0 for row in part.ids for i in row if i is not None)
        assert part.to_dict()["missing_shards"] == [0]


def test_a_failed_restart_waits_before_trying_again(ray_cluster, tmp_path):
    ray = ray_cluster
    ids, x = data(60)
    with open_ray(tmp_path / "sh", 2) as sh:
        sh.upsert_many(ids, x)
        kill_shard(ray, sh, 1)
        os.rename(tmp_path / "sh" / "shard-0001", tmp_path / "away")  # the node lost the shard's disk
        with pytest.raises(vs.ShardUnavailableError):
            len(sh)  # finds the actor dead
        with pytest.raises(vs.ShardUnavailableError, match="restarting it failed.*does not exist"):
            len(sh)  # the restart cannot open the directory
        with pytest.raises(vs.ShardUnavailableError, match="next restart is in"):
            len(sh)  # fails fast until the retry time
        os.rename(tmp_path / "away", tmp_path / "sh" / "shard-0001")
        sh.shards[1]._retry_at = 0.0  # as if the retry time had passed
        assert len(sh) == 60


# --- the benchmark still runs ---------------------------------------------------------------------------------

def test_the_sharding_benchmark_runs(ray_cluster, tmp_path, capsys):
    from benchmarks import sharding

    assert sharding.main(["--quick", "--shards", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| ray, 2 shards |" in out and "| threads, 2 shards |" in out and "Model for N machines" in out


def test_a_shard_that_does_not_answer_in_time_is_unavailable_but_not_restarted(ray_cluster, tmp_path):
    import signal

    ids, x = data(40)
    ex = RayExecutor(call_timeout_s=1.0)
    with vs.ShardedStore.open(tmp_path / "sh", 2, executor=ex, dim=8, index="flat", durability="none") as sh:
        sh.upsert_many(ids, x)
        shard = sh.shards[1]
        actor, pid = shard.actor, shard.info["pid"]
        os.kill(pid, signal.SIGSTOP)  # alive, holding its lock, answering nothing
        try:
            with pytest.raises(vs.ShardUnavailableError, match="no answer within"):
                sh.query(x[0], k=5)
            part = sh.query(x[0], k=5, allow_partial=True)
            assert part.missing_shards == (1,) and all(shard_of(n.id, 2) == 0 for n in part)
            with pytest.raises(vs.ShardUnavailableError, match="no answer within"):
                len(sh)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert shard.actor is actor and shard.restarts == 0  # slow is not dead: nothing was restarted
