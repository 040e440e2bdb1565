"""The filter language: every production, precedence, errors with positions, limits, the semantics table, and the
vectorized mask against the plain-Python evaluator on random metadata (hypothesis)."""

from __future__ import annotations

import doctest
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vecstore_ref as vs
import vecstore_ref.filter as filter_module
from vecstore_ref.filter import And, Comparison, Contains, In, Not, Or, literal_text, node_text
from vecstore_ref.metadata import MetadataColumns


def parse(text):
    return vs.parse_filter(text).ast


# --- grammar ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text,ast", [
    ("x = 1", Comparison("x", "=", 1)),
    ("x != 'a'", Comparison("x", "!=", "a")),
    ("x<2.5", Comparison("x", "<", 2.5)),
    ("x <= -3", Comparison("x", "<=", -3)),
    ("_y9 > +4e2", Comparison("_y9", ">", 400.0)),
    ("x >= .5", Comparison("x", ">=", 0.5)),
    ("x = 1.", Comparison("x", "=", 1.0)),
    ("x = 007", Comparison("x", "=", 7)),
    ("x = -1E-3", Comparison("x", "=", -0.001)),
    ("x = true", Comparison("x", "=", True)),
    ("x = FALSE", Comparison("x", "=", False)),
    ("x = Null", Comparison("x", "=", None)),
    ("x IN (1)", In("x", (1,))),
    ("x in ('a', 2, true, null)", In("x", ("a", 2, True, None))),
    ("x NOT IN (1, 2)", In("x", (1, 2), negated=True)),
    ("x not in(1)", In("x", (1,), negated=True)),
    ("x CONTAINS 'a'", Contains("x", "a")),
    ("x contains 3", Contains("x", 3)),
    ("NOT x = 1", Not(Comparison("x", "=", 1))),
    ("not not x = 1", Not(Not(Comparison("x", "=", 1)))),
    ("(x = 1)", Comparison("x", "=", 1)),
    ("((x = 1))", Comparison("x", "=", 1)),
    ("a = 1 AND b = 2 AND c = 3", And((Comparison("a", "=", 1), Comparison("b", "=", 2), Comparison("c", "=", 3)))),
    ("a = 1 or b = 2", Or((Comparison("a", "=", 1), Comparison("b", "=", 2)))),
    ("\t a=1\n\rAND\fb=2 ", And((Comparison("a", "=", 1), Comparison("b", "=", 2)))),
    ("Android = 1", Comparison("Android", "=", 1)),  # a keyword prefix is still a field name
    ("notes CONTAINS 'or'", Contains("notes", "or")),
])
def test_productions(text, ast):
    assert parse(text) == ast


def test_precedence_not_and_or():
    a, b, c = (Comparison(f, "=", 1) for f in "abc")
    assert parse("a = 1 OR NOT b = 1 AND c = 1") == Or((a, And((Not(b), c))))
    assert parse("NOT a = 1 AND b = 1") == And((Not(a), b))
    assert parse("a = 1 AND b = 1 OR c = 1") == Or((And((a, b)), c))
    assert parse("a = 1 AND (b = 1 OR c = 1)") == And((a, Or((b, c))))
    assert parse("NOT (a = 1 OR b = 1)") == Not(Or((a, b)))


@pytest.mark.parametrize("text,value", [
    ("''", ""), ("'it''s'", "it's"), ("''''", "'"), ("'a''''b'", "a''b"), ("'\"'", '"'), ("'é😀'", "é😀"),
    ("'AND OR NOT'", "AND OR NOT"), ("'a\\nb'", "a\\nb"), ("'x\x00y'", "x\x00y"), ("'('", "("),
])
def test_string_literals_and_escapes(text, value):
    assert parse(f"x = {text}") == Comparison("x", "=", value)


def test_literals_keep_int_and_float_apart():
    assert type(parse("x = 1").literal) is int
    assert type(parse("x = 1.0").literal) is float
    assert parse("x = true").literal is True and type(parse("x IN (1, true)").literals[0]) is int
    assert parse("x = 123456789012345678901234567890").literal == 123456789012345678901234567890
    assert parse("x = 1e-400").literal == 0.0  # underflow is fine, overflow is not (below)


