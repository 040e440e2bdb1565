"""The filter language: a closed grammar, tokenized and parsed by hand, evaluated as a vectorized mask.

Nothing here ever calls ``eval``: text becomes tokens, tokens become a tree of frozen dataclasses, and the tree
becomes numpy expressions over `MetadataColumns` (`vecstore_ref.columns`). The user guide is
``docs/guide/filters.md``.

Grammar (SPEC section 10; keywords ``AND OR NOT IN CONTAINS TRUE FALSE NULL`` are case-insensitive)::

    expr       := or_expr
    or_expr    := and_expr ("OR" and_expr)*                 -- loosest
    and_expr   := not_expr ("AND" not_expr)*
    not_expr   := "NOT" not_expr | primary                  -- tightest
    primary    := "(" expr ")" | comparison
    comparison := field op literal
                | field ["NOT"] "IN" "(" literal ("," literal)* ")"
                | field "CONTAINS" literal
    op         := "=" | "!=" | "<" | "<=" | ">" | ">="
    field      := [A-Za-z_][A-Za-z0-9_]*                    -- ASCII; a keyword is not a field
    literal    := string | number | "true" | "false" | "null"
    string     := "'" (any character but "'" | "''")* "'"   -- '' is one quote
    number     := [+-]? (digits ["." digits?] | "." digits) ([eE] [+-]? digits)?   -- ASCII digits, finite

Meaning, for one record's metadata ``md``:

- ``f op lit`` is true only when ``f`` is in ``md`` and holds a value of the literal's kind: numbers compare with
  numbers (int and float alike, as float64), strings with strings (by code point), booleans with booleans (``=`` and
  ``!=`` only); a bool is not a number. A missing field or a value of another kind makes it false, ``!=`` included.
- ``f = null`` is true when ``f`` is present and null; ``f != null`` when it is present and anything else;
  ordering against null is false.
- ``f IN (a, b)`` is ``f = a OR f = b``; ``f NOT IN (...)`` is ``NOT (f IN (...))``.
- ``f CONTAINS lit`` is true when ``f`` is a list holding an item of the literal's kind equal to it (1 matches
  1.0), or a string holding a string literal as a substring.
- ``NOT e`` inverts ``e``, so ``NOT x = 1`` is true for records without ``x``.

Limits: 8 KiB of text, 64 levels of nesting (parentheses and NOTs together). Both are checked while reading, so a
10,000-deep input fails fast with `FilterSyntaxError` instead of reaching Python's recursion limit.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np

from .columns import MetadataColumns
from .config import MAX_FILTER_CHARS, MAX_FILTER_DEPTH
from .errors import FilterSyntaxError, FilterTypeError
from .metadata import as_float, item_key, kind_of

__all__ = ["Filter", "parse_filter", "Comparison", "In", "Contains", "And", "Or", "Not", "Node"]

# --- the tree --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """``field op literal``; ``op`` is one of ``= != < <= > >=``; ``literal`` a str, int, float, bool or None."""

    field: str
    op: str
    literal: object


@dataclass(frozen=True)
class In:
    """``field IN (literals...)``, or ``field NOT IN (...)`` when ``negated``."""

    field: str
    literals: tuple
    negated: bool = False


@dataclass(frozen=True)
class Contains:
    """``field CONTAINS literal``."""

    field: str
    literal: object


@dataclass(frozen=True)
class And:
    items: tuple


@dataclass(frozen=True)
class Or:
    items: tuple


@dataclass(frozen=True)
class Not:
    item: object


Node = Comparison | In | Contains | And | Or | Not
Leaf = Comparison | In | Contains

# --- tokenizer -------------------------------------------------------------------------------------------------

_KEYWORDS = frozenset({"and", "or", "not", "in", "contains", "true", "false", "null"})
_WS = frozenset(" \t\r\n\f\v")
_DIGITS = frozenset("0123456789")
_WORD_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_WORD = _WORD_START | _DIGITS
_MAX_LITERAL = float(np.finfo(np.float64).max)


@dataclass(frozen=True)
class _Tok:
    kind: str  # "str" "num" "op" "(" ")" "," "word" "kw" "end"
    text: str  # the source text of the token
    value: object  # the literal value, the keyword in lower case, or the text
    pos: int  # 0-based offset in the filter text


def _number(text: str, start: int) -> tuple[object, int]:
    """Read the number at ``start``; return (int or float, end offset)."""
    i, n = start, len(text)
    if text[i] in "+-":
        i += 1
    int_start = i
    while i < n and text[i] in _DIGITS:
        i += 1
    n_int = i - int_start
    is_float = False
    if i < n and text[i] == ".":
        is_float = True
        i += 1
        frac_start = i
        while i < n and text[i] in _DIGITS:
            i += 1
        if n_int == 0 and i == frac_start:  # a lone sign or dot: not the start of a number after all
            raise FilterSyntaxError(f"unexpected character {text[start]!r}", start)
    elif n_int == 0:
        raise FilterSyntaxError(f"unexpected character {text[start]!r}", start)
    if i < n and text[i] in "eE":
        is_float = True
        i += 1
        if i < n and text[i] in "+-":
            i += 1
        exp_start = i
        while i < n and text[i] in _DIGITS:
            i += 1
        if i == exp_start:
            raise FilterSyntaxError("malformed number: the exponent has no digits", start)
    if i < n and (text[i] in _WORD or text[i] == "."):
        raise FilterSyntaxError(f"malformed number {text[start:i + 1]!r}", start)
    raw = text[start:i]
    if is_float:
        value: object = float(raw)
        if abs(value) > _MAX_LITERAL:  # 1e999 reads as inf, which no metadata value can equal
            raise FilterSyntaxError(f"number {raw} is outside the float64 range", start)
        return value, i
    if n_int > 4300:  # int() refuses more digits (CPython's int_max_str_digits)
        raise FilterSyntaxError(f"number has {n_int} digits; numbers are float64 values", start)
    value = int(raw)
    if abs(as_float(value)) > _MAX_LITERAL:
        raise FilterSyntaxError(f"number {raw[:20]}... is outside the float64 range", start)
    return value, i


def _tokenize(text: str) -> list[_Tok]:
    """Split ``text`` into tokens; depth of parentheses is checked here, before any recursion."""
    toks: list[_Tok] = []
    i, n, depth = 0, len(text), 0
    while i < n:
        c = text[i]
        if c in _WS:
            i += 1
        elif c == "'":
            parts, j = [], i + 1
            while True:
                k = text.find("'", j)
                if k < 0:
                    raise FilterSyntaxError("unterminated string literal", i)
                parts.append(text[j:k])
                if k + 1 < n and text[k + 1] == "'":  # '' is an escaped quote
                    parts.append("'")
                    j = k + 2
                    continue
                break
            toks.append(_Tok("str", text[i:k + 1], "".join(parts), i))
            i = k + 1
        elif c in _DIGITS or c in "+-.":
            value, j = _number(text, i)
            toks.append(_Tok("num", text[i:j], value, i))
            i = j
        elif c in "=<>!":
            two = text[i:i + 2]
            if two in ("<=", ">=", "!="):
                toks.append(_Tok("op", two, two, i))
                i += 2
            elif c == "!":
                raise FilterSyntaxError("unexpected '!' (did you mean '!='?)", i)
            else:
                toks.append(_Tok("op", c, c, i))
                i += 1
        elif c in "(),":
            if c == "(":
                depth += 1
                if depth > MAX_FILTER_DEPTH:
                    raise FilterSyntaxError(f"nesting deeper than {MAX_FILTER_DEPTH} levels", i)
            elif c == ")":
                depth -= 1
            toks.append(_Tok(c, c, c, i))
            i += 1
        elif c in _WORD_START:
            j = i + 1
            while j < n and text[j] in _WORD:
                j += 1
            word = text[i:j]
            low = word.lower()
            if low in _KEYWORDS:
                toks.append(_Tok("kw", word, low, i))
            else:
                toks.append(_Tok("word", word, word, i))
            i = j
        else:
            raise FilterSyntaxError(f"unexpected character {c!r}", i)
    toks.append(_Tok("end", "", None, n))
    return toks


# --- parser ----------------------------------------------------------------------------------------------------

_LITERAL_KEYWORDS = {"true": True, "false": False, "null": None}


def _found(t: _Tok) -> str:
    return "the end of the filter" if t.kind == "end" else repr(t.text[:40])


class _Parser:
    """Recursive descent over the token list, one method per grammar rule. Depth is bounded by ``_enter``."""

    def __init__(self, text: str):
        self.toks = _tokenize(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def at_kw(self, word: str) -> bool:
        t = self.toks[self.i]
        return t.kind == "kw" and t.value == word

    def expect(self, kind: str, what: str) -> _Tok:
        t = self.peek()
        if t.kind != kind:
            raise FilterSyntaxError(f"expected {what}, found {_found(t)}", t.pos)
        return self.take()

    def _enter(self, pos: int) -> None:
        self.depth += 1
        if self.depth > MAX_FILTER_DEPTH:
            raise FilterSyntaxError(f"nesting deeper than {MAX_FILTER_DEPTH} levels", pos)

    def parse(self) -> Node:
        if self.peek().kind == "end":
            raise FilterSyntaxError("empty filter", 0)
        node = self.or_expr()
        t = self.peek()
        if t.kind != "end":
            what = "unbalanced ')'" if t.kind == ")" else f"unexpected {_found(t)}"
            raise FilterSyntaxError(f"{what} after a complete expression", t.pos)
        return node

    def or_expr(self) -> Node:
        items = [self.and_expr()]
        while self.at_kw("or"):
            self.take()
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_expr(self) -> Node:
        items = [self.not_expr()]
        while self.at_kw("and"):
            self.take()
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else And(tuple(items))

    def not_expr(self) -> Node:
        if not self.at_kw("not"):
            return self.primary()
        t = self.take()
        self._enter(t.pos)
        node = Not(self.not_expr())
        self.depth -= 1
        return node

    def primary(self) -> Node:
        t = self.peek()
        if t.kind != "(":
            return self.comparison()
        self.take()
        self._enter(t.pos)
        node = self.or_expr()
        close = self.peek()
        if close.kind != ")":
            raise FilterSyntaxError(f"expected ')' to close the '(' at position {t.pos}, found {_found(close)}",
                                    close.pos)
        self.take()
        self.depth -= 1
        return node

    def literal(self) -> object:
        t = self.peek()
        if t.kind in ("str", "num"):
            return self.take().value
        if t.kind == "kw" and t.value in _LITERAL_KEYWORDS:
            self.take()
            return _LITERAL_KEYWORDS[t.value]
        raise FilterSyntaxError(f"expected a literal ('string', number, true, false or null), found {_found(t)}",
                                t.pos)

    def comparison(self) -> Leaf:
        t = self.peek()
        if t.kind != "word":
            hint = " (keywords cannot be field names)" if t.kind == "kw" else ""
            raise FilterSyntaxError(f"expected a field name, found {_found(t)}{hint}", t.pos)
        field = self.take().text
        t = self.peek()
        if t.kind == "op":
            self.take()
            return Comparison(field, t.value, self.literal())
        negated = False
        if self.at_kw("not"):
            self.take()
            negated = True
            if not self.at_kw("in"):
                raise FilterSyntaxError(f"expected IN after NOT, found {_found(self.peek())}", self.peek().pos)
        if self.at_kw("in"):
            self.take()
            self.expect("(", "'(' after IN")
            literals = [self.literal()]
            while self.peek().kind == ",":
                self.take()
                literals.append(self.literal())
            self.expect(")", "',' or ')' in the IN list")
            return In(field, tuple(literals), negated)
        if self.at_kw("contains"):
            self.take()
            return Contains(field, self.literal())
        raise FilterSyntaxError(f"expected an operator (= != < <= > >= IN, NOT IN, CONTAINS) after {field!r}, "
                                f"found {_found(t)}", t.pos)


def parse_filter(text: str) -> Filter:
    """Parse filter text into a `Filter`.

    Args:
        text: the filter, at most 8 KiB (8,192 bytes as UTF-8).

    Raises:
        FilterSyntaxError: anything the grammar does not accept (also a non-str ``text``, at position 0); its
            ``position`` is the 0-based offset of the problem.

    >>> parse_filter("lang = 'en' AND NOT year < 2020").clauses()
    ["lang = 'en'", 'year < 2020']
    """
    if not isinstance(text, str):
        raise FilterTypeError(f"a filter must be a str, got {type(text).__name__}", 0)
    if len(text) > MAX_FILTER_CHARS:  # more characters than bytes allowed: refused before encoding it
        raise FilterSyntaxError(f"the filter is {len(text):,} characters; the limit is {MAX_FILTER_CHARS:,} bytes",
                                MAX_FILTER_CHARS)
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise FilterSyntaxError("lone surrogate: the filter is not valid Unicode text", exc.start) from None
    if len(encoded) > MAX_FILTER_CHARS:  # the position: the first character past the limit
        past = len(encoded[:MAX_FILTER_CHARS].decode("utf-8", errors="ignore"))
        raise FilterSyntaxError(f"the filter is {len(encoded):,} bytes as UTF-8; the limit is {MAX_FILTER_CHARS:,}",
                                past)
    text = str.__str__(text)  # a str subclass cannot smuggle behaviour into the parser
    return Filter(text, _Parser(text).parse())


# --- text of a tree ----------------------------------------------------------------------------------------------


def literal_text(v) -> str:
    """The filter-language spelling of a literal; parsing it gives ``v`` back."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    return repr(v)


