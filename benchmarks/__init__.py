"""Benchmark scripts: ``python -m benchmarks.<name>``. They print markdown tables; none is a test."""
