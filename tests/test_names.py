"""Every name rule is a full match: namespace names, backup names, and the file names of backups and archives.

A rule checked with ``re.match`` and a ``$`` also accepts the name followed by ``"\\n"``; each call that takes a name
is tried with that and with the other hostile names of the bad-input catalogue (docs/concepts/reliability.md), and
must raise :class:`InvalidNameError` (or refuse the archive) without changing a byte under the root.
"""

from __future__ import annotations

import io
import json
import os
import tarfile

import numpy as np
import pytest

import vecstore_ref as vs
from vecstore_ref._fs import dir_digest

HOSTILE_NAMES = [
    "abc\n", "abc\r", "abc\n\n", "\nabc", "a\nb", "abc\x00", "a\x00b", "x" * 300, "x" * 65, "\uff0e\uff0e\uff0f",
    "\uff0e\uff0e", "../x", "..", ".", "/abs", "/etc/passwd", "a/b", "a\\b", "abc ", " abc", "", "-x",
    "~", "é", "a b", 5, None, ["a"], b"abc",
]


def vecs(n, dim=4, seed=0):
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


@pytest.fixture
def mgr(tmp_path):
    m = vs.NamespaceManager(tmp_path / "root")
    s = m.create_namespace("ns", dim=4, index="flat")
    s.upsert_many(["a", "b"], vecs(2))
    m.backup_namespace("ns", "good")
    yield m
    m.close()


def _archive(mgr) -> bytes:
    buf = io.BytesIO()
    mgr.export_backup("ns", "good", buf)
    return buf.getvalue()


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=repr)
def test_every_call_that_takes_a_name_refuses_a_hostile_one(mgr, name, tmp_path):
    archive = _archive(mgr)
    before = dir_digest(mgr.root)
    calls = [
        lambda: mgr.create_namespace(name, dim=4),
        lambda: mgr.get_namespace(name),
        lambda: mgr.delete_namespace(name),
        lambda: mgr.backup_namespace("ns", name),
        lambda: mgr.restore_namespace("ns", name),
        lambda: mgr.delete_namespace_backup("ns", name),
        lambda: mgr.export_backup("ns", name, io.BytesIO()),
        lambda: mgr.import_backup("ns", io.BytesIO(archive), name),
        lambda: mgr.list_namespace_backups(name),
        lambda: mgr.backup_namespace(name, "b2"),
        lambda: mgr.restore_namespace(name, "good"),
        lambda: mgr.delete_namespace_backup(name, "good"),
        lambda: mgr.import_backup(name, io.BytesIO(archive), "b2"),
    ]
    for call in calls:
        with pytest.raises(vs.InvalidNameError):
            call()
        assert dir_digest(mgr.root) == before
    assert mgr.list_namespaces() == ["ns"]
    assert [b[0] for b in mgr.list_namespace_backups("ns")] == ["good"]


def test_a_name_with_a_trailing_newline_creates_no_directory(tmp_path):
    with vs.NamespaceManager(tmp_path / "r") as m:
        with pytest.raises(vs.InvalidNameError):
            m.create_namespace("abc\n", dim=4)
        assert os.listdir(tmp_path / "r") == []


def test_fine_names_still_work(mgr):
    for name in ("a", "A-1", "x" * 64, "v1.2_b", "0", "v1.", "a.b."):  # SPEC's pattern: a trailing dot is fine
        mgr.create_namespace(name, dim=4)
        mgr.backup_namespace(name, name)
        assert name in mgr.list_namespaces() and [b[0] for b in mgr.list_namespace_backups(name)] == [name]
    assert len(mgr.list_namespaces()) == 8


def _tar(members: dict[str, bytes]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    buf.seek(0)
    return buf


def _members(archive: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}


@pytest.mark.parametrize("suffix", ["\n", "\r", ".", " ", "\t"], ids=repr)
def test_archive_member_names_are_matched_in_full(mgr, suffix):
    members = _members(_archive(mgr))
    renamed = {(n + suffix if n == "MANIFEST" else n): d for n, d in members.items()}
    before = dir_digest(mgr.root)
    with pytest.raises((vs.UnsafeArchiveError, vs.BackupCorruptError)):
        mgr.import_backup("ns", _tar(renamed), "b2")
    assert dir_digest(mgr.root) == before


@pytest.mark.parametrize("bad", ["MANIFEST\n", "MANIFEST.", "../MANIFEST", "/MANIFEST", "", 5, None],
                         ids=repr)
def test_file_names_in_a_backup_manifest_are_matched_in_full(mgr, bad):
    members = _members(_archive(mgr))
    info = json.loads(members["BACKUP.json"])
    entry = next(f for f in info["files"] if f["name"] == "MANIFEST")
    entry["name"] = bad
    members["BACKUP.json"] = json.dumps(info).encode()
    before = dir_digest(mgr.root)
    with pytest.raises(vs.BackupCorruptError):
        mgr.import_backup("ns", _tar(members), "b2")
    assert dir_digest(mgr.root) == before


def test_a_namespace_file_naming_a_store_with_a_newline_is_refused(tmp_path):
    root = tmp_path / "r"
    with vs.NamespaceManager(root) as m:
        m.create_namespace("ns", dim=4)
    cfg_path = root / "ns" / "NAMESPACE.json"
    cfg = json.loads(cfg_path.read_text())
    os.rename(root / "ns" / cfg["store"], root / "ns" / (cfg["store"] + "\n"))
    cfg["store"] += "\n"
    cfg_path.write_text(json.dumps(cfg))
    before = dir_digest(root)
    with vs.NamespaceManager(root) as m:
        with pytest.raises(vs.StorageError):
            m.get_namespace("ns")
    assert dir_digest(root) == before
