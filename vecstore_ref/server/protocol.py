"""The HTTP connection protocol the server runs: uvicorn's, with two things uvicorn leaves out.

- **A deadline for the request head.** uvicorn closes an idle connection only after a response (its keep-alive
  timeout). A connection that sends nothing, or sends its request line and headers a byte at a time, is kept open
  for ever: enough of them (slowloris) use up the process's file descriptors and every other client is refused.
  Here a connection must deliver a complete request head within ``head_timeout_s`` of opening, or of the first
  byte of its next request; if not, it gets a 408 and is closed. (The body has its own deadline, in `guard`.)
- **JSON errors from the parser.** A request that is not valid HTTP (a negative or non-numeric Content-Length, a
  malformed chunk, a request line that is too long) is refused by uvicorn's parser, before the app, with a
  ``text/plain`` body; here the answer has the API's error shape, ``{"error": {"type", "code", "message"}}``.
- **A bound on the request head.** httptools buffers a request line and headers of any size until they end; here
  a head over `MAX_HEAD_BYTES` gets a 431 and the connection closes (and `guard` refuses more than 100 header
  lines with a 431).
- **The answer to a request read before the bad bytes.** httptools parses all it receives at once, so bytes that
  are not HTTP right behind a whole request (in the same packet) fail the parser while that request is already
  running. uvicorn then wrote its 400 and closed the connection at once: the request was applied, but its client
  saw only the 400. Here the running request is answered first, then the 400 follows and the connection closes;
  requests queued behind it (pipelined, not started) are dropped unanswered, so none of them is applied.
"""

from __future__ import annotations

import asyncio

import orjson

from ..errors import error_code

HEAD_TIMEOUT_S = 10.0  # the longest wait for a complete request line and headers
MAX_HEAD_BYTES = 96 * 1024  # the longest request head (line and headers) read; longer is a 431


def _response(status: int, reason: str, type_: str, message: str) -> bytes:
    body = orjson.dumps({"error": {"type": type_, "code": error_code(type_, status), "message": message}})
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n").encode("ascii") + body


_BAD_REQUEST = _response(400, "Bad Request", "InvalidInputError", "the request is not valid HTTP/1.1")
_HEAD_TIMEOUT = _response(408, "Request Timeout", "RequestTimeout", "the request head did not arrive in time")
_HEAD_TOO_LARGE = _response(431, "Request Header Fields Too Large", "RequestHeaderFieldsTooLarge",
                            f"the request head is over {MAX_HEAD_BYTES:,} bytes")


def _base_class(kind: str) -> type[asyncio.Protocol]:
    if kind in ("auto", "httptools"):
        try:
            from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
        except ImportError:  # pragma: no cover - httptools is in the [server] extra
            if kind == "httptools":
                raise
        else:
            return HttpToolsProtocol
    if kind in ("auto", "h11"):
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return H11Protocol
    raise ValueError(f"unknown HTTP implementation {kind!r} (auto, httptools or h11)")


def protocol_class(kind: str = "auto", head_timeout_s: float = HEAD_TIMEOUT_S) -> type[asyncio.Protocol]:
    """uvicorn's protocol class for ``kind`` (``auto``, ``httptools`` or ``h11``), with the head deadline and the
    JSON parser errors described in the module docstring; pass it to uvicorn as ``http=``."""
    base = _base_class(kind)

    class GuardedProtocol(base):  # type: ignore[valid-type, misc]
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm_head_timer()

        def connection_lost(self, exc) -> None:
            self._cancel_head_timer()
            super().connection_lost(exc)

        _head_bytes = 0  # bytes received for a request head not complete yet
        _head_tail = b""  # the last bytes of those: an end of head may straddle two pieces

        def data_received(self, data: bytes) -> None:
            before = self.cycle
            waiting = before is None or before.response_complete  # for a request head
            # ... or for the head of a request pipelined behind one whose body is all read (judged before the
            # parser runs: this data may be the end of that body)
            next_head = waiting or not before.more_body
            if waiting:
                self._arm_head_timer()
            if next_head and len(data) > MAX_HEAD_BYTES - self._head_bytes and not self.transport.is_closing():
                # the head must end within the limit, even when the piece that ends it brings it past the limit
                allowed = self._head_tail + data[:MAX_HEAD_BYTES - self._head_bytes + 1]
                if b"\r\n\r\n" not in allowed and b"\n\n" not in allowed:
                    self._refuse_large_head()
                    return
            super().data_received(data)
            if self.cycle is not before:  # a request head was completed
                self._cancel_head_timer()
                self._head_bytes, self._head_tail = 0, b""
            elif next_head and not self.transport.is_closing():  # the parser holds all of it until the head ends
                self._head_bytes += len(data)
                self._head_tail = (self._head_tail + data[-3:])[-3:]
                if self._head_bytes > MAX_HEAD_BYTES:
                    self._refuse_large_head()

        def _refuse_large_head(self) -> None:
            self._cancel_head_timer()
            self.transport.write(_HEAD_TOO_LARGE)
            self.transport.close()

        _refuse_after_response = False  # bytes that are not HTTP came behind the request being answered

        def send_400_response(self, msg: str) -> None:
            self._cancel_head_timer()
            if self.transport.is_closing():
                return
            cycle = self.cycle
            pipeline = getattr(self, "pipeline", None)
            # A request read whole is answered first (see the module docstring); one whose own body broke the
            # parser (a malformed chunk) is not: its handler would wait for the rest of a body that never comes.
            # But when that one is queued behind a request still running (pipelined), the running one is answered
            # first, and the queued one is dropped unanswered (never started, so never applied).
            queued = pipeline is not None and any(c is cycle for c, _ in pipeline)
            if cycle is not None and not cycle.response_complete and (not cycle.more_body or queued):
                self._refuse_after_response = True
                if pipeline:
                    pipeline.clear()
                return
            self.transport.write(_BAD_REQUEST)
            self.transport.close()

        def on_response_complete(self) -> None:
            if self._refuse_after_response and not self.transport.is_closing():
                self.server_state.total_requests += 1
                self.transport.write(_BAD_REQUEST)
                self.transport.close()
                return
            super().on_response_complete()

        def _arm_head_timer(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(head_timeout_s, self._head_timed_out)

        def _cancel_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                return  # a request is being answered
            if not self.transport.is_closing():
                self.transport.write(_HEAD_TIMEOUT)
                self.transport.close()

    GuardedProtocol.__name__ = GuardedProtocol.__qualname__ = f"Guarded{base.__name__}"
    return GuardedProtocol
