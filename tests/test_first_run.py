"""A first run on a new machine: kernels compile once and say so, load from the cache afterwards, never fail for
want of a writable cache directory; ``vecstore-ref warmup``; the demo's second run reopens its store.

Each case runs in a fresh interpreter (a subprocess), as a user's first run would. None of them measures time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

import vecstore_ref as vs
from vecstore_ref import jit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "vecstore_ref")

# A child that queries a small flat store: one query (kernels.flat_search) and one batch (kernels.flat_batch), so
# that two kernel modules find no cache. It prints the results and where vecstore_ref was imported from.
QUERY_CHILD = r"""
import json, logging, sys
import numpy as np
logging.basicConfig(level=logging.INFO, format="LOG %(levelname)s %(name)s %(message)s")
import vecstore_ref as vs
rng = np.random.default_rng(0)
x = rng.normal(size=(200, 8)).astype(np.float32)
with vs.VecStore.open(sys.argv[1], dim=8, metric="euclidean", index="flat", durability="none") as s:
    s.upsert_many([f"v{i}" for i in range(200)], x)
    one = [h.id for h in s.query(x[7] + 0.01, k=3)]
    batch = s.query_batch(x[:16] + 0.01, k=1).ids[:, 0].tolist()
from vecstore_ref import jit
print("RESULT " + json.dumps({"file": vs.__file__, "one": one, "batch": batch, "cache_dir": jit.cache_dir()}))
"""


def _env(**overrides) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(overrides)
    return env


def _copy_package(dest) -> str:
    """A copy of the package whose kernel directory has no writable ``__pycache__``: a file stands where Numba
    would create it, so that not even root can cache there (chmod does not stop root)."""
    shutil.copytree(PACKAGE, os.path.join(dest, "vecstore_ref"), ignore=shutil.ignore_patterns("__pycache__"))
    with open(os.path.join(dest, "vecstore_ref", "kernels", "__pycache__"), "w") as f:
        f.write("not a directory\n")
    return str(dest)


def _run_query_child(cwd, store, env) -> tuple[dict, list[str], subprocess.CompletedProcess]:
    out = subprocess.run([sys.executable, "-c", QUERY_CHILD, str(store)], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:])
    logs = [line for line in out.stderr.splitlines() if line.startswith("LOG ")]
    return result, logs, out


def test_14_nothing_writable_compiles_without_a_cache_and_warns_once(tmp_path):
    pkg = _copy_package(tmp_path / "pkg")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file: every cache directory below it fails with ENOTDIR\n")
    env = _env(HOME=str(blocker / "home"), XDG_CACHE_HOME=str(blocker / "cache"))
    result, logs, out = _run_query_child(pkg, tmp_path / "store", env)
    assert result["file"].startswith(pkg)  # the copy ran, not the checkout
    assert result["one"][0] == "v7"
    assert result["batch"] == [f"v{i}" for i in range(16)]
    assert result["cache_dir"] is None
    warnings = [line for line in logs if line.startswith("LOG WARNING vecstore_ref")]
    assert len(warnings) == 1, logs
    assert "no writable directory for the Numba kernel cache" in warnings[0]
    assert "no locator available" not in out.stderr
    assert blocker.read_text().startswith("a file")  # nothing was created where nothing could be
    assert os.path.isfile(os.path.join(pkg, "vecstore_ref", "kernels", "__pycache__"))


def test_14_read_only_package_caches_in_the_per_user_directory(tmp_path):
    pkg = _copy_package(tmp_path / "pkg")
    user_cache = tmp_path / "user-cache"
    env = _env(HOME=str(tmp_path / "home"), XDG_CACHE_HOME=str(user_cache))
    result, logs, _ = _run_query_child(pkg, tmp_path / "store", env)
    assert result["one"][0] == "v7"
    assert not [line for line in logs if "WARNING" in line], logs
    assert result["cache_dir"].startswith(str(user_cache / "numba"))
    cached = [f for f in os.listdir(result["cache_dir"]) if f.endswith(".nbi")]
    assert any(f.startswith("flat_search.topk_masked") for f in cached), cached
    # A second process loads what the first compiled: nothing is announced as compiling.
    again, logs, _ = _run_query_child(pkg, tmp_path / "store2", env)
    assert again["one"] == result["one"]
    assert not [line for line in logs if "compiling" in line], logs


def test_14_warmup_compiles_every_kernel_once_then_loads_them(tmp_path):
    env = _env(NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "vecstore_ref", "warmup", "--json"]
    first = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert first.returncode == 0, first.stderr[-3000:]
    report = json.loads(first.stdout)
    assert [m["module"] for m in report["modules"]] == list(jit.PATHS)
    assert all(m["compiled"] for m in report["modules"]), report
    assert report["compiled"] >= len(jit.PATHS)
    assert report["cache_dir"].startswith(str(tmp_path / "cache"))
    # The CLI says so before the compile starts, and how long it took (on stderr: stdout is the JSON).
    assert first.stderr.index("compiling the search kernels, first run only") < first.stderr.index(
        "compiled the search kernels in")
    second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert second.returncode == 0, second.stderr[-3000:]
    report2 = json.loads(second.stdout)
    assert report2["compiled"] == 0, report2  # every kernel hit the cache: one signature each, the same types
    assert not any(m["compiled"] for m in report2["modules"])
    assert "compiling" not in second.stderr
    text = subprocess.run([sys.executable, "-m", "vecstore_ref", "warmup"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert text.returncode == 0
    assert f"kernel cache: {report['cache_dir']}" in text.stdout
    assert "every kernel was in the cache" in text.stdout


def test_warmup_rejects_unknown_modules():
    with pytest.raises(vs.InvalidArgumentError):
        jit.warmup(["no_such_kernels"])
    with pytest.raises(vs.InvalidArgumentError):
        jit.warmup(["query_steps"], processes=0)
    with pytest.raises(vs.InvalidArgumentTypeError):
        jit.warmup(["query_steps"], processes="2")  # type: ignore[arg-type]
    with pytest.raises(vs.InvalidArgumentTypeError):
        jit.warmup("query_steps")


def test_load_returns_the_kernel_module_and_logs_a_compile(caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="vecstore_ref"):
        lines: list[str] = []
        with jit.report_compiles(lines.append):
            module = jit.load("flat_search")
    assert module.__name__ == "vecstore_ref.kernels.flat_search"
    assert jit.load("flat_search") is module
    # Compiled here or earlier in this process: if it compiled, both the log and the reporter heard of it.
    compiled = [r.getMessage() for r in caplog.records if r.getMessage().startswith("compiling")]
    assert [line for line in lines if line.startswith("compiling")] == compiled


def test_14_demo_second_run_reopens_the_store_instead_of_ingesting(tmp_path):
    data = str(tmp_path / "data")
    cmd = [sys.executable, "-m", "vecstore_ref", "demo", "--data", data, "--n", "800", "--dim", "16"]
    first = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "ingested 800 vectors" in first.stdout
    assert "run the demo again" in first.stdout
    second = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    assert second.returncode == 0, second.stderr[-3000:]
    out = second.stdout
    assert "reopening it" in out
    assert "ingested 800" not in out and "linked them" not in out
    assert "opened in" in out and "800 visible records" in out
    assert "doc-00000 soft-deleted: True" in out
    assert out.count("score=") >= 10
    recall = float(out.split("exact scan on 100 queries: ")[1].split()[0])
    assert recall >= 0.9
    with vs.VecStore.open(os.path.join(data, "demo"), read_only=True) as store:
        assert store.stats().visible == 800  # 799 from the corpus + 'short-lived'; nothing added again


def test_14_a_changed_step_recompiles_the_kernels_that_inline_it(tmp_path):
    """Numba stamps a cache entry with its own file only; topk_masked (flat_search.py) inlines l2sq_row
    (distances.py), so a cached topk_masked must not survive a change to distances.py."""
    shutil.copytree(PACKAGE, tmp_path / "pkg" / "vecstore_ref", ignore=shutil.ignore_patterns("__pycache__"))
    env = _env(NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    child = (
        "import numpy as np, vecstore_ref as vs\n"
        "x = np.array([[0, 0], [3, 4]], np.float32)\n"
        "with vs.VecStore.open(%r, dim=2, metric='euclidean', index='flat', durability='none') as s:\n"
        "    s.upsert_many(['a', 'b'], x)\n"
        "    print(s.query([0.0, 0.0], k=2)[1].score)\n"
    )
    def score(store):
        out = subprocess.run([sys.executable, "-c", child % str(tmp_path / store)], cwd=tmp_path / "pkg", env=env,
                             capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, out.stderr[-3000:]
        return float(out.stdout.split()[-1])

    assert score("s1") == pytest.approx(-5.0)
    assert score("s2") == pytest.approx(-5.0)  # from the cache
    distances = tmp_path / "pkg" / "vecstore_ref" / "kernels" / "distances.py"
    text = distances.read_text()
    assert "        s += t * t\n" in text
    distances.write_text(text.replace("        s += t * t\n", "        s += 4 * t * t\n", 1))  # distance x2
    assert score("s3") == pytest.approx(-10.0)


def test_a_warmup_splits_the_cold_modules_between_two_processes(tmp_path):
    """Half the compile work (by weight) goes to a second process; nothing goes there on one core, when fewer
    than two modules are cold, or when there is no cache to share the result through."""
    names = list(jit.PATHS)
    there = jit._helper_share(names, str(tmp_path), 2)
    here = [n for n in names if n not in there]
    assert there and here
    weight = lambda ns: sum(jit.COMPILE_WEIGHT[n] for n in ns)  # noqa: E731
    assert abs(weight(here) - weight(there)) <= max(jit.COMPILE_WEIGHT.values())
    assert jit._helper_share(names, str(tmp_path), 1) == []
    assert jit._helper_share(names, None, 2) == []
    for name in names[1:]:  # every module but one is in the cache
        (tmp_path / f"{name}.kernel-1.py311.nbi").write_bytes(b"")
    assert jit._helper_share(names, str(tmp_path), 2) == []
