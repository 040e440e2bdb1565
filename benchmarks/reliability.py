"""The reliability figures: faults injected, and what survived them.

Runs the fault catalogue of ``docs/concepts/reliability.md`` as counted sweeps and prints one line per figure:
kill -9 at every named crash point, torn tails at every byte offset, byte flips before the tail, I/O faults through
FaultFS, simulated power loss, bad inputs, symbolic links planted below a root, hostile names, a bounded fuzz of
the HTTP routes, and model-based programs. The default is a bounded sample (about a minute); ``--full`` runs the
whole sweep.

    python -m benchmarks.reliability [--full]
"""

from __future__ import annotations

import argparse
import errno
import io
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
        except (vs.CorruptSnapshotError, vs.UnsupportedFormatError):  # a flipped version byte reads as a newer
            snap_detected += 1                                         # format: refused, nothing changed
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


# --- symbolic links planted below a root ------------------------------------------------------------------------

def _symlink_world(base: str) -> tuple[str, str]:
    """A manager root (namespace "ns" with 3 records and backup "b1") and an ``outside`` directory holding
    decoys shaped like what a call would look for (a store, a backups directory, a backup, a file)."""
    import numpy as np

    root, outside = os.path.join(base, "root"), os.path.join(base, "outside")
    os.makedirs(outside)
    with open(os.path.join(outside, "precious"), "wb") as f:
        f.write(b"do not touch")
    with vs.NamespaceManager(root) as m:
        s = m.create_namespace("ns", dim=4, index="flat")
        s.upsert_many(["a", "b", "c"], np.eye(4, dtype=np.float32)[:3] + 0.5)
        s.snapshot()
        s.upsert("d", np.ones(4, dtype=np.float32))
        m.backup_namespace("ns", "b1")
    ns = os.path.join(root, "ns")
    shutil.copytree(os.path.join(ns, "store-0001"), os.path.join(outside, "store"))
    shutil.copytree(os.path.join(ns, "backups"), os.path.join(outside, "backups"))
    shutil.copytree(os.path.join(ns, "backups", "b1"), os.path.join(outside, "b1"))
    return root, outside


def _plant(path: str, target: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)
    os.symlink(target, path)


def _symlink_attacks():
    """``(where the link is planted, its target in outside, the calls tried with it)``; every call must be refused
    with a typed error, except those marked ``ok``, which must succeed without using the link."""
    import numpy as np

    v = np.ones(4, dtype=np.float32)
    store_file = {"MANIFEST": "MANIFEST", "LOCK": "LOCK", "MANIFEST.tmp": "MANIFEST.tmp"}
    backup_calls = [("backup", lambda m: m.backup_namespace("ns", "b2")),
                    ("list backups", lambda m: m.list_namespace_backups("ns")),
                    ("import", lambda m: m.import_backup("ns", _ARCHIVE[0], "b2")),
                    ("delete backup", lambda m: m.delete_namespace_backup("ns", "b1")),
                    ("restore", lambda m: m.restore_namespace("ns", "b1")),
                    ("export", lambda m: m.export_backup("ns", "b1", io.BytesIO()))]
    one_backup = [c for c in backup_calls if c[0] in ("delete backup", "restore", "export")]
    # a link inside a backup: restore and export refuse it; deleting the backup removes the link, unfollowed
    in_backup = [c for c in one_backup if c[0] != "delete backup"] + [
        ("delete backup ok", lambda m: m.delete_namespace_backup("ns", "b1"))]
    open_calls = [("get_namespace", lambda m: m.get_namespace("ns")),
                  ("upsert", lambda m: m.get_namespace("ns").upsert("e", v)),
                  ("backup", lambda m: m.backup_namespace("ns", "b2"))]
    attacks = [("ns/backups", "backups", backup_calls),
               ("ns/backups/b1", "b1", one_backup),
               ("ns/backups/b1/BACKUP.json", "b1/BACKUP.json", in_backup),
               ("ns/backups/b1/MANIFEST", "b1/MANIFEST", in_backup),
               ("ns/backups/b1/<log>", "b1/<log>", in_backup),
               ("ns/store-0001", "store", open_calls),
               ("ns/NAMESPACE.json", "precious", open_calls + [("delete", lambda m: m.delete_namespace("ns"))])]
    for name in ("MANIFEST", "<log>", "<snapshot>", "LOCK", "MANIFEST.tmp"):
        target = f"store/{store_file.get(name, name)}" if name not in ("LOCK", "MANIFEST.tmp") else "precious"
        attacks.append((f"ns/store-0001/{name}", target, open_calls))
    attacks += [("ns/backups/b1/planted", "", [("delete backup ok", lambda m: m.delete_namespace_backup("ns", "b1")),
                                              ("delete namespace ok", lambda m: m.delete_namespace("ns"))]),
                ("ns/store-0001/notes", "precious", [("delete namespace ok", lambda m: m.delete_namespace("ns"))]),
                (".deleting-ns-12345678", "", [("manager start ok", lambda m: m.list_namespaces())]),
                ("ns/store-0002", "store", [("open ok (stale generation)", lambda m: m.get_namespace("ns"))]),
                ("ns/backups/.tmp-b9-12345678", "b1", [("open ok (stale import)", lambda m: m.get_namespace("ns"))]),
                ("evil", "", [(f"{c} on a linked namespace", f) for c, f in (
                    ("get", lambda m: m.get_namespace("evil")), ("delete", lambda m: m.delete_namespace("evil")),
                    ("backup", lambda m: m.backup_namespace("evil", "x")),
                    ("create", lambda m: m.create_namespace("evil", dim=4)))])]
    return attacks


