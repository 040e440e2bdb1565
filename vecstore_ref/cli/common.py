"""What the command groups share: opening a store the right way, and argument types.

Opening follows one rule: a command that only reads opens the store read-only (no lock, nothing written, not even
a torn-tail repair) and a path with no store is an error that creates nothing. Only `ingest`, `import` and
`upsert` create a store; every other write needs an existing one, so a typo in a path never leaves a new store
behind.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

from ..errors import InvalidArgumentError, NotFoundError, VecStoreError
from ..storage.format import NAMESPACE_FILE, SHARDS_FILE
from ..storage.layout import MANIFEST

INDEX_KINDS = ("hnsw", "flat")
METRICS = ("cosine", "dot", "euclidean")


def add_json_flag(parser: argparse.ArgumentParser, suppress: bool = False) -> None:
    """``--json`` on ``parser``. ``suppress``: leave the value alone unless given, so that the flag works before
    and after a subcommand name."""
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS if suppress else False,
                        help="print one JSON object per line (NDJSON) instead of text")


def add_create_options(parser: argparse.ArgumentParser) -> None:
    """The options of a store that a command may create (`ingest`, `import`, `upsert`)."""
    g = parser.add_argument_group("when the command creates the store")
    g.add_argument("--dim", type=positive_int, default=None, help="dimension (default: from the data)")
    g.add_argument("--metric", choices=METRICS, default=None, help="similarity (default cosine)")
    g.add_argument("--index", choices=INDEX_KINDS, default=None, help="index kind (default hnsw)")


# --- opening ----------------------------------------------------------------------------------------------------

def namespace_at(path: str) -> tuple[str, str] | None:
    """``(root, name)`` when ``path`` is a namespace's directory (``ROOT/NAME``, holding ``NAMESPACE.json``), whose
    store the per-store commands reach as its owner (`vecstore_ref.namespaces.open_namespace_store`: its quotas,
    the generation a restore made current, and nothing else under the root touched)."""
    from ..namespaces import is_name

    if not os.path.lexists(os.path.join(path, NAMESPACE_FILE)):
        return None
    root, name = os.path.split(os.path.abspath(path))
    return (root, name) if is_name(name) else None


def store_exists(path: str) -> bool:
    return os.path.isfile(os.path.join(path, MANIFEST)) or namespace_at(path) is not None


def no_store(path: str) -> NotFoundError:
    """The error for a path without a store, with a hint when the path is something else we know."""
    hint = ""
    if os.path.isfile(os.path.join(path, SHARDS_FILE)):
        hint = " (it holds a sharded store: open it from Python with vs.ShardedStore.open)"
    return NotFoundError(f"no store at {path}{hint}")


def _holds_another_kind(path: str) -> bool:
    return any(os.path.lexists(os.path.join(path, name)) for name in (SHARDS_FILE, NAMESPACE_FILE))


def open_namespace(path: str, *, read_only: bool):
    """The store of the namespace at ``path`` (see `namespace_at`)."""
    from ..namespaces import open_namespace_store

    return open_namespace_store(path, read_only=read_only)


def namespace_store_dir(path: str) -> str:
    """The directory of the namespace's current store generation (for `verify` of a store too damaged to open);
    ``path`` itself when even the namespace's own file is unreadable."""
    from .._fs import get_fs
    from ..errors import StorageError
    from ..namespaces import read_namespace_config

    try:
        return os.path.join(path, read_namespace_config(get_fs(), os.path.abspath(path))["store"])
    except (StorageError, VecStoreError):
        return path


def open_for_reading(path: str, **options):
    """Open an existing store read-only; `NotFoundError` ("no store at PATH") without touching the disk."""
    from ..store import VecStore

    if not store_exists(path):
        raise no_store(path)
    if namespace_at(path) is not None:
        return open_namespace(path, read_only=True)
    return VecStore.open(path, read_only=True, **options)


