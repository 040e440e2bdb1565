"""The cost model: what each plan costs on this machine, for the planner and for `estimate_query` (SPEC section 4).

The planner (`vecstore_ref.query`) and the estimates read the same numbers, so an estimate describes the plan
the query will run and what that plan costs. They are **measured**, on this machine and on the store's own data,
the first time a store needs them (`CostModel.ensure`): timed runs of the very kernels the plans call, each the
best of a few repetitions (a busy moment makes a run slower, never faster, so the best is the steadiest figure):

- **scans**: nanoseconds per row of an exact scan of a subset of the rows, at several densities (a subset that is
  1 % of the table is read from scattered rows, which costs more per row than a contiguous stream);
- **graph walks**: microseconds and distance computations of an unfiltered HNSW search at a few ``ef``, and of a
  filtered walk (`vecstore_ref.kernels.filtered_search`) with random masks at a few selectivities, as multiples
  of the unfiltered walk at the store's ``ef_search``;
- **the store's own share**: validating the vector and building the result objects.

Between the measured points the model interpolates on log scales. The calibration is saved with the store (the
``cost_model`` entry of the manifest's options, written at the next checkpoint or at ``close``), reused by the
next open on the same machine, and measured again when the store has grown or shrunk by ``REFRESH_FACTOR`` since,
or when the machine, dimension, metric or graph parameters differ. Plans therefore change only when the
calibration does, never from one query to the next: ``query_batch`` gets the plans ``query`` gets.

The unit of work is one **distance computation** (the kernels count them: ``SearchStats``); ``cost_estimate`` is
estimated distance computations divided by the number of visible records (1.0 = one full exact scan).
"""

from __future__ import annotations

import math
import os
import platform
import threading
import time
from dataclasses import dataclass

import numpy as np

from .errors import InvalidArgumentError, VecStoreError
from .filter import Filter, parse_filter
from .types import QUERY_AND_ARGUMENTS, QueryEstimate, unpack_query
from .validation import validate_ef, validate_k, validate_vector

MODEL_VERSION = 1
REFRESH_FACTOR = 2.0  # measure again when the visible count has grown (or shrunk) by this factor
MIN_CALIBRATION_ROWS = 256  # below this a store uses the defaults: every plan takes microseconds
SCAN_DENSITIES = (1.0, 0.25, 0.06, 0.015, 0.004)  # rows of the table a timed subset scan reads
SCAN_ROWS = 65_536  # rows per timed subset scan (at most): more than the caches hold
WALK_EFS = (16, 64, 256)
WALK_SELECTIVITIES = (0.5, 0.15, 0.05, 0.015)
WALK_QUERIES = 8  # per round of timing
REPEATS = 3

# Used until a store is calibrated, or when it is too small to time (a 128-d row costs ~30 ns to scan here).
DEFAULT_SCAN_NS = 0.25
DEFAULT_OVERHEAD_US = 12.0
DEFAULT_RESULT_US = 0.6

_machine: str | None = None


def machine_fingerprint() -> str:
    """CPU model, core count and architecture: a calibration made on another machine is measured again."""
    global _machine
    if _machine is None:
        model = platform.processor() or ""
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                for line in f:
                    if line.startswith("model name"):
                        model = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
        _machine = f"{model} / {os.cpu_count()} cores / {platform.machine()}"
    return _machine


