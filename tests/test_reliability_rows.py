"""The remaining rows of the fault catalogue: formats from the future (F23), real short writes under RLIMIT_FSIZE
(F16), and threads writing, querying, compacting and snapshotting at once (F24)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import vecstore_ref as vs
from vecstore_ref._fs import dir_digest
from vecstore_ref.storage.format import SNAPSHOT_FORMAT_VERSION


def make(path, n=5):
    with vs.VecStore.open(path, dim=3, metric="euclidean", index="flat") as s:
        for i in range(n):
            s.upsert(f"r{i}", [float(i), 0.0, 1.0])
        s.snapshot()
        s.upsert("after", [9.0, 9.0, 9.0])
    open(os.path.join(path, "LOCK"), "ab").close()


def test_snapshot_version_from_the_future(tmp_path):
    path = str(tmp_path / "s")
    make(path)
    snap = os.path.join(path, next(n for n in os.listdir(path) if n.startswith("snap-")))
    with open(snap, "r+b") as f:
        f.seek(8)
        f.write(struct.pack("<I", SNAPSHOT_FORMAT_VERSION + 1))
    before = dir_digest(path)
    with pytest.raises(vs.UnsupportedFormatError):
        vs.VecStore.open(path)
    assert dir_digest(path) == before


def test_manifest_version_from_the_future(tmp_path):
    path = str(tmp_path / "s")
    make(path)
    manifest = os.path.join(path, "MANIFEST")
    text = open(manifest, encoding="utf-8").read().replace("VSREF-MANIFEST 1", "VSREF-MANIFEST 2", 1)
    open(manifest, "w", encoding="utf-8").write(text)
    before = dir_digest(path)
    with pytest.raises(vs.UnsupportedFormatError):
        vs.VecStore.open(path)
    assert dir_digest(path) == before


def test_damaged_manifest_is_a_typed_error(tmp_path):
    path = str(tmp_path / "s")
    make(path)
    manifest = os.path.join(path, "MANIFEST")
    data = bytearray(open(manifest, "rb").read())
    data[30] ^= 0x01
    open(manifest, "wb").write(bytes(data))
    with pytest.raises(vs.CorruptStoreError):
        vs.VecStore.open(path)


CHILD = r"""
import resource, sys
import numpy as np
import vecstore_ref as vs
limit = int(sys.argv[2])
s = vs.VecStore.open(sys.argv[1], dim=16, metric="euclidean", index="flat")
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
import signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
i = 0
while True:
    try:
        s.upsert(f"r{i}", np.full(16, i, dtype=np.float32))
    except vs.VecStoreError as e:
        print("FAILED", type(e).__name__, flush=True)
        break
    print("ACK", i, flush=True)
    i += 1
try:
    s.upsert("again", np.ones(16, dtype=np.float32))
    print("AGAIN-ACK", flush=True)
except vs.VecStoreError as e:
    print("AGAIN-FAILED", type(e).__name__, flush=True)
"""


@pytest.mark.parametrize("limit", [300, 555, 1000, 2049, 4111])
def test_real_short_write_under_rlimit_fsize(tmp_path, limit):
    """The kernel itself shortens the write (EFBIG past the limit): the half record is cut back, nothing
    unacknowledged is visible after reopen, and every acknowledged write is."""
    path = str(tmp_path / "s")
    with vs.VecStore.open(path, dim=16, metric="euclidean", index="flat"):
        pass
    out = subprocess.run([sys.executable, "-c", CHILD, path, str(limit)], capture_output=True, text=True, timeout=120)
    lines = out.stdout.split("\n")
    acked = [int(x.split()[1]) for x in lines if x.startswith("ACK ")]
    assert any(x.startswith("FAILED StorageError") for x in lines), out.stdout + out.stderr
    with vs.VecStore.open(path) as s:
        expected = {f"r{i}" for i in acked} | ({"again"} if "AGAIN-ACK" in lines else set())
        assert set(s.ids()) == expected
        assert s.verify().ok
        s.upsert("later", np.ones(16, dtype=np.float32))


def test_threads_write_query_compact_and_snapshot_at_once(tmp_path):
    """F24: only typed errors, and the final state equals the model built from what was acknowledged."""
    path = str(tmp_path / "s")
    rng = np.random.default_rng(0)
    acked: dict[str, np.ndarray] = {}
    lock = threading.Lock()
    errors: list[BaseException] = []
    stop = time.monotonic() + 3.0
    with vs.VecStore.open(path, dim=8, metric="cosine", index="hnsw", durability="batch") as s:
        def writer(tid: int) -> None:
            i = 0
            local = np.random.default_rng(tid)
            while time.monotonic() < stop:
                v = local.normal(size=8).astype(np.float32)
                try:
                    if i % 4 == 3:
                        with lock:
                            victim = next((k for k in acked if k.startswith(f"t{tid}-")), None)
                        if victim:
                            s.delete(victim)
                            with lock:
                                acked.pop(victim)
                    else:
                        s.upsert(f"t{tid}-{i}", v)
                        with lock:
                            acked[f"t{tid}-{i}"] = v
                except vs.VecStoreError:
                    pass
                except BaseException as exc:  # pragma: no cover - reported below
                    errors.append(exc)
                    return
                i += 1

        def reader() -> None:
            while time.monotonic() < stop:
                try:
                    s.query(rng.normal(size=8).astype(np.float32), k=5)
                    s.query_batch(rng.normal(size=(4, 8)).astype(np.float32), k=3)
                except BaseException as exc:  # pragma: no cover
                    errors.append(exc)
                    return

        def maintainer() -> None:
            while time.monotonic() < stop:
                try:
                    s.compact()
                    s.snapshot()
                    time.sleep(0.05)
                except BaseException as exc:  # pragma: no cover
                    errors.append(exc)
                    return

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(2)]
        threads += [threading.Thread(target=reader), threading.Thread(target=maintainer)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert set(s.ids()) == set(acked)
    with vs.VecStore.open(path) as s:
        assert set(s.ids()) == set(acked)
        for id_, v in list(acked.items())[:50]:
            assert s.get(id_).vector.tobytes() == v.tobytes()
