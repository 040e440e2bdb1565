"""The filter language: a closed grammar, parsed by hand, evaluated as a vectorized mask. Never ``eval``.

Grammar (keywords are case-insensitive)::

    expr       := or_expr
    or_expr    := and_expr ("OR" and_expr)*
    and_expr   := not_expr ("AND" not_expr)*
    not_expr   := "NOT" not_expr | primary
    primary    := "(" expr ")" | comparison
    comparison := field op literal
                | field ["NOT"] "IN" "(" literal ("," literal)* ")"
                | field "CONTAINS" literal
    op         := "=" | "!=" | "<" | "<=" | ">" | ">="
    field      := [A-Za-z_][A-Za-z0-9_]*
    literal    := 'single-quoted string, '' escapes a quote' | number | true | false | null

Semantics: a comparison is false when the field is missing or holds a value of another kind (numbers compare with
numbers, int and float alike; bool is not a number; strings compare by code point); ``NOT`` inverts, so
``NOT x = 1`` is true for a record without ``x``. ``CONTAINS`` is true for a list holding the literal or a string
holding it as a substring. ``= null`` matches a field set to null; ``!= null`` a field set to anything else.
At most 8 KiB of text and 64 levels of nesting. The user guide is ``docs/guide/filters.md``.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass

import numpy as np

from .config import MAX_FILTER_CHARS, MAX_FILTER_DEPTH
from .errors import FilterSyntaxError
from .metadata import MetadataColumns, kind_of, value_key

# --- the AST ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    field: str
    op: str
    literal: object


@dataclass(frozen=True)
class In:
    field: str
    literals: tuple
    negated: bool = False


@dataclass(frozen=True)
class Contains:
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


# --- tokenizer -------------------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<str>'(?:[^']|'')*')
  | (?P<num>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<op><=|>=|!=|=|<|>)
  | (?P<lpar>\()
  | (?P<rpar>\))
  | (?P<comma>,)
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    """,
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in", "contains", "true", "false", "null"}


@dataclass(frozen=True)
class _Tok:
    kind: str  # str num op lpar rpar comma word kw end
    text: str
    value: object
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    toks = []
    pos = 0
    depth = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            if text[pos] == "'":
                raise FilterSyntaxError("unterminated string literal", pos)
            raise FilterSyntaxError(f"unexpected character {text[pos]!r}", pos)
        kind = m.lastgroup
        raw = m.group()
        if kind == "ws":
            pos = m.end()
            continue
        value: object = raw
        if kind == "str":
            value = raw[1:-1].replace("''", "'")
        elif kind == "num":
            value = float(raw) if any(c in raw for c in ".eE") else int(raw)
            if isinstance(value, float) and not math.isfinite(value):
                raise FilterSyntaxError(f"number {raw} is out of range", pos)
        elif kind == "word" and raw.lower() in _KEYWORDS:
            kind, value = "kw", raw.lower()
        elif kind == "lpar":
            depth += 1
            if depth > MAX_FILTER_DEPTH:
                raise FilterSyntaxError(f"nesting deeper than {MAX_FILTER_DEPTH} levels", pos)
        elif kind == "rpar":
            depth -= 1
        toks.append(_Tok(kind, raw, value, pos))
        pos = m.end()
    toks.append(_Tok("end", "", None, len(text)))
    return toks