def _curve(points, col: int = 1) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(log x, log y)`` of measured points ``[[x, y0, y1, ...], ...]`` (column ``col``), sorted by x."""
    pts = sorted((p[0], p[col]) for p in points)
    return (tuple(math.log(max(x, 1e-12)) for x, _ in pts), tuple(math.log(max(y, 1e-12)) for _, y in pts))


def _interp(x: float, curve) -> float:
    """``y(x)`` on log-log scales: linear between measured points, extended along the end segments."""
    lxs, lys = curve
    if len(lxs) == 1:
        return math.exp(lys[0])
    lx = math.log(max(x, 1e-12))
    i = 1
    last = len(lxs) - 1
    while i < last and lx > lxs[i]:
        i += 1
    x0, x1 = lxs[i - 1], lxs[i]
    if x1 == x0:
        return math.exp(lys[i])
    return math.exp(lys[i - 1] + (lys[i] - lys[i - 1]) * (lx - x0) / (x1 - x0))


def _best_us(fn, repeats: int = REPEATS) -> float:
    """The best of ``repeats`` timed calls of ``fn`` (microseconds)."""
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e6


class CostModel:
    """A store's measured costs (see the module docstring), and the time and work of each plan built on them.

    ``cal`` is the calibration, a JSON-able dict (None before the first one); it is replaced whole, so readers
    never see half of one.
    """

    def __init__(self, saved: dict | None = None):
        self._saved = saved if isinstance(saved, dict) else None  # what the manifest holds: kept until replaced
        self._lock = threading.Lock()
        self.cal: dict | None = None
        self._curves: dict = {}
        if self._saved is not None and self._saved.get("version") == MODEL_VERSION:
            try:
                self._set(self._saved)
            except (KeyError, TypeError, ValueError, IndexError):  # a damaged entry: measured again when needed
                self.cal = None

    def _set(self, cal: dict) -> None:
        """Adopt a calibration, with its curves in log scale (what the planner reads on every query)."""
        curves = {"scan": _curve(cal["scan"])}
        if cal.get("walk"):
            curves["walk_us"], curves["walk_dist"] = _curve(cal["walk"], 1), _curve(cal["walk"], 2)
        if cal.get("filtered"):
            curves["filtered_us"], curves["filtered_dist"] = _curve(cal["filtered"], 1), _curve(cal["filtered"], 2)
        self._curves = curves
        self.cal = cal

    # --- calibration ------------------------------------------------------------------------------------------

    def to_dict(self) -> dict | None:
        """What the manifest saves (the last calibration, or what was loaded, or None)."""
        return self.cal if self.cal is not None else self._saved

    def stale(self, store) -> bool:
        """Whether the calibration is missing or was made for other data, parameters or another machine."""
        cal = self.cal
        st = store._state
        if st.dim is None or st.n_live < MIN_CALIBRATION_ROWS:
            return False  # nothing worth timing: the defaults serve
        if cal is None:
            return True
        n = max(1, cal.get("n_live", 1))
        if (cal.get("machine") != machine_fingerprint() or cal.get("dim") != st.dim
                or cal.get("metric") != store._metric or not n / REFRESH_FACTOR <= st.n_live <= n * REFRESH_FACTOR):
            return True
        if getattr(st.index, "kind", "flat") != "hnsw":
            return False
        if not cal.get("walk"):  # measured while the graph was too small (or with the flat index)
            return st.index.n_nodes >= MIN_CALIBRATION_ROWS
        return (cal.get("m"), cal.get("ef_search")) != (store._hnsw.m, store._hnsw.ef_search)

    def ensure(self, store) -> None:
        """Calibrate if `stale` (one reader at a time; the others wait for its result). Runs under the store's
        read lock: it reads the state and times kernels, and changes nothing but this model."""
        if not self.stale(store):
            return
        with self._lock:
            if self.stale(store):
                self._set(calibrate(store))

    # --- the costs of each plan -------------------------------------------------------------------------------

    def _get(self, key, default):
        cal = self.cal
        return default if cal is None else cal.get(key, default)

    def overhead_ms(self, k: int) -> float:
        """The store's own share of a query returning ``k`` results: validation, lock, plan, result objects."""
        return (self._get("overhead_us", DEFAULT_OVERHEAD_US) + k * self._get("result_us", DEFAULT_RESULT_US)) / 1e3

    def scan_ns(self, n_rows: int, n_slots: int) -> float:
        """Nanoseconds per row of an exact scan of ``n_rows`` of ``n_slots`` rows."""
        curve = self._curves.get("scan")
        if curve is None:
            return DEFAULT_SCAN_NS * self._get("dim", 128)
        return _interp(min(1.0, max(n_rows, 1) / max(n_slots, 1)), curve)

    def scan_ms(self, n_rows: int, n_slots: int) -> float:
        return n_rows * self.scan_ns(n_rows, n_slots) / 1e6

    def walk(self, ef: int, selectivity: float | None = None, n_nodes: int = 0) -> tuple[float, float]:
        """``(ms, distance computations)`` of one graph walk of width ``ef``; filtered when ``selectivity`` is
        given (the fraction of the nodes allowed). Before a calibration: about ``ef x 1.2m`` distances, each
        costing two scanned rows."""
        c = self._curves
        if "walk_us" in c:
            us, d = _interp(ef, c["walk_us"]), _interp(ef, c["walk_dist"])
        else:
            m = self._get("m", 16)
            d = ef * 1.2 * m + m * math.log(max(n_nodes, 2)) / math.log(max(m, 2))
            us = d * 2 * self.scan_ns(1, 1) / 1e3
        if selectivity is not None:
            s = min(max(selectivity, 1e-6), 1.0)
            if "filtered_us" in c:
                us *= _interp(s, c["filtered_us"])
                d *= _interp(s, c["filtered_dist"])
            else:
                us, d = us / s ** 0.5, d / s ** 0.5
        if n_nodes:
            d = min(d, float(n_nodes))
        return us / 1e3, d


