"""Load a vecstore_ref export (`vecstore-ref export PATH OUTDIR`) into a Qdrant collection.

    pip install qdrant-client
    python docs/examples/load_into_qdrant.py OUTDIR COLLECTION --url http://localhost:6333
    python docs/examples/load_into_qdrant.py OUTDIR COLLECTION --path ./qdrant-data    # Qdrant's local mode

Qdrant point ids are unsigned integers or UUIDs, so each record becomes the point whose id is the UUID 5 of its
id (the same in every run: loading twice overwrites); the id itself is kept in the payload as `vecstore_id`,
beside the metadata fields. Qdrant has no TTL: records already expired are left out, the rest load without one.
"""

from __future__ import annotations

import argparse
import time
import uuid

from qdrant_client import QdrantClient, models

from vecstore_ref.export import open_export

DISTANCE = {"cosine": models.Distance.COSINE, "dot": models.Distance.DOT, "euclidean": models.Distance.EUCLID}
ID_NAMESPACE = uuid.UUID("c6e5fb86-82b5-5fff-bac4-89acdba1e5d4")


def point_id(record_id: str) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, record_id))


def load(export_dir, client: QdrantClient, collection: str, batch_size: int = 1000) -> int:
    """Create ``collection`` and upsert every live record of the export; returns how many."""
    export = open_export(export_dir)  # checks the manifest and the files' SHA-256 first
    if export.dim is None:
        return 0  # an empty export has no dimension
    client.create_collection(collection, vectors_config=models.VectorParams(
        size=export.dim, distance=DISTANCE[export.metric]))
    now, loaded = time.time(), 0
    for ids, vectors, metadatas, expires in export.batches(batch_size):
        points = [models.PointStruct(id=point_id(id_), vector=vector.tolist(),
                                     payload={**(metadata or {}), "vecstore_id": id_})
                  for id_, vector, metadata, expires_at
                  in zip(ids, vectors, metadatas, expires)
                  if expires_at is None or expires_at > now]
        if points:
            client.upsert(collection, points=points, wait=True)
        loaded += len(points)
    return loaded


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Load a vecstore_ref export into a Qdrant collection.")
    p.add_argument("export_dir")
    p.add_argument("collection")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a Qdrant server, e.g. http://localhost:6333")
    where.add_argument("--path", help="a directory for Qdrant's local mode (no server)")
    p.add_argument("--batch", type=int, default=1000)
    args = p.parse_args(argv)
    client = QdrantClient(url=args.url) if args.url else QdrantClient(path=args.path)
    try:
        n = load(args.export_dir, client, args.collection, args.batch)
    finally:
        client.close()
    print(f"loaded {n} records into the Qdrant collection {args.collection}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