def node_text(node: Node) -> str:
    """Readable filter text for a (sub)tree, fully parenthesized above the leaves; it parses back to ``node``."""
    if isinstance(node, Comparison):
        return f"{node.field} {node.op} {literal_text(node.literal)}"
    if isinstance(node, In):
        items = ", ".join(literal_text(x) for x in node.literals)
        return f"{node.field} {'NOT IN' if node.negated else 'IN'} ({items})"
    if isinstance(node, Contains):
        return f"{node.field} CONTAINS {literal_text(node.literal)}"
    if isinstance(node, Not):
        return f"NOT ({node_text(node.item)})"
    joiner = " AND " if isinstance(node, And) else " OR "
    return joiner.join(f"({node_text(x)})" for x in node.items)


def _leaves(node: Node) -> list[Leaf]:
    if isinstance(node, (Comparison, In, Contains)):
        return [node]
    if isinstance(node, Not):
        return _leaves(node.item)
    return [leaf for x in node.items for leaf in _leaves(x)]


# --- vectorized evaluation ---------------------------------------------------------------------------------------

_UFUNCS = {"=": np.equal, "!=": np.not_equal, "<": np.less, "<=": np.less_equal, ">": np.greater,
           ">=": np.greater_equal}


def _compare_mask(col, op: str, lit, m: int) -> np.ndarray:
    """bool (m,) for ``field op lit`` given the field's columns ``col`` (never None here)."""
    kind = kind_of(lit)
    if kind == "num":
        return col.num_mask(_UFUNCS[op], as_float(lit), m)
    if kind == "str":
        return col.str_mask(_UFUNCS[op], lit, m)
    if kind == "bool":
        if op not in ("=", "!="):
            return np.zeros(m, dtype=bool)
        return col.bool_mask(lit, op == "!=", m)
    if op == "=":  # null
        return col.null_mask(m)
    if op == "!=":
        return col.non_null_mask(m)
    return np.zeros(m, dtype=bool)


