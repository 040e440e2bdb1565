"""Running the command line as a user does: a real subprocess, ``sys.executable -m vecstore_ref ...``.

The child imports this checkout (PYTHONPATH), whatever is installed. It shares Numba's on-disk cache with every
other process, and `warm_kernels` fills that cache once per test session before the first child runs: a command then
costs about one interpreter start, and no child prints the compile notice on stderr that a first run prints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 600  # a safety net for a hung child on a very busy machine, not a performance check


_warmed: list = []


def warm_kernels() -> None:
    """Compile (or load) every kernel once in this process, before the first child: the children then find them
    all in the cache."""
    if not _warmed:
        from vecstore_ref.jit import warmup

        warmup()
        _warmed.append(True)


def cli_env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("VECSTORE_REF_TRACEBACK", None)
    env.update(extra)
    return env


def cli_command(*args) -> list[str]:
    warm_kernels()
    return [sys.executable, "-m", "vecstore_ref", *map(str, args)]


def run(*args, input=None, cwd=None, env=None) -> subprocess.CompletedProcess:
    """Run ``vecstore-ref ARGS``; text output."""
    return subprocess.run(cli_command(*args), capture_output=True, text=True, input=input, cwd=cwd,
                          env=env or cli_env(), timeout=TIMEOUT_S)


def run_many(commands: list[tuple]) -> list[subprocess.CompletedProcess]:
    """Run independent commands side by side (the machine's cores overlap the interpreter starts)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda c: run(*c), commands))


def json_lines(stdout: str) -> list:
    """Every line of ``stdout`` parsed as JSON (NDJSON): fails if any line is not one JSON value."""
    return [json.loads(line) for line in stdout.splitlines()]


def one_json(stdout: str) -> dict:
    lines = json_lines(stdout)
    assert len(lines) == 1, stdout
    return lines[0]


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str, status: int = 1) -> None:
    """Exit ``status``, exactly one line on stderr holding every fragment, and no traceback."""
    assert proc.returncode == status, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
