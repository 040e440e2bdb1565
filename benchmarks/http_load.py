"""Load on the HTTP server from client threads, beside Chroma's server on the same data; then kill -9 under load.

Every server runs in its own process on 127.0.0.1 and is preloaded through its own HTTP API with the same
``--n`` vectors (cosine, HNSW M = 16, ef_construction = 200, ef_search = 64), then warmed up. The load comes from
client threads of this process, each with one keep-alive ``http.client`` connection, sending requests back to
back; the bodies carry the same vectors for every server (query bodies are encoded once, before timing). Phases,
each ``--seconds`` long:

- query-only (k = 10) at each of ``--clients``;
- the mix at ``--mix-clients``: 80 % queries, 15 % upserts of new ids, 5 % reads of one record;
- for vecstore_ref only, the mix again, with the server killed by SIGKILL halfway through; then the store is
  opened offline and every upsert that got a 2xx must be there, with its vector.

Reported: requests per second, latency percentiles (of the requests, measured by the client), errors, the
server's CPU (from /proc: the share of one core, and CPU time per request, which a busy machine changes least),
recall@10 of 200 queries against an exact ranking, and where a query request's CPU goes inside the app. The clients share the 2 cores
with the server, so the figures are a floor of what the server could do alone. ``--variants`` adds query-only
runs of vecstore_ref served in other ways (the HTTP parser, the event loop, the access log, where reads run),
to show which parts matter. Chroma (``chroma run``, the chromadb package) is found on PATH or given with
``--chroma``; without it, its rows are skipped.

    python -m benchmarks.http_load [--n 50000] [--dim 128] [--seconds 15] [--clients 1,4] [--mix-clients 4]
                                   [--variants threads,inline,h11,asyncio,access-log] [--chroma PATH]
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

K = 10
HNSW = {"m": 16, "ef_construction": 200, "ef_search": 64}
# How vecstore_ref is served in each variant: keyword arguments of vecstore_ref.server.serve().
VARIANTS = {
    "default": {},  # as `vecstore-ref serve` runs (reads on the event loop when the store allows it)
    "threads": {"inline_reads": False},  # every read handed to a worker thread
    "inline": {"inline_reads": True},  # every read on the event loop, whatever the store says
    "h11": {"http": "h11"},  # the pure-Python HTTP parser instead of httptools
    "asyncio": {"loop": "asyncio"},  # the standard event loop instead of uvloop
    "access-log": {"access_log": True},  # one log line per request
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (and its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Connection:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call(self, method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
        headers = {"content-type": "application/json"} if body is not None else {}
        self.conn.request(method, url, body=body, headers=headers)
        r = self.conn.getresponse()
        return r.status, r.read()

    def json(self, method: str, url: str, obj=None):
        status, payload = self.call(method, url, None if obj is None else json.dumps(obj).encode())
        if not 200 <= status < 300:
            raise RuntimeError(f"{method} {url}: {status} {payload[:300]!r}")
        return json.loads(payload) if payload else None


class VecstoreTarget:
    """The requests of each kind, for `vecstore-ref serve`."""

    name = "vecstore_ref"

    def __init__(self, port: int):
        self.port = port

    def setup(self, dim: int) -> None:
        Connection(self.port).json("POST", "/v1/namespaces", {"name": "bench", "dim": dim, "metric": "cosine",
                                                              "hnsw": HNSW})

    def upsert_many(self, ids, vectors) -> tuple[str, str, bytes]:
        ops = [{"op": "upsert", "id": i, "vector": v.tolist()} for i, v in zip(ids, vectors)]
        return "POST", "/v1/namespaces/bench/batch-execute", json.dumps({"operations": ops}).encode()

    def query(self, vector) -> tuple[str, str, bytes]:
        return "POST", "/v1/namespaces/bench/query", json.dumps({"vector": vector.tolist(), "k": K}).encode()

    def upsert(self, id_: str, vector) -> tuple[str, str, bytes]:
        return "POST", "/v1/namespaces/bench/upsert", json.dumps({"id": id_, "vector": vector.tolist()}).encode()

    def get(self, id_: str) -> tuple[str, str, bytes | None]:
        return "GET", f"/v1/namespaces/bench/records/{id_}", None

    def result_ids(self, payload: bytes) -> list[str]:
        return [h["id"] for h in json.loads(payload)["results"]]

    def ready(self) -> bool:
        return Connection(self.port).json("GET", "/v1/namespaces/bench/stats")["unindexed"] == 0


class ChromaTarget:
    """The same requests for Chroma's HTTP API (v2), on one collection with the same HNSW settings."""

    name = "chroma"

    def __init__(self, port: int):
        self.port = port
        self.base = "/api/v2/tenants/default_tenant/databases/default_database/collections"

    def setup(self, dim: int) -> None:
        c = Connection(self.port)
        col = c.json("POST", self.base, {"name": "bench", "get_or_create": True, "configuration": {"hnsw": {
            "space": "cosine", "max_neighbors": HNSW["m"], "ef_construction": HNSW["ef_construction"],
            "ef_search": HNSW["ef_search"]}}})
        self.prefix = f"{self.base}/{col['id']}"

    def upsert_many(self, ids, vectors):
        return "POST", f"{self.prefix}/upsert", json.dumps({"ids": list(ids), "embeddings": vectors.tolist()}).encode()

    def query(self, vector):
        return "POST", f"{self.prefix}/query", json.dumps({"query_embeddings": [vector.tolist()], "n_results": K,
                                                           "include": ["distances", "metadatas"]}).encode()

    def upsert(self, id_: str, vector):
        return "POST", f"{self.prefix}/upsert", json.dumps({"ids": [id_], "embeddings": [vector.tolist()]}).encode()

    def get(self, id_: str):
        return "POST", f"{self.prefix}/get", json.dumps({"ids": [id_], "include": ["embeddings", "metadatas"]}).encode()

    def result_ids(self, payload: bytes) -> list[str]:
        return json.loads(payload)["ids"][0]

    def ready(self) -> bool:
        return True


