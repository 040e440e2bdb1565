"""The namespace and backup commands over `--data ROOT`, and the read-only `NamespaceManager` they inspect with."""

from __future__ import annotations

import os
import tarfile
import time

import pytest
from cli_helpers import assert_one_line_error, json_lines, one_json, run, run_many

import vecstore_ref as vs
from vecstore_ref._fs import dir_digest


def test_namespaces_and_backups_from_the_shell(tmp_path):
    root = str(tmp_path / "data")
    created = run("namespaces", "create", "docs", "--data", root, "--dim", "3", "--index", "flat", "--max-vectors",
                  "5")
    assert created.returncode == 0, created.stderr
    assert created.stdout == "created namespace docs (cosine, flat, dim 3)\n"
    made = run("--json", "namespaces", "--data", root, "create", "pics", "--metric", "dot")
    assert one_json(made.stdout) == {"namespace": "pics", "dim": None, "metric": "dot", "index": "hnsw",
                                     "quotas": {"max_vectors": None, "max_bytes": None}}
    assert_one_line_error(run("namespaces", "create", "docs", "--data", root), "AlreadyExistsError")
    listed, listed_json = run_many([("namespaces", "--data", root), ("namespaces", "list", "--data", root, "--json")])
    assert listed.stdout == "docs\npics\n" and json_lines(listed_json.stdout) == [{"namespace": "docs"},
                                                                                   {"namespace": "pics"}]
    with vs.NamespaceManager(root) as mgr:
        mgr.get_namespace("docs").upsert("a", [1.0, 0.0, 0.0], {"v": 1})
    first = one_json(run("backup", "docs", "first", "--data", root, "--json").stdout)
    assert first["name"] == "first" and first["count"] == 1 and first["dim"] == 3
    assert isinstance(first["created_at"], float) and abs(first["created_at"] - time.time()) < 600  # Unix seconds
    with vs.NamespaceManager(root) as mgr:
        mgr.get_namespace("docs").upsert("a", [0.0, 1.0, 0.0], {"v": 2})
    auto = run("backup", "docs", "--data", root)
    assert auto.returncode == 0 and auto.stdout.startswith("backup 20"), auto.stderr
    backups = json_lines(run("backups", "docs", "--data", root, "--json").stdout)
    assert [b["name"] for b in backups][1:] == ["first"] and backups[0]["name"].endswith("Z")
    assert backups[1]["created_at"] == first["created_at"]  # times stay Unix seconds in JSON
    text = run("backups", "docs", "--data", root).stdout.splitlines()
    assert text[1].split("\t")[0] == "first" and text[1].split("\t")[2] == "1"

    archive = tmp_path / "first.tar"
    wrote = run("export-backup", "docs", "first", archive, "--data", root)
    assert wrote.returncode == 0 and archive.stat().st_size > 0, wrote.stderr
    assert {m.name for m in tarfile.open(archive)} >= {"BACKUP.json", "MANIFEST"}
    assert_one_line_error(run("export-backup", "docs", "first", archive, "--data", root), "--overwrite")
    assert run("export-backup", "docs", "first", archive, "--data", root, "--overwrite").returncode == 0
    assert [n for n in os.listdir(tmp_path) if n.endswith(".tmp")] == []

    imported = run("import-backup", "pics", "from-docs", archive, "--data", root, "--json")
    assert one_json(imported.stdout)["name"] == "from-docs", imported.stderr
    restored = run("restore-backup", "docs", "first", "--data", root)
    assert restored.stdout.startswith("restored namespace docs from backup first (1 record visible)")
    with vs.NamespaceManager(root, read_only=True) as mgr:
        assert mgr.get_namespace("docs").get("a").metadata == {"v": 1}
    assert run("delete-backup", "docs", "first", "--data", root).returncode == 0
    assert_one_line_error(run("restore-backup", "docs", "first", "--data", root), "NotFoundError", "first")
    assert_one_line_error(run("backup", "../etc", "x", "--data", root), "InvalidNameError")
    assert run("namespaces", "delete", "pics", "--data", root).returncode == 0
    assert run("namespaces", "--data", root).stdout == "docs\n"


