"""Arguments of the wrong kind get the typed error SPEC section 9 names, before anything changes: a wrong type is
also a `TypeError`, a `Query` never has arguments beside it silently ignored, and a bool is never a number."""

from __future__ import annotations

import os

import numpy as np
import pytest

import vecstore_ref as vs
from vecstore_ref._fs import dir_digest


@pytest.fixture
def store(tmp_path):
    s = vs.VecStore.open(tmp_path / "s", dim=3, index="flat")
    s.upsert("en", [1, 0, 0], {"lang": "en"})
    s.upsert("de", [0.9, 0.1, 0], {"lang": "de"})
    yield s
    s.close()


def test_a_query_object_with_arguments_beside_it_is_refused_by_every_entry_point(store):
    q = vs.Query([1, 0, 0], k=1)
    for extra in ({"filter": "lang = 'de'"}, {"k": 2}, {"ef": 16}):
        with pytest.raises(vs.InvalidArgumentError, match="not both"):
            store.query(q, **extra)
        with pytest.raises(vs.InvalidArgumentError, match="not both"):
            store.query_explain(q, **extra)
        est = store.estimate_query(q, **extra)
        assert not est.valid and any("not both" in e for e in est.errors)
    assert [h.id for h in store.query_explain(q).neighbors] == ["en"]
    assert store.estimate_query(q).valid


def test_a_query_object_beside_arguments_on_a_sharded_store(tmp_path):
    with vs.ShardedStore.open(tmp_path / "sh", n_shards=2, dim=3, index="flat") as s:
        s.upsert("a", [1, 0, 0])
        with pytest.raises(vs.InvalidArgumentError, match="not both"):
            s.query(vs.Query([1, 0, 0]), filter="x = 1")
        assert [h.id for h in s.query(vs.Query([1, 0, 0], k=1))] == ["a"]


@pytest.mark.parametrize("vector", [[0.5, True, False], [1.0, np.bool_(True), 0.0], (0, 1, False)], ids=repr)
def test_a_bool_inside_a_list_of_numbers_is_not_a_number(store, vector, tmp_path):
    before = dir_digest(store.path)
    with pytest.raises(vs.InvalidVectorTypeError, match="bool"):
        store.upsert("x", vector)
    with pytest.raises(vs.InvalidVectorTypeError):
        store.upsert_many(["x", "y"], [[1.0, 2.0, 3.0], list(vector)])
    with pytest.raises(vs.InvalidVectorTypeError):
        store.query(vector)
    result = store.batch_execute([vs.Upsert("x", vector)])
    assert result.failed == 1 and result.errors[0].type == "InvalidVectorTypeError"
    assert dir_digest(store.path) == before and "x" not in store
    store.upsert("ok", [0.5, 1, 0])  # ints and floats mixed are numbers


def test_bulk_and_path_arguments_of_the_wrong_type(store, tmp_path):
    for bad in (5, object(), "abc", {"lang": "en"}):
        with pytest.raises(vs.InvalidArgumentTypeError):
            store.upsert_many(["a"], [[1, 2, 3]], metadatas=bad)
    for bad in (None, 5, b"\xff"):
        with pytest.raises(vs.InvalidArgumentTypeError):
            store.export(bad)
        with pytest.raises(vs.InvalidArgumentTypeError):
            store.import_(bad)
    with pytest.raises(vs.InvalidArgumentError, match="NUL"):
        store.export(str(tmp_path / "a\x00b"))


@pytest.mark.parametrize("options", [{"metric": 3}, {"index": 3}, {"durability": None}, {"max_k": "10"},
                                     {"metric": ["cosine"]}, {"max_k": 2.0}], ids=repr)
def test_open_options_of_the_wrong_type_are_type_errors(tmp_path, options):
    with pytest.raises(vs.InvalidArgumentTypeError) as info:
        vs.VecStore.open(tmp_path / "s", dim=3, **options)
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("options", [{"metric": "hamming"}, {"index": "ivf"}, {"durability": "sometimes"},
                                     {"max_k": 0}], ids=repr)