class Server:
    """A server process on 127.0.0.1 (its own process group, so that SIGKILL reaches all of it)."""

    def __init__(self, argv: list[str], port: int, health: str, env: dict | None = None):
        self.port = port
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True, env={**os.environ, **(env or {})})
        deadline = time.monotonic() + 120
        while True:
            try:
                if Connection(port).call("GET", health)[0] == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server {argv[:3]} did not start")
            time.sleep(0.2)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def start_vecstore(root: str, variant: dict) -> Server:
    port = free_port()
    if not variant:
        argv = [sys.executable, "-m", "vecstore_ref", "serve", "--data", root, "--port", str(port)]
    else:
        argv = [sys.executable, "-c", "import sys, json; from vecstore_ref.server import serve; "
                "serve(sys.argv[1], port=int(sys.argv[2]), **json.loads(sys.argv[3]))", root, str(port),
                json.dumps(variant)]
    return Server(argv, port, "/healthz")


def start_chroma(chroma: str, root: str) -> Server:
    port = free_port()
    return Server([chroma, "run", "--path", root, "--host", "127.0.0.1", "--port", str(port)], port,
                  "/api/v2/heartbeat", env={"ANONYMIZED_TELEMETRY": "False"})


def preload(target, x: np.ndarray, batch: int = 1000) -> float:
    t0 = time.perf_counter()
    target.setup(x.shape[1])
    c = Connection(target.port)
    for start in range(0, len(x), batch):
        ids = [f"doc-{i}" for i in range(start, min(len(x), start + batch))]
        status, payload = c.call(*target.upsert_many(ids, x[start:start + len(ids)]))
        if status != 200 or (target.name == "vecstore_ref" and json.loads(payload)["failed"]):
            raise RuntimeError(f"preload failed: {status} {payload[:300]!r}")
    while not target.ready():  # timed queries should walk the graph, not scan the queue of new vectors
        time.sleep(0.2)
    return time.perf_counter() - t0


def recall(target, x: np.ndarray, q: np.ndarray) -> float:
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    exact = np.argsort(-(qn @ xn.T), axis=1)[:, :K]
    c = Connection(target.port)
    hits = 0
    for i in range(len(q)):
        status, payload = c.call(*target.query(q[i]))
        got = {int(s.split("-")[1]) for s in target.result_ids(payload)}
        hits += len(got & set(exact[i].tolist()))
    return hits / (len(q) * K)


