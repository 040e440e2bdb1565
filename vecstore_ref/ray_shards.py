"""Shards as Ray actors (the optional ``[ray]`` extra): each actor opens one shard directory and holds its lock.

``ShardedStore.open(path, n, executor="ray")`` starts one actor per shard; the store then talks to each through a
:class:`RayShard`, which has the methods of :class:`~vecstore_ref.store.VecStore` and blocks on the actor's answer
(the fan-out threads wait on several actors at once, so the shards work in parallel, each in its own process).
An error raised in an actor is raised again here as itself (``NotFoundError`` stays ``NotFoundError``).
Ray is started with defaults if the program has not started it (``ray.init()``); actors ask for no CPU of
their own, so more shards than cores fit on one machine.
"""

from __future__ import annotations


class _ShardActor:
    """Runs in the actor's process: one open store."""

    def __init__(self, path: str, options: dict):
        from .store import VecStore

        self.store = VecStore.open(path, **options)

    def call(self, name: str, args: tuple, kwargs: dict):
        return getattr(self.store, name)(*args, **kwargs)

    def length(self) -> int:
        return len(self.store)

    def contains(self, id_) -> bool:
        return id_ in self.store


class RayShard:
    """A :class:`VecStore` in a Ray actor, called like a local one."""

    _REMOTE = ("upsert", "upsert_with_ttl", "upsert_many", "get", "delete", "soft_delete", "restore",
               "update_metadata", "set_ttl", "batch_execute", "query", "query_batch", "ids", "expire_ttl_records",
               "deleted_count", "compact", "maybe_compact", "snapshot", "flush_index", "verify", "stats",
               "_visible_records", "estimate_query", "query_explain")

    def __init__(self, path: str, options: dict):
        import ray

        if not ray.is_initialized():
            ray.init(include_dashboard=False, log_to_driver=False)
        self._ray = ray
        self.path = path
        self._actor = ray.remote(num_cpus=0)(_ShardActor).remote(path, options)
        self._closed = False
        self._wait(self._actor.length.remote())  # the store opened (or its error is raised here)

    def _wait(self, ref):
        try:
            return self._ray.get(ref)
        except self._ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise
        except self._ray.exceptions.RayActorError as exc:
            from .errors import StorageError

            raise StorageError(f"the shard actor for {self.path} died: {exc}") from None

    def __getattr__(self, name: str):
        if name not in RayShard._REMOTE:
            raise AttributeError(name)

        def remote_call(*args, **kwargs):
            return self._wait(self._actor.call.remote(name, args, kwargs))

        remote_call.__name__ = name
        return remote_call

    def __len__(self) -> int:
        return self._wait(self._actor.length.remote())

    def __contains__(self, id_) -> bool:
        return self._wait(self._actor.contains.remote(id_))

    def close(self) -> None:
        """Close the store in the actor (its lock is released), then end the actor. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._wait(self._actor.call.remote("close", (), {}))
        finally:
            self._ray.kill(self._actor)
