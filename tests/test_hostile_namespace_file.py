"""A NAMESPACE.json whose quotas have the wrong type is a typed error, not a TypeError at the next write."""

from __future__ import annotations

import json

import numpy as np
import pytest

import vecstore_ref as vs


@pytest.mark.parametrize("quotas", [5, "x", [], {"max_vectors": "5"}, {"max_bytes": []}, {"max_vectors": 1.5}])
def test_bad_quotas_are_a_typed_error(tmp_path, quotas):
    root = str(tmp_path / "r")
    with vs.NamespaceManager(root) as m:
        m.create_namespace("ns", dim=4, metric="dot", index="flat", quotas=vs.Quotas(max_vectors=10))
    p = f"{root}/ns/NAMESPACE.json"
    cfg = json.load(open(p))
    cfg["quotas"] = quotas
    open(p, "w").write(json.dumps(cfg))
    with vs.NamespaceManager(root) as m:
        with pytest.raises(vs.VecStoreError):
            m.get_namespace("ns").upsert("a", np.ones(4, dtype=np.float32))