def test_reading_a_root_changes_nothing_there(tmp_path):
    root = str(tmp_path / "data")
    with vs.NamespaceManager(root) as mgr:
        mgr.create_namespace("docs", dim=2, index="flat").upsert("a", [1.0, 0.0])
        mgr.backup_namespace("docs", "b1")
    leftover = os.path.join(root, ".creating-other-1234abcd")  # what a writer creating a namespace has in flight
    os.makedirs(leftover)
    before = dir_digest(root)
    procs = run_many([("namespaces", "--data", root), ("backups", "docs", "--data", root),
                      ("export-backup", "docs", "b1", tmp_path / "b1.tar", "--data", root)])
    assert [p.returncode for p in procs] == [0, 0, 0], [p.stderr for p in procs]
    assert dir_digest(root) == before and os.path.isdir(leftover)


def test_a_read_only_manager_creates_cleans_and_writes_nothing(tmp_path):
    with pytest.raises(vs.NotFoundError):
        vs.NamespaceManager(tmp_path / "missing", read_only=True)
    assert not os.path.exists(tmp_path / "missing")
    root = str(tmp_path / "data")
    with vs.NamespaceManager(root) as mgr:
        mgr.create_namespace("docs", dim=2, index="flat").upsert("a", [1.0, 0.0])
        mgr.backup_namespace("docs", "b1")
    before = dir_digest(root)
    with vs.NamespaceManager(root, read_only=True) as ro:
        assert ro.list_namespaces() == ["docs"]
        assert [b[0] for b in ro.list_namespace_backups("docs")] == ["b1"]
        store = ro.get_namespace("docs")
        assert store.get("a").metadata is None
        with pytest.raises(vs.ReadOnlyError):
            store.upsert("b", [0.0, 1.0])
        for write in (lambda: ro.create_namespace("x"), lambda: ro.delete_namespace("docs"),
                      lambda: ro.backup_namespace("docs", "b2"), lambda: ro.restore_namespace("docs", "b1"),
                      lambda: ro.delete_namespace_backup("docs", "b1"),
                      lambda: ro.import_backup("docs", tmp_path / "none.tar", "b3")):
            with pytest.raises(vs.ReadOnlyError):
                write()
        ro.export_backup("docs", "b1", tmp_path / "b1.tar")  # reads the root, writes outside it
    assert dir_digest(root) == before


def test_a_bad_name_creates_no_root(tmp_path):
    from cli_helpers import assert_one_line_error, run

    for args in (("namespaces", "create", "../evil"), ("backup", "docs", "../b")):
        assert_one_line_error(run(*args, "--data", tmp_path / "newroot"), "InvalidNameError")
    assert not (tmp_path / "newroot").exists()


def test_the_demo_refuses_sizes_beyond_a_tour(tmp_path):
    from cli_helpers import run

    proc = run("demo", "--data", tmp_path / "d", "--n", "100000000")
    assert proc.returncode == 2 and "at most 1,000,000" in proc.stderr
    assert not (tmp_path / "d").exists()


