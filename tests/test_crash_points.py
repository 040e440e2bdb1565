"""kill -9 at every named crash point of writes, batches, snapshots, compaction and recovery (issues 4 and 5).

For each point and hit count the child dies there (or finishes, if the program never reaches it), and the store
must reopen with every acknowledged operation present and the operation in flight entirely present or absent.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from crashpoint_child import apply_model, program

import vecstore_ref as vs
from vecstore_ref._crash import CRASH_POINTS

CHILD = os.path.join(os.path.dirname(__file__), "crashpoint_child.py")
WRITE_POINTS = [p for p in CRASH_POINTS if not p.startswith(("recover.", "backup.", "restore."))]  # the store's
# (the namespace points are exercised in test_namespaces.py)


def run_child(path: str, index: str, crash_at: str | None):
    env = dict(os.environ)
    env.pop("VECSTORE_CRASH_AT", None)
    if crash_at:
        env["VECSTORE_CRASH_AT"] = crash_at
    out = subprocess.run([sys.executable, CHILD, path, index], capture_output=True, text=True, env=env, timeout=300)
    acked = [int(x.split()[1]) for x in out.stdout.splitlines() if x.startswith("ACK ")]
    return out.returncode, (max(acked) + 1 if acked else 0), out


def check(path: str, n_acked: int, index: str):
    ops = program()
    model: dict = {}
    for op in ops[:n_acked]:
        apply_model(model, op)
    candidates = [model]
    if n_acked < len(ops):
        nxt = dict(model)
        apply_model(nxt, ops[n_acked])
        candidates.append(nxt)
    with vs.VecStore.open(path, index=index) as s:
        ids = set(s.ids())
        assert any(ids == set(c) for c in candidates), (n_acked, len(ids), [len(c) for c in candidates])
        target = next(c for c in candidates if ids == set(c))
        for id_, v in target.items():
            assert s.get(id_).vector.tobytes() == v.tobytes()
        assert s.verify().ok
        if target:
            id_, v = next(iter(target.items()))
            assert s.query(v, k=1)[0].id == id_


def points_for_ci():
    """Every write-side crash point at its first three hits; later hits and the HNSW index are in the slow sweep."""
    return [(p, h) for p in WRITE_POINTS for h in (1, 2, 3)]


@pytest.mark.parametrize("point,hit", points_for_ci(), ids=[f"{p}:{h}" for p, h in points_for_ci()])
def test_kill9_at_crash_point(tmp_path, point, hit):
    path = str(tmp_path / "s")
    code, n_acked, out = run_child(path, "flat", f"{point}:{hit}")
    assert code in (0, -9), out.stderr[-2000:]
    check(path, n_acked, "flat")


@pytest.mark.slow
@pytest.mark.parametrize("point", WRITE_POINTS)
@pytest.mark.parametrize("hit", [2, 3, 5, 8, 13])
@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_kill9_at_crash_point_sweep(tmp_path, point, hit, index):
    path = str(tmp_path / "s")
    code, n_acked, out = run_child(path, index, f"{point}:{hit}")
    assert code in (0, -9), out.stderr[-2000:]
    check(path, n_acked, index)


@pytest.mark.parametrize("point", ["recover.replaying", "recover.truncating_tail"])
def test_kill9_during_recovery_then_open_again(tmp_path, point):
    """A crash while recovering leaves a store that recovers to the same state next time (recovery is idempotent)."""
    path = str(tmp_path / "s")
    code, n_acked, _ = run_child(path, "flat", "batch.after_fsync:4")
    assert code == -9
    seg = sorted(n for n in os.listdir(path) if n.startswith("log-"))[-1]
    with open(os.path.join(path, seg), "ab") as f:
        f.write(b"\x07" * 11)  # a torn tail for recovery to cut
    env = dict(os.environ, VECSTORE_CRASH_AT=f"{point}:1")
    code2 = subprocess.run([sys.executable, "-c", "import sys, vecstore_ref as vs; vs.VecStore.open(sys.argv[1])",
                            path], env=env, capture_output=True, timeout=120).returncode
    assert code2 == -9
    check(path, n_acked, "flat")