def _leaf_mask(leaf: Leaf, cols: MetadataColumns, n: int) -> np.ndarray:
    """bool (n,) for one leaf over slots ``0 .. n-1`` (unassigned slots are handled by the caller)."""
    out = np.zeros(n, dtype=bool)
    col = cols.column(leaf.field)
    m = min(n, cols.capacity)
    if col is not None:
        if isinstance(leaf, Comparison):
            out[:m] = _compare_mask(col, leaf.op, leaf.literal, m)
        elif isinstance(leaf, In):
            for lit in leaf.literals:
                out[:m] |= _compare_mask(col, "=", lit, m)
        else:
            out[:m] = col.list_contains_mask(leaf.literal, m)
            if isinstance(leaf.literal, str):
                out[:m] |= col.substring_mask(leaf.literal, m)
    if isinstance(leaf, In) and leaf.negated:
        np.logical_not(out, out=out)
    return out


def _mask(node: Node, cols: MetadataColumns, n: int) -> np.ndarray:
    """bool (n,), a fresh array. Recursion depth is bounded by the parser's nesting limit."""
    if isinstance(node, (Comparison, In, Contains)):
        return _leaf_mask(node, cols, n)
    if isinstance(node, Not):
        out = _mask(node.item, cols, n)
        return np.logical_not(out, out=out)
    out = _mask(node.items[0], cols, n)
    combine = np.logical_and if isinstance(node, And) else np.logical_or
    for item in node.items[1:]:
        combine(out, _mask(item, cols, n), out=out)
    return out


