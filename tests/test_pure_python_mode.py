"""NUMBA_DISABLE_JIT=1 runs every kernel as plain Python (for stepping through them in a debugger): a small job in
that mode must give the same answers as the compiled kernels."""

from __future__ import annotations

import json
import os
import subprocess
import sys

SCRIPT = r"""
import json, sys, tempfile
import numpy as np
import vecstore_ref as vs
rng = np.random.default_rng(0)
x = rng.normal(size=(120, 6)).astype(np.float32)
out = {}
for index in ("flat", "hnsw"):
    with vs.VecStore.open(tempfile.mkdtemp() + "/s", dim=6, metric="cosine", index=index) as s:
        s.upsert_many([f"r{i}" for i in range(120)], x, [{"g": i % 3} for i in range(120)])
        s.delete("r5")
        out[index] = [[h.id for h in s.query(q, k=5, filter="g != 1")] for q in x[:10]]
        out[index + "_batch"] = s.query_batch(x[:10], k=5).ids.tolist()
print(json.dumps(out))
"""


def run(disable_jit: bool) -> dict:
    env = dict(os.environ)
    env.pop("NUMBA_DISABLE_JIT", None)
    if disable_jit:
        env["NUMBA_DISABLE_JIT"] = "1"
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_pure_python_kernels_give_the_same_answers():
    jit, plain = run(False), run(True)
    assert plain["flat"] == jit["flat"]
    assert plain["flat_batch"] == jit["flat_batch"]
    # the graph is built by the same deterministic steps, so even the approximate answers agree
    assert plain["hnsw"] == jit["hnsw"]
