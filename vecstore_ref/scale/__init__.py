"""Scale-out: one store's API over N shards, in this process or in Ray actors (SPEC section 12).

For users: docs/guide/scale-out.md (how it behaves, the design for many machines, what it costs).

Modules, in the order a call meets them: ``.sharded_store`` (the API: routing writes, splitting batches,
merging queries), ``.routing`` (which shard holds an id; ``SHARDS.json``), ``.fanout`` (in-process shards
searched side by side), ``.ray_shards`` (shards as Ray actors: placement, failure, restart), ``.wire`` (the
binary query channel to the actors), ``.merge`` (exact top-k merge; the result types).
"""

from .merge import ShardedBatchQueryResult, ShardedNeighbors
from .ray_shards import RayExecutor, RayShard
from .routing import shard_of
from .sharded_store import ShardedStore

__all__ = ["ShardedStore", "RayExecutor", "RayShard", "ShardedNeighbors", "ShardedBatchQueryResult", "shard_of"]