class Tally:
    """The requests of one (server, workload, clients) over all its rounds."""

    def __init__(self, server: str, workload: str, clients: int):
        self.key = (server, workload, clients)
        self.latencies: list[np.ndarray] = []
        self.elapsed = self.cpu_s = 0.0
        self.errors = {"connect": 0, "non_2xx": 0}

    def row(self) -> dict:
        lat = np.sort(np.concatenate(self.latencies)) if self.latencies else np.zeros(0)
        pct = (lambda p: float(np.percentile(lat, p))) if lat.size else (lambda p: float("nan"))
        server, workload, clients = self.key
        return {"server": server, "workload": workload, "clients": clients, "requests": int(lat.size),
                "rps": lat.size / self.elapsed if self.elapsed else 0.0, "p50_ms": pct(50), "p99_ms": pct(99),
                "p999_ms": pct(99.9), "max_ms": float(lat[-1]) if lat.size else float("nan"),
                "server_cpu_pct": 100 * self.cpu_s / self.elapsed if self.elapsed else 0.0,
                "server_cpu_ms_per_request": 1e3 * self.cpu_s / lat.size if lat.size else float("nan"),
                **self.errors}


def run_load(target, bodies: list, queries: np.ndarray, n: int, clients: int, seconds: float, mix: bool,
             tally: Tally, pid: int, acked: list | None = None, kill_after: float | None = None) -> None:
    """``clients`` threads sending requests back to back for ``seconds`` (query-only, or the 80/15/5 mix); with
    ``kill_after``, the server is killed with SIGKILL that many seconds in (the clients then stop)."""
    lat: list[list[float]] = [[] for _ in range(clients)]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    killed = threading.Event()

    def worker(t: int) -> None:
        rng = random.Random(hash((t, clients, seconds, len(tally.latencies))))
        c = Connection(target.port)
        i = 0
        while time.monotonic() < deadline and not killed.is_set():
            r = rng.random() if mix else 0.0
            upsert = None
            if r < 0.80:
                req = bodies[rng.randrange(len(bodies))]
            elif r < 0.95:
                upsert = (f"load-{rng.getrandbits(64):016x}", rng.randrange(len(queries)))
                req = target.upsert(upsert[0], queries[upsert[1]])
            else:
                req = target.get(f"doc-{rng.randrange(n)}")
            t0 = time.perf_counter()
            try:
                status, _ = c.call(*req)
            except (OSError, http.client.HTTPException):
                with lock:
                    tally.errors["connect"] += 0 if killed.is_set() else 1
                if killed.is_set():
                    return
                c = Connection(target.port)
                continue
            lat[t].append(time.perf_counter() - t0)
            if not 200 <= status < 300:
                with lock:
                    tally.errors["non_2xx"] += 1
            elif upsert is not None and acked is not None:
                with lock:
                    acked.append(upsert)
            i += 1

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(clients)]
    cpu0, start = proc_cpu_s(pid), time.perf_counter()
    for th in ts:
        th.start()
    if kill_after is not None:
        time.sleep(kill_after)
        tally.cpu_s += proc_cpu_s(pid) - cpu0
        killed.set()
        os.killpg(pid, signal.SIGKILL)
        tally.elapsed += time.perf_counter() - start
    for th in ts:
        th.join()
    if kill_after is None:
        tally.elapsed += time.perf_counter() - start
        tally.cpu_s += proc_cpu_s(pid) - cpu0
    tally.latencies.append(np.asarray([x for per in lat for x in per]) * 1e3)


