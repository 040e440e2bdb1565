"""Inputs that used to escape as bare Python errors (OverflowError, FileNotFoundError, AttributeError,
RecursionError, ValueError, FileExistsError, TypeError): each is now a VecStoreError subclass and changes nothing."""

from __future__ import annotations

import io
import json
import os
import tarfile
from fractions import Fraction

import numpy as np
import pytest

import vecstore_ref as vs
from vecstore_ref._fs import dir_digest

HUGE_TTLS = [10**400, -(10**400), 10**5000, float("1e400"), float("-inf"), Fraction(10**400, 3)]


def vecs(n, dim=4, seed=0):
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


@pytest.fixture
def store(tmp_path):
    s = vs.VecStore.open(tmp_path / "s", dim=4, index="flat")
    s.upsert("a", vecs(1)[0])
    yield s
    s.close()


def unchanged(path, call, exc=vs.InvalidArgumentError):
    before = dir_digest(str(path))
    with pytest.raises(exc) as info:
        call()
    assert isinstance(info.value, vs.VecStoreError), type(info.value)
    assert dir_digest(str(path)) == before
    return info.value


# --- TTLs that do not fit a float --------------------------------------------------------------------------------

@pytest.mark.parametrize("ttl", HUGE_TTLS, ids=["1e400-int", "-1e400-int", "1e5000-int", "1e400-float", "-inf",
                                                "fraction"])
def test_a_ttl_too_large_for_a_float_is_an_invalid_argument_everywhere(store, ttl):
    v = vecs(1, seed=1)[0]
    unchanged(store.path, lambda: store.upsert("b", v, ttl=ttl))
    unchanged(store.path, lambda: store.upsert_with_ttl("b", v, None, ttl))
    unchanged(store.path, lambda: store.set_ttl("a", ttl))
    unchanged(store.path, lambda: store.upsert_many(["b", "c"], vecs(2, seed=2), ttl=ttl))
    before = dir_digest(store.path)
    for op in (vs.Upsert("b", v, None, ttl), vs.SetTTL("a", ttl)):
        result = store.batch_execute([op])
        assert (result.succeeded, result.failed) == (0, 1)
        assert result.errors[0].type == "InvalidArgumentError"
    assert dir_digest(store.path) == before
    assert sorted(store) == ["a"] and store.get("a").expires_at is None


def test_the_message_of_a_huge_ttl_stays_short(store):
    err = unchanged(store.path, lambda: store.set_ttl("a", 10**5000))
    assert len(str(err)) < 200


# --- paths given to VecStore.open and NamespaceManager -----------------------------------------------------------

def test_open_on_a_path_with_a_nul_byte(tmp_path):
    unchanged(tmp_path, lambda: vs.VecStore.open(str(tmp_path / "a\x00b")))
    unchanged(tmp_path, lambda: vs.VecStore.open(str(tmp_path / "a\x00b"), read_only=True))
    unchanged(tmp_path, lambda: vs.NamespaceManager(str(tmp_path / "a\x00b")))


def test_open_on_a_regular_file(tmp_path):
    (tmp_path / "file").write_bytes(b"not a store")
    unchanged(tmp_path, lambda: vs.VecStore.open(tmp_path / "file"))
    unchanged(tmp_path, lambda: vs.VecStore.open(tmp_path / "file", read_only=True))
    unchanged(tmp_path, lambda: vs.NamespaceManager(tmp_path / "file"))
    unchanged(tmp_path, lambda: vs.VecStore.open(tmp_path / "file" / "sub"), vs.StorageError)


@pytest.mark.parametrize("path", [5, None, b"/tmp/x", ["a"]], ids=repr)
def test_open_on_something_that_is_not_a_path(tmp_path, path):
    err = unchanged(tmp_path, lambda: vs.VecStore.open(path), vs.InvalidArgumentTypeError)
    assert isinstance(err, TypeError)


def test_get_namespace_with_a_list(tmp_path):
    with vs.NamespaceManager(tmp_path / "r") as m:
        m.create_namespace("a", dim=4)
        unchanged(tmp_path, lambda: m.get_namespace(["a"]), vs.InvalidNameError)


# --- hostile backup archives -------------------------------------------------------------------------------------

@pytest.fixture
def mgr(tmp_path):
    m = vs.NamespaceManager(tmp_path / "root")
    s = m.create_namespace("ns", dim=4, index="flat")
    s.upsert_many(["a", "b", "c"], vecs(3))
    m.backup_namespace("ns", "good")
    yield m
    m.close()


def _members(mgr) -> dict[str, bytes]:
    buf = io.BytesIO()
    mgr.export_backup("ns", "good", buf)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}


