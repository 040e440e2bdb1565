"""The id map: ids packed by slot, and the id -> slot hash table over their bytes (no dict, no str per record)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vecstore_ref.ids import IdMap

IDS = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=6)


class Owner:
    """Plays the store: slot states (mapped or not) that the map reads when it rebuilds its table."""

    def __init__(self):
        self.mapped = np.zeros(0, dtype=bool)

    def mask(self, n: int) -> np.ndarray:
        return self.mapped[:n]

    def grow(self, n: int) -> None:
        if n > self.mapped.size:
            self.mapped = np.concatenate([self.mapped, np.zeros(max(n, 2 * self.mapped.size) - self.mapped.size, bool)])


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["put", "put_many", "del", "reopen"]), st.lists(IDS, min_size=1,
                                                                                           max_size=40)),
                    max_size=40))
def test_the_table_agrees_with_a_dict(ops):
    owner = Owner()
    m = IdMap(owner.mask)
    model: dict[str, int] = {}
    for kind, ids in ops:
        if kind in ("put", "put_many"):
            fresh = [i for i in dict.fromkeys(ids) if i not in model]
            if not fresh:
                continue
            owner.grow(m.n + len(fresh))
            first = m.n
            if kind == "put":
                for j, i in enumerate(fresh):
                    owner.mapped[first + j] = True
                    m.append(first + j, i)
            else:
                owner.mapped[first:first + len(fresh)] = True
                m.append_many(first, fresh)
            model.update({i: first + j for j, i in enumerate(fresh)})
        elif kind == "del":
            for i in ids:
                if i in model:
                    slot = model.pop(i)
                    owner.mapped[slot] = False
                    m.unmap(slot)
        else:  # a snapshot round trip: the table is rebuilt lazily from the slot states
            blob, offsets = m.to_arrays(m.n)
            m = IdMap.from_arrays(blob.copy(), offsets.copy(), owner.mask)
        probe = list(model) + [i + "x" for i in list(model)[:5]] + ["absent"]
        assert [m.lookup(i) for i in probe] == [model.get(i, -1) for i in probe]
        assert m.lookup_many(probe).tolist() == [model.get(i, -1) for i in probe]
        assert m.mapped_count() == len(model)
    assert all(m.id_at(s) == i for i, s in model.items())
    assert [m.array()[s] for s in model.values()] == list(model)


def test_many_ids_grow_the_table_and_removals_keep_every_other_id_findable():
    owner = Owner()
    owner.grow(20_000)
    m = IdMap(owner.mask)
    ids = [f"doc-{i}" for i in range(20_000)]
    owner.mapped[:] = True
    m.append_many(0, ids)
    rng = np.random.default_rng(0)
    gone = set(rng.choice(20_000, 7_000, replace=False).tolist())
    for s in gone:
        owner.mapped[s] = False
        m.unmap(s)
    got = m.lookup_many(ids)
    assert got.tolist() == [-1 if s in gone else s for s in range(20_000)]
    assert m.lookup("doc-\ud800") == -1  # a lone surrogate is no stored id
    assert m._table.shape[0] >= 2 * m.mapped_count()


def test_take_gathers_the_ids_of_kept_slots():
    owner = Owner()
    owner.grow(10)
    owner.mapped[:10] = True
    m = IdMap(owner.mask)
    m.append_many(0, [f"é{i}" for i in range(10)])
    keep = np.array([1, 4, 9])
    t = IdMap.take(m, keep, lambda n: np.ones(n, dtype=bool))
    assert [t.id_at(i) for i in range(3)] == ["é1", "é4", "é9"]
    assert [t.lookup(i) for i in ("é4", "é9", "é0")] == [1, 2, -1]
