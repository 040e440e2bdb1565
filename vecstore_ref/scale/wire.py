"""The query channel between a ``ShardedStore`` and its Ray shard actors: fixed binary frames over TCP.

Queries do not go through Ray's task calls. A Ray actor call costs about a millisecond on one machine (a gRPC
request, a task spec, pickled arguments and results, an object-store entry for anything large), which is ten
times the search itself; a compiled Ray graph costs several hundred microseconds under load. A frame on an open TCP
connection costs tens of microseconds. So each shard actor also listens on a port of its node, and the store keeps
open connections to every shard: a query is one frame sent to each shard, then one frame read back from each, and
the shards search while the frames are in flight. Writes, maintenance and failure detection stay on Ray's calls.

Connection setup proves that both ends hold the store's random key (made when the store opens and given to the
actors through Ray), without sending it:

    server -> client   b"VSCH" + 32 random bytes (nonce_s)
    client -> server   HMAC-SHA256(key, b"client" + nonce_s) + 32 random bytes (nonce_c)
    server -> client   HMAC-SHA256(key, b"server" + nonce_c)

Then every message is a frame: a little-endian u32 length, then that many bytes. Nothing is pickled; every length
is checked against the frame before anything is allocated or sliced. A request::

    0   4s  b"VSQ1"
    4   B   flags: 1 = a single query (its results carry metadata)
    8   I   n (rows)        12  I  dim        16  I  k        20  i  ef (-1: the store's ef_search)
    24  I   F: bytes of filter text (UTF-8, 0 = no filter)
    28      the filter text, zero-padded to a multiple of 4 bytes
    ..      n * dim float32 (little-endian, row by row)

A result::

    0   4s  b"VSR1"        4  B  status 0
    8   I   n    12  I  k    16  I  I: bytes of ids    20  I  M: bytes of metadata
    24      n int32 n_found, then n * k float32 scores (-inf past n_found)
    ..      the found ids, row by row, UTF-8, separated by NUL (ids never hold control characters)
    ..      metadata: a JSON array with one entry per found id (single queries; M = 0 when no result has any)

An error: b"VSR1", status 1, ``I`` J, then J bytes of JSON ``{"type": error class name, "args": [...]}``; the
client raises the same ``errors`` class again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .. import errors as errors_module
from ..errors import InvalidArgumentError, VecStoreError

log = logging.getLogger(__name__)

MAX_FRAME = 1 << 30  # 1 GiB: two million 128-d queries in one batch
HANDSHAKE_TIMEOUT_S = 10.0
NONCE = 32
DIGEST = 32
CHALLENGE_MAGIC = b"VSCH"
REQUEST_MAGIC = b"VSQ1"
RESULT_MAGIC = b"VSR1"
FLAG_SINGLE = 1

_LENGTH = struct.Struct("<I")
_REQUEST = struct.Struct("<4sB3xIIIiI")
_RESULT = struct.Struct("<4sB3xIIII")
_ERROR = struct.Struct("<4sB3xI")
_F32 = np.dtype("<f4")
_I32 = np.dtype("<i4")


class ChannelError(Exception):
    """The peer broke the protocol (bad handshake, malformed frame) or closed the connection mid-frame."""


# --- frames ---------------------------------------------------------------------------------------------------

FIRST_READ = 1 << 16  # one recv() takes a whole small frame (a single query, its answer) with its length


def _recv_exact(sock: socket.socket, n: int, buf: bytearray | None = None, got: int = 0) -> bytearray:
    buf = bytearray(n) if buf is None else buf
    view = memoryview(buf)
    while got < n:
        r = sock.recv_into(view[got:])
        if r == 0:
            raise ChannelError("the connection closed mid-frame" if got else "the connection closed")
        got += r
    return buf


def send_frame(sock: socket.socket, parts: list) -> None:
    size = sum(memoryview(p).nbytes for p in parts)
    if size > MAX_FRAME:
        raise ChannelError(f"a frame of {size} bytes exceeds the limit of {MAX_FRAME}")
    sock.sendall(b"".join([_LENGTH.pack(size), *parts]))


def recv_frame(sock: socket.socket) -> bytes | bytearray:
    """The next frame's payload. Only one frame is ever in flight on a connection (a request, then its answer),
    so bytes past the frame are a protocol error."""
    data = sock.recv(FIRST_READ)
    while 0 < len(data) < _LENGTH.size:
        more = sock.recv(FIRST_READ)
        if not more:
            break
        data += more
    if len(data) < _LENGTH.size:
        raise ChannelError("the connection closed mid-frame" if data else "the connection closed")
    (size,) = _LENGTH.unpack_from(data)
    if size > MAX_FRAME:
        raise ChannelError(f"a frame of {size} bytes exceeds the limit of {MAX_FRAME}")
    have = len(data) - _LENGTH.size
    if have > size:
        raise ChannelError("bytes past the end of a frame")
    if have == size:
        return data[_LENGTH.size:]
    buf = bytearray(size)
    buf[:have] = memoryview(data)[_LENGTH.size:]
    return _recv_exact(sock, size, buf, have)


# --- requests -------------------------------------------------------------------------------------------------

@dataclass
class Request:
    vectors: np.ndarray  # float32 (n, dim), owned (a copy of the frame's bytes)
    k: int
    ef: int | None
    filter: str | None
    single: bool


def encode_request(vectors: np.ndarray, k: int, ef: int | None, filter_text: str | None, single: bool) -> list:
    """The parts of a request frame for float32 ``vectors`` (n, dim)."""
    flt = filter_text.encode("utf-8") if filter_text else b""
    n, dim = vectors.shape
    if _REQUEST.size + len(flt) + 4 * n * dim + 3 > MAX_FRAME:
        raise InvalidArgumentError(f"a batch of {n} queries of {dim} dimensions exceeds the query channel's frame "
                                   f"limit of {MAX_FRAME} bytes; send it in parts")
    header = _REQUEST.pack(REQUEST_MAGIC, FLAG_SINGLE if single else 0, n, dim, k, -1 if ef is None else ef, len(flt))
    return [header, flt + b"\0" * (-len(flt) % 4), np.ascontiguousarray(vectors, dtype=_F32).data]


def decode_request(frame: bytes | bytearray) -> Request:
    if len(frame) < _REQUEST.size:
        raise ChannelError("request frame too short")
    magic, flags, n, dim, k, ef, flen = _REQUEST.unpack_from(frame)
    if magic != REQUEST_MAGIC:
        raise ChannelError(f"not a request frame (magic {magic!r})")
    at = _REQUEST.size + flen + (-flen % 4)
    if dim == 0 or len(frame) != at + 4 * n * dim:
        raise ChannelError(f"request frame of {len(frame)} bytes does not hold {n} x {dim} float32 after the header")
    try:
        flt = bytes(frame[_REQUEST.size:_REQUEST.size + flen]).decode("utf-8") if flen else None
    except UnicodeDecodeError:
        raise ChannelError("the filter text is not UTF-8") from None
    vectors = np.frombuffer(frame, dtype=_F32, count=n * dim, offset=at).reshape(n, dim).copy()
    return Request(vectors, k, None if ef < 0 else ef, flt, bool(flags & FLAG_SINGLE))


# --- results --------------------------------------------------------------------------------------------------

@dataclass
class Result:
    ids: list[str]          # the found ids, row by row
    n_found: np.ndarray     # int32 (n,)
    scores: np.ndarray      # float32 (n, k)
    metadata: list | None   # one entry per found id (single queries)


def encode_result(ids: list[str], n_found: np.ndarray, scores: np.ndarray, metadata: list | None) -> list:
    """A result frame for a batch: ``scores`` float32 (n, width), the found ``ids`` row by row."""
    blob = "\0".join(ids).encode("utf-8")
    meta = _metadata_bytes(metadata)
    n, k = scores.shape
    header = _RESULT.pack(RESULT_MAGIC, 0, n, k, len(blob), len(meta))
    return [header, np.ascontiguousarray(n_found, dtype=_I32).data, np.ascontiguousarray(scores, dtype=_F32).data,
            blob, meta]


def encode_hits(ids: list[str], scores: list[float], metadata: list) -> list:
    """The same frame for one query's results, from plain lists (no numpy on the single-query path)."""
    blob = "\0".join(ids).encode("utf-8")
    meta = _metadata_bytes(metadata)
    k = len(ids)
    return [_RESULT.pack(RESULT_MAGIC, 0, 1, k, len(blob), len(meta)), struct.pack(f"<i{k}f", k, *scores), blob,
            meta]


