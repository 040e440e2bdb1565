"""The filter language: grammar, precedence, errors with positions, and the vectorized mask against the plain
Python evaluator on random metadata (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vecstore_ref as vs
from vecstore_ref.filter import And, Comparison, Contains, In, Not, Or
from vecstore_ref.metadata import MetadataColumns


def test_precedence_not_and_or():
    f = vs.parse_filter("a = 1 OR NOT b = 2 AND c = 3")
    assert f.ast == Or((Comparison("a", "=", 1), And((Not(Comparison("b", "=", 2)), Comparison("c", "=", 3)))))


def test_keywords_are_case_insensitive_and_literals_parse():
    f = vs.parse_filter("x in ('it''s', -1.5e3, TRUE, null) aNd y Contains 'z' and not z NOT IN (1)")
    first = f.ast.items[0]
    assert first == In("x", ("it's", -1500.0, True, None))
    assert f.ast.items[1] == Contains("y", "z")
    assert f.ast.items[2] == Not(In("z", (1,), negated=True))


@pytest.mark.parametrize("text,position", [
    ("(x = 1", 6), ("x = 1)", 5), ("x $regex 'a'", 2), ("x = ", 4), ("x = 'abc", 4), ("= 1", 0),
    ("x == 1", 3), ("x IN ()", 6), ("x IN (1,)", 8), ("x NOT 1", 6), ("", 0), ("x = 1 AND", 9),
    ("__import__('os')", 10), ("'; DROP TABLE", 0), ("x = nan", 4),
])
def test_syntax_errors_carry_the_position(text, position):
    with pytest.raises(vs.FilterSyntaxError) as info:
        vs.parse_filter(text)
    assert info.value.position == position, str(info.value)


def test_limits():
    with pytest.raises(vs.FilterSyntaxError):
        vs.parse_filter("(" * 65 + "x = 1" + ")" * 65)
    vs.parse_filter("(" * 60 + "x = 1" + ")" * 60)
    with pytest.raises(vs.FilterSyntaxError):
        vs.parse_filter("NOT " * 100 + "x = 1")
    with pytest.raises(vs.FilterSyntaxError):
        vs.parse_filter("x = '" + "a" * 9000 + "'")
    with pytest.raises(vs.FilterSyntaxError):
        vs.parse_filter(5)


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from([0.5, 2.0, -1.5]),
                    st.sampled_from(["", "a", "ab", "b", "ba", "é"]))
METADATA = st.one_of(st.none(), st.dictionaries(st.sampled_from(["x", "y", "z"]),
                                                st.one_of(SCALARS, st.lists(SCALARS, max_size=3)), max_size=3))
LITERALS = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from([0.5, 2.0]),
                     st.sampled_from(["a", "b", "ab", ""]))


def literal_text(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return "'" + v + "'"
    return repr(v)


@st.composite
def filters(draw, depth=0):
    field = draw(st.sampled_from(["x", "y", "z", "w"]))
    kind = draw(st.integers(0, 6 if depth < 2 else 3))
    if kind == 0:
        return f"{field} {draw(st.sampled_from(['=', '!=', '<', '<=', '>', '>=']))} {literal_text(draw(LITERALS))}"
    if kind == 1:
        items = ", ".join(literal_text(v) for v in draw(st.lists(LITERALS, min_size=1, max_size=3)))
        return f"{field} {draw(st.sampled_from(['IN', 'NOT IN']))} ({items})"
    if kind in (2, 3):
        return f"{field} CONTAINS {literal_text(draw(LITERALS))}"
    if kind == 4:
        return f"NOT ({draw(filters(depth + 1))})"
    op = draw(st.sampled_from(["AND", "OR"]))
    return f"({draw(filters(depth + 1))}) {op} ({draw(filters(depth + 1))})"


@settings(max_examples=300, deadline=None)
@given(mds=st.lists(METADATA, max_size=12), text=filters())
def test_vectorized_mask_equals_reference_evaluator(mds, text):
    f = vs.parse_filter(text)
    cols = MetadataColumns(4)
    cols.set_many(np.arange(len(mds)), mds)
    assert f.mask(cols, len(mds)).tolist() == [f.matches(md) for md in mds]


def test_overwritten_metadata_leaves_no_trace():
    cols = MetadataColumns(4)
    cols.set(0, {"t": ["x"], "n": 1, "s": "a"})
    cols.set(0, {"n": None})
    for text, want in [("t CONTAINS 'x'", False), ("n = 1", False), ("s = 'a'", False), ("n = null", True)]:
        assert vs.parse_filter(text).mask(cols, 1).tolist() == [want], text


def test_check_against_reports_unknown_fields_and_kinds():
    f = vs.parse_filter("lang = 'en' AND year > 'x' AND nope = 1")
    problems = f.check_against({"lang": {"str"}, "year": {"num"}})
    assert any("'nope'" in p for p in problems)
    assert any("'year'" in p and "never str" in p for p in problems)
    assert not any("'lang'" in p for p in problems)
