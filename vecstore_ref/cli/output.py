"""What the commands print: text for people, or NDJSON for programs, and one-line errors.

The rules, the same for every command:

- stdout holds results. With `--json` every result is one JSON object on its own line (NDJSON): a command
  with one result prints one line, a stream (query hits, backups, ingest progress) prints one line per item.
- Text output never shows a Python repr: absent values print as `null`, flags as `true`/`false`, nested values
  as JSON, times as ISO 8601 UTC.
- stderr holds notes (a skipped input line, a progress bar on a terminal) and the one line of a fatal error:
  `error: <ErrorType>: <message>`, or with `--json` the HTTP API's error body `{"error": {"type", "code", "message"}}`.
"""

from __future__ import annotations

import io
import json
import math
import sys
from datetime import datetime, timezone

from ..errors import VecStoreError, error_code
from ..errors import __all__ as _PUBLIC_ERRORS

# Keys whose value is a Unix time in seconds: shown as ISO 8601 in text output (JSON keeps the number).
TIME_KEYS = frozenset({"expires_at", "at", "last_checkpoint_at", "created_at"})


def plain(value):
    """``value`` as plain JSON data: numpy scalars and arrays become Python ones, datetimes ISO strings, floats
    JSON cannot hold (inf, nan) None."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy scalar or array
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def iso_time(seconds: float) -> str:
    """A Unix time as ``2025-01-31T12:00:00.250Z``."""
    dt = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def plural(n: int, word: str) -> str:
    """``1 record``, ``2 records``, ``10,000 records``."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def text_value(key: str, value) -> str:
    """One value in text output: strings as they are, everything else as JSON (null, true, 1.5, [..], {..})."""
    if isinstance(value, str):
        return value
    if key in TIME_KEYS and isinstance(value, (int, float)) and not isinstance(value, bool):
        return iso_time(value)
    if isinstance(value, float) and (key.endswith("_ms") or key == "seconds"):
        return f"{value:.3f}"
    return json.dumps(value, ensure_ascii=False)


def text_lines(obj: dict, prefix: str = "") -> list[str]:
    """``key: value`` lines; nested objects flatten to dotted keys (``recovery_report.records_replayed: 0``)."""
    lines = []
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            lines.extend(text_lines(value, name + "."))
        else:
            lines.append(f"{name}: {text_value(key, value)}")
    return lines


def _public_name(exc: BaseException) -> str:
    """The class a user can catch: a library error's nearest public class (an internal subclass such as
    ``NotRegularFileError`` is reported as the ``UnsafePathError`` it is), else the exception's own name."""
    if isinstance(exc, VecStoreError):
        return next(c.__name__ for c in type(exc).__mro__ if c.__name__ in _PUBLIC_ERRORS)
    return type(exc).__name__


class _Discard(io.StringIO):
    """Where output goes when there is no stream to write it to."""

    def write(self, text: str) -> int:
        return len(text)


class Output:
    """The stdout/stderr of one command run, in text or JSON mode."""

    def __init__(self, json_mode: bool = False, stdout=None, stderr=None):
        self.json = bool(json_mode)
        # A stream the command was started without (``>&-``: Python makes it None) takes the output and drops it:
        # a write that succeeded must not turn into an error for want of somewhere to report it.
        self.stdout = stdout or sys.stdout or _Discard()
        self.stderr = stderr or sys.stderr or _Discard()
        self._bar = None  # an open progress bar: notes must be written through it

    @property
    def interactive(self) -> bool:
        """Is a person watching stderr (a terminal)?"""
        return _isatty(self.stderr)

    def _dumps(self, obj) -> str:
        ascii_only = (getattr(self.stdout, "encoding", None) or "").lower().replace("-", "") != "utf8"
        return json.dumps(plain(obj), ensure_ascii=ascii_only, allow_nan=False)

    def result(self, obj: dict, text=None) -> None:
        """One result (or one item of a stream): a JSON line, or ``text`` (a str or lines; default: ``obj`` as
        ``key: value`` lines)."""
        if self.json:
            print(self._dumps(obj), file=self.stdout, flush=True)
            return
        if text is None:
            text = text_lines(plain(obj))
        for line in [text] if isinstance(text, str) else text:
            print(line, file=self.stdout)
        self.stdout.flush()

    def note(self, obj: dict, text: str) -> None:
        """A side event of a stream (a skipped line, a finished chunk): a JSON line on stdout in JSON mode, else
        ``text`` on stderr (``None`` text: nothing in text mode)."""
        if self.json:
            self.result(obj)
        elif text is not None:
            self.say(text)

    def say(self, text: str) -> None:
        """A line for the person at the terminal (stderr), kept clear of a progress bar."""
        if self._bar is not None:
            self._bar.write(text, file=self.stderr)
        else:
            print(text, file=self.stderr, flush=True)

    def error(self, exc: BaseException) -> None:
        """The one line of a fatal error."""
        kind = _public_name(exc)
        message = " ".join(str(exc).split()) or kind  # one line, whatever the message holds
        if self.json:
            code = exc.code if isinstance(exc, VecStoreError) else error_code(kind)
            print(json.dumps({"error": {"type": kind, "code": code, "message": message}}), file=self.stderr,
                  flush=True)
        else:
            print(f"error: {kind}: {message}", file=self.stderr, flush=True)

    def progress(self, total: int | None, unit: str, enabled: bool = True) -> Progress:
        """A progress bar on stderr, shown only when stderr is a terminal (and ``enabled``)."""
        bar = None
        if enabled and self.interactive:
            try:
                from tqdm import tqdm
            except ImportError:  # the bar is a nicety: the [progress] extra brings tqdm
                tqdm = None
            if tqdm is not None:
                bar = tqdm(total=total, unit=unit, unit_scale=unit == "B", file=self.stderr, dynamic_ncols=True)
        self._bar = bar
        return Progress(self, bar)


class Progress:
    """A context manager around an optional tqdm bar: ``update(n)`` advances it, closing it releases notes."""

    def __init__(self, out: Output, bar):
        self._out, self._bar = out, bar

    def update(self, n: int) -> None:
        if self._bar is not None and n:
            self._bar.update(n)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()
        self._out._bar = None


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
