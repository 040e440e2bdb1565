"""Which shard holds a record, and the directory layout that records the shard count.

::

    path/
      SHARDS.json        {"format": 1, "n_shards": N, "hash": "blake2b-8"}
      shard-0000/ ...    one VecStore directory per shard (on one machine, or on each shard's node)

A record lives on shard ``blake2b(id as UTF-8, 8 bytes) mod N``: the same in every process and on every machine
(Python's ``hash()`` is salted per process, so it cannot be used). ``SHARDS.json`` is written last, after every
shard directory exists: it is the commit point of a new sharded store, and once it exists a missing shard
directory is an error (a shard opened on the wrong node would otherwise come up empty and silently answer for
none of its records).
"""

from __future__ import annotations

import hashlib
import json
import os

from ..errors import (
    CorruptStoreError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidIdTypeError,
    StorageError,
    UnsupportedFormatError,
)
from ..storage.format import SHARDS_FILE

FORMAT_VERSION = 1
MAX_SHARDS = 4096
DEFAULT_SHARDS = 4


def shard_of(id_: str, n_shards: int) -> int:
    """The shard of ``id_``: a stable hash of its UTF-8 bytes, modulo ``n_shards``."""
    if not isinstance(id_, str):
        raise InvalidIdTypeError(f"id must be a str, got {type(id_).__name__}")
    try:
        data = id_.encode("utf-8")
    except UnicodeEncodeError:
        data = id_.encode("utf-8", "surrogatepass")  # the shard refuses the id with the precise error
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") % n_shards


def shard_dir(root: str, shard: int) -> str:
    return os.path.join(root, f"shard-{shard:04d}")


def check_shard_dir(path: str, shard: int) -> None:
    """An existing sharded store's shard directory must be there: opening would create an empty store instead."""
    if not os.path.isdir(path):
        raise CorruptStoreError(f"shard {shard}: {path} does not exist, but SHARDS.json says the store has this shard "
                                "(on many machines: is the shard placed on the wrong node?)")


def read_shard_count(root: str, requested: int | None) -> int | None:
    """The shard count ``SHARDS.json`` records (None for a new store); a conflicting ``requested`` count is an
    ``InvalidArgumentError``."""
    from .._fs import get_fs

    cfg_path = os.path.join(root, SHARDS_FILE)
    fs = get_fs()
    if not fs.exists(cfg_path):
        return None
    try:
        cfg = json.loads(fs.read_bytes(cfg_path))
    except (OSError, ValueError) as exc:
        raise StorageError(f"{cfg_path} is unreadable: {exc}") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT_VERSION:
        raise UnsupportedFormatError(f"{cfg_path}: unknown format {cfg.get('format') if isinstance(cfg, dict) else cfg!r}")
    stored = cfg.get("n_shards")
    if isinstance(stored, bool) or not isinstance(stored, int) or not 1 <= stored <= MAX_SHARDS:
        raise StorageError(f"{cfg_path}: n_shards must be an int in [1, {MAX_SHARDS}], got {stored!r}")
    if requested is not None and requested != stored:
        raise InvalidArgumentError(f"the store at {root} has {stored} shards, not {requested}")
    return stored


def check_shard_count(n_shards: object) -> int:
    if n_shards is None:
        return DEFAULT_SHARDS
    if isinstance(n_shards, bool) or not isinstance(n_shards, int):
        raise InvalidArgumentTypeError("n_shards must be an int")
    if not 1 <= n_shards <= MAX_SHARDS:
        raise InvalidArgumentError(f"n_shards must be in [1, {MAX_SHARDS}], got {n_shards}")
    return n_shards


def write_shard_count(root: str, n_shards: int) -> None:
    """Write ``SHARDS.json`` atomically (temp file, fsync, rename, directory fsync)."""
    from .._fs import get_fs

    data = json.dumps({"format": FORMAT_VERSION, "n_shards": n_shards, "hash": "blake2b-8"}).encode()
    get_fs().write_atomic(os.path.join(root, SHARDS_FILE), [data])