def calibrate(store) -> dict:
    """Time the kernels of every plan on ``store``'s data (module docstring). About 30-100 ms, once per store."""
    from .index.base import DTYPE_SLOT, DTYPE_VEC, query_inv_norm
    from .jit import load as load_kernels

    scan_subset = load_kernels("filtered_search").scan_subset

    st = store._state
    t = st.table
    n = st.n_slots
    rng = np.random.default_rng(0)
    live = np.flatnonzero(st.live[:n]).astype(DTYPE_SLOT)
    queries = [np.ascontiguousarray(t.vectors[s], dtype=DTYPE_VEC)
               for s in rng.choice(live, WALK_QUERIES * REPEATS)]
    res_d = np.empty(10, dtype=DTYPE_VEC)
    res_s = np.empty(10, dtype=DTYPE_SLOT)
    q0 = queries[0]
    q_inv = query_inv_norm(t.metric, q0)

    # exact scans of subsets, at several densities: each repetition on rows of its own (a subset read twice would
    # come from the cache, which a query of a real workload finds taken by everything else it reads)
    scan_ns: dict[float, float] = {}
    for density in SCAN_DENSITIES:
        rows = max(16, min(SCAN_ROWS, int(density * n)))
        window = min(n, int(math.ceil(rows / density)))
        best = math.inf
        for rep in range(REPEATS + 2):
            start = int(rng.integers(0, n - window + 1))
            cand = np.sort(rng.choice(window, size=min(rows, window), replace=False)).astype(DTYPE_SLOT) + start
            if rep == 0:
                scan_subset(t.metric_code, q0, q_inv, t.vectors, t.inv_norms, cand, res_d, res_s)  # load the kernel
                continue
            t0 = time.perf_counter()
            scan_subset(t.metric_code, q0, q_inv, t.vectors, t.inv_norms, cand, res_d, res_s)
            best = min(best, (time.perf_counter() - t0) * 1e9 / cand.shape[0])
        scan_ns.setdefault(cand.shape[0] / window, max(0.05, best))
    scan = [[d, ns] for d, ns in sorted(scan_ns.items(), reverse=True)]  # densest first
    cal = {"version": MODEL_VERSION, "machine": machine_fingerprint(), "dim": st.dim, "metric": store._metric,
           "n_live": int(st.n_live), "calibrated_at": time.time(), "scan": scan}

    # the store's own share: validation and result objects
    from .validation import validate_query_vector

    take = np.asarray(live[:10], dtype=np.int32)
    dists = np.sort(rng.random(len(take)).astype(DTYPE_VEC))
    store._results(take, dists)
    res_us = _best_us(lambda: store._results(take, dists), 5)
    val_us = _best_us(lambda: validate_query_vector(q0, st.dim, store._metric), 5)
    cal["result_us"] = res_us / max(1, len(take))
    cal["overhead_us"] = val_us + OVERHEAD_BASE_US

    index = st.index
    if getattr(index, "kind", "flat") == "hnsw" and index.n_nodes >= MIN_CALIBRATION_ROWS:
        cal["m"] = store._hnsw.m
        cal["ef_search"] = store._hnsw.ef_search
        allowed = st.live
        n_unlinked = int(index.n_unlinked)
        unlinked_us = n_unlinked * scan[0][1] / 1e3  # the exact scan of the queue that every walk makes

        def walk_us(fn) -> tuple[float, float]:
            """Per query: the best of ``REPEATS`` rounds, each over queries of its own (a query repeated would
            find its rows in the cache), and the mean distance computations."""
            fn(queries[0])  # loads the kernel
            best, work = math.inf, []
            for r in range(REPEATS):
                batch = queries[r::REPEATS]
                t0 = time.perf_counter()
                work += [fn(q) for q in batch]
                best = min(best, (time.perf_counter() - t0) * 1e6 / len(batch))
            return max(best - unlinked_us, 0.1), float(np.mean(work))

        walk: list[list[float]] = []
        for ef in WALK_EFS:
            e = min(ef, index.n_nodes)
            if walk and e <= walk[-1][0]:
                break
            us, dist = walk_us(lambda q, e=e: index.top(q, 10, allowed, e)[2])
            walk.append([e, us, dist])
        cal["walk"] = walk
        base_us, base_dist = (CostModel(cal).walk(store._hnsw.ef_search))
        base_us *= 1e3
        filtered = []
        for s in WALK_SELECTIVITIES:
            mask = st.live & (rng.random(st.live.shape[0]) < s)
            n_ok = int(np.count_nonzero(mask[:n]))
            if n_ok < 4 * store._hnsw.ef_search:
                break
            sel = n_ok / max(1, index.n_nodes)
            us, dist = walk_us(lambda q, mask=mask, sel=sel: index.filtered_top(q, 10, mask, None, sel)[2])
            filtered.append([sel, us / base_us, dist / max(1.0, base_dist)])
        cal["filtered"] = filtered
    return cal


