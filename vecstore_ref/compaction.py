"""When to compact, and why not.

Compaction itself (`VecStore.compact`) builds a new state holding only the visible records
(`StoreState.compacted`), writes it as a snapshot, starts a fresh log, swaps the manifest and only then removes
the old files; see ``docs/concepts/compaction.md``. This module holds the rule of SPEC section 5, in one place.
"""

from __future__ import annotations

from .config import CompactionConfig


def compaction_decision(cfg: CompactionConfig, deleted: int, visible: int) -> tuple[bool, str]:
    """Whether `VecStore.maybe_compact` should run, with a reason that gives the figures and thresholds.

    Runs when ``deleted > 0`` and (``deleted >= min_deleted_records`` or ``deleted / (visible + deleted) >=
    min_deleted_ratio``).
    """
    if not cfg.enabled:
        return False, "auto-compaction is disabled"
    total = visible + deleted
    ratio = deleted / total if total else 0.0
    figures = (
        f"{deleted} deleted records ({ratio:.1%} of {total}); thresholds: "
        f"{cfg.min_deleted_records} records or a ratio of {cfg.min_deleted_ratio:.1%}"
    )
    if deleted <= 0:
        return False, f"nothing to reclaim: {figures}"
    if deleted >= cfg.min_deleted_records:
        return True, f"deleted records reached the count threshold: {figures}"
    if ratio >= cfg.min_deleted_ratio:
        return True, f"deleted records reached the ratio threshold: {figures}"
    return False, f"below both thresholds: {figures}"
