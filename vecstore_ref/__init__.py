"""vecstore_ref: an embedded vector store with HNSW and exact indexes, over an append-only log plus snapshots.

Quick start::

    import vecstore_ref as vs

    with vs.VecStore.open("./data", dim=3, metric="cosine") as store:
        store.upsert("a", [1.0, 0.0, 0.0], {"lang": "en"})
        store.query([1.0, 0.1, 0.0], k=5, filter="lang = 'en'")

Importing this package does not import numba: the kernels compile (or load from their cache) on first use.
"""

import logging

from .config import CheckpointConfig, CompactionConfig, HNSWParams
from .errors import *  # noqa: F403 - the error tree is part of the public API
from .errors import __all__ as _error_names
from .filter import Filter, parse_filter
from .maintenance import Maintenance
from .namespaces import BackupInfo, NamespaceManager, Quotas
from .scale import ShardedStore
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
    SoftDelete,
    StoreStats,
    UpdateMetadata,
    Upsert,
    VerifyReport,
)

__version__ = "0.1.0"

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
    "StoreStats",
    "VerifyReport",
    "QueryEstimate",
    "ExplainResult",
    "Filter",
    "parse_filter",
    *_error_names,
]