def test_a_namespace_directory_is_a_store_path_for_every_store_command(tmp_path):
    import json

    import numpy as np

    root = str(tmp_path / "data")
    ns = os.path.join(root, "docs")
    assert run("namespaces", "create", "docs", "--data", root, "--dim", "4", "--max-vectors", "30").returncode == 0
    np.save(tmp_path / "v.npy", np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32))
    (tmp_path / "m.jsonl").write_text("".join(json.dumps({"id": f"doc-{i}", "metadata": {"i": i}}) + "\n"
                                               for i in range(20)))
    loaded = run("ingest", ns, str(tmp_path / "v.npy"), "--metadata", str(tmp_path / "m.jsonl"))
    assert loaded.returncode == 0, loaded.stderr
    assert run("upsert", ns, "extra", "--vector", "[1, 0, 0, 0]").returncode == 0
    assert one_json(run("stats", ns, "--json").stdout)["visible"] == 21
    hits = json_lines(run("query", ns, "--vector", "[1, 0, 0, 0]", "--k", "1", "--json").stdout)
    assert hits[0]["id"] == "extra"
    assert run("verify", ns).returncode == 0
    # the quotas hold: 20 more records would make 41 of the 30 allowed, and nothing of them is written
    (tmp_path / "more.jsonl").write_text("".join(json.dumps({"id": f"m{i}", "vector": [1, i, 0, 0]}) + "\n"
                                                 for i in range(20)))
    assert_one_line_error(run("ingest", ns, str(tmp_path / "more.jsonl")), "QuotaExceededError")
    assert_one_line_error(run("ingest", ns, str(tmp_path / "v.npy"), "--dim", "5"), "DimensionMismatchError")
    assert_one_line_error(run("upsert", ns, "x", "--vector", "[1, 0, 0, 0]", "--metric", "dot"),
                          "InvalidArgumentError")
    with vs.NamespaceManager(root) as mgr:
        assert len(mgr.get_namespace("docs")) == 21
    # after a restore the commands write the generation the restore made current
    assert run("backup", "docs", "b1", "--data", root).returncode == 0
    assert run("delete", ns, "extra").returncode == 0
    assert run("restore-backup", "docs", "b1", "--data", root).returncode == 0
    assert run("delete", ns, "doc-does-not-exist").returncode == 1
    assert run("soft-delete", ns, "extra").returncode == 0
    with vs.NamespaceManager(root) as mgr:
        store = mgr.get_namespace("docs")
        assert "extra" not in store and store.get("extra", include_deleted=True).deleted
    generation = next(os.path.join(ns, n) for n in os.listdir(ns) if n.startswith("store-"))
    before = dir_digest(ns)
    refused = run("upsert", generation, "y", "--vector", "[1, 0, 0, 0]")
    assert_one_line_error(refused, "InvalidArgumentError")
    assert "give the namespace's directory" in refused.stderr and dir_digest(ns) == before


def test_verify_of_a_namespace_whose_own_file_is_damaged_says_so(tmp_path):
    root = str(tmp_path / "data")
    assert run("namespaces", "create", "docs", "--data", root, "--dim", "2").returncode == 0
    ns = os.path.join(root, "docs")
    assert run("verify", ns).returncode == 0
    with open(os.path.join(ns, "NAMESPACE.json"), "w") as f:
        f.write("{bad")
    damaged = run("verify", ns)
    assert damaged.returncode == 3 and "NAMESPACE.json is unreadable" in damaged.stdout, damaged.stdout


def test_a_refused_namespace_write_cleans_nothing_anywhere(tmp_path):
    from vecstore_ref._fs import dir_digest

    root = tmp_path / "data"
    assert run("namespaces", "create", "docs", "--data", str(root), "--dim", "2").returncode == 0
    os.symlink(root / "docs", tmp_path / "mylink")
    (tmp_path / ".deleting-precious").mkdir()
    (tmp_path / "proj" / "x").mkdir(parents=True)
    (tmp_path / "proj" / ".creating-notes").mkdir()
    (tmp_path / "proj" / "x" / ".staging-work").mkdir()
    (tmp_path / "proj" / "x" / "NAMESPACE.json").write_bytes((root / "docs" / "NAMESPACE.json").read_bytes())
    before = dir_digest(str(tmp_path))
    assert_one_line_error(run("delete", str(tmp_path / "mylink"), "a"), "InvalidNameError", "symbolic link")
    assert_one_line_error(run("upsert", str(tmp_path / "proj" / "x"), "a", "--vector", "[1, 0]"), "NotFoundError")
    assert dir_digest(str(tmp_path)) == before