@pytest.mark.parametrize("text,position", [
    ("(x = 1", 6), ("x = 1)", 5), ("x $regex 'a'", 2), ("x = ", 4), ("x = 'abc", 4), ("= 1", 0),
    ("x == 1", 3), ("x IN ()", 6), ("x IN (1,)", 8), ("x NOT 1", 6), ("", 0), ("   ", 0), ("x = 1 AND", 9),
    ("__import__('os')", 10), ("'; DROP TABLE", 0), ("x = 1; DROP TABLE t", 5), ("x = nan", 4), ("x = inf", 4),
    ("x = 1e999", 4), ("x = -1e999", 4), ("x = 1e", 4), ("x = 1.2.3", 4), ("x = 12abc", 4), ("x = .", 4),
    ("x = -", 4), ("x ! 1", 2), ("x <> 1", 3), ("x = \"a\"", 4), ("and = 1", 0), ("x IN 1", 5),
    ("x IN (1 2)", 8), ("x = 1 x = 2", 6), ("(x = 1))", 7), ("x = 1 OR", 8), ("NOT", 3), ("x CONTAINS", 10),
    ("__class__", 9), ("x.y = 1", 1), ("{\"$gt\": \"a\"}", 0), ("{}", 0), ("x = ١", 4), ("é = 1", 0),
    ("x = 'a' \ud800", 8), ("x = '\udfff'", 5), ("x = " + "9" * 4301, 4), ("x = " + "9" * 400, 4),
    ("x IN (1, 2", 10), ("x NOT CONTAINS 'a'", 6),
])
def test_syntax_errors_carry_the_position(text, position):
    with pytest.raises(vs.FilterSyntaxError) as info:
        vs.parse_filter(text)
    err = info.value
    assert err.position == position, str(err)
    assert isinstance(err, vs.InvalidInputError) and isinstance(err, ValueError)
    assert f"(at position {position})" in str(err)


def test_non_str_filters_are_syntax_errors():
    for bad in (5, None, b"x = 1", {"x": 1}, ["x = 1"]):
        with pytest.raises(vs.FilterSyntaxError) as info:
            vs.parse_filter(bad)
        assert info.value.position == 0


def test_limits():
    vs.parse_filter("(" * 64 + "x = 1" + ")" * 64)
    vs.parse_filter("NOT " * 64 + "x = 1")
    vs.parse_filter("NOT (" * 32 + "x = 1" + ")" * 32)
    with pytest.raises(vs.FilterSyntaxError, match="nesting"):
        vs.parse_filter("(" * 65 + "x = 1" + ")" * 65)
    with pytest.raises(vs.FilterSyntaxError, match="nesting"):
        vs.parse_filter("NOT " * 65 + "x = 1")
    with pytest.raises(vs.FilterSyntaxError, match="nesting"):
        vs.parse_filter("NOT (" * 33 + "x = 1" + ")" * 33)  # parentheses and NOTs count together
    text = "x = '" + "a" * (8192 - 6) + "'"
    assert len(text) == 8192 and vs.parse_filter(text).ast.literal == "a" * 8186
    with pytest.raises(vs.FilterSyntaxError, match="8,192") as info:
        vs.parse_filter(text + " ")
    assert info.value.position == 8192
    wide = "x = '" + "é" * 4093 + "'"  # 4,099 characters, 8,192 bytes as UTF-8: the limit counts bytes
    assert len(wide.encode()) == 8192 and vs.parse_filter(wide).ast.literal == "é" * 4093
    with pytest.raises(vs.FilterSyntaxError, match="8,193 bytes") as info:
        vs.parse_filter(wide + " ")
    assert info.value.position == len(wide)  # the space, the first character past the limit


@pytest.mark.parametrize("text", ["(" * 10_000 + "x = 1" + ")" * 10_000, "(" * 4000 + "x = 1" + ")" * 4000,
                                  "NOT " * 2000 + "x = 1", "NOT (" * 1300 + "x = 1" + ")" * 1300, "(" * 1_000_000,
                                  "x = '" + "a" * 1_000_000 + "'", "x = 1 AND " * 100_000 + "x = 1"],
                         ids=["parens-10k", "parens-4k", "not-2k", "not-paren-1.3k", "open-1M", "string-1MB", "and-100k"])
def test_deep_or_huge_input_fails_fast_without_recursion_error(text):
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(600)  # the 64-level limit keeps the parser far from it
    try:
        with pytest.raises(vs.FilterSyntaxError):
            vs.parse_filter(text)
        vs.parse_filter("(" * 63 + "NOT x = 1" + ")" * 63).mask(MetadataColumns(), 4)
    finally:
        sys.setrecursionlimit(old)


def test_injection_attempts_are_plain_data():
    # A string literal is data: nothing is evaluated, the text is only compared.
    f = vs.parse_filter("x = '__import__(\"os\").system(\"false\")' OR y = '; DROP TABLE t; --'")
    assert f.ast.items[0].literal == '__import__("os").system("false")'
    cols = MetadataColumns()
    cols.set(0, {"x": '__import__("os").system("false")'})
    assert f.mask(cols, 1).tolist() == [True]