def app_parts(root: str, queries: np.ndarray, n: int = 2000) -> dict:
    """CPU microseconds per query request in this process, no sockets: the store's query alone, then the app's
    whole handling of ``POST /v1/namespaces/bench/query`` through its segment router (reads on the event loop, or
    handed to a thread) and through FastAPI's router to the same handler; and the strict body parser beside
    Python's json module with the same checks (duplicate keys, NaN) as hooks."""
    import asyncio
    import json as stdlib_json

    from vecstore_ref.server import create_app
    from vecstore_ref.server.json_body import parse_json

    bodies = [json.dumps({"vector": v.tolist(), "k": K}).encode() for v in queries[:200]]

    def strict_stdlib(raw: bytes):
        def pairs(items):
            if len({k for k, _ in items}) != len(items):
                raise ValueError("duplicate key")
            return dict(items)

        return stdlib_json.loads(raw, object_pairs_hook=pairs, parse_constant=float.__call__)

    def per_call(fn) -> float:
        for i in range(50):
            fn(i)
        t0 = time.process_time()
        for i in range(n):
            fn(i)
        return (time.process_time() - t0) / n * 1e6

    out = {}
    for label, inline in (("app, read on the event loop", True), ("app, read handed to a thread", False)):
        app = create_app(root, inline_reads=inline)
        try:
            store = app.state.manager.get_namespace("bench")
            while store.stats().unindexed:
                time.sleep(0.2)
            loop = asyncio.new_event_loop()

            def asgi(entry, with_body_read: bool, loop=loop):
                def call(i: int) -> None:
                    raw = bodies[i % len(bodies)]
                    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                             "scheme": "http", "path": "/v1/namespaces/bench/query", "query_string": b"",
                             "raw_path": b"/v1/namespaces/bench/query", "root_path": "",
                             "headers": [(b"content-type", b"application/json"),
                                         (b"content-length", str(len(raw)).encode())],
                             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}
                    if not with_body_read:  # what the guard leaves for the routes
                        scope["state"] = {"raw_body": raw}
                    messages = [{"type": "http.request", "body": raw, "more_body": False}]
                    status = []

                    async def receive():
                        return messages.pop() if messages else {"type": "http.disconnect"}

                    async def send(message):
                        if message["type"] == "http.response.start":
                            status.append(message["status"])

                    loop.run_until_complete(entry(scope, receive, send))
                    assert status == [200], status
                return call

            if inline:
                out["store.query alone"] = per_call(lambda i, s=store: s.query(queries[i % len(queries)], k=K))
            out[label] = per_call(asgi(app.entry, True))
            if inline:
                out["app, through FastAPI's router"] = per_call(asgi(super(type(app), app).__call__, False))
            loop.close()
        finally:
            app.state.manager.close()
    out["body parse: orjson + checks"] = per_call(lambda i: parse_json(bodies[i % len(bodies)]))
    out["body parse: json module + hooks"] = per_call(lambda i: strict_stdlib(bodies[i % len(bodies)]))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=50_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--seconds", type=float, default=15.0, help="per server and workload, over all rounds")
    p.add_argument("--rounds", type=int, default=5, help="the servers take turns, round after round")
    p.add_argument("--clients", default="1,4", help="client threads of the query-only runs")
    p.add_argument("--mix-clients", type=int, default=4)
    p.add_argument("--variants", default="default", help=f"ways to serve vecstore_ref, of {','.join(VARIANTS)}")
    p.add_argument("--chroma", default=None, help="the `chroma` command (default: found on PATH; 'off' to skip)")
    p.add_argument("--out", default=None)
    p.add_argument("--quick", action="store_true", help="a toy-size run (smoke test)")
    a = p.parse_args(argv)
    if a.quick:
        a.n, a.dim, a.seconds, a.rounds, a.clients, a.mix_clients, a.chroma = 500, 16, 1.0, 1, "2", 2, "off"
    try:
        import fastapi  # noqa: F401
        import orjson  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        print("the HTTP server needs the [server] extra: pip install -e \".[server]\"")
        return 2
    variants = ["default"] + [v for v in a.variants.split(",") if v and v != "default"]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}")
    clients = [int(c) for c in a.clients.split(",")]
    chroma = None if a.chroma == "off" else (a.chroma or shutil.which("chroma"))
    x, q = clustered_vectors(a.n, a.dim, n_queries=1000, seed=3)
    tmp = tempfile.mkdtemp(prefix="vs-http-")
    servers: dict[str, tuple[Server, object]] = {}
    preload_s, recalls, acked = {}, {}, []
    load_before = os.getloadavg()
    try:
        first = start_vecstore(f"{tmp}/default", {})
        target = VecstoreTarget(first.port)
        preload_s["vecstore_ref"] = preload(target, x)
        recalls["vecstore_ref"] = recall(target, x, q[:200])
        first.proc.send_signal(signal.SIGTERM)  # a clean stop: every variant starts from a copy of this data
        first.proc.wait(timeout=120)
        parts = app_parts(f"{tmp}/default", q)
        for name in variants:
            if name != "default":
                shutil.copytree(f"{tmp}/default", f"{tmp}/{name}")
            server = start_vecstore(f"{tmp}/{name}", VARIANTS[name])
            servers[name] = (server, VecstoreTarget(server.port))
        for _, target in servers.values():
            while not target.ready():
                time.sleep(0.2)
        if chroma:
            server = start_chroma(chroma, f"{tmp}/chroma")
            servers["chroma run"] = (server, ChromaTarget(server.port))
            preload_s["chroma"] = preload(servers["chroma run"][1], x)
            recalls["chroma"] = recall(servers["chroma run"][1], x, q[:200])
        peers = [name for name in ("default", "chroma run") if name in servers]
        plan = [("query-only", c, list(servers) if c == max(clients) else peers) for c in clients]
        plan.append(("mix 80/15/5", a.mix_clients, peers))
        tallies = {}
        for workload, n_clients, names in plan:
            mix = workload != "query-only"
            bodies = {name: [servers[name][1].query(v) for v in q] for name in names}  # encoded before timing
            for name in names:  # warm-up
                run_load(servers[name][1], bodies[name], q, a.n, n_clients, min(2.0, a.seconds), mix,
                         Tally(name, workload, n_clients), servers[name][0].proc.pid)
            for r in range(a.rounds):
                for name in names[r % len(names):] + names[: r % len(names)]:
                    tally = tallies.setdefault((name, workload, n_clients), Tally(name, workload, n_clients))
                    run_load(servers[name][1], bodies[name], q, a.n, n_clients, a.seconds / a.rounds, mix, tally,
                             servers[name][0].proc.pid)
        rows = [t.row() for t in tallies.values()]
        # kill -9 under load, then every acknowledged upsert must be in the store, with its vector
        server, target = servers["default"]
        kill = Tally("default", "mix 80/15/5, SIGKILL halfway", a.mix_clients)
        run_load(target, [target.query(v) for v in q], q, a.n, a.mix_clients, a.seconds, True, kill,
                 server.proc.pid, acked, kill_after=a.seconds / 2)
        server.proc.wait()
        with vs.NamespaceManager(f"{tmp}/default") as m:
            s = m.get_namespace("bench")
            lost = sum(1 for id_, qi in acked if id_ not in s or s.get(id_).vector.tobytes() != q[qi].tobytes())
            count = len(s)
    finally:
        for server, _ in servers.values():
            server.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    kill_row = kill.row()
    report(a, rows, preload_s, recalls, kill_row, acked, lost, count, load_before)
    print("\nwhere a query request's time goes (CPU us per request, in this process, no sockets):\n")
    print(md_table(["part", "us"], [[k, f"{v:.0f}"] for k, v in parts.items()]))
    path = write_json("http_load", {"machine": machine(), "settings": vars(a), "results": rows, "parts_us": parts,
                                    "preload_s": preload_s, "recall_at_10": recalls, "kill_run": kill_row,
                                    "acked_upserts": len(acked), "lost": lost, "load_average_before": load_before,
                                    "load_average_after": os.getloadavg()}, a.out)
    print(f"\nresults: {path}")
    return 1 if lost else 0


