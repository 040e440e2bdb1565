"""Metadata: validation of every bad input of the catalogue, and the columnar layout checked against a dict model."""

from __future__ import annotations

import datetime
import enum
import json
import re
import sys
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import vecstore_ref as vs
from vecstore_ref.config import MAX_METADATA_BYTES
from vecstore_ref.filter import parse_filter
from vecstore_ref.metadata import MetadataColumns, _check_scalar, validate_metadata


def nested_dict(depth: int) -> dict:
    d: dict = {"leaf": 1}
    for _ in range(depth):
        d = {"a": d}
    return d


def nested_list(depth: int) -> list:
    x: list = [1]
    for _ in range(depth):
        x = [x]
    return x


class Color(enum.IntEnum):
    RED = 1


class Name(str):
    pass


# --- validate_metadata: the bad-input catalogue (RELIABILITY.md section 3) -------------------------------------------

BAD = {
    "not a dict: list": [1, 2],
    "not a dict: str": "x",
    "not a dict: tuple of pairs": (("a", 1),),
    "bytes value": {"a": b"x"},
    "bytearray value": {"a": bytearray(b"x")},
    "set value": {"a": {1, 2}},
    "frozenset value": {"a": frozenset()},
    "tuple value": {"a": (1, 2)},
    "tuple key": {(1, 2): "x"},
    "int key": {1: "x"},
    "None key": {None: "x"},
    "bytes key": {b"a": 1},
    "np.float32": {"a": np.float32(1.0)},
    "np.float64 (a float subclass)": {"a": np.float64(1.0)},
    "np.int64": {"a": np.int64(1)},
    "np.bool_": {"a": np.bool_(True)},
    "np.str_ (a str subclass)": {"a": np.str_("x")},
    "np.ndarray": {"a": np.zeros(2)},
    "datetime": {"a": datetime.datetime(2024, 1, 1)},
    "date": {"a": datetime.date(2024, 1, 1)},
    "complex": {"a": 1j},
    "object": {"a": object()},
    "IntEnum": {"a": Color.RED},
    "str subclass": {"a": Name("x")},
    "NaN": {"a": float("nan")},
    "inf": {"a": float("inf")},
    "-inf": {"a": float("-inf")},
    "NaN in a list": {"a": [1.0, float("nan")]},
    "nested dict": {"a": {"b": 1}},
    "nested dict 1000 deep": nested_dict(1000),
    "nested list": {"a": [[1]]},
    "nested list 1000 deep": {"a": nested_list(1000)},
    "dict in a list": {"a": [{"b": 1}]},
    "empty key": {"": 1},
    "key of 257 chars": {"k" * 257: 1},
    "lone surrogate in a key": {"\ud800": 1},
    "lone surrogate in a value": {"a": "x\udfff"},
    "lone surrogate in a list item": {"a": ["ok", "\ud83d"]},
    "list of 1025 items": {"a": list(range(1025))},
    "over 64 KiB": {"a": "x" * 70_000},
    "over 64 KiB in many keys": {f"k{i}": "y" * 100 for i in range(700)},
    "over 64 KiB of escapes": {"a": "\x01" * 11_000},
    "over 64 KiB of 4-byte characters": {"a": "\U0001F600" * 16_400},
    "int of 4301 digits": {"a": 10**4300},
    "negative int of 4301 digits": {"a": -(10**4300)},
    "int of 5000 digits": {"a": 10**5000},
}


@pytest.mark.parametrize("md", list(BAD.values()), ids=list(BAD))
def test_bad_metadata_is_refused_with_a_typed_error(md):
    with pytest.raises(vs.InvalidMetadataError) as info:
        validate_metadata(md)
    assert isinstance(info.value, ValueError) and isinstance(info.value, vs.InvalidInputError)
    json.dumps({"error": str(info.value)}, ensure_ascii=False).encode("utf-8")  # the message itself is clean


@pytest.mark.parametrize("md,key", [({"ok": 1, "price": np.float32(1)}, "'price'"),
                                    ({"ok": 1, "tags": ["a", b"b"]}, "['tags'][1] is a bytes"),
                                    ({"when": datetime.datetime(2024, 1, 1)}, "'when'"),
                                    ({"x" * 300: 1}, "'xxxx"),
                                    ({"score": float("nan")}, "'score'")])
