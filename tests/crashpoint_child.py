"""A child for crash-point tests: a fixed program of batches, deletes, snapshots and compactions.

Run with ``VECSTORE_CRASH_AT=name:n`` to die at a named crash point; each call's completion is acknowledged on
stdout (``ACK <i>``). :func:`program` is the same list in parent and child, so the parent rebuilds the model.
"""

from __future__ import annotations

import sys

import numpy as np

DIM = 6


def program():
    rng = np.random.default_rng(7)
    ops = []
    n = 0
    for round_ in range(3):
        batch = [(f"r{n + j}", rng.normal(size=DIM).astype(np.float32)) for j in range(40)]
        n += 40
        ops.append(("batch", batch))
        ops.append(("single", (f"s{round_}", rng.normal(size=DIM).astype(np.float32))))
        ops.append(("delete", [f"r{n - 40 + j}" for j in range(0, 40, 3)]))
        ops.append(("soft", f"r{n - 39}"))
        ops.append(("snapshot", None))
        ops.append(("compact", None))
    return ops


def apply_model(model: dict, op) -> None:
    kind, arg = op
    if kind == "batch":
        for id_, v in arg:
            model[id_] = v
    elif kind == "single":
        model[arg[0]] = arg[1]
    elif kind == "delete":
        for id_ in arg:
            model.pop(id_, None)
    elif kind == "soft":
        model.pop(arg, None)  # invisible; compaction may remove it for good


def main() -> None:
    import vecstore_ref as vs

    path, index = sys.argv[1], sys.argv[2]
    store = vs.VecStore.open(path, dim=DIM, metric="euclidean", index=index)
    print("READY", flush=True)
    for i, (kind, arg) in enumerate(program()):
        if kind == "batch":
            store.batch_execute([vs.Upsert(id_, v) for id_, v in arg])
        elif kind == "single":
            store.upsert(*arg)
        elif kind == "delete":
            store.batch_execute([vs.Delete(id_) for id_ in arg])
        elif kind == "soft":
            store.soft_delete(arg)
        elif kind == "snapshot":
            store.snapshot()
        else:
            store.compact()
        print(f"ACK {i}", flush=True)
    store.close()
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