def _metadata_bytes(metadata: list | None) -> bytes:
    if metadata is None or all(m is None for m in metadata):
        return b""
    return json.dumps(metadata, ensure_ascii=False, allow_nan=False).encode("utf-8")


def _result_header(frame: bytes | bytearray) -> tuple[int, int, int, int]:
    """``(n, k, ids bytes, metadata bytes)`` of a result frame, whose length must match; an error frame's
    exception is raised again."""
    if len(frame) >= _ERROR.size and frame[:4] == RESULT_MAGIC and frame[4] == 1:
        raise _decode_error(frame)
    if len(frame) < _RESULT.size:
        raise ChannelError("result frame too short")
    magic, status, n, k, ilen, mlen = _RESULT.unpack_from(frame)
    if magic != RESULT_MAGIC or status != 0:
        raise ChannelError(f"not a result frame (magic {magic!r}, status {status})")
    if len(frame) != _RESULT.size + 4 * n + 4 * n * k + ilen + mlen:
        raise ChannelError(f"result frame of {len(frame)} bytes does not match its header")
    return n, k, ilen, mlen


def _ids_and_metadata(frame, end: int, ilen: int, mlen: int, total: int) -> tuple[list[str], list | None]:
    try:
        text = bytes(frame[end:end + ilen]).decode("utf-8")
        metadata = json.loads(bytes(frame[end + ilen:])) if mlen else None
    except ValueError as exc:
        raise ChannelError(f"result frame: {exc}") from None
    ids = text.split("\0") if ilen else []
    if len(ids) != total or (metadata is not None and (not isinstance(metadata, list) or len(metadata) != total)):
        raise ChannelError("result frame: the ids (or metadata) do not match n_found")
    return ids, metadata


