"""A MANIFEST with a valid checksum but options of the wrong type or range is a typed error on open."""

from __future__ import annotations

import numpy as np
import pytest

import vecstore_ref as vs
from vecstore_ref._fs import dir_digest, get_fs
from vecstore_ref.storage.manifest import encode_manifest, read_manifest


def _store(tmp_path):
    path = str(tmp_path / "s")
    with vs.VecStore.open(path, dim=4, metric="dot", index="flat") as s:
        s.upsert("a", np.ones(4, dtype=np.float32))
        s.snapshot()
    return path


@pytest.mark.parametrize(("key", "value"), [
    ("dim", -1), ("dim", 2**40), ("dim", "x"), ("dim", []), ("dim", 1.5), ("dim", True),
    ("metric", None), ("metric", "x"), ("metric", []), ("index", 3),
    ("hnsw", None), ("hnsw", 1), ("hnsw", {"m": "x"}),
    ("compaction", None), ("compaction", {"enabled": "yes"}), ("compaction", {"bogus": 1}),
    ("checkpoint", None), ("checkpoint", 5), ("checkpoint", {"min_log_bytes": -1}),
])
def test_bad_manifest_option_is_a_typed_error(tmp_path, key, value):
    path = _store(tmp_path)
    m = read_manifest(get_fs(), path)
    m.options[key] = value
    with open(f"{path}/MANIFEST", "wb") as f:
        f.write(encode_manifest(m))
    before = dir_digest(path)
    for ro in (False, True):
        with pytest.raises(vs.VecStoreError):
            vs.VecStore.open(path, read_only=ro).close()
    assert dir_digest(path) == before
