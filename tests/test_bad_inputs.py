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


@pytest.mark.parametrize("metric", ["dot", "euclidean"])
def test_a_norm_that_would_overflow_a_distance_is_refused_under_dot_and_euclidean(tmp_path, metric):
    """Two accepted vectors never give an infinite distance or score: under dot and euclidean a norm must stay
    below MAX_NORM (about 6.5e18). Refused in every path a vector comes in by, and nothing changes on disk."""
    from vecstore_ref.validation import MAX_NORM

    big = [1e19, 0.0, 0.0, 0.0]
    with vs.VecStore.open(str(tmp_path / "s"), dim=DIM, metric=metric, index="flat") as s:
        s.upsert("a", GOOD)
        before = dir_digest(s.path)
        for call in (lambda: s.upsert("b", big), lambda: s.upsert_many(["b", "c"], [GOOD, big]),
                     lambda: s.query(big), lambda: s.query(np.array(big, dtype=np.float32)),
                     lambda: s.query_batch(np.array([GOOD, big]))):
            with pytest.raises(vs.InvalidVectorError) as info:
                call()
            assert "norm" in str(info.value)
        assert "row 1" in str(pytest.raises(vs.InvalidVectorError, s.upsert_many, ["b", "c"], [GOOD, big]).value)
        got = s.batch_execute([vs.Upsert("c", np.array(big)), vs.Upsert("d", [1e10, 1e19, 0.0, 0.0])])
        assert got.succeeded == 0 and [e.type for e in got.errors] == ["InvalidVectorError"] * 2
        assert dir_digest(s.path) == before and s.ids() == ["a"]
        # Just below the bound: accepted, and the farthest two such vectors can be apart is still a finite score.
        edge = np.array([MAX_NORM * 0.999, 0.0, 0.0, 0.0], dtype=np.float32)
        s.upsert_many(["far", "near"], np.stack([edge, -edge]))
        for n in s.query(-edge, k=3) + s.query(edge, k=3):
            assert np.isfinite(n.score)
        assert s.query(-edge, k=1)[0].id == "near" and s.query(edge, k=1)[0].id == "far"
        got = s.query_batch(np.stack([edge, -edge]), k=3)
        assert np.isfinite(got.scores).all()


def test_cosine_takes_any_norm_that_is_finite_in_float32(tmp_path):
    with vs.VecStore.open(str(tmp_path / "s"), dim=DIM, metric="cosine", index="flat") as s:
        s.upsert("big", [1e19, 1e19, 0.0, 0.0])
        assert s.query([1e30, 1e30, 0.0, 0.0], k=1)[0].id == "big"


def test_a_batch_over_the_operation_limit_writes_nothing(tmp_path):
    from vecstore_ref._fs import dir_digest
    from vecstore_ref.config import MAX_BATCH_OPS

    with vs.VecStore.open(tmp_path / "s", dim=2, index="flat") as s:
        s.upsert("a", [1, 0])
        before = dir_digest(str(tmp_path / "s"))
        with pytest.raises(vs.InvalidBatchError, match="at most"):
            s.batch_execute([vs.Delete("a")] * (MAX_BATCH_OPS + 1))
        assert dir_digest(str(tmp_path / "s")) == before and "a" in s
        assert s.batch_execute([vs.Delete("a")] * MAX_BATCH_OPS).succeeded == 1


def test_wrong_types_of_metadata_batches_and_names_are_type_errors(tmp_path):
    """SPEC section 9: wrong types also subclass TypeError (beside ValueError), and change nothing."""
    from vecstore_ref._fs import dir_digest

    with vs.VecStore.open(tmp_path / "s", dim=2, index="flat") as s:
        s.upsert("a", [1, 0])
        before = dir_digest(str(tmp_path / "s"))
        calls = [
            (lambda: s.upsert("b", [1, 1], [("k", 1)]), vs.InvalidMetadataTypeError),
            (lambda: s.upsert("b", [1, 1], {"k": np.int64(1)}), vs.InvalidMetadataTypeError),
            (lambda: s.upsert("b", [1, 1], {1: 1}), vs.InvalidMetadataTypeError),
            (lambda: s.upsert("b", [1, 1], {"k": {"nested": 1}}), vs.InvalidMetadataTypeError),
            (lambda: s.update_metadata("a", [1]), vs.InvalidMetadataTypeError),
            (lambda: s.batch_execute(None), vs.InvalidBatchTypeError),
            (lambda: s.batch_execute(["upsert"]), vs.InvalidBatchTypeError),
        ]
        for call, cls in calls:
            with pytest.raises(cls) as info:
                call()
            assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)
        assert dir_digest(str(tmp_path / "s")) == before and list(s) == ["a"]
    with vs.NamespaceManager(tmp_path / "root") as m:
        with pytest.raises(vs.InvalidNameTypeError) as info:
            m.create_namespace(5)
        assert isinstance(info.value, TypeError)
        assert m.list_namespaces() == []
    codes = [getattr(vs, name).code for name in vs.errors.__all__]
    assert len(codes) == len(set(codes))


def test_an_empty_list_of_vectors_is_no_rows(tmp_path):
    with vs.VecStore.open(tmp_path / "s") as s:
        assert s.upsert_many([], []) == 0 and s.stats().dim is None
        s.upsert("a", [1, 2])
        assert s.upsert_many([], []) == 0 and list(s) == ["a"]
        assert s.query_batch([]).ids.shape == (0, 10)
        with pytest.raises(vs.InvalidArgumentError, match="1 ids but 0 vectors"):
            s.upsert_many(["x"], [])


def test_a_query_object_and_query_arguments_together_are_refused(tmp_path):
    with vs.VecStore.open(tmp_path / "s", dim=2, index="flat") as s:
        s.upsert_many(["a", "b", "c"], [[1, 0], [0, 1], [1, 1]])
        q = vs.Query([1, 0], k=2)
        assert len(s.query(q)) == 2
        for extra in ({"k": 3}, {"filter": "x = 1"}, {"ef": 8}):
            with pytest.raises(vs.InvalidArgumentError, match="not both"):
                s.query(q, **extra)
    with vs.ShardedStore.open(str(tmp_path / "sh"), 2, dim=2, index="flat") as ss:
        ss.upsert_many(["a", "b", "c"], [[1, 0], [0, 1], [1, 1]])
        assert len(ss.query(q)) == 2
        with pytest.raises(vs.InvalidArgumentError, match="not both"):
            ss.query(q, k=3)
