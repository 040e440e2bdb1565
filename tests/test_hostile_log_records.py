"""Log records with a valid CRC but contents a live write refuses (SPEC section 1) are refused on replay as
`CorruptLogError`: a whole, CRC-valid record is not a torn tail, so the store does not open and nothing changes."""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest

import vecstore_ref as vs
from vecstore_ref._fs import dir_digest, get_fs
from vecstore_ref.storage import log as lg
from vecstore_ref.storage import manifest as mf
from vecstore_ref.storage import records as rc


def _relog(path, change):
    """Rewrite the last log segment's records, each with fresh framing (a valid CRC)."""
    fs = get_fs()
    p = sorted(glob.glob(os.path.join(path, "log-*.vsl")))[-1]
    scan = lg.read_segments(fs, [p], mf.read_manifest(fs, path).snapshot_seq)
    out = lg.segment_header()
    for r in scan.records:
        j, n, dim = rc.BATCH_PAYLOAD_HEADER.unpack_from(r.payload, 0)
        ops, vb = change(json.loads(r.payload[12:12 + j]), r.payload[12 + j:])
        text = json.dumps(ops).replace('"__INF__"', "1e999").encode()  # json.dumps writes no 1e999
        out += lg.frame(r.rtype, r.seq, rc.BATCH_PAYLOAD_HEADER.pack(len(text), n, dim) + text + vb)
    with open(p, "wb") as f:
        f.write(out)


def _store(path):
    with vs.VecStore.open(path, dim=4, metric="cosine", index="flat") as s:
        s.upsert("a", np.ones(4, dtype=np.float32), {"b": 1})
        s.upsert("z", np.ones(4, dtype=np.float32), {"b": 2})


def _md(value):
    return lambda ops, vb: ([{**o, "metadata": value} for o in ops], vb)


CHANGES = {
    "nested list": _md({"a": [[1]]}),
    "nested dict": _md({"a": {"b": 1}}),
    "empty key": _md({"": 1}),
    "infinite float": _md({"a": "__INF__"}),
    "surrogate in metadata": _md({"a": "\ud800"}),
    "surrogate id": lambda ops, vb: ([{**o, "id": "\ud800"} for o in ops], vb),
    "control id": lambda ops, vb: ([{**o, "id": "a\x01"} for o in ops], vb),
    "C1 control id": lambda ops, vb: ([{**o, "id": "a\x85"} for o in ops], vb),
    "long id": lambda ops, vb: ([{**o, "id": "x" * 513} for o in ops], vb),
    "zero vector": lambda ops, vb: (ops, bytes(len(vb))),
}


@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_a_record_breaking_the_value_rules_is_a_corrupt_log(tmp_path, change):
    path = str(tmp_path / "s")
    _store(path)
    _relog(path, change)
    before = dir_digest(path)
    for ro in (True, False):
        with pytest.raises(vs.CorruptLogError):
            vs.VecStore.open(path, read_only=ro).close()
    assert dir_digest(path) == before


def test_verify_reports_such_a_record(tmp_path):
    from vecstore_ref.storage.verify import verify_files

    path = str(tmp_path / "s")
    _store(path)
    _relog(path, CHANGES["nested list"])
    assert any("nested list" in e for e in verify_files(get_fs(), path).errors)
