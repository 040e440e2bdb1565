"""The reliability figures: faults injected, and what survived them.

Runs the fault catalogue of ``docs/concepts/reliability.md`` as counted sweeps and prints one line per figure:
kill -9 at every named crash point, torn tails at every byte offset, byte flips before the tail, I/O faults through
FaultFS, simulated power loss, bad inputs, and model-based programs. The default is a bounded sample (about a
minute); ``--full`` runs the whole sweep.

    python -m benchmarks.reliability [--full]
"""

from __future__ import annotations

import argparse
import errno
import os
import random
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

import vecstore_ref as vs  # noqa: E402
from vecstore_ref._fs import FaultFS, dir_digest  # noqa: E402
from vecstore_ref.storage.format import LOG_HEADER_SIZE, RECORD_HEADER, RECORD_HEADER_SIZE  # noqa: E402


def copy_store(src: str, dst: str) -> None:
    os.makedirs(dst)
    for name in os.listdir(src):
        if name != "LOCK":
            shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))


def small_store(path: str, n: int = 6) -> str:
    with vs.VecStore.open(path, dim=3, metric="euclidean", index="flat") as s:
        for i in range(n):
            s.upsert(f"r{i}", [float(i), 1.0, 2.0], {"i": i})
    return os.path.join(path, sorted(x for x in os.listdir(path) if x.startswith("log-"))[-1])


def spans(seg: str):
    data = open(seg, "rb").read()
    out, off = [], LOG_HEADER_SIZE
    while off < len(data):
        length = RECORD_HEADER.unpack_from(data, off)[0]
        out.append((off, RECORD_HEADER_SIZE + length))
        off += RECORD_HEADER_SIZE + length
    return out


def crash_points(root: str, hits) -> dict:
    from test_crash_points import WRITE_POINTS, check, run_child

    runs = killed = acked = failures = 0
    for point in WRITE_POINTS:
        for hit in hits:
            for index in ("flat", "hnsw"):
                path = os.path.join(root, f"cp-{point}-{hit}-{index}")
                code, n_acked, _ = run_child(path, index, f"{point}:{hit}")
                runs += 1
                killed += code == -9
                acked += n_acked
                try:
                    check(path, n_acked, index)
                except AssertionError:
                    failures += 1
    return {"points": len(WRITE_POINTS), "runs": runs, "killed": killed, "acked_ops": acked, "lost_or_failed": failures}


def torn_tails(root: str) -> dict:
    base = os.path.join(root, "torn-base")
    seg = small_store(base)
    tried = ok = 0
    for start, length in spans(seg)[-3:]:
        for cut in range(start + 1, start + length):
            path = os.path.join(root, f"torn-{cut}")
            copy_store(base, path)
            os.truncate(os.path.join(path, os.path.basename(seg)), cut)
            tried += 1
            with vs.VecStore.open(path) as s:
                ok += s.recovery_report.truncated_bytes == cut - start and len(s) == sum(
                    1 for st, _ in spans(seg) if st < start)
            shutil.rmtree(path)
    return {"offsets": tried, "opened_truncated_reported": ok}


def corruption(root: str, step: int) -> dict:
    base = os.path.join(root, "flip-base")
    seg = small_store(base)
    tried = detected = silent = 0
    for start, length in spans(seg)[:-1]:
        for pos in list(range(start + RECORD_HEADER_SIZE, start + length, step)) + [start, start + 4]:
            path = os.path.join(root, f"flip-{pos}")
            copy_store(base, path)
            target = os.path.join(path, os.path.basename(seg))
            data = bytearray(open(target, "rb").read())
            data[pos] ^= 0x20
            open(target, "wb").write(bytes(data))
            tried += 1
            try:
                vs.VecStore.open(path).close()
                silent += 1
            except vs.CorruptLogError:
                detected += 1
            shutil.rmtree(path)
    with vs.VecStore.open(base) as s:
        s.snapshot()
    snap = os.path.join(base, next(x for x in os.listdir(base) if x.startswith("snap-")))
    size = os.path.getsize(snap)
    snap_tried = snap_detected = 0
    for pos in range(0, size, max(1, step * 4)):
        original = open(snap, "rb").read()
        data = bytearray(original)
        data[pos] ^= 0x01
        open(snap, "wb").write(bytes(data))
        snap_tried += 1
        try:
            vs.VecStore.open(base).close()
        except vs.CorruptSnapshotError:
            snap_detected += 1
        open(snap, "wb").write(original)
    return {"log_flips": tried, "log_detected": detected, "silent": silent, "snapshot_flips": snap_tried,
            "snapshot_detected": snap_detected}


