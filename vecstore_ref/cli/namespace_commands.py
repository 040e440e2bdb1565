"""Commands over a namespace root (`--data ROOT`, as for `serve`): `namespaces` (list, create, delete) and the
backups of one namespace (`backup`, `backups`, `restore-backup`, `delete-backup`, `export-backup`,
`import-backup`), each one call of `NamespaceManager`.

The reads (`namespaces list`, `backups`, `export-backup`) use a read-only manager, which creates and cleans
nothing; every command but `namespaces create` needs the root to exist. A namespace that a running server holds
open is locked: back it up through the HTTP API instead.
"""

from __future__ import annotations

import argparse
import os
from datetime import datetime, timezone

from ..errors import AlreadyExistsError, NotFoundError
from .common import INDEX_KINDS, METRICS, non_negative_int, positive_int
from .output import plural


def _manager(args, *, read_only: bool = False, create_root: bool = False):
    from ..namespaces import NamespaceManager, validate_name

    for attr, what in (("namespace", "namespace"), ("name", "backup")):  # a bad name creates no root either
        value = getattr(args, attr, None)
        if isinstance(value, str):
            validate_name(value, what)
    if not create_root and not os.path.isdir(args.data):
        raise NotFoundError(f"no namespace root at {args.data}")
    return NamespaceManager(args.data, read_only=read_only)


def _in_unix_seconds(info: dict) -> dict:
    """A backup's dict for JSON output: ``created_at`` as Unix seconds, like every time the command line prints
    in JSON (the library's `BackupInfo.to_dict` gives ISO 8601)."""
    return {**info, "created_at": datetime.fromisoformat(info["created_at"]).timestamp()}


def _backup_text(info: dict) -> str:
    created = datetime.fromisoformat(info["created_at"]).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (f"backup {info['name']} of {info['namespace']}: {plural(info['count'], 'record')}, "
            f"{plural(len(info['files']), 'file')}, {plural(info['bytes'], 'byte')}, created {created}")


def run_namespaces_list(args, out) -> int:
    with _manager(args, read_only=True) as mgr:
        names = mgr.list_namespaces()
    for name in names:
        out.result({"namespace": name}, name)
    return 0


def run_namespaces_create(args, out) -> int:
    from ..namespaces import Quotas
    from ..opening import check_open_options

    options = {k: v for k, v in (("dim", args.dim), ("metric", args.metric), ("index", args.index),
                                 ("durability", args.durability)) if v is not None}
    check_open_options(options)  # before the root is made: a bad option leaves nothing behind
    with _manager(args, create_root=True) as mgr:
        store = mgr.create_namespace(args.namespace, quotas=Quotas(args.max_vectors, args.max_bytes), **options)
        st = store.stats()
    result = {"namespace": args.namespace, "dim": st.dim, "metric": st.metric, "index": st.index,
              "quotas": {"max_vectors": args.max_vectors, "max_bytes": args.max_bytes}}
    out.result(result, f"created namespace {args.namespace} ({st.metric}, {st.index}"
                       + (f", dim {st.dim}" if st.dim is not None else "") + ")")
    return 0


def run_namespaces_delete(args, out) -> int:
    with _manager(args) as mgr:
        mgr.delete_namespace(args.namespace)
    out.result({"namespace": args.namespace, "deleted": True},
               f"deleted namespace {args.namespace} and its backups")
    return 0


def run_backup(args, out) -> int:
    name = args.name or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    with _manager(args) as mgr:
        info = mgr.backup_namespace(args.namespace, name).to_dict()
    out.result(_in_unix_seconds(info), _backup_text(info))
    return 0


def run_backups(args, out) -> int:
    with _manager(args, read_only=True) as mgr:
        rows = mgr.list_namespace_backups(args.namespace)
    for name, created_at, count in rows:
        out.result({"namespace": args.namespace, "name": name, "created_at": created_at.timestamp(), "count": count},
                   f"{name}\t{created_at.isoformat()}\t{count}")
    return 0


def run_restore_backup(args, out) -> int:
    with _manager(args) as mgr:
        mgr.restore_namespace(args.namespace, args.name)
        count = len(mgr.get_namespace(args.namespace))
    out.result({"namespace": args.namespace, "restored_from": args.name, "visible": count},
               f"restored namespace {args.namespace} from backup {args.name} ({plural(count, 'record')} visible)")
    return 0


def run_delete_backup(args, out) -> int:
    with _manager(args) as mgr:
        mgr.delete_namespace_backup(args.namespace, args.name)
    out.result({"namespace": args.namespace, "name": args.name, "deleted": True},
               f"deleted backup {args.name} of {args.namespace}")
    return 0


