"""Query results: `Neighbor` keeps its metadata as the store's JSON bytes until read, and behaves like the plain
record of ``id``, ``score`` and ``metadata`` it stands for."""

from __future__ import annotations

import copy
import pickle

import numpy as np

import vecstore_ref as vs
from vecstore_ref.types import Neighbor


def test_a_lazy_result_equals_and_prints_as_the_decoded_one():
    lazy = Neighbor._from_text("a", 0.5, b'{"x": [1, 2], "y": "z"}')
    plain = Neighbor("a", 0.5, {"x": [1, 2], "y": "z"})
    assert lazy == plain and repr(lazy) == repr(plain)
    assert lazy != Neighbor("a", 0.5, {"x": [1, 2]}) and lazy != Neighbor("b", 0.5, plain.metadata)
    assert Neighbor._from_text("a", 0.5, None).metadata is None
    assert pickle.loads(pickle.dumps(Neighbor._from_text("a", 0.5, b'{"k": 1}'))) == Neighbor("a", 0.5, {"k": 1})
    assert copy.deepcopy(lazy) == plain
    lazy.metadata = {"new": True}
    assert lazy.metadata == {"new": True} and lazy.to_dict() == {"id": "a", "score": 0.5, "metadata": {"new": True}}
    match lazy:
        case Neighbor(id, score, metadata):
            assert (id, score, metadata) == ("a", 0.5, {"new": True})


def test_results_are_the_callers_own_copies_whenever_they_are_read(tmp_path):
    with vs.VecStore.open(tmp_path / "s", dim=4) as s:
        s.upsert_many(["a", "b"], np.eye(4, dtype=np.float32)[:2], [{"tags": ["x"], "n": 1}, None])
        first = s.query([1, 0, 0, 0], k=2)
        s.update_metadata("a", {"n": 2})  # after the query, before its metadata is read
        assert first[0].id == "a" and first[0].metadata == {"tags": ["x"], "n": 1}
        assert first[1].metadata is None
        first[0].metadata["tags"].append("changed")
        assert s.query([1, 0, 0, 0], k=1)[0].metadata == {"n": 2}
        assert s.get("a").metadata == {"n": 2}
