"""The command line, run as a user would (a subprocess): inspection without side effects, one-record writes,
maintenance, output formats, errors and exit statuses."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from cli_helpers import (
    assert_one_line_error,
    cli_command,
    cli_env,
    json_lines,
    one_json,
    run,
    run_many,
)

import vecstore_ref as vs
from vecstore_ref._fs import dir_digest

PYTHON_REPR = re.compile(r"\b(None|True|False)\b|array\(|np\.")


def make_store(path, n=40, dim=4, index="flat"):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    with vs.VecStore.open(path, dim=dim, metric="cosine", index=index, durability="none") as s:
        s.upsert_many([f"r{i}" for i in range(n)], x, [{"i": i, "even": i % 2 == 0, "tag": None} for i in range(n)])
        s.soft_delete("r1")
        s.upsert_with_ttl("ttl", x[0], {"k": "v"}, 3600)
    return x


def test_version_and_both_entry_points():
    by_module = run("--version")
    assert by_module.returncode == 0 and by_module.stdout.strip() == f"vecstore-ref {vs.__version__}"
    by_main = subprocess.run([sys.executable, "-c", "import sys; from vecstore_ref.cli import main; sys.exit(main())",
                              "--version"], capture_output=True, text=True, env=cli_env(), timeout=600)
    assert by_main.stdout == by_module.stdout
    nothing = run()
    assert nothing.returncode == 2 and "usage: vecstore-ref" in nothing.stderr


def test_demo_prints_real_results(tmp_path):
    out = run("demo", "--data", tmp_path / "data", "--n", "1000", "--dim", "16")
    assert out.returncode == 0, out.stderr
    assert "ingested 1000 vectors" in out.stdout
    assert out.stdout.count("score=") >= 10
    recall = float(out.stdout.split("exact scan on 100 queries: ")[1].split()[0])
    assert recall >= 0.9
    again = run("--json", "demo", "--data", tmp_path / "data", "--n", "1000", "--dim", "16")
    assert again.returncode == 0, again.stderr
    messages = [m["message"] for m in json_lines(again.stdout)]
    assert any("recall@10" in m for m in messages)


READS = [("stats", "{p}"), ("verify", "{p}"), ("get", "{p}", "x"), ("query", "{p}", "--vector", "[1, 0]"),
         ("export", "{p}", "{p}-out"), ("backups", "ns", "--data", "{p}"), ("namespaces", "--data", "{p}"),
         ("namespaces", "list", "--data", "{p}"), ("export-backup", "ns", "b", "{p}.tar", "--data", "{p}")]
# every write but ingest, import, upsert and `namespaces create` needs what it writes to exist (a sample of them)
WRITES_NEEDING_A_STORE = [("soft-delete", "{p}", "x"), ("set-ttl", "{p}", "x", "5"), ("compact", "{p}"),
                          ("backup", "ns", "--data", "{p}"), ("namespaces", "delete", "ns", "--data", "{p}")]


def test_a_path_with_no_store_is_an_error_that_creates_nothing(tmp_path):
    missing = str(tmp_path / "typo")
    before = dir_digest(str(tmp_path))
    commands = [tuple(a.format(p=missing) for a in c) for c in READS + WRITES_NEEDING_A_STORE]
    for cmd, proc in zip(commands, run_many(commands)):
        assert_one_line_error(proc, "no ", missing)
        assert proc.stdout == "", cmd
    assert dir_digest(str(tmp_path)) == before
    os.makedirs(missing)  # an empty directory is not a store either
    for proc in run_many([("stats", missing), ("--json", "verify", missing)]):
        assert proc.returncode == 1 and f"no store at {missing}" in proc.stderr
    assert os.listdir(missing) == []


def test_reads_change_nothing_and_work_beside_a_writer(tmp_path):
    path = str(tmp_path / "s")
    make_store(path, index="hnsw")
    with vs.VecStore.open(path) as writer:  # holds the write lock: the reads must not need it
        before = dir_digest(path)
        procs = run_many([("stats", path, "--json"), ("get", path, "r3", "--json"), ("verify", path),
                          ("query", path, "--vector", "[1, 0, 0, 0]", "--k", "3", "--json"),
                          ("export", path, tmp_path / "exp")])
        assert [p.returncode for p in procs] == [0] * 5, [p.stderr for p in procs]
        assert dir_digest(path) == before
        writer.upsert("later", [0.0, 0.0, 1.0, 0.0])  # and the writer was never disturbed
    stats = one_json(procs[0].stdout)
    assert stats["visible"] == 40 and stats["soft_deleted"] == 1 and "read_only" not in stats
    assert one_json(procs[1].stdout)["metadata"] == {"i": 3, "even": False, "tag": None}
    assert len(json_lines(procs[3].stdout)) == 3
    assert json.loads((tmp_path / "exp" / "manifest.json").read_text())["count"] == 40


def test_one_record_commands(tmp_path):
    path = str(tmp_path / "s")
    created = run("upsert", path, "a", "--vector", "[1, 0, 0]", "--metadata", '{"lang": "en"}', "--index", "flat",
                  "--metric", "euclidean")
    assert created.returncode == 0 and created.stdout == "upserted a\n", created.stderr
    r = run("--json", "upsert", path, "b", "--vector", "[0, 1, 0]", "--ttl", "3600")
    assert one_json(r.stdout)["expires_at"] is not None
    with vs.VecStore.open(path, read_only=True) as s:
        assert s.stats().metric == "euclidean" and s.stats().index == "flat" and len(s) == 2
    steps = [
        (("update-metadata", path, "a", "--metadata", '{"lang": "de"}'), "updated the metadata of a"),
        (("soft-delete", path, "a"), "soft-deleted a"),
        (("soft-delete", path, "a"), "a was already soft-deleted"),
        (("restore", path, "a"), "restored a"),
        (("set-ttl", path, "a", "60"), "a expires at 20"),
        (("set-ttl", path, "a", "--clear"), "a has no TTL"),
        (("delete", path, "b"), "deleted b"),
    ]
    for args, text in steps:
        proc = run(*args)
        assert proc.returncode == 0 and proc.stdout.startswith(text), (args, proc.stdout, proc.stderr)
    got = one_json(run("get", path, "a", "--json").stdout)
    assert got == {"id": "a", "vector": [1.0, 0.0, 0.0], "metadata": {"lang": "de"}, "expires_at": None,
                   "deleted": False}
    assert_one_line_error(run("delete", path, "b"), "NotFoundError", "'b'")
    assert one_json(run("soft-delete", path, "a", "--json").stdout) == {"id": "a", "changed": True}
    assert one_json(run("get", path, "a", "--include-deleted", "--json").stdout)["deleted"] is True
    # a store that exists keeps its options; --index only shapes a new one
    assert_one_line_error(run("upsert", path, "c", "--vector", "[0, 0, 1]", "--index", "hnsw"), "--index")


def test_text_output_is_words_and_json_never_python_reprs(tmp_path):
    path = str(tmp_path / "s")
    make_store(path)
    procs = run_many([("stats", path), ("get", path, "r2"), ("get", path, "ttl"), ("verify", path),
                      ("query", path, "--vector", "[1, 0, 0, 0]", "--k", "5"), ("compact", path, "--if-needed")])
    for proc in procs:
        assert proc.returncode == 0, proc.stderr
        assert not PYTHON_REPR.search(proc.stdout), proc.stdout
    stats, plain, ttl, verify, query, compact = (p.stdout for p in procs)
    assert "last_compaction: null" in stats and "compaction_config.enabled: true" in stats
    assert "metadata.even: true" in plain and "metadata.tag: null" in plain and "expires_at: null" in plain
    assert re.search(r"^expires_at: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", ttl, re.M), ttl
    assert verify.startswith("ok: ")
    rows = [line.split("\t") for line in query.splitlines()]
    assert len(rows) == 5 and all(len(r) == 3 for r in rows)
    assert [float(r[1]) for r in rows] == sorted((float(r[1]) for r in rows), reverse=True)
    assert json.loads(rows[0][2]).keys() == {"i", "even", "tag"}
    assert compact.startswith("not compacted: ")


def test_query_json_is_one_hit_per_line(tmp_path):
    path = str(tmp_path / "s")
    x = make_store(path)
    hits = json_lines(run("query", path, "--vector", json.dumps(x[5].tolist()), "--k", "4", "--json",
                          "--filter", "even = false").stdout)
    assert [h["rank"] for h in hits] == [1, 2, 3, 4]
    assert hits[0]["id"] == "r5" and hits[0]["score"] == pytest.approx(1.0, abs=1e-6)
    assert all(h["metadata"]["even"] is False for h in hits) and "r1" not in {h["id"] for h in hits}
    assert run("query", path, "--vector", "[0, 0, 0, 1]", "--filter", "i > 1000").stdout == ""


def test_errors_are_one_line_and_usage_errors_exit_2(tmp_path):
    path = str(tmp_path / "s")
    make_store(path)
    wrong_dim, bad_filter, json_error, bad_k, bad_vector, bad_ttl = run_many([
        ("upsert", path, "x", "--vector", "[1, 2]"),
        ("query", path, "--vector", "[1, 0, 0, 0]", "--filter", "i >"),
        ("--json", "get", path, "nope"),
        ("query", path, "--vector", "[1, 0, 0, 0]", "--k", "0"),
        ("query", path, "--vector", "[1, true, 0, 0]"),
        ("set-ttl", path, "r2", "-5"),
    ])
    assert_one_line_error(wrong_dim, "DimensionMismatchError")
    assert_one_line_error(bad_filter, "FilterSyntaxError")
    assert json.loads(json_error.stderr) == {"error": {"type": "NotFoundError", "code": "not_found",
                                                       "message": "no record with id 'nope'"}}
    for usage in (bad_k, bad_vector, bad_ttl):
        assert usage.returncode == 2 and "usage: vecstore-ref" in usage.stderr and "Traceback" not in usage.stderr
    assert "--k" in bad_k.stderr and "--vector" in bad_vector.stderr


def test_verify_exit_status_3_when_damaged(tmp_path):
    path = str(tmp_path / "s")
    make_store(path)
    assert run("verify", path).returncode == 0
    log = os.path.join(path, "log-00000001.vsl")
    data = bytearray(open(log, "rb").read())
    data[40] ^= 0xFF  # inside the first record, with valid records after it: corruption, not a torn tail
    open(log, "wb").write(bytes(data))
    text, as_json = run_many([("verify", path), ("verify", path, "--json")])
    assert text.returncode == 3 and text.stdout.startswith("damaged: "), text.stdout + text.stderr
    report = one_json(as_json.stdout)
    assert as_json.returncode == 3 and report["ok"] is False and report["errors"]
    assert_one_line_error(run("stats", path), "CorruptLogError")


def test_maintenance_commands(tmp_path):
    path = str(tmp_path / "s")
    make_store(path)
    run("delete", path, "r4")
    compact = one_json(run("compact", path, "--json").stdout)
    assert compact["triggered"] is True and compact["removed_count"] == 2  # r1 (soft) and r4 (hard)
    snap = run("snapshot", path)
    assert snap.returncode == 0 and snap.stdout.startswith("wrote a snapshot of ")
    assert one_json(run("expire", path, "--json").stdout) == {"expired": 0}
    with vs.VecStore.open(path, read_only=True) as s:
        assert s.stats().snapshot_bytes > 0 and len(s) == 39


def test_a_reader_that_goes_away_is_not_a_traceback(tmp_path):
    path = str(tmp_path / "s")
    make_store(path, n=3000, dim=4)
    proc = subprocess.Popen(cli_command("query", path, "--vector", "[1, 0, 0, 0]", "--k", "3000"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env())
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=600) in (0, 1) and "Traceback" not in err and err == ""


def test_a_vector_can_come_from_stdin(tmp_path):
    path = str(tmp_path / "s")
    vector = json.dumps([0.5] * 300)
    assert run("upsert", path, "long", "--vector", "-", "--index", "flat", input=vector).returncode == 0
    hits = json_lines(run("query", path, "--vector", "-", "--k", "1", "--json", input=vector).stdout)
    assert hits[0]["id"] == "long" and hits[0]["score"] == pytest.approx(1.0, abs=1e-6)


def test_a_refused_first_write_leaves_no_new_store(tmp_path):
    """upsert and ingest check the record (or their first chunk) before a new store is left behind."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "a\u0001b", "vector": [1, 2]}) + "\n")
    np.save(tmp_path / "nan.npy", np.array([[1, 2], [np.nan, 1]], dtype=np.float32))
    np.save(tmp_path / "zero.npy", np.zeros((5, 0), dtype=np.float32))
    procs = run_many([
        ("upsert", tmp_path / "u1", "x", "--vector", "[1, 2]", "--dim", "3"),
        ("upsert", tmp_path / "u2", "x", "--vector", "[0, 0]"),
        ("upsert", tmp_path / "u3", "a\u0001b", "--vector", "[1, 2]"),
        ("upsert", tmp_path / "u4", "x", "--vector", "[1, 2]", "--metadata", '{"a": {"b": 1}}'),
        ("ingest", tmp_path / "i1", bad),
        ("ingest", tmp_path / "i2", tmp_path / "nan.npy"),
        ("ingest", tmp_path / "i3", tmp_path / "zero.npy"),
    ])
    for p in procs:
        assert_one_line_error(p)
    assert sorted(os.listdir(tmp_path)) == ["bad.jsonl", "nan.npy", "zero.npy"]
    mine = tmp_path / "mine"  # a directory of the user's, with no store in it yet: only the store's files go again
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    assert_one_line_error(run("ingest", mine, bad))
    assert os.listdir(mine) == ["notes.txt"] and (mine / "notes.txt").read_text() == "precious"


