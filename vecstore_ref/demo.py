"""The demo behind ``vecstore-ref demo``: a store under ``<data>/demo``, a few thousand generated vectors with
metadata, filtered queries, and the approximate index checked against an exact scan.

The vectors are drawn around a few "topic" centres so that neighbours mean something: the nearest records to a
query drawn near a topic share that topic.
"""

from __future__ import annotations

import os
import time

import numpy as np

TOPICS = ("databases", "graphs", "compilers", "networks", "storage", "search", "numerics", "security")
LANGS = ("en", "de", "fr", "ja")


def make_corpus(n: int, dim: int, seed: int = 0):
    """``n`` vectors near 8 topic centres, with metadata ``topic``, ``lang``, ``year``, ``stars`` and ``tags``."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(TOPICS), dim)).astype(np.float32)
    topic = rng.integers(0, len(TOPICS), n)
    vectors = centres[topic] + 0.6 * rng.normal(size=(n, dim)).astype(np.float32)
    ids = [f"doc-{i:05d}" for i in range(n)]
    metas = []
    for i in range(n):
        t = TOPICS[topic[i]]
        metas.append({
            "topic": t,
            "lang": LANGS[int(rng.integers(0, len(LANGS)))],
            "year": int(rng.integers(2000, 2027)),
            "stars": round(float(rng.gamma(2.0, 2.0)), 2),
            "tags": sorted({t, TOPICS[int(rng.integers(0, len(TOPICS)))]}),
        })
    return ids, vectors.astype(np.float32), metas, centres


QUERIES = (
    ("no filter", None),
    ("lang = 'en' AND year >= 2020", "lang = 'en' AND year >= 2020"),
    ("tags CONTAINS 'storage' OR stars > 9", "tags CONTAINS 'storage' OR stars > 9"),
    ("topic IN ('search', 'graphs') AND NOT lang = 'ja'", "topic IN ('search', 'graphs') AND NOT lang = 'ja'"),
)

# The kernels the demo runs: a first run compiles them all at the start, in one go, and says so.
FIRST_RUN_KERNELS = ("query_steps", "id_hash", "hnsw_build", "hnsw_repair", "hnsw_search", "hnsw_batch", "filtered_search",
                     "flat_search", "flat_blas")
SECOND_RUN_KERNELS = ("query_steps", "id_hash", "hnsw_search", "hnsw_batch", "filtered_search", "flat_search", "flat_blas")


def run_demo(data_dir: str = "./data", n: int = 5000, dim: int = 64, out=print) -> int:
    """Create the demo store under ``<data_dir>/demo`` and show it off; if it is already there (a second run),
    reopen it and show what it holds, without ingesting again."""
    import vecstore_ref as vs
    from vecstore_ref.jit import report_compiles, warmup

    started = time.perf_counter()
    path = os.path.join(data_dir, "demo")
    again = _earlier_run(path, out)
    out(f"vecstore_ref demo: store at {os.path.abspath(path)}"
        + (" (made by an earlier run: reopening it, nothing is ingested again)" if again else ""))
    with report_compiles(out):
        warmup(SECOND_RUN_KERNELS if again else FIRST_RUN_KERNELS)
    t0 = time.perf_counter()
    if again:
        store = vs.VecStore.open(path)
    else:
        store = vs.VecStore.open(path, dim=dim, metric="cosine", index="hnsw")
    with store:
        took = time.perf_counter() - t0
        rep = store.recovery_report
        st = store.stats()
        out(f"opened in {1e3 * took:.0f} ms: {st.visible:,} visible records"
            + (f", {rep.records_replayed} log records replayed after the snapshot" if again else ""))
        dim = st.dim or dim  # a second run queries the store made by the first, whatever its --dim was
        # A second run needs only the topic centres and the first id, not the corpus again (nor its memory).
        ids, vectors, metas, centres = make_corpus(1 if again else n, dim)
        rng = np.random.default_rng(1)
        q = centres[TOPICS.index("search")] + 0.3 * rng.normal(size=dim).astype(np.float32)
        if not again:
            t0 = time.perf_counter()
            store.upsert_many(ids, vectors, metas)
            took = time.perf_counter() - t0
            out(f"ingested {n} vectors of dim {dim} with metadata in {took:.2f} s ({n / took:,.0f} vectors/s)")
            t0 = time.perf_counter()
            store.flush_index()  # writes do not wait for the graph; here we wait, so that queries walk a full graph
            out(f"linked them into the HNSW graph in {time.perf_counter() - t0:.2f} s "
                f"(a background thread does this by itself)")
        _show_queries(store, q, out)
        if not again:
            store.soft_delete(ids[0])
            store.upsert_with_ttl("short-lived", q, {"topic": "search"}, ttl=3600)
            out(f"\nsoft-deleted {ids[0]}; added 'short-lived' with a one-hour TTL")
        else:
            out(f"\nfrom the first run: {ids[0]} soft-deleted: {_exists(store, ids[0], deleted=True)}; "
                f"'short-lived' (one-hour TTL) still visible: {_exists(store, 'short-lived')}")
        qs = centres[rng.integers(0, len(TOPICS), 100)] + 0.3 * rng.normal(size=(100, dim)).astype(np.float32)
        approx = store.query_batch(qs, k=10)
        recall = _recall_against_exact(path, qs, approx)
        st = store.stats()
        out(f"HNSW recall@10 against an exact scan on 100 queries: {recall:.3f}")
        out(f"stats: visible={st.visible} soft_deleted={st.soft_deleted} deleted_count={st.deleted_count} "
            f"log={st.log_bytes:,} B snapshot={st.snapshot_bytes:,} B index={st.index_effective}")
        if not again:
            store.snapshot()
            out("wrote a snapshot; run the demo again to see the store reopen from it")
        else:
            out(f"delete {os.path.abspath(path)} to start over")
    out(f"demo done in {time.perf_counter() - started:.1f} s")
    return 0


def _earlier_run(path: str, out) -> bool:
    """Whether ``path`` holds the store of an earlier demo run that finished (its first record soft-deleted, the
    last step before the snapshot). A store an interrupted run left is removed, to start over; anything else
    there (files that are not a store, a store the demo did not make) is an error, never shown as a demo."""
    import shutil

    import vecstore_ref as vs
    from vecstore_ref.errors import InvalidArgumentError
    from vecstore_ref.storage.format import MANIFEST_NAME

    if not (os.path.isdir(path) and os.listdir(path)):
        return False
    if not os.path.isfile(os.path.join(path, MANIFEST_NAME)):
        raise InvalidArgumentError(f"{path} holds files that are not a vecstore_ref store; give the demo another "
                                   "--data directory")
    with vs.VecStore.open(path, read_only=True) as store:
        if _exists(store, "doc-00000", deleted=True):
            return True
        ids = store.ids()
        hidden = store.stats().deleted_count  # soft-deleted or expired: an unfinished demo run has none
    if hidden or not all(i.startswith("doc-") or i == "short-lived" for i in ids):
        raise InvalidArgumentError(f"{path} holds a store the demo did not make; give the demo another --data "
                                   "directory")
    out(f"(an earlier run stopped before it finished, with {len(ids):,} records: starting over)")
    shutil.rmtree(path)
    return False


def _exists(store, id_: str, deleted: bool = False) -> bool:
    from vecstore_ref.errors import NotFoundError

    try:
        return store.get(id_, include_deleted=deleted).deleted == deleted
    except NotFoundError:
        return False


def _show_queries(store, q, out) -> None:
    for label, flt in QUERIES:
        t0 = time.perf_counter()
        hits = store.query(q, k=5, filter=flt)
        ms = 1e3 * (time.perf_counter() - t0)
        out(f"\nquery near topic 'search', filter: {label}  ({ms:.1f} ms)")
        for h in hits:
            md = h.metadata or {}
            fields = "  ".join(f"{key}={md[key]}" for key in ("topic", "lang", "year", "stars", "tags") if key in md)
            out(f"  {h.id:<12} score={h.score:.4f}  {fields}")


def _recall_against_exact(path, qs, approx) -> float:
    """Recall of ``approx`` against the flat index over the same records (a read-only second handle)."""
    import vecstore_ref as vs

    with vs.VecStore.open(path, index="flat", read_only=True) as exact_store:
        exact = exact_store.query_batch(qs, k=10)
    hits = total = 0
    for i in range(qs.shape[0]):
        truth = {x for x in exact.ids[i] if x is not None}
        got = {x for x in approx.ids[i] if x is not None}
        hits += len(truth & got)
        total += len(truth)
    return hits / max(1, total)
