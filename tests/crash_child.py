"""A child process for crash tests: performs seeded writes and acknowledges each one on stdout.

Usage: ``python crash_child.py PATH SEED N_OPS MODE [INDEX]``, MODE in {single, batch, mixed}. After each call
returns it prints ``ACK <op-number>`` and flushes, so the parent can count what was acknowledged. The ops are a pure
function of the seed, so the parent rebuilds the model with :func:`ops_for`.
"""

from __future__ import annotations

import sys

import numpy as np


def ops_for(seed: int, n_ops: int, mode: str, dim: int = 8):
    """The list of calls the child makes: ("upsert", id, vec) / ("delete", id) / ("batch", [(kind, id, vec)...])."""
    rng = np.random.default_rng(seed)
    ops = []
    live: list[str] = []
    for i in range(n_ops):
        if mode == "batch" or (mode == "mixed" and i % 3 == 0):
            items = []
            for j in range(int(rng.integers(2, 40))):
                id_ = f"b{i}-{j}"
                items.append(("upsert", id_, rng.normal(size=dim).astype(np.float32)))
            ops.append(("batch", items))
            live.extend(x[1] for x in items)
        elif mode == "mixed" and live and i % 3 == 1:
            id_ = live.pop(int(rng.integers(0, len(live))))
            ops.append(("delete", id_))
        else:
            id_ = f"s{i}"
            ops.append(("upsert", id_, rng.normal(size=dim).astype(np.float32)))
            live.append(id_)
    return ops


def apply_model(model: dict, op) -> None:
    if op[0] == "upsert":
        model[op[1]] = op[2]
    elif op[0] == "delete":
        model.pop(op[1], None)
    else:
        for _, id_, vec in op[1]:
            model[id_] = vec


def main() -> None:
    import vecstore_ref as vs

    path, seed, n_ops, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    index = sys.argv[5] if len(sys.argv) > 5 else "flat"
    ops = ops_for(seed, n_ops, mode)
    store = vs.VecStore.open(path, dim=8, metric="euclidean", index=index)
    print("READY", flush=True)
    for i, op in enumerate(ops):
        if op[0] == "upsert":
            store.upsert(op[1], op[2])
        elif op[0] == "delete":
            store.delete(op[1])
        else:
            store.batch_execute([vs.Upsert(id_, vec) for _, id_, vec in op[1]])
        sys.stdout.write(f"ACK {i}\n")
        sys.stdout.flush()
    store.close()
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