# --- the plain-Python reference evaluator --------------------------------------------------------------------------

_PY_OPS = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
           ">=": operator.ge}


def _value_compare(value, op: str, lit) -> bool:
    """``value op lit`` for one stored value, by the rules of the module docstring."""
    lk, vk = kind_of(lit), kind_of(value)
    if lk == "null":
        return (vk == "null") if op == "=" else (op == "!=" and vk != "null")
    if vk != lk:
        return False
    if lk == "num":
        return _PY_OPS[op](as_float(value), as_float(lit))
    if lk == "bool" and op not in ("=", "!="):
        return False
    return _PY_OPS[op](value, lit)


def _value_contains(value, lit) -> bool:
    if type(value) is list:
        key = item_key(lit)
        return any(item_key(x) == key for x in value)
    return type(value) is str and type(lit) is str and lit in value


def _matches(node: Node, md: dict) -> bool:
    if isinstance(node, Comparison):
        return node.field in md and _value_compare(md[node.field], node.op, node.literal)
    if isinstance(node, In):
        hit = node.field in md and any(_value_compare(md[node.field], "=", x) for x in node.literals)
        return hit != node.negated
    if isinstance(node, Contains):
        return node.field in md and _value_contains(md[node.field], node.literal)
    if isinstance(node, Not):
        return not _matches(node.item, md)
    if isinstance(node, And):
        return all(_matches(x, md) for x in node.items)
    return any(_matches(x, md) for x in node.items)


