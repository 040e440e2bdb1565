"""Symbolic links planted below a root are never followed (docs/concepts/reliability.md, "Symbolic links").

Each test plants a link at one component below a namespace manager's root or inside a store directory, pointing
into a directory ``outside`` that holds decoys shaped like what the call would look for (a store, a backup, the
files of one). The call must refuse with a typed error (``UnsafePathError``, or ``InvalidNameError`` for a
namespace that is itself a link) or succeed without using the link, and ``outside`` must be byte-for-byte
unchanged: nothing written, deleted or replaced there.
"""

from __future__ import annotations

import io
import os
import shutil

import numpy as np
import pytest

import vecstore_ref as vs
from vecstore_ref._fs import OSFileSystem, add_root, dir_digest, remove_root


def vecs(n, dim=4, seed=0):
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


@pytest.fixture
def world(tmp_path):
    """A manager root with namespace "ns" (3 records, backup "b1"), and ``outside`` holding copies of the
    namespace's store, backups directory and backup, and a precious file."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_bytes(b"do not touch")
    m = vs.NamespaceManager(root)
    s = m.create_namespace("ns", dim=4, index="flat")
    s.upsert_many(["a", "b", "c"], vecs(3))
    m.backup_namespace("ns", "b1")
    m.close()
    ns = root / "ns"
    shutil.copytree(ns / "store-0001", outside / "store")
    shutil.copytree(ns / "backups", outside / "backups")
    shutil.copytree(ns / "backups" / "b1", outside / "b1")
    return root, outside


def replace_with_link(path, target):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)
    os.symlink(target, path)


def refused(outside, call, exc=vs.UnsafePathError):
    before = dir_digest(str(outside))
    with pytest.raises(exc) as info:
        call()
    assert isinstance(info.value, vs.VecStoreError)
    assert dir_digest(str(outside)) == before
    return info.value


def archive_of(root) -> bytes:
    buf = io.BytesIO()
    with vs.NamespaceManager(root) as m:
        m.export_backup("ns", "b1", buf)
    return buf.getvalue()


# --- <ns>/backups is a link --------------------------------------------------------------------------------------

def test_backup_into_a_linked_backups_dir_is_refused(world):
    root, outside = world
    replace_with_link(root / "ns" / "backups", outside / "backups")
    with vs.NamespaceManager(root) as m:
        refused(outside, lambda: m.backup_namespace("ns", "b2"))
        refused(outside, lambda: m.list_namespace_backups("ns"))
        assert sorted(m.get_namespace("ns")) == ["a", "b", "c"]  # the store itself is fine
    assert sorted(os.listdir(outside / "backups")) == ["b1"]


def test_import_into_a_linked_backups_dir_is_refused(world):
    root, outside = world
    archive = archive_of(root)
    replace_with_link(root / "ns" / "backups", outside / "backups")
    with vs.NamespaceManager(root) as m:
        refused(outside, lambda: m.import_backup("ns", io.BytesIO(archive), "b2"))


def test_delete_backup_through_a_linked_backups_dir_deletes_nothing_outside(world):
    root, outside = world
    replace_with_link(root / "ns" / "backups", outside / "backups")
    with vs.NamespaceManager(root) as m:
        refused(outside, lambda: m.delete_namespace_backup("ns", "b1"))
        refused(outside, lambda: m.restore_namespace("ns", "b1"))
        refused(outside, lambda: m.export_backup("ns", "b1", io.BytesIO()))


# --- a backup directory, or a file in one, is a link -------------------------------------------------------------

def test_a_linked_backup_is_neither_deleted_nor_restored_nor_exported(world):
    root, outside = world
    replace_with_link(root / "ns" / "backups" / "b1", outside / "b1")
    with vs.NamespaceManager(root) as m:
        refused(outside, lambda: m.delete_namespace_backup("ns", "b1"))
        refused(outside, lambda: m.restore_namespace("ns", "b1"))
        refused(outside, lambda: m.export_backup("ns", "b1", io.BytesIO()))
        refused(outside, lambda: m.backup_namespace("ns", "b1"), vs.AlreadyExistsError)
        assert m.list_namespace_backups("ns") == []  # a link is no backup
        assert sorted(m.get_namespace("ns")) == ["a", "b", "c"]


@pytest.mark.parametrize("which", ["BACKUP.json", "MANIFEST", "log"])
def test_a_linked_file_in_a_backup_is_refused(world, which):
    root, outside = world
    b1 = root / "ns" / "backups" / "b1"
    name = next(n for n in os.listdir(b1) if n.startswith("log-")) if which == "log" else which
    replace_with_link(b1 / name, outside / "b1" / name)
    with vs.NamespaceManager(root) as m:
        s = m.get_namespace("ns")
        s.upsert("d", vecs(1, seed=9)[0])
        refused(outside, lambda: m.restore_namespace("ns", "b1"))
        refused(outside, lambda: m.export_backup("ns", "b1", io.BytesIO()))
        assert sorted(m.get_namespace("ns")) == ["a", "b", "c", "d"]  # the namespace is untouched


# --- the store directory of a namespace, or a file in it, is a link ----------------------------------------------

def test_a_linked_store_directory_is_not_opened_so_nothing_is_written_outside(world):
    root, outside = world
    replace_with_link(root / "ns" / "store-0001", outside / "store")
    with vs.NamespaceManager(root) as m:
        refused(outside, lambda: m.get_namespace("ns"))
        refused(outside, lambda: m.backup_namespace("ns", "b2"))
    # the same store opened directly by the path below the root: the link is refused as well
    add_root(str(root))
    try:
        refused(outside, lambda: vs.VecStore.open(root / "ns" / "store-0001"))
    finally:
        remove_root(str(root))


def test_a_store_directory_swapped_for_a_link_while_open_gets_no_new_files(world):
    root, outside = world
    with vs.NamespaceManager(root) as m:
        s = m.get_namespace("ns")
        real = root / "ns" / "moved-away"
        os.rename(root / "ns" / "store-0001", real)
        os.symlink(outside / "store", root / "ns" / "store-0001")
        refused(outside, s.snapshot)  # a checkpoint creates files by name: refused, not redirected
        refused(outside, s.compact)


@pytest.mark.parametrize("which", ["MANIFEST", "log", "LOCK", "MANIFEST.tmp", "snapshot"])
def test_a_linked_file_in_a_namespace_store_is_refused(world, which):
    root, outside = world
    store = root / "ns" / "store-0001"
    if which == "snapshot":
        with vs.NamespaceManager(root) as m:
            m.get_namespace("ns").snapshot()
        shutil.rmtree(outside / "store")
        shutil.copytree(store, outside / "store")
    name = {"log": next(n for n in sorted(os.listdir(store)) if n.startswith("log-")),
            "snapshot": next((n for n in os.listdir(store) if n.startswith("snap-")), None)}.get(which, which)
    target = outside / "store" / name
    if not target.exists():
        target.write_bytes(b"decoy")
    replace_with_link(store / name, target)
    with vs.NamespaceManager(root) as m:
        refused(outside, lambda: m.get_namespace("ns"))


# --- the namespace itself, delete, and leftovers -----------------------------------------------------------------

def test_delete_namespace_removes_planted_links_without_following_them(world):
    root, outside = world
    os.symlink(outside, root / "ns" / "backups" / "b1" / "planted")
    os.symlink(outside / "precious", root / "ns" / "store-0001" / "notes")
    with vs.NamespaceManager(root) as m:
        before = dir_digest(str(outside))
        m.delete_namespace("ns")
        assert dir_digest(str(outside)) == before
        assert m.list_namespaces() == []
    assert sorted(os.listdir(root)) == []


def test_a_linked_namespace_is_refused_by_every_call(world):
    root, outside = world
    os.symlink(outside, root / "evil")
    with vs.NamespaceManager(root) as m:
        for call in (lambda: m.get_namespace("evil"), lambda: m.delete_namespace("evil"),
                     lambda: m.backup_namespace("evil", "x"), lambda: m.create_namespace("evil", dim=4),
                     lambda: m.restore_namespace("evil", "b1")):
            refused(outside, call, vs.InvalidNameError)
        assert m.list_namespaces() == ["ns"]


def test_linked_leftovers_are_not_cleaned_through(world):
    root, outside = world
    os.symlink(outside, root / ".deleting-ns-12345678")
    os.symlink(outside, root / ".creating-x-12345678")
    os.symlink(outside / "store", root / "ns" / "store-0002")
    os.symlink(outside / "b1", root / "ns" / ".staging-12345678")
    os.symlink(outside / "b1", root / "ns" / "backups" / ".tmp-b9-12345678")
    before = dir_digest(str(outside))
    with vs.NamespaceManager(root) as m:
        assert sorted(m.get_namespace("ns")) == ["a", "b", "c"]
        assert [b[0] for b in m.list_namespace_backups("ns")] == ["b1"]
    assert dir_digest(str(outside)) == before


def test_a_linked_namespace_file_is_refused(world):
    root, outside = world
    (outside / "NAMESPACE.json").write_bytes((root / "ns" / "NAMESPACE.json").read_bytes())
    replace_with_link(root / "ns" / "NAMESPACE.json", outside / "NAMESPACE.json")
    with vs.NamespaceManager(root) as m:
        assert m.list_namespaces() == []  # a namespace file that is a link does not make a namespace
        refused(outside, lambda: m.get_namespace("ns"), vs.NotFoundError)


# --- a store opened directly -------------------------------------------------------------------------------------

@pytest.fixture
def direct(tmp_path):
    path, outside = tmp_path / "store", tmp_path / "outside"
    with vs.VecStore.open(path, dim=4, index="flat") as s:
        s.upsert_many(["a", "b"], vecs(2))
        s.snapshot()
        s.upsert("c", vecs(1, seed=3)[0])
    shutil.copytree(path, outside)
    return path, outside


@pytest.mark.parametrize("which", ["MANIFEST", "log", "snapshot", "LOCK"])
def test_a_linked_file_inside_a_store_refuses_the_open(direct, which):
    path, outside = direct
    name = {"log": next((n for n in os.listdir(path) if n.startswith("log-")), None),
            "snapshot": next((n for n in os.listdir(path) if n.startswith("snap-")), None)}.get(which, which)
    replace_with_link(path / name, outside / name)
    refused(outside, lambda: vs.VecStore.open(path))
    if which != "LOCK":  # a read-only open takes no lock
        refused(outside, lambda: vs.VecStore.open(path, read_only=True))


@pytest.mark.parametrize("name", ["MANIFEST.tmp", "snap-0000000000000099.vss.tmp", "snap-0000000000000099.vss",
                                  "log-00000099.vsl"])
def test_a_linked_leftover_inside_a_store_is_refused_not_removed(direct, name):
    path, outside = direct
    (outside / "leftover").write_bytes(b"decoy")
    os.symlink(outside / "leftover", path / name)
    refused(outside, lambda: vs.VecStore.open(path))
    assert os.path.islink(path / name)


@pytest.mark.parametrize("which", ["next-segment", "snapshot-tmp", "manifest-tmp"])
def test_links_planted_under_the_names_a_checkpoint_creates_are_refused(direct, which):
    path, outside = direct
    with vs.VecStore.open(path) as s:
        logs = sorted(n for n in os.listdir(path) if n.startswith("log-"))
        number = int(logs[-1][4:12]) + 1
        name = {"next-segment": f"log-{number:08d}.vsl",
                "snapshot-tmp": f"snap-{s.stats().last_seq:016d}.vss.tmp",
                "manifest-tmp": "MANIFEST.tmp"}[which]
        (outside / "victim").write_bytes(b"decoy")
        os.symlink(outside / "victim", path / name)
        refused(outside, s.snapshot)
        os.unlink(path / name)
        if which == "manifest-tmp":  # a failed manifest replace makes the store refuse writes until reopened
            with pytest.raises(vs.ReadOnlyError):
                s.upsert("d", vecs(1, seed=4)[0])
        else:
            s.upsert("d", vecs(1, seed=4)[0])  # the store goes on
    with vs.VecStore.open(path) as s:
        if which == "manifest-tmp":
            s.upsert("d", vecs(1, seed=4)[0])
        assert sorted(s) == ["a", "b", "c", "d"]


def test_a_store_path_that_is_itself_a_link_is_followed(tmp_path):
    """The user named that path: the store lives in the link's target (documented)."""
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "named")
    with vs.VecStore.open(tmp_path / "named", dim=4) as s:
        s.upsert("a", vecs(1)[0])
    assert "MANIFEST" in os.listdir(real)
    with vs.VecStore.open(tmp_path / "named") as s:
        assert list(s) == ["a"]


