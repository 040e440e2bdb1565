"""Every bad input of the Python API raises a typed error and leaves the directory byte-for-byte unchanged."""

from __future__ import annotations

import numpy as np
import pytest

import vecstore_ref as vs
from vecstore_ref._fs import dir_digest

DIM = 4
GOOD = [1.0, 2.0, 3.0, 4.0]

BAD_VECTORS = [
    ([1.0, 2.0, 3.0], vs.DimensionMismatchError),
    ([1.0, 2.0, 3.0, 4.0, 5.0], vs.DimensionMismatchError),
    ([], vs.DimensionMismatchError),
    ([[1.0, 2.0, 3.0, 4.0]], vs.DimensionMismatchError),
    ([[1.0, 2.0], [3.0]], vs.DimensionMismatchError),
    ([np.nan, 1, 1, 1], vs.InvalidVectorError),
    ([np.inf, 1, 1, 1], vs.InvalidVectorError),
    ([1e39, 1, 1, 1], vs.InvalidVectorError),
    ([0.0, 0.0, 0.0, 0.0], vs.InvalidVectorError),
    ([1e-31, 1e-31, 1e-31, 1e-31], vs.InvalidVectorError),  # norm 2e-31 (float64) < 1e-30
    (["1", "2", "3", "4"], TypeError),
    ([True, False, True, False], TypeError),
    (np.array([1 + 1j, 0, 0, 0]), TypeError),
    (np.array([object(), 1, 2, 3], dtype=object), TypeError),
    ("1234", TypeError),
    (None, TypeError),
]

BAD_IDS = [("", vs.InvalidIdError), ("x" * 513, vs.InvalidIdError), ("é" * 257, vs.InvalidIdError),
           (5, TypeError), (None, TypeError), (b"abc", TypeError), (float("nan"), TypeError),
           ("a\x00b", vs.InvalidIdError), ("a\nb", vs.InvalidIdError), ("\ud800", vs.InvalidIdError)]

BAD_METADATA = [[1, 2], "x", {"a": {"b": 1}}, {"a": float("nan")}, {"a": np.float32(1.0)}, {"a": b"x"},
                {"a": {1, 2}}, {1: "x"}, {"": 1}, {"a": [[1]]}, {"a": list(range(1025))}, {"a": "x" * 70_000},
                {"k" * 257: 1}, {"a": 10 ** 5000}, {"a": (1, 2)}]


@pytest.fixture
def store(tmp_path):
    path = str(tmp_path / "s")
    s = vs.VecStore.open(path, dim=DIM, metric="cosine", index="flat")
    s.upsert("a", GOOD, {"x": 1})
    s.soft_delete("a")
    s.restore("a")
    yield s
    s.close()


def unchanged(store, call, exc):
    before = dir_digest(store.path)
    n = len(store)
    with pytest.raises(exc) as info:
        call()
    assert isinstance(info.value, vs.VecStoreError)
    assert dir_digest(store.path) == before
    assert len(store) == n
    assert store.get("a").metadata == {"x": 1}
    return info.value


@pytest.mark.parametrize("vector,exc", BAD_VECTORS)
def test_bad_vectors(store, vector, exc):
    unchanged(store, lambda: store.upsert("b", vector), exc)
    unchanged(store, lambda: store.query(vector), exc)
    unchanged(store, lambda: store.upsert_many(["b"], [vector]), (vs.InvalidInputError, TypeError))


@pytest.mark.parametrize("id_,exc", BAD_IDS)
def test_bad_ids(store, id_, exc):
    unchanged(store, lambda: store.upsert(id_, GOOD), exc)
    unchanged(store, lambda: store.delete(id_), exc)
    unchanged(store, lambda: store.get(id_), exc)


@pytest.mark.parametrize("md", BAD_METADATA, ids=range(len(BAD_METADATA)))
def test_bad_metadata(store, md):
    unchanged(store, lambda: store.upsert("b", GOOD, md), vs.InvalidMetadataError)
    unchanged(store, lambda: store.update_metadata("a", md), vs.InvalidMetadataError)


@pytest.mark.parametrize("k", [0, -1, True, 3.0, "5", None, 10_001])
def test_bad_k(store, k):
    unchanged(store, lambda: store.query(GOOD, k=k), vs.InvalidArgumentError)
    unchanged(store, lambda: store.query_batch([GOOD], k=k), vs.InvalidArgumentError)


@pytest.mark.parametrize("flt", ["(x = 1", "x $regex 'a'", "x = ", "'; DROP TABLE", "__import__('os')",
                                 "__class__", "(" * 10_000 + "x = 1" + ")" * 10_000, "x = '" + "a" * 1_000_000 + "'",
                                 "", "x == 1", "x IN ()"])
def test_bad_filters(store, flt):
    unchanged(store, lambda: store.query(GOOD, filter=flt), vs.FilterSyntaxError)


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf"), 101 * 365.25 * 86400, "10", True])
def test_bad_ttl(store, ttl):
    unchanged(store, lambda: store.upsert("b", GOOD, ttl=ttl), vs.InvalidArgumentError)
    unchanged(store, lambda: store.set_ttl("a", ttl), vs.InvalidArgumentError)


def test_bad_batch_entries_change_nothing(store):
    result = None

    def call():
        nonlocal result
        result = store.batch_execute([vs.Upsert("b", [np.nan] * 4), vs.Delete("nope"), vs.UpdateMetadata("a", {1: 2})])

    before = dir_digest(store.path)
    call()
    assert result.succeeded == 0 and result.failed == 3
    assert dir_digest(store.path) == before


def test_open_options(tmp_path):
    p = str(tmp_path / "o")
    for kw, exc in [({"metric": "manhattan"}, vs.InvalidArgumentError), ({"index": "ivf"}, vs.InvalidArgumentError),
                    ({"dim": 0}, vs.InvalidArgumentError), ({"dim": 70_000}, vs.InvalidArgumentError),
                    ({"dim": "3"}, TypeError), ({"durability": "sometimes"}, vs.InvalidArgumentError),
                    ({"hnsw": {"m": 16}}, TypeError), ({"read_only": "yes"}, TypeError)]:
        with pytest.raises(exc):
            vs.VecStore.open(p, **kw)
    with pytest.raises(vs.InvalidArgumentError):
        vs.HNSWParams(m=1)


@pytest.mark.parametrize("metric", ["cosine", "dot", "euclidean"])
@pytest.mark.parametrize("bad", [[np.nan, 1, 2], [np.inf, 1, 2], [1e39, 1, 2], [0.0, 0.0, 0.0], [1e-30, 0, 0],
                                 [3e38, 3e38, 0]])
def test_float32_query_fast_path_refuses_what_the_full_check_refuses(tmp_path, metric, bad):
    from vecstore_ref.validation import validate_query_vector, validate_vector

    with np.errstate(over="ignore"):
        q = np.array(bad, dtype=np.float64).astype(np.float32)  # 1e39 becomes inf here, as it would for a user
    try:
        validate_vector(q, 3, metric)
    except vs.VecStoreError as exc:
        with pytest.raises(type(exc)):
            validate_query_vector(q, 3, metric)
    else:
        assert np.array_equal(validate_query_vector(q, 3, metric), q)