_ARCHIVE: list = [None]


def symlink_attacks(root: str) -> dict:
    """Links planted at every component below a manager's root and inside store directories, each tried with the
    calls that would use it (writes, reads, deletes): refused with a typed error, nothing outside changed."""
    base = os.path.join(root, "links")
    template = os.path.join(base, "template")
    os.makedirs(template)
    t_root, t_outside = _symlink_world(template)
    buf = io.BytesIO()
    with vs.NamespaceManager(t_root) as m:
        m.export_backup("ns", "b1", buf)
    tried = refused = allowed_ok = untyped = outside_changed = 0
    unexpected: list[str] = []
    for i, (where, target, calls) in enumerate(_symlink_attacks()):
        for label, call in calls:
            run = os.path.join(base, f"run-{i}-{label.replace(' ', '_')}")
            shutil.copytree(template, run, symlinks=True)
            r, outside = os.path.join(run, "root"), os.path.join(run, "outside")
            concrete = where
            for tag, prefix in (("<log>", "log-"), ("<snapshot>", "snap-")):
                if tag in concrete:
                    d = os.path.join(r, os.path.dirname(concrete))
                    concrete = concrete.replace(tag, next(n for n in sorted(os.listdir(d)) if n.startswith(prefix)))
            link_target = os.path.join(outside, target.replace("<log>", os.path.basename(concrete))) \
                if target else outside
            if not os.path.exists(link_target):
                link_target = os.path.join(outside, "precious")
            _plant(os.path.join(r, concrete), link_target)
            before = dir_digest(outside)
            _ARCHIVE[0] = io.BytesIO(buf.getvalue())
            tried += 1
            expect_ok = label.endswith("ok") or "ok (" in label
            try:
                with vs.NamespaceManager(r) as m:
                    call(m)
                allowed_ok += expect_ok
                outcome = "succeeded"
            except vs.VecStoreError as exc:
                refused += not expect_ok
                outcome = type(exc).__name__
            except Exception as exc:
                untyped += 1
                outcome = f"untyped {type(exc).__name__}"
            if (outcome == "succeeded") != expect_ok:
                unexpected.append(f"{where}: {label}: {outcome}")
            outside_changed += dir_digest(outside) != before
            shutil.rmtree(run)
    return {"attacks": tried, "refused": refused, "ok_without_following": allowed_ok, "untyped": untyped,
            "outside_changed": outside_changed, "unexpected": unexpected}


# --- name rules ---------------------------------------------------------------------------------------------------

HOSTILE_NAMES = ["abc\n", "abc\r", "\nabc", "a\nb", "abc\x00", "a\x00b", "x" * 300, "x" * 65, "\uff0e\uff0e\uff0f",
                 "../x", "..", ".", "/abs", "/etc/passwd", "a/b", "a\\b", "abc ", " abc", "", "-x", "~",
                 "\u00e9", "a b", 5, None, ["a"], b"abc"]