def test_the_message_names_the_key(md, key):
    with pytest.raises(vs.InvalidMetadataError, match=re.escape(key)):
        validate_metadata(md)


def test_numpy_scalars_get_a_hint():
    with pytest.raises(vs.InvalidMetadataError, match=r"\.item\(\)"):
        validate_metadata({"a": np.float32(1)})


def test_deep_nesting_never_raises_recursion_error():
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(200)
    try:
        for md in (nested_dict(10_000), {"a": nested_list(10_000)}):
            with pytest.raises(vs.InvalidMetadataError):
                validate_metadata(md)
    finally:
        sys.setrecursionlimit(old)


def test_good_metadata_comes_back_equal_and_owned():
    tags = ["a", 1, 2.5, True, None]
    md = {"s": "é😀", "i": -3, "f": 0.5, "b": False, "n": None, "tags": tags, "empty": [], "k" * 256: 1}
    out = validate_metadata(md)
    assert out == md and out is not md
    assert out["tags"] is not tags
    tags.append("later")
    md["s"] = "changed"
    assert out["tags"] == ["a", 1, 2.5, True, None] and out["s"] == "é😀"
    assert validate_metadata(None) is None
    assert validate_metadata({}) == {}
    assert validate_metadata(OrderedDict(a=1)) == {"a": 1} and type(validate_metadata(OrderedDict(a=1))) is dict


