"""`vecstore-ref export PATH OUTDIR` and `vecstore-ref import PATH INDIR`: a store's visible records as
`vectors.npy` + `records.jsonl` + `manifest.json` (the format of `vecstore_ref.export`), and back.

`export` only reads: it opens the store read-only, so it runs beside a writer, and the picture it writes is
the one moment at which it copied the records. `import` creates the store when missing, with the export's
dimension and metric.
"""

from __future__ import annotations

import time

from ..errors import InvalidArgumentError, NotFoundError
from .common import INDEX_KINDS, open_for_reading, open_for_writing, positive_int, store_exists
from .ingest import NewStoreSite, discard_new_store, finish, finish_text
from .output import plural


def run_export(args, out) -> int:
    t0 = time.perf_counter()
    with open_for_reading(args.path) as store:
        manifest = store.export(args.outdir)
    took = time.perf_counter() - t0
    result = {"outdir": args.outdir, "count": manifest["count"], "dim": manifest["dim"],
              "metric": manifest["metric"], "seconds": took, "files": manifest["files"]}
    dim = "null" if manifest["dim"] is None else manifest["dim"]  # an empty store has none yet
    out.result(result, f"exported {plural(manifest['count'], 'record')} of dimension {dim} "
                       f"({manifest['metric']}) to {args.outdir} in {took:.2f} s")
    return 0


def run_import(args, out) -> int:
    import os

    from ..export import MANIFEST, import_records, open_export

    if not os.path.isfile(os.path.join(args.indir, MANIFEST)):
        raise NotFoundError(f"no export at {args.indir} (no {MANIFEST})")
    from .._fs import is_inside

    if is_inside(args.path, args.indir):
        raise InvalidArgumentError(f"{args.path} is inside the export {args.indir}; import into a store elsewhere")
    export = open_export(args.indir)  # checked before the store is created: a bad export leaves nothing behind
    manifest = export.manifest
    t0 = time.perf_counter()
    new = not store_exists(args.path)  # a new store takes the export's metric; an existing one keeps its own
    site = NewStoreSite(args.path) if new else None
    with open_for_writing(args.path, create=True, dim=manifest["dim"], metric=manifest["metric"] if new else None,
                          index=args.index) as store:
        with out.progress(manifest["count"], "rec", enabled=args.progress) as bar:
            last = [0]

            def progress(done, total):
                bar.update(done - last[0])
                last[0] = done
                out.note({"event": "batch", "done": done, "total": total}, None)

            try:
                report = import_records(store, export, batch_size=args.batch, progress=progress)
            except BaseException:
                if new and len(store) == 0:  # refused before anything was written: no store is left behind
                    discard_new_store(store, site)
                raise
        took = time.perf_counter() - t0
        extra = finish(store, out, args.link)
    result = {"event": "done", "indir": args.indir, **report.to_dict(), "seconds": took, **extra}
    text = f"imported {plural(report.imported, 'record')} from {args.indir} ({took:.2f} s)"
    if report.expired:
        text += f"; left out {report.expired} whose TTL passed since the export"
    out.result(result, text + finish_text(extra))
    return 0


def register(sub, common) -> None:
    p = sub.add_parser("export", parents=[common], help="write the visible records to OUTDIR (vectors.npy + "
                       "records.jsonl + manifest.json; read-only)",
                       description="Write every visible record to the new directory OUTDIR as vectors.npy, "
                       "records.jsonl and manifest.json: one consistent picture, read without blocking writers "
                       "for longer than a memory copy.")
    p.add_argument("path", metavar="PATH", help="the store directory")
    p.add_argument("outdir", metavar="OUTDIR", help="a directory that does not exist yet, or an empty one")
    p.set_defaults(run=run_export, parser=p)

    p = sub.add_parser("import", parents=[common], help="upsert the records of an export directory (creates the "
                       "store if missing)",
                       description="Check an export directory (manifest, sizes, SHA-256) and upsert its records in "
                       "atomic batches. A new store takes the export's dimension and metric.")
    p.add_argument("path", metavar="PATH", help="the store directory")
    p.add_argument("indir", metavar="INDIR", help="a directory written by export")
    p.add_argument("--index", choices=INDEX_KINDS, default=None, help="index kind of a new store (default hnsw)")
    p.add_argument("--batch", type=positive_int, default=10_000, help="records per batch (default 10000)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--no-link", dest="link", action="store_false",
                   help="return without waiting for the HNSW graph to link the new vectors")
    p.set_defaults(run=run_import, parser=p)
