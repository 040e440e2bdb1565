"""Numba kernels: pure functions on arrays. No classes, no I/O, no dicts, no exceptions for control flow.

Importing this package imports numba, so the rest of the library imports it lazily, on first use.
Set ``NUMBA_DISABLE_JIT=1`` to run every kernel as plain Python (slow, but steppable in a debugger).
"""