def test_write_commands_never_put_a_store_inside_a_namespace(tmp_path):
    assert run("namespaces", "create", "docs", "--data", tmp_path / "root", "--dim", "2").returncode == 0
    before = sorted(os.listdir(tmp_path / "root" / "docs"))
    wrote = run("upsert", tmp_path / "root" / "docs", "v1", "--vector", "[1, 2]")  # into the namespace's own store
    assert wrote.returncode == 0, wrote.stderr
    assert sorted(os.listdir(tmp_path / "root" / "docs")) == before
    with vs.NamespaceManager(tmp_path / "root") as mgr:
        assert "v1" in mgr.get_namespace("docs")


def test_a_ttl_that_has_passed_by_the_time_it_is_reported_is_still_a_success(tmp_path):
    s = tmp_path / "s"
    assert run("upsert", s, "keep", "--vector", "[1, 2]").returncode == 0
    for args in (("upsert", s, "tiny", "--vector", "[1, 2]", "--ttl", "1e-9"), ("set-ttl", s, "keep", "0.000001")):
        proc = run("--json", *args)
        assert proc.returncode == 0, proc.stderr
        assert one_json(proc.stdout)["expires_at"] > 0


def test_stdin_closed_and_named_pipes(tmp_path):
    s = tmp_path / "s"
    lines = "".join(json.dumps({"id": f"r{i}", "vector": [1, i]}) + "\n" for i in range(1, 30))
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", f"cat > '{fifo}'"], stdin=subprocess.PIPE, text=True)
    proc = subprocess.Popen(cli_command("ingest", s, fifo, "--format", "jsonl"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli_env())
    writer.communicate(lines, timeout=120)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    with vs.VecStore.open(s, read_only=True) as st:
        assert len(st) == 29
    for args, status in ((("ingest", s, "-"), 1), (("query", s, "--vector", "-"), 2)):
        closed = subprocess.run(cli_command(*args), capture_output=True, text=True, stdin=None, env=cli_env(),
                                timeout=120, preexec_fn=lambda: os.close(0))
        assert closed.returncode == status and "Traceback" not in closed.stderr, closed.stderr
        assert "stdin" in closed.stderr


def test_import_into_its_own_export_directory_is_refused(tmp_path):
    s = tmp_path / "s"
    assert run("upsert", s, "a", "--vector", "[1, 2]").returncode == 0
    assert run("export", s, tmp_path / "exp").returncode == 0
    before = sorted(os.listdir(tmp_path / "exp"))
    assert_one_line_error(run("import", tmp_path / "exp" / "store", tmp_path / "exp"), "inside the export")
    assert sorted(os.listdir(tmp_path / "exp")) == before
    vs.VecStore.open(tmp_path / "e").close()  # no record yet, so no dimension
    assert "0 records of dimension null" in run("export", tmp_path / "e", tmp_path / "exp2").stdout


def test_serve_refuses_a_port_out_of_range_and_reports_one_that_is_taken(tmp_path):
    """A port above 65535 is a usage error (uvicorn bound it modulo 65536 and printed the wrong URL); a port in
    use, or an address not of this machine, is the one error line and exit 1 (uvicorn's own exit was 3, which means
    "verify found damage"), and no "serving" event is printed before the server listens."""
    import socket

    pytest.importorskip("uvicorn")
    too_big = run("serve", "--data", tmp_path / "d", "--port", "70001")
    assert too_big.returncode == 2 and "65535" in too_big.stderr
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        port = str(taken.getsockname()[1])
        busy, bad_host = run_many([("--json", "serve", "--data", tmp_path / "d", "--port", port),
                                   ("serve", "--data", tmp_path / "d", "--host", "192.0.2.1")])  # not ours
    finally:
        taken.close()
    assert busy.returncode == 1 and busy.stdout == "", busy.stdout
    err = json.loads(busy.stderr.strip().splitlines()[-1])["error"]
    assert err["type"] == "OSError" and port in err["message"]
    assert bad_host.returncode == 1
    assert_one_line_error(bad_host, "OSError")


def test_serve_says_where_it_listens_in_text_mode_too(tmp_path):
    import signal
    import socket

    pytest.importorskip("uvicorn")
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    proc = subprocess.Popen(cli_command("serve", "--data", tmp_path / "d", "--port", str(port)),
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=cli_env())
    try:
        first = proc.stderr.readline()  # blocks until the server listens (or exits)
        _wait_until_answering(port)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
    assert f"on http://127.0.0.1:{port} " in first and "/docs" in first, first


def _wait_until_answering(port: int) -> None:
    """Until the server answers /healthz: a SIGINT that came before uvicorn set its handlers could be lost."""
    import time
    import urllib.request

    for _ in range(600):  # a bound against hanging, not a timing assertion
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=60) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the server never answered")