def _tar(members: dict[str, bytes]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    buf.seek(0)
    return buf


def _with_manifest(members, info) -> dict[str, bytes]:
    out = dict(members)
    out["BACKUP.json"] = info if isinstance(info, bytes) else json.dumps(info).encode()
    return out


def hostile_archives(members):
    info = json.loads(members["BACKUP.json"])
    missing = dict(members)
    del missing[next(f["name"] for f in info["files"] if f["name"] != "MANIFEST")]
    out = {
        "lacks-a-listed-file": missing,
        "manifest-is-a-list": _with_manifest(members, b"[1, 2, 3]"),
        "manifest-is-a-number": _with_manifest(members, b"42"),
        "manifest-nested-100000-deep": _with_manifest(members, b"[" * 100_000 + b"]" * 100_000),
        "object-nested-100000-deep": _with_manifest(members, b'{"a":' * 100_000 + b"1" + b"}" * 100_000),
        "file-entry-is-a-list": _with_manifest(members, {**info, "files": [[1, 2]]}),
        "file-name-with-newline": _with_manifest(
            members, {**info, "files": [{**f, "name": f["name"] + "\n"} if f["name"] == "MANIFEST" else f
                                        for f in info["files"]]}),
    }
    for key, value in (("count", 5), ("count", 2), ("count", -1), ("count", "3"), ("count", True), ("dim", 8),
                       ("dim", None), ("dim", 0), ("metric", "euclidean"), ("metric", "manhattan")):
        out[f"{key}={value!r}"] = _with_manifest(members, {**info, key: value})
    return out


def test_hostile_archives_are_refused_at_import_and_never_listed(mgr):
    members = _members(mgr)
    ns_dir = os.path.join(mgr.root, "ns")
    for label, archive in hostile_archives(members).items():
        before = dir_digest(ns_dir)
        with pytest.raises(vs.BackupCorruptError):
            mgr.import_backup("ns", _tar(archive), "imported")
        assert dir_digest(ns_dir) == before, label
        assert [b[0] for b in mgr.list_namespace_backups("ns")] == ["good"], label
    mgr.import_backup("ns", _tar(members), "imported")  # the untouched archive imports, and restores
    mgr.restore_namespace("ns", "imported")
    assert sorted(mgr.get_namespace("ns")) == ["a", "b", "c"]


def test_a_manifest_that_lies_about_its_count_is_refused_at_import_not_at_restore(mgr):
    members = _members(mgr)
    info = json.loads(members["BACKUP.json"])
    with pytest.raises(vs.BackupCorruptError, match="manifest says 4"):
        mgr.import_backup("ns", _tar(_with_manifest(members, {**info, "count": 4})), "liar")
    assert "liar" not in [b[0] for b in mgr.list_namespace_backups("ns")]


# --- the archive argument of export_backup / import_backup -------------------------------------------------------

def test_archive_arguments_that_are_not_archives(mgr, tmp_path):
    ns_dir = os.path.join(mgr.root, "ns")
    before = dir_digest(ns_dir)
    for bad in (123, None, ["a.tar"], io.StringIO("text")):
        with pytest.raises(vs.InvalidArgumentTypeError):
            mgr.import_backup("ns", bad, "b2")
        with pytest.raises(vs.InvalidArgumentTypeError):
            mgr.export_backup("ns", "good", bad)
    for bad in ("a\x00b.tar",):
        with pytest.raises(vs.InvalidArgumentError):
            mgr.import_backup("ns", bad, "b2")
    for bad in (str(tmp_path / "missing.tar"), str(tmp_path)):
        with pytest.raises(vs.StorageError):
            mgr.import_backup("ns", bad, "b2")
    with pytest.raises(vs.StorageError):
        mgr.export_backup("ns", "good", str(tmp_path / "no" / "such" / "dir.tar"))
    for bad, exc in (("10", vs.InvalidArgumentTypeError), (True, vs.InvalidArgumentTypeError),
                     (-1, vs.InvalidArgumentError)):
        with pytest.raises(exc):
            mgr.import_backup("ns", io.BytesIO(b""), "b2", max_bytes=bad)
    assert dir_digest(ns_dir) == before


@pytest.mark.parametrize("mode", ["w:gz", "w:bz2", "w:xz"])
def test_a_cut_compressed_archive_is_a_corrupt_backup(mgr, mode):
    members = _members(mgr)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as tar:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    data = out.getvalue()
    ns_dir = os.path.join(mgr.root, "ns")
    before = dir_digest(ns_dir)
    for cut in (len(data) // 3, len(data) // 2):
        with pytest.raises(vs.BackupCorruptError):
            mgr.import_backup("ns", io.BytesIO(data[:cut]), "cut")
    assert dir_digest(ns_dir) == before
    mgr.import_backup("ns", io.BytesIO(data), "whole")  # the whole compressed archive imports