@given(st.text(st.characters(codec=None), max_size=60))
@settings(max_examples=500, deadline=None)
def test_any_text_parses_or_raises_a_syntax_error(text):
    try:
        f = vs.parse_filter(text)
    except vs.FilterSyntaxError as err:
        assert 0 <= err.position <= len(text)
        return
    assert f.text == text


# --- printing ---------------------------------------------------------------------------------------------------


def test_clauses_fields_and_text():
    f = vs.parse_filter("lang = 'it''s' AND NOT (year < 2020 OR tags CONTAINS 'x') AND k NOT IN (1, null)")
    assert f.clauses() == ["lang = 'it''s'", "year < 2020", "tags CONTAINS 'x'", "k NOT IN (1, null)"]
    assert f.fields() == {"lang", "year", "tags", "k"}
    assert str(f) == f.text
    assert vs.parse_filter(node_text(f.ast)).ast == f.ast
    hash(f)
    with pytest.raises(AttributeError):
        f.text = "x = 2"


def test_doctests():
    assert doctest.testmod(filter_module).failed == 0


# --- semantics ------------------------------------------------------------------------------------------------------

MD = {"n": 3, "f": 2.5, "s": "abc", "b": True, "z": None, "t": ["x", 1, 2.5, True, None], "e": [], "u": "ÿ"}

SEMANTICS = [
    # numbers: int and float alike
    ("n = 3", True), ("n = 3.0", True), ("n != 3", False), ("n < 3.5", True), ("n <= 3", True), ("n > 3", False),
    ("f >= 2.5", True), ("f > 2", True), ("n = '3'", False), ("n = true", False), ("n != 'a'", False),
    # strings: by code point
    ("s = 'abc'", True), ("s != 'abd'", True), ("s < 'abd'", True), ("s < 'B'", False), ("s > 'ab'", True),
    ("u > 'z'", True), ("s = 3", False), ("s CONTAINS 'bc'", True), ("s CONTAINS ''", True),
    ("s CONTAINS 'x'", False), ("s CONTAINS 1", False),
    # booleans: not numbers, only = and !=
    ("b = true", True), ("b != false", True), ("b = 1", False), ("b > false", False), ("b IN (1)", False),
    # null
    ("z = null", True), ("z != null", False), ("n != null", True), ("t != null", True), ("zz = null", False),
    ("zz != null", False), ("z < null", False), ("z = 0", False), ("z = false", False),
    # missing fields and NOT
    ("zz = 1", False), ("zz != 1", False), ("NOT zz = 1", True), ("NOT zz != 1", True), ("NOT n = 3", False),
    # IN and NOT IN
    ("n IN (1, 3)", True), ("n IN ('3', true)", False), ("s IN ('abc', 1)", True), ("z IN (null)", True),
    ("n NOT IN (1, 3)", False), ("zz NOT IN (1)", True), ("s NOT IN (3)", True),
    # CONTAINS on lists: same kind, 1 matches 1.0
    ("t CONTAINS 'x'", True), ("t CONTAINS 1.0", True), ("t CONTAINS 2.5", True), ("t CONTAINS true", True),
    ("t CONTAINS null", True), ("t CONTAINS 'X'", False), ("t CONTAINS 2", False), ("t CONTAINS ''", False),
    ("e CONTAINS null", False), ("t = 'x'", False), ("e = null", False), ("n CONTAINS 3", False),
    # combinations
    ("n = 3 AND s = 'abc'", True), ("n = 4 OR s = 'abc'", True), ("NOT (n = 4 OR s = 'x')", True),
    ("n = 3 AND NOT b = true", False),
]


@pytest.mark.parametrize("text,want", SEMANTICS)
def test_semantics_table(text, want):
    f = vs.parse_filter(text)
    assert f.matches(MD) is want
    cols = MetadataColumns(1)
    cols.set_many(np.array([0, 1, 2]), [{"other": 1}, MD, None])
    got = f.mask(cols, 4).tolist()
    assert got[1] is want
    assert got[0] == f.matches({"other": 1}) and got[2] == f.matches(None) and got[3] is False


def test_a_bool_list_item_is_not_a_number():
    cols = MetadataColumns()
    cols.set_many(np.arange(3), [{"t": [True]}, {"t": [1]}, {"t": [0.0, False]}])
    assert vs.parse_filter("t CONTAINS 1").mask(cols, 3).tolist() == [False, True, False]
    assert vs.parse_filter("t CONTAINS true").mask(cols, 3).tolist() == [True, False, False]
    assert vs.parse_filter("t CONTAINS 0").mask(cols, 3).tolist() == [False, False, True]
    assert vs.parse_filter("t CONTAINS false").mask(cols, 3).tolist() == [False, False, True]