def test_open_options_of_the_right_type_but_a_wrong_value_are_not_type_errors(tmp_path, options):
    with pytest.raises(vs.InvalidArgumentError) as info:
        vs.VecStore.open(tmp_path / "s", dim=3, **options)
    assert not isinstance(info.value, TypeError)


def test_maintenance_interval_of_the_wrong_type(store):
    with pytest.raises(vs.InvalidArgumentTypeError):
        vs.Maintenance(store, interval_s="60")
    with pytest.raises(vs.InvalidArgumentError) as info:
        vs.Maintenance(store, interval_s=-1)
    assert not isinstance(info.value, TypeError)


def test_a_filter_that_is_not_text_is_the_same_error_everywhere(store):
    """The filters guide: a filter that is not a `str` is a `FilterSyntaxError` at position 0 (and, SPEC 9, a
    `TypeError`), from `parse_filter` and from every query call alike."""
    calls = [lambda: vs.parse_filter(123), lambda: store.query([1, 0, 0], filter=123),
             lambda: store.query_batch(np.eye(3, dtype=np.float32), filter=["lang"]),
             lambda: store.query_explain([1, 0, 0], filter=1.5)]
    for call in calls:
        with pytest.raises(vs.FilterTypeError) as info:
            call()
        assert isinstance(info.value, vs.FilterSyntaxError) and isinstance(info.value, TypeError)
        assert info.value.position == 0
    est = store.estimate_query([1, 0, 0], filter=123)
    assert not est.valid


@pytest.mark.parametrize("path", ["", "a" * 256, "ok/" + "b" * 300 + "/c"])
def test_an_empty_or_unnameable_path_is_refused_before_anything_is_written(tmp_path, monkeypatch, path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(vs.InvalidArgumentError):
        vs.VecStore.open(path, dim=4)
    with pytest.raises(vs.InvalidArgumentError):
        vs.NamespaceManager(path)
    assert os.listdir(tmp_path) == []  # not even the current directory became a store


def test_flags_raw_bytes_and_fs_are_type_checked(tmp_path):
    with vs.VecStore.open(tmp_path / "s", dim=4, index="flat") as s:
        s.upsert("a", [1, 0, 0, 1])
        for flag in ("no", 1, None):
            with pytest.raises(vs.InvalidArgumentTypeError):
                s.get("a", include_deleted=flag)
        assert s.get("a", include_deleted=np.bool_(True)).id == "a"
        for raw in (b"\x01\x00\x00\x01", bytearray(b"\x01\x00\x00\x01"), memoryview(b"\x01\x00\x00\x01")):
            with pytest.raises(vs.InvalidVectorTypeError):
                s.upsert("b", raw)
        assert "b" not in s
    with pytest.raises(vs.InvalidArgumentTypeError):
        vs.VecStore.open(tmp_path / "t", dim=4, fs="x")
    assert not (tmp_path / "t").exists()


def test_max_k_has_a_ceiling_and_a_huge_k_never_pads_a_batch_to_k(tmp_path):
    from vecstore_ref.config import MAX_K, MAX_K_LIMIT

    with pytest.raises(vs.InvalidArgumentError):
        vs.VecStore.open(tmp_path / "s", dim=4, max_k=MAX_K_LIMIT + 1)
    assert not (tmp_path / "s").exists()
    with vs.VecStore.open(tmp_path / "s", dim=4, index="flat", max_k=MAX_K_LIMIT) as s:
        s.upsert_many(["a", "b"], [[1, 0, 0, 1], [1, 1, 0, 1]])
        for k in (MAX_K_LIMIT, 10**18, MAX_K + 1):
            r = s.query_batch([[1, 0, 0, 1]] * 3, k=k)
            assert r.ids.shape == (3, MAX_K) and r.n_found.tolist() == [2, 2, 2]  # not (3, k)
            assert r.ids[0, :2].tolist() == ["a", "b"] and r.ids[0, 2] is None
        assert s.query_batch([[1, 0, 0, 1]], k=20).ids.shape == (1, 20)  # up to MAX_K: padded to k, as before
        assert len(s.query([1, 0, 0, 1], k=MAX_K_LIMIT)) == 2
        with pytest.raises(vs.InvalidArgumentError):
            s.query_batch([[1, 0, 0, 1]], k=MAX_K_LIMIT + 1)