# --- the file-system layer itself --------------------------------------------------------------------------------

def test_every_file_system_call_refuses_a_link_below_a_root(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "dir").mkdir(parents=True)
    outside.mkdir()
    (outside / "f").write_bytes(b"outside")
    (outside / "sub").mkdir()
    os.symlink(outside, root / "link")
    os.symlink(outside / "f", root / "dir" / "flink")
    fs = OSFileSystem()
    add_root(str(root))
    try:
        via_dir, via_file = str(root / "link"), str(root / "dir" / "flink")
        calls = [
            lambda: fs.open_append(os.path.join(via_dir, "f")),
            lambda: fs.open_append(os.path.join(via_dir, "new"), create=True),
            lambda: fs.open_append(via_file),
            lambda: fs.read_bytes(via_file),
            lambda: fs.read_bytes(os.path.join(via_dir, "f")),
            lambda: fs.open_read(via_file),
            lambda: fs.write_atomic(via_file, b"x"),
            lambda: fs.write_atomic(os.path.join(via_dir, "f"), b"x"),
            lambda: fs.replace(str(root / "dir"), os.path.join(via_dir, "sub")),
            lambda: fs.replace(via_file, str(root / "dir" / "moved")),
            lambda: fs.unlink(via_file),
            lambda: fs.unlink(os.path.join(via_dir, "f")),
            lambda: fs.truncate(via_file, 0),
            lambda: fs.size(via_file),
            lambda: fs.listdir(via_dir),
            lambda: fs.fsync_dir(via_dir),
            lambda: fs.makedirs(os.path.join(via_dir, "sub", "deeper")),
            lambda: fs.rmtree(via_dir),
            lambda: fs.rmtree(os.path.join(via_dir, "sub")),
            lambda: fs.exists(os.path.join(via_dir, "f")),
            lambda: fs.isfile(os.path.join(via_dir, "f")),
        ]
        for call in calls:
            refused(outside, call)
        assert fs.exists(via_file) and not fs.isfile(via_file) and not fs.isdir(via_dir)
    finally:
        remove_root(str(root))
    assert (outside / "f").read_bytes() == b"outside"