def name_rules(root: str) -> dict:
    """Every call that takes a namespace or backup name, with every hostile name (trailing newline, NUL, 300
    characters, fullwidth dots, traversal, absolute, '.', '..', trailing space, wrong types), and every file-name
    rule of an archive (member names, names in the manifest) with a trailing newline, dot or space. (A trailing
    dot is fine in a namespace or backup name: SPEC section 7's pattern allows it.)"""
    import json
    import tarfile

    import numpy as np

    base = os.path.join(root, "names")
    m = vs.NamespaceManager(base)
    m.create_namespace("ns", dim=4, index="flat").upsert_many(["a", "b"], np.eye(4, dtype=np.float32)[:2])
    m.backup_namespace("ns", "good")
    buf = io.BytesIO()
    m.export_backup("ns", "good", buf)
    archive = buf.getvalue()
    calls = [lambda n: m.create_namespace(n, dim=4), lambda n: m.get_namespace(n), lambda n: m.delete_namespace(n),
             lambda n: m.list_namespace_backups(n), lambda n: m.backup_namespace("ns", n),
             lambda n: m.backup_namespace(n, "b2"), lambda n: m.restore_namespace("ns", n),
             lambda n: m.restore_namespace(n, "good"), lambda n: m.delete_namespace_backup("ns", n),
             lambda n: m.delete_namespace_backup(n, "good"), lambda n: m.export_backup("ns", n, io.BytesIO()),
             lambda n: m.import_backup("ns", io.BytesIO(archive), n), lambda n: m.import_backup(n, io.BytesIO(archive),
                                                                                               "b2")]
    tried = refused = untyped = changed = 0

    def attempt(call, expected):
        nonlocal tried, refused, untyped, changed
        before = dir_digest(base)
        tried += 1
        try:
            call()
        except expected:
            refused += 1
        except Exception:
            untyped += 1
        changed += dir_digest(base) != before

    for name in HOSTILE_NAMES:
        for call in calls:
            attempt(lambda c=call, n=name: c(n), vs.InvalidNameError)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        members = {x.name: tar.extractfile(x).read() for x in tar}

    def tar_of(ms):
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for n, data in ms.items():
                ti = tarfile.TarInfo(n)
                ti.size = len(data)
                tar.addfile(ti, io.BytesIO(data))
        out.seek(0)
        return out

    info = json.loads(members["BACKUP.json"])
    for suffix in ("\n", "\r", ".", " ", "\t"):
        renamed = {(n + suffix if n == "MANIFEST" else n): d for n, d in members.items()}
        attempt(lambda r=renamed: m.import_backup("ns", tar_of(r), "b3"), (vs.UnsafeArchiveError, vs.BackupCorruptError))
        listed = dict(members, **{"BACKUP.json": json.dumps(dict(info, files=[
            dict(f, name=f["name"] + suffix) if f["name"] == "MANIFEST" else f for f in info["files"]])).encode()})
        attempt(lambda r=listed: m.import_backup("ns", tar_of(r), "b3"), vs.BackupCorruptError)
    m.close()
    return {"names": len(HOSTILE_NAMES), "calls": tried, "refused": refused, "untyped": untyped,
            "disk_changes": changed}


# --- HTTP fuzz ----------------------------------------------------------------------------------------------------

_FUZZ_VALUES = [  # JSON text, inserted as is: some are not valid JSON on purpose
    "null", "true", "false", "0", "-1", "3.5", "-0.0", "1e39", "1e400", "-1e400", "1" + "0" * 400, "NaN",
    "Infinity", '""', '"x"', '"\\ud800"', '"\\u0000"', '"a\\nb"', '"' + "x" * 5000 + '"', "[]", "{}", "[1, 2]",
    '[1, "a", null]', "[" * 2000 + "]" * 2000, '{"a": {"b": {"c": 1}}}', "[1e39, 1, 2, 3]", "[0, 0, 0, 0]",
    "[true, false, true, false]", '["1", "2", "3", "4"]', "[1, 2, 3, 4]", "[1, 2, 3]", '{"$gt": 1}',
    '"g = 1"', '"(x = 1"', '"' + "(" * 3000 + '"', '"upsert"', '"explode"',
]
_FUZZ_PATH_VALUES = ["a", "seed", "nope", "..", "%2e%2e", "%00", "a%0A", "%ED%A0%80", "%FF", "%F0%9F%98%80",
                     "x" * 600, "b1", "default", "ns", "a%2Fb"]
