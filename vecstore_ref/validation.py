"""Input validation: every public entry point checks its arguments here before anything is written.

The rules are those of SPEC section 1. Each failure is a typed error that is also a ``ValueError`` (or a
``TypeError`` for wrong types), and its message says what was wrong and what is accepted.
"""

from __future__ import annotations

import math
import numbers
import os
import stat

import numpy as np

from .config import MAX_DIM, MAX_ID_BYTES, MAX_K, MAX_TTL_SECONDS
from .errors import (
    DimensionMismatchError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidIdError,
    InvalidIdTypeError,
    InvalidVectorError,
    InvalidVectorTypeError,
)

MIN_COSINE_NORM = 1e-30  # below this (computed in float64) a vector has no direction
ACCEPTED_VECTOR_KINDS = "fiu"  # float, signed and unsigned int; ints above 2**24 lose precision in float32


def validate_id(id_: object) -> str:
    """An id is a str of 1 to 512 UTF-8 bytes, without control characters or lone surrogates."""
    if not isinstance(id_, str):
        raise InvalidIdTypeError(f"id must be a str, got {type(id_).__name__}")
    if not id_:
        raise InvalidIdError("id must not be empty")
    try:
        n_bytes = len(id_.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidIdError(f"id holds a lone surrogate at position {exc.start}; ids must be valid UTF-8") from None
    if n_bytes > MAX_ID_BYTES:
        raise InvalidIdError(f"id is {n_bytes} bytes of UTF-8; the limit is {MAX_ID_BYTES}")
    if not id_.isprintable():
        for i, ch in enumerate(id_):
            if ch.isprintable() or ch == " ":
                continue
            if ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F:
                raise InvalidIdError(f"id holds a control character (U+{ord(ch):04X}) at position {i}")
    return id_


def validate_id_list(ids: object) -> list:
    """The ids of a bulk call as a list (each id is checked where it is used): a sequence or iterable, never one
    str or bytes (whose characters would become ids)."""
    if isinstance(ids, (str, bytes)):
        raise InvalidArgumentTypeError("ids must be a sequence of str, not a single str")
    try:
        return list(ids)  # type: ignore[call-overload]
    except TypeError:
        raise InvalidArgumentTypeError(f"ids must be a sequence of str, got {type(ids).__name__}") from None


def _as_array(values: object, what: str) -> np.ndarray:
    if isinstance(values, (str, bytes, bytearray, memoryview)):  # text, or raw bytes numpy would read as uint8
        raise InvalidVectorTypeError(f"{what} must be an array of numbers, got {type(values).__name__}")
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise DimensionMismatchError(f"{what} is not a rectangular array of numbers: {exc}") from None
    if arr.dtype.kind not in ACCEPTED_VECTOR_KINDS:
        kind = {"b": "bool", "U": "str", "S": "bytes", "O": "object", "c": "complex"}.get(arr.dtype.kind, str(arr.dtype))
        raise InvalidVectorTypeError(f"{what} must hold real numbers, got {kind} values")
    if type(values) is not np.ndarray and _holds_bool(values):
        raise InvalidVectorTypeError(f"{what} must hold real numbers, got bool values (a bool is not a number)")
    return arr


_BOOLS = (bool, np.bool_)
_NESTED = (list, tuple, np.ndarray)


def _holds_bool(values: object) -> bool:
    """Whether a list or tuple holds a bool, at any depth: numpy turns ``[0.5, True]`` into floats without a word,
    where a list of bools alone, or any bool in JSON, is refused. One pass over element types, in C."""
    if isinstance(values, np.ndarray):
        return values.dtype.kind == "b"
    if not isinstance(values, (list, tuple)):
        return False
    kinds = set(map(type, values))
    if any(issubclass(t, _BOOLS) for t in kinds):
        return True
    if any(issubclass(t, _NESTED) for t in kinds):
        return any(_holds_bool(v) for v in values if isinstance(v, _NESTED))
    return False


def _finite_float32(arr: np.ndarray, what: str) -> np.ndarray:
    if arr.dtype == np.float32:  # the common case: a copy, and no cast that could overflow
        out = np.array(arr, order="C")
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            out = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(out).all():
        bad = np.argwhere(~np.isfinite(out))[0]
        where = "" if out.ndim == 1 else f" (row {bad[0]})"
        raise InvalidVectorError(
            f"{what}{where} holds NaN or infinity after the cast to float32 "
            "(values beyond +-3.4e38 overflow); every value must be finite"
        )
    if out is arr or (arr.dtype != np.float32 and np.shares_memory(out, arr)):
        out = out.copy()
    return out


# A float32 squared norm inside this range is far from every limit of the cosine check below (the float32 sum is
# within 0.5% of the exact one even at MAX_DIM), so the exact check cannot fail: nearly every vector passes on this
# one cheap test, and only the rest are checked again in float64. (Outside it a vector may well be valid: its
# float32 square overflows or underflows, its float64 norm need not; the kernels then compute its cosine in
# float64, see vecstore_ref.kernels.distances.)
CLEARLY_VALID_SQUARED_NORM = (2e-30, 5e37)


def cosine_norms_clearly_valid(rows: np.ndarray) -> np.ndarray:
    """bool (n,) for float32 rows (n, d): True where the norm is far inside the limits of the cosine check."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        sq = np.einsum("ij,ij->i", rows, rows)
    return (sq > CLEARLY_VALID_SQUARED_NORM[0]) & (sq < CLEARLY_VALID_SQUARED_NORM[1])


def check_cosine_norms(vectors: np.ndarray, what: str) -> None:
    if vectors.ndim == 1:  # one query: a float64 dot is the cheapest form of the same test
        v = vectors.astype(np.float64)
        if CLEARLY_VALID_SQUARED_NORM[0] < float(v @ v) < CLEARLY_VALID_SQUARED_NORM[1]:
            return
    rows = np.atleast_2d(vectors)
    unclear = ~cosine_norms_clearly_valid(rows)
    if not unclear.any():
        return
    first = int(np.flatnonzero(unclear)[0])
    rows = rows[first:]
    norms = np.linalg.norm(rows.astype(np.float64), axis=1)  # finite: float32 values squared fit a float64
    bad = ~(norms > MIN_COSINE_NORM)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        where = "" if vectors.ndim == 1 else f" (row {first + row})"
        raise InvalidVectorError(
            f"{what}{where} has norm {norms[row]:.3g} (computed in float64); the cosine metric needs a norm above "
            f"{MIN_COSINE_NORM:g} (a zero vector has no direction)"
        )


# Under euclidean and dot, a vector's squared norm (in float64) must stay below this, so that no distance or dot
# product of two accepted vectors overflows float32 in a kernel: |q - x|^2 <= 4 max(|q|^2, |x|^2), which is then
# at most half the float32 maximum. A norm below about 6.5e18; any embedding is many orders of magnitude below it.
# (Cosine needs no bound: its kernels fall back to float64 where float32 would overflow.)
MAX_SQUARED_NORM = float(np.finfo(np.float32).max) / 8
MAX_NORM = math.sqrt(MAX_SQUARED_NORM)


def check_norm_bound(vectors: np.ndarray, what: str, metric: str) -> None:
    """Refuse a float32 vector (d,) or rows (n, d) whose norm reaches `MAX_NORM` (see above)."""
    if vectors.ndim == 1:
        v = vectors.astype(np.float64)
        sq64 = np.array([float(v @ v)])
        candidates = np.zeros(1, dtype=np.int64)
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            sq = np.einsum("ij,ij->i", vectors, vectors)  # float32: exact enough far from the bound
        candidates = np.flatnonzero(~(sq < MAX_SQUARED_NORM / 2))
        if candidates.size == 0:
            return
        rows = vectors[candidates].astype(np.float64)
        sq64 = np.einsum("ij,ij->i", rows, rows)
    bad = np.flatnonzero(sq64 >= MAX_SQUARED_NORM)
    if bad.size:
        row = int(candidates[bad[0]])
        where = "" if vectors.ndim == 1 else f" (row {row})"
        raise InvalidVectorError(
            f"{what}{where} has norm {math.sqrt(sq64[bad[0]]):.3g}; under the {metric} metric a norm must be below "
            f"{MAX_NORM:.2g}, so that no distance between two vectors overflows float32"
        )


def validate_dim(dim: object) -> int:
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise InvalidArgumentTypeError(f"dim must be an int, got {type(dim).__name__}")
    if not 1 <= int(dim) <= MAX_DIM:
        raise InvalidArgumentError(f"dim must be between 1 and {MAX_DIM}, got {dim}")
    return int(dim)


def validate_vector(vector: object, dim: int | None, metric: str | None, what: str = "vector") -> np.ndarray:
    """One vector -> float32 (dim,), C-contiguous, owned (a copy), finite, with a usable norm under cosine and a
    norm below `MAX_NORM` under the other metrics."""
    arr = _as_array(vector, what)
    if arr.ndim != 1:
        raise DimensionMismatchError(f"{what} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise DimensionMismatchError(f"{what} is empty")
    if dim is not None and arr.shape[0] != dim:
        raise DimensionMismatchError(f"{what} has {arr.shape[0]} dimensions; this store holds {dim}")
    if dim is None:
        validate_dim(arr.shape[0])
    out = _finite_float32(arr, what)
    if metric == "cosine":
        check_cosine_norms(out, what)
    elif metric is not None:  # None: a caller that leaves the metric's checks to the store
        check_norm_bound(out, what, metric)
    return out


def validate_query_vector(vector: object, dim: int | None, metric: str, what: str = "query vector") -> np.ndarray:
    """`validate_vector` for a query, without its copy when ``vector`` is a float32 array of the store's
    dimension: a query is read, never kept. One pass of a small kernel (`vecstore_ref.kernels.query_steps`) then
    settles finiteness and, far inside the limits, the cosine norm; anything else takes the full path, which
    raises the precise error (or accepts a vector near the limits)."""
    if (type(vector) is np.ndarray and vector.dtype is _FLOAT32 and vector.shape == (dim,)
            and vector.strides == _FLOAT32_STRIDE and vector.flags.writeable):
        # (a read-only array would make Numba compile the kernels again for another array type)
        sq = _squared_norm(vector)
        lo, hi = CLEARLY_VALID_SQUARED_NORM if metric == "cosine" else (-0.5, MAX_SQUARED_NORM)
        if lo < sq < hi:
            return vector
    return validate_vector(vector, dim, metric, what)


_FLOAT32 = np.dtype(np.float32)  # numpy keeps one dtype object per builtin type: an identity test suffices
_FLOAT32_STRIDE = (4,)  # a 1-D float32 array is contiguous exactly when its stride is one item


def _squared_norm(vector: np.ndarray) -> float:
    """`vecstore_ref.kernels.query_steps.squared_norm`, imported on first use (numba loads only when a query runs)."""
    global _squared_norm
    from .jit import load

    squared_norm = load("query_steps").squared_norm
    _squared_norm = squared_norm
    return squared_norm(vector)


def validate_vectors(vectors: object, dim: int | None, metric: str | None, what: str = "vectors") -> np.ndarray:
    """A matrix of vectors -> float32 (n, dim), C-contiguous, owned; errors name the first bad row. An empty
    sequence (``[]``) is no rows: (0, dim)."""
    arr = _as_array(vectors, what)
    if arr.ndim == 1 and arr.shape[0] == 0:
        return np.zeros((0, dim or 0), dtype=np.float32)
    if arr.ndim != 2:
        raise DimensionMismatchError(f"{what} must be a 2-D array (n, dim), got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise DimensionMismatchError(f"{what} has rows of length 0")
    if dim is not None and arr.shape[1] != dim:
        raise DimensionMismatchError(f"{what} have {arr.shape[1]} dimensions; this store holds {dim}")
    if dim is None:
        validate_dim(arr.shape[1])
    out = _finite_float32(arr, what)
    if out.shape[0]:
        if metric == "cosine":
            check_cosine_norms(out, what)
        elif metric is not None:
            check_norm_bound(out, what, metric)
    return out


def validate_k(k: object, max_k: int = MAX_K) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise InvalidArgumentTypeError(f"k must be an int, got {type(k).__name__}")
    if not 1 <= int(k) <= max_k:
        raise InvalidArgumentError(f"k must be between 1 and {max_k}, got {k}")
    return int(k)


MAX_EF = 100_000


def validate_ef(ef: object) -> int | None:
    if ef is None:
        return None
    if isinstance(ef, bool) or not isinstance(ef, numbers.Integral):
        raise InvalidArgumentTypeError(f"ef must be an int or None, got {type(ef).__name__}")
    if not 1 <= int(ef) <= MAX_EF:
        raise InvalidArgumentError(f"ef must be between 1 and {MAX_EF}, got {ef}")
    return int(ef)


def validate_ttl(ttl: object, *, allow_none: bool = False) -> float | None:
    """A TTL is a finite number of seconds, > 0 and <= 100 years."""
    if ttl is None:
        if allow_none:
            return None
        raise InvalidArgumentTypeError("ttl must be a number of seconds, got None")
    if isinstance(ttl, bool) or not isinstance(ttl, numbers.Real):
        raise InvalidArgumentTypeError(f"ttl must be a number of seconds, got {type(ttl).__name__}")
    try:
        value = float(ttl)
    except OverflowError:  # an int (or Fraction) of hundreds of digits does not fit a float
        value = math.inf if ttl > 0 else -math.inf  # type: ignore[operator]  # a numbers.Real
    if not math.isfinite(value) or value <= 0:
        raise InvalidArgumentError(f"ttl must be a finite number of seconds above 0, got {_short(ttl)}")
    if value > MAX_TTL_SECONDS:
        raise InvalidArgumentError(f"ttl must be at most 100 years ({MAX_TTL_SECONDS:.0f} s), got {_short(ttl)}")
    return value


def _short(value: object, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages about numbers of any size."""
    try:
        text = repr(value)
    except ValueError:  # an int above sys.get_int_max_str_digits() has no decimal repr
        return f"an int of about {value.bit_length() * 0.30103:.0f} digits"  # type: ignore[attr-defined]
    return text if len(text) <= limit else text[: limit - 3] + "..."


NAME_MAX_BYTES = 255  # the longest file name Linux, macOS and Windows file systems take


def validate_path(path: object, what: str = "path") -> str:
    """Any path argument (an export, an archive, a store): a str or ``os.PathLike`` of one, not empty, without a
    NUL byte or a component the file system cannot name. Returns it absolute; whether it exists is for the caller
    to judge."""
    try:
        raw = os.fspath(path)  # type: ignore[call-overload]  # anything else: TypeError
    except TypeError:
        raise InvalidArgumentTypeError(f"{what} must be a str or os.PathLike, got {type(path).__name__}") from None
    if not isinstance(raw, str):
        raise InvalidArgumentTypeError(f"{what} must be a str, got {type(raw).__name__}")
    if "\x00" in raw:
        raise InvalidArgumentError(f"{what} {raw!r} holds a NUL byte")
    if not raw:  # "" would name the current directory, which nobody means
        raise InvalidArgumentError(f"{what} is empty")
    if any(len(os.fsencode(part)) > NAME_MAX_BYTES for part in raw.split(os.sep)):
        raise InvalidArgumentError(f"{what} {raw[:80]!r}... has a component longer than {NAME_MAX_BYTES} bytes")
    return os.path.abspath(raw)


def validate_store_path(path: object, what: str = "store path") -> str:
    """A directory path given to ``VecStore.open`` or ``NamespaceManager``: a str or ``os.PathLike`` of one,
    without a NUL byte, and not naming something that exists but is not a directory. Returns it absolute.

    Whether the directory may be created, or locked, is for the file system to say (a ``StorageError``).
    """
    absolute = validate_path(path, what)
    try:
        st = os.stat(absolute)
    except OSError:
        return absolute  # missing (created later) or unreachable (the open reports it)
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidArgumentError(f"{what} {absolute} exists and is not a directory")
    return absolute