def report(a, rows, preload_s, recalls, kill_row, acked, lost, count, load_before) -> None:
    print(f"# HTTP load: {a.n:,} x {a.dim}, k = {K}; {a.seconds:.0f} s per server and workload in {a.rounds} "
          f"rounds taken in turn; client threads with one keep-alive connection each\n\nmachine: {machine_line()}; "
          f"clients and servers on the same cores; load average {load_before[0]:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after\n")
    print("preload through the HTTP API (s): " + ", ".join(f"{k} {v:.1f}" for k, v in preload_s.items())
          + "; recall@10: " + ", ".join(f"{k} {v:.3f}" for k, v in recalls.items()) + "\n")
    table = [[r["server"], r["workload"], r["clients"], f"{r['rps']:,.0f}", f"{r['p50_ms']:.2f}",
              f"{r['p99_ms']:.2f}", f"{r['p999_ms']:.2f}", f"{r['max_ms']:.0f}", r["connect"] + r["non_2xx"],
              f"{r['server_cpu_pct']:.0f}", f"{r['server_cpu_ms_per_request']:.2f}"] for r in rows]
    print(md_table(["server", "workload", "clients", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "errors",
                    "server CPU %", "server CPU ms / request"], table))
    ours = {(r["workload"], r["clients"]): r["rps"] for r in rows if r["server"] == "default"}
    theirs = {(r["workload"], r["clients"]): r["rps"] for r in rows if r["server"] == "chroma run"}
    if theirs:
        print("\nvecstore_ref (default) / chroma run, req/s: " + ", ".join(
            f"{w} at {c}: {ours[(w, c)] / theirs[(w, c)]:.2f}x" for (w, c) in ours if (w, c) in theirs))
    print(f"\nkill -9 halfway through {a.seconds:.0f} s of the mix at {a.mix_clients} clients "
          f"({kill_row['requests']:,} answers, {kill_row['rps']:,.0f} req/s before the kill): {len(acked):,} "
          f"acknowledged upserts, {lost} lost; {count:,} records")


if __name__ == "__main__":
    raise SystemExit(main())