def io_faults(root: str, nths) -> dict:
    from test_io_faults import assert_state, workload

    injected = runs = mismatches = 0
    for op in ("write", "fsync", "replace", "fsync_dir", "open", "truncate"):
        for nth in nths:
            path = os.path.join(root, f"io-{op}-{nth}")
            fs = FaultFS()
            acked: dict = {}
            with vs.VecStore.open(path, dim=4, metric="euclidean", index="flat", fs=fs) as s:
                workload(s, 0, 3, acked)
                fs.fail(op, nth=nth, err=errno.ENOSPC if op == "write" else errno.EIO, short=(op == "write"))
                try:
                    workload(s, 3, 30, acked)
                except (vs.StorageError, vs.ReadOnlyError):
                    pass
            injected += fs.injected
            runs += 1
            try:
                assert_state(path, acked)
            except AssertionError:
                mismatches += 1
    return {"runs": runs, "faults_injected": injected, "state_mismatches": mismatches}


def power_loss(root: str, n: int) -> dict:
    from test_io_faults import assert_state, workload

    lost = 0
    acked_total = 0
    for seed in range(n):
        rng = random.Random(seed)
        path = os.path.join(root, f"power-{seed}")
        fs = FaultFS()
        acked: dict = {}
        s = vs.VecStore.open(path, dim=4, metric="euclidean", index="flat", fs=fs)
        fs.fail("any", nth=rng.randint(1, 80), err=errno.EIO, forever=True)
        try:
            workload(s, 0, 30, acked)
        except (vs.StorageError, vs.ReadOnlyError):
            pass
        fs.clear_faults()
        s._writer.close()
        s._dir_lock.release()
        fs.drop_unsynced(mode=("truncate", "random_prefix", "zeros", "garbage")[seed % 4], rng=rng)
        acked_total += len(acked)
        try:
            assert_state(path, acked)
        except AssertionError:
            lost += 1
    return {"power_cuts": n, "acked_records": acked_total, "runs_with_loss": lost}


def bad_inputs(root: str) -> dict:
    from test_bad_inputs import BAD_IDS, BAD_METADATA, BAD_VECTORS, GOOD

    path = os.path.join(root, "bad")
    tried = typed = changed = 0
    with vs.VecStore.open(path, dim=4, metric="cosine", index="flat") as s:
        s.upsert("a", GOOD, {"x": 1})
        calls = []
        calls += [lambda v=v: s.upsert("b", v) for v, _ in BAD_VECTORS]
        calls += [lambda v=v: s.query(v) for v, _ in BAD_VECTORS]
        calls += [lambda i=i: s.upsert(i, GOOD) for i, _ in BAD_IDS]
        calls += [lambda i=i: s.delete(i) for i, _ in BAD_IDS]
        calls += [lambda m=m: s.upsert("b", GOOD, m) for m in BAD_METADATA]
        calls += [lambda k=k: s.query(GOOD, k=k) for k in (0, -1, True, 3.0, "5", None, 10_001)]
        calls += [lambda f=f: s.query(GOOD, filter=f) for f in ("(x = 1", "x $regex 'a'", "'; DROP TABLE", "",
                                                                 "__import__('os')", "(" * 10_000)]
        calls += [lambda t=t: s.set_ttl("a", t) for t in (0, -1, float("nan"), float("inf"), "10")]
        calls += [lambda b=b: s.batch_execute(b) for b in ("x", None, {"op": "upsert"}, [1])]
        for call in calls:
            before = dir_digest(path)
            tried += 1
            try:
                call()
            except vs.VecStoreError:
                typed += 1
            changed += dir_digest(path) != before
    return {"bad_inputs": tried, "typed_errors": typed, "disk_changes": changed}


HTTP_BAD_BODIES = [
    b"{not json", b'{"id": "a", "vector": [NaN, 1, 2, 3]}', b'{"id": "a", "vector": [Infinity, 1, 2, 3]}',
    b'{"id": "a", "id": "b", "vector": [1, 2, 3, 4]}', b"[1, 2]", b'"text"', b"\xff\xfe", b"",
    b'{"id": 5, "vector": [1, 2, 3, 4]}', b'{"id": "a", "vector": "abcd"}', b'{"id": "a", "vector": [true, 1, 2, 3]}',
    b'{"id": "a"}', b'{"id": "a", "vector": [1, 2, 3]}', b'{"id": "a", "vector": [1, 2, 3, 4], "ttl": -1}',
    b'{"id": "a", "vector": [1, 2, 3, 4], "metadata": {"k": {"nested": 1}}}', b'{"id": "", "vector": [1, 2, 3, 4]}',
    b'{"id": "a", "vector": [1e39, 1, 2, 3]}', b'{"id": "a", "vector": [0, 0, 0, 0]}',
    b'{"id": "\\ud800", "vector": [1, 2, 3, 4]}',
]
HTTP_BAD_QUERIES = [{"vector": [1, 2, 3, 4], "limit": 0}, {"vector": [1, 2, 3, 4], "limit": True},
                    {"vector": [1, 2, 3, 4], "limit": "5"}, {"vector": [1, 2], "limit": 3},
                    {"vector": [1, 2, 3, 4], "filter": "x = "}, {"vector": [1, 2, 3, 4], "filter": "(" * 10_000},
                    {"vector": [1, 2, 3, 4], "ef": -4}, {"limit": 3}]