OVERHEAD_BASE_US = 6.0  # the read lock, the filter and mask caches, the plan and the kernel call (measured)


@dataclass
class CheckedQuery:
    """A query's arguments as `estimate_query` checks them, before any store state is read: what is wrong with
    them (``errors``) and the usable parts (None where a part is not usable)."""

    errors: list[str]
    vector: np.ndarray | None
    k: int | None
    ef: int | None
    flt: Filter | None
    parsed: bool  # False: the filter did not parse (query() would raise; nothing would run)


def check_query(q, k, filter, ef, dim: int | None, metric: str, max_k: int) -> CheckedQuery:
    """Check every argument of a query, collecting the errors instead of raising (estimates never raise)."""
    vector, k, filter, ef, conflict = unpack_query(q, k, filter, ef)
    errors: list[str] = [QUERY_AND_ARGUMENTS] if conflict else []
    try:
        k = validate_k(k, max_k)
    except VecStoreError as exc:
        errors.append(str(exc))
        k = None
    try:
        ef = validate_ef(ef)
    except VecStoreError as exc:
        errors.append(str(exc))
        ef = None
    vec: np.ndarray | None = None
    try:
        vec = validate_vector(vector, dim, metric, "query vector")
    except VecStoreError as exc:
        errors.append(str(exc))
    except Exception as exc:  # estimate never raises, whatever it is handed
        errors.append(f"query vector is not usable: {exc}")
    flt: Filter | None = None
    parsed = True
    if filter is not None:
        try:
            flt = filter if isinstance(filter, Filter) else parse_filter(filter)
        except VecStoreError as exc:
            errors.append(str(exc))
            parsed = False
        except Exception as exc:
            errors.append(f"filter is not usable: {exc}")
            parsed = False
    return CheckedQuery(errors, vec, k, ef, flt, parsed)


def still_matches(n_allowed: int, visible: int) -> str:
    """The note beside a clause that cannot match but sits under NOT or OR: the filter still matches records."""
    return f"the filter as a whole still matches {n_allowed:,} of the {visible:,} visible records"