def test_a_sharded_store_follows_no_link_below_its_root(tmp_path):
    """ShardedStore registers its root like NamespaceManager: a shard directory planted as a link to a folder
    outside is refused, and nothing outside is written."""
    import numpy as np

    root, outside = tmp_path / "sharded", tmp_path / "outside"
    outside.mkdir()
    with vs.ShardedStore.open(root, 2, dim=4, index="flat") as s:
        s.upsert("a", np.ones(4, dtype=np.float32))
    shard = next(p for p in sorted(root.iterdir()) if p.is_dir())
    shutil.move(str(shard), str(outside / shard.name))
    os.symlink(outside / shard.name, shard)
    before = sorted(str(p) for p in outside.rglob("*"))
    with pytest.raises(vs.VecStoreError):
        with vs.ShardedStore.open(root) as s:
            s.upsert_many([f"r{i}" for i in range(20)], np.ones((20, 4), dtype=np.float32))
    assert sorted(str(p) for p in outside.rglob("*")) == before


# --- archives and exports the caller names -----------------------------------------------------------------------

def test_an_archive_path_inside_the_root_is_refused_and_the_store_keeps_its_records(world):
    """An archive written over a store's own log segment (or a backup's manifest) destroyed them."""
    root, outside = world
    with vs.NamespaceManager(root) as m:
        store = m.get_namespace("ns")
        log = next(os.path.join(store.path, n) for n in sorted(os.listdir(store.path)) if n.endswith(".vsl"))
        before = dir_digest(str(root))
        for target in (log, os.path.join(store.path, "new.tar"), str(root / "ns" / "backups" / "b1" / "BACKUP.json"),
                       str(root)):
            with pytest.raises(vs.InvalidArgumentError):
                m.export_backup("ns", "b1", target)
        os.symlink(outside / "precious", root / "ns" / "out.tar")
        refused(outside, lambda: m.export_backup("ns", "b1", str(root / "ns" / "out.tar")), vs.InvalidArgumentError)
        os.unlink(root / "ns" / "out.tar")
        assert dir_digest(str(root)) == before
    with vs.NamespaceManager(root) as m:
        assert sorted(m.get_namespace("ns")) == ["a", "b", "c"]
        assert [b[0] for b in m.list_namespace_backups("ns")] == ["b1"]


