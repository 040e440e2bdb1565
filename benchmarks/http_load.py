"""Load on the HTTP server: a mixed workload from client threads, then kill -9 and a check of every acknowledged write.

The server (``vecstore-ref serve``) runs in its own process on 127.0.0.1; the store is preloaded with ``--n``
vectors (10 % with a TTL) and the graph is linked before timing. Each client thread keeps one HTTP/1.1 connection
and sends, back to back, queries (80 %), upserts of new ids (15 %) and record reads (5 %). Reported per
concurrency: requests per second, latency percentiles, errors by class, and the server's RSS, CPU and open files
(read from /proc). Then the server is killed with SIGKILL and the store reopened: every upsert that got a 2xx must
be there. The client is Python on the same 2 cores, so the figures are a floor, not the server's ceiling.

    python -m benchmarks.http_load [--n 50000] [--dim 128] [--seconds 20] [--concurrency 1,4,16] [--quick]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

import vecstore_ref as vs

from . import machine, machine_line, md_table, write_json
from .datasets import clustered_vectors


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_stats(pid: int) -> dict:
    """RSS (MiB), CPU seconds (user + system) and open files of a process, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return {"rss_mib": rss, "cpu_s": cpu, "fds": len(os.listdir(f"/proc/{pid}/fd"))}


class Client:
    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, method: str, url: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        headers = {} if body is None else {"content-type": "application/json"}
        self.conn.request(method, url, body=data, headers=headers)
        r = self.conn.getresponse()
        payload = r.read()
        return r.status, payload


def preload(port: int, x: np.ndarray, batch: int = 1000) -> None:
    c = Client(port)
    for start in range(0, len(x), batch):
        ops = [{"op": "upsert", "id": f"doc-{i}", "vector": x[i].tolist(),
                **({"ttl": 3600} if i % 10 == 0 else {})} for i in range(start, min(len(x), start + batch))]
        status, payload = c.call("POST", "/v1/batch-execute", {"operations": ops})
        if status != 200 or json.loads(payload)["failed"]:
            raise RuntimeError(f"preload failed: {status} {payload[:300]!r}")
    while True:  # wait for the graph: timed queries should walk it, not scan the queue
        status, payload = c.call("GET", "/v1/stats")
        if json.loads(payload)["unindexed"] == 0:
            return
        time.sleep(0.2)


def run_load(port: int, n: int, dim: int, queries: np.ndarray, threads: int, seconds: float, acked: list) -> dict:
    lat: list[list[float]] = [[] for _ in range(threads)]
    errors = {"connect": 0, "timeout": 0, "non_2xx": 0, "other": 0}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def worker(t: int) -> None:
        rng = random.Random(t)
        c = Client(port)
        i = 0
        while time.monotonic() < deadline:
            r = rng.random()
            if r < 0.80:
                req = ("POST", "/v1/query", {"vector": queries[rng.randrange(len(queries))].tolist(), "limit": 10})
            elif r < 0.95:
                new_id = f"t{threads}-{t}-{i}"
                req = ("POST", "/v1/upsert", {"id": new_id, "vector": queries[i % len(queries)].tolist()})
            else:
                req = ("GET", f"/v1/records/doc-{rng.randrange(1, n, 10)}", None)  # never a TTL record
            t0 = time.perf_counter()
            try:
                status, _ = c.call(*req)
            except (ConnectionError, http.client.HTTPException, OSError) as exc:
                with lock:
                    errors["timeout" if isinstance(exc, TimeoutError) else "connect"] += 1
                c = Client(port)
                continue
            lat[t].append(time.perf_counter() - t0)
            if not 200 <= status < 300:
                with lock:
                    errors["non_2xx"] += 1
            elif req[1] == "/v1/upsert":
                with lock:
                    acked.append(req[2]["id"])
            i += 1

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    start = time.perf_counter()
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    elapsed = time.perf_counter() - start
    all_lat = np.sort(np.concatenate([np.asarray(x) for x in lat])) * 1e3
    pct = (lambda p: float(np.percentile(all_lat, p))) if all_lat.size else (lambda p: float("nan"))
    return {"threads": threads, "requests": int(all_lat.size), "rps": all_lat.size / elapsed, "p50_ms": pct(50),
            "p99_ms": pct(99), "p999_ms": pct(99.9), "max_ms": float(all_lat[-1]) if all_lat.size else float("nan"),
            **errors}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=50_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--concurrency", default="1,4,16")
    p.add_argument("--out", default=None)
    p.add_argument("--quick", action="store_true", help="a toy-size run (smoke test)")
    a = p.parse_args(argv)
    if a.quick:
        a.n, a.dim, a.seconds, a.concurrency = 500, 16, 1.0, "2"
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        print("the HTTP server needs the [server] extra: pip install -e \".[server]\"")
        return 2
    x, q = clustered_vectors(a.n, a.dim, n_queries=1000, seed=3)
    root = tempfile.mkdtemp(prefix="vs-http-")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "vecstore_ref", "serve", "--data", f"{root}/data", "--port",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results, acked = [], []
    try:
        for _ in range(600):
            try:
                Client(port).call("GET", "/healthz")
                break
            except OSError:
                time.sleep(0.1)
        t0 = time.perf_counter()
        preload(port, x)
        load_s = time.perf_counter() - t0
        start_stats = proc_stats(server.pid)
        peak = start_stats["rss_mib"]
        for c in [int(v) for v in a.concurrency.split(",")]:
            before = proc_stats(server.pid)
            r = run_load(port, a.n, a.dim, q, c, a.seconds, acked)
            after = proc_stats(server.pid)
            peak = max(peak, after["rss_mib"])
            r["server_cpu_pct"] = 100 * (after["cpu_s"] - before["cpu_s"]) / a.seconds
            r["server_rss_mib"], r["server_fds"] = after["rss_mib"], after["fds"]
            results.append(r)
        end_stats = proc_stats(server.pid)
        server.send_signal(signal.SIGKILL)
        server.wait()
        with vs.NamespaceManager(f"{root}/data") as m:
            s = m.get_namespace("default")
            lost = sum(1 for i in acked if i not in s)
            count = len(s)
    finally:
        if server.poll() is None:
            server.kill()
        shutil.rmtree(root, ignore_errors=True)
    mach = machine()
    print(f"# HTTP load: {a.n:,} x {a.dim} preloaded in {load_s:.1f} s; 80 % query (k=10), 15 % upsert, 5 % get; "
          f"{a.seconds:.0f} s per concurrency\n\nmachine: {machine_line(mach)}; client and server on the same "
          "cores\n")
    rows = [[r["threads"], f"{r['rps']:,.0f}", f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", f"{r['p999_ms']:.1f}",
             f"{r['max_ms']:.0f}", r["connect"] + r["timeout"] + r["non_2xx"] + r["other"],
             f"{r['server_cpu_pct']:.0f}", f"{r['server_rss_mib']:.0f}", r["server_fds"]] for r in results]
    print(md_table(["clients", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "errors", "server CPU %",
                    "server RSS MiB", "server fds"], rows))
    print(f"\nserver RSS: {start_stats['rss_mib']:.0f} MiB after preload, {end_stats['rss_mib']:.0f} MiB at the end "
          f"(peak seen {peak:.0f}); after kill -9: {len(acked):,} acknowledged upserts, {lost} lost; "
          f"{count:,} records")
    path = write_json("http_load", {"machine": mach, "settings": vars(a), "results": results,
                                    "acked_upserts": len(acked), "lost": lost}, a.out)
    print(f"\nresults: {path}")
    return 1 if lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
