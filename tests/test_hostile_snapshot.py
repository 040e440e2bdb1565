"""A snapshot with a valid checksum but hostile contents is a `CorruptSnapshotError` on open or on read, never a
TypeError, MemoryError or UnicodeDecodeError, and nothing on disk changes."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest

import vecstore_ref as vs
from vecstore_ref._fs import dir_digest, get_fs
from vecstore_ref.storage import snapshot as sn


def _store(tmp_path, index="flat", metadata=True):
    path = str(tmp_path / "s")
    with vs.VecStore.open(path, dim=4, metric="cosine", index=index) as s:
        s.upsert_many([f"id{i}" for i in range(10)], np.arange(1, 41, dtype=np.float32).reshape(10, 4),
                      [{"t": f"x{i}", "tags": ["a", i]} for i in range(10)] if metadata else None)
        s.snapshot()
    return path


def _resnap(path, change):
    """Rewrite the store's snapshot through the library's own writer (so its checksum is valid)."""
    fs = get_fs()
    p = glob.glob(os.path.join(path, "snap-*.vss"))[0]
    header, arrays = sn.read_snapshot(fs, p)
    change(header, arrays)
    os.unlink(p)
    sn.write_snapshot(fs, path, os.path.basename(p), header, arrays)


def _use(path):
    with vs.VecStore.open(path) as s:
        for i in list(s):
            s.get(i)
        [n.metadata for n in s.query(np.ones(4, dtype=np.float32), k=5)]
        s.query(np.ones(4, dtype=np.float32), k=5, filter="t = 'x1'")
        s.update_metadata("id1", {"t": "y"})


def _field(header, kind):
    return next(f for f in header["columns"]["fields"] if kind in f["kinds"])


HEADER_CHANGES = {
    "counts=-1": lambda h, a: h.update(counts=-1),
    "counts=[]": lambda h, a: h.update(counts=[1]),
    "n_slots=None": lambda h, a: h.update(n_slots=None),
    "n_slots='x'": lambda h, a: h.update(n_slots="x"),
    "n_slots=True": lambda h, a: h.update(n_slots=True),
    "n_slots=-1": lambda h, a: h.update(n_slots=-1),
    "dim=[]": lambda h, a: h.update(dim=[]),
    "dim=2**40": lambda h, a: h.update(dim=2**40),
    "dim=4.0": lambda h, a: h.update(dim=4.0),
    "columns.n=2**40": lambda h, a: h["columns"].update(n=2**40),
    "columns=1": lambda h, a: h.update(columns=1),
    "index_meta='x'": lambda h, a: h.update(index_meta="x"),
    "index_meta=5": lambda h, a: h.update(index_meta=5),
    "index_kind=[]": lambda h, a: h.update(index_kind=[]),
    "kinds=[[]]": lambda h, a: _field(h, "str").update(kinds=[[]]),
    "next_version=2**63": lambda h, a: _field(h, "list").update(next_version=2**63),
    "next_version='1'": lambda h, a: _field(h, "list").update(next_version="1"),
}


@pytest.mark.parametrize("change", HEADER_CHANGES.values(), ids=HEADER_CHANGES.keys())
def test_a_bad_header_field_is_a_corrupt_snapshot(tmp_path, change):
    path = _store(tmp_path)
    _resnap(path, change)
    before = dir_digest(path)
    with pytest.raises(vs.CorruptSnapshotError):
        _use(path)
    with pytest.raises(vs.CorruptSnapshotError):
        vs.VecStore.open(path, read_only=True).close()
    assert dir_digest(path) == before


@pytest.mark.parametrize("meta", ["x", 5, {"params": 5}, {"params": {"m": "x"}}])
def test_a_bad_hnsw_index_meta_is_a_corrupt_snapshot(tmp_path, meta):
    path = _store(tmp_path, index="hnsw")
    _resnap(path, lambda h, a: h.update(index_meta=meta))
    with pytest.raises(vs.CorruptSnapshotError):
        _use(path)


def _poke(name, where, value):
    def change(h, a):
        a[name][where] = value
    return change


BLOB_CHANGES = {
    "ids not utf-8": _poke("ids.blob", slice(5, None, 7), 0xFF),
    "id with a control": _poke("ids.blob", 1, 0x01),
    "id with DEL": _poke("ids.blob", 1, 0x7F),
    "id with an encoded surrogate": _poke("ids.blob", slice(0, 3), [0xED, 0xA0, 0x80]),
    "row not utf-8": _poke("meta.rows.blob", slice(2, 4), 0xFF),
    "row not braced": _poke("meta.rows.blob", 0, ord("[")),
    "row start overflows": _poke("meta.rows.start", 0, np.iinfo(np.int64).max),
}


@pytest.mark.parametrize("change", BLOB_CHANGES.values(), ids=BLOB_CHANGES.keys())
def test_undecodable_ids_and_rows_are_refused_on_open(tmp_path, change):
    path = _store(tmp_path)
    _resnap(path, change)
    before = dir_digest(path)
    with pytest.raises(vs.CorruptSnapshotError):
        vs.VecStore.open(path, read_only=True).close()
    assert dir_digest(path) == before


def test_a_row_that_is_not_json_is_a_corrupt_snapshot_when_read(tmp_path):
    """Rows are not parsed on open (it would cost work per record): the first read that decodes one reports it,
    on every path that reads rows (get, query results gathered by the texts kernel, a metadata update)."""
    path = _store(tmp_path)

    def change(h, a):
        blob = a["meta.rows.blob"]
        blob[1:3] = [ord("!"), ord("!")]  # still UTF-8 and braced
    _resnap(path, change)
    with vs.VecStore.open(path) as s:
        slot = s._state.lookup("id0")
        assert s._state.columns.text(slot).startswith(b"{!!")
        with pytest.raises(vs.CorruptSnapshotError):
            s.get("id0")
        hits = s.query(np.arange(1, 5, dtype=np.float32), k=10)
        with pytest.raises(vs.CorruptSnapshotError):
            [n.metadata for n in hits]
        with pytest.raises(vs.CorruptSnapshotError):
            s.update_metadata("id0", {"t": "y"})


@pytest.mark.parametrize("what", ["zero", "nan", "inv_norm"])
def test_snapshot_vectors_break_the_vector_rules(tmp_path, what):
    path = _store(tmp_path, metadata=False)

    def change(h, a):
        if what == "zero":
            a["vectors"][3] = 0
        elif what == "nan":
            a["vectors"][3, 1] = np.nan
        else:
            a["inv_norms"][3] = np.inf
    _resnap(path, change)
    with pytest.raises(vs.CorruptSnapshotError):
        _use(path)


def test_zero_vectors_under_dot_still_open(tmp_path):
    path = str(tmp_path / "d")
    with vs.VecStore.open(path, dim=4, metric="dot", index="flat") as s:
        s.upsert_many(["a", "b"], np.zeros((2, 4), dtype=np.float32))
        s.snapshot()
    with vs.VecStore.open(path) as s:
        assert len(s.query(np.ones(4, dtype=np.float32), k=2)) == 2
