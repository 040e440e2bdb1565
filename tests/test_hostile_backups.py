"""A backup whose checksums are valid but whose store files are hostile (the crafted snapshots and log records of
test_hostile_snapshot.py and test_hostile_log_records.py) is a `BackupCorruptError` on restore and on import, and
the namespace and its backups stay as they were."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile

import numpy as np
import pytest
from test_hostile_log_records import CHANGES as LOG_CHANGES
from test_hostile_log_records import _relog
from test_hostile_snapshot import BLOB_CHANGES, HEADER_CHANGES, _resnap

import vecstore_ref as vs
from vecstore_ref._fs import dir_digest


def _not_json_row(h, a):
    a["meta.rows.blob"][1:3] = [ord("!"), ord("!")]


SNAP = {"counts": HEADER_CHANGES["counts=-1"], "columns.n": HEADER_CHANGES["columns.n=2**40"],
        "ids": BLOB_CHANGES["ids not utf-8"], "row not json": _not_json_row,
        "zero vector": lambda h, a: a["vectors"].__setitem__(3, 0)}
LOG = {"nested list": LOG_CHANGES["nested list"], "surrogate id": LOG_CHANGES["surrogate id"],
       "zero vector": LOG_CHANGES["zero vector"]}


@pytest.fixture()
def mgr(tmp_path):
    with vs.NamespaceManager(str(tmp_path / "root")) as m:
        m.create_namespace("ns", dim=4, metric="cosine", index="flat")
        s = m.get_namespace("ns")
        s.upsert_many([f"id{i}" for i in range(10)], np.arange(1, 41, dtype=np.float32).reshape(10, 4),
                      [{"t": f"x{i}"} for i in range(10)])
        s.snapshot()
        s.upsert("after", np.ones(4, dtype=np.float32), {"b": 1})
        m.backup_namespace("ns", "good")
        yield m


def _reseal(directory):
    """Give the backup's manifest the sizes and checksums of its files as they are now."""
    p = os.path.join(directory, "BACKUP.json")
    info = json.load(open(p))
    for f in info["files"]:
        data = open(os.path.join(directory, f["name"]), "rb").read()
        f["size"], f["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    with open(p, "w") as out:
        json.dump(info, out)


def _spoil(directory, kind, change):
    (_resnap if kind == "snap" else _relog)(directory, change)
    _reseal(directory)


CASES = [("snap", k, v) for k, v in SNAP.items()] + [("log", k, v) for k, v in LOG.items()]


@pytest.mark.parametrize(("kind", "name", "change"), CASES, ids=[f"{k}-{n}" for k, n, _ in CASES])
def test_restore_refuses_a_hostile_backup(mgr, kind, name, change):
    bdir = os.path.join(mgr.root, "ns", "backups", "good")
    _spoil(bdir, kind, change)
    ns_dir = os.path.dirname(os.path.dirname(bdir))
    mgr.close()
    before = dir_digest(ns_dir)
    with vs.NamespaceManager(os.path.dirname(ns_dir)) as m:
        with pytest.raises(vs.BackupCorruptError):
            m.restore_namespace("ns", "good")
        assert len(m.get_namespace("ns")) == 11
    assert dir_digest(ns_dir) == before


@pytest.mark.parametrize(("kind", "name", "change"), CASES, ids=[f"{k}-{n}" for k, n, _ in CASES])
def test_import_refuses_a_hostile_archive(mgr, tmp_path, kind, name, change):
    buf = io.BytesIO()
    mgr.export_backup("ns", "good", buf)
    buf.seek(0)
    work = tmp_path / "work"
    work.mkdir()
    with tarfile.open(fileobj=buf) as tar:
        tar.extractall(work, filter="data")
    _spoil(str(work), kind, change)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for n in sorted(os.listdir(work)):
            tar.add(str(work / n), arcname=n)
    out.seek(0)
    with pytest.raises(vs.BackupCorruptError):
        mgr.import_backup("ns", out, "hostile")
    assert [b[0] for b in mgr.list_namespace_backups("ns")] == ["good"]