def test_a_second_server_on_the_same_data_directory_is_refused_at_its_start(tmp_path):
    import signal
    import socket

    pytest.importorskip("uvicorn")
    ports = []
    for _ in range(2):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        ports.append(probe.getsockname()[1])
        probe.close()
    first = subprocess.Popen(cli_command("serve", "--data", tmp_path / "d", "--port", str(ports[0])),
                             stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=cli_env())
    try:
        assert "serving" in first.stderr.readline()
        _wait_until_answering(ports[0])
        second = run("serve", "--data", tmp_path / "d", "--port", str(ports[1]))
        assert_one_line_error(second, "StoreLockedError", f"pid {first.pid}")
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)
    assert sorted(os.listdir(tmp_path / "d")) == [".server.lock", "default"]


def test_a_read_started_without_stdout_fails_instead_of_losing_its_answer(tmp_path):
    import shlex

    path = tmp_path / "s"
    assert run("upsert", path, "a", "--vector", "[1, 0, 0, 0]").returncode == 0
    for args in (("query", path, "--vector", "[1, 0, 0, 0]"), ("get", path, "a"), ("stats", path)):
        cmd = " ".join(shlex.quote(str(c)) for c in cli_command(*args))
        proc = subprocess.run(["sh", "-c", cmd + " >&-"], capture_output=True, text=True, env=cli_env(), timeout=600)
        assert proc.returncode == 1 and "stdout is closed" in proc.stderr, (args, proc.stderr)