# --- checking a filter against what a store holds ---------------------------------------------------------------------

_ORDERING = ("<", "<=", ">", ">=")


def _leaf_problems(leaf: Leaf, kinds: set[str]) -> list[str]:
    text = node_text(leaf)
    have = ", ".join(sorted(kinds)) or "no"
    if isinstance(leaf, Contains):
        lk = kind_of(leaf.literal)
        if "list" in kinds or (lk == "str" and "str" in kinds):
            return []
        return [f"field {leaf.field!r} holds {have} values, never a list{' or str' if lk == 'str' else ''}: "
                f"'{text}' matches nothing"]
    pairs = [(leaf.op, leaf.literal)] if isinstance(leaf, Comparison) else [("=", x) for x in leaf.literals]
    out = []
    for op, lit in pairs:
        lk = kind_of(lit)
        if lk == "null" and op in _ORDERING:
            out.append(f"'{text}': ordering against null matches nothing; use = null or != null")
        elif lk == "bool" and op in _ORDERING:
            out.append(f"'{text}': booleans compare only with = and !=, so this matches nothing")
        elif lk == "null" and op == "!=":
            if not kinds - {"null"}:
                out.append(f"field {leaf.field!r} holds only null values: '{text}' matches nothing")
        elif lk not in kinds:
            out.append(f"field {leaf.field!r} holds {have} values, never {lk}: '{text}' compares with a {lk} "
                       "literal")
    return out


# --- Filter ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filter:
    """A parsed filter. Build it with `parse_filter`; reuse it across queries.

    Attributes:
        text: the filter text as given.
        ast: the tree (`Comparison`, `In`, `Contains`, `And`, `Or`,
            `Not`).
    """

    text: str
    ast: Node

    def mask(self, columns: MetadataColumns, n_slots: int) -> np.ndarray:
        """bool (n_slots,): which slots' metadata satisfies the filter.

        Slots never set in ``columns`` (or cleared, or beyond its capacity) are False, even under ``NOT``.
        """
        n = int(n_slots)
        out = _mask(self.ast, columns, n)
        out &= columns.assigned(n)
        return out

    def matches(self, metadata: dict | None) -> bool:
        """The same judgement for one metadata dict, in plain Python: the oracle for `mask`."""
        return _matches(self.ast, metadata or {})

    def fields(self) -> set[str]:
        """The field names the filter reads."""
        return {leaf.field for leaf in _leaves(self.ast)}

    def clauses(self) -> list[str]:
        """Readable text of every leaf (comparison, IN or CONTAINS), in source order, for explain output."""
        return [node_text(leaf) for leaf in _leaves(self.ast)]

    def clause_masks(self, columns: MetadataColumns, n_slots: int) -> list[np.ndarray]:
        """One bool (n_slots,) per entry of `clauses`: where that leaf alone is true."""
        n = int(n_slots)
        assigned = columns.assigned(n)
        return [_leaf_mask(leaf, columns, n) & assigned for leaf in _leaves(self.ast)]

    def check_against(self, field_kinds: dict[str, set[str]]) -> list[str]:
        """Readable reasons the filter cannot work on a store whose fields hold ``field_kinds``.

        Args:
            field_kinds: `MetadataColumns.fields` of the store: field name -> kinds it holds.

        Returns:
            One message per problem (empty when none): a field no record has; a comparison with a literal of a
            kind the field never holds; ordering against null or booleans.
        """
        problems: list[str] = []
        for leaf in _leaves(self.ast):
            kinds = field_kinds.get(leaf.field)
            if kinds is None:  # a misspelt name, most likely; the clause is what it is for a record without it
                clause = "matches every record" if isinstance(leaf, In) and leaf.negated else "matches nothing"
                found = [f"field {leaf.field!r} is not in any record's metadata: '{node_text(leaf)}' {clause}"]
            else:
                found = _leaf_problems(leaf, kinds)
            problems.extend(p for p in found if p not in problems)
        return problems

    def __str__(self) -> str:
        return self.text