def test_an_archive_path_that_is_a_link_is_replaced_not_followed(world, tmp_path):
    root, outside = world
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(outside / "precious", elsewhere / "b1.tar")
    before = dir_digest(str(outside))
    with vs.NamespaceManager(root) as m:
        m.export_backup("ns", "b1", str(elsewhere / "b1.tar"))
    assert dir_digest(str(outside)) == before
    assert not os.path.islink(elsewhere / "b1.tar") and os.listdir(elsewhere) == ["b1.tar"]
    assert (elsewhere / "b1.tar").read_bytes() == archive_of(root)
    (elsewhere / "adir").mkdir()
    with vs.NamespaceManager(root) as m, pytest.raises(vs.StorageError):
        m.export_backup("ns", "b1", str(elsewhere / "adir"))  # a directory there: a typed error, no temp file left
    assert sorted(os.listdir(elsewhere)) == ["adir", "b1.tar"]


def test_an_archive_or_export_read_through_a_link_below_the_root_is_refused(world, tmp_path):
    root, outside = world
    (outside / "b1.tar").write_bytes(archive_of(root))
    with vs.VecStore.open(tmp_path / "src", dim=4) as src:
        src.upsert_many(["x", "y"], vecs(2))
        src.export(outside / "ex")
    os.symlink(outside, root / "ns" / "in")
    with vs.NamespaceManager(root) as m:
        refused(outside, lambda: m.import_backup("ns", str(root / "ns" / "in" / "b1.tar"), "b2"))
        store = m.get_namespace("ns")
        refused(outside, lambda: store.import_(str(root / "ns" / "in" / "ex")))
        assert sorted(store) == ["a", "b", "c"]
        assert [b[0] for b in m.list_namespace_backups("ns")] == ["b1"]


