"""Compiling the Numba kernels: where the compiled code is cached, saying so when a run compiles, and warming up.

Every kernel has one explicit signature (`vecstore_ref.kernels.signatures`), so Numba compiles it when its
module is first imported, and the library imports a kernel module only when a call needs it (`load`): an
exact query never compiles the HNSW build. The machine code goes to a cache directory, and every later process
loads it in milliseconds. Numba picks the directory with its cache locators, first that works:

1. ``NUMBA_CACHE_DIR``, when it is set and writable;
2. ``__pycache__`` beside the kernel sources, when the package directory is writable (an editable install, a venv
   of your own);
3. a per-user directory (``$XDG_CACHE_HOME/numba`` or ``~/.cache/numba``) when it is not (a system or container
   install).

When none is writable the kernels compile in memory, in every process, and the library logs one warning instead
of failing (Numba itself would raise ``cannot cache function ...: no locator available``).

A first run that compiles is never silent: just before Numba starts, the library logs ``compiling the ... kernels,
first run only ...`` at INFO on the ``vecstore_ref`` logger, and how long it took afterwards; the CLI and the demo
print those lines (`report_compiles`). ``vecstore-ref warmup`` (`warmup`) compiles every kernel once, for a
container image or a CI cache, on two processes where there are two cores. Everything in this module is cheap to
import: numba loads only in `load`, `warmup` and the cache checks.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field

log = logging.getLogger("vecstore_ref")

# Every kernel module, in the order a warmup compiles them, with what its kernels are for.
PATHS = {
    "query_steps": "query steps",
    "id_hash": "id table",
    "hnsw_search": "HNSW search",
    "hnsw_exact": "HNSW exact scan",
    "hnsw_batch": "HNSW batch search",
    "filtered_search": "filtered search",
    "filtered_batch": "filtered batch search",
    "hnsw_build": "HNSW build",
    "hnsw_repair": "HNSW repair",
    "flat_search": "exact search",
    "flat_batch": "exact batch search",
    "flat_blas": "exact big-batch search",
    "fanout_wait": "shard fan-out",
}

_lock = threading.RLock()  # one thread imports (compiles) kernels at a time; the others wait for the result
_reporters: list = []
_loaded: dict = {}  # kernel modules fully imported, by name
_cache_checked: dict[str, bool] = {}


# --- where the cache is ---------------------------------------------------------------------------------------

def _sources_digest(directory: str) -> str:
    """SHA-256 of every ``.py`` file in ``directory`` (names and contents, in name order)."""
    h = hashlib.sha256()
    for name in sorted(os.listdir(directory)):
        if name.endswith(".py"):
            h.update(name.encode())
            with open(os.path.join(directory, name), "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def use_kernel_sources_stamp(directory: str) -> None:
    """Make the cached code of every kernel in ``directory`` depend on all the kernel sources there.

    Numba stamps a cache entry with its own source file only, but a kernel's machine code contains the steps it
    calls from other files (inlined): after an upgrade that changed only ``heap.py``, every kernel calling the heap
    would load its old code. So the kernels get a locator of their own, which finds the same directory as Numba's
    (the first of its locators that works) and stamps entries with a digest of every kernel source.
    """
    from numba.core import caching

    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
    base = getattr(caching, "_CacheLocator", None) or getattr(caching, "CacheLocator", None)
    if impl is None or base is None or any(getattr(c, "kernels_dir", None) == directory
                                           for c in impl._locator_classes):
        return
    standard = list(impl._locator_classes)
    stamp = _sources_digest(directory)

    class KernelSourcesLocator(base):  # type: ignore[valid-type, misc]  # Numba's locator class, found above
        kernels_dir = directory

        def __init__(self, inner):
            self._inner = inner

        def ensure_cache_path(self):
            self._inner.ensure_cache_path()

        def get_cache_path(self):
            return self._inner.get_cache_path()

        def get_source_stamp(self):
            return stamp

        def get_disambiguator(self):
            return self._inner.get_disambiguator()

        @classmethod
        def from_function(cls, py_func, py_file):
            if os.path.dirname(os.path.abspath(py_file)) != directory:
                return None
            for other in standard:
                inner = other.from_function(py_func, py_file)
                if inner is not None:
                    return cls(inner)
            return None

    impl._locator_classes = [KernelSourcesLocator, *standard]
    _use_lean_cache_loads(caching)


def _use_lean_cache_loads(caching) -> None:
    """Load this package's cached kernels without refreshing Numba's whole target context first.

    Before every cache load Numba "refreshes" its CPU target: the first time in a process that imports some forty
    modules of implementations (lists, dicts, random, linalg, datetime ...) that only a compile needs. Loading
    machine code needs none of them, only the runtime the code calls into (NRT), if it calls it, and it was half
    the time of a warm process's first query (0.12 s of 0.25 s). So for the kernels of `use_kernel_sources_stamp`'s
    directory a load initializes at most the runtime; a miss then compiles, and every compile refreshes the target
    itself.
    Any other function's loads, and any Numba without these internals, keep the standard path.
    """
    cache_class = getattr(caching, "Cache", None)
    if cache_class is None or not hasattr(cache_class, "_load_overload"):
        return
    standard_load = getattr(cache_class, "load_overload", None)
    if standard_load is None or getattr(standard_load, "lean", False):
        return
    try:
        from numba.core.runtime import rtsys
    except ImportError:  # pragma: no cover - a Numba laid out otherwise keeps its own path
        return

    def load_overload(self, sig, target_context):
        locator = getattr(getattr(self, "_impl", None), "locator", None)
        if getattr(locator, "kernels_dir", None) is None or not hasattr(self, "_cache_file"):
            return standard_load(self, sig, target_context)
        with self._guard_against_spurious_io_errors():
            if not self._enabled:
                return None
            data = self._cache_file.load(self._index_key(sig, target_context.codegen()))
            if data is None:
                return None  # a miss: the dispatcher compiles, and a compile refreshes the target itself
            if _calls_the_runtime(data):
                rtsys.initialize(target_context)
            return self._impl.rebuild(target_context, data)
        return None  # an I/O error while loading, swallowed by the guard: the dispatcher compiles

    load_overload.lean = True  # type: ignore[attr-defined]
    cache_class.load_overload = load_overload


def _calls_the_runtime(data) -> bool:
    """Whether a cached kernel's machine code calls Numba's runtime (NRT: allocation and reference counting).
    Initializing the runtime compiles its own small module (30 ms, once per process); the query kernels, compiled
    without reference counting, do not need it. Anything but the payload layout of Numba's object-code cache
    (``(libdata, ...)``, ``libdata = (name, "object", (object code, bitcode))``) counts as calling it."""
    try:
        _name, kind, (object_code, bitcode) = data[0]
    except (TypeError, ValueError, IndexError):
        return True
    if kind != "object" or not isinstance(object_code, bytes) or not isinstance(bitcode, bytes):
        return True
    return b"NRT_" in object_code or b"NRT_" in bitcode


def _function_cache(py_func):
    """Numba's cache object for ``py_func``, or None when no locator finds a writable directory."""
    from numba.core.caching import FunctionCache

    try:
        return FunctionCache(py_func)
    except RuntimeError:  # "cannot cache function ...: no locator available for file ..."
        return None


