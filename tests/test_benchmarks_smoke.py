"""The benchmark scripts still run (at toy size), so they do not rot. They measure nothing here."""

from __future__ import annotations


def test_bulk_load_quick(capsys):
    from benchmarks import bulk_load

    assert bulk_load.main(["--quick", "--index", "flat"]) == 0
    out = capsys.readouterr().out
    assert "| fsync |" in out and "speedup" in out


def test_ann_quick(capsys, tmp_path):
    from benchmarks import ann

    assert ann.main(["--quick", "--peers", "hnswlib", "--plot", str(tmp_path / "ann.png")]) == 0
    out = capsys.readouterr().out
    assert "| vecstore_ref |" in out and "exact batch search" in out


def test_first_query_quick(capsys):
    from benchmarks import first_query

    assert first_query.main(["--quick"]) == 0
    assert "| hnsw | warm |" in capsys.readouterr().out


def test_reliability_figures_bounded_sample(capsys):
    """CI's bounded sample of the fault sweep; ``python -m benchmarks.reliability --full`` runs all of it."""
    from benchmarks import reliability

    assert reliability.main([]) == 0
    assert "0 runs that lost one" in capsys.readouterr().out
