"""The error tree of vecstore_ref.

Every error the library raises on purpose is a [`VecStoreError`][vecstore_ref.errors.VecStoreError]. Each class
carries the HTTP status the server answers with (``http_status``) and a stable machine-readable ``code``, so the
Python API and the HTTP API report the same failure the same way. Input errors are also ``ValueError`` (and
``TypeError`` for wrong types), so code that already catches the built-in exceptions keeps working.

A bad input never changes anything on disk or in memory: validation runs before the first byte is written.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any

__all__ = [
    "VecStoreError",
    "InvalidInputError",
    "DimensionMismatchError",
    "InvalidVectorError",
    "InvalidVectorTypeError",
    "InvalidIdError",
    "InvalidIdTypeError",
    "InvalidMetadataError",
    "InvalidMetadataTypeError",
    "InvalidArgumentError",
    "InvalidArgumentTypeError",
    "FilterSyntaxError",
    "FilterTypeError",
    "InvalidBatchError",
    "InvalidBatchTypeError",
    "InvalidNameError",
    "InvalidNameTypeError",
    "NotFoundError",
    "AlreadyExistsError",
    "QuotaExceededError",
    "StoreLockedError",
    "StoreClosedError",
    "ReadOnlyError",
    "ShardUnavailableError",
    "StorageError",
    "CorruptLogError",
    "CorruptSnapshotError",
    "CorruptStoreError",
    "UnsupportedFormatError",
    "UnsupportedRecordError",
    "BackupCorruptError",
    "UnsafeArchiveError",
    "UnsafePathError",
]


def error_code(type_: str, status: int | None = None) -> str:
    """The stable, machine-readable ``code`` of an error body (HTTP and the command line's ``--json``): the
    library class's own ``code`` for the classes of this module, else the type's name in snake case
    (``RequestTimeout``: ``request_timeout``), and for Starlette's ``HTTPError`` the status phrase (405:
    ``method_not_allowed``)."""
    cls = globals().get(type_) if type_ in __all__ else None
    if cls is not None:
        return str(cls.code)
    if type_ == "HTTPError" and status is not None:
        try:
            type_ = HTTPStatus(status).phrase.title().replace(" ", "").replace("-", "")
        except ValueError:
            return f"http_{status}"
    name = type_[:-5] if type_.endswith("Error") and type_ != "Error" else type_
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


class VecStoreError(Exception):
    """Base class of every error raised by vecstore_ref."""

    http_status = 500
    code = "vecstore_error"

    def to_dict(self) -> dict[str, Any]:
        """The JSON error body of the HTTP API: ``{"error": {"type", "code", "message"}}``."""
        return {"error": {"type": type(self).__name__, "code": self.code, "message": str(self)}}


# --- bad input: 400 ------------------------------------------------------------------------------------------


class InvalidInputError(VecStoreError, ValueError):
    """The caller passed something the contract does not accept. Nothing was changed."""

    http_status = 400
    code = "invalid_input"


class DimensionMismatchError(InvalidInputError):
    """A vector's length differs from the store's dimension (or is not 1-D)."""

    code = "dimension_mismatch"


class InvalidVectorError(InvalidInputError):
    """A vector holds NaN/inf (after the cast to float32) or has zero norm under cosine."""

    code = "invalid_vector"


class InvalidVectorTypeError(InvalidVectorError, TypeError):
    """A vector of str, bool, object or complex values."""

    code = "invalid_vector_type"


class InvalidIdError(InvalidInputError):
    """An id that is empty, too long, or holds control characters or lone surrogates."""

    code = "invalid_id"


class InvalidIdTypeError(InvalidIdError, TypeError):
    """An id that is not a ``str``."""

    code = "invalid_id_type"


class InvalidMetadataError(InvalidInputError):
    """Metadata that is not a flat dict of JSON scalars (or lists of them), or is too large."""

    code = "invalid_metadata"


class InvalidMetadataTypeError(InvalidMetadataError, TypeError):
    """Metadata that is not a dict, a key that is not a ``str``, or a value of a type metadata cannot hold (a
    nested dict, a numpy scalar, a set ...)."""

    code = "invalid_metadata_type"


class InvalidArgumentError(InvalidInputError):
    """An option or parameter out of its range (k, ttl, ef, dim, metric ...)."""

    code = "invalid_argument"


class InvalidArgumentTypeError(InvalidArgumentError, TypeError):
    """An option or parameter of the wrong type (k=True, k="5", ttl="1" ...)."""

    code = "invalid_argument_type"


class FilterSyntaxError(InvalidInputError):
    """A filter that the grammar does not accept; ``position`` is the 0-based offset of the problem."""

    code = "filter_syntax"

    def __init__(self, message: str, position: int = 0):
        super().__init__(f"{message} (at position {position})")
        self.message = message
        self.position = position

    def __reduce__(self) -> tuple[type[FilterSyntaxError], tuple[str, int]]:
        return (type(self), (self.message, self.position))


class FilterTypeError(FilterSyntaxError, TypeError):
    """A filter that is not filter text at all (not a ``str`` or a `parse_filter` result), at position 0."""

    code = "filter_type"


class InvalidBatchError(InvalidInputError):
    """``batch_execute`` was given something other than a sequence of operation objects."""

    code = "invalid_batch"


class InvalidBatchTypeError(InvalidBatchError, TypeError):
    """``batch_execute`` was given something that is not a list or tuple, or a list holding a non-operation."""

    code = "invalid_batch_type"


class InvalidNameError(InvalidInputError):
    """A namespace or backup name outside ``^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$``."""

    code = "invalid_name"


class InvalidNameTypeError(InvalidNameError, TypeError):
    """A namespace or backup name that is not a ``str``."""

    code = "invalid_name_type"


# --- state errors ---------------------------------------------------------------------------------------------


class NotFoundError(VecStoreError, KeyError):
    """The id (or namespace, or backup) does not exist or is not visible."""

    http_status = 404
    code = "not_found"

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class AlreadyExistsError(VecStoreError):
    """Creating something that exists already."""

    http_status = 409
    code = "already_exists"


class QuotaExceededError(VecStoreError):
    """The write would take a namespace over one of its quotas. Nothing was written."""

    http_status = 413
    code = "quota_exceeded"


class StoreLockedError(VecStoreError):
    """Another writer (in this process or another) holds the store's lock."""

    http_status = 409
    code = "store_locked"


