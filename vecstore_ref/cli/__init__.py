"""The `vecstore-ref` command line (also `python -m vecstore_ref`): thin wrappers over the Python API.

Every command prints text for people, or with `--json` one JSON object per line (NDJSON) for programs
(`output`). Errors are one line on stderr. Exit status:

| status | meaning |
|---|---|
| 0 | done |
| 1 | an error (one line on stderr: `error: <ErrorType>: <message>`) |
| 2 | a usage error (argparse's message and usage) |
| 3 | `verify` found damage |
| 130 | interrupted (Ctrl-C) |

The commands live in one module per group. Each module has a `register(subparsers, common)` function that adds
its parsers (``common`` is the parent parser carrying `--json`) and sets ``run``, a function ``(args, out) ->
exit status`` that calls the library and raises its errors; `main` turns them into the one-line message.
`COMMAND_GROUPS` lists the registrations in the order `--help` shows; a new group is a module plus one line
there. The page for users is `docs/guide/cli.md`; a test checks that it documents every command.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from . import app_commands, ingest, namespace_commands, store_commands, transfer
from .common import CommandError, InternalError, add_json_flag
from .output import Output

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_DAMAGED, EXIT_INTERRUPTED = 0, 1, 2, store_commands.EXIT_DAMAGED, 130

COMMAND_GROUPS = (
    app_commands.register,          # demo, warmup, serve
    store_commands.register_reads,  # stats, verify, get, query
    ingest.register,                # ingest
    transfer.register,              # export, import
    store_commands.register_writes,  # upsert, update-metadata, delete, soft-delete, restore, set-ttl
    store_commands.register_maintenance,  # compact, snapshot, expire
    namespace_commands.register,    # namespaces, backup, backups, restore-backup, delete-backup, export-/import-backup
)

EPILOG = """\
Reads (stats, verify, get, query, export, backups, namespaces list) open read-only and create nothing.
Exit status: 0 ok, 1 error (one line on stderr), 2 usage, 3 verify found damage, 130 interrupted.
Every command takes --json: one JSON object per line. Guide: docs/guide/cli.md."""


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="vecstore-ref", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="An embedded vector store: load, inspect, query, export, back up and serve.")
    parser.add_argument("--version", action="version", version=f"vecstore-ref {__version__}")
    add_json_flag(parser)
    common = argparse.ArgumentParser(add_help=False)
    add_json_flag(common, suppress=True)  # also after the command name, without undoing one given before it
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in COMMAND_GROUPS:
        register(sub, common)
    return parser


# Commands whose only effect is what they print: without a stdout they refuse to run (a write still runs: its
# effect is on disk, and its status says how it went).
READ_COMMANDS = frozenset({"stats", "verify", "get", "query", "backups"})


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (argparse exits with 2 itself on a usage error)."""
    from ..errors import VecStoreError

    for stream in (sys.stdout, sys.stderr):  # a terminal that cannot show a character gets an escape, not a crash
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]  # AttributeError: skipped
    from ..jit import report_compiles

    args = build_parser().parse_args(argv)
    out = Output(json_mode=args.json)
    if sys.stdout is None and args.command in READ_COMMANDS:  # started with `>&-`: the answer would be lost
        out.error(CommandError(f"stdout is closed: the results of {args.command} would have nowhere to go"))
        return EXIT_ERROR
    try:
        with report_compiles(out.say):  # a first run's compile is never silent (on stderr: stdout stays clean)
            return int(args.run(args, out) or 0)
    except KeyboardInterrupt:
        out.error(KeyboardInterrupt("interrupted"))
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (e.g. `| head`): nothing more to say, and nowhere to say it
        _silence_stdout()
        return EXIT_ERROR
    except (VecStoreError, OSError) as exc:
        out.error(exc)
        return EXIT_ERROR
    except Exception as exc:
        if os.environ.get("VECSTORE_REF_TRACEBACK"):
            raise
        out.error(InternalError(f"{type(exc).__name__}: {exc} (set VECSTORE_REF_TRACEBACK=1 for the traceback)"))
        return EXIT_ERROR


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not fail again (Python docs, "Note
    on SIGPIPE")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # (AttributeError: started without a stdout at all)
        pass


if __name__ == "__main__":
    sys.exit(main())
