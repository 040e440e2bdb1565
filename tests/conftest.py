"""Shared fixtures: a fake clock, store factories, and a model of the visible state."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from hypothesis import Verbosity, settings

sys.path.insert(0, os.path.dirname(__file__))

# Hypothesis profiles, chosen with `python -m pytest --hypothesis-profile NAME` (docs/testing.md):
# - "ci", the default: bounded, the suite's and CI's run; every property test keeps its own max_examples.
# - "thorough": a long run, THOROUGH_FACTOR times the examples of every test that sizes itself with examples(),
#   longer state machine runs; `VECSTORE_THOROUGH_FACTOR=200` makes it longer still (an hour or more).
# Both print a failing example as a reproduction: the state machine's steps as Python code, plus a
# @reproduce_failure blob (print_blob=True) that replays it exactly.
THOROUGH_FACTOR = int(os.environ.get("VECSTORE_THOROUGH_FACTOR", "25"))
settings.register_profile("ci", deadline=None, print_blob=True, derandomize=False)
settings.register_profile("thorough", deadline=None, print_blob=True, stateful_step_count=60,
                          verbosity=Verbosity.normal)
settings.load_profile("ci")


def examples(ci: int) -> int:
    """``max_examples`` for a property test: ``ci`` under the ci profile, THOROUGH_FACTOR times more under
    thorough. Read when the test module is imported, after ``--hypothesis-profile`` has loaded the profile."""
    return ci * THOROUGH_FACTOR if settings.get_current_profile_name() == "thorough" else ci


class FakeClock:
    """An injectable clock for TTL tests: ``clock()`` returns ``now``; ``advance(s)`` moves it."""

    def __init__(self, now: float = 1_000_000.0):
        self.now = float(now)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def store_path(tmp_path):
    return str(tmp_path / "store")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def random_vectors(rng, n, dim):
    return rng.normal(size=(n, dim)).astype(np.float32)
