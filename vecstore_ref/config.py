"""Parameters and limits, as frozen dataclasses with readable validation.

The HNSW parameter names are the ones hnswlib and faiss users know (``m``, ``ef_construction``, ``ef_search``);
each says what it costs. Limits of the data model (SPEC section 1) live here too so that every module
validates against the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from .errors import InvalidArgumentError, InvalidArgumentTypeError

# --- limits of the data model (SPEC section 1) ----------------------------------------------------------------
MAX_DIM = 65_536
MAX_ID_BYTES = 512
MAX_K = 10_000
MAX_K_LIMIT = 2**62  # the largest max_k: every k then fits the kernels' int64 arithmetic with room to spare
MAX_TTL_SECONDS = 100 * 365.25 * 24 * 3600  # 100 years
MAX_METADATA_BYTES = 64 * 1024  # 64 KiB as JSON
MAX_METADATA_KEY_CHARS = 256
MAX_METADATA_LIST_ITEMS = 1024
MAX_FILTER_CHARS = 8 * 1024  # 8 KiB of filter text
MAX_FILTER_DEPTH = 64
MAX_BATCH_OPS = 100_000

METRICS = ("cosine", "euclidean", "dot")
INDEX_KINDS = ("hnsw", "flat")
DURABILITY_MODES = ("fsync", "batch", "none")

# Integer metric codes, as the Numba kernels see them (no strings inside kernels).
METRIC_CODES = {"euclidean": 0, "dot": 1, "cosine": 2}


def _check_int(name: str, value: object, lo: int, hi: int, why: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentTypeError(f"{name} must be an int, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise InvalidArgumentError(f"{name} must be between {lo} and {hi}, got {value}{why}")


@dataclass(frozen=True)
class HNSWParams:
    """Parameters of the HNSW graph (Malkov & Yashunin 2018).

    Attributes:
        m: links per node on the upper layers; layer 0 keeps ``2 * m``. More links mean higher recall and more
            memory (``2 * m * 4`` bytes per vector on layer 0) and slower inserts. hnswlib and faiss default to 16;
            5 to 48 is the useful range.
        ef_construction: width of the candidate list while inserting. Higher gives a better graph and a slower
            build; past ~200 the gain is small. hnswlib defaults to 200, faiss to 40.
        ef_search: width of the candidate list while querying (at least ``k`` is used). The recall/speed knob:
            doubling it roughly halves the queries per second. Overridable per query with ``ef``.
        seed: seeds the level draw, so the same inserts give the same graph.
    """

    m: int = 16
    ef_construction: int = 200
    ef_search: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        _check_int("m", self.m, 2, 256, " (links per node; 16 is the usual choice)")
        _check_int("ef_construction", self.ef_construction, 1, 100_000)
        _check_int("ef_search", self.ef_search, 1, 100_000)
        _check_int("seed", self.seed, 0, 2**63 - 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HNSWParams:
        return cls(**{k: d[k] for k in ("m", "ef_construction", "ef_search", "seed") if k in d})


@dataclass(frozen=True)
class CompactionConfig:
    """When [`VecStore.maybe_compact`][vecstore_ref.VecStore.maybe_compact] compacts.

    It runs when there is at least one dead record and either ``deleted >= min_deleted_records`` or
    ``deleted / (visible + deleted) >= min_deleted_ratio``.
    """

    enabled: bool = True
    min_deleted_records: int = 1000
    min_deleted_ratio: float = 0.1

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not isinstance(self.enabled, bool):
            raise InvalidArgumentTypeError("enabled must be a bool")
        _check_int("min_deleted_records", self.min_deleted_records, 0, 2**62)
        r = self.min_deleted_ratio
        if isinstance(r, bool) or not isinstance(r, (int, float)):
            raise InvalidArgumentTypeError("min_deleted_ratio must be a number")
        if not (math.isfinite(r) and 0.0 <= r <= 1.0):
            raise InvalidArgumentError(f"min_deleted_ratio must be between 0 and 1, got {r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CheckpointConfig:
    """When the store writes a snapshot by itself (a *checkpoint*), on a background thread.

    A checkpoint runs when the log written since the last one holds at least ``min_log_bytes`` **and** at least
    ``min_log_fraction`` times the size of the last snapshot. The first keeps small stores from rewriting
    themselves after every few writes; the second keeps big ones from rewriting gigabytes to save a few megabytes
    of replay, and bounds the work an open does to about ``1 + min_log_fraction`` times reading the snapshot.
    With the defaults a 100k x 128 store (about 60 MB) checkpoints when it is closed, and a store loaded from
    empty to 1M x 128 checkpoints about six times on the way. ``close()`` writes a final checkpoint when anything
    was linked into the graph or 1 MiB of log was written since the last one, so a reopened store rebuilds
    nothing. While writes keep arriving, a checkpoint writes its snapshot at most at 256 MB/s, so that their fsyncs
    do not queue behind it (`vecstore_ref.checkpoint.PACED_WRITE_BYTES_PER_S`); otherwise at the disk's speed.

    Attributes:
        enabled: False writes snapshots only on ``snapshot()``, ``flush_index()``, ``compact()`` and ``close()``.
        min_log_bytes: bytes of log since the last checkpoint (64 MiB).
        min_log_fraction: log bytes since the last checkpoint over the last snapshot's bytes (0.5).
    """

    enabled: bool = True
    min_log_bytes: int = 64 * 2**20
    min_log_fraction: float = 0.5

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not isinstance(self.enabled, bool):
            raise InvalidArgumentTypeError("enabled must be a bool")
        _check_int("min_log_bytes", self.min_log_bytes, 0, 2**62)
        r = self.min_log_fraction
        if isinstance(r, bool) or not isinstance(r, (int, float)):
            raise InvalidArgumentTypeError("min_log_fraction must be a number")
        if not (math.isfinite(r) and 0.0 <= r <= 1000.0):
            raise InvalidArgumentError(f"min_log_fraction must be between 0 and 1000, got {r}")

    def due(self, log_bytes: int, snapshot_bytes: int) -> bool:
        """Whether ``log_bytes`` since the last checkpoint call for a new one."""
        return self.enabled and log_bytes >= self.min_log_bytes and log_bytes >= self.min_log_fraction * snapshot_bytes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