def cache_enabled(probe) -> bool:
    """Whether the kernels next to ``probe`` (a function in their module directory) can use an on-disk cache.

    False when no cache directory is writable; the first such answer in a process logs one warning.
    """
    from numba import config

    if config.DISABLE_JIT:
        return True  # plain Python: nothing compiles, nothing is cached
    where = os.path.dirname(os.path.abspath(probe.__code__.co_filename))
    if where not in _cache_checked:
        ok = _function_cache(probe) is not None
        _cache_checked[where] = ok
        if not ok:
            log.warning("no writable directory for the Numba kernel cache (NUMBA_CACHE_DIR is %s, %s is read-only "
                        "and so is the per-user cache directory): the kernels compile in memory in every process. "
                        "Set NUMBA_CACHE_DIR to a writable directory to keep them.",
                        repr(os.environ["NUMBA_CACHE_DIR"]) if os.environ.get("NUMBA_CACHE_DIR") else "not set",
                        os.path.join(where, "__pycache__"))
    return _cache_checked[where]


def cache_dir() -> str | None:
    """The directory the kernels are cached in, or None when they compile in memory (no writable directory)."""
    from .kernels import signatures

    cache = _function_cache(signatures.probe) if signatures.CACHE else None
    if cache is None:
        return None
    return getattr(cache, "_cache_path", None)  # the locator's directory: <root>/<dir name>_<hash>, or __pycache__


# --- saying when a run compiles -------------------------------------------------------------------------------

@contextlib.contextmanager
def report_compiles(write):
    """While the block runs, also pass the compile messages to ``write(line)`` (the CLI prints them).

    Blocks nest; the innermost one's ``write`` gets the lines (the demo prints them in its own output).
    """
    _reporters.append(write)
    try:
        yield
    finally:
        _reporters.remove(write)