def test_a_link_planted_in_an_export_directory_after_its_check_is_refused(tmp_path, monkeypatch):
    """The export checks that its directory is empty, then reads the records, then creates its files: a link
    planted in between must not be written through."""
    import vecstore_ref.export as export

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"precious")
    target = tmp_path / "exp"
    target.mkdir()
    read = export._read_consistently

    def read_then_plant(stores):
        got = read(stores)
        os.symlink(outside / "victim", target / export.RECORDS)
        return got

    monkeypatch.setattr(export, "_read_consistently", read_then_plant)
    with vs.VecStore.open(tmp_path / "s", dim=4) as s:
        s.upsert_many(["a", "b"], vecs(2))
        refused(outside, lambda: s.export(target))
    assert (outside / "victim").read_bytes() == b"precious"
    assert sorted(os.listdir(target)) == [export.RECORDS]  # its own vectors.npy removed, the link left alone


@pytest.mark.parametrize("swap", ["link", "directory"])
def test_a_root_swapped_after_the_manager_opened_it_is_refused(tmp_path, swap):
    """The root is trusted as the directory it was when the manager registered it: moved away and replaced by a
    link to it (or by another directory), every call is refused and nothing lands in the moved one."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    m = vs.NamespaceManager(root)
    m.create_namespace("a", dim=2, index="flat")
    m.get_namespace("a").upsert("x", [1, 0])
    m.close()
    m = vs.NamespaceManager(root)
    os.rename(root, outside / "moved")
    if swap == "link":
        os.symlink(outside / "moved", root)
    else:
        root.mkdir()
    before = dir_digest(str(outside))
    for call in (lambda: m.create_namespace("b", dim=2), lambda: m.get_namespace("a"),
                 lambda: m.backup_namespace("a", "b1")):
        with pytest.raises(vs.UnsafePathError):
            call()
    assert dir_digest(str(outside)) == before
    m.close()