# --- parser ----------------------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str):
        self.toks = _tokenize(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def is_kw(self, word: str) -> bool:
        t = self.peek()
        return t.kind == "kw" and t.value == word

    def expect(self, kind: str, what: str) -> _Tok:
        t = self.peek()
        if t.kind != kind:
            found = "the end of the filter" if t.kind == "end" else repr(t.text)
            raise FilterSyntaxError(f"expected {what}, found {found}", t.pos)
        return self.take()

    def _enter(self, pos: int) -> None:
        self.depth += 1
        if self.depth > MAX_FILTER_DEPTH:
            raise FilterSyntaxError(f"nesting deeper than {MAX_FILTER_DEPTH} levels", pos)

    def parse(self):
        if self.peek().kind == "end":
            raise FilterSyntaxError("empty filter", 0)
        node = self.or_expr()
        t = self.peek()
        if t.kind != "end":
            raise FilterSyntaxError(f"unexpected {t.text!r} after a complete expression", t.pos)
        return node

    def or_expr(self):
        items = [self.and_expr()]
        while self.is_kw("or"):
            self.take()
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_expr(self):
        items = [self.not_expr()]
        while self.is_kw("and"):
            self.take()
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else And(tuple(items))

    def not_expr(self):
        if self.is_kw("not"):
            t = self.take()
            self._enter(t.pos)
            node = Not(self.not_expr())
            self.depth -= 1
            return node
        return self.primary()

    def primary(self):
        t = self.peek()
        if t.kind == "lpar":
            self.take()
            self._enter(t.pos)
            node = self.or_expr()
            self.expect("rpar", "')'")
            self.depth -= 1
            return node
        return self.comparison()

    def literal(self):
        t = self.peek()
        if t.kind in ("str", "num"):
            return self.take().value
        if t.kind == "kw" and t.value in ("true", "false", "null"):
            self.take()
            return {"true": True, "false": False, "null": None}[t.value]
        found = "the end of the filter" if t.kind == "end" else repr(t.text)
        raise FilterSyntaxError(f"expected a literal (a 'string', a number, true, false or null), found {found}",
                                t.pos)

    def comparison(self):
        t = self.peek()
        if t.kind != "word":
            found = "the end of the filter" if t.kind == "end" else repr(t.text)
            raise FilterSyntaxError(f"expected a field name, found {found}", t.pos)
        field = self.take().text
        t = self.peek()
        if t.kind == "op":
            self.take()
            return Comparison(field, t.text, self.literal())
        negated = False
        if self.is_kw("not"):
            self.take()
            negated = True
            if not self.is_kw("in"):
                raise FilterSyntaxError("expected IN after NOT", self.peek().pos)
        if self.is_kw("in"):
            self.take()
            self.expect("lpar", "'(' after IN")
            literals = [self.literal()]
            while self.peek().kind == "comma":
                self.take()
                literals.append(self.literal())
            self.expect("rpar", "')' closing the IN list")
            return In(field, tuple(literals), negated)
        if self.is_kw("contains"):
            self.take()
            return Contains(field, self.literal())
        found = "the end of the filter" if t.kind == "end" else repr(t.text)
        raise FilterSyntaxError(f"expected an operator (= != < <= > >= IN NOT IN CONTAINS), found {found}", t.pos)


def parse_filter(text) -> Filter:
    """Parse filter text into a :class:`Filter`; raises :class:`FilterSyntaxError` with the position."""
    if not isinstance(text, str):
        raise FilterSyntaxError(f"a filter must be a str, got {type(text).__name__}", 0)
    if len(text) > MAX_FILTER_CHARS:
        raise FilterSyntaxError(f"filter is {len(text)} characters; the limit is {MAX_FILTER_CHARS}",
                                MAX_FILTER_CHARS)
    return Filter(text, _Parser(text).parse())


# --- evaluation ------------------------------------------------------------------------------------------------

_OPS = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
        ">=": operator.ge}