class StoreClosedError(VecStoreError):
    """The store was closed; open it again."""

    http_status = 409
    code = "store_closed"


class ReadOnlyError(VecStoreError):
    """The store refuses writes: opened ``read_only=True``, or poisoned by a failed fsync until reopened."""

    http_status = 409
    code = "read_only"


class ShardUnavailableError(VecStoreError):
    """A shard of a `ShardedStore` did not answer: its Ray actor died, its node is gone, or it timed out.

    ``shards`` lists the shard numbers that failed. A write that fails this way may or may not have reached that
    shard's log (it is never half-applied); the shard reopens from its directory on the next call that needs it.
    Queries with ``allow_partial=True`` return the other shards' results instead, naming the missing ones.
    """

    http_status = 503
    code = "shard_unavailable"

    def __init__(self, message: str, shards: tuple[int, ...] = ()):
        super().__init__(message)
        self.message = message
        self.shards = tuple(shards)

    def __reduce__(self) -> tuple[type[ShardUnavailableError], tuple[str, tuple[int, ...]]]:
        return (type(self), (self.message, self.shards))


# --- storage errors: the files on disk ------------------------------------------------------------------------


class StorageError(VecStoreError, OSError):
    """An I/O failure or a file that cannot be trusted."""

    http_status = 500
    code = "storage_error"

    def __str__(self) -> str:  # OSError would format (errno, strerror)
        return str(self.args[0]) if self.args else ""


class CorruptLogError(StorageError):
    """A log record fails its checks and valid records follow it: not a torn tail but corruption.

    The store does not open unless ``repair=True`` is passed.
    """

    code = "corrupt_log"

    def __init__(self, path: str, offset: int, seq: int | None, reason: str = "bad record"):
        super().__init__(f"corrupt log {path} at offset {offset} (after seq {seq}): {reason}")
        self.path = path
        self.offset = offset
        self.seq = seq
        self.reason = reason

    def __reduce__(self) -> tuple[type[CorruptLogError], tuple[str, int, int | None, str]]:
        return (type(self), (self.path, self.offset, self.seq, self.reason))


class CorruptSnapshotError(StorageError):
    """A snapshot file is truncated, or its checksum does not match."""

    code = "corrupt_snapshot"


class CorruptStoreError(StorageError):
    """The directory is inconsistent: a file named by the manifest is missing, or the manifest is damaged."""

    code = "corrupt_store"


class UnsupportedFormatError(StorageError):
    """A file written by a newer (or unknown) format version."""

    code = "unsupported_format"


class UnsupportedRecordError(CorruptLogError):
    """A log record with a valid checksum but a record type this version does not know. Never skipped."""

    code = "unsupported_record"


class BackupCorruptError(StorageError):
    """A backup whose manifest or checksums do not match its files."""

    http_status = 400
    code = "backup_corrupt"


class UnsafeArchiveError(StorageError):
    """An archive with members outside the backup (absolute paths, ``..``, links, devices, oversized files)."""

    http_status = 400
    code = "unsafe_archive"


class UnsafePathError(StorageError):
    """A path below a store's directory or a namespace manager's root passes through a symbolic link, or names a
    FIFO, a device or a socket where a regular file is expected.

    Nothing below a root is ever reached through a link (it could point anywhere), so the call is refused before
    it reads, writes or deletes anything. The link was planted by someone with write access to the directory; an
    operator has to remove it.

    Over HTTP it is a 400, as a namespace name that is a link is (`InvalidNameError`): the request names
    something the server refuses to reach, and a refused request is no server error (no 5xx for bad input).
    """

    http_status = 400
    code = "unsafe_path"