def recommend(k: int | None, ef: int | None, filtered: bool, n_allowed: int, visible: int, dead: int,
              dim: int | None) -> list[str]:
    """The specific advice of an estimate: a k beyond what matches, an ef below k, dead records to reclaim."""
    out: list[str] = []
    if filtered and n_allowed == 0:
        out.append(f"the filter matches none of the {visible:,} visible records: query() returns no results")
    elif k is not None and filtered and n_allowed < k:
        out.append(f"k ({k}) exceeds the {n_allowed:,} records matching the filter")
    elif k is not None and k > visible:
        out.append(f"k ({k}) exceeds the {visible:,} visible records")
    if ef is not None and k is not None and ef < k:
        out.append(f"ef ({ef}) < k ({k}): the search widens to ef = k = {k}")
    if dead and visible + dead:
        per_record = 4 * (dim or 0) + 64
        out.append(f"{dead:,} dead records ({dead / (visible + dead):.0%}): compact() would reclaim "
                   f"about {dead * per_record / 1e6:.1f} MB")
    return out


def estimate(store, q, k=10, filter=None, ef=None) -> QueryEstimate:
    """The body of `VecStore.estimate_query`. Never raises for a bad query."""
    st = store._state
    checked = check_query(q, k, filter, ef, st.dim, store._metric, store._max_k)
    errors, k, ef, flt, parsed = checked.errors, checked.k, checked.ef, checked.flt, checked.parsed
    filter_problems: list[str] = []
    if flt is not None:
        try:
            filter_problems = flt.check_against(st.columns.fields())
            errors.extend(filter_problems)
        except VecStoreError as exc:
            errors.append(str(exc))
            flt, parsed = None, False
        except Exception as exc:
            errors.append(f"filter is not usable: {exc}")
            flt, parsed = None, False

    counts = st.counts(store._now())
    visible = counts["visible"]
    n_allowed = visible
    if flt is not None:
        try:
            n_allowed = store._match(flt).n  # from the columns (cached per filter and store version)
        except Exception as exc:  # pragma: no cover - a filter that parsed evaluates
            errors.append(f"filter is not usable: {exc}")
            n_allowed = 0
    elif not parsed:
        n_allowed = 0  # query() would raise: nothing runs
    if filter_problems and n_allowed:  # a clause that cannot match, under NOT or OR (or in a NOT IN)
        errors.append(still_matches(n_allowed, visible))
    selectivity = n_allowed / visible if visible else 0.0
    kk = k or 10
    if not errors:
        try:
            store._cost.ensure(store)
        except Exception:  # pragma: no cover - timing a kernel does not fail; the defaults serve if it does
            pass
    plan = store._plan(flt, n_allowed, kk, ef, store._match(flt) if flt is not None else None) if parsed \
        else "filtered-scan"
    dist, ms = plan_cost(store, plan, n_allowed, visible, kk, ef)
    return QueryEstimate(
        valid=not errors,
        errors=errors,
        cost_estimate=(dist / visible) if visible else 0.0,
        estimated_duration_ms=ms,
        estimated_distance_computations=int(round(dist)),
        plan=plan,
        selectivity=selectivity,
        recommendations=recommend(k, ef, flt is not None, n_allowed, visible, counts["deleted_count"], st.dim),
    )


def plan_cost(store, plan: str, n_allowed: int, visible: int, k: int, ef: int | None) -> tuple[float, float]:
    """``(distance computations, milliseconds)`` of ``plan`` by the store's cost model: the figures the planner
    compares (`vecstore_ref.query.QueryMethods._plan`) plus the store's own share."""
    cost = store._cost
    st = store._state
    found = min(k, n_allowed)
    if n_allowed == 0 or st.dim is None:
        return 0.0, cost.overhead_ms(0)
    if plan in ("flat", "filtered-scan"):
        return float(n_allowed), cost.overhead_ms(found) + cost.scan_ms(n_allowed, st.n_slots)
    dist, ms = walk_cost(store, n_allowed, k, ef, plan == "filtered-hnsw")
    return dist, cost.overhead_ms(found) + ms