def _literal_text(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    return repr(v)


def _node_text(node) -> str:
    if isinstance(node, Comparison):
        return f"{node.field} {node.op} {_literal_text(node.literal)}"
    if isinstance(node, In):
        items = ", ".join(_literal_text(x) for x in node.literals)
        return f"{node.field} {'NOT IN' if node.negated else 'IN'} ({items})"
    if isinstance(node, Contains):
        return f"{node.field} CONTAINS {_literal_text(node.literal)}"
    if isinstance(node, Not):
        return f"NOT ({_node_text(node.item)})"
    joiner = " AND " if isinstance(node, And) else " OR "
    return "(" + joiner.join(_node_text(x) for x in node.items) + ")"


def _compare_mask(cols: MetadataColumns, n: int, field: str, op: str, lit) -> np.ndarray:
    f = cols.field(field)
    out = np.zeros(n, dtype=bool)
    if f is None:
        return out
    k = kind_of(lit)
    if k == "null":
        if op == "=" and f.null is not None:
            out[:] = f.null[:n]
        elif op == "!=":
            present = np.zeros(n, dtype=bool)
            for arr in (f.num_present, f.list_present, None if f.bool is None else f.bool >= 0,
                        None if f.str is None else f.str != None):  # noqa: E711 - elementwise
                if arr is not None:
                    present |= arr[:n]
            out[:] = present
        return out
    if k == "num":
        if f.num is not None:
            with np.errstate(invalid="ignore"):
                out[:] = _OPS[op](f.num[:n], float(lit)) & f.num_present[:n]
        return out
    if k == "bool":
        if f.bool is not None and op in ("=", "!="):
            col = f.bool[:n]
            out[:] = (col >= 0) & _OPS[op](col, int(lit))
        return out
    if f.str is not None:  # a string literal
        col = f.str[:n]
        present = np.frompyfunc(lambda v: isinstance(v, str), 1, 1)(col).astype(bool) if n else out
        if present.any():
            out[present] = _OPS[op](col[present], lit).astype(bool)
    return out


def _contains_mask(cols: MetadataColumns, n: int, field: str, lit) -> np.ndarray:
    f = cols.field(field)
    out = np.zeros(n, dtype=bool)
    if f is None:
        return out
    slots = f.items.get(value_key(lit))
    if slots:
        idx = np.fromiter((s for s in slots if s < n), dtype=np.int64)
        out[idx] = True
    if isinstance(lit, str) and f.str is not None:
        col = f.str[:n]
        present = np.frompyfunc(lambda v: isinstance(v, str), 1, 1)(col).astype(bool) if n else out.copy()
        if present.any():
            out[present] |= np.char.find(col[present].astype(str), lit) >= 0
    return out


def _mask(node, cols: MetadataColumns, n: int) -> np.ndarray:
    if isinstance(node, Comparison):
        return _compare_mask(cols, n, node.field, node.op, node.literal)
    if isinstance(node, In):
        m = np.zeros(n, dtype=bool)
        for lit in node.literals:
            m |= _compare_mask(cols, n, node.field, "=", lit)
        return ~m if node.negated else m
    if isinstance(node, Contains):
        return _contains_mask(cols, n, node.field, node.literal)
    if isinstance(node, Not):
        return ~_mask(node.item, cols, n)
    parts = [_mask(x, cols, n) for x in node.items]
    return np.logical_and.reduce(parts) if isinstance(node, And) else np.logical_or.reduce(parts)


def _same_kind_compare(value, op: str, lit) -> bool:
    kv, kl = kind_of(value), kind_of(lit)
    if kl == "null":
        return (kv == "null") if op == "=" else (op == "!=" and kv != "null")
    if kv != kl or kv == "list":
        return False
    if kv == "bool" and op not in ("=", "!="):
        return False
    if kv == "num":
        return _OPS[op](float(value), float(lit))
    return _OPS[op](value, lit)


def _matches(node, md: dict) -> bool:
    if isinstance(node, Comparison):
        return node.field in md and _same_kind_compare(md[node.field], node.op, node.literal)
    if isinstance(node, In):
        hit = node.field in md and any(_same_kind_compare(md[node.field], "=", x) for x in node.literals)
        return not hit if node.negated else hit
    if isinstance(node, Contains):
        if node.field not in md:
            return False
        v = md[node.field]
        if isinstance(v, list):
            return value_key(node.literal) in {value_key(x) for x in v}
        return isinstance(v, str) and isinstance(node.literal, str) and node.literal in v
    if isinstance(node, Not):
        return not _matches(node.item, md)
    results = [_matches(x, md) for x in node.items]
    return all(results) if isinstance(node, And) else any(results)


def _leaves(node) -> list:
    if isinstance(node, (Comparison, In, Contains)):
        return [node]
    if isinstance(node, Not):
        return _leaves(node.item)
    return [leaf for x in node.items for leaf in _leaves(x)]


def _leaf_kinds(node) -> list[tuple[str, str]]:
    lits = node.literals if isinstance(node, In) else (node.literal,)
    return [(node.field, kind_of(x)) for x in lits]


@dataclass(frozen=True)
class Filter:
    """A parsed filter: ``text`` and its ``ast``; evaluate with :meth:`mask` or :meth:`matches`."""

    text: str
    ast: object

    def mask(self, columns: MetadataColumns, n_slots: int) -> np.ndarray:
        """bool (n_slots,): which slots' metadata satisfies the filter."""
        return _mask(self.ast, columns, int(n_slots))

    def matches(self, metadata: dict | None) -> bool:
        """The same judgement for one metadata dict, in plain Python (the oracle the tests use)."""
        return _matches(self.ast, metadata or {})

    def fields(self) -> set[str]:
        return {leaf.field for leaf in _leaves(self.ast)}

    def clauses(self) -> list[str]:
        """The text of every leaf comparison, in order."""
        return [_node_text(leaf) for leaf in _leaves(self.ast)]

    def clause_masks(self, columns: MetadataColumns, n_slots: int) -> list[np.ndarray]:
        return [_mask(leaf, columns, int(n_slots)) for leaf in _leaves(self.ast)]

    def check_against(self, field_kinds: dict[str, set[str]]) -> list[str]:
        """Readable problems: fields never seen in the store, literals of a kind a field never holds."""
        problems = []
        for leaf in _leaves(self.ast):
            kinds = field_kinds.get(leaf.field)
            if kinds is None:
                problems.append(f"field {leaf.field!r} is not in any record's metadata")
                continue
            for field, k in _leaf_kinds(leaf):
                if isinstance(leaf, Contains):
                    ok = "list" in kinds or (k == "str" and "str" in kinds)
                else:
                    ok = k in kinds or k == "null"
                if not ok:
                    have = ", ".join(sorted(kinds))
                    problems.append(f"field {field!r} holds {have} values, never {k}: "
                                    f"'{_node_text(leaf)}' matches nothing")
        return problems
