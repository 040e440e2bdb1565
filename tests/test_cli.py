"""The command line, run as a user would (subprocess), on a small store."""

from __future__ import annotations

import json
import subprocess
import sys

import vecstore_ref as vs


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "vecstore_ref", *args], capture_output=True, text=True,
                          timeout=600, cwd=cwd)


def test_demo_prints_real_results(tmp_path):
    out = run("demo", "--data", str(tmp_path / "data"), "--n", "1500", "--dim", "16")
    assert out.returncode == 0, out.stderr
    assert "ingested 1500 vectors" in out.stdout
    assert "recall@10" in out.stdout
    assert out.stdout.count("score=") >= 10
    recall = float(out.stdout.split("exact scan on 100 queries: ")[1].split()[0])
    assert recall >= 0.9
    again = run("demo", "--data", str(tmp_path / "data"), "--n", "1500", "--dim", "16")
    assert again.returncode == 0, again.stderr


def test_store_commands(tmp_path):
    path = str(tmp_path / "s")
    with vs.VecStore.open(path, dim=2, metric="euclidean", index="flat") as s:
        s.upsert("a", [1.0, 0.0], {"k": 1})
        s.upsert("b", [0.0, 1.0])
        s.delete("b")
    out = run("stats", path, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["visible"] == 1
    out = run("query", path, "--vector", "[1, 0]", "--k", "1", "--json")
    assert json.loads(out.stdout)["results"][0]["id"] == "a"
    out = run("get", path, "a", "--json")
    assert json.loads(out.stdout)["metadata"] == {"k": 1}
    assert run("verify", path).returncode == 0
    out = run("compact", path, "--json")
    assert json.loads(out.stdout)["removed_count"] == 1
    assert run("snapshot", path).returncode == 0
    assert run("expire", path).returncode == 0
    bad = run("get", path, "zzz")
    assert bad.returncode == 1 and "NotFoundError" in bad.stderr and "Traceback" not in bad.stderr