def walk_cost(store, n_allowed: int, k: int, ef: int | None, filtered: bool) -> tuple[float, float]:
    """``(distance computations, milliseconds)`` of a graph walk (filtered or not), the exact scan of the vectors
    not linked yet included."""
    index = store._state.index
    e = max(ef or store._hnsw.ef_search, k)
    nodes = max(1, int(getattr(index, "n_nodes", 0)))
    ms, dist = store._cost.walk(e, n_allowed / nodes if filtered else None, nodes)
    unlinked = int(getattr(index, "n_unlinked", 0))
    if unlinked:
        dist += unlinked
        ms += store._cost.scan_ms(unlinked, store._state.n_slots)
    return dist, ms


def choose_filtered_plan(store, n_allowed: int, k: int, ef: int | None) -> str:
    """``filtered-scan`` or ``filtered-hnsw``, whichever the cost model says is faster for ``n_allowed``
    matching records (a scan when they are no more than the walk's width: it would compute as many distances)."""
    e = max(ef or store._hnsw.ef_search, k)
    if n_allowed <= e:
        return "filtered-scan"
    store._cost.ensure(store)
    scan_ms = store._cost.scan_ms(n_allowed, store._state.n_slots)
    return "filtered-scan" if scan_ms <= walk_cost(store, n_allowed, k, ef, True)[1] else "filtered-hnsw"


def explain(store, q, k=10, filter=None, ef=None):
    """The body of `VecStore.query_explain`: run the query and report what it did, phase by phase."""
    from .index.base import scores_from_distances
    from .types import ExplainedNeighbor, ExplainResult

    vector, k, filter, ef, conflict = unpack_query(q, k, filter, ef)
    if conflict:
        raise InvalidArgumentError(QUERY_AND_ARGUMENTS)
    phases: dict[str, float] = {}
    t = time.perf_counter()
    st = store._state
    k = validate_k(k, store._max_k)
    ef = validate_ef(ef)
    flt = store._filter(filter)
    if st.dim is None:
        validate_vector(vector, None, store._metric, "query vector")
        return ExplainResult([], store._plan(flt, 0, k, ef), 0, 0, 0, {"validate": (time.perf_counter() - t) * 1e3})
    vec = validate_vector(vector, st.dim, store._metric, "query vector")
    phases["validate"] = (time.perf_counter() - t) * 1e3

    t = time.perf_counter()
    visible_n = st.counts(store._now())["visible"]
    match = store._match(flt)
    n_allowed = match.n
    phases["filter"] = (time.perf_counter() - t) * 1e3
    plan = store._plan(flt, n_allowed, k, ef, match if flt is not None else None)

    t = time.perf_counter()
    if n_allowed:
        slots, dists, stats = store._search_one(vec, min(k, n_allowed), match, plan, ef)
    else:
        slots, dists, stats = np.zeros(0, np.int32), np.zeros(0, np.float32), None
    phases["search"] = (time.perf_counter() - t) * 1e3

    t = time.perf_counter()
    scores = scores_from_distances(store._metric, dists)
    order = sorted(range(len(slots)), key=lambda i: (-float(scores[i]), st.id_of(int(slots[i]))))
    clause_texts = flt.clauses() if flt is not None else []
    clause_masks = flt.clause_masks(st.columns, st.n_slots) if flt is not None else []
    neighbors = []
    for rank, i in enumerate(order, start=1):
        s = int(slots[i])
        matched = [c for c, mask in zip(clause_texts, clause_masks) if mask[s]]
        neighbors.append(ExplainedNeighbor(st.id_of(s), rank, float(scores[i]), st.metadata(s), matched))
    phases["fetch"] = (time.perf_counter() - t) * 1e3
    return ExplainResult(
        neighbors=neighbors,
        plan=plan,
        distance_computations=int(stats.distance_computations) if stats is not None else 0,
        hops=int(stats.hops) if stats is not None else 0,
        candidates_filtered_out=int(visible_n - n_allowed),
        phases_ms=phases,
    )
