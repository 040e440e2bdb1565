"""vecstore_ref: an embedded vector store with HNSW and exact indexes, over an append-only log plus snapshots.

Quick start::

    import vecstore_ref as vs

    with vs.VecStore.open("./data", dim=3, metric="cosine") as store:
        store.upsert("a", [1.0, 0.0, 0.0], {"lang": "en"})
        store.query([1.0, 0.1, 0.0], k=5, filter="lang = 'en'")

Importing this package does not import numba: the kernels compile (or load from their cache) on first use.
"""

import importlib
import logging
from typing import TYPE_CHECKING, Any

from .config import CheckpointConfig, CompactionConfig, HNSWParams
from .errors import *  # noqa: F403 - the error tree is part of the public API
from .errors import __all__ as _error_names
from .filter import Filter, parse_filter
from .maintenance import Maintenance
from .store import VecStore
from .types import (
    BatchError,
    BatchQueryResult,
    BatchResult,
    CompactionResult,
    Delete,
    ExplainResult,
    Neighbor,
    Query,
    QueryEstimate,
    Record,
    RecoveryReport,
    Restore,
    SetTTL,
    ShardedStats,
    SoftDelete,
    StoreStats,
    UpdateMetadata,
    Upsert,
    VerifyReport,
)

if TYPE_CHECKING:
    from .namespaces import BackupInfo, NamespaceManager, Quotas
    from .scale import ShardedStore

__version__ = "0.1.0"

# Imported on first use (PEP 562): a program that opens one store pays nothing for namespaces (tar, hashing) or
# sharding (Ray's wire format). ``vs.NamespaceManager`` works as any attribute does.
_LAZY = {"BackupInfo": ".namespaces", "NamespaceManager": ".namespaces", "Quotas": ".namespaces",
         "ShardedStore": ".scale"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "VecStore",
    "NamespaceManager",
    "ShardedStore",
    "Quotas",
    "BackupInfo",
    "Query",
    "Record",
    "Neighbor",
    "BatchQueryResult",
    "Upsert",
    "Delete",
    "SoftDelete",
    "Restore",
    "UpdateMetadata",
    "SetTTL",
    "BatchError",
    "BatchResult",
    "CheckpointConfig",
    "CompactionConfig",
    "CompactionResult",
    "HNSWParams",
    "Maintenance",
    "RecoveryReport",
    "ShardedStats",
    "StoreStats",
    "VerifyReport",
    "QueryEstimate",
    "ExplainResult",
    "Filter",
    "parse_filter",
    *_error_names,
]