def test_limits_are_exact():
    overhead = len(json.dumps({"a": ""}, separators=(",", ":")))  # '{"a":""}': compact, as the store writes it
    at_limit = {"a": "x" * (MAX_METADATA_BYTES - overhead)}
    assert validate_metadata(at_limit) == at_limit
    with pytest.raises(vs.InvalidMetadataError, match="65,537 bytes"):
        validate_metadata({"a": "x" * (MAX_METADATA_BYTES - overhead + 1)})
    two_bytes = {"a": "é" * ((MAX_METADATA_BYTES - overhead) // 2)}  # bytes of UTF-8, not characters
    assert validate_metadata(two_bytes) == two_bytes
    with pytest.raises(vs.InvalidMetadataError):
        validate_metadata({"a": "é" * ((MAX_METADATA_BYTES - overhead) // 2 + 1)})
    assert validate_metadata({"a": list(range(1024))})["a"] == list(range(1024))
    big = 10**4300 - 1  # 4,300 digits: the most JSON readers accept
    assert json.loads(json.dumps(validate_metadata({"a": big}))) == {"a": big}
    assert validate_metadata({"a": -big}) == {"a": -big}


def test_the_limit_is_measured_on_compact_json():
    """5,000 small ints are 62,781 bytes as the store writes them (compact) but 72,780 with spaces after , and :."""
    md = {f"k{i}": i for i in range(5000)}
    compact = len(json.dumps(md, separators=(",", ":")))
    assert compact <= MAX_METADATA_BYTES < len(json.dumps(md))
    assert validate_metadata(md) == md
    over = {f"k{i}": i for i in range(5300)}
    with pytest.raises(vs.InvalidMetadataError, match=f"{len(json.dumps(over, separators=(',', ':'))):,} bytes"):
        validate_metadata(over)


SCALAR_ANY = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                       st.text(st.characters(codec=None), max_size=20), st.binary(max_size=4))
VALUE_ANY = st.one_of(SCALAR_ANY, st.lists(SCALAR_ANY, max_size=5), st.tuples(SCALAR_ANY),
                      st.dictionaries(st.text(max_size=3), SCALAR_ANY, max_size=2))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.one_of(st.text(st.characters(codec=None), max_size=8), st.integers()), VALUE_ANY,
                       max_size=5))
def test_validation_accepts_exactly_what_json_round_trips(md):
    try:
        out = validate_metadata(md)
    except vs.InvalidMetadataError:
        return
    text = json.dumps(out, allow_nan=False, ensure_ascii=False)
    assert json.loads(text.encode("utf-8").decode("utf-8")) == out == md
    assert len(text.encode("utf-8")) <= MAX_METADATA_BYTES


@given(st.one_of(st.none(), st.booleans(), st.integers(-(10**4299), 10**4299),
                 st.floats(allow_nan=False, allow_infinity=False), st.text(st.characters(codec="utf-8"))))
def test_size_bound_is_an_upper_bound(value):
    assert len(json.dumps(value, ensure_ascii=False).encode("utf-8")) <= _check_scalar(value, "x")


# --- MetadataColumns ----------------------------------------------------------------------------------------------


def test_get_returns_a_copy_of_what_was_set():
    cols = MetadataColumns(2)
    md = {"tags": ["a"], "n": 1}
    cols.set(5, md)  # beyond the capacity: grows
    got = cols.get(5)
    assert got == md and got is not md
    got["tags"].append("b")
    assert cols.get(5) == {"tags": ["a"], "n": 1}
    assert cols.get(0) is None and cols.get(10**6) is None and cols.get(-1) is None
    assert cols.capacity >= 6


def test_set_replaces_entirely_and_clear_forgets():
    cols = MetadataColumns(4)
    cols.set(0, {"t": ["x"], "n": 1, "s": "a", "b": True, "z": None})
    cols.set(0, {"n": None})
    for text, want in [("t CONTAINS 'x'", False), ("n = 1", False), ("s = 'a'", False), ("b = true", False),
                       ("z = null", False), ("n = null", True), ("NOT s = 'a'", True)]:
        assert parse_filter(text).mask(cols, 1).tolist() == [want], text
    cols.clear(0)
    assert cols.get(0) is None and len(cols) == 0
    assert parse_filter("NOT s = 'a'").mask(cols, 1).tolist() == [False]  # no record, no match


def test_set_many_last_wins_for_a_repeated_slot():
    cols = MetadataColumns(4)
    cols.set_many(np.array([1, 2, 1]), [{"a": 1}, {"a": 2}, {"a": "x"}])
    assert cols.get(1) == {"a": "x"} and cols.get(2) == {"a": 2}
    assert parse_filter("a = 1").mask(cols, 3).tolist() == [False, False, False]
    with pytest.raises(vs.InvalidMetadataError):
        cols.set_many(np.array([1, 2]), [{"a": 1}])


def test_fields_report_every_kind_held():
    cols = MetadataColumns()
    cols.set_many(np.arange(5), [{"a": 1}, {"a": 2.5, "b": "x"}, {"a": True}, {"a": None, "c": []}, None])
    assert cols.fields() == {"a": {"num", "bool", "null"}, "b": {"str"}, "c": {"list"}}


def test_numbers_are_float64_and_huge_ints_compare_as_infinity():
    cols = MetadataColumns()
    cols.set_many(np.arange(4), [{"x": 10**400}, {"x": -(10**400)}, {"x": 2**53 + 1}, {"x": [10**400, 1]}])
    f = parse_filter("x > 1e308")
    assert f.mask(cols, 4).tolist() == [True, False, False, False] == [f.matches(cols.get(i)) for i in range(4)]
    g = parse_filter("x = 9007199254740992")  # 2**53: 2**53 + 1 rounds to it as a double
    assert g.mask(cols, 4).tolist() == [False, False, True, False] == [g.matches(cols.get(i)) for i in range(4)]
    h = parse_filter("x CONTAINS 1.0")
    assert h.mask(cols, 4).tolist() == [False, False, False, True]
    cols.set(0, {"x": [2**53 + 1]})  # list items compare as doubles too
    assert parse_filter("x CONTAINS 9007199254740992").mask(cols, 1).tolist() == [True]


def test_overwritten_lists_do_not_pile_up():
    cols = MetadataColumns(8)
    for i in range(2000):
        cols.set(i % 8, {"tags": [f"t{i}", "same", i]})
    field = cols.column("tags")
    assert field.n_pairs <= 3 * 8 + 8192  # stale pairs are dropped once they outnumber the live ones
    f = parse_filter("tags CONTAINS 'same'")
    assert f.mask(cols, 8).all()
    assert parse_filter("tags CONTAINS 't0'").mask(cols, 8).sum() == 0
    assert parse_filter("tags CONTAINS 't1999'").mask(cols, 8).tolist() == [False] * 7 + [True]


def test_take_renumbers_and_keeps_every_answer():
    rng = np.random.default_rng(3)
    words = ["a", "b", "ab", "é", ""]
    mds = []
    for i in range(300):
        md = {}
        if i % 3:
            md["n"] = int(rng.integers(-5, 5)) if i % 2 else float(rng.normal())
        if i % 4:
            md["s"] = words[i % len(words)]
        if i % 5 == 0:
            md["tags"] = [words[j % 5] for j in range(i % 4)] + [i % 3]
        if i % 7 == 0:
            md["b"] = bool(i % 2)
        mds.append(md if i % 11 else None)
    cols = MetadataColumns(16)
    cols.set_many(np.arange(300), mds)
    for i in range(0, 300, 9):  # overwrite some: stale pairs and dead strings
        cols.set(i, {"s": f"gone{i}", "tags": ["x"]})
        mds[i] = {"s": f"gone{i}", "tags": ["x"]}
    cols.set(10, {"tags": ["b", "new"]})  # a kept slot whose old list pairs are now stale
    mds[10] = {"tags": ["b", "new"]}
    cols.clear(299)
    keep = np.array([s for s in range(300) if s % 9 != 0 and s != 299])[::-1].copy()  # any order
    new = cols.take(keep)
    live_items = sum(len(mds[s]["tags"]) for s in keep if mds[s] and "tags" in mds[s])
    assert new.column("tags").n_pairs == live_items  # stale pairs are not carried over
    assert [new.get(i) for i in range(keep.size)] == [mds[s] for s in keep]
    assert new.fields()["s"] == {"str"} and "gone9" not in new.column("s").code_of  # vocabulary compacted
    for text in ["n < 0", "s >= 'ab'", "tags CONTAINS 'a'", "tags CONTAINS 2", "b != true", "s CONTAINS 'b'",
                 "NOT n = null", "tags CONTAINS 'x'"]:
        f = parse_filter(text)
        assert f.mask(new, keep.size).tolist() == [f.matches(mds[s]) for s in keep], text
        assert f.mask(new, keep.size).tolist() == f.mask(cols, 300)[keep].tolist(), text
    with pytest.raises(vs.InvalidMetadataError):
        cols.take(np.array([1, 1]))
    with pytest.raises(vs.InvalidMetadataError):
        cols.take(np.array([cols.capacity]))
    assert len(cols.take(np.zeros(0, dtype=np.int64))) == 0


def test_json_list_round_trip():
    cols = MetadataColumns()
    mds = [{"a": 1, "t": ["x", 2.5, None]}, None, {}, {"s": "é'\"\n"}]
    cols.set_many(np.arange(4), mds)
    cols.clear(1)
    texts = cols.to_json_list(6)
    assert texts[1] is None and texts[4] is None and texts[5] is None
    back = MetadataColumns.from_json_list(texts)
    assert [back.get(i) for i in range(6)] == [mds[0], None, {}, mds[3], None, None]
    f = parse_filter("NOT a = 1")
    assert f.mask(back, 6).tolist() == f.mask(cols, 6).tolist() == [False, False, True, True, False, False]
    for bad in ['{"a": NaN}', "{", '{"a": {"b": 1}}', "[1]", '{"a": ' + "[" * 5000 + "]" * 5000 + "}"]:
        with pytest.raises(vs.InvalidMetadataError):
            MetadataColumns.from_json_list([bad])


# --- a state machine: the columns against a dict model, judged by random filters ----------------------------------

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from([0.5, -1.5, 3.0, 2**60, -(10**400)]),
                    st.sampled_from(["", "a", "ab", "b", "é", "A"]))
MDS = st.one_of(st.none(), st.dictionaries(st.sampled_from(["x", "y", "z"]),
                                           st.one_of(SCALARS, st.lists(SCALARS, max_size=3)), max_size=3))
PROBES = ["x = 1", "x != 'a'", "x < 'b'", "y >= 0", "x = true", "y != false", "z = null", "z != null",
          "x CONTAINS 'a'", "y CONTAINS 1", "z CONTAINS null", "NOT x IN (1, 'a', null)", "x > -1e300",
          "y CONTAINS false", "x < 0.5 OR NOT z CONTAINS ''"]


class ColumnsMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.cols = MetadataColumns(2)
        self.model: dict[int, dict | None] = {}

    @rule(slot=st.integers(0, 20), md=MDS)
    def set_one(self, slot, md):
        self.cols.set(slot, md)
        self.model[slot] = md

    @rule(pairs=st.lists(st.tuples(st.integers(0, 20), MDS), max_size=8))
    def set_many(self, pairs):
        self.cols.set_many(np.array([p[0] for p in pairs], dtype=np.int64), [p[1] for p in pairs])
        self.model.update(pairs)

    @rule(slot=st.integers(0, 20))
    def clear(self, slot):
        self.cols.clear(slot)
        self.model.pop(slot, None)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def compact(self, data):
        keep = data.draw(st.permutations(sorted(self.model)))
        keep = keep[: data.draw(st.integers(0, len(keep)))]
        self.cols = self.cols.take(np.array(keep, dtype=np.int64))
        self.model = {i: self.model[s] for i, s in enumerate(keep)}

    @invariant()
    def agrees_with_the_model(self):
        n = 22
        for s in range(n):
            assert self.cols.get(s) == self.model.get(s)
        for text in PROBES:
            f = parse_filter(text)
            want = [s in self.model and f.matches(self.model[s]) for s in range(n)]
            assert f.mask(self.cols, n).tolist() == want, text
        kinds = self.cols.fields()
        for md in self.model.values():
            for key, value in (md or {}).items():
                kind = ("list" if isinstance(value, list) else "null" if value is None else "bool"
                        if isinstance(value, bool) else "str" if isinstance(value, str) else "num")
                assert kind in kinds[key]


ColumnsMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
TestColumnsMachine = ColumnsMachine.TestCase


def test_assigned_and_capacity_edges():
    cols = MetadataColumns(1)
    assert cols.assigned(3).tolist() == [False, False, False]
    cols.set(0, None)
    assert cols.assigned(3).tolist() == [True, False, False]
    f = parse_filter("NOT x = 1")
    assert f.mask(cols, 3).tolist() == [True, False, False]  # beyond the capacity: False, even under NOT
    assert f.mask(cols, 0).shape == (0,)


def test_result_texts_gathered_by_the_kernel_equal_the_python_loop():
    """A query's results read their metadata rows through one kernel call into one buffer; every row (with text,
    set to None, never set, beyond the columns' capacity) must come back as the row-by-row reading gives it,
    also when the texts need more than the first buffer."""
    from vecstore_ref.columns import _TEXT_BUFFER

    cols = MetadataColumns(64)
    rng = np.random.default_rng(5)
    for s in range(40):
        if s % 5 == 0:
            continue  # never set
        cols.set(s, None if s % 7 == 0 else {"i": s, "pad": "x" * int(rng.integers(0, 300)), "t": ["a", "é"]})
    big = {"pad": "y" * (_TEXT_BUFFER + 10)}
    cols.set(41, big)
    for trial in range(50):
        slots = rng.integers(0, 70, size=int(rng.integers(1, 12))).astype(np.int32)
        if trial % 10 == 0:
            slots = np.array([41, 3, 41], dtype=np.int32)  # more than one buffer
        listed = slots.tolist()
        fast = cols.texts_of(listed, slots)
        slow = cols.texts_of(listed)
        assert fast == slow
        assert [None if t is None else json.loads(t) for t in fast] == [cols.get(s) if s < cols.capacity else None
                                                                       for s in listed]


def test_result_texts_kernel_never_reads_past_the_buffer():
    """Offsets that point outside the text buffer (a broken invariant) make the kernel refuse, not read out of
    bounds; the texts then come from the row-by-row reading, which slices what is there."""
    cols = MetadataColumns(8)
    cols.set(1, {"a": 1})
    cols.set(2, {"b": 2})
    cols._length[2] = 10**6  # beyond the buffer
    slots = np.array([1, 2], dtype=np.int32)
    assert cols.texts_of([1, 2], slots) == cols.texts_of([1, 2])
    from vecstore_ref.columns import _BAD_ROW, _gather_texts

    assert _gather_texts(slots, cols._row_state, cols._start, cols._length, cols._bytes.buf,
                         np.empty(16, dtype=np.uint8), np.empty(4, dtype=np.int64)) == _BAD_ROW