def test_a_write_started_without_stdout_succeeds_and_says_so_by_its_status(tmp_path):
    """`>&-` (cron, a supervisor): Python has no sys.stdout; the write succeeds, so the status is 0, not an
    internal error that would make a retry fail."""
    import shlex

    path = tmp_path / "s"
    cmd = " ".join(shlex.quote(c) for c in cli_command("upsert", path, "a", "--vector", "[1, 0, 0, 0]"))
    proc = subprocess.run(["sh", "-c", cmd + " >&-"], capture_output=True, text=True, env=cli_env(), timeout=600)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    with vs.VecStore.open(path, read_only=True) as s:
        assert s.ids() == ["a"]


def test_demo_after_an_interrupted_first_run_starts_over_and_never_shows_a_foreign_directory(tmp_path):
    """A first run stopped mid-ingest left a store without the demo's last steps: the next run starts over (it
    used to reopen it and report recall 0.000 with exit 0). A DATA/demo holding something else is an error."""
    with vs.VecStore.open(tmp_path / "d" / "demo", dim=16, metric="cosine") as s:
        s.upsert_many([f"doc-{i:05d}" for i in range(10)], np.random.default_rng(0).normal(size=(10, 16)))
    (tmp_path / "other" / "demo").mkdir(parents=True)
    (tmp_path / "other" / "demo" / "notes.txt").write_text("mine")
    again, foreign = run_many([("demo", "--data", tmp_path / "d", "--n", "1000", "--dim", "16"),
                               ("demo", "--data", tmp_path / "other", "--n", "1000", "--dim", "16")])
    assert again.returncode == 0, again.stderr
    assert "starting over" in again.stdout and "ingested 1000 vectors" in again.stdout
    assert float(again.stdout.split("exact scan on 100 queries: ")[1].split()[0]) >= 0.9
    assert_one_line_error(foreign, "not a vecstore_ref store")
    assert (tmp_path / "other" / "demo" / "notes.txt").read_text() == "mine"


def test_an_internal_error_subclass_is_reported_by_its_public_class(tmp_path):
    """A FIFO in a log segment's place is refused by an internal subclass of `UnsafePathError`; the one error
    line names the class a user can catch."""
    path = tmp_path / "s"
    with vs.VecStore.open(path, dim=4, index="flat") as s:
        s.upsert("a", [1, 0, 0, 0])
    seg = next(n for n in os.listdir(path) if n.startswith("log-"))
    os.remove(path / seg)
    os.mkfifo(path / seg)
    assert_one_line_error(run("get", path, "a"), "UnsafePathError", "not a regular file")


def test_demo_never_removes_a_store_with_hidden_records(tmp_path):
    with vs.VecStore.open(tmp_path / "d" / "demo", dim=16, metric="cosine") as s:
        s.upsert_many([f"doc-{i:05d}" for i in range(3)], np.random.default_rng(0).normal(size=(3, 16)))
        s.soft_delete("doc-00001")
    assert_one_line_error(run("demo", "--data", tmp_path / "d", "--n", "100", "--dim", "16"), "did not make")
    with vs.VecStore.open(tmp_path / "d" / "demo", read_only=True) as s:
        assert s.stats().soft_deleted == 1