def open_for_writing(path: str, *, create: bool = False, dim=None, metric=None, index=None):
    """Open a store for writing. Without ``create`` the store must exist. ``dim``, ``metric`` and ``index`` shape
    a new store; given for an existing one they must agree with it (the store checks dim and metric before it
    writes anything; the index kind is compared here, since opening with another kind would convert the store)."""
    from ..store import VecStore

    exists = store_exists(path)
    if not exists and (not create or _holds_another_kind(path)):
        raise no_store(path)  # a namespace or a sharded store is never given a stray store inside it
    if not exists:
        return VecStore.open(path, dim=dim, metric=metric, index=index)
    owner = os.path.dirname(os.path.abspath(path))
    if namespace_at(owner) is not None:
        raise InvalidArgumentError(f"{path} is a store generation of the namespace at {owner}: give the "
                                   f"namespace's directory ({owner}) instead")
    if namespace_at(path) is not None:
        store = open_namespace(path, read_only=False)
        stats = store.stats()
        if dim is not None and stats.dim is not None and dim != stats.dim:
            store.close()
            raise InvalidArgumentError(f"the namespace at {path} holds vectors of dimension {stats.dim}, not {dim}")
        if metric is not None and metric != stats.metric:
            store.close()
            raise InvalidArgumentError(f"the namespace at {path} uses metric {stats.metric!r}, not {metric!r}")
    else:
        store = VecStore.open(path, dim=dim, metric=metric)
        stats = store.stats()
    if index is not None and index != stats.index:
        store.close()
        raise InvalidArgumentError(f"the store at {path} uses index {stats.index!r}; --index applies only when "
                                   "the command creates the store")
    return store


# --- argument types: a bad value is a usage error (exit 2) naming the option -------------------------------------

def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def tcp_port(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds above 0, got {text}")
    return value


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _unique_keys(pairs: list) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"key {key!r} appears twice in one object")
            seen.add(key)
    return obj


_JSON_SPACE = " \t\n\r"  # the whitespace JSON allows (str.strip() would also drop others)
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_unique_keys)


def strict_json(text: str | bytes):
    """One JSON value (bytes must be UTF-8), refusing what JSON does not allow but Python's parser accepts (NaN,
    Infinity) and objects with a key given twice (which would silently keep the last). Raises `ValueError`.

    The decoder is built once: for the short lines of a large file, ``json.loads`` spends a good part of its time
    setting one up."""
    if not isinstance(text, str):
        text = text.decode("utf-8")  # UnicodeDecodeError is a ValueError
    text = text.strip(_JSON_SPACE)
    try:
        value, end = _DECODER.raw_decode(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if end != len(text):
        raise ValueError(f"extra data after the JSON value at char {end}")
    return value


def json_vector(text: str) -> list:
    """A vector given on the command line: a JSON list of numbers, or ``-`` to read that list from stdin (a
    vector of a few thousand numbers is awkward as an argument)."""
    if text == "-":
        if sys.stdin is None:  # the process was started with stdin closed
            raise argparse.ArgumentTypeError("'-' reads the vector from stdin, which is closed")
        text = sys.stdin.read()
    try:
        value = strict_json(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(value, list) or not all(type(x) in (int, float) for x in value):
        raise argparse.ArgumentTypeError("expected a JSON list of numbers, e.g. '[0.1, 0.2, 0.3]'")
    return value


def json_metadata(text: str) -> dict | None:
    """Metadata given on the command line: a JSON object, or null."""
    try:
        value = strict_json(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if value is not None and not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object, e.g. '{\"lang\": \"en\"}', or null")
    return value


class CommandError(VecStoreError):
    """A command cannot run for a reason of its own (e.g. an optional dependency is missing); exit status 1."""

    code = "command_error"


class InternalError(VecStoreError):
    """An exception nobody planned for: a bug. Reported in one line like any error (exit status 1); set
    ``VECSTORE_REF_TRACEBACK=1`` to see the traceback instead."""

    code = "internal_error"
