"""Load a vecstore_ref export (`vecstore-ref export PATH OUTDIR`) into a LanceDB table.

    pip install lancedb
    python docs/examples/load_into_lancedb.py OUTDIR ./lancedb-data TABLE

The table has the columns `id` (string), `vector` (fixed-size list of float32), `metadata` (the record's metadata
as JSON text: its fields may hold different types in different records, a LanceDB column holds one) and
`expires_at` (Unix seconds or null; LanceDB has no TTL, so filter on it: `expires_at IS NULL OR expires_at > t`).
Records already expired are left out. Search it with the export's metric, e.g.
`table.search(q).distance_type(DISTANCE[metric]).limit(10)`.
"""

from __future__ import annotations

import argparse
import json
import time

import lancedb
import pyarrow as pa

from vecstore_ref.export import open_export

DISTANCE = {"cosine": "cosine", "dot": "dot", "euclidean": "l2"}  # LanceDB's names for the export's metric


def load(export_dir, db, table_name: str, batch_size: int = 10_000) -> int:
    """Create ``table_name`` in the LanceDB connection ``db`` with every live record of the
    export; returns how many."""
    export = open_export(export_dir)  # checks the manifest and the files' SHA-256 first
    if export.dim is None:
        return 0  # an empty export has no dimension
    schema = pa.schema([("id", pa.string()), ("vector", pa.list_(pa.float32(), export.dim)),
                        ("metadata", pa.string()), ("expires_at", pa.float64())])
    table = db.create_table(table_name, schema=schema)
    now, loaded = time.time(), 0
    for ids, vectors, metadatas, expires in export.batches(batch_size):
        keep = [i for i, expires_at in enumerate(expires)
                if expires_at is None or expires_at > now]
        if not keep:
            continue
        flat = pa.array(vectors[keep].reshape(-1))
        table.add(pa.table({
            "id": [ids[i] for i in keep],
            "vector": pa.FixedSizeListArray.from_arrays(flat, export.dim),
            "metadata": [None if metadatas[i] is None else json.dumps(metadatas[i])
                         for i in keep],
            "expires_at": [expires[i] for i in keep],
        }, schema=schema))
        loaded += len(keep)
    return loaded


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Load a vecstore_ref export into a LanceDB table.")
    p.add_argument("export_dir")
    p.add_argument("database", help="a LanceDB directory (created if missing) or URI")
    p.add_argument("table")
    p.add_argument("--batch", type=int, default=10_000)
    args = p.parse_args(argv)
    n = load(args.export_dir, lancedb.connect(args.database), args.table, args.batch)
    print(f"loaded {n} records into the LanceDB table {args.table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