def decode_result(frame: bytes | bytearray) -> Result:
    """A result frame, or the error frame's exception raised again."""
    n, k, ilen, mlen = _result_header(frame)
    at = _RESULT.size
    n_found = np.frombuffer(frame, dtype=_I32, count=n, offset=at)
    scores = np.frombuffer(frame, dtype=_F32, count=n * k, offset=at + 4 * n).reshape(n, k)
    low, high, total = (int(n_found.min()), int(n_found.max()), int(n_found.sum())) if n else (0, 0, 0)
    if low < 0 or high > k:
        raise ChannelError("result frame: n_found out of range")
    ids, metadata = _ids_and_metadata(frame, at + 4 * n + 4 * n * k, ilen, mlen, total)
    return Result(ids, n_found, scores, metadata)


def decode_hits(frame: bytes | bytearray) -> tuple[list[str], tuple[float, ...], list]:
    """``(ids, scores, metadata)`` of a one-query result frame, as plain Python values."""
    n, k, ilen, mlen = _result_header(frame)
    if n != 1:
        raise ChannelError(f"a single query's result frame holds {n} rows")
    found, *scores = struct.unpack_from(f"<i{k}f", frame, _RESULT.size)
    if not 0 <= found <= k:
        raise ChannelError("result frame: n_found out of range")
    ids, metadata = _ids_and_metadata(frame, _RESULT.size + 4 + 4 * k, ilen, mlen, found)
    return ids, scores[:found], metadata or [None] * found


def encode_error(exc: BaseException) -> list:
    """An error frame: a library error travels as its class and arguments; anything else as its text."""
    if isinstance(exc, VecStoreError):
        name = type(exc).__name__
        args = list(exc.__reduce__()[1]) if hasattr(exc, "__reduce__") else [str(exc)]
    else:
        name, args = "VecStoreError", [f"{type(exc).__name__}: {exc}"]
    try:
        body = json.dumps({"type": name, "args": args}, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError):
        body = json.dumps({"type": name, "args": [str(exc)]}).encode("utf-8")
    return [_ERROR.pack(RESULT_MAGIC, 1, len(body)), body]


def _decode_error(frame: bytes | bytearray) -> BaseException:
    (_, _, size) = _ERROR.unpack_from(frame)
    try:
        info = json.loads(bytes(frame[_ERROR.size:_ERROR.size + size]))
        cls = getattr(errors_module, info["type"], None)
        args = info["args"]
        if not (isinstance(cls, type) and issubclass(cls, VecStoreError)) or not isinstance(args, list):
            raise ValueError(info["type"])
        return cls(*args)
    except (ValueError, KeyError, TypeError) as exc:
        return ChannelError(f"malformed error frame: {exc}")


# --- the handshake --------------------------------------------------------------------------------------------