def _say(level: int, msg: str, *args) -> None:
    log.log(level, msg, *args)
    if _reporters:
        _reporters[-1](msg % args)


class _CompileWatch:
    """Listens to Numba's compile events while kernel modules import: announces the first, times them all."""

    def __init__(self, label: str):
        self.label = label
        self.depth = 0
        self.kernels = 0  # kernels compiled (each explicit signature is one)
        self.started: float | None = None

    def __enter__(self):
        import numba  # noqa: F401 - the package first: importing a submodule while another thread (the linker)
        from numba.core import event  # is still importing numba can deadlock the two imports

        watch = self

        class Listener(event.Listener):
            def on_start(self, ev):
                watch.announce()
                if watch.depth == 0:
                    watch.kernels += 1
                watch.depth += 1

            def on_end(self, ev):
                watch.depth -= 1

        self._listener = Listener()
        event.register("numba:compile", self._listener)
        return self

    def announce(self) -> None:
        """Say, once, that compiling has started."""
        if self.started is None:
            self.started = time.perf_counter()
            _say(logging.INFO, "compiling the %s kernels, first run only (later runs load them from the cache) ...",
                 self.label)

    def __exit__(self, *exc):
        from numba.core import event

        event.unregister("numba:compile", self._listener)
        self.seconds = 0.0 if self.started is None else time.perf_counter() - self.started
        if self.started is not None and exc[0] is None:
            where = cache_dir()
            _say(logging.INFO, "compiled the %s kernels in %.1f s (%s)", self.label, self.seconds,
                 f"cached in {where}" if where else "not cached: no writable cache directory")
        return False


def load(name: str):
    """The kernel module ``vecstore_ref.kernels.<name>``, imported (so compiled or loaded from the cache) on first
    use, with the compile announced (see the module docstring)."""
    module = _loaded.get(name)  # not sys.modules: there a module appears while another thread still imports it
    if module is not None:
        return module
    with _lock:
        module = _loaded.get(name)
        if module is None:
            with _CompileWatch(PATHS.get(name, name)):
                module = importlib.import_module(f"vecstore_ref.kernels.{name}")
            _loaded[name] = module
        return module


# --- warmup ---------------------------------------------------------------------------------------------------

@dataclass
class WarmupReport:
    """What `warmup` did: per kernel module, whether it compiled (or loaded) and how long it took."""

    cache_dir: str | None
    numba_version: str
    # {"module", "kernels", "compiled", "seconds"}: kernels compiled while the module was imported (a kernel shared
    # by several modules counts with the first that needs it), and the time the import took.
    modules: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def compiled(self) -> int:
        """Kernels compiled (0 when every kernel loaded from the cache)."""
        return sum(m["kernels"] for m in self.modules)

    def to_dict(self) -> dict:
        return asdict(self) | {"compiled": self.compiled}


# Rough CPU seconds each module takes to compile on an empty cache (a 2-core Xeon): how a warmup splits them
# between processes. Only the balance matters; a wrong figure makes the split uneven, never wrong.
COMPILE_WEIGHT = {
    "query_steps": 0.3, "id_hash": 0.7, "hnsw_search": 2.0, "hnsw_exact": 0.8, "hnsw_batch": 1.0, "filtered_search": 2.2,
    "filtered_batch": 0.6, "hnsw_build": 3.5, "hnsw_repair": 1.0, "flat_search": 1.0, "flat_batch": 0.6,
    "flat_blas": 1.2, "fanout_wait": 0.2,
}
HELPER_TIMEOUT_S = 900.0


def _looks_cached(name: str, where: str | None) -> bool:
    """Whether the cache directory holds an index file of module ``name`` (Numba names them ``<module>.<kernel>-
    <line>.<python>.nbi``). A stale entry makes this say yes; the import then compiles here, as it would anyway."""
    if where is None:
        return True  # no cache: a helper's work would be lost with its process
    try:
        return any(f.startswith(name + ".") and f.endswith(".nbi") for f in os.listdir(where))
    except OSError:
        return False


def _helper_share(pending: list[str], where: str | None, processes: int) -> list[str]:
    """The modules a second process should compile: half the compile work (by `COMPILE_WEIGHT`) of those not
    in the cache, or none when there is one core, no cache, or less than two modules to compile."""
    cold = [n for n in pending if not _looks_cached(n, where)]
    if processes < 2 or len(cold) < 2:
        return []
    here: list[str] = []
    there: list[str] = []
    for name in sorted(cold, key=lambda n: -COMPILE_WEIGHT.get(n, 1.0)):  # heaviest first, to the lighter side
        side = here if sum(COMPILE_WEIGHT.get(n, 1.0) for n in here) <= sum(
            COMPILE_WEIGHT.get(n, 1.0) for n in there) else there
        side.append(name)
    return there


