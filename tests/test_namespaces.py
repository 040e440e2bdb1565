"""Namespaces, quotas, backups, restore, export and import (SPEC section 7)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import threading
from datetime import timezone

import numpy as np
import pytest

import vecstore_ref as vs
from vecstore_ref._fs import dir_digest

HERE = os.path.dirname(os.path.abspath(__file__))


def vecs(n, dim=8, seed=0):
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def visible_state(store):
    return {i: (store.get(i).vector.tobytes(), store.get(i).metadata) for i in store}


@pytest.fixture
def mgr(tmp_path):
    m = vs.NamespaceManager(tmp_path / "root")
    yield m
    m.close()


def test_create_get_list_delete(mgr):
    s = mgr.create_namespace("docs", dim=8, index="flat")
    assert mgr.get_namespace("docs") is s  # one shared handle
    mgr.create_namespace("img", dim=4)
    assert mgr.list_namespaces() == ["docs", "img"]
    s.upsert("a", vecs(1)[0])
    with pytest.raises(vs.AlreadyExistsError):
        mgr.create_namespace("docs", dim=8)
    mgr.delete_namespace("docs")
    assert mgr.list_namespaces() == ["img"]
    with pytest.raises(vs.NotFoundError):
        mgr.get_namespace("docs")
    with pytest.raises(vs.StoreClosedError):
        s.upsert("b", vecs(1)[0])
    with pytest.raises(vs.NotFoundError):
        mgr.delete_namespace("docs")


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "-x", "x" * 65, "a b", "é", 5, None, "/abs"])
def test_bad_names_raise_and_write_nothing(mgr, name):
    before = dir_digest(mgr.root)
    with pytest.raises(vs.InvalidNameError):
        mgr.create_namespace(name, dim=4)
    with pytest.raises(vs.InvalidNameError):
        mgr.get_namespace(name)
    assert dir_digest(mgr.root) == before


def test_symlinked_namespace_is_refused(mgr, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, os.path.join(mgr.root, "evil"))
    with pytest.raises(vs.InvalidNameError):
        mgr.get_namespace("evil")
    assert "evil" not in mgr.list_namespaces()


def test_namespaces_survive_a_new_manager(tmp_path):
    with vs.NamespaceManager(tmp_path / "r") as m:
        m.create_namespace("a", dim=8, quotas=vs.Quotas(max_vectors=3)).upsert_many(["x", "y"], vecs(2))
    with vs.NamespaceManager(tmp_path / "r") as m:
        s = m.get_namespace("a")
        assert sorted(s) == ["x", "y"]
        s.upsert("z", vecs(1, seed=2)[0])
        with pytest.raises(vs.QuotaExceededError):  # the quota was persisted
            s.upsert("w", vecs(1, seed=3)[0])


def test_vector_quota_refuses_the_write_and_changes_nothing(mgr):
    s = mgr.create_namespace("q", dim=8, quotas=vs.Quotas(max_vectors=5))
    s.upsert_many([f"d{i}" for i in range(5)], vecs(5))
    before = dir_digest(os.path.join(mgr.root, "q"))
    with pytest.raises(vs.QuotaExceededError):
        s.upsert("d9", vecs(1, seed=9)[0])
    with pytest.raises(vs.QuotaExceededError):
        s.batch_execute([vs.Upsert("n1", vecs(1)[0]), vs.Upsert("n2", vecs(1)[0])])
    assert dir_digest(os.path.join(mgr.root, "q")) == before and len(s) == 5
    s.upsert("d0", vecs(1, seed=5)[0])  # replacing a record holds no more
    res = s.batch_execute([vs.Delete("d1"), vs.Upsert("n1", vecs(1)[0])])  # one out, one in
    assert res.succeeded == 2 and len(s) == 5


def test_bytes_quota(mgr):
    s = mgr.create_namespace("b", dim=64, quotas=vs.Quotas(max_bytes=20_000))
    s.upsert_many([f"d{i}" for i in range(20)], vecs(20, 64))
    with pytest.raises(vs.QuotaExceededError):
        s.upsert_many([f"e{i}" for i in range(100)], vecs(100, 64))
    assert len(s) == 20


def test_a_namespace_at_its_bytes_quota_can_still_delete_and_then_write_again(mgr):
    s = mgr.create_namespace("full", dim=64, quotas=vs.Quotas(max_bytes=20_000))
    n = 0
    with pytest.raises(vs.QuotaExceededError):
        for n, v in enumerate(vecs(200, 64)):  # fill it to the limit
            s.upsert(f"d{n}", v)
    assert 0 < len(s) == n
    for i in range(n):
        s.delete(f"d{i}")  # a hard delete always passes, though its log record takes the store past the limit
    assert sum(s._file_bytes()) > 20_000 and len(s) == 0
    with pytest.raises(vs.QuotaExceededError):  # the space comes back with a compaction, not before
        s.upsert("x", vecs(1, 64)[0])
    s.compact()
    s.upsert_many([f"e{i}" for i in range(n // 2)], vecs(n // 2, 64))
    assert len(s) == n // 2


def test_unknown_open_options_are_typed_errors_and_write_nothing(mgr):
    before = dir_digest(mgr.root)
    for options in ({"bogus": 1}, {"read_only": True}, {"fs": None}):
        with pytest.raises(TypeError) as info:
            mgr.create_namespace("x", dim=4, **options)
        assert isinstance(info.value, vs.InvalidInputError)
    assert dir_digest(mgr.root) == before and mgr.list_namespaces() == []


def test_bad_quotas_are_typed_errors(mgr):
    with pytest.raises(vs.InvalidArgumentError):
        mgr.create_namespace("x", dim=4, quotas=vs.Quotas(max_vectors=-1))
    with pytest.raises(TypeError):
        mgr.create_namespace("x", dim=4, quotas=vs.Quotas(max_bytes="10"))
    assert mgr.list_namespaces() == []


@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_backup_mutate_restore_gives_the_state_at_backup_time(mgr, index):
    s = mgr.create_namespace("n", dim=8, index=index)
    s.upsert_many([f"d{i}" for i in range(50)], vecs(50), [{"i": i} for i in range(50)])
    s.soft_delete("d3")
    info = mgr.backup_namespace("n", "b1")
    assert info.count == 50 and info.dim == 8 and info.created_at.tzinfo == timezone.utc
    expected = visible_state(s)
    s.delete("d1")
    s.upsert("new", vecs(1, seed=4)[0])
    s.update_metadata("d2", {"changed": True})
    s.compact()
    mgr.restore_namespace("n", "b1")
    with pytest.raises(vs.StoreClosedError):
        s.upsert("x", vecs(1)[0])  # handles taken before a restore are closed
    r = mgr.get_namespace("n")
    assert visible_state(r) == expected
    assert r.get("d3", include_deleted=True).deleted
    assert r.query(vecs(50)[7], k=1)[0].id == "d7"
    r.upsert("after", vecs(1, seed=8)[0])  # and it is writable
    assert len(os.listdir(os.path.join(mgr.root, "n"))) == 3  # NAMESPACE.json, one generation, backups


def test_list_backups_newest_first_and_delete(mgr):
    s = mgr.create_namespace("n", dim=8)
    for i, name in enumerate(["first", "second", "third"]):
        s.upsert(f"d{i}", vecs(1, seed=i)[0])
        mgr.backup_namespace("n", name)
    listed = mgr.list_namespace_backups("n")
    assert [b[0] for b in listed] == ["third", "second", "first"]
    assert [b[2] for b in listed] == [3, 2, 1]
    with pytest.raises(vs.AlreadyExistsError):
        mgr.backup_namespace("n", "first")
    mgr.delete_namespace_backup("n", "second")
    assert [b[0] for b in mgr.list_namespace_backups("n")] == ["third", "first"]
    with pytest.raises(vs.NotFoundError):
        mgr.restore_namespace("n", "second")
    with pytest.raises(vs.InvalidNameError):
        mgr.backup_namespace("n", "../escape")


def test_a_corrupt_backup_is_refused_and_the_namespace_is_unchanged(mgr):
    s = mgr.create_namespace("n", dim=8)
    s.upsert_many(["a", "b"], vecs(2))
    mgr.backup_namespace("n", "b1")
    s.upsert("c", vecs(1, seed=3)[0])
    bdir = os.path.join(mgr.root, "n", "backups", "b1")
    log = sorted(f for f in os.listdir(bdir) if f.startswith("log-"))[0]
    with open(os.path.join(bdir, log), "r+b") as f:
        f.seek(-3, os.SEEK_END)
        f.write(b"\xff\xff\xff")
    with pytest.raises(vs.BackupCorruptError):
        mgr.restore_namespace("n", "b1")
    assert sorted(mgr.get_namespace("n")) == ["a", "b", "c"]
    assert not [d for d in os.listdir(os.path.join(mgr.root, "n")) if d.startswith(".staging")]


def test_backup_is_online_and_holds_every_acknowledged_write(mgr):
    s = mgr.create_namespace("n", dim=8, durability="none")
    acked: list[str] = []
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            s.upsert(f"w{i}", vecs(1, seed=i)[0])
            acked.append(f"w{i}")
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    while len(acked) < 50:
        pass
    before = list(acked)
    mgr.backup_namespace("n", "live")
    stop.set()
    t.join()
    mgr.restore_namespace("n", "live")
    restored = set(mgr.get_namespace("n"))
    assert set(before) <= restored <= set(acked)


def test_export_import_round_trip(mgr, tmp_path):
    s = mgr.create_namespace("n", dim=8)
    s.upsert_many(["a", "b", "c"], vecs(3), [{"k": 1}, None, {"k": 3}])
    mgr.backup_namespace("n", "b1")
    expected = visible_state(s)
    archive = tmp_path / "b1.tar"
    mgr.export_backup("n", "b1", archive)
    mgr.create_namespace("m", dim=8)
    info = mgr.import_backup("m", archive, "imported")
    assert info.count == 3
    mgr.restore_namespace("m", "imported")
    assert visible_state(mgr.get_namespace("m")) == expected
    buf = io.BytesIO()
    mgr.export_backup("n", "b1", buf)
    buf.seek(0)
    mgr.import_backup("m", buf, "from-memory")
    with pytest.raises(vs.AlreadyExistsError):
        mgr.import_backup("m", archive, "imported")


def _tar_with(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind, data in members:
            ti = tarfile.TarInfo(name)
            if kind == "file":
                ti.size = len(data)
                tar.addfile(ti, io.BytesIO(data))
            elif kind == "symlink":
                ti.type = tarfile.SYMTYPE
                ti.linkname = data
                tar.addfile(ti)
            elif kind == "dir":
                ti.type = tarfile.DIRTYPE
                tar.addfile(ti)
    buf.seek(0)
    return buf


@pytest.mark.parametrize("members", [
    [("../evil", "file", b"x")],
    [("/etc/evil", "file", b"x")],
    [("sub/file", "file", b"x")],
    [("link", "symlink", "/etc/passwd")],
    [("adir", "dir", None)],
])
def test_unsafe_archives_are_refused_and_write_nothing(mgr, members):
    mgr.create_namespace("n", dim=4)
    before = dir_digest(mgr.root)
    with pytest.raises(vs.UnsafeArchiveError):
        mgr.import_backup("n", _tar_with(members), "bad")
    assert dir_digest(mgr.root) == before


def test_archives_that_are_not_backups_are_refused(mgr):
    mgr.create_namespace("n", dim=4)
    before = dir_digest(mgr.root)
    with pytest.raises(vs.BackupCorruptError):
        mgr.import_backup("n", _tar_with([("MANIFEST", "file", b"junk")]), "bad")
    with pytest.raises(vs.BackupCorruptError):
        mgr.import_backup("n", io.BytesIO(b"not a tar at all" * 100), "bad")
    with pytest.raises(vs.UnsafeArchiveError):
        mgr.import_backup("n", _tar_with([("BACKUP.json", "file", b"x" * 100)]), "bad", max_bytes=10)
    assert dir_digest(mgr.root) == before


RESTORE_CHILD = r"""
import sys, numpy as np, vecstore_ref as vs
m = vs.NamespaceManager(sys.argv[1])
m.restore_namespace("n", "b1")
"""


@pytest.mark.parametrize("point", ["restore.staged", "restore.generation_renamed", "restore.switched"])
def test_kill_during_restore_leaves_the_whole_old_or_the_whole_new_namespace(tmp_path, point):
    root = tmp_path / "r"
    with vs.NamespaceManager(root) as m:
        s = m.create_namespace("n", dim=8, index="flat")
        s.upsert_many(["a", "b"], vecs(2))
        m.backup_namespace("n", "b1")
        at_backup = visible_state(s)
        s.upsert_many(["c", "d"], vecs(2, seed=1))
        before_restore = visible_state(s)
    env = dict(os.environ, VECSTORE_CRASH_AT=point)
    out = subprocess.run([sys.executable, "-c", RESTORE_CHILD, str(root)], env=env, cwd=HERE, capture_output=True)
    assert out.returncode == -9, out.stderr[-2000:]
    with vs.NamespaceManager(root) as m:
        got = visible_state(m.get_namespace("n"))
        assert got == (at_backup if point == "restore.switched" else before_restore)  # the commit is the switch
        gens = [d for d in os.listdir(root / "n") if d.startswith("store-") or d.startswith(".staging")]
        assert len(gens) == 1  # leftovers removed


@pytest.mark.parametrize("point", ["restore.staged", "restore.generation_renamed"])
def test_a_restore_killed_before_its_switch_can_simply_be_run_again(tmp_path, point):
    root = tmp_path / "r"
    with vs.NamespaceManager(root) as m:
        s = m.create_namespace("n", dim=8, index="flat")
        s.upsert_many(["a", "b"], vecs(2))
        m.backup_namespace("n", "b1")
        at_backup = visible_state(s)
        s.upsert_many(["c"], vecs(1, seed=1))
    env = dict(os.environ, VECSTORE_CRASH_AT=point)
    out = subprocess.run([sys.executable, "-c", RESTORE_CHILD, str(root)], env=env, cwd=HERE, capture_output=True)
    assert out.returncode == -9, out.stderr[-2000:]
    again = subprocess.run([sys.executable, "-c", RESTORE_CHILD, str(root)], cwd=HERE, capture_output=True)
    assert again.returncode == 0, again.stderr[-2000:]  # a new process retries first thing, as an operator would
    with vs.NamespaceManager(root) as m:
        assert visible_state(m.get_namespace("n")) == at_backup


BACKUP_CHILD = r"""
import sys, vecstore_ref as vs
m = vs.NamespaceManager(sys.argv[1])
m.backup_namespace("n", "b1")
"""


def test_kill_during_backup_leaves_no_backup_and_the_store_untouched(tmp_path):
    root = tmp_path / "r"
    with vs.NamespaceManager(root) as m:
        s = m.create_namespace("n", dim=8, index="flat")
        s.upsert_many(["a", "b"], vecs(2))
        state = visible_state(s)
    env = dict(os.environ, VECSTORE_CRASH_AT="backup.files_written")
    out = subprocess.run([sys.executable, "-c", BACKUP_CHILD, str(root)], env=env, cwd=HERE, capture_output=True)
    assert out.returncode == -9, out.stderr[-2000:]
    with vs.NamespaceManager(root) as m:
        assert m.list_namespace_backups("n") == []
        assert visible_state(m.get_namespace("n")) == state
        assert os.listdir(root / "n" / "backups") == []  # the interrupted copy was removed
        info = m.backup_namespace("n", "b1")  # the name is free: the interrupted one never got it
        assert info.count == 2


def _rewrite_manifest(path, **changes):
    import json as _json

    with open(path) as f:
        info = _json.load(f)
    info.update(changes)
    with open(path, "w") as f:
        _json.dump(info, f)


def test_a_backup_from_the_future_or_with_a_lying_manifest_is_refused(mgr):
    s = mgr.create_namespace("n", dim=8)
    s.upsert_many(["a", "b"], vecs(2))
    mgr.backup_namespace("n", "future")
    mgr.backup_namespace("n", "liar")
    bdir = os.path.join(mgr.root, "n", "backups")
    _rewrite_manifest(os.path.join(bdir, "future", "BACKUP.json"), format=99)
    _rewrite_manifest(os.path.join(bdir, "liar", "BACKUP.json"), count=5)
    s.upsert("c", vecs(1, seed=5)[0])
    with pytest.raises(vs.UnsupportedFormatError):
        mgr.restore_namespace("n", "future")
    with pytest.raises(vs.BackupCorruptError):
        mgr.restore_namespace("n", "liar")
    assert sorted(mgr.get_namespace("n")) == ["a", "b", "c"]


HOLDER = """
import sys, time, vecstore_ref as vs
m = vs.NamespaceManager(sys.argv[1])
s = m.get_namespace("docs")
s.upsert("held", [1.0, 2.0])
print("ready", flush=True)
sys.stdin.readline()
s.upsert("after", [3.0, 4.0])
print("acked", flush=True)
m.close()
"""


def test_restore_and_delete_refuse_a_namespace_another_process_writes_to(tmp_path):
    """The writer's acknowledged writes would go to a directory that is no longer the namespace's (restore) or
    to no namespace at all (delete)."""
    root = tmp_path / "root"
    with vs.NamespaceManager(root) as m:
        m.create_namespace("docs", dim=2, index="flat").upsert("before", [1.0, 0.0])
        m.backup_namespace("docs", "b1")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(root)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with vs.NamespaceManager(root) as m:
            before = dir_digest(str(root))
            with pytest.raises(vs.StoreLockedError):
                m.restore_namespace("docs", "b1")
            with pytest.raises(vs.StoreLockedError):
                m.delete_namespace("docs")
            assert dir_digest(str(root)) == before
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "acked"
        assert holder.wait(timeout=60) == 0
    finally:
        holder.kill()
        holder.wait()
    with vs.NamespaceManager(root) as m:
        assert sorted(m.get_namespace("docs")) == ["after", "before", "held"]
        m.restore_namespace("docs", "b1")  # nobody writes now
        assert sorted(m.get_namespace("docs")) == ["before"]


def test_a_namespace_store_a_backup_or_a_shard_is_never_opened_for_writing_behind_its_owner(tmp_path):
    """A writable `VecStore.open` of a directory its owner manages would take writes the owner never sees: a
    stray generation a restore deletes, quotas skipped, records the shard routing never finds, a backup that
    stops being one. It is refused, nothing changes, and reading it read-only still works."""
    from vecstore_ref._fs import dir_digest

    mgr = vs.NamespaceManager(tmp_path / "root")
    s = mgr.create_namespace("docs", dim=4, index="flat", quotas=vs.Quotas(max_vectors=2))
    s.upsert_many(["a", "b"], np.eye(4, dtype=np.float32)[:2])
    mgr.backup_namespace("docs", "nightly")
    mgr.close()
    with vs.ShardedStore.open(tmp_path / "sh", n_shards=2, dim=4, index="flat") as sh:
        sh.upsert("x", [1, 0, 0, 0])
    ns_dir = tmp_path / "root" / "docs"
    owned = [(ns_dir / "store-0001", "namespace"), (ns_dir / "backups" / "nightly", "backup"),
             (tmp_path / "sh" / "shard-0000", "shard"), (ns_dir / "store-0002", "namespace")]
    before = dir_digest(tmp_path)
    for path, what in owned:
        with pytest.raises(vs.InvalidArgumentError, match=what):
            vs.VecStore.open(path, dim=4)
    assert dir_digest(tmp_path) == before
    with vs.VecStore.open(ns_dir / "store-0001", read_only=True) as ro:
        assert len(ro) == 2
    with vs.VecStore.open(ns_dir / "backups" / "nightly", read_only=True) as ro:
        assert len(ro) == 2
    mgr = vs.NamespaceManager(tmp_path / "root")  # the owners still open them
    with pytest.raises(vs.QuotaExceededError):
        mgr.get_namespace("docs").upsert("c", [0, 0, 1, 0])
    mgr.restore_namespace("docs", "nightly")
    assert sorted(mgr.get_namespace("docs").ids()) == ["a", "b"]
    mgr.close()
    with vs.ShardedStore.open(tmp_path / "sh") as sh:
        assert sh.get("x").id == "x"


def test_creating_a_namespace_over_a_plain_store_says_what_is_there(tmp_path):
    vs.VecStore.open(tmp_path / "data" / "docs", dim=4).close()
    with vs.NamespaceManager(tmp_path / "data") as m:
        assert m.list_namespaces() == []
        with pytest.raises(vs.AlreadyExistsError, match="is not a namespace .it holds a store."):
            m.create_namespace("docs")
        m.create_namespace("other")
        with pytest.raises(vs.AlreadyExistsError, match="namespace 'other' exists"):
            m.create_namespace("other")


def test_a_manager_cleans_only_what_ended_processes_left_not_another_processs_work_in_flight(tmp_path):
    root = tmp_path / "r"
    with vs.NamespaceManager(root) as m:
        m.create_namespace("docs", dim=2, index="flat").upsert("a", [1.0, 0.0])
        m.backup_namespace("docs", "b1")
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        working = [root / f".creating-x-p{alive.pid}-0123abcd", root / "docs" / f".staging-docs-p{alive.pid}-0123abcd",
                   root / "docs" / "backups" / f".tmp-b2-p{alive.pid}-0123abcd"]
        left = [root / ".creating-y-0123abcd", root / "docs" / ".staging-0123abcd",  # (no pid: an older version's)
                root / "docs" / "backups" / ".tmp-b3-0123abcd"]
        for d in working + left:
            d.mkdir()
        with vs.NamespaceManager(root) as m:
            assert len(m.get_namespace("docs")) == 1
        assert all(d.exists() for d in working) and not any(d.exists() for d in left)
    finally:
        alive.kill()
        alive.wait()
    with vs.NamespaceManager(root) as m:  # the process ended: what it left is cleaned now
        m.get_namespace("docs")
    assert not any(d.exists() for d in working)