def test_clause_masks_say_which_leaves_held():
    cols = MetadataColumns()
    cols.set_many(np.arange(3), [{"a": 1, "b": "x"}, {"a": 2}, {"b": "x"}])
    f = vs.parse_filter("a = 1 OR NOT b = 'x'")
    masks = f.clause_masks(cols, 4)
    assert [m.tolist() for m in masks] == [[True, False, False, False], [True, False, True, False]]
    assert f.mask(cols, 4).tolist() == [True, True, False, False]


# --- the mask against the reference evaluator -----------------------------------------------------------------------

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.integers(),
                    st.sampled_from([0.5, 2.0, -1.5, -0.0, 1e300, 2**53 + 1, 10**400, -(10**400)]),
                    st.floats(allow_nan=False, allow_infinity=False),
                    st.sampled_from(["", "a", "ab", "b", "ba", "é", "A", "a'b", "😀"]), st.text(max_size=3))
METADATA = st.one_of(st.none(), st.dictionaries(st.sampled_from(["x", "y", "z"]),
                                                st.one_of(SCALARS, st.lists(SCALARS, max_size=4)), max_size=3))
LITERALS = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from([0.5, 2.0, -0.0, 1e300, 2**53]),
                     st.floats(allow_nan=False, allow_infinity=False, width=32),
                     st.sampled_from(["a", "b", "ab", "", "é", "a'b"]), st.text(max_size=2))


@st.composite
def filters(draw, depth=0):
    field = draw(st.sampled_from(["x", "y", "z", "w"]))
    kind = draw(st.integers(0, 6 if depth < 3 else 3))
    if kind == 0:
        op = draw(st.sampled_from(["=", "!=", "<", "<=", ">", ">="]))
        return f"{field} {op} {literal_text(draw(LITERALS))}"
    if kind == 1:
        items = ", ".join(literal_text(v) for v in draw(st.lists(LITERALS, min_size=1, max_size=3)))
        return f"{field} {draw(st.sampled_from(['IN', 'NOT IN', 'in', 'not In']))} ({items})"
    if kind in (2, 3):
        return f"{field} {draw(st.sampled_from(['CONTAINS', 'contains']))} {literal_text(draw(LITERALS))}"
    if kind == 4:
        return f"NOT ({draw(filters(depth + 1))})"
    op = draw(st.sampled_from(["AND", "OR", "and", "Or"]))
    return f"({draw(filters(depth + 1))}) {op} ({draw(filters(depth + 1))})"


@settings(max_examples=400, deadline=None)
@given(mds=st.lists(METADATA, max_size=12), text=filters(), extra=st.integers(0, 3))
def test_vectorized_mask_equals_reference_evaluator(mds, text, extra):
    f = vs.parse_filter(text)
    cols = MetadataColumns(2)
    cols.set_many(np.arange(len(mds)), mds)
    n = len(mds) + extra  # slots beyond those set are never matched
    assert f.mask(cols, n).tolist() == [f.matches(md) for md in mds] + [False] * extra
    for leaf_text, m in zip(f.clauses(), f.clause_masks(cols, n)):
        leaf = vs.parse_filter(leaf_text)
        assert m.tolist() == [leaf.matches(md) for md in mds] + [False] * extra


@settings(max_examples=200, deadline=None)
@given(text=filters())
def test_printed_tree_parses_back_to_the_same_tree(text):
    ast = parse(text)
    assert parse(node_text(ast)) == ast
    assert node_text(parse(node_text(ast))) == node_text(ast)  # also tells true from 1 (equal in Python)


# --- checking a filter against a store's fields -------------------------------------------------------------------


def test_check_against_reports_unknown_fields_and_kinds():
    kinds = {"lang": {"str"}, "year": {"num"}, "tags": {"list"}, "flag": {"bool", "null"}, "gone": {"null"}}
    assert vs.parse_filter("lang = 'en' AND year > 3 AND tags CONTAINS 1 AND flag = null").check_against(kinds) == []
    assert vs.parse_filter("lang CONTAINS 'e' AND flag != null AND flag IN (true)").check_against(kinds) == []
    cases = {
        "nope = 1": "'nope' is not in any record's metadata",
        "year > 'x'": "never str",
        "lang = 1": "never num",
        "year IN (1, 'a')": "never str",
        "year CONTAINS 1": "never a list",
        "lang CONTAINS 1": "never a list",
        "flag > true": "booleans compare only with = and !=",
        "year < null": "ordering against null",
        "year = null": "never null",
        "gone != null": "holds only null values",
        "NOT lang = true": "never bool",
    }
    for text, fragment in cases.items():
        problems = vs.parse_filter(text).check_against(kinds)
        assert len(problems) == 1 and fragment in problems[0], (text, problems)
    twice = vs.parse_filter("nope = 1 OR nope = 1 OR lang = 2").check_against(kinds)
    assert len(twice) == 2