def http_bad_inputs(root: str) -> dict:
    """Bad bodies and queries sent to the HTTP API: 4xx with a JSON error, no 5xx, nothing changed on disk."""
    try:
        import json

        from fastapi.testclient import TestClient

        from vecstore_ref.http_api import create_app
    except ImportError:
        return {"skipped": True}
    data = os.path.join(root, "http")
    app = create_app(data)
    tried = client_errors = server_errors = changed = 0
    with TestClient(app, raise_server_exceptions=False) as c:
        c.post("/v1/upsert", content=b'{"id": "seed", "vector": [1, 2, 3, 4]}',
               headers={"content-type": "application/json"})
        requests = [("/v1/upsert", b, "application/json") for b in HTTP_BAD_BODIES]
        requests += [("/v1/query", json.dumps(q).encode(), "application/json") for q in HTTP_BAD_QUERIES]
        requests += [("/v1/batch-execute", b'{"operations": [{"op": "explode", "id": "a"}]}', "application/json"),
                     ("/v1/batch-execute", b'{"operations": 5}', "application/json"),
                     ("/v1/upsert", b'{"id": "a", "vector": [1, 2, 3, 4]}', "text/plain"),
                     ("/v1/namespaces", b'{"name": "../x"}', "application/json"),
                     ("/v1/namespaces/nope/upsert", b'{"id": "a", "vector": [1, 2, 3, 4]}', "application/json")]
        for url, body, ctype in requests:
            before = dir_digest(data)
            r = c.post(url, content=body, headers={"content-type": ctype})
            tried += 1
            ok_body = "error" in r.json() and data not in r.text and "Traceback" not in r.text
            client_errors += 400 <= r.status_code < 500 and ok_body
            server_errors += r.status_code >= 500
            changed += dir_digest(data) != before
    app.state.manager.close()
    return {"skipped": False, "tried": tried, "client_errors": client_errors, "server_errors": server_errors,
            "disk_changes": changed}


def path_safety(root: str) -> dict:
    """Traversal names and hostile archives against the namespace manager: files written outside its root."""
    import io
    import tarfile

    base = os.path.join(root, "paths")
    data = os.path.join(base, "root")
    os.makedirs(base)
    outside = os.path.join(base, "outside")
    os.makedirs(outside)
    m = vs.NamespaceManager(data)
    m.create_namespace("ns", dim=4)
    os.symlink(outside, os.path.join(data, "planted"))
    names = ["../x", "/etc/x", "a/b", "", ".", "..", "a\x00b", "x" * 300, "\uff0e\uff0e\uff0f", "a ", "planted",
             "../outside", "ns/../../x", "~", "a\\b"]

    def digest_outside():
        return [e for e in dir_digest(base) if not e[0].startswith("root/")]

    before = digest_outside()
    refused = calls = 0
    for n in names:
        tries = [lambda n=n: m.create_namespace(n, dim=4), lambda n=n: m.get_namespace(n),
                 lambda n=n: m.delete_namespace(n)]
        if n != "planted":  # a fine backup name: the symbolic link is a namespace's
            tries.append(lambda n=n: m.backup_namespace("ns", n))
        for call in tries:
            calls += 1
            try:
                call()
            except (vs.InvalidNameError, vs.NotFoundError):
                refused += 1

    def tar_of(members):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, kind in members:
                ti = tarfile.TarInfo(name)
                if kind == "file":
                    ti.size = 3
                    tar.addfile(ti, io.BytesIO(b"abc"))
                else:
                    ti.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE, "device": tarfile.CHRTYPE,
                               "dir": tarfile.DIRTYPE, "fifo": tarfile.FIFOTYPE}[kind]
                    ti.linkname = "/etc/passwd"
                    tar.addfile(ti)
        buf.seek(0)
        return buf

    archives = [[("../evil", "file")], [("/tmp/evil", "file")], [("sub/evil", "file")], [("link", "symlink")],
                [("hard", "hardlink")], [("dev", "device")], [("d", "dir")], [("fifo", "fifo")],
                [("BACKUP.json", "file")], [("MANIFEST", "file"), ("MANIFEST", "file")]]
    archive_refused = 0
    for i, members in enumerate(archives):
        try:
            m.import_backup("ns", tar_of(members), f"bad{i}")
        except (vs.UnsafeArchiveError, vs.BackupCorruptError):
            archive_refused += 1
    m.close()
    written_outside = len(set(digest_outside()) ^ set(before))
    return {"names": len(names), "name_calls": calls, "names_refused": refused,
            "archives": len(archives), "archives_refused": archive_refused, "written_outside": written_outside}