_FUZZ_TEMPLATES = {  # a valid body per route (by its last path segment), for mutation
    "upsert": {"id": '"f1"', "vector": "[1, 2, 3, 4]", "metadata": '{"g": 1}', "ttl": "60"},
    "batch-execute": {"operations": '[{"op": "upsert", "id": "f2", "vector": [1, 2, 3, 4], "ttl": 60}, '
                                    '{"op": "set_ttl", "id": "f2", "ttl": 30}, {"op": "delete", "id": "seed"}]'},
    "query": {"vector": "[1, 2, 3, 4]", "limit": "3", "filter": '"g = 1"', "ef": "16"},
    "query-estimate": {"vector": "[1, 2, 3, 4]", "k": "3"},
    "query-explain": {"vector": "[1, 2, 3, 4]", "k": "3", "filter": '"g >= 0"'},
    "compact": {"if_needed": "true"},
    "metadata": {"metadata": '{"g": 2}'},
    "ttl": {"ttl": "60"},
    "namespaces": {"name": '"fz"', "dim": "4", "metric": '"cosine"', "index": '"flat"', "quotas": "{}"},
    "backups": {"name": '"fb"'},
}
_BATCH_OP_FIELDS = ("op", "id", "vector", "metadata", "ttl")


def _json_object(fields: dict) -> str:
    import json

    return "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in fields.items()) + "}"


def _fuzz_body(rng: random.Random, template: dict | None) -> str:
    kind = rng.random()
    if template is None or kind < 0.15:  # a body of any shape
        return rng.choice(_FUZZ_VALUES + ["{not json", '{"a": 1, "a": 2}', "\xff"])
    fields = dict(template)
    for _ in range(rng.randint(1, 3)):
        move = rng.random()
        key = rng.choice(sorted(fields)) if fields else "x"
        if move < 0.6:
            fields[key] = rng.choice(_FUZZ_VALUES)
        elif move < 0.75:
            fields.pop(key, None)
        elif move < 0.9:
            fields[rng.choice(["extra", "k", "limit", "name", "namespace", "id", "vector"])] = rng.choice(
                _FUZZ_VALUES)
        else:  # a batch operation with a hostile field
            op = {"op": '"' + rng.choice(["upsert", "delete", "soft_delete", "restore", "update_metadata",
                                          "set_ttl", "upsertt"]) + '"', "id": '"f3"'}
            op[rng.choice(_BATCH_OP_FIELDS)] = rng.choice(_FUZZ_VALUES)
            fields["operations"] = "[" + _json_object(op) + "]"
    return _json_object(fields)


# The 5xx the hardening issue found, always sent: a 400-digit TTL, a float literal TTL beyond float range, a
# lone surrogate as a batch operation's id.
_FUZZ_KNOWN = [
    ("POST", "/v1/upsert", '{"id": "k1", "vector": [1, 2, 3, 4], "ttl": 1' + "0" * 400 + "}"),
    ("POST", "/v1/upsert", '{"id": "k1", "vector": [1, 2, 3, 4], "ttl": 1e400}'),
    ("PUT", "/v1/records/seed/ttl", '{"ttl": 1' + "0" * 400 + "}"),
    ("PUT", "/v1/records/seed/ttl", '{"ttl": 1e400}'),
    ("POST", "/v1/batch-execute", '{"operations": [{"op": "delete", "id": "\\ud800"}]}'),
    ("POST", "/v1/batch-execute", '{"operations": [{"op": "upsert", "id": "\\ud800", "vector": [1, 2, 3, 4]}]}'),
]