def _start_helper(names: list[str]) -> subprocess.Popen | None:
    """A Python process that compiles ``names`` into the same cache (same interpreter, environment and package),
    printing its `WarmupReport` as JSON; None if it cannot start."""
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    on_path = {os.path.abspath(p or os.getcwd()) for p in sys.path}
    if package_parent not in on_path:  # e.g. a checkout put on sys.path by hand; never ahead of the stdlib otherwise
        env["PYTHONPATH"] = package_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    code = "import json, sys; from vecstore_ref import jit; print(json.dumps(jit.warmup(sys.argv[1:], processes=1).to_dict()))"
    try:
        return subprocess.Popen([sys.executable, "-c", code, *names], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env, text=True)
    except OSError:
        return None


def _helper_report(proc: subprocess.Popen) -> dict[str, dict]:
    """The helper's per-module figures, once it has finished (empty if it failed: this process compiles them)."""
    try:
        out, _ = proc.communicate(timeout=HELPER_TIMEOUT_S)
        if proc.returncode != 0:
            return {}
        return {m["module"]: m for m in json.loads(out)["modules"]}
    except (subprocess.TimeoutExpired, ValueError, KeyError, TypeError):
        proc.kill()
        proc.wait()
        return {}


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), which on a shared machine can be fewer than the
    machine has."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def warmup(paths: list[str] | tuple[str, ...] | None = None, processes: int | None = None) -> WarmupReport:
    """Compile (or load from the cache) the kernels of ``paths`` (names of `PATHS`; default all of them).

    In a fresh process each module is imported; one already imported costs nothing and is reported as loaded.
    Numba compiles one function at a time in a process, so with an on-disk cache and more than one core a
    warmup hands about half the modules still to compile to a second Python process, which compiles them into
    the same cache while this one compiles the rest; this process then loads them from the cache. That halves
    a first run's wait on two cores. ``processes=1`` compiles everything here.
    """
    import numba

    from .errors import InvalidArgumentError, InvalidArgumentTypeError

    if processes is not None and (isinstance(processes, bool) or not isinstance(processes, int)):
        raise InvalidArgumentTypeError(f"processes must be an int or None, got {type(processes).__name__}")
    if processes is not None and processes < 1:
        raise InvalidArgumentError(f"processes must be at least 1, got {processes}")
    if isinstance(paths, (str, bytes)):
        raise InvalidArgumentTypeError("paths must be a list of kernel module names, not one string")
    names = list(PATHS) if paths is None else list(paths)
    unknown = [n for n in names if n not in PATHS]
    if unknown:
        raise InvalidArgumentError(f"unknown kernel modules {unknown}; known: {', '.join(PATHS)}")
    t0 = time.perf_counter()
    report = WarmupReport(cache_dir=None, numba_version=numba.__version__)
    with _lock:
        pending = [n for n in names if n not in _loaded]
        where = cache_dir() if len(pending) > 1 else None
        n_proc = usable_cores() if processes is None else processes
        elsewhere = _helper_share(pending, where, min(2, n_proc))
        helper = _start_helper(elsewhere) if elsewhere else None
        if helper is None:
            elsewhere = []
        figures: dict[str, dict] = {}
        with _CompileWatch(PATHS[pending[0]] if len(pending) == 1 else "search") as w:
            if helper is not None:
                w.announce()  # the helper compiles at once: say so before this process has anything to compile
            for name in [n for n in names if n not in elsewhere] + elsewhere:
                if name in elsewhere and helper is not None:
                    done = _helper_report(helper)
                    helper = None
                    figures.update(done)
                before = w.kernels
                t = time.perf_counter()
                _loaded[name] = importlib.import_module(f"vecstore_ref.kernels.{name}")
                mine = {"module": name, "kernels": w.kernels - before, "compiled": w.kernels > before,
                        "seconds": time.perf_counter() - t}
                theirs = figures.get(name)
                if theirs is not None and theirs.get("compiled"):
                    mine = {"module": name, "kernels": int(theirs["kernels"]), "compiled": True,
                            "seconds": float(theirs["seconds"])}
                figures[name] = mine
    report.modules = [figures[n] for n in names]
    report.cache_dir = cache_dir()
    report.seconds = time.perf_counter() - t0
    return report