def model_programs(examples: int) -> dict:
    from hypothesis import settings
    from test_stateful_store import DotStoreMachine, HNSWStoreMachine, StoreMachine

    t0 = time.perf_counter()
    for machine in (StoreMachine, DotStoreMachine, HNSWStoreMachine):
        case = machine.TestCase
        case.settings = settings(max_examples=examples, stateful_step_count=40, deadline=None)
        case("runTest").runTest()
    return {"machines": 3, "programs": 3 * examples, "steps_per_program": 40, "seconds": time.perf_counter() - t0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="the whole sweep (minutes), not the bounded sample")
    a = p.parse_args(argv)
    root = tempfile.mkdtemp(prefix="vs-reliability-")
    t0 = time.perf_counter()
    try:
        cp = crash_points(root, (1, 2, 3, 5, 8) if a.full else (1, 2))
        tt = torn_tails(root)
        co = corruption(root, 1 if a.full else 5)
        io = io_faults(root, range(1, 31) if a.full else (1, 2, 3, 5, 8))
        pl = power_loss(root, 200 if a.full else 24)
        bi = bad_inputs(root)
        hb = http_bad_inputs(root)
        ps = path_safety(root)
        mb = model_programs(200 if a.full else 20)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"# reliability figures ({'full sweep' if a.full else 'bounded sample'}, {time.perf_counter() - t0:.0f} s)\n")
    print(f"- crash safety: {cp['points']} crash points x {cp['runs'] // cp['points']} runs = {cp['runs']} kill -9 "
          f"({cp['killed']} killed at the point); {cp['acked_ops']} acknowledged operations, "
          f"{cp['lost_or_failed']} runs that lost one or failed to open")
    print(f"- power loss: {pl['power_cuts']} simulated power cuts (unsynced data dropped); {pl['acked_records']} "
          f"acknowledged records, {pl['runs_with_loss']} runs with a loss")
    print(f"- torn tails: {tt['offsets']} truncation offsets tried; {tt['opened_truncated_reported']}/{tt['offsets']} "
          "opened, truncated and reported")
    print(f"- corruption: {co['log_flips']} log byte flips (body, CRC, length) before the tail, {co['log_detected']} "
          f"detected, {co['silent']} silent; {co['snapshot_flips']} snapshot flips, {co['snapshot_detected']} detected")
    print(f"- I/O errors: {io['runs']} runs, {io['faults_injected']} ENOSPC/EIO/short-write/fsync faults injected; "
          f"{io['state_mismatches']} runs where the reopened store differed from what was acknowledged")
    print(f"- bad inputs: {bi['bad_inputs']} tried; {bi['typed_errors']} typed errors; {bi['disk_changes']} disk changes")
    if hb["skipped"]:
        print("- bad HTTP inputs: skipped (install the [server] extra and httpx)")
    else:
        print(f"- bad HTTP inputs: {hb['tried']} tried; {hb['client_errors']} answered 4xx with a JSON error; "
              f"{hb['server_errors']} 5xx; {hb['disk_changes']} disk changes")
    print(f"- path safety: {ps['names']} traversal names, {ps['names_refused']}/{ps['name_calls']} calls refused; "
          f"{ps['archives']} hostile archives, {ps['archives_refused']} refused; {ps['written_outside']} files "
          "written outside the root")
    print(f"- model-based: hypothesis stateful, {mb['machines']} machines x {mb['programs'] // 3} programs x "
          f"{mb['steps_per_program']} steps, 0 failures ({mb['seconds']:.0f} s)")
    bad = cp["lost_or_failed"] + pl["runs_with_loss"] + co["silent"] + io["state_mismatches"] + bi["disk_changes"]
    bad += tt["offsets"] - tt["opened_truncated_reported"] + bi["bad_inputs"] - bi["typed_errors"]
    bad += ps["written_outside"] + ps["archives"] - ps["archives_refused"] + ps["name_calls"] - ps["names_refused"]
    if not hb["skipped"]:
        bad += hb["server_errors"] + hb["disk_changes"] + hb["tried"] - hb["client_errors"]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