def http_fuzz(root: str, per_route: int = 20, seed: int = 0, max_examples: int = 5) -> dict:
    """A bounded, seeded fuzz of every route of the HTTP app (FastAPI's TestClient, no network): for each route
    and method, ``per_route`` requests with hostile path parameters and bodies (mutations of a valid body, any
    JSON value, invalid JSON), plus the 5xx cases the hardening issue found. Counts the answers by status class.

    Returns ``{"skipped": True}`` without the ``[server]`` extra, else ``tried``, ``routes``, ``client_errors``,
    ``server_errors`` (5xx: the number that must be 0) and ``examples`` (up to ``max_examples`` requests that
    got a 5xx).
    """
    try:
        from fastapi.testclient import TestClient

        from vecstore_ref.http_api import create_app
    except ImportError:
        return {"skipped": True}
    rng = random.Random(seed)
    data = os.path.join(root, f"http-fuzz-{seed}")
    app = create_app(data)
    routes = [(m.upper(), path) for path, item in app.openapi()["paths"].items() for m in sorted(item)]
    tried = client = server = 0
    examples: list[str] = []
    headers = {"content-type": "application/json"}
    try:
        with TestClient(app, raise_server_exceptions=False) as c:
            c.post("/v1/upsert", content=b'{"id": "seed", "vector": [1, 2, 3, 4], "metadata": {"g": 1}}',
                   headers=headers)
            c.post("/v1/namespaces/default/backups", content=b'{"name": "b1"}', headers=headers)
            requests = list(_FUZZ_KNOWN)
            for method, path in routes:
                last = [p for p in path.split("/") if p and not p.startswith("{")][-1]
                template = _FUZZ_TEMPLATES.get(last)
                for _ in range(per_route):
                    url = path
                    for param in ("{id}", "{ns}", "{name}"):
                        while param in url:
                            url = url.replace(param, rng.choice(_FUZZ_PATH_VALUES), 1)
                    body = _fuzz_body(rng, template) if method in ("POST", "PUT") else None
                    requests.append((method, url, body))
            for method, url, body in requests:
                content = None if body is None else body.encode("utf-8", "surrogatepass")
                r = c.request(method, url, content=content, headers=headers if content is not None else None)
                tried += 1
                if r.status_code >= 500:
                    server += 1
                    if len(examples) < max_examples:
                        examples.append(f"{method} {url} {str(body)[:80]!r} -> {r.status_code}")
                elif r.status_code >= 400:
                    client += 1
    finally:
        app.state.manager.close()
    return {"skipped": False, "tried": tried, "routes": len(routes), "client_errors": client, "server_errors": server,
            "examples": examples}


def http_fuzz_5xx_count(per_route: int = 20, seed: int = 0) -> int:
    """How many requests of the bounded HTTP fuzz (`http_fuzz`) got a 5xx; 0 is the requirement, -1 means the
    ``[server]`` extra is not installed. A test can assert on it directly."""
    root = tempfile.mkdtemp(prefix="vs-http-fuzz-")
    try:
        result = http_fuzz(root, per_route, seed)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return -1 if result["skipped"] else result["server_errors"]


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
        sl = symlink_attacks(root)
        nr = name_rules(root)
        hf = http_fuzz(root, 200 if a.full else 20)
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
    print(f"- symbolic links: {sl['attacks']} calls with a link planted below the root (backups dir, a backup, "
          f"files in one, a store directory, MANIFEST/log/snapshot/LOCK/tmp names, leftovers, a namespace); "
          f"{sl['refused']} refused with a typed error, {sl['ok_without_following']} succeeded without following "
          f"the link, {sl['untyped']} untyped errors; {sl['outside_changed']} changes outside the root")
    for line in sl["unexpected"]:
        print(f"  - unexpected: {line}")
    print(f"- name rules: {nr['names']} hostile names (trailing newline, NUL, 300 characters, fullwidth dots, "
          f"traversal, '.', '..', trailing space, wrong types) and archive file names in {nr['calls']} "
          f"calls; {nr['refused']} refused, {nr['untyped']} untyped errors, {nr['disk_changes']} disk changes")
    if hf["skipped"]:
        print("- HTTP fuzz: skipped (install the [server] extra and httpx)")
    else:
        print(f"- HTTP fuzz: {hf['tried']} requests over {hf['routes']} routes (hostile path parameters and "
              f"bodies); {hf['client_errors']} 4xx, {hf['server_errors']} 5xx")
        for line in hf["examples"]:
            print(f"  - 5xx: {line}")
    print(f"- model-based: hypothesis stateful, {mb['machines']} machines x {mb['programs'] // 3} programs x "
          f"{mb['steps_per_program']} steps, 0 failures ({mb['seconds']:.0f} s)")
    bad = cp["lost_or_failed"] + pl["runs_with_loss"] + co["silent"] + io["state_mismatches"] + bi["disk_changes"]
    bad += tt["offsets"] - tt["opened_truncated_reported"] + bi["bad_inputs"] - bi["typed_errors"]
    bad += ps["written_outside"] + ps["archives"] - ps["archives_refused"] + ps["name_calls"] - ps["names_refused"]
    bad += sl["untyped"] + sl["outside_changed"] + len(sl["unexpected"])
    bad += nr["untyped"] + nr["disk_changes"] + nr["calls"] - nr["refused"]
    if not hb["skipped"]:
        bad += hb["server_errors"] + hb["disk_changes"] + hb["tried"] - hb["client_errors"]
    if not hf["skipped"]:
        bad += hf["server_errors"]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
