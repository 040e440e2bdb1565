"""`ingest`, `export` and `import` through a real subprocess, plus `VecStore.export` / `import_` in Python: the
round trip equals the source, bad lines are reported by number (fatal or skipped), a kill leaves whole chunks,
the progress bar shows on a terminal only, and bad input leaves nothing behind."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import random
import struct
import subprocess
import termios

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


def corpus(n=600, dim=16, seed=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    ids = [f"doc-{i}" if i % 7 else f"ドキュメント-{i}" for i in range(n)]
    metas = [{"i": i, "lang": ["en", "de", "日本語"][i % 3], "score": i / 3, "tags": ["a", str(i % 5)], "ok": i % 2 == 0,
              "none": None} if i % 11 else None for i in range(n)]
    return ids, x, metas


def write_npy_and_metadata(tmp_path, ids, x, metas):
    np.save(tmp_path / "vectors.npy", x)
    with open(tmp_path / "meta.jsonl", "w", encoding="utf-8") as f:
        for id_, md in zip(ids, metas):
            f.write(json.dumps({"id": id_, "metadata": md}, ensure_ascii=False) + "\n")
    return str(tmp_path / "vectors.npy"), str(tmp_path / "meta.jsonl")


def write_jsonl(path, ids, x, metas, bad: dict | None = None):
    """Record lines; ``bad`` maps a 0-based record index to the raw line that replaces it."""
    with open(path, "w", encoding="utf-8") as f:
        for i, (id_, md) in enumerate(zip(ids, metas)):
            line = json.dumps({"id": id_, "vector": x[i].tolist(), "metadata": md}, ensure_ascii=False)
            f.write((bad or {}).get(i, line) + "\n")
    return str(path)


def store_contents(path) -> dict:
    with vs.VecStore.open(path, read_only=True) as s:
        return {i: (s.get(i).vector.tobytes(), s.get(i).metadata) for i in s}


def source_contents(ids, x, metas, skip=()) -> dict:
    return {id_: (x[i].tobytes(), metas[i]) for i, id_ in enumerate(ids) if i not in skip}


def test_round_trip_ingest_export_import_verify_equals_the_source(tmp_path):
    ids, x, metas = corpus()
    npy, meta = write_npy_and_metadata(tmp_path, ids, x, metas)
    jsonl = write_jsonl(tmp_path / "records.jsonl", ids, x, metas)
    a, b, c = (str(tmp_path / n) for n in "abc")
    from_npy, from_jsonl = run_many([("ingest", a, npy, "--metadata", meta, "--batch", "250", "--index", "flat",
                                      "--json"),
                                     ("ingest", b, jsonl, "--batch", "250", "--index", "flat")])
    assert from_npy.returncode == 0 and from_jsonl.returncode == 0, from_npy.stderr + from_jsonl.stderr
    events = json_lines(from_npy.stdout)
    assert [e["event"] for e in events] == ["chunk", "chunk", "chunk", "done"]
    assert events[-1]["written"] == 600 and events[-1]["skipped"] == 0 and events[-1]["chunks"] == 3
    assert from_jsonl.stdout.startswith("ingested 600 records from ")
    want = source_contents(ids, x, metas)
    assert store_contents(a) == want and store_contents(b) == want

    exported = run("export", a, tmp_path / "exp", "--json")
    assert one_json(exported.stdout)["count"] == 600
    imported = run("import", c, tmp_path / "exp", "--json")
    assert json_lines(imported.stdout)[-1]["imported"] == 600, imported.stderr
    verified = run("verify", c, "--json")
    assert verified.returncode == 0 and one_json(verified.stdout)["ok"] is True
    assert store_contents(c) == want
    with vs.VecStore.open(c, read_only=True) as s:  # a new store takes the export's dim and metric
        assert (s.stats().dim, s.stats().metric) == (16, "cosine")


def test_npy_without_metadata_gets_row_numbers_as_ids(tmp_path):
    x = np.arange(30, dtype=np.float64).reshape(10, 3) + 1  # float64 and memory-mapped: cast per chunk
    np.save(tmp_path / "v.npy", x)
    proc = run("ingest", tmp_path / "s", tmp_path / "v.npy", "--batch", "4", "--metric", "euclidean")
    assert proc.returncode == 0, proc.stderr
    got = store_contents(tmp_path / "s")
    assert sorted(got, key=int) == [str(i) for i in range(10)]
    assert got["7"][0] == x[7].astype(np.float32).tobytes() and got["7"][1] is None


BAD_LINES = {  # 0-based record index -> (raw line, error type)
    3: ("{not json", "InvalidArgumentError"),
    5: ('{"id": "x5", "vector": [NaN, 1, 2, 3]}', "InvalidArgumentError"),
    8: ("[1, 2, 3]", "InvalidArgumentError"),
    13: ('{"id": "x13", "vector": [1, 2, 3, 4], "metdata": {}}', "InvalidArgumentError"),
    21: ('{"id": "x21"}', "InvalidArgumentError"),
    34: ('{"id": "x34", "vector": [1, true, 0, 0]}', "InvalidVectorTypeError"),
    35: ('{"id": "x35", "vector": ["1", 0, 0, 0]}', "InvalidVectorTypeError"),
    55: ('{"id": "x55", "vector": [1, 2, 3]}', "DimensionMismatchError"),
    89: ('{"id": "", "vector": [1, 2, 3, 4]}', "InvalidIdError"),
    90: ('{"id": 90, "vector": [1, 2, 3, 4]}', "InvalidIdTypeError"),
    144: ('{"id": "x144", "vector": [1, 2, 3, 4], "metadata": {"k": {"nested": 1}}}', "InvalidMetadataTypeError"),
    150: ('{"id": "x150", "vector": [1e39, 0, 0, 0]}', "InvalidVectorError"),
    151: ('{"id": "x151", "vector": [0, 0, 0, 0]}', "InvalidVectorError"),
    152: ('{"id": "x152", "id": "y", "vector": [1, 2, 3, 4]}', "InvalidArgumentError"),
}


def test_bad_lines_are_skipped_and_reported_by_line_number(tmp_path):
    ids, x, metas = corpus(n=200, dim=4)
    src = write_jsonl(tmp_path / "r.jsonl", ids, x, metas, {i: raw for i, (raw, _) in BAD_LINES.items()})
    text, as_json = run_many([("ingest", tmp_path / "a", src, "--on-error", "skip", "--batch", "64"),
                              ("--json", "ingest", tmp_path / "b", src, "--on-error", "skip", "--batch", "64")])
    assert text.returncode == 0 and as_json.returncode == 0, text.stderr + as_json.stderr
    reported = [line for line in text.stderr.splitlines() if ": skipped: " in line]
    assert [int(line.split()[1].rstrip(":")) for line in reported] == [i + 1 for i in sorted(BAD_LINES)]
    for line, i in zip(reported, sorted(BAD_LINES)):
        assert f"skipped: {BAD_LINES[i][1]}: " in line, line
    assert f"skipped {len(BAD_LINES)} bad lines" in text.stdout
    events = json_lines(as_json.stdout)
    skipped = [e for e in events if e["event"] == "skipped"]
    assert [(e["line"], e["type"]) for e in skipped] == [(i + 1, BAD_LINES[i][1]) for i in sorted(BAD_LINES)]
    assert events[-1]["skipped"] == len(BAD_LINES) and events[-1]["written"] == 200 - len(BAD_LINES)
    want = source_contents(ids, x, metas, skip=BAD_LINES)
    assert store_contents(tmp_path / "a") == want and store_contents(tmp_path / "b") == want


def test_a_bad_line_is_fatal_by_default_and_nothing_of_its_chunk_is_written(tmp_path):
    ids, x, metas = corpus(n=200, dim=4)
    path = str(tmp_path / "s")
    src = write_jsonl(tmp_path / "r.jsonl", ids, x, metas, {130: BAD_LINES[144][0], 140: "{oops"})
    proc = run("ingest", path, src, "--batch", "50", "--index", "flat")
    assert_one_line_error(proc, "InvalidMetadataTypeError", "line 131", "100 records in 2 whole chunks written")
    assert store_contents(path) == source_contents(ids[:100], x[:100], metas[:100])
    assert_one_line_error(run("--json", "ingest", tmp_path / "new", src, "--batch", "500"), '"InvalidMetadataTypeError"')
    assert not os.path.exists(tmp_path / "new")  # the first chunk failed: no store was created


def test_a_kill_leaves_whole_chunks_only(tmp_path):
    ids, x, metas = corpus(n=400, dim=8)
    lines = [json.dumps({"id": i, "vector": v.tolist(), "metadata": m}) + "\n" for i, v, m in zip(ids, x, metas)]
    rng = random.Random(5)
    for attempt in range(3):
        path = str(tmp_path / f"s{attempt}")
        proc = subprocess.Popen(cli_command("--json", "ingest", path, "-", "--batch", "50", "--index", "flat",
                                            "--no-link"),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                env=cli_env(), text=True)
        if attempt == 0:  # deterministic: two chunks acknowledged, twenty lines waiting in the third
            proc.stdin.writelines(lines[:120])
            proc.stdin.flush()
            for _ in range(2):
                assert json.loads(proc.stdout.readline())["event"] == "chunk"
        else:  # at an arbitrary moment while chunks are being written
            proc.stdin.writelines(lines[:50])
            proc.stdin.flush()
            proc.stdout.readline()
            proc.stdin.writelines(lines[50:400])
            proc.stdin.flush()
            for _ in range(rng.randrange(0, 4)):
                proc.stdout.readline()
        proc.kill()
        proc.wait(timeout=600)
        got = store_contents(path)
        assert len(got) % 50 == 0 and len(got) >= 50, len(got)
        if attempt == 0:
            assert len(got) == 100
        n = len(got)
        assert got == source_contents(ids[:n], x[:n], metas[:n])


def test_the_progress_bar_shows_on_a_terminal_only(tmp_path):
    x = np.random.default_rng(0).normal(size=(500, 4)).astype(np.float32)
    np.save(tmp_path / "v.npy", x)
    piped = run("ingest", tmp_path / "a", tmp_path / "v.npy", "--batch", "100", "--index", "flat")
    assert piped.returncode == 0 and piped.stderr == ""

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal has a width
    proc = subprocess.Popen(cli_command("ingest", tmp_path / "b", tmp_path / "v.npy", "--batch", "100", "--index",
                                        "flat"), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=follower, env=cli_env())
    os.close(follower)
    seen = b""
    while True:
        try:
            piece = os.read(leader, 4096)
        except OSError:  # EIO: the child closed its end
            break
        if not piece:
            break
        seen += piece
    os.close(leader)
    assert proc.wait(timeout=600) == 0
    assert b"500/500" in seen and b"100%" in seen, seen
    assert proc.stdout.read().startswith(b"ingested 500 records")


def test_bad_sources_and_options_leave_nothing_behind(tmp_path):
    x = np.ones((5, 3), dtype=np.float32)
    np.save(tmp_path / "v.npy", x)
    (tmp_path / "short.jsonl").write_text('{"id": "a", "metadata": null}\n')
    (tmp_path / "v.csv").write_text("1,2,3\n")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "m.jsonl").write_text("".join(json.dumps({"metadata": {"i": i}}) + "\n" for i in range(5)))
    before = dir_digest(str(tmp_path))
    target = str(tmp_path / "s")
    procs = run_many([
        ("ingest", target, tmp_path / "v.npy", "--metadata", tmp_path / "short.jsonl"),  # 1 line for 5 rows
        ("ingest", target, tmp_path / "v.csv"),
        ("ingest", target, tmp_path / "obj.npy"),
        ("ingest", target, tmp_path / "missing.jsonl"),
        ("ingest", target, tmp_path / "v.npy", "--dim", "4"),
        ("ingest", target, tmp_path / "v.npy", "--ttl", str(200 * 365 * 86400)),
        ("ingest", target, tmp_path / "short.jsonl", "--metadata", tmp_path / "short.jsonl"),
    ])
    for proc, fragment in zip(procs, ["has 1 line;", ".npy, .jsonl or .ndjson", "not a readable .npy", "no file",
                                      "--dim is 4", "100 years", "--metadata goes with a .npy"]):
        assert_one_line_error(proc, fragment)
    assert dir_digest(str(tmp_path)) == before
    ok = run("ingest", target, tmp_path / "v.npy", "--metadata", tmp_path / "m.jsonl", "--format", "npy")
    assert ok.returncode == 0, ok.stderr
    assert store_contents(target)["3"][1] == {"i": 3}  # a metadata line without "id" names its row


def test_ingest_into_an_existing_store_keeps_its_shape(tmp_path):
    path = str(tmp_path / "s")
    with vs.VecStore.open(path, dim=3, metric="dot", index="flat") as s:
        s.upsert("old", [1.0, 2.0, 3.0])
    np.save(tmp_path / "v4.npy", np.ones((2, 4), dtype=np.float32))
    (tmp_path / "r.jsonl").write_text('{"id": "new", "vector": [0, 0, 0]}\n')  # zero vector: fine under dot
    # One after the other: two processes opening the same store at once would meet its lock instead.
    assert_one_line_error(run("ingest", path, tmp_path / "v4.npy"), "4")
    assert_one_line_error(run("ingest", path, tmp_path / "r.jsonl", "--metric", "cosine"), "metric")
    ok = run("ingest", path, tmp_path / "r.jsonl")
    assert ok.returncode == 0, ok.stderr
    assert sorted(store_contents(path)) == ["new", "old"]


def test_export_refuses_a_used_directory_and_import_a_tampered_export(tmp_path):
    path = str(tmp_path / "s")
    with vs.VecStore.open(path, dim=2, index="flat") as s:
        s.upsert("a", [1.0, 0.0], {"k": 1})
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    assert_one_line_error(run("export", path, tmp_path / "used"), "not an empty directory")
    assert (tmp_path / "used" / "keep.txt").read_text() == "mine"
    assert run("export", path, tmp_path / "exp").returncode == 0
    rec = tmp_path / "exp" / "records.jsonl"
    rec.write_text(rec.read_text().replace('"k": 1', '"k": 2'))
    proc = run("import", tmp_path / "t", tmp_path / "exp")
    assert_one_line_error(proc, "BackupCorruptError", "records.jsonl")
    assert not os.path.exists(tmp_path / "t")  # checked before the store was created


# --- the Python API ---------------------------------------------------------------------------------------------

def test_vecstore_export_and_import_keep_ttl_and_leave_out_hidden_records(tmp_path, clock):
    ids, x, metas = corpus(n=50, dim=4)
    with vs.VecStore.open(tmp_path / "a", dim=4, index="flat", clock=clock) as a:
        a.upsert_many(ids, x, metas)
        a.soft_delete(ids[1])
        a.upsert_with_ttl("soon", x[0], {"t": 1}, 10)
        a.upsert_with_ttl("later", x[0], None, 1000)
        manifest = a.export(tmp_path / "exp")
        assert manifest["count"] == 51 and manifest["dim"] == 4
    clock.advance(100)  # "soon" expires between the export and the import
    with vs.VecStore.open(tmp_path / "b", index="flat", clock=clock) as b:
        seen = []
        assert b.import_(tmp_path / "exp", batch_size=20, progress=lambda d, t: seen.append((d, t))) == 50
        assert seen == [(20, 51), (40, 51), (51, 51)]
        assert ids[1] not in b and "soon" not in b
        assert b.get("later").expires_at == pytest.approx(clock.now + 900)
        assert {i: (b.get(i).vector.tobytes(), b.get(i).metadata) for i in ids if i != ids[1]} == \
            source_contents(ids, x, metas, skip={1})


def test_import_checks_dimension_and_manifest_before_writing(tmp_path):
    from vecstore_ref.export import read_export

    with vs.VecStore.open(tmp_path / "a", dim=4, index="flat") as a:
        a.upsert("x", [1.0, 2.0, 3.0, 4.0])
        a.export(tmp_path / "exp")
    with vs.VecStore.open(tmp_path / "b", dim=3, index="flat") as b:
        before = dir_digest(str(tmp_path / "b"))
        with pytest.raises(vs.DimensionMismatchError):
            b.import_(tmp_path / "exp")
        assert dir_digest(str(tmp_path / "b")) == before
    man_path = tmp_path / "exp" / "manifest.json"
    good = json.loads(man_path.read_text())
    for bad in ({"count": 2}, {"count": -1}, {"dim": 5}, {"metric": "manhattan"}, {"format": 99}):
        man_path.write_text(json.dumps({**good, **bad}))
        want = vs.UnsupportedFormatError if "format" in bad else vs.BackupCorruptError
        with pytest.raises(want):
            list(read_export(tmp_path / "exp"))


def test_a_refused_import_or_ingest_leaves_no_new_store_and_no_new_parents(tmp_path):
    """An export whose checksums hold but whose first record the store refuses (an int id): the new store the
    import made, and the parents it made for it, are removed again; so for an ingest refused at its first row,
    and for `namespaces create` with a bad option (no root is made)."""
    import hashlib

    with vs.VecStore.open(tmp_path / "a", dim=4, index="flat") as a:
        a.upsert_many(["x", "y"], np.eye(4, dtype=np.float32)[:2])
        a.export(tmp_path / "exp")
    rec = tmp_path / "exp" / "records.jsonl"
    lines = rec.read_text().splitlines()
    lines[0] = json.dumps({**json.loads(lines[0]), "id": 5})
    data = ("\n".join(lines) + "\n").encode()
    rec.write_bytes(data)
    man = json.loads((tmp_path / "exp" / "manifest.json").read_text())
    man["files"]["records.jsonl"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (tmp_path / "exp" / "manifest.json").write_text(json.dumps(man))
    np.save(tmp_path / "bad.npy", np.array([[1, 0, 0, 0], [np.nan, 0, 0, 0]], dtype=np.float32))
    imported, ingested, created = run_many([
        ("import", tmp_path / "new" / "deep" / "store", tmp_path / "exp"),
        ("ingest", tmp_path / "made" / "for" / "it", tmp_path / "bad.npy"),
        ("namespaces", "create", "docs", "--data", tmp_path / "root", "--dim", "70000"),
    ])
    assert imported.returncode == 1 and "InvalidIdTypeError" in imported.stderr, imported.stderr
    assert ingested.returncode == 1 and "InvalidVectorError" in ingested.stderr, ingested.stderr
    assert created.returncode == 1 and "dim" in created.stderr, created.stderr
    assert sorted(os.listdir(tmp_path)) == ["a", "bad.npy", "exp"]


def test_lines_over_the_limit_are_bad_lines_and_memory_stays_bounded(monkeypatch):
    import io

    from vecstore_ref.cli import ingest

    monkeypatch.setattr(ingest, "MAX_LINE_BYTES", 64)
    data = b"\xef\xbb\xbf" + b'{"id": "a", "vector": [1, 2]}\n' + b"x" * 1000 + b"\n" + b'{"id": "b", "vector": [3, 4]}'
    got = list(ingest.iter_lines(io.BytesIO(data)))
    assert [(n, raw) for n, raw, _ in got] == [(1, b'{"id": "a", "vector": [1, 2]}\n'), (2, None),
                                              (3, b'{"id": "b", "vector": [3, 4]}')]
    assert sum(used for _, _, used in got) == len(data)
    chunks = list(ingest.read_jsonl(io.BytesIO(data), batch=10, dim=None))
    assert chunks[0].ids == ["a", "b"] and chunks[0].vectors.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert [(p, "longer than" in str(e)) for p, e in chunks[0].bad] == [(2, True)]


def test_the_benchmark_script_runs_and_finds_the_round_trip_equal(tmp_path, capsys):
    from benchmarks import cli_roundtrip

    assert cli_roundtrip.main(["--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "cli_roundtrip.json").read_text())
    assert result["round_trip"]["equal"] is True and result["round_trip"]["verify_status"] == 0
    assert "| ingest .npy + --metadata .jsonl |" in capsys.readouterr().out


def test_an_export_that_fails_leaves_nothing_and_never_goes_inside_a_store(tmp_path, monkeypatch):
    from vecstore_ref import export

    with vs.VecStore.open(tmp_path / "s", dim=2, index="flat") as s:
        s.upsert("a", [1.0, 0.0])
        with pytest.raises(vs.InvalidArgumentError, match="inside the store"):
            s.export(tmp_path / "s" / "exp")

        def no_space(*args, **kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(export._NewFile, "write", no_space)
        with pytest.raises(OSError):
            s.export(tmp_path / "exp")
        assert not os.path.exists(tmp_path / "exp")
        monkeypatch.undo()
        assert s.export(tmp_path / "exp")["count"] == 1
    assert "exp" not in os.listdir(tmp_path / "s")


def test_an_export_is_read_from_the_files_that_were_checked(tmp_path):
    """No link, FIFO or swapped-in file is read: the checks are made on the open files, and the records file is
    reopened only if it is still the one that was checked."""
    from vecstore_ref.export import open_export

    with vs.VecStore.open(tmp_path / "a", dim=4, index="flat") as a:
        a.upsert_many([f"r{i}" for i in range(30)], np.eye(30, 4, dtype=np.float32) + 1)
        a.export(tmp_path / "exp")
    exp = tmp_path / "exp"
    export = open_export(exp)
    assert export.vectors.shape == (30, 4) and float(export.vectors[0, 0]) == 2.0
    records = (exp / "records.jsonl").read_bytes()
    os.replace(exp / "records.jsonl", tmp_path / "checked.jsonl")  # the same bytes, another file
    (exp / "records.jsonl").write_bytes(records)
    with pytest.raises(vs.BackupCorruptError, match="replaced or changed"):
        list(export.batches())
    assert sum(len(b[0]) for b in open_export(exp).batches()) == 30  # checked afresh, it reads
    vectors = (exp / "vectors.npy").read_bytes()
    (tmp_path / "outside.npy").write_bytes(vectors)
    os.remove(exp / "vectors.npy")
    os.symlink(tmp_path / "outside.npy", exp / "vectors.npy")
    with pytest.raises(vs.UnsafePathError, match="vectors.npy"):  # a file of an export is never read via a link
        open_export(exp)
    os.remove(exp / "vectors.npy")
    os.mkfifo(exp / "vectors.npy")  # opening it for reading would wait for a writer
    with pytest.raises(vs.BackupCorruptError, match="vectors.npy"):
        open_export(exp)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_metadata_from_a_pipe_is_counted_and_loaded(tmp_path):
    """`--metadata <(...)`: the line count used to consume the pipe, and the load then found it empty."""
    import threading

    np.save(tmp_path / "v.npy", np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32))
    fifo = tmp_path / "meta.fifo"
    os.mkfifo(fifo)
    lines = "".join(json.dumps({"id": f"d{i}", "metadata": {"i": i}}) + "\n" for i in range(5))

    def feed():
        with open(fifo, "w") as f:
            f.write(lines)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    proc = run("ingest", tmp_path / "s", tmp_path / "v.npy", "--metadata", fifo)
    writer.join(10)
    assert proc.returncode == 0, proc.stderr
    with vs.VecStore.open(tmp_path / "s", read_only=True) as s:
        assert sorted(s.ids()) == [f"d{i}" for i in range(5)] and s.get("d3").metadata == {"i": 3}