def run_export_backup(args, out) -> int:
    """The archive is written under a temporary name beside FILE and renamed when complete
    (`NamespaceManager.export_backup`): a FILE that exists is always a whole archive."""
    target = os.path.abspath(args.file)
    if os.path.lexists(target) and not args.overwrite:
        raise AlreadyExistsError(f"{args.file} exists; give --overwrite to replace it")
    with _manager(args, read_only=True) as mgr:
        mgr.export_backup(args.namespace, args.name, target)
    size = os.path.getsize(target)
    out.result({"namespace": args.namespace, "name": args.name, "file": args.file, "bytes": size},
               f"wrote backup {args.name} of {args.namespace} to {args.file} ({size:,} bytes)")
    return 0


def run_import_backup(args, out) -> int:
    if not os.path.exists(args.file):
        raise NotFoundError(f"no file {args.file}")
    if not os.path.isfile(args.file):
        from .._fs import NotRegularFileError

        raise NotRegularFileError(f"{args.file} is not a regular file: an archive to import must be one")
    with _manager(args) as mgr:
        info = mgr.import_backup(args.namespace, args.file, args.name).to_dict()
    out.result(_in_unix_seconds(info), f"imported {args.file} as backup {info['name']} of {info['namespace']}: "
                     f"{plural(info['count'], 'record')}, {plural(info['bytes'], 'byte')}")
    return 0


def register(sub, common) -> None:
    def with_data(p, suppress=False):
        p.add_argument("--data", metavar="ROOT", default=argparse.SUPPRESS if suppress else "./data",
                       help="root directory of the namespaces (default ./data)")
        return p

    def command(name, run, help_, *positionals):
        p = with_data(sub.add_parser(name, parents=[common], help=help_,
                                     description=help_[0].upper() + help_[1:] + "."))
        for dest, metavar, text in positionals:
            p.add_argument(dest, metavar=metavar, help=text)
        p.set_defaults(run=run, parser=p)
        return p

    ns_arg = ("namespace", "NS", "the namespace")
    name_arg = ("name", "NAME", "the backup's name")

    p = with_data(sub.add_parser("namespaces", parents=[common], help="list, create or delete the namespaces "
                                 "under --data", description="List (the default), create or delete namespaces."))
    p.set_defaults(run=run_namespaces_list, parser=p)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    a = with_data(actions.add_parser("list", parents=[common], help="the namespaces, one per line "
                                     "(read-only)"), suppress=True)
    a.set_defaults(run=run_namespaces_list, parser=a)
    a = with_data(actions.add_parser("create", parents=[common], help="create a namespace"), suppress=True)
    a.add_argument("namespace", metavar="NS")
    a.add_argument("--dim", type=positive_int, default=None, help="dimension (default: set by the first write)")
    a.add_argument("--metric", choices=METRICS, default=None, help="similarity (default cosine)")
    a.add_argument("--index", choices=INDEX_KINDS, default=None, help="index kind (default hnsw)")
    a.add_argument("--durability", choices=("fsync", "batch", "none"), default=None, help="default fsync")
    a.add_argument("--max-vectors", type=non_negative_int, default=None, help="quota: records held")
    a.add_argument("--max-bytes", type=non_negative_int, default=None, help="quota: bytes on disk")
    a.set_defaults(run=run_namespaces_create, parser=a)
    a = with_data(actions.add_parser("delete", parents=[common], help="delete a namespace and its backups"),
                  suppress=True)
    a.add_argument("namespace", metavar="NS")
    a.set_defaults(run=run_namespaces_delete, parser=a)

    p = command("backup", run_backup, "back up a namespace online (NAME defaults to the UTC time)", ns_arg)
    p.add_argument("name", metavar="NAME", nargs="?", default=None, help="the backup's name")
    command("backups", run_backups, "list a namespace's backups, newest first (read-only)", ns_arg)
    command("restore-backup", run_restore_backup, "replace a namespace by one of its backups", ns_arg, name_arg)
    command("delete-backup", run_delete_backup, "delete one backup of a namespace", ns_arg, name_arg)
    p = command("export-backup", run_export_backup, "write a backup as a tar archive (read-only)", ns_arg, name_arg,
                ("file", "FILE", "the archive to write"))
    p.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    command("import-backup", run_import_backup, "add a tar archive from export-backup as a backup of a namespace",
            ns_arg, name_arg, ("file", "FILE", "the archive to read"))

