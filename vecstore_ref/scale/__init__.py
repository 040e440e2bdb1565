"""Scale-out: one store's API over N shards, in this process or in Ray actors (SPEC section 12).

Modules, in the order a call meets them: :mod:`.sharded_store` (the API: routing writes, splitting batches,
merging queries), :mod:`.routing` (which shard holds an id; ``SHARDS.json``), :mod:`.fanout` (in-process shards
searched side by side), :mod:`.ray_shards` (shards as Ray actors: placement, failure, restart), :mod:`.wire` (the
binary query channel to the actors), :mod:`.merge` (exact top-k merge; the result types).
"""

from .merge import ShardedBatchQueryResult, ShardedNeighbors
from .ray_shards import RayExecutor, RayShard
from .routing import shard_of
from .sharded_store import ShardedStore

__all__ = ["ShardedStore", "RayExecutor", "RayShard", "ShardedNeighbors", "ShardedBatchQueryResult", "shard_of"]