def _mac(key: bytes, role: bytes, nonce: bytes) -> bytes:
    return hmac.new(key, role + nonce, hashlib.sha256).digest()


def _server_handshake(sock: socket.socket, key: bytes) -> None:
    nonce_s = os.urandom(NONCE)
    sock.sendall(CHALLENGE_MAGIC + nonce_s)
    reply = _recv_exact(sock, DIGEST + NONCE)
    if not hmac.compare_digest(bytes(reply[:DIGEST]), _mac(key, b"client", nonce_s)):
        raise ChannelError("the client does not hold the store's key")
    sock.sendall(_mac(key, b"server", bytes(reply[DIGEST:])))


def _client_handshake(sock: socket.socket, key: bytes) -> None:
    hello = _recv_exact(sock, len(CHALLENGE_MAGIC) + NONCE)
    if bytes(hello[:4]) != CHALLENGE_MAGIC:
        raise ChannelError("the server is not a shard's query channel")
    nonce_c = os.urandom(NONCE)
    sock.sendall(_mac(key, b"client", bytes(hello[4:])) + nonce_c)
    if not hmac.compare_digest(bytes(_recv_exact(sock, DIGEST)), _mac(key, b"server", nonce_c)):
        raise ChannelError("the server does not hold the store's key")


def _tune(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a frame goes out at once, not after an ACK


# --- the two ends ---------------------------------------------------------------------------------------------

class QueryServer:
    """The actor's end: accepts connections on ``(host, any free port)``; one thread per connection answers each
    request frame with ``handle(frame) -> parts``."""

    def __init__(self, handle: Callable[[bytes | bytearray], list], key: bytes, host: str):
        self._handle = handle
        self._key = key
        self._listener = socket.create_server((host, 0))
        self.address: tuple[str, int] = (host, self._listener.getsockname()[1])
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept_loop, name="vecstore-query-accept", daemon=True).start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                if self._closed:
                    conn.close()
                    return
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), name="vecstore-query", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            _tune(conn)
            conn.settimeout(HANDSHAKE_TIMEOUT_S)
            _server_handshake(conn, self._key)
            conn.settimeout(None)
            while True:
                frame = recv_frame(conn)
                try:
                    parts = self._handle(frame)
                    if sum(memoryview(p).nbytes for p in parts) > MAX_FRAME:
                        raise InvalidArgumentError(f"the answer exceeds the query channel's frame limit of "
                                                   f"{MAX_FRAME} bytes; ask for fewer queries or a smaller k at once")
                except BaseException as exc:  # any failure goes back to the caller as an error frame
                    parts = encode_error(exc)
                send_frame(conn, parts)
        except (OSError, ChannelError) as exc:
            log.debug("query channel connection ended: %s", exc)
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns = list(self._conns)
        for s in [self._listener, *conns]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


class QueryClient:
    """The store's end for one shard: a pool of authenticated connections, one per concurrent caller.

    ``send`` takes an idle connection (or opens one) and writes a request; ``receive`` reads its answer and puts
    the connection back. A connection that failed is closed, never reused.
    """

    def __init__(self, address: tuple[str, int], key: bytes, timeout_s: float | None):
        self.address = address
        self._key = key
        self._timeout = timeout_s
        self._idle: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False

    def _connect(self) -> socket.socket:
        limit = HANDSHAKE_TIMEOUT_S if self._timeout is None else min(HANDSHAKE_TIMEOUT_S, self._timeout)
        sock = socket.create_connection(self.address, timeout=limit)
        try:
            _tune(sock)
            _client_handshake(sock, self._key)
            sock.settimeout(self._timeout)
        except BaseException:
            sock.close()
            raise
        return sock

    def send(self, parts: list) -> socket.socket:
        with self._lock:
            if self._closed:
                raise ChannelError("the query channel is closed")
            sock = self._idle.pop() if self._idle else None
        if sock is None:
            sock = self._connect()
        try:
            send_frame(sock, parts)
        except BaseException:
            sock.close()
            raise
        return sock

    def receive(self, sock: socket.socket) -> bytes | bytearray:
        """The answer frame (decode it with ``decode_result`` or ``decode_hits``)."""
        try:
            frame = recv_frame(sock)
        except BaseException:
            sock.close()
            raise
        with self._lock:
            if self._closed:
                sock.close()
            else:
                self._idle.append(sock)
        return frame

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for s in idle:
            s.close()
